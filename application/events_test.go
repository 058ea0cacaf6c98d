package application_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

func TestDashboardStreamScopesAndValidates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	user := as("u-1", "ops", rbac.RoleUser)
	a, c := "0190c6a0-0000-7000-8000-00000000000a", "0190c6a0-0000-7000-8000-00000000000c"

	all, err := b.app.DashboardStream(user, application.DashboardQuery{})
	require.NoError(t, err)
	require.Equal(t, "u-1", all.Principal().Subject)
	for _, typ := range application.DashboardTypes {
		require.True(t, all.Allows(typ, a), typ)
	}
	require.False(t, all.Allows("worker.created", a), "not a dashboard type")

	some, err := b.app.DashboardStream(user, application.DashboardQuery{WorkerIDs: []string{a}, Types: []string{application.DashboardSnapshot}})
	require.NoError(t, err)
	require.True(t, some.Allows(application.DashboardSnapshot, a))
	require.False(t, some.Allows(application.DashboardSnapshot, c), "another worker")
	require.False(t, some.Allows(application.DashboardMetrics, a), "another type")

	require.False(t, application.DashboardScope{}.Allows(application.DashboardSnapshot, a), "the zero scope allows nothing")

	many := make([]string, application.MaxStreamWorkerIDs+1)
	for i := range many {
		many[i] = a
	}
	for name, q := range map[string]application.DashboardQuery{
		"BadID":    {WorkerIDs: []string{"not-a-uuid"}},
		"UpperID":  {WorkerIDs: []string{strings.ToUpper(a)}},
		"TooMany":  {WorkerIDs: many},
		"BadType":  {Types: []string{"worker.created"}},
		"Snapshot": {Types: []string{"snapshot"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := b.app.DashboardStream(user, q)
			var ve *domain.ValidationError
			require.ErrorAs(t, err, &ve)
		})
	}
}

func TestDomainEnvelope(t *testing.T) {
	t.Parallel()
	reg := application.EventRegistry()
	meta, err := json.Marshal(application.Metadata{
		Actor:         application.Actor{Type: "user", Subject: "u-1", Username: "ann", Roles: []string{"admin"}},
		CorrelationID: "req-1", CausationID: "cmd-1", Command: "worker.tags",
		OccurredAt: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC),
	})
	require.NoError(t, err)
	rec := func(typ string, data any) *eventstore.RecordedEvent {
		b, ok := data.([]byte)
		if !ok {
			var err error
			b, err = json.Marshal(data)
			require.NoError(t, err)
		}
		return &eventstore.RecordedEvent{
			ID: "0190c6a0-0000-7000-8000-0000000000e1", Stream: "worker-x", Revision: 3,
			Position: eventstore.Position{Commit: 42, Prepare: 42}, Type: typ, Data: b, Metadata: meta,
			RecordedAt: time.Date(2026, 11, 28, 9, 0, 1, 0, time.FixedZone("x", 3600)),
		}
	}
	encode := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return string(b)
	}

	t.Run("PassThrough", func(t *testing.T) {
		raw := []byte(`{"tags":{"team":"a"}}`)
		ev := application.DomainEnvelope(reg, rec("worker.tags_changed.v1", raw))
		require.Empty(t, ev.DecodeError)
		require.Equal(t, json.RawMessage(raw), ev.Data)
		require.Equal(t, "42", ev.Position)
		require.Equal(t, "worker.tags_changed.v1", ev.Type)
		require.Equal(t, "worker-x", ev.Stream)
		require.Equal(t, int64(3), ev.Revision)
		require.Equal(t, "ann", ev.Actor.Username)
		require.Equal(t, "req-1", ev.CorrelationID)
		require.Equal(t, "cmd-1", ev.CausationID)
		require.Equal(t, "worker.tags", ev.Command)
		require.Equal(t, time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC), ev.OccurredAt)
		require.Equal(t, time.UTC, ev.RecordedAt.Location())
	})
	t.Run("LicenceTokenRemoved", func(t *testing.T) {
		ev := application.DomainEnvelope(reg, rec("worker.license_registration_requested.v1",
			worker.LicenseRegistrationRequested{TokenFingerprint: "fp", SealedToken: "sealed-secret"}))
		require.Empty(t, ev.DecodeError)
		out := encode(ev)
		require.NotContains(t, out, "sealed")
		require.Contains(t, out, `"token_fingerprint":"fp"`)
	})
	t.Run("LabYAMLReplacedBySize", func(t *testing.T) {
		yaml := "lab:\n  title: secret-topology\n"
		ev := application.DomainEnvelope(reg, rec("worker.lab_action_requested.v1",
			worker.LabActionRequested{RequestID: "r", Action: worker.LabImport, Title: "t", YAML: yaml}))
		out := encode(ev)
		require.NotContains(t, out, "secret-topology")
		require.Contains(t, out, fmt.Sprintf(`"yaml_bytes":%d`, len(yaml)))
		require.Contains(t, out, `"title":"t"`)
	})
	t.Run("Upcast", func(t *testing.T) {
		up := application.EventRegistry()
		up.RegisterUpcaster("worker.tags_changed.v0", func(data json.RawMessage) (string, json.RawMessage, error) {
			var old struct {
				Labels map[string]string `json:"labels"`
			}
			if err := json.Unmarshal(data, &old); err != nil {
				return "", nil, err
			}
			b, err := json.Marshal(worker.TagsChanged{Tags: old.Labels})
			return "worker.tags_changed.v1", b, err
		})
		ev := application.DomainEnvelope(up, rec("worker.tags_changed.v0", []byte(`{"labels":{"a":"b"}}`)))
		require.Empty(t, ev.DecodeError)
		require.Equal(t, "worker.tags_changed.v1", ev.Type)
		require.JSONEq(t, encode(worker.TagsChanged{Tags: map[string]string{"a": "b"}}), encode(ev.Data))
	})
	t.Run("Unreadable", func(t *testing.T) {
		ev := application.DomainEnvelope(reg, rec("worker.unheard_of.v9", []byte(`{"x":1}`)))
		require.Contains(t, ev.DecodeError, "unknown event type")
		require.Nil(t, ev.Data)
		require.Equal(t, "42", ev.Position, "it keeps its place in the stream")
		// A secret-bearing type that does not decode is never passed through.
		ev = application.DomainEnvelope(reg, rec("worker.license_registration_requested.v1", []byte(`{"sealed_token":"s","extra":1}`)))
		require.NotEmpty(t, ev.DecodeError)
		require.Nil(t, ev.Data)
	})
}

