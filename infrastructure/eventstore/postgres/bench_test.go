package postgres

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/storetest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
)

// benchMaxConns is the pool size of every benchmark, appends and baseline
// alike.
const benchMaxConns = 16

// benchData (~300 bytes) and benchMetadata (~200 bytes) are the payload of
// every benchmark event.
var (
	benchData = []byte(`{"worker_id":"7f3c2a9e-1b4d-4c8e-9a6f-2d5e8b1c0a7f","region":"us-east-1","instance_type":"m5zn.metal",` +
		`"ami":"ami-0abcdef1234567890","state":"running","cpu":96,"memory_gb":384,"tags":{"team":"cml","env":"bench",` +
		`"owner":"cloud-manager"},"started_at":"2026-01-02T03:04:05Z","lab_count":12,"note":"benchmark payload"}`)
	benchMetadata = []byte(`{"correlation_id":"0b8e4f7a-3c21-4d5e-8f90-a1b2c3d4e5f6","causation_id":"5d6e7f80-9a1b-4c2d-` +
		`8e3f-405162738495","user":"bench@example.com","source":"benchmark","trace":"00-4bf92f3577b34da6a3ce-01"}`)
)

func benchPool(b *testing.B) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = benchMaxConns
	pool, err := pgdb.ConnectConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

func benchStore(b *testing.B, pool *pgxpool.Pool) *Store {
	b.Helper()
	s, err := Open(context.Background(), pool, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// runWriters splits b.N operations among writers goroutines and reports the
// throughput in events/s.
func runWriters(b *testing.B, writers int, op func(ctx context.Context, w, i int) error) {
	b.Helper()
	ctx := context.Background()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Go(func() {
			for i := range n {
				if err := op(ctx, w, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

var benchWriters = []int{1, 8}

var benchSeq atomic.Uint64

// benchID returns a time-ordered UUID (version 7 layout: 48-bit millisecond
// timestamp, then a counter and random bits), like the ids the application
// creates (application.UUIDv7). Random version 4 ids would scatter the
// inserts over the whole event_id index.
func benchID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(time.Now().UnixMilli())<<16)
	binary.BigEndian.PutUint64(b[8:16], benchSeq.Add(1))
	if _, err := rand.Read(b[6:8]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b)
}

// BenchmarkAppend appends one event per call with an exact expected revision
// to one stream per writer.
func BenchmarkAppend(b *testing.B) {
	pool := benchPool(b)
	s := benchStore(b, pool)
	for _, writers := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			prefix := "bench-" + storetest.NewID()[:8] + "-"
			runWriters(b, writers, func(ctx context.Context, w, i int) error {
				expected := eventstore.Exact(uint64(i - 1))
				if i == 0 {
					expected = eventstore.NoStream
				}
				_, err := s.Append(ctx, fmt.Sprintf("%s%d", prefix, w), expected, eventstore.EventData{
					ID: benchID(), Type: "bench.event.v1", Data: benchData, Metadata: benchMetadata,
				})
				return err
			})
		})
	}
}

// BenchmarkRawInsert is the baseline of BenchmarkAppend: a single-row
// autocommit INSERT of the same bytes into a plain table with a bigserial
// key, in the same kind of database with the same pool settings.
func BenchmarkRawInsert(b *testing.B) {
	pool := benchPool(b)
	_, err := pool.Exec(context.Background(), `CREATE TABLE bench_raw (
		id bigserial PRIMARY KEY, stream text NOT NULL, event_id uuid NOT NULL, type text NOT NULL,
		data jsonb NOT NULL, metadata jsonb NOT NULL)`)
	if err != nil {
		b.Fatal(err)
	}
	for _, writers := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			prefix := "bench-" + storetest.NewID()[:8] + "-"
			runWriters(b, writers, func(ctx context.Context, w, i int) error {
				_, err := pool.Exec(ctx, `INSERT INTO bench_raw (stream, event_id, type, data, metadata) VALUES ($1, $2, $3, $4, $5)`,
					fmt.Sprintf("%s%d", prefix, w), benchID(), "bench.event.v1", benchData, benchMetadata)
				return err
			})
		})
	}
}

// benchLogSize is the number of events BenchmarkReadAll reads through.
const benchLogSize = 200_000

// BenchmarkReadAll reads a large log in batches of 512, from the start to the
// end and around again, with a fresh store. "catch-up" is the normal case: the
// first batches find no append in flight, settle the whole log and then read
// with one query per batch. "scan-path" keeps the store from settling, so
// every batch first scans the positions for holes (the path of a reader at
// the head of the log). "filtered-1pct" reads with a stream prefix matching 1%
// of the events. events/s counts delivered events, positions/s how far the
// checkpoint moved.
func BenchmarkReadAll(b *testing.B) {
	pool := benchPool(b)
	ctx := context.Background()
	// 1000 streams of 200 events, written in bulk (bypassing Append is fine
	// here: nothing is in flight).
	_, err := pool.Exec(ctx, `INSERT INTO events (position, stream, revision, event_id, type, data, metadata)
		SELECT nextval('events_position_seq'), 'bench-' || lpad((g % 1000)::text, 4, '0'), g / 1000,
		       gen_random_uuid(), 'bench.event.v1', $1::jsonb, $2::jsonb
		  FROM generate_series(0, $3 - 1) g`, benchData, benchMetadata, benchLogSize)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	onePercent := eventstore.Filter{StreamPrefixes: []string{"bench-000"}}
	cases := []struct {
		name     string
		filter   eventstore.Filter
		scanPath bool
	}{
		{"catch-up", eventstore.Filter{}, false},
		{"catch-up/filtered-1pct", onePercent, false},
		{"scan-path", eventstore.Filter{}, true},
		{"scan-path/filtered-1pct", onePercent, true},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := benchStore(b, pool)
			if tc.scanPath {
				s.lastProbe.Store(math.MaxInt64) // never probe
			}
			var events, positions int
			from := eventstore.Start
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				evs, cp, err := s.ReadAll(ctx, from, subscriptionBatch, tc.filter)
				if err != nil {
					b.Fatal(err)
				}
				events += len(evs)
				positions += int(cp.Commit - from.Commit)
				from = cp
				if cp.Commit >= benchLogSize {
					from = eventstore.Start
				}
			}
			elapsed := time.Since(start).Seconds()
			b.StopTimer()
			b.ReportMetric(float64(events)/elapsed, "events/s")
			b.ReportMetric(float64(positions)/elapsed, "positions/s")
			if tc.scanPath && s.settledUpTo.Load() != 0 {
				b.Fatal("the scan-path case settled")
			}
			if tc.filter.StreamPrefixes != nil && events == 0 && b.N > 10 {
				b.Fatal("the filter matched nothing")
			}
		})
	}
}
