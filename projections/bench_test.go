package projections

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

const (
	benchEvents        = 200_000
	benchStreams       = 2_000
	benchAppendPerCall = 100
	benchInsertBatch   = 2_000 // rows per INSERT, as Rebuild's default batch
)

// seedLog appends benchEvents events over benchStreams streams "test-N",
// benchAppendPerCall events per Append, from a few goroutines.
func seedLog(b *testing.B, e *env) {
	b.Helper()
	ctx := context.Background()
	perStream := benchEvents / benchStreams
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			evs := make([]eventstore.EventData, benchAppendPerCall)
			for s := w; s < benchStreams; s += 4 {
				for done := 0; done < perStream; done += benchAppendPerCall {
					for i := range evs {
						evs[i] = eventstore.EventData{ID: newUUID(), Type: "test.happened.v1",
							Data: fmt.Appendf(nil, `{"i":%d}`, done+i)}
					}
					if _, err := e.store.Append(ctx, fmt.Sprintf("test-%d", s), eventstore.Any, evs...); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	require.NoError(b, <-errs)
	var n int
	require.NoError(b, e.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n))
	require.Equal(b, benchEvents, n)
	// Settle the freshly written pages (hint bits, visibility map) so that
	// the first timed rebuild does not pay for it.
	_, err := e.pool.Exec(ctx, `VACUUM (ANALYZE) events`)
	require.NoError(b, err)
}

// reportPerEvent reports events/s and allocations per event for iterations
// of perIter events each; mallocs counts the allocations of the timed work.
func reportPerEvent(b *testing.B, iterations int, perIter int, mallocs uint64) {
	total := float64(iterations * perIter)
	b.ReportMetric(total/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(mallocs)/total, "allocs/event")
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// BenchmarkRebuild rebuilds countProjection from a log of 200,000 events over
// 2,000 streams. Compare with BenchmarkRawBatchedInsert.
func BenchmarkRebuild(b *testing.B) {
	e := newEnv(b)
	seedLog(b, e)
	ctx := context.Background()
	b.ReportAllocs()
	iterations := 0
	var allocs uint64
	for b.Loop() {
		before := mallocs()
		res, err := Rebuild(ctx, e.store, e.pool, &countProjection{}, RebuildOptions{Logger: e.log})
		allocs += mallocs() - before
		require.NoError(b, err)
		require.EqualValues(b, benchEvents, res.Events)
		iterations++
	}
	reportPerEvent(b, iterations, benchEvents, allocs)
}

// BenchmarkReadAllLog only reads the same log through ReadAll in batches of
// DefaultRebuildBatchSize: the read half of a rebuild.
func BenchmarkReadAllLog(b *testing.B) {
	e := newEnv(b)
	seedLog(b, e)
	ctx := context.Background()
	filter := (&countProjection{}).Filter()
	b.ReportAllocs()
	iterations := 0
	var allocs uint64
	for b.Loop() {
		before := mallocs()
		n, from := 0, eventstore.Start
		for {
			evs, pos, err := e.store.ReadAll(ctx, from, DefaultRebuildBatchSize, filter)
			require.NoError(b, err)
			if len(evs) == 0 && !from.Less(pos) {
				break
			}
			n += len(evs)
			from = pos
		}
		allocs += mallocs() - before
		require.Equal(b, benchEvents, n)
		iterations++
	}
	reportPerEvent(b, iterations, benchEvents, allocs)
}

// BenchmarkRawBatchedInsert inserts the same 200,000 rows into an equivalent
// plain table with the statement countProjection uses, 2,000 rows per
// statement, each in its own transaction: the floor a rebuild can approach.
func BenchmarkRawBatchedInsert(b *testing.B) {
	pool := newPool(b)
	ctx := context.Background()
	_, err := pool.Exec(ctx, strings.ReplaceAll(testTableDDL, "test_counts", "raw_counts"))
	require.NoError(b, err)
	ids, streams, positions := benchRows()
	b.ReportAllocs()
	iterations := 0
	var allocs uint64
	for b.Loop() {
		b.StopTimer()
		_, err := pool.Exec(ctx, `TRUNCATE raw_counts`)
		require.NoError(b, err)
		b.StartTimer()
		before := mallocs()
		for lo := 0; lo < benchEvents; lo += benchInsertBatch {
			hi := min(lo+benchInsertBatch, benchEvents)
			_, err := pool.Exec(ctx, `INSERT INTO raw_counts AS c (event_id, stream, position)
				SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[])
				ON CONFLICT (event_id) DO UPDATE SET applied = c.applied + 1`, ids[lo:hi], streams[lo:hi], positions[lo:hi])
			require.NoError(b, err)
		}
		allocs += mallocs() - before
		iterations++
	}
	reportPerEvent(b, iterations, benchEvents, allocs)
}

// BenchmarkRawCopy loads the same rows with one COPY, for reference.
func BenchmarkRawCopy(b *testing.B) {
	pool := newPool(b)
	ctx := context.Background()
	_, err := pool.Exec(ctx, strings.ReplaceAll(testTableDDL, "test_counts", "raw_counts"))
	require.NoError(b, err)
	ids, streams, positions := benchRows()
	b.ReportAllocs()
	iterations := 0
	var allocs uint64
	for b.Loop() {
		b.StopTimer()
		_, err := pool.Exec(ctx, `TRUNCATE raw_counts`)
		require.NoError(b, err)
		b.StartTimer()
		before := mallocs()
		n, err := pool.CopyFrom(ctx, pgx.Identifier{"raw_counts"}, []string{"event_id", "stream", "position"},
			pgx.CopyFromSlice(benchEvents, func(i int) ([]any, error) {
				return []any{ids[i], streams[i], positions[i]}, nil
			}))
		require.NoError(b, err)
		require.EqualValues(b, benchEvents, n)
		allocs += mallocs() - before
		iterations++
	}
	reportPerEvent(b, iterations, benchEvents, allocs)
}

func benchRows() (ids, streams []string, positions []int64) {
	ids = make([]string, benchEvents)
	streams = make([]string, benchEvents)
	positions = make([]int64, benchEvents)
	for i := range benchEvents {
		ids[i] = newUUID()
		streams[i] = fmt.Sprintf("test-%d", i%benchStreams)
		positions[i] = int64(i + 1)
	}
	return ids, streams, positions
}
