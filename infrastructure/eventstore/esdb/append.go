package esdb

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// Append writes events to the end of stream if it matches expected. The
// events are sent with their caller-supplied ids and the JSON content type;
// appending the same ids again is idempotent (the server checks). A
// mismatch returns an *eventstore.WrongExpectedVersionError.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.Expected, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	data, err := buildEvents(stream, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	s.ensureRetention(ctx, stream)

	var wr *esdb.WriteResult
	err = s.call(ctx, func(ctx context.Context, c *esdb.Client) error {
		var err error
		wr, err = c.AppendToStream(ctx, stream, esdb.AppendToStreamOptions{ExpectedRevision: expectedRevision(expected)}, data...)
		return err
	})
	if err != nil {
		return eventstore.AppendResult{}, appendError(stream, expected, err)
	}
	res := eventstore.AppendResult{
		NextRevision: wr.NextExpectedVersion,
		Position:     eventstore.Position{Commit: wr.CommitPosition, Prepare: wr.PreparePosition},
	}
	if res.Position.IsZero() {
		// Older servers answer an idempotent append without a position:
		// read the position of the last event of the original append.
		pos, err := s.positionOf(ctx, stream, res.NextRevision)
		if err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("esdb: append to %s: the server gave no position: %w", stream, err)
		}
		res.Position = pos
	}
	return res, nil
}

// positionOf reads the position of the event at revision rev of stream.
func (s *Store) positionOf(ctx context.Context, stream string, rev uint64) (eventstore.Position, error) {
	evs, err := s.ReadStream(ctx, stream, rev, 1)
	if err != nil {
		return eventstore.Position{}, err
	}
	if len(evs) == 0 || evs[0].Revision != rev {
		return eventstore.Position{}, fmt.Errorf("event %d of %s not found", rev, stream)
	}
	return evs[0].Position, nil
}

// buildEvents validates an append (eventstore.CheckAppend) and converts its
// events. Every error wraps eventstore.ErrInvalidAppend.
func buildEvents(stream string, events []eventstore.EventData) ([]esdb.EventData, error) {
	if err := eventstore.CheckAppend(stream, events); err != nil {
		return nil, err
	}
	out := make([]esdb.EventData, len(events))
	for i, e := range events {
		meta := e.Metadata
		if len(meta) == 0 {
			meta = eventstore.EmptyMetadata
		}
		out[i] = esdb.EventData{
			EventID:     uuid.MustParse(e.ID), // canonical: checked above
			EventType:   e.Type,
			ContentType: esdb.ContentTypeJson, // the zero value is binary
			Data:        e.Data,
			Metadata:    meta,
		}
	}
	return out, nil
}

// expectedRevision converts the port's expectation.
func expectedRevision(e eventstore.Expected) esdb.ExpectedRevision {
	if rev, ok := e.Revision(); ok {
		return esdb.Revision(rev)
	}
	switch {
	case e.IsNoStream():
		return esdb.NoStream{}
	case e.IsStreamExists():
		return esdb.StreamExists{}
	default:
		return esdb.Any{}
	}
}

// appendError maps a failed append: a wrong expected version becomes the
// port's error, with the stream's actual revision when the server reported
// it.
func appendError(stream string, expected eventstore.Expected, err error) error {
	var e *esdb.Error
	if errors.As(err, &e) && e.Code() == esdb.ErrorCodeWrongExpectedVersion {
		wev := &eventstore.WrongExpectedVersionError{Stream: stream, Expected: expected}
		if e.Err() != nil {
			wev.Actual, wev.ActualExists = parseActualRevision(e.Err().Error())
		}
		return wev
	}
	return fmt.Errorf("esdb: append to %s: %w", stream, err)
}

// actualRE finds the stream's revision in the client's message "wrong
// expected version: expecting '<expected>' but got '<current>'", where
// current is a revision or no_stream. The client keeps the revision only in
// that message.
var actualRE = regexp.MustCompile(`but got '([^']*)'`)

// parseActualRevision reads the current revision out of the client's wrong
// expected version message. ok is false for no_stream and for anything it
// cannot read.
func parseActualRevision(msg string) (rev uint64, ok bool) {
	all := actualRE.FindAllStringSubmatch(msg, -1)
	if all == nil {
		return 0, false
	}
	rev, err := strconv.ParseUint(all[len(all)-1][1], 10, 64)
	if err != nil {
		return 0, false
	}
	return rev, true
}
