package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// The event stream benchmarks (issue 6). Run them with
//
//	go test -run '^$' -bench 'BenchmarkDashboardSubscribers' -benchtime 100x ./api/
//	go test -run '^$' -bench 'BenchmarkDomainCatchUp' -benchtime 3x ./api/
//
// Both serve the API on a loopback listener of the server's own, as serve
// does, with the clients in the same process.

// serveLive serves e's server on a loopback listener until the benchmark
// ends and returns its base URL.
func serveLive(b *testing.B, e *env) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.server.Serve(l) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.server.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		<-served
	})
	return "http://" + l.Addr().String()
}

// rawSubscriber is a dashboard subscriber on a raw connection, with as
// little client-side state as possible (a 1 KiB read buffer), so that the
// process's memory growth per subscriber is the server's.
type rawSubscriber struct {
	conn net.Conn
	res  *http.Response
}

// subscribe opens the dashboard stream and reads the initial snapshots
// (initial of them).
func subscribe(base string, initial int) (*rawSubscriber, error) {
	host := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, base+"/api/events/stream", nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set(testUserHeader, "user")
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("status %d", res.StatusCode)
	}
	n := 0
	for ev, err := range sse.Read(res.Body, nil) {
		if err != nil {
			conn.Close()
			return nil, err
		}
		if ev.Type == application.DashboardSnapshot {
			if n++; n == initial {
				break
			}
		}
	}
	return &rawSubscriber{conn: conn, res: res}, nil
}

