// Package eventstore declares the event store port the application layer
// needs: append with an expected revision, read a stream, read and subscribe
// to the global log. Adapters live in infrastructure/eventstore/... and all
// pass the shared contract suite in infrastructure/eventstore/storetest.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrWrongExpectedVersion is returned (wrapped) by Append when the stream is
// not at the expected revision. Check it with errors.Is.
var ErrWrongExpectedVersion = errors.New("wrong expected version")

// ErrInvalidAppend is returned (wrapped) for an append that can never succeed:
// no events, an empty stream name, a missing event id or type, or data that is
// not JSON.
var ErrInvalidAppend = errors.New("invalid append")

// WrongExpectedVersionError carries the detail of a failed expectation. It
// matches ErrWrongExpectedVersion with errors.Is.
type WrongExpectedVersionError struct {
	Stream   string
	Expected Expected
	// Actual is the stream's current revision; ActualExists is false when the
	// stream does not exist (or the adapter could not tell).
	Actual       uint64
	ActualExists bool
}

func (e *WrongExpectedVersionError) Error() string {
	actual := "no stream"
	if e.ActualExists {
		actual = "revision " + strconv.FormatUint(e.Actual, 10)
	}
	return fmt.Sprintf("append to %s: expected %s, stream is at %s: %v", e.Stream, e.Expected, actual, ErrWrongExpectedVersion)
}

// Is makes errors.Is(err, ErrWrongExpectedVersion) true.
func (e *WrongExpectedVersionError) Is(target error) bool { return target == ErrWrongExpectedVersion }

type expectedKind uint8

const (
	kindAny expectedKind = iota
	kindNoStream
	kindStreamExists
	kindExact
)

// Expected is the expected state of a stream for an optimistic append.
// The zero value is Any.
type Expected struct {
	kind     expectedKind
	revision uint64
}

var (
	// Any appends whatever the stream's state.
	Any = Expected{kind: kindAny}
	// NoStream requires that the stream does not exist yet.
	NoStream = Expected{kind: kindNoStream}
	// StreamExists requires that the stream has at least one event.
	StreamExists = Expected{kind: kindStreamExists}
)

// Exact requires that the stream's last event has this revision (revisions
// start at 0).
func Exact(revision uint64) Expected { return Expected{kind: kindExact, revision: revision} }

// IsAny, IsNoStream, IsStreamExists report the kind of expectation.
func (e Expected) IsAny() bool          { return e.kind == kindAny }
func (e Expected) IsNoStream() bool     { return e.kind == kindNoStream }
func (e Expected) IsStreamExists() bool { return e.kind == kindStreamExists }

// Revision returns the exact revision and true for an Exact expectation.
func (e Expected) Revision() (uint64, bool) { return e.revision, e.kind == kindExact }

func (e Expected) String() string {
	switch e.kind {
	case kindNoStream:
		return "no stream"
	case kindStreamExists:
		return "stream exists"
	case kindExact:
		return "revision " + strconv.FormatUint(e.revision, 10)
	default:
		return "any"
	}
}

// Position is a place in the global, ordered log. Positions are compared by
// Commit, then Prepare. Stores with a single counter (Postgres) set both to the
// same value; EventStoreDB uses its commit and prepare positions. The zero
// value is the start of the log: reading from it returns the first event.
type Position struct {
	Commit  uint64
	Prepare uint64
}

// Start is the position before the first event.
var Start = Position{}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Prepare < q.Prepare
}

// IsZero reports whether p is the start of the log.
func (p Position) IsZero() bool { return p == Position{} }

// String formats the position as "commit" when both parts are equal, else as
// "commit-prepare". ParsePosition reads both forms back.
func (p Position) String() string {
	if p.Commit == p.Prepare {
		return strconv.FormatUint(p.Commit, 10)
	}
	return strconv.FormatUint(p.Commit, 10) + "-" + strconv.FormatUint(p.Prepare, 10)
}

// ParsePosition reads a position formatted by Position.String.
func ParsePosition(s string) (Position, error) {
	c, pr, found := strings.Cut(s, "-")
	commit, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	if !found {
		return Position{Commit: commit, Prepare: commit}, nil
	}
	prepare, err := strconv.ParseUint(pr, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	return Position{Commit: commit, Prepare: prepare}, nil
}

// EventData is an event to append. ID is supplied by the caller (a UUID in
// canonical text form); appending the same IDs again is idempotent. Data and
// Metadata are JSON documents (Metadata may be nil).
type EventData struct {
	ID       string
	Type     string
	Data     []byte
	Metadata []byte
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	ID         string
	Stream     string
	Revision   uint64
	Position   Position
	Type       string
	Data       []byte
	Metadata   []byte
	RecordedAt time.Time
}

// AppendResult is the outcome of a successful append: the revision and global
// position of the last event written (or, for an idempotent re-append, of the
// last event of the original append).
type AppendResult struct {
	NextRevision uint64
	Position     Position
}

// Filter restricts ReadAll and Subscribe to matching events. Empty slices
// match everything; within a slice any prefix may match; when both are set an
// event must match both.
type Filter struct {
	StreamPrefixes []string
	TypePrefixes   []string
}

// Matches reports whether an event of that stream and type passes the filter.
func (f Filter) Matches(stream, eventType string) bool {
	return matchAny(f.StreamPrefixes, stream) && matchAny(f.TypePrefixes, eventType)
}

func matchAny(prefixes []string, s string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Message is one item delivered by a subscription: either an event, or a
// checkpoint saying that everything up to Checkpoint has been considered (the
// filter skipped it). For an event message Checkpoint equals Event.Position.
type Message struct {
	Event      *RecordedEvent
	Checkpoint Position
}

// Subscription delivers messages in global order, exclusive of the position it
// started from. Messages closes when the subscription ends; Err then tells why
// (the context's error after cancellation).
type Subscription interface {
	Messages() <-chan Message
	Err() error
}

// Store is the event store port.
type Store interface {
	// Append writes events to the end of a stream if the stream matches the
	// expectation. A mismatch returns an error matching ErrWrongExpectedVersion.
	Append(ctx context.Context, stream string, expected Expected, events ...EventData) (AppendResult, error)
	// ReadStream returns up to max events of a stream starting at revision
	// from (inclusive). A missing stream is an empty result, not an error.
	ReadStream(ctx context.Context, stream string, from uint64, max int) ([]RecordedEvent, error)
	// ReadAll returns up to max events of the global log after position from
	// (exclusive) that match the filter, in order, together with the position
	// up to which the log has been considered (at least the last returned
	// event's position; further when the filter skipped events). Only events
	// whose position is settled are returned: no event may later appear
	// before the returned checkpoint.
	ReadAll(ctx context.Context, from Position, max int, filter Filter) ([]RecordedEvent, Position, error)
	// Subscribe delivers matching events after position from (exclusive):
	// first the stored ones, then live ones as they are committed. The
	// subscription survives dropped connections by resuming from the last
	// delivered position. It ends when ctx is cancelled.
	Subscribe(ctx context.Context, from Position, filter Filter) (Subscription, error)
}
