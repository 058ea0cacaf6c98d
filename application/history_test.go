package application_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func newHistory(b *bundle) *application.History {
	return application.NewHistory(application.HistoryOptions{Store: b.store, Audit: projections.NewAuditReader(b.pool)})
}

// checkAccess runs call as every kind of caller of the access matrix
// (admin manager user auditor integrator none system) and anonymously, and
// compares the refusals with expect ("A" allowed, "-" refused).
func checkAccess(t *testing.T, name, expect string, call func(ctx context.Context) error) {
	t.Helper()
	require.Len(t, expect, len(callers))
	for i, c := range callers {
		err := call(rbac.WithPrincipal(context.Background(), c.p))
		denied := errors.Is(err, rbac.ErrForbidden) || errors.Is(err, rbac.ErrUnauthenticated)
		require.Equal(t, expect[i] != 'A', denied, "%s as %s: err = %v", name, c.name, err)
		if denied {
			require.ErrorIs(t, err, rbac.ErrForbidden, "%s as %s", name, c.name)
		}
	}
	require.ErrorIs(t, call(context.Background()), rbac.ErrUnauthenticated, "%s anonymous", name)
}

func TestHistoryAccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := newHistory(b)
	id := "0190c6a0-0000-7000-8000-000000000001"
	checkAccess(t, "WorkerHistory", "A--A---", func(ctx context.Context) error {
		_, err := h.WorkerHistory(ctx, id, application.HistoryQuery{})
		return err
	})
	checkAccess(t, "WorkerStateAt", "A--A---", func(ctx context.Context) error {
		_, err := h.WorkerStateAt(ctx, id, time.Now())
		return err
	})
	checkAccess(t, "Audit", "A--A---", func(ctx context.Context) error {
		_, err := h.Audit(ctx, application.AuditQuery{})
		return err
	})
	checkAccess(t, "ExportAudit", "A--A---", func(ctx context.Context) error {
		return h.ExportAudit(ctx, application.AuditQuery{Limit: 1}, func(application.AuditEntry) error { return nil })
	})
}

func TestHistoryValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := newHistory(b)
	auditor := as("aud-1", "", rbac.RoleAuditor)
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"BadID", func() error { _, err := h.WorkerHistory(auditor, "x", application.HistoryQuery{}); return err }, "id"},
		{"BadType", func() error {
			_, err := h.WorkerHistory(auditor, "0190c6a0-0000-7000-8000-000000000001", application.HistoryQuery{TypePrefix: "Worker*"})
			return err
		}, "type"},
		{"BadCursor", func() error { _, err := h.Audit(auditor, application.AuditQuery{Cursor: "x-y"}); return err }, "cursor"},
		{"ZeroCursor", func() error { _, err := h.Audit(auditor, application.AuditQuery{Cursor: "0"}); return err }, "cursor"},
		{"LimitTooBig", func() error { _, err := h.Audit(auditor, application.AuditQuery{Limit: 1001}); return err }, "limit"},
		{"NegativeLimit", func() error { _, err := h.Audit(auditor, application.AuditQuery{Limit: -1}); return err }, "limit"},
		{"FromNotBeforeTo", func() error {
			at := time.Now()
			_, err := h.Audit(auditor, application.AuditQuery{From: at, To: at})
			return err
		}, "from"},
		{"BadWorker", func() error { _, err := h.Audit(auditor, application.AuditQuery{WorkerID: "w"}); return err }, "worker"},
		{"NoInstant", func() error {
			_, err := h.WorkerStateAt(auditor, "0190c6a0-0000-7000-8000-000000000001", time.Time{})
			return err
		}, "at"},
		{"NegativeExportLimit", func() error {
			return h.ExportAudit(auditor, application.AuditQuery{Limit: -3}, func(application.AuditEntry) error { return nil })
		}, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ve *domain.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Problems[0].Field, "%v", err)
		})
	}
	_, err := h.WorkerHistory(auditor, "0190c6a0-0000-7000-8000-0000000000aa", application.HistoryQuery{})
	var nf *application.NotFoundError
	require.ErrorAs(t, err, &nf)
}

