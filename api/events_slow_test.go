package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// stalledClient opens the dashboard stream over a raw connection with a
// tiny receive buffer and never reads from it.
func stalledClient(t *testing.T, base, query string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = fmt.Fprintf(conn, "GET /api/events/stream?%s HTTP/1.1\r\nHost: %s\r\n%s: user\r\n\r\n",
		query, strings.TrimPrefix(base, "http://"), testUserHeader)
	require.NoError(t, err)
	return conn
}

// TestDashboardStalledClient puts one client that never reads among 100
// that do. A burst of large snapshots, which only the stalled client
// subscribed to, fills its socket; then a worker the fast clients follow
// changes several times. Every fast client gets every change while the
// stalled client is still connected (its writer is blocked, for up to the
// write timeout, and holds up nobody); then the stalled client is
// disconnected as slow.
func TestDashboardStalledClient(t *testing.T) {
	t.Parallel()
	const writeTimeout = 6 * time.Second
	e := newStreamEnv(t, streamConfig{heartbeat: time.Hour, writeTimeout: writeTimeout})
	st := e.server.streams
	fast := e.importWorker(t, "fast", worker.EC2Running)
	bulk := make([]string, 40)
	for i := range bulk {
		bulk[i] = e.importWorker(t, fmt.Sprintf("bulk-%d", i), worker.EC2Running)
	}

	// Serve on a listener of the server's own (as serve does), so that
	// streams size their connections' send buffers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- e.server.Serve(l) }()
	t.Cleanup(func() {
		require.NoError(t, e.server.Shutdown(context.Background()))
		require.NoError(t, <-served)
	})
	live := &env{url: "http://" + l.Addr().String(), client: e.client}

	stalled := stalledClient(t, live.url, "worker_ids="+strings.Join(bulk, ","))
	const clients = 100
	streams := make([]*sseStream, clients)
	for i := range streams {
		streams[i] = live.openStream(t, "/api/events/stream?worker_ids="+fast, "user", nil)
	}
	for _, s := range streams {
		require.Equal(t, fast, workerOf(t, s.data(t)))
	}
	require.Eventually(t, func() bool { return st.hub.Readers() == clients+1 }, streamWait, 5*time.Millisecond)

	// 40 snapshots of about 80 KB for the stalled client alone: far more
	// than its socket buffers hold.
	stallStart := time.Now()
	reg := application.EventRegistry()
	pad := strings.Repeat("x", 255)
	for _, id := range bulk {
		tags := map[string]string{}
		for k := range 300 {
			tags[fmt.Sprintf("k%03d", k)] = pad
		}
		typ, data, err := reg.Encode(worker.TagsChanged{Tags: tags})
		require.NoError(t, err)
		_, err = shared.store.Append(context.Background(), worker.Stream(id), eventstore.Exact(0), eventstore.EventData{
			ID: application.UUIDv7{}.NewID(), Type: typ, Data: data,
			Metadata: []byte(`{"actor":{"type":"system","subject":"system:slow-test"},"correlation_id":"c","causation_id":"c"}`),
		})
		require.NoError(t, err)
	}

	// The fast clients' worker changes; each fast client must get the last
	// change (and, in order, whatever it got before).
	ctx := ctxAs("manager")
	var last application.Result
	for step := range 10 {
		var err error
		last, err = e.app.ReplaceWorkerTags(ctx, fast, map[string]string{"step": fmt.Sprint(step)})
		require.NoError(t, err)
	}
	for i, s := range streams {
		for {
			ev := s.data(t)
			require.Equal(t, fast, workerOf(t, ev), "client %d", i)
			var v application.WorkerView
			require.NoError(t, json.Unmarshal([]byte(ev.Data), &v))
			if v.Tags["step"] == "9" {
				require.Equal(t, last.Position, marksOf(t, ev).Lifecycle.String())
				break
			}
		}
	}
	t.Logf("every fast client had every change %s after the burst began", time.Since(stallStart).Round(time.Millisecond))
	require.Equal(t, clients+1, st.hub.Readers(), "every fast client was served while the stalled one still held its stream")
	require.Zero(t, counterValue(t, st.ended.WithLabelValues("dashboard", "slow")))

	// The stalled client is disconnected once its write times out.
	slow := st.ended.WithLabelValues("dashboard", "slow")
	require.Eventually(t, func() bool {
		var m dto.Metric
		return slow.Write(&m) == nil && m.GetCounter().GetValue() == 1
	}, writeTimeout+streamWait, 10*time.Millisecond, "the stalled client was not disconnected")
	require.Equal(t, clients, st.hub.Readers())
	// Its connection ends: reading it now drains what the kernel held and
	// then meets the end.
	require.NoError(t, stalled.SetReadDeadline(time.Now().Add(streamWait)))
	n, err := io.Copy(io.Discard, stalled)
	require.NoError(t, err, "after %d bytes", n)
	require.Greater(t, n, int64(1<<16))

	// The fast clients are still served.
	marker, err := e.app.ReplaceWorkerTags(ctx, fast, map[string]string{"step": "after"})
	require.NoError(t, err)
	for _, s := range streams {
		ev := s.data(t)
		require.Equal(t, marker.Position, marksOf(t, ev).Lifecycle.String())
	}
}

// counterValue reads a counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