// liveMemory is the heap and stack in use after a collection.
func liveMemory() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// BenchmarkDashboardSubscribers connects 2,000 dashboard subscribers (no
// filter, a fleet of 50 workers, so 50 initial snapshots each) on
// loopback. It reports the memory each idle subscriber costs (heap and
// stacks of the whole process, so client side included: a connection and
// a 1 KiB read buffer), then, per iteration, changes one worker and
// measures the time from just before the command's append to the arrival
// of the new snapshot at every subscriber (projection, NOTIFY, catalog,
// fan-out, write, parse): p50, p99 and max over all subscribers and
// iterations.
func BenchmarkDashboardSubscribers(b *testing.B) {
	const (
		subscribers = 2000
		fleet       = 50
	)
	e := newStreamEnv(b, streamConfig{heartbeat: time.Hour, writeTimeout: time.Minute})
	base := serveLive(b, e)
	ids := make([]string, fleet)
	for i := range ids {
		ids[i] = e.importWorker(b, fmt.Sprintf("fanout-%02d", i), worker.EC2Running)
	}
	target := ids[0]
	// Wait until the catalog has the whole fleet: a subscriber then gets
	// its 50 snapshots at once.
	if _, err := subscribe(base, fleet); err != nil {
		b.Fatal(err)
	}

	before := liveMemory()
	subs := make([]*rawSubscriber, subscribers)
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= subscribers {
					return
				}
				s, err := subscribe(base, fleet)
				if err != nil {
					errMu.Lock()
					first = err
					errMu.Unlock()
					return
				}
				subs[i] = s
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	b.Cleanup(func() {
		for _, s := range subs {
			s.conn.Close()
		}
	})
	perIdle := float64(liveMemory()-before) / subscribers
	if got := e.server.streams.hub.Readers(); got != subscribers {
		b.Fatalf("%d subscribers on the hub, want %d", got, subscribers)
	}

	// Every subscriber reads on; each round waits for the new snapshot at
	// all of them.
	const warmup = 3
	var (
		marker    atomic.Pointer[string]
		remaining atomic.Int64
		round     atomic.Int64
		arrived   = make(chan struct{}, 1)
		received  = make([][]int64, warmup+b.N)
	)
	for i := range received {
		received[i] = make([]int64, subscribers)
	}
	for i, s := range subs {
		go func() {
			for ev, err := range sse.Read(s.res.Body, nil) {
				if err != nil {
					return
				}
				m := marker.Load()
				if m == nil || ev.Type != application.DashboardSnapshot || !strings.Contains(ev.Data, *m) {
					continue
				}
				received[round.Load()][i] = time.Now().UnixNano()
				if remaining.Add(-1) == 0 {
					arrived <- struct{}{}
				}
			}
		}()
	}
	ctx := ctxAs("manager")
	starts := make([]int64, warmup+b.N)
	change := func(n int) {
		m := fmt.Sprintf(`"bench":"%d"`, n)
		round.Store(int64(n))
		remaining.Store(subscribers)
		marker.Store(&m)
		starts[n] = time.Now().UnixNano()
		if _, err := e.app.ReplaceWorkerTags(ctx, target, map[string]string{"bench": fmt.Sprint(n)}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-arrived:
		case <-time.After(time.Minute):
			b.Fatalf("round %d: %d subscribers did not get the change", n, remaining.Load())
		}
	}
	// Untimed rounds first: the 2,000 reading goroutines start up (their
	// parsers allocate) and compete with the first change.
	for n := range warmup {
		change(n)
	}
	b.ResetTimer()
	for n := range b.N {
		change(warmup + n)
	}
	b.StopTimer()
	lat := make([]float64, 0, b.N*subscribers)
	worst := 0.0
	for n := warmup; n < warmup+b.N; n++ {
		for _, at := range received[n] {
			d := float64(at-starts[n]) / 1e6
			lat = append(lat, d)
			worst = max(worst, d)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
	b.ReportMetric(worst, "max-ms")
	b.ReportMetric(perIdle, "B/idle-subscriber")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDomainCatchUp appends 100,000 events (about 300 bytes of data
// and 250 of metadata each, current event types, so the stream passes the
// stored payload through) and, per iteration, reads all of them twice, in
// alternating order: with the event store's own ReadAll in batches of 512
// (the subscription's batch), and as an integrator through GET
// /api/events/domain?from= on loopback, parsing every frame with go-sse.
// It reports both rates and their ratio. The events are on streams no
// read model follows, so that no projection competes for the two cores.
func BenchmarkDomainCatchUp(b *testing.B) {
	const total = 100_000
	e := newStreamEnv(b, streamConfig{heartbeat: time.Hour, writeTimeout: time.Minute})
	base := serveLive(b, e)
	store := shared.store
	reg := application.EventRegistry()
	ctx := context.Background()

	start := appendBenchEvents(b, reg, "bench_catchup_start", 1, nil)
	meta, _ := json.Marshal(application.Metadata{
		Actor:         application.Actor{Type: "system", Subject: "system:fleet_metrics", Username: "system:fleet_metrics", Roles: []string{"system"}},
		CorrelationID: application.UUIDv7{}.NewID(), CausationID: application.UUIDv7{}.NewID(),
		OccurredAt: time.Now().UTC(), Command: "worker.record_metrics",
	})
	var end eventstore.Position
	for k := 0; k < total; k += 500 {
		end = appendBenchEvents(b, reg, fmt.Sprintf("bench_catchup-%03d", k/500%100), 500, meta)
	}

	readAll := func() (int, time.Duration) {
		t0 := time.Now()
		n := 0
		for from := start; from.Less(end); {
			recs, next, err := store.ReadAll(ctx, from, 512, eventstore.Filter{})
			if err != nil {
				b.Fatal(err)
			}
			n += len(recs)
			from = next
		}
		return n, time.Since(t0)
	}
	client := &http.Client{Transport: &http.Transport{}}
	stream := func() (int, time.Duration) {
		t0 := time.Now()
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+"/api/events/domain?from="+start.String(), nil)
		req.Header.Set(testUserHeader, "integrator")
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer res.Body.Close()
		n, last := 0, end.String()
		for ev, err := range sse.Read(res.Body, &sse.ReadConfig{MaxEventSize: 1 << 20}) {
			if err != nil {
				b.Fatal(err)
			}
			if ev.Type == EventHeartbeat {
				continue
			}
			n++
			if ev.LastEventID == last {
				break
			}
		}
		return n, time.Since(t0)
	}
	// Warm both paths once.
	readAll()
	stream()

	var storeRate, streamRate []float64
	b.ResetTimer()
	for i := range b.N {
		order := []func() (int, time.Duration){readAll, stream}
		if i%2 == 1 {
			order = []func() (int, time.Duration){stream, readAll}
		}
		for k, f := range order {
			n, d := f()
			if n < total {
				b.Fatalf("read %d events, want at least %d", n, total)
			}
			rate := float64(n) / d.Seconds()
			if (k == 0) == (i%2 == 0) {
				storeRate = append(storeRate, rate)
			} else {
				streamRate = append(streamRate, rate)
			}
		}
	}
	b.StopTimer()
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	b.ReportMetric(mean(storeRate), "readall-ev/s")
	b.ReportMetric(mean(streamRate), "sse-ev/s")
	b.ReportMetric(mean(streamRate)/mean(storeRate), "ratio")
	b.ReportMetric(0, "ns/op")
}

// appendBenchEvents appends n events to stream (tags changes and metrics
// samples alternating, as a busy fleet records them) and returns the last
// position.
func appendBenchEvents(b *testing.B, reg *domain.Registry, stream string, n int, meta []byte) eventstore.Position {
	b.Helper()
	if meta == nil {
		meta = []byte(`{}`)
	}
	cpu, mem := 37.5, 61.25
	running, all := 4, 9
	events := make([]eventstore.EventData, n)
	for i := range events {
		var ev domain.Event = worker.MetricsSampled{EC2SystemStatus: "ok", EC2InstanceStatus: "ok", CloudWatchCPU: &cpu, CloudWatchMemory: &mem,
			CMLCPU: &cpu, CMLMemory: &mem, CMLDisk: &mem, NodesRunning: &running, NodesTotal: &all}
		if i%2 == 1 {
			ev = worker.TagsChanged{Tags: map[string]string{"Name": fmt.Sprintf("bench-%05d", i), "team": "netops", "env": "bench", "cost-center": "cc-1234"}}
		}
		typ, data, err := reg.Encode(ev)
		if err != nil {
			b.Fatal(err)
		}
		events[i] = eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: typ, Data: data, Metadata: meta}
	}
	res, err := shared.store.Append(context.Background(), stream, eventstore.Any, events...)
	if err != nil {
		b.Fatal(err)
	}
	return res.Position
}