// TestWorkerStateAtFoldsUpToTheInstant drives the clock by hand so that each
// event has a known instant, and compares each snapshot with the aggregate
// loaded right after the event.
func TestWorkerStateAtFoldsUpToTheInstant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := newHistory(b)
	auditor := as("aud-1", "", rbac.RoleAuditor)
	repo := application.NewRepository(b.store, application.EventRegistry(), worker.New, worker.Stream, b.clock, application.UUIDv7{}, application.DefaultRetryPolicy)

	start := b.clock.Now()
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	id := res.ID
	load := func() worker.State {
		w, err := repo.Load(context.Background(), id)
		require.NoError(t, err)
		return w.State()
	}
	states := []worker.State{load()}
	instants := []time.Time{start}
	for _, step := range []func() error{
		func() error { _, err := b.app.ReplaceWorkerTags(adminCtx, id, map[string]string{"a": "1"}); return err },
		func() error { _, err := b.app.StopWorker(adminCtx, id); return err },
		func() error { _, err := b.app.SetDetailedMonitoring(adminCtx, id, true); return err },
	} {
		b.clock.Advance(90 * time.Second)
		instants = append(instants, b.clock.Now())
		require.NoError(t, step())
		states = append(states, load())
	}
	for i, at := range instants {
		probes := []time.Time{at, at.Add(time.Microsecond), at.Add(45 * time.Second), at.Add(90*time.Second - time.Microsecond)}
		if i == len(instants)-1 {
			probes = append(probes, at.Add(1000*time.Hour))
		}
		for _, p := range probes {
			snap, err := h.WorkerStateAt(auditor, id, p)
			require.NoError(t, err)
			require.Equal(t, int64(i), snap.Revision, "at %s", p)
			require.Equal(t, states[i], snap.State, "at %s", p)
			require.Equal(t, at, snap.OccurredAt)
			require.Equal(t, p.UTC(), snap.At)
		}
	}
	_, err = h.WorkerStateAt(auditor, id, start.Add(-time.Microsecond))
	var ny *application.NotYetError
	require.ErrorAs(t, err, &ny)
	require.ErrorIs(t, err, domain.ErrNotFound)
	_, err = h.WorkerStateAt(auditor, "0190c6a0-0000-7000-8000-0000000000ab", start)
	var nf *application.NotFoundError
	require.ErrorAs(t, err, &nf)
}

func hex16(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// appendTags appends n tags_changed events to a worker's stream in one
// append, with the metadata of a command.
func appendTags(t *testing.T, b *bundle, id string, n int, expected uint64, actor string) eventstore.AppendResult {
	t.Helper()
	events := make([]eventstore.EventData, n)
	for i := range events {
		data, err := json.Marshal(worker.TagsChanged{Tags: map[string]string{"n": fmt.Sprint(i)}})
		require.NoError(t, err)
		meta, err := json.Marshal(application.Metadata{Actor: application.Actor{Type: "user", Subject: actor, Username: actor + "-name"},
			CorrelationID: "c", CausationID: "c", OccurredAt: b.clock.Now()})
		require.NoError(t, err)
		events[i] = eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: "worker.tags_changed.v1", Data: data, Metadata: meta}
	}
	res, err := b.store.Append(context.Background(), worker.Stream(id), eventstore.Exact(expected), events...)
	require.NoError(t, err)
	return res
}

func TestAuditPagesAndExport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := newHistory(b)
	auditor := as("aud-1", "", rbac.RoleAuditor)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-1" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	id := res.ID
	actor := "bulk-" + hex16(t)
	last := appendTags(t, b, id, 1234, 0, actor)
	waitProjected(t, b, "audit_log", last.Position.String())

	// Pages of 100, newest first, each entry once.
	seen := map[string]bool{}
	q := application.AuditQuery{Actor: actor, Limit: 100}
	var prev eventstore.Position
	for {
		page, err := h.Audit(auditor, q)
		require.NoError(t, err)
		for _, e := range page.Items {
			require.False(t, seen[e.EventID])
			seen[e.EventID] = true
			pos, err := eventstore.ParsePosition(e.Position)
			require.NoError(t, err)
			require.True(t, prev.IsZero() || pos.Less(prev))
			prev = pos
			require.Equal(t, actor, e.Actor.Subject)
			require.Equal(t, id, e.WorkerID)
		}
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	require.Len(t, seen, 1234)

	// By username too, and by type.
	page, err := h.Audit(auditor, application.AuditQuery{Actor: actor + "-name", TypePrefix: "worker.tags", Limit: 5})
	require.NoError(t, err)
	require.Len(t, page.Items, 5)

	// Exports: everything in batches, or up to a limit.
	count := func(q application.AuditQuery) int {
		n := 0
		require.NoError(t, h.ExportAudit(auditor, q, func(application.AuditEntry) error { n++; return nil }))
		return n
	}
	require.Equal(t, 1235, count(application.AuditQuery{WorkerID: id}))
	require.Equal(t, 501, count(application.AuditQuery{WorkerID: id, Limit: 501}))
	require.Equal(t, 1000, count(application.AuditQuery{WorkerID: id, Limit: 1000}))
	stop := errors.New("stop")
	n := 0
	err = h.ExportAudit(auditor, application.AuditQuery{WorkerID: id}, func(application.AuditEntry) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)

	// Worker history covers the same worker.
	hp, err := h.WorkerHistory(adminCtx, id, application.HistoryQuery{TypePrefix: "worker.imported"})
	require.NoError(t, err)
	require.Len(t, hp.Items, 1)
	require.Equal(t, "worker.imported.v1", hp.Items[0].EventType)
	require.Empty(t, hp.NextCursor)
}
