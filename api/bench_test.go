package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// benchFleet is the number of workers of the read benchmarks.
const benchFleet = 1000

// benchServer is a server over a database of its own, served on loopback.
type benchServer struct {
	store  *postgres.Store
	app    *application.App
	server *Server
	url    string
	client *http.Client
}

// newBenchServer opens a fresh database; with projections it runs every
// read model until the benchmark ends.
func newBenchServer(b *testing.B, withProjections bool) *benchServer {
	b.Helper()
	ctx := context.Background()
	pool, err := pgdb.Connect(ctx, withMaxConns(pgtest.NewDatabase(b), 32))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	quiet := slog.New(slog.DiscardHandler)
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	all := projections.All(application.EventRegistry())
	var manager *projections.Manager
	if withProjections {
		manager = projections.NewManager(store, pool, all, projections.RunnerOptions{Logger: quiet})
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = manager.Run(mctx) }()
		b.Cleanup(func() { cancel(); <-done })
	}
	sealer, err := sealing.New(sealing.RandomKey())
	if err != nil {
		b.Fatal(err)
	}
	opts := application.Options{
		Store: store, Sealer: sealer, Logger: quiet,
		Workers: projections.NewWorkerReader(pool), Settings: projections.NewSettingsReader(pool), Tasks: projections.NewTaskReader(pool),
		Regions: []string{"us-east-1", "us-west-2"}, Defaults: testDefaults,
	}
	if withProjections {
		// As serve does: the worker catalog answers worker queries and gives
		// commands their snapshots.
		catalog := projections.NewWorkerCatalog(pool, projections.CatalogOptions{Logger: quiet})
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = catalog.Run(cctx) }()
		b.Cleanup(func() { cancel(); <-done })
		if err := catalog.WaitReady(cctx); err != nil {
			b.Fatal(err)
		}
		opts.Workers = projections.NewCatalogReader(catalog, projections.NewWorkerReader(pool))
		opts.WorkerSnapshots = catalog.Snapshot
	}
	app := application.New(opts)
	op := projections.NewOperator(projections.OperatorOptions{Store: store, Pool: pool, Projections: all, Manager: manager, Logger: quiet})
	b.Cleanup(op.Close)
	s := New(Options{
		Logger: quiet, App: app, Auth: testAuthenticator{}, Metrics: prometheus.NewRegistry(),
		History: application.NewHistory(application.HistoryOptions{Store: store, Audit: projections.NewAuditReader(pool)}),
		System:  application.NewSystem(application.SystemOptions{Projections: op, Logger: quiet}),
		Admin:   application.NewAdmin(op),
		// The shared simulated cloud and insert-only jobs of TestMain.
		Telemetry: application.NewTelemetry(app, projections.NewMetricsReader(pool), projections.NewLabsReader(pool)),
		Jobs:      application.NewJobControl(app, shared.jobs),
		Fleet: application.NewFleet(app, shared.cloud.Provider, shared.cloud.CML,
			application.FleetOptions{EndpointTemplate: shared.cloud.EndpointTemplate}),
	})
	ts := httptest.NewServer(s.Handler())
	b.Cleanup(ts.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	return &benchServer{store: store, app: app, server: s, url: ts.URL, client: &http.Client{Transport: tr}}
}

// importWorkers makes n running workers, appending their imported events
// directly (16 at a time), and returns their ids.
func (bs *benchServer) importWorkers(b *testing.B, n int) []string {
	b.Helper()
	reg := application.EventRegistry()
	ids := make([]string, n)
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	meta, _ := json.Marshal(application.Metadata{Actor: application.Actor{Type: "user", Subject: "u-admin", Username: "admin", Roles: []string{"admin"}},
		CorrelationID: "bench", CausationID: "bench", OccurredAt: time.Now().UTC(), Command: "worker.import"})
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id := application.UUIDv7{}.NewID()
				_, data, err := reg.Encode(worker.Imported{
					WorkerID: id, Name: fmt.Sprintf("bench-%05d", i), Region: []string{"us-east-1", "us-west-2"}[i%2],
					InstanceID: fmt.Sprintf("i-%017x", i), InstanceType: "m5zn.metal", AMIID: "ami-0123456789abcdef0",
					EC2State: worker.EC2Running, PublicIP: "192.0.2.10", PrivateIP: "10.0.0.10", Endpoint: "https://192.0.2.10",
					Tags: map[string]string{"Name": fmt.Sprintf("bench-%05d", i), "team": "netops", "env": "bench"}, IdleDetectionEnabled: true,
				})
				if err == nil {
					_, err = bs.store.Append(context.Background(), worker.Stream(id), eventstore.NoStream,
						eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: "worker.imported.v1", Data: data, Metadata: meta})
				}
				if err != nil {
					errMu.Lock()
					first = err
					errMu.Unlock()
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	return ids
}

