package projections

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// appendDomain appends domain events to a stream with the metadata of a
// command by actor at the given instant.
func appendDomain(tb testing.TB, e *env, stream string, expected eventstore.Expected, actor application.Actor, at time.Time, events ...domain.Event) eventstore.AppendResult {
	tb.Helper()
	reg := application.EventRegistry()
	data := make([]eventstore.EventData, len(events))
	for i, ev := range events {
		typ, payload, err := reg.Encode(ev)
		require.NoError(tb, err)
		meta, err := json.Marshal(application.Metadata{Actor: actor, CorrelationID: "corr-" + actor.Subject, CausationID: newUUID(), OccurredAt: at, Command: "test"})
		require.NoError(tb, err)
		data[i] = eventstore.EventData{ID: newUUID(), Type: typ, Data: payload, Metadata: meta}
	}
	res, err := e.store.Append(context.Background(), stream, expected, data...)
	require.NoError(tb, err)
	return res
}

func TestAuditReader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := application.Actor{Type: "user", Subject: "sub-alice", Username: "alice"}
	bob := application.Actor{Type: "user", Subject: "sub-bob", Username: "bob"}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	wa, wb, tk := newUUID(), newUUID(), newUUID()

	appendDomain(t, e, worker.Stream(wa), eventstore.NoStream, alice, t0,
		worker.Imported{WorkerID: wa, Name: "a", Region: "us-east-1", InstanceID: "i-0123456789abcdef0", InstanceType: "m5.large", EC2State: worker.EC2Running})
	for i := range 3 {
		appendDomain(t, e, worker.Stream(wa), eventstore.Exact(uint64(i)), alice, t0.Add(time.Duration(i+1)*time.Minute),
			worker.TagsChanged{Tags: map[string]string{"n": string(rune('a' + i))}})
	}
	appendDomain(t, e, worker.Stream(wb), eventstore.NoStream, bob, t0.Add(10*time.Minute),
		worker.Created{WorkerID: wb, Name: "b", Region: "us-west-2", InstanceType: "m5.large", AMIID: "ami-0123456789abcdef0"})
	typ := "c5.metal"
	appendDomain(t, e, settings.StreamName, eventstore.NoStream, alice, t0.Add(20*time.Minute),
		settings.Changed{Set: settings.Patch{InstanceType: &typ}})
	last := appendDomain(t, e, task.Stream(tk), eventstore.NoStream, bob, t0.Add(30*time.Minute),
		task.Created{TaskID: tk, Title: "t", Status: task.StatusPending, Priority: task.PriorityLow})

	r := NewRunner(e.store, e.pool, NewAuditLog(application.EventRegistry()), e.runnerOptions())
	start(t, r.Run)
	waitFor(t, func() bool { return !e.checkpoint(t, "audit_log").Less(last.Position) }, func() string { return "audit_log did not catch up" })

	reader := NewAuditReader(e.pool)
	list := func(f application.AuditFilter) []application.AuditEntry {
		if f.Limit == 0 {
			f.Limit = 100
		}
		out, err := reader.ListAudit(context.Background(), f)
		require.NoError(t, err)
		return out
	}
	types := func(es []application.AuditEntry) []string {
		out := make([]string, len(es))
		for i, x := range es {
			out[i] = x.EventType
		}
		return out
	}
	all := list(application.AuditFilter{})
	require.Equal(t, []string{"task.created.v1", "settings.changed.v1", "worker.created.v1",
		"worker.tags_changed.v1", "worker.tags_changed.v1", "worker.tags_changed.v1", "worker.imported.v1"}, types(all))

	first := all[6]
	require.Equal(t, wa, first.WorkerID)
	require.Equal(t, "worker", first.AggregateType)
	require.Equal(t, wa, first.AggregateID)
	require.Equal(t, worker.Stream(wa), first.Stream)
	require.Equal(t, int64(0), first.Revision)
	require.Equal(t, alice, first.Actor)
	require.Equal(t, "corr-sub-alice", first.CorrelationID)
	require.True(t, application.ValidID(first.CausationID))
	require.Equal(t, "test", first.Command)
	require.Equal(t, t0, first.OccurredAt)
	require.Contains(t, first.Summary, "i-0123456789abcdef0")
	require.JSONEq(t, `"a"`, string(mustField(t, first.Data, "name")))
	require.Empty(t, all[0].WorkerID, "a task event has no worker")

	tests := []struct {
		name string
		f    application.AuditFilter
		want int
	}{
		{"Worker", application.AuditFilter{WorkerID: wa}, 4},
		{"OtherWorker", application.AuditFilter{WorkerID: wb}, 1},
		{"ActorSubject", application.AuditFilter{Actor: "sub-alice"}, 5},
		{"ActorUsername", application.AuditFilter{Actor: "bob"}, 2},
		{"TypePrefix", application.AuditFilter{TypePrefix: "worker.tags"}, 3},
		{"TypePrefixIsAPrefix", application.AuditFilter{TypePrefix: "worker."}, 5},
		{"LikeWildcardsAreLiteral", application.AuditFilter{TypePrefix: "worker_"}, 0},
		{"From", application.AuditFilter{From: t0.Add(2 * time.Minute)}, 5},
		{"FromTo", application.AuditFilter{From: t0.Add(2 * time.Minute), To: t0.Add(20 * time.Minute)}, 3},
		{"Combined", application.AuditFilter{WorkerID: wa, TypePrefix: "worker.tags", To: t0.Add(3 * time.Minute)}, 2},
		{"Limit", application.AuditFilter{Limit: 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, list(tt.f), tt.want)
		})
	}

	// Keyset paging: before the third entry's position comes the fourth.
	before, err := eventstore.ParsePosition(all[2].Position)
	require.NoError(t, err)
	page := list(application.AuditFilter{Before: before, Limit: 2})
	require.Equal(t, []string{all[3].EventID, all[4].EventID}, []string{page[0].EventID, page[1].EventID})

	_, err = reader.ListAudit(context.Background(), application.AuditFilter{})
	require.Error(t, err, "a limit is required")
}

func mustField(t *testing.T, raw json.RawMessage, name string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m))
	return m[name]
}
