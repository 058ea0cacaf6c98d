package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// readAllPage is the most events one $all read request asks for.
const readAllPage = 1024

// readAllWindow bounds the events one ReadAll call considers, so that a
// selective filter cannot turn a call into a scan of the whole log: the
// call then returns fewer events with a checkpoint further on.
const readAllWindow = 1 << 16

// readContext derives the context of one read: it ends with ctx, after the
// read timeout, or when the store closes.
func (s *Store) readContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancelTimeout := context.WithTimeout(ctx, s.readTimeout)
	ctx, cancel := s.opContext(ctx)
	return ctx, func() {
		cancel()
		cancelTimeout()
	}
}

// readError wraps a failed read, naming the read timeout when it expired
// (and not the caller's context).
func (s *Store) readError(caller context.Context, what string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && caller.Err() == nil {
		return fmt.Errorf("esdb: %s: no answer within the read timeout (%s): %w", what, s.readTimeout, err)
	}
	return fmt.Errorf("esdb: %s: %w", what, err)
}

// ReadStream returns up to max events of stream from revision from
// (inclusive). A missing stream is an empty result. System streams cannot be
// read, and events of system types in a stream are left out.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64, max int) ([]eventstore.RecordedEvent, error) {
	if problem := eventstore.NameProblem(stream); problem != "" {
		return nil, fmt.Errorf("esdb: read stream: name %q %s", stream, problem)
	}
	if max <= 0 {
		return nil, nil
	}
	caller := ctx
	ctx, cancel := s.readContext(ctx)
	defer cancel()
	var out []eventstore.RecordedEvent
	err := s.call(ctx, func(ctx context.Context, c *esdb.Client) error {
		rs, err := c.ReadStream(ctx, stream, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(from)}, uint64(max))
		if err != nil {
			return err
		}
		defer rs.Close()
		for {
			re, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			var e *esdb.Error
			if errors.As(err, &e) && e.Code() == esdb.ErrorCodeResourceNotFound {
				return nil // the server reports a missing stream from Recv
			}
			if err != nil {
				return err
			}
			ev := re.OriginalEvent()
			if ev == nil || hidden(ev.StreamID, ev.EventType) {
				continue
			}
			out = append(out, toRecorded(ev))
		}
	})
	if err != nil {
		return nil, s.readError(caller, fmt.Sprintf("read %s from revision %d", stream, from), err)
	}
	return out, nil
}

// ReadAll returns up to max events of $all after from (exclusive) that match
// filter, and the position up to which the log has been considered. The
// client's $all read has no filter, so the filter applies here; events of
// system streams and types are always left out. One call considers at most
// readAllWindow events.
func (s *Store) ReadAll(ctx context.Context, from eventstore.Position, max int, filter eventstore.Filter) ([]eventstore.RecordedEvent, eventstore.Position, error) {
	if max <= 0 {
		return nil, from, nil
	}
	caller := ctx
	ctx, cancel := s.readContext(ctx)
	defer cancel()
	r := allReader{filter: filter, max: max, window: s.readWindow, cp: from}
	err := s.call(ctx, func(ctx context.Context, c *esdb.Client) error {
		page := max
		for len(r.events) < max && r.scanned < r.window {
			// +1: a read includes its start position.
			n := min(page, readAllPage-1, r.window-r.scanned) + 1
			got, err := r.page(ctx, c, n)
			if err != nil {
				return err
			}
			if got < n {
				return nil // the end of the log, or enough
			}
			page = readAllPage
		}
		return nil
	})
	if err != nil {
		return nil, from, s.readError(caller, "read $all after "+from.String(), err)
	}
	return r.events, r.cp, nil
}

// allReader is the state of one ReadAll.
type allReader struct {
	filter  eventstore.Filter
	max     int
	window  int
	events  []eventstore.RecordedEvent
	cp      eventstore.Position // the last event considered
	scanned int
}

// page reads up to n events of $all from r.cp and returns how many the
// server sent.
func (r *allReader) page(ctx context.Context, c *esdb.Client, n int) (int, error) {
	rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Forwards, From: allPosition(r.cp)}, uint64(n))
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	got := 0
	for {
		re, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got++
		ev := re.OriginalEvent()
		if ev == nil {
			continue
		}
		pos := toPosition(ev.Position)
		if !r.cp.Less(pos) {
			continue // the event at the start position, already considered
		}
		r.cp = pos
		r.scanned++
		if !hidden(ev.StreamID, ev.EventType) && r.filter.Matches(ev.StreamID, ev.EventType) {
			r.events = append(r.events, toRecorded(ev))
		}
		if len(r.events) == r.max || r.scanned == r.window {
			return got, nil
		}
	}
}
