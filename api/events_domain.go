package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/labstack/echo/v4"

	"github.com/cmlcloud/cml-cloud-manager/api/stream"
	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// domainTypesLimit bounds the types query value of the domain stream.
const domainTypesLimit = application.MaxStreamTypePrefixes * (application.MaxTypePrefixLength + 1)

// errSubscriptionEnded reports a store subscription that ended while its
// client was still there (the store was closed).
var errSubscriptionEnded = errors.New("the event log subscription ended")

// domainStream serves GET /api/events/domain.
func (s *Server) domainStream(c echo.Context) error {
	p := newParams(c)
	q := application.DomainQuery{
		TypePrefixes: splitList(p.query("types", domainTypesLimit)),
		WorkerID:     p.query("worker_id", 64),
	}
	if id, field := p.resumeID("from"); id != "" {
		pos, err := eventstore.ParsePosition(id)
		if err != nil {
			p.problems.Add(field, "%q is not a position of the event log", truncateForMessage(id))
		}
		q.From = pos
	}
	if err := p.err(); err != nil {
		return err
	}
	ctx := c.Request().Context()
	sub, err := s.app.DomainEvents(ctx, q)
	if err != nil {
		return err
	}
	defer sub.Close()
	st := s.streams
	if st == nil || st.stopping() {
		return streamsUnavailable()
	}
	// A buffer of its own: catching up writes thousands of events between
	// flushes. Integrators are few.
	w, err := s.startStream(c, domainWriteBuffer)
	if err != nil {
		return s.endStream(c, "domain", nil, err)
	}
	gauge := st.subscribers.WithLabelValues("domain")
	gauge.Inc()
	defer gauge.Dec()
	g := newGuard(ctx, st, w)
	defer g.stop()
	d := &domainSession{ctx: ctx, w: w, sub: sub, last: q.From}
	return s.endStream(c, "domain", g, d.run(g, st.shutdown))
}

// domainSession is one subscriber of the domain stream.
type domainSession struct {
	ctx context.Context
	w   *stream.Writer
	sub *application.DomainSubscription
	// last is the position up to which the log was examined: the last
	// event sent, or a later checkpoint (the filter skipped events).
	last eventstore.Position
	buf  []byte
}

func (d *domainSession) run(g *guard, shutdown <-chan struct{}) error {
	msgs := d.sub.Messages()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return d.ended()
			}
			// Write what is waiting, up to a batch, then flush once.
			for n := 0; ; n++ {
				if err := d.handle(m); err != nil {
					return err
				}
				if n+1 >= domainBatch {
					break
				}
				var more bool
				select {
				case m, ok = <-msgs:
					more = true
				default:
				}
				if !more {
					break
				}
				if !ok {
					if err := d.w.Flush(); err != nil {
						return err
					}
					return d.ended()
				}
			}
			if err := d.w.Flush(); err != nil {
				return err
			}
		case <-g.heartbeat.C:
			id := ""
			if !d.last.IsZero() {
				id = d.last.String()
			}
			if err := g.beat(id); err != nil {
				return err
			}
		case <-g.checkC():
			if done, err := g.checkSession(); done || err != nil {
				return err
			}
		case <-shutdown:
			return g.shutdown()
		case <-d.ctx.Done():
			return nil
		}
	}
}

// handle writes one event, or notes a checkpoint.
func (d *domainSession) handle(m eventstore.Message) error {
	if m.Event == nil {
		if d.last.Less(m.Checkpoint) {
			d.last = m.Checkpoint
		}
		return nil
	}
	var typ string
	d.buf, typ = d.sub.AppendEnvelope(d.buf[:0], m.Event)
	d.last = m.Event.Position
	err := d.w.Event(m.Event.Position.String(), typ, d.buf)
	if cap(d.buf) > maxKeptEnvelope {
		d.buf = nil
	}
	return err
}

// domainWriteBuffer is the write buffer of a domain stream.
const domainWriteBuffer = 64 << 10

// maxKeptEnvelope bounds the encoding buffer a domain session keeps.
const maxKeptEnvelope = 64 << 10

// ended reports why the store subscription ended.
func (d *domainSession) ended() error {
	if d.ctx.Err() != nil {
		return nil
	}
	if err := d.sub.Err(); err != nil {
		return fmt.Errorf("%w: %w", errSubscriptionEnded, err)
	}
	return errSubscriptionEnded
}