func TestDomainEventsReplaysThenGoesLive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	integrator := as("svc-1", "", rbac.RoleIntegrator)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	id := res.ID
	tags, err := b.app.ReplaceWorkerTags(adminCtx, id, map[string]string{"a": "1"})
	require.NoError(t, err)

	// From the start, only this worker's events: the two stored ones, then
	// a live one.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub, err := b.app.DomainEvents(rbac.WithPrincipal(ctx, rbac.Principal{Subject: "svc-1", Roles: []rbac.Role{rbac.RoleIntegrator}}),
		application.DomainQuery{WorkerID: id})
	require.NoError(t, err)
	defer sub.Close()
	_, err = b.app.StopWorker(adminCtx, id)
	require.NoError(t, err)
	var types []string
	for len(types) < 3 {
		select {
		case m, ok := <-sub.Messages():
			require.True(t, ok, "subscription ended: %v", sub.Err())
			if m.Event == nil {
				continue
			}
			ev := sub.Envelope(m.Event)
			require.Equal(t, worker.Stream(id), ev.Stream)
			types = append(types, ev.Type)
		case <-ctx.Done():
			t.Fatalf("got only %v", types)
		}
	}
	require.Equal(t, []string{"worker.imported.v1", "worker.tags_changed.v1", "worker.stop_requested.v1"}, types)

	// After a position, by type prefix.
	from, err := eventstore.ParsePosition(tags.Position)
	require.NoError(t, err)
	sub2, err := b.app.DomainEvents(rbac.WithPrincipal(ctx, rbac.Principal{Subject: "svc-1", Roles: []rbac.Role{rbac.RoleIntegrator}}),
		application.DomainQuery{WorkerID: id, From: from, TypePrefixes: []string{"worker.stop"}})
	require.NoError(t, err)
	defer sub2.Close()
	for {
		m := <-sub2.Messages()
		if m.Event != nil {
			require.Equal(t, "worker.stop_requested.v1", m.Event.Type)
			break
		}
	}

	_, err = b.app.DomainEvents(integrator, application.DomainQuery{TypePrefixes: []string{"Worker Created"}})
	var ve *domain.ValidationError
	require.ErrorAs(t, err, &ve)
	_, err = b.app.DomainEvents(integrator, application.DomainQuery{WorkerID: "nope"})
	require.ErrorAs(t, err, &ve)
	_, err = b.app.DomainEvents(as("u-1", "ops", rbac.RoleManager), application.DomainQuery{})
	require.True(t, errors.Is(err, rbac.ErrForbidden))
}

