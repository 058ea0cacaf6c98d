package application

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// Aggregate is what the repository can load and save.
type Aggregate interface {
	Apply(e domain.Event, at time.Time) error
	// Version is the revision of the last applied event, -1 when new.
	Version() int64
}

// ErrConflict is returned (wrapped in *ConflictError) when an update keeps
// losing the race for the stream after all retries. The API answers 409.
var ErrConflict = errors.New("concurrent modification")

// ConflictError reports the stream and how often the update was tried.
type ConflictError struct {
	Stream   string
	Attempts int
	Err      error
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s changed concurrently %d times in a row; try again: %v", e.Stream, e.Attempts, e.Err)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap exposes the last store error.
func (e *ConflictError) Unwrap() error { return e.Err }

// Saved is the outcome of a repository update.
type Saved struct {
	Events   []domain.Event
	EventIDs []string
	// Revision of the stream's last event after the update (-1 for a stream
	// that still does not exist).
	Revision int64
	// Position of the last appended event; zero when nothing was appended.
	Position eventstore.Position
}

// Changed reports whether anything was appended.
func (s Saved) Changed() bool { return len(s.Events) > 0 }

// RetryPolicy bounds the optimistic-concurrency retries.
type RetryPolicy struct {
	Attempts  int           // total attempts, at least 1
	BaseDelay time.Duration // first backoff; doubles each retry, with full jitter
}

// DefaultRetryPolicy tries five times over at most a few hundred milliseconds.
var DefaultRetryPolicy = RetryPolicy{Attempts: 5, BaseDelay: 5 * time.Millisecond}

// Repository loads aggregates from their streams and appends the events a
// decision returns, with the revision it loaded as the expectation.
type Repository[A Aggregate] struct {
	store     eventstore.Store
	registry  *domain.Registry
	newFn     func() A
	stream    func(id string) string
	clock     Clock
	ids       IDGenerator
	retry     RetryPolicy
	snapshots func(id string) (A, bool)
}

// WithSnapshots makes the repository try a recent in-memory state of the
// aggregate (such as a read model kept in memory) before reading its
// stream. Only a decision that appends is taken on a snapshot, because the
// append's expected revision proves the snapshot was current; a decision
// that changes nothing or refuses is taken again on the stream, so a stale
// snapshot never drops or refuses a command.
func (r *Repository[A]) WithSnapshots(snapshot func(id string) (A, bool)) *Repository[A] {
	r.snapshots = snapshot
	return r
}

// NewRepository builds a repository for one aggregate type.
func NewRepository[A Aggregate](store eventstore.Store, registry *domain.Registry, newFn func() A, stream func(string) string, clock Clock, ids IDGenerator, retry RetryPolicy) *Repository[A] {
	if store == nil || registry == nil || newFn == nil || stream == nil || clock == nil || ids == nil {
		panic("application: NewRepository needs every dependency")
	}
	if retry.Attempts < 1 {
		retry.Attempts = 1
	}
	return &Repository[A]{store: store, registry: registry, newFn: newFn, stream: stream, clock: clock, ids: ids, retry: retry}
}

// readPage is how many events one ReadStream call fetches.
const readPage = 1000

// Load folds the aggregate's stream. A missing stream gives a new aggregate
// (Version -1).
func (r *Repository[A]) Load(ctx context.Context, id string) (A, error) {
	agg := r.newFn()
	stream := r.stream(id)
	var from uint64
	for {
		recs, err := r.store.ReadStream(ctx, stream, from, readPage)
		if err != nil {
			return agg, fmt.Errorf("load %s: %w", stream, err)
		}
		for _, rec := range recs {
			e, at, err := Decode(r.registry, rec)
			if err != nil {
				return agg, fmt.Errorf("load %s: %w", stream, err)
			}
			if err := agg.Apply(e, at); err != nil {
				return agg, fmt.Errorf("load %s at revision %d: %w", stream, rec.Revision, err)
			}
		}
		if len(recs) < readPage {
			return agg, nil
		}
		from = recs[len(recs)-1].Revision + 1
	}
}

// Decode turns a stored event into a domain event and the time it occurred.
func Decode(registry *domain.Registry, rec eventstore.RecordedEvent) (domain.Event, time.Time, error) {
	e, err := registry.Decode(rec.Type, rec.Data)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("event %s (%s@%d): %w", rec.ID, rec.Stream, rec.Revision, err)
	}
	at := rec.RecordedAt
	// Only the time is needed to fold; decoding the whole metadata (actor,
	// roles, ids) would double the cost of loading an aggregate.
	var m struct {
		OccurredAt time.Time `json:"occurred_at"`
	}
	if len(rec.Metadata) > 0 && json.Unmarshal(rec.Metadata, &m) == nil && !m.OccurredAt.IsZero() {
		at = m.OccurredAt
	}
	return e, at, nil
}

