package projections

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// workerLog is a realistic lifecycle log: benchStreams workers, each created
// then driven through launches, observations, tags, service and licence
// changes, benchEvents events in all, every event with full metadata.
type workerLog struct {
	ids, streams, types []string
	revisions           []int64
	data, metadata      []string
}

func buildWorkerLog(b *testing.B) *workerLog {
	b.Helper()
	registry := application.EventRegistry()
	perWorker := benchEvents / benchStreams
	l := &workerLog{}
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for wk := range benchStreams {
		id := newUUID()
		inst := fmt.Sprintf("i-0%016x", wk+1)
		cycle := []domain.Event{
			worker.InstanceStateObserved{EC2State: worker.EC2Running, PublicIP: fmt.Sprintf("198.51.100.%d", wk%250), PrivateIP: "10.0.0.5", InstanceType: "m5zn.metal", SystemStatus: "ok", InstanceStatus: "ok"},
			worker.EndpointChanged{Endpoint: fmt.Sprintf("https://198.51.100.%d", wk%250)},
			worker.ServiceStatusChanged{Status: worker.ServiceAvailable, Version: "2.9.0", Ready: true},
			worker.ActivityObserved{LastActivityAt: at, Category: "start_lab"},
			worker.TagsChanged{Tags: map[string]string{"Name": "bench", "team": "netops", worker.TagManagedBy: worker.TagManagedByValue}},
			worker.StopRequested{Reason: worker.StopManual},
			worker.InstanceStateObserved{EC2State: worker.EC2Stopped, InstanceType: "m5zn.metal"},
			worker.EndpointChanged{Endpoint: ""},
			worker.StartRequested{},
			worker.InstanceStateObserved{EC2State: worker.EC2Pending, InstanceType: "m5zn.metal"},
		}
		events := []domain.Event{
			worker.Created{WorkerID: id, Name: fmt.Sprintf("bench-%04d", wk), Region: "us-east-1", InstanceType: "m5zn.metal",
				AMIID: "ami-0123456789abcdef0", AMIName: "cml-2.9", SubnetID: "subnet-0123456789abcdef0",
				SecurityGroupIDs: []string{"sg-0123456789abcdef0"}, Tags: map[string]string{"team": "netops"},
				DetailedMonitoring: true, IdleDetectionEnabled: true},
			worker.InstanceLaunched{InstanceID: inst, Attempt: 1},
		}
		for i := 0; len(events) < perWorker; i++ {
			events = append(events, cycle[i%len(cycle)])
		}
		for rev, e := range events {
			typ, data, err := registry.Encode(e)
			require.NoError(b, err)
			l.ids = append(l.ids, newUUID())
			l.streams = append(l.streams, worker.Stream(id))
			l.types = append(l.types, typ)
			l.revisions = append(l.revisions, int64(rev))
			l.data = append(l.data, string(data))
			l.metadata = append(l.metadata, fmt.Sprintf(`{"actor":{"type":"system","subject":"system:fleet_reconcile","username":"system:fleet_reconcile","roles":["system"]},"correlation_id":"%s","causation_id":"%s","occurred_at":"%s","command":"worker.observe_instance"}`,
				newUUID(), newUUID(), at.Add(time.Duration(rev)*time.Minute).Format(time.RFC3339Nano)))
		}
	}
	return l
}

// seed appends the log, one worker's events per Append, in its order.
func (l *workerLog) seed(b *testing.B, e *env) {
	b.Helper()
	ctx := context.Background()
	perWorker := benchEvents / benchStreams
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for s := w; s < benchStreams; s += 4 {
				lo := s * perWorker
				evs := make([]eventstore.EventData, perWorker)
				for i := range evs {
					evs[i] = eventstore.EventData{ID: l.ids[lo+i], Type: l.types[lo+i], Data: []byte(l.data[lo+i]), Metadata: []byte(l.metadata[lo+i])}
				}
				if _, err := e.store.Append(ctx, l.streams[lo], eventstore.NoStream, evs...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)
	_, err := e.pool.Exec(ctx, `VACUUM (ANALYZE) events`)
	require.NoError(b, err)
}

// benchmarkReadModelRebuild rebuilds one real read model from the worker
// log and reports events/s, allocations per event and the process's peak RSS
// during the rebuilds.
func benchmarkReadModelRebuild(b *testing.B, p Projection, rowsWant int) {
	e := newEnv(b)
	l := buildWorkerLog(b)
	l.seed(b, e)
	l = nil
	ctx := context.Background()
	b.ReportAllocs()
	resetPeakRSS()
	iterations := 0
	var allocs uint64
	for b.Loop() {
		before := mallocs()
		res, err := Rebuild(ctx, e.store, e.pool, p, RebuildOptions{Logger: e.log})
		allocs += mallocs() - before
		require.NoError(b, err)
		require.EqualValues(b, benchEvents, res.Events)
		iterations++
	}
	var rows int
	require.NoError(b, e.pool.QueryRow(ctx, `SELECT count(*) FROM `+p.Tables()[0]).Scan(&rows))
	require.Equal(b, rowsWant, rows)
	reportPerEvent(b, iterations, benchEvents, allocs)
	if rss := peakRSS(); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
	}
}

// BenchmarkRebuildWorkerView rebuilds worker_view from 200,000 lifecycle
// events over 2,000 workers. Compare with BenchmarkRawBatchedInsertEvents.
func BenchmarkRebuildWorkerView(b *testing.B) {
	benchmarkReadModelRebuild(b, NewWorkerView(application.EventRegistry()), benchStreams)
}

// BenchmarkRebuildAuditLog rebuilds audit_log (one row per event) from the
// same log.
func BenchmarkRebuildAuditLog(b *testing.B) {
	benchmarkReadModelRebuild(b, NewAuditLog(application.EventRegistry()), benchEvents)
}

// BenchmarkRawBatchedInsertEvents inserts the same 200,000 event rows (id,
// stream, revision, type, data, metadata) into a plain table, 2,000 rows per
// INSERT, each in its own transaction: the baseline of the rebuilds above.
func BenchmarkRawBatchedInsertEvents(b *testing.B) {
	pool := newPool(b)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `CREATE TABLE raw_events (id uuid PRIMARY KEY, stream text NOT NULL, revision bigint NOT NULL,
		type text NOT NULL, data jsonb NOT NULL, metadata jsonb NOT NULL)`)
	require.NoError(b, err)
	l := buildWorkerLog(b)
	b.ReportAllocs()
	iterations := 0
	var allocs uint64
	for b.Loop() {
		b.StopTimer()
		_, err := pool.Exec(ctx, `TRUNCATE raw_events`)
		require.NoError(b, err)
		b.StartTimer()
		before := mallocs()
		for lo := 0; lo < benchEvents; lo += benchInsertBatch {
			hi := min(lo+benchInsertBatch, benchEvents)
			_, err := pool.Exec(ctx, `INSERT INTO raw_events SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::jsonb[], $6::jsonb[])`,
				l.ids[lo:hi], l.streams[lo:hi], l.revisions[lo:hi], l.types[lo:hi], l.data[lo:hi], l.metadata[lo:hi])
			require.NoError(b, err)
		}
		allocs += mallocs() - before
		iterations++
	}
	reportPerEvent(b, iterations, benchEvents, allocs)
}

// resetPeakRSS frees what the seeding left and resets the kernel's
// high-water mark of the process's resident set (Linux: clear_refs 5).
func resetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS reads the process's resident-set high-water mark (VmHWM), or 0
// where /proc is not available.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
