package stream

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	sse "github.com/tmaxmax/go-sse"
)

func TestWriterFramesParseAsServerSentEvents(t *testing.T) {
	t.Parallel()
	for _, buffer := range []int{0, 64 << 10} {
		t.Run(fmt.Sprintf("buffer=%d", buffer), func(t *testing.T) { testWriterFrames(t, buffer) })
	}
}

func testWriterFrames(t *testing.T, buffer int) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw, err := Start(w, w, 0, buffer)
		if err != nil {
			t.Error(err)
			return
		}
		steps := []func() error{
			func() error { return sw.Event("1.0.0", "worker.snapshot", []byte(`{"id":"a"}`)) },
			func() error { return sw.Comment("keep-alive") },
			// A payload spanning lines arrives whole.
			func() error { return sw.Event("", "note", []byte("line one\nline two")) },
			func() error { return sw.Event("7", "heartbeat", []byte(`{}`)) },
			sw.Flush,
		}
		for _, step := range steps {
			if err := step(); err != nil {
				t.Error(err)
				return
			}
		}
		// An id or a type with a newline would forge fields: refused.
		if err := sw.Event("1\ndata: x", "t", nil); err == nil {
			t.Error("an id with a newline was accepted")
		}
		if err := sw.Event("1", "t\nid: 9", nil); err == nil {
			t.Error("a type with a newline was accepted")
		}
	}))
	defer srv.Close()

	res, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	require.Equal(t, "no", res.Header.Get("X-Accel-Buffering"))

	var got []sse.Event
	for ev, err := range sse.Read(res.Body, nil) {
		require.NoError(t, err)
		got = append(got, ev)
	}
	require.Equal(t, []sse.Event{
		{LastEventID: "1.0.0", Type: "worker.snapshot", Data: `{"id":"a"}`},
		{LastEventID: "1.0.0", Type: "note", Data: "line one\nline two"},
		{LastEventID: "7", Type: "heartbeat", Data: `{}`},
	}, got)
}