// waitWorkers waits until the worker list holds n workers.
func (bs *benchServer) waitWorkers(b *testing.B, n int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, total, err := bs.app.ListWorkers(ctxAs("user"), application.WorkerFilter{Limit: 1})
		if err != nil {
			b.Fatal(err)
		}
		if total >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d workers projected", total, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get performs one request and drains the body; it returns the status.
func (bs *benchServer) call(method, path string) (int, int, error) {
	req, err := http.NewRequest(method, bs.url+path, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set(testUserHeader, "admin")
	res, err := bs.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, int(n), err
}

// loadResult is the outcome of one load run.
type loadResult struct {
	rps      float64
	p50, p99 time.Duration
}

// load is one kind of request: op(i) makes request i (each i once) and
// returns its status, which must be want.
type load struct {
	want int
	op   func(i int) (int, error)
}

// benchRounds is how many rounds runPair splits each kind's requests into.
const benchRounds = 10

// runPair sends n requests of each kind from clients concurrent clients, in
// alternating rounds (a, b, then b, a, ...) so that both kinds meet the same
// conditions on a shared machine, and reports each kind's throughput over
// its own rounds.
func runPair(b *testing.B, clients, n int, a, c load) (loadResult, loadResult) {
	b.Helper()
	kinds := []load{a, c}
	lat := [2][]time.Duration{make([]time.Duration, n), make([]time.Duration, n)}
	var busy [2]time.Duration
	per := (n + benchRounds - 1) / benchRounds
	for r := 0; r*per < n; r++ {
		from, to := r*per, min(n, (r+1)*per)
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, k := range order {
			busy[k] += runRound(b, clients, from, to, kinds[k], lat[k])
		}
	}
	var out [2]loadResult
	for k := range 2 {
		slices.Sort(lat[k])
		out[k] = loadResult{rps: float64(n) / busy[k].Seconds(), p50: lat[k][n/2], p99: lat[k][min(n-1, n*99/100)]}
	}
	return out[0], out[1]
}

// runRound makes requests from..to-1 of one kind from clients concurrent
// clients and returns the wall time it took.
func runRound(b *testing.B, clients, from, to int, l load, lat []time.Duration) time.Duration {
	b.Helper()
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	next.Store(int64(from))
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= to {
					return
				}
				t0 := time.Now()
				status, err := l.op(i)
				lat[i] = time.Since(t0)
				if err == nil && status != l.want {
					err = fmt.Errorf("request %d: status %d, want %d", i, status, l.want)
				}
				if err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		b.Fatal(first)
	}
	return elapsed
}

func report(b *testing.B, dyn, static loadResult) {
	b.ReportMetric(dyn.rps, "req/s")
	b.ReportMetric(float64(dyn.p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(static.rps, "static-req/s")
	b.ReportMetric(float64(static.p99.Microseconds())/1000, "static-p99-ms")
	b.ReportMetric(dyn.rps/static.rps, "ratio")
	b.ReportMetric(0, "ns/op") // the figures above are what counts
}

// staticRoute serves body with the dynamic route's content type from the
// same server, through the same middleware (the /api group's included).
func staticRoute(s *Server, path string, body []byte) {
	s.echo.GET(path, func(c echo.Context) error { return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body) })
}

// The read and command benchmarks report req/s and p99 of the route and of
// its baseline, measured in alternating rounds in the same run (see
// runPair), and their ratio. Run them with
//
//	go test -run '^$' -bench 'BenchmarkListWorkers|BenchmarkGetWorker|BenchmarkStopWorker' -benchtime 3s -count 3 ./api/

// BenchmarkListWorkers: GET /api/workers over a fleet of 1,000 workers
// (the whole fleet in one page, and the default page of 100), against a
// static handler of the same server returning the same bytes, from 8
// concurrent clients on loopback.
func BenchmarkListWorkers(b *testing.B) {
	bs := newBenchServer(b, true)
	bs.importWorkers(b, benchFleet)
	bs.waitWorkers(b, benchFleet)
	for _, limit := range []int{1000, 100} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			path := fmt.Sprintf("/api/workers?limit=%d", limit)
			body := bs.fetch(b, path)
			static := fmt.Sprintf("/api/bench/static-list-%d", limit)
			staticRoute(bs.server, static, body)
			dyn, st := runPair(b, 8, max(b.N, 20),
				load{http.StatusOK, func(int) (int, error) { s, _, err := bs.call(http.MethodGet, path); return s, err }},
				load{http.StatusOK, func(int) (int, error) { s, _, err := bs.call(http.MethodGet, static); return s, err }})
			b.ReportMetric(float64(len(body))/1024, "KiB/resp")
			report(b, dyn, st)
		})
	}
}

