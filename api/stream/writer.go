package stream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	sse "github.com/tmaxmax/go-sse"
)

// Writer writes server-sent events to one response. Events are buffered
// until Flush; every write and flush must complete within the write
// timeout, so a client that stops reading is cut off instead of holding
// its writer forever. A Writer is used by one goroutine.
type Writer struct {
	out     io.Writer
	buf     *bufio.Writer // between out and the response, when buffered
	rc      *http.ResponseController
	timeout time.Duration
	armed   bool   // a deadline is set for the current batch
	frame   []byte // reused to build frames
}

// Start begins an event stream: it sets the SSE headers
// (Content-Type: text/event-stream, Cache-Control: no-store,
// X-Accel-Buffering: no so that proxies pass events on at once,
// Connection: keep-alive), lifts the server's write timeout for this
// response, writes the 200 status and flushes it. out receives the events
// (the framework's response, which records status and size); raw is the
// http.ResponseWriter beneath it, used for deadlines and flushing.
// writeTimeout bounds each batch (0: no bound). buffer, when positive,
// puts a buffer of that size in front of the response (whose own is 4 KiB),
// so that a stream that writes many events between flushes makes fewer and
// larger writes.
func Start(out http.ResponseWriter, raw http.ResponseWriter, writeTimeout time.Duration, buffer int) (*Writer, error) {
	h := out.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Connection", "keep-alive")
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	rc := http.NewResponseController(raw)
	// Exempt from the server's write timeout: the stream is long-lived.
	// Each batch gets its own deadline below instead.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, fmt.Errorf("clear the write deadline: %w", err)
	}
	w := &Writer{out: out, rc: rc, timeout: writeTimeout}
	if buffer > 0 {
		w.buf = bufio.NewWriterSize(out, buffer)
		w.out = w.buf
	}
	w.arm()
	out.WriteHeader(http.StatusOK)
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return w, nil
}

// arm sets the deadline of the current batch.
func (w *Writer) arm() {
	if w.armed || w.timeout <= 0 {
		return
	}
	// An unsupported deadline (a test recorder) leaves writes unbounded.
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	w.armed = true
}

// Event writes one event: its id (none when empty), its type and its data
// (JSON; a payload spanning lines becomes several data fields, which
// clients join again). It is sent with the next Flush, or earlier when the
// response's buffer fills.
//
// A frame whose id, type and data hold no line break (every JSON this
// service encodes) is written as is; any other goes through go-sse's
// Message, which splits the data into fields and refuses an id or type
// that would forge fields.
func (w *Writer) Event(id, eventType string, data []byte) error {
	if !strings.ContainsAny(id, "\r\n") && !strings.ContainsAny(eventType, "\r\n") &&
		bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		b := w.frame[:0]
		if id != "" {
			b = append(append(append(b, "id: "...), id...), '\n')
		}
		b = append(append(append(b, "event: "...), eventType...), '\n')
		b = append(append(append(b, "data: "...), data...), "\n\n"...)
		if cap(b) <= maxKeptFrame {
			w.frame = b
		}
		w.arm()
		if _, err := w.out.Write(b); err != nil {
			return fmt.Errorf("write event: %w", err)
		}
		return nil
	}
	var m sse.Message
	if id != "" {
		eid, err := sse.NewID(id)
		if err != nil {
			return fmt.Errorf("write event: %w", err)
		}
		m.ID = eid
	}
	typ, err := sse.NewType(eventType)
	if err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	m.Type = typ
	m.AppendData(string(data))
	w.arm()
	if _, err := m.WriteTo(w.out); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}

// maxKeptFrame bounds the frame buffer a Writer keeps between events.
const maxKeptFrame = 64 << 10

// Comment writes a comment line, which clients ignore.
func (w *Writer) Comment(text string) error {
	var m sse.Message
	m.AppendComment(text)
	w.arm()
	if _, err := m.WriteTo(w.out); err != nil {
		return fmt.Errorf("write comment: %w", err)
	}
	return nil
}

// Flush sends what was written to the client.
func (w *Writer) Flush() error {
	w.arm()
	var err error
	if w.buf != nil {
		err = w.buf.Flush()
	}
	if err == nil {
		err = w.rc.Flush()
	}
	w.armed = false
	if err != nil {
		return fmt.Errorf("flush events: %w", err)
	}
	return nil
}
