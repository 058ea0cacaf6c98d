package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// TestStateAtOverALongHistory gives a worker more events than one page of
// the stream reads (1,000) and asks GET .../state?at= for instants around
// the first events, in the middle and across the page boundary: at an
// event's own instant, between two events and a microsecond before the
// next. Each answer must equal an independent fold of the stream up to
// that instant. (application's TestWorkerStateAtOverALongHistory covers
// more instants and kinds of events without HTTP.)
func TestStateAtOverALongHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "long-history", worker.EC2Running)
	reg := application.EventRegistry()
	const n = 1005
	base := time.Now().UTC().Add(time.Second).Truncate(time.Microsecond)
	var data []eventstore.EventData
	for i := range n {
		var ev domain.Event = worker.TagsChanged{Tags: map[string]string{"step": fmt.Sprint(i)}}
		switch i % 3 {
		case 1:
			ev = worker.DetailedMonitoringChanged{Enabled: i%2 == 1}
		case 2:
			ev = worker.EndpointChanged{Endpoint: fmt.Sprintf("https://192.0.2.%d", i%200+1)}
		}
		typ, body, err := reg.Encode(ev)
		require.NoError(t, err)
		meta, err := json.Marshal(application.Metadata{Actor: application.Actor{Type: "user", Subject: "u-long"},
			CorrelationID: "c", CausationID: "c", OccurredAt: base.Add(time.Duration(i) * time.Millisecond)})
		require.NoError(t, err)
		data = append(data, eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: typ, Data: body, Metadata: meta})
	}
	for i := 0; i < n; i += 250 {
		_, err := shared.store.Append(context.Background(), worker.Stream(id), eventstore.Exact(uint64(i)), data[i:min(i+250, n)]...)
		require.NoError(t, err)
	}

	// The reference fold, and each event's instant.
	var (
		states []worker.State
		times  []time.Time
	)
	w := worker.New()
	for from := uint64(0); ; {
		recs, err := shared.store.ReadStream(context.Background(), worker.Stream(id), from, 400)
		require.NoError(t, err)
		for _, rec := range recs {
			ev, at, err := application.Decode(reg, rec)
			require.NoError(t, err)
			require.NoError(t, w.Apply(ev, at))
			states = append(states, w.State())
			times = append(times, at.Truncate(time.Microsecond))
		}
		if len(recs) < 400 {
			break
		}
		from = recs[len(recs)-1].Revision + 1
	}
	require.Len(t, states, n+1)

	for _, i := range []int{0, 1, 2, 3, 500, 998, 999, 1000, 1001, 1002, n - 1, n} {
		last := times[i].Add(time.Hour)
		if i < n {
			last = times[i+1].Add(-time.Microsecond)
		}
		for _, at := range []time.Time{times[i], times[i].Add(last.Sub(times[i]) / 2), last} {
			res := e.do(t, request{method: http.MethodGet, as: "auditor",
				path: "/api/workers/" + id + "/state?at=" + url.QueryEscape(at.Format(time.RFC3339Nano))})
			require.Equal(t, http.StatusOK, res.status, "%s", res.body)
			var snap application.WorkerSnapshot
			res.json(t, &snap)
			require.Equal(t, int64(i), snap.Revision, "at %s", at)
			require.Equal(t, states[i], snap.State, "state at %s", at)
		}
	}
}
