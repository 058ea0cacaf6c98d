package application_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// TestWorkerStateAtOverALongHistory gives a worker a history longer than
// one page of the event store reads (application's readPage, 1,000), with
// events of many kinds at irregular instants (microseconds to hours apart),
// and checks WorkerStateAt against an independent fold of the stream. Each
// probed gap between two events is checked at its first instant (the
// event's own), its last (a microsecond before the next event) and an
// instant drawn at random inside it: every gap of the first events and of
// the last ones (across the page boundary), and every 50th in between
// (each call folds up to a thousand events, so probing all of them would
// cost minutes under the race detector).
func TestWorkerStateAtOverALongHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := newHistory(b)
	auditor := as("aud-long", "", rbac.RoleAuditor)
	reg := application.EventRegistry()

	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	id := res.ID
	imported, err := b.store.ReadStream(context.Background(), worker.Stream(id), 0, 10)
	require.NoError(t, err)
	require.Len(t, imported, 1)

	const n = 1010 // events after the import
	rng := rand.New(rand.NewPCG(1, 2))
	at := b.clock.Now()
	var (
		data  []eventstore.EventData
		times = []time.Time{occurredAt(t, imported[0])}
	)
	for i := range n {
		// Irregular gaps, from a few microseconds to hours.
		at = at.Add(time.Duration(1+rng.IntN(5)) * time.Duration([]int64{int64(time.Microsecond), int64(time.Millisecond), int64(time.Second), int64(time.Hour)}[rng.IntN(4)]))
		var e domain.Event
		switch i % 6 {
		case 0:
			e = worker.TagsChanged{Tags: map[string]string{"step": fmt.Sprint(i)}}
		case 1:
			e = worker.DetailedMonitoringChanged{Enabled: i%4 == 1}
		case 2:
			e = worker.EndpointChanged{Endpoint: fmt.Sprintf("https://192.0.2.%d", i%250+1)}
		case 3:
			e = worker.ActivityObserved{LastActivityAt: at.Add(-time.Minute), Category: "lab"}
		case 4:
			e = worker.IdleDetectionDisabled{}
		default:
			e = worker.IdleDetectionEnabled{TimeoutSeconds: int64(600 + i)}
		}
		typ, body, err := reg.Encode(e)
		require.NoError(t, err)
		meta, err := json.Marshal(application.Metadata{
			Actor: application.Actor{Type: "user", Subject: "u-long"}, CorrelationID: "c", CausationID: "c", OccurredAt: at,
		})
		require.NoError(t, err)
		data = append(data, eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: typ, Data: body, Metadata: meta})
		times = append(times, at.Truncate(time.Microsecond))
	}
	for i := 0; i < n; i += 100 {
		_, err := b.store.Append(context.Background(), worker.Stream(id), eventstore.Exact(uint64(i)), data[i:min(i+100, n)]...)
		require.NoError(t, err)
	}

	// The reference: fold the stream once, keeping the state after each
	// event.
	var states []worker.State
	w := worker.New()
	for from := uint64(0); ; {
		recs, err := b.store.ReadStream(context.Background(), worker.Stream(id), from, 500)
		require.NoError(t, err)
		for _, rec := range recs {
			e, occurred, err := application.Decode(reg, rec)
			require.NoError(t, err)
			require.NoError(t, w.Apply(e, occurred))
			states = append(states, w.State())
		}
		if len(recs) < 500 {
			break
		}
		from = recs[len(recs)-1].Revision + 1
	}
	require.Len(t, states, n+1)

	check := func(i int, probe time.Time) {
		t.Helper()
		snap, err := h.WorkerStateAt(auditor, id, probe)
		require.NoError(t, err, "at %s", probe)
		require.Equal(t, int64(i), snap.Revision, "at %s (event %d at %s)", probe, i, times[i])
		require.Equal(t, states[i], snap.State, "state at %s", probe)
		require.Equal(t, times[i].UTC(), snap.OccurredAt)
	}
	for i := range times {
		if i >= 20 && i < 995 && i%50 != 0 {
			continue
		}
		last := times[i].Add(1000 * time.Hour)
		if i+1 < len(times) {
			last = times[i+1].Add(-time.Microsecond)
		}
		check(i, times[i])
		check(i, times[i].Add(time.Duration(rng.Int64N(int64(last.Sub(times[i]))+1))).Truncate(time.Microsecond))
		check(i, last)
	}
	_, err = h.WorkerStateAt(auditor, id, times[0].Add(-time.Microsecond))
	var ny *application.NotYetError
	require.ErrorAs(t, err, &ny)
}

// occurredAt returns a recorded event's instant as WorkerStateAt compares
// it.
func occurredAt(t *testing.T, rec eventstore.RecordedEvent) time.Time {
	t.Helper()
	m, err := application.ParseMetadata(rec.Metadata)
	require.NoError(t, err)
	return m.OccurredAt.Truncate(time.Microsecond)
}
