package api

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// appendTagChanges appends n tags_changed events to a worker's stream, in
// appends of 1,000, as the application would record them, and returns the
// last position.
func appendTagChanges(t testing.TB, id string, n int, fromRevision uint64) eventstore.Position {
	t.Helper()
	pad := strings.Repeat("x", 3000)
	var last eventstore.Position
	rev := fromRevision
	for done := 0; done < n; {
		batch := min(250, n-done)
		events := make([]eventstore.EventData, batch)
		for i := range events {
			data, err := json.Marshal(worker.TagsChanged{Tags: map[string]string{"n": fmt.Sprint(done + i), "pad": pad}})
			require.NoError(t, err)
			meta, err := json.Marshal(application.Metadata{
				Actor:         application.Actor{Type: "user", Subject: "u-bulk", Username: "=bulk"},
				CorrelationID: "bulk", CausationID: "bulk", OccurredAt: time.Now().UTC(), Command: "worker.tags",
			})
			require.NoError(t, err)
			events[i] = eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: "worker.tags_changed.v1", Data: data, Metadata: meta}
		}
		res, err := shared.store.Append(context.Background(), worker.Stream(id), eventstore.Exact(rev), events...)
		require.NoError(t, err)
		rev = res.NextRevision
		last = res.Position
		done += batch
	}
	return last
}

// TestAuditCSVExportStreams exports a large audit log as CSV and checks that
// the server streams it: the live heap stays far below the size of the body.
// Not parallel, so that the heap measures this export alone.
func TestAuditCSVExportStreams(t *testing.T) {
	e := newEnv(t)
	id := e.importWorker(t, "bulk-export", worker.EC2Running)
	const n = 10000
	last := appendTagChanges(t, id, n, 0)
	waitProjected(t, "audit_log", last.String())
	waitProjected(t, "worker_view", last.String()) // no runner busy with them while measuring

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	req, err := http.NewRequest(http.MethodGet, e.url+"/api/audit?worker="+id, nil)
	require.NoError(t, err)
	req.Header.Set(testUserHeader, "auditor")
	req.Header.Set("Accept", "text/csv")
	res, err := e.client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/csv; charset=utf-8", res.Header.Get("Content-Type"))
	require.Contains(t, res.Header.Get("Content-Disposition"), "attachment")

	// Read it through a pipe, measuring the live heap after each MiB.
	pr, pw := io.Pipe()
	var (
		total int64
		peak  uint64
	)
	go func() {
		buf := make([]byte, 64<<10)
		next := int64(1 << 20)
		for {
			k, err := res.Body.Read(buf)
			if k > 0 {
				if _, werr := pw.Write(buf[:k]); werr != nil {
					return
				}
				total += int64(k)
				if total >= next {
					next += 1 << 20
					runtime.GC()
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapAlloc)
				}
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	r := csv.NewReader(bufio.NewReader(pr))
	r.FieldsPerRecord = len(auditCSVColumns)
	header, err := r.Read()
	require.NoError(t, err)
	require.Equal(t, auditCSVColumns, header)
	rows := 0
	var prev eventstore.Position
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		rows++
		require.Equal(t, id, rec[6])
		pos, err := eventstore.ParsePosition(rec[0])
		require.NoError(t, err)
		require.True(t, rows == 1 || pos.Less(prev), "newest first")
		prev = pos
		if rec[3] == "worker.tags_changed.v1" {
			require.Equal(t, "'=bulk", rec[9], "formula-like cells are neutralised")
		}
	}
	require.Equal(t, n+1, rows, "every event once (imported + tag changes)")
	growth := int64(peak) - int64(base)
	t.Logf("exported %d rows, %.1f MiB; live heap grew by at most %.1f MiB", rows, float64(total)/(1<<20), float64(growth)/(1<<20))
	require.Greater(t, total, int64(8<<20), "the export should be large enough to tell streaming from buffering")
	// Buffering would grow the live heap by at least the body's size.
	require.Less(t, growth, total/2, "the live heap grew with the body: the export is buffered, not streamed")

	// A limited CSV export, and the JSON pages of the same log.
	res2 := e.do(t, request{method: http.MethodGet, path: "/api/audit?format=csv&limit=10&worker=" + id, as: "admin"})
	require.Equal(t, http.StatusOK, res2.status)
	require.Equal(t, 11, strings.Count(string(res2.body), "\n"), "header + 10 rows")
	res2 = e.do(t, request{method: http.MethodGet, path: "/api/audit?limit=1000&worker=" + id, as: "auditor"})
	var page application.AuditPage
	res2.json(t, &page)
	require.Len(t, page.Items, 1000)
	require.NotEmpty(t, page.NextCursor)
}
