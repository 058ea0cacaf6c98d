package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sse "github.com/tmaxmax/go-sse"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// received is one event a domain stream client handled.
type received struct {
	Position string
	ID       string
}

// resumingClient reads the domain stream with one filter, disconnecting
// after a random number of events and resuming from the last id it
// handled (events and heartbeats), until it has seen the log up to a
// position.
type resumingClient struct {
	name    string
	query   url.Values
	filter  eventstore.Filter
	got     []received
	last    eventstore.Position // the last id handled
	connect int
}

// run reads until the log up to until() (set once the writer is done) is
// covered. Errors are reported with t.Errorf (it runs on its own
// goroutine).
func (c *resumingClient) run(t *testing.T, e *env, rng *rand.Rand, until func() (eventstore.Position, bool)) {
	client := &http.Client{Transport: e.client.Transport}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if end, done := until(); done && !c.last.Less(end) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: did not reach the end of the log (at %s after %d connections)", c.name, c.last, c.connect)
			return
		}
		c.connect++
		if err := c.session(client, e.url, 1+rng.IntN(60)); err != nil {
			t.Errorf("%s: %v", c.name, err)
			return
		}
		if rng.IntN(3) == 0 {
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
	}
}

// session connects once, handles up to n events (heartbeats included)
// and disconnects.
func (c *resumingClient) session(client *http.Client, base string, n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := url.Values{}
	for k, v := range c.query {
		q[k] = v
	}
	if c.connect == 1 {
		q.Set("from", c.last.String()) // the first time by query, then as EventSource does
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/events/domain?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set(testUserHeader, "integrator")
	if c.connect > 1 {
		req.Header.Set("Last-Event-ID", c.last.String())
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	handled := 0
	for ev, err := range sse.Read(res.Body, &sse.ReadConfig{MaxEventSize: 4 << 20}) {
		if err != nil {
			return err
		}
		pos, err := eventstore.ParsePosition(ev.LastEventID)
		if err != nil {
			return fmt.Errorf("id of %s: %w", ev.Type, err)
		}
		if pos.Less(c.last) {
			return fmt.Errorf("the id went back from %s to %s", c.last, pos)
		}
		if ev.Type != EventHeartbeat {
			var d application.DomainEvent
			if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
				return err
			}
			if d.Position != ev.LastEventID || d.Type != ev.Type {
				return fmt.Errorf("frame id %s type %s, envelope %s %s", ev.LastEventID, ev.Type, d.Position, d.Type)
			}
			c.got = append(c.got, received{Position: d.Position, ID: d.ID})
		}
		c.last = pos
		if handled++; handled >= n {
			return nil
		}
	}
	return fmt.Errorf("the server ended the stream")
}

// TestDomainStreamLosslessResume appends events continuously to a few
// workers' lifecycle and telemetry streams while several clients, each
// with its own filter, read the domain stream, disconnect after a random
// number of events and resume from their last id (by ?from= the first
// time, by Last-Event-ID after). Heartbeats carry checkpoint ids, so
// filtered clients also resume from positions that are not events. Each
// client's received sequence must equal the event log read afterwards
// with the same filter: no gap, no duplicate, same order.
func TestDomainStreamLosslessResume(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, streamConfig{heartbeat: 30 * time.Millisecond})
	var ids []string
	for i := range 3 {
		ids = append(ids, e.importWorker(t, fmt.Sprintf("resume-%d", i), worker.EC2Running))
	}
	start := appendTagChanges(t, ids[0], 1, 0) // where every client starts

	clients := []*resumingClient{
		{name: "all"},
		{name: "worker", query: url.Values{"worker_id": {ids[1]}},
			filter: eventstore.Filter{StreamPrefixes: []string{worker.Stream(ids[1]), worker.TelemetryStream(ids[1])}}},
		{name: "tags", query: url.Values{"types": {"worker.tags"}},
			filter: eventstore.Filter{TypePrefixes: []string{"worker.tags"}}},
		{name: "idle+metrics", query: url.Values{"types": {"worker.idle_detection,worker.metrics"}},
			filter: eventstore.Filter{TypePrefixes: []string{"worker.idle_detection", "worker.metrics"}}},
		{name: "worker-metrics", query: url.Values{"worker_id": {ids[2]}, "types": {"worker.metrics"}},
			filter: eventstore.Filter{StreamPrefixes: []string{worker.Stream(ids[2]), worker.TelemetryStream(ids[2])}, TypePrefixes: []string{"worker.metrics"}}},
	}

	var (
		mu        sync.Mutex
		end       eventstore.Position
		writeDone bool
	)
	until := func() (eventstore.Position, bool) {
		mu.Lock()
		defer mu.Unlock()
		return end, writeDone
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		c.last = start
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(t, e, rand.New(rand.NewPCG(uint64(i), 7)), until)
		}()
	}

	// The writer: 1,200 events in appends of 1 to 5, across the workers'
	// lifecycle and telemetry streams.
	reg := application.EventRegistry()
	rng := rand.New(rand.NewPCG(42, 42))
	meta := []byte(`{"actor":{"type":"system","subject":"system:resume-test"},"correlation_id":"c","causation_id":"c"}`)
	for written := 0; written < 1200; {
		id := ids[rng.IntN(len(ids))]
		n := 1 + rng.IntN(5)
		stream := worker.Stream(id)
		telemetry := rng.IntN(3) == 0
		if telemetry {
			stream = worker.TelemetryStream(id)
		}
		events := make([]eventstore.EventData, n)
		for k := range events {
			var ev domain.Event
			switch {
			case telemetry:
				ev = worker.MetricsSampled{CMLCPU: ptr(float64(written + k))}
			case rng.IntN(2) == 0:
				ev = worker.TagsChanged{Tags: map[string]string{"n": fmt.Sprint(written + k)}}
			case rng.IntN(2) == 0:
				ev = worker.IdleDetectionDisabled{}
			default:
				ev = worker.IdleDetectionEnabled{TimeoutSeconds: int64(600 + k)}
			}
			typ, data, err := reg.Encode(ev)
			require.NoError(t, err)
			events[k] = eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: typ, Data: data, Metadata: meta}
		}
		res, err := shared.store.Append(context.Background(), stream, eventstore.Any, events...)
		require.NoError(t, err)
		mu.Lock()
		end = res.Position
		mu.Unlock()
		written += n
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		}
	}
	mu.Lock()
	writeDone = true
	mu.Unlock()
	wg.Wait()
	if t.Failed() {
		return
	}

	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			var want []received
			for from := start; ; {
				recs, next, err := shared.store.ReadAll(context.Background(), from, 1000, c.filter)
				require.NoError(t, err)
				stop := false
				for _, r := range recs {
					if c.last.Less(r.Position) {
						stop = true
						break
					}
					want = append(want, received{Position: r.Position.String(), ID: r.ID})
				}
				// The log up to c.last is settled (the client was given
				// ids up to it), so a read that gets nothing new is the end.
				if stop || !next.Less(c.last) || next == from {
					break
				}
				from = next
			}
			require.NotEmpty(t, want)
			require.Equal(t, len(want), len(c.got), "%s: %d connections", c.name, c.connect)
			require.Equal(t, want, c.got)
			require.Greater(t, c.connect, 2, "the client should have resumed several times")
			t.Logf("%s: %d events over %d connections, up to %s", c.name, len(c.got), c.connect, c.last)
		})
	}
}