// envelopeCases are recorded events whose envelopes the fast encoder and
// DomainEnvelope must agree on: usual and unusual metadata, payload
// whitespace, old, redacted and unknown types.
func envelopeCases() []*eventstore.RecordedEvent {
	at := time.Date(2026, 11, 28, 9, 0, 1, 123456789, time.UTC)
	rec := func(typ, data, meta string) *eventstore.RecordedEvent {
		return &eventstore.RecordedEvent{
			ID: "0190c6a0-0000-7000-8000-0000000000e1", Stream: "worker-0190c6a0-0000-7000-8000-0000000000aa", Revision: 7,
			Position: eventstore.Position{Commit: 99, Prepare: 99}, Type: typ, Data: []byte(data), Metadata: []byte(meta), RecordedAt: at,
		}
	}
	usual := `{"actor":{"type":"user","subject":"u-1","username":"ann","roles":["admin","user"]},"correlation_id":"req-1","causation_id":"cmd-1","occurred_at":"2026-11-28T09:00:00.5Z","command":"worker.tags"}`
	tags := `{"tags":{"team":"a"},"external":false}`
	out := []*eventstore.RecordedEvent{
		rec("worker.tags_changed.v1", tags, usual),
		rec("worker.tags_changed.v1", `{"tags": {"team": "a <&> \u00e9"}, "external": true}`, usual),
		rec("worker.tags_changed.v1", "{\n  \"tags\": {}\n}", usual),
		rec("worker.tags_changed.v1", tags, ``),
		rec("worker.tags_changed.v1", tags, `{}`),
		rec("worker.tags_changed.v1", tags, `{"actor":{"type":"system","subject":"system:fleet"},"correlation_id":"c","causation_id":"c","extra":{"nested":[1,{"a":"}"}]}}`),
		rec("worker.tags_changed.v1", tags, `{"actor": {"type": "user", "subject": "u-2", "username": "", "roles": []}, "occurred_at": "2026-11-28T10:00:00+01:00"}`),
		rec("worker.tags_changed.v1", tags, `{"Actor":{"type":"user","subject":"u-3"}}`),
		rec("worker.tags_changed.v1", tags, `{"\u0061ctor":{"type":"user","subject":"u-4"}}`),
		rec("worker.tags_changed.v1", tags, `{"actor":{"type":"user","subject":"u-5","email":"x@example.com"}}`),
		rec("worker.tags_changed.v1", tags, `{"actor":{"subject":"u-6"}}`),
		rec("worker.tags_changed.v1", tags, `{"actor":null,"correlation_id":null}`),
		rec("worker.tags_changed.v1", tags, `{"actor":"u-7"}`),
		rec("worker.tags_changed.v1", tags, `{"occurred_at":"yesterday"}`),
		rec("worker.tags_changed.v1", tags, `{"occurred_at":"0001-01-01T00:00:00Z","command":""}`),
		rec("worker.tags_changed.v1", tags, `{"correlation_id":"a\"b\\c\u2028","causation_id":"\ud83d\ude00"}`),
		rec("worker.tags_changed.v1", tags, `[1,2]`),
		rec("worker.license_registration_requested.v1", `{"reregister":false,"token_fingerprint":"fp","sealed_token":"s"}`, usual),
		rec("worker.unheard_of.v1", `{"x":1}`, usual),
		rec("worker.metrics_sampled.v1", `{"cml_cpu": 1.5e1, "nodes_total": 3}`, usual),
	}
	weird := rec("worker.tags_changed.v1", tags, usual)
	weird.ID, weird.Stream = "id-<\u00e9>\x01", "stream-\"quoted\""
	weird.Position = eventstore.Position{Commit: 5, Prepare: 3}
	return append(out, weird)
}

func TestAppendEnvelopeMatchesDomainEnvelope(t *testing.T) {
	t.Parallel()
	reg := application.EventRegistry()
	for i, rec := range envelopeCases() {
		t.Run(fmt.Sprint(i), func(t *testing.T) { requireSameEnvelope(t, reg, rec) })
	}
}

// requireSameEnvelope checks that AppendDomainEnvelope writes the JSON of
// DomainEnvelope: the same document once decoded.
func requireSameEnvelope(t *testing.T, reg *domain.Registry, rec *eventstore.RecordedEvent) {
	t.Helper()
	want, err := json.Marshal(application.DomainEnvelope(reg, rec))
	require.NoError(t, err)
	got, typ := application.AppendDomainEnvelope([]byte("prefix"), reg, rec)
	require.True(t, strings.HasPrefix(string(got), "prefix"), "appends to dst")
	got = got[len("prefix"):]
	require.True(t, json.Valid(got), "%s", got)
	var w, g map[string]any
	require.NoError(t, json.Unmarshal(want, &w))
	require.NoError(t, json.Unmarshal(got, &g))
	require.Equal(t, w, g, "metadata %s data %s", rec.Metadata, rec.Data)
	require.Equal(t, w["type"], typ)
}

// FuzzAppendEnvelope checks the fast encoder against DomainEnvelope for
// any JSON data and metadata (the event store refuses anything else).
func FuzzAppendEnvelope(f *testing.F) {
	for _, rec := range envelopeCases() {
		f.Add(rec.Type, string(rec.Data), string(rec.Metadata))
	}
	reg := application.EventRegistry()
	f.Fuzz(func(t *testing.T, typ, data, meta string) {
		if !json.Valid([]byte(data)) || (meta != "" && !json.Valid([]byte(meta))) || !utf8.ValidString(data+meta+typ) {
			t.Skip("the event store stores only JSON")
		}
		rec := &eventstore.RecordedEvent{ID: "e", Stream: "s", Type: typ, Data: []byte(data), Metadata: []byte(meta),
			RecordedAt: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)}
		requireSameEnvelope(t, reg, rec)
	})
}