// BenchmarkGetWorker: GET /api/workers/{id} across the 1,000 workers against
// a static handler of the same server returning one worker's bytes, from 8
// concurrent clients.
func BenchmarkGetWorker(b *testing.B) {
	bs := newBenchServer(b, true)
	ids := bs.importWorkers(b, benchFleet)
	bs.waitWorkers(b, benchFleet)
	body := bs.fetch(b, "/api/workers/"+ids[0])
	staticRoute(bs.server, "/api/bench/static-worker", body)
	b.Run(fmt.Sprintf("fleet=%d", benchFleet), func(b *testing.B) {
		dyn, st := runPair(b, 8, max(b.N, 100),
			load{http.StatusOK, func(i int) (int, error) {
				s, _, err := bs.call(http.MethodGet, "/api/workers/"+ids[i%len(ids)])
				return s, err
			}},
			load{http.StatusOK, func(int) (int, error) {
				s, _, err := bs.call(http.MethodGet, "/api/bench/static-worker")
				return s, err
			}})
		b.ReportMetric(float64(len(body))/1024, "KiB/resp")
		report(b, dyn, st)
	})
}

func (bs *benchServer) fetch(b *testing.B, path string) []byte {
	b.Helper()
	req, _ := http.NewRequest(http.MethodGet, bs.url+path, nil)
	req.Header.Set(testUserHeader, "admin")
	res, err := bs.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %v", path, res.StatusCode, err)
	}
	return body
}

// BenchmarkStopWorker: POST /api/workers/{id}/stop from 16 concurrent
// clients, each request on a distinct running worker (every call appends one
// event), against the raw Store.Append from 16 writers (the same
// stop_requested event with an exact expected revision, on distinct streams
// that hold their imported event, as the command appends it) on the same
// database. The server runs as serve does (projections and the worker
// catalog, whose snapshots spare the command a stream read).
func BenchmarkStopWorker(b *testing.B) {
	bs := newBenchServer(b, true)
	n := max(b.N, 64)
	ids := bs.importWorkers(b, n)
	bs.waitWorkers(b, n)
	// The raw append: one stop_requested event per stream, after the
	// imported one, as the command appends it.
	raw := bs.importWorkers(b, n)
	reg := application.EventRegistry()
	_, data, err := reg.Encode(worker.StopRequested{Reason: worker.StopManual})
	if err != nil {
		b.Fatal(err)
	}
	meta, _ := json.Marshal(application.Metadata{Actor: application.Actor{Type: "user", Subject: "u-admin", Username: "admin", Roles: []string{"admin"}},
		CorrelationID: application.UUIDv7{}.NewID(), CausationID: application.UUIDv7{}.NewID(), OccurredAt: time.Now().UTC(), Command: "worker.stop"})
	b.ResetTimer()
	dyn, app := runPair(b, 16, n,
		load{http.StatusAccepted, func(i int) (int, error) {
			s, _, err := bs.call(http.MethodPost, "/api/workers/"+ids[i]+"/stop")
			return s, err
		}},
		load{0, func(i int) (int, error) {
			_, err := bs.store.Append(context.Background(), worker.Stream(raw[i]), eventstore.Exact(0),
				eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: "worker.stop_requested.v1", Data: data, Metadata: meta})
			return 0, err
		}})
	b.StopTimer()
	b.ReportMetric(dyn.rps, "req/s")
	b.ReportMetric(float64(dyn.p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(app.rps, "raw-append/s")
	b.ReportMetric(float64(app.p99.Microseconds())/1000, "raw-p99-ms")
	b.ReportMetric(dyn.rps/app.rps, "ratio")
	b.ReportMetric(0, "ns/op")
}