// Update loads the aggregate, lets decide return events, and appends them
// with the loaded revision as the expectation. When another writer got there
// first it reloads and decides again, a bounded number of times with jittered
// backoff; then it returns a *ConflictError. meta supplies the metadata of
// the events (the time is set here, once per attempt).
func (r *Repository[A]) Update(ctx context.Context, id string, meta Metadata, decide func(A) ([]domain.Event, error)) (Saved, error) {
	stream := r.stream(id)
	var lastErr error
	trySnapshot := r.snapshots != nil
	for attempt := 1; attempt <= r.retry.Attempts; attempt++ {
		if attempt > 1 && lastErr != nil {
			if err := sleepJittered(ctx, r.retry.BaseDelay, attempt-1); err != nil {
				return Saved{}, err
			}
		}
		var (
			agg      A
			snapshot bool
			err      error
		)
		if trySnapshot {
			trySnapshot = false
			agg, snapshot = r.snapshots(id)
		}
		if !snapshot {
			if agg, err = r.Load(ctx, id); err != nil {
				return Saved{}, err
			}
		}
		events, err := decide(agg)
		if snapshot && (err != nil || len(events) == 0) {
			// Refusals and no-ops are confirmed on the stream itself.
			attempt--
			continue
		}
		if err != nil {
			return Saved{}, err
		}
		if len(events) == 0 {
			return Saved{Revision: agg.Version()}, nil
		}
		meta.OccurredAt = r.clock.Now().UTC()
		data, ids, err := r.encode(events, meta)
		if err != nil {
			return Saved{}, err
		}
		expected := eventstore.NoStream
		if v := agg.Version(); v >= 0 {
			expected = eventstore.Exact(uint64(v))
		}
		res, err := r.store.Append(ctx, stream, expected, data...)
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			if snapshot {
				// The snapshot was stale: decide again on the stream,
				// without counting an attempt or waiting.
				attempt--
				continue
			}
			lastErr = err
			continue
		}
		if err != nil {
			return Saved{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		return Saved{Events: events, EventIDs: ids, Revision: int64(res.NextRevision), Position: res.Position}, nil
	}
	return Saved{}, &ConflictError{Stream: stream, Attempts: r.retry.Attempts, Err: lastErr}
}

func (r *Repository[A]) encode(events []domain.Event, meta Metadata) ([]eventstore.EventData, []string, error) {
	return encodeEvents(r.registry, r.ids, meta, events)
}

// encodeEvents encodes events with one metadata document and a new id each,
// and returns them with their ids.
func encodeEvents(registry *domain.Registry, gen IDGenerator, meta Metadata, events []domain.Event) ([]eventstore.EventData, []string, error) {
	md, err := json.Marshal(meta)
	if err != nil {
		return nil, nil, fmt.Errorf("encode metadata: %w", err)
	}
	out := make([]eventstore.EventData, len(events))
	ids := make([]string, len(events))
	for i, e := range events {
		typ, data, err := registry.Encode(e)
		if err != nil {
			return nil, nil, err
		}
		ids[i] = gen.NewID()
		out[i] = eventstore.EventData{ID: ids[i], Type: typ, Data: data, Metadata: md}
	}
	return out, ids, nil
}

// sleepJittered waits a random time up to base·2^(n-1) ("full jitter").
func sleepJittered(ctx context.Context, base time.Duration, n int) error {
	ceiling := base << (n - 1)
	if ceiling <= 0 {
		return nil
	}
	t := time.NewTimer(rand.N(ceiling) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
