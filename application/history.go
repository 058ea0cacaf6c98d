package application

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// The history queries serve auditors (and admins): a worker's lifecycle
// events with who caused them and why, the worker as it was at any past
// instant, and the audit log of the whole product. They are the only request
// paths that fold event streams (DESIGN.md section 2 rule 3).

// AuditEntry is one row of the audit_log read model: one lifecycle event of a
// worker, of the settings or of a task.
type AuditEntry struct {
	// Position of the event in the global log; it orders the audit log and
	// is the paging cursor.
	Position      string    `json:"position"`
	EventID       string    `json:"event_id"`
	EventType     string    `json:"event_type"`
	Stream        string    `json:"stream"`
	Revision      int64     `json:"revision"`
	AggregateType string    `json:"aggregate_type"` // worker, settings or task
	AggregateID   string    `json:"aggregate_id"`
	WorkerID      string    `json:"worker_id,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
	RecordedAt    time.Time `json:"recorded_at"`
	// Actor is who caused the event (the audit log keeps no roles).
	Actor         Actor  `json:"actor"`
	CorrelationID string `json:"correlation_id"`
	CausationID   string `json:"causation_id"`
	Command       string `json:"command,omitempty"`
	Summary       string `json:"summary"`
	// Data is the event's payload, with secrets redacted.
	Data json.RawMessage `json:"data"`
}

// AuditFilter selects audit entries. Empty fields match everything.
type AuditFilter struct {
	WorkerID string
	// Actor matches the actor's subject or username exactly.
	Actor string
	// TypePrefix matches event types that start with it ("worker.stop").
	TypePrefix string
	// From (inclusive) and To (exclusive) bound the occurred-at time.
	From, To time.Time
	// Before, when not zero, returns only entries older than this position
	// (the cursor of the next page).
	Before eventstore.Position
	// Limit is the most entries returned (at least 1).
	Limit int
}

// AuditReadModel is the audit_log read model.
type AuditReadModel interface {
	// ListAudit returns up to f.Limit matching entries, newest first (by
	// position, descending).
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}

// AuditPage is one page of audit entries, newest first. NextCursor, when
// set, fetches the following (older) page.
type AuditPage struct {
	Items      []AuditEntry `json:"items"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// HistoryQuery selects a page of one worker's history.
type HistoryQuery struct {
	TypePrefix string
	Cursor     string
	Limit      int
}

// AuditQuery selects audit entries across the product.
type AuditQuery struct {
	WorkerID   string
	Actor      string
	TypePrefix string
	From, To   time.Time
	Cursor     string
	Limit      int
}

// WorkerSnapshot is a worker as it was at an instant: the fold of its
// lifecycle stream up to the last event that occurred at or before At.
type WorkerSnapshot struct {
	WorkerID string    `json:"worker_id"`
	At       time.Time `json:"at"`
	// Revision, EventType, Position and OccurredAt describe the last event
	// folded in.
	Revision   int64        `json:"revision"`
	EventType  string       `json:"event_type"`
	Position   string       `json:"position"`
	OccurredAt time.Time    `json:"occurred_at"`
	State      worker.State `json:"state"`
}

// NotYetError says that a worker exists but did not exist yet at the
// requested instant. It matches domain.ErrNotFound.
type NotYetError struct {
	ID        string
	At        time.Time
	CreatedAt time.Time
}

func (e *NotYetError) Error() string {
	return fmt.Sprintf("worker %s did not exist yet at %s (its first event occurred at %s)",
		e.ID, e.At.UTC().Format(time.RFC3339Nano), e.CreatedAt.UTC().Format(time.RFC3339Nano))
}

// Is makes errors.Is(err, domain.ErrNotFound) true.
func (e *NotYetError) Is(target error) bool { return target == domain.ErrNotFound }

// HistoryOptions configures History.
type HistoryOptions struct {
	Store    eventstore.Store
	Registry *domain.Registry // defaults to EventRegistry()
	Audit    AuditReadModel
}

// History answers the history, time-travel and audit queries.
type History struct {
	store    eventstore.Store
	registry *domain.Registry
	audit    AuditReadModel
}

// NewHistory builds the history queries. It panics when Store or Audit is
// missing (a wiring bug).
func NewHistory(o HistoryOptions) *History {
	if o.Store == nil || o.Audit == nil {
		panic("application: NewHistory needs Store and Audit")
	}
	if o.Registry == nil {
		o.Registry = EventRegistry()
	}
	return &History{store: o.Store, registry: o.Registry, audit: o.Audit}
}

// MaxTypePrefixLength bounds an event-type filter.
const MaxTypePrefixLength = 100

// typePrefixRE accepts the characters of event type names.
var typePrefixRE = regexp.MustCompile(`^[a-z0-9_.]+$`)

// WorkerHistory returns a page of a worker's lifecycle events, newest first,
// each with its actor, correlation and causation ids (admin, auditor). An
// unknown worker is domain.ErrNotFound.
func (h *History) WorkerHistory(ctx context.Context, id string, q HistoryQuery) (AuditPage, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerHistory); err != nil {
		return AuditPage{}, err
	}
	var p domain.Problems
	if !ValidID(id) {
		p.Add("id", "%q is not a valid id", id)
	}
	f := AuditFilter{WorkerID: id, TypePrefix: q.TypePrefix, Limit: q.Limit}
	checkAuditFilter(&p, &f, q.Cursor)
	if err := p.Err(); err != nil {
		return AuditPage{}, err
	}
	recs, err := h.store.ReadStream(ctx, worker.Stream(id), 0, 1)
	if err != nil {
		return AuditPage{}, fmt.Errorf("look up worker %s: %w", id, err)
	}
	if len(recs) == 0 {
		return AuditPage{}, notFound("worker", id)
	}
	return h.page(ctx, f)
}

// Audit returns a page of the audit log, newest first (admin, auditor).
func (h *History) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	f, err := h.auditFilter(ctx, q)
	if err != nil {
		return AuditPage{}, err
	}
	return h.page(ctx, f)
}

// ExportBatch is how many audit entries ExportAudit reads per query.
const ExportBatch = 500

// ExportAudit calls yield for every audit entry matching q (its Limit and
// Cursor bound and start the export like a page's), newest first, reading
// ExportBatch entries at a time so that memory stays flat however large the
// export (admin, auditor). A Limit of 0 exports everything. It stops at the
// first error of yield and returns it.
func (h *History) ExportAudit(ctx context.Context, q AuditQuery, yield func(AuditEntry) error) error {
	total := q.Limit
	q.Limit = 0 // validated below as the default page; the batches are sized here
	f, err := h.auditFilter(ctx, q)
	if err != nil {
		return err
	}
	if total < 0 {
		var p domain.Problems
		p.Add("limit", "must not be negative")
		return p.Err()
	}
	sent := 0
	for {
		f.Limit = ExportBatch
		if total > 0 && total-sent < f.Limit {
			f.Limit = total - sent
		}
		items, err := h.audit.ListAudit(ctx, f)
		if err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		for _, e := range items {
			if err := yield(e); err != nil {
				return err
			}
		}
		sent += len(items)
		if len(items) < f.Limit || (total > 0 && sent >= total) {
			return nil
		}
		last, err := eventstore.ParsePosition(items[len(items)-1].Position)
		if err != nil {
			return fmt.Errorf("audit entry position: %w", err)
		}
		f.Before = last
	}
}

func (h *History) auditFilter(ctx context.Context, q AuditQuery) (AuditFilter, error) {
	if _, err := rbac.Authorize(ctx, rbac.AuditRead); err != nil {
		return AuditFilter{}, err
	}
	var p domain.Problems
	if q.WorkerID != "" && !ValidID(q.WorkerID) {
		p.Add("worker", "%q is not a valid id", q.WorkerID)
	}
	if len(q.Actor) > 256 {
		p.Add("actor", "is longer than 256 characters")
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		p.Add("from", "must be before to")
	}
	f := AuditFilter{WorkerID: q.WorkerID, Actor: q.Actor, TypePrefix: q.TypePrefix, From: q.From, To: q.To, Limit: q.Limit}
	checkAuditFilter(&p, &f, q.Cursor)
	if err := p.Err(); err != nil {
		return AuditFilter{}, err
	}
	return f, nil
}

// checkAuditFilter validates the type prefix, the limit (defaulting it) and
// the cursor (setting f.Before).
func checkAuditFilter(p *domain.Problems, f *AuditFilter, cursor string) {
	if f.TypePrefix != "" && (len(f.TypePrefix) > MaxTypePrefixLength || !typePrefixRE.MatchString(f.TypePrefix)) {
		p.Add("type", "must be an event type prefix of at most %d characters a-z, 0-9, '_' and '.'", MaxTypePrefixLength)
	}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultPageSize
	case f.Limit < 0 || f.Limit > MaxPageSize:
		p.Add("limit", "must be between 1 and %d", MaxPageSize)
	}
	if cursor != "" {
		pos, err := eventstore.ParsePosition(cursor)
		if err != nil || pos.IsZero() {
			p.Add("cursor", "is not a cursor returned by this API")
		} else {
			f.Before = pos
		}
	}
}

// page reads one more entry than asked to learn whether a next page exists.
func (h *History) page(ctx context.Context, f AuditFilter) (AuditPage, error) {
	limit := f.Limit
	f.Limit++
	items, err := h.audit.ListAudit(ctx, f)
	if err != nil {
		return AuditPage{}, fmt.Errorf("read audit log: %w", err)
	}
	page := AuditPage{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		page.NextCursor = items[limit-1].Position
	}
	if page.Items == nil {
		page.Items = []AuditEntry{}
	}
	return page, nil
}

// WorkerStateAt folds the worker's lifecycle stream from the event store up
// to the last event that occurred at or before at, comparing instants to the
// microsecond like the audit log stores them (admin, auditor). An
// unknown worker is a *NotFoundError, a worker created after at a
// *NotYetError; both match domain.ErrNotFound.
func (h *History) WorkerStateAt(ctx context.Context, id string, at time.Time) (WorkerSnapshot, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerHistory); err != nil {
		return WorkerSnapshot{}, err
	}
	var p domain.Problems
	if !ValidID(id) {
		p.Add("id", "%q is not a valid id", id)
	}
	if at.IsZero() {
		p.Add("at", "is required")
	}
	if err := p.Err(); err != nil {
		return WorkerSnapshot{}, err
	}
	stream := worker.Stream(id)
	w := worker.New()
	snap := WorkerSnapshot{WorkerID: id, At: at.UTC()}
	var first time.Time
	var from uint64
	for {
		recs, err := h.store.ReadStream(ctx, stream, from, readPage)
		if err != nil {
			return WorkerSnapshot{}, fmt.Errorf("read %s: %w", stream, err)
		}
		for _, rec := range recs {
			e, occurred, err := Decode(h.registry, rec)
			if err != nil {
				return WorkerSnapshot{}, fmt.Errorf("fold %s: %w", stream, err)
			}
			// Instants compare at the audit log's precision (microseconds),
			// so that an occurred_at read from the history selects its event.
			instant := occurred.Truncate(time.Microsecond)
			if first.IsZero() {
				first = instant
			}
			if instant.After(at) {
				return h.snapshotDone(w, snap, id, at, first)
			}
			if err := w.Apply(e, occurred); err != nil {
				return WorkerSnapshot{}, fmt.Errorf("fold %s at revision %d: %w", stream, rec.Revision, err)
			}
			snap.Revision, snap.EventType = int64(rec.Revision), rec.Type
			snap.Position, snap.OccurredAt = rec.Position.String(), instant.UTC()
		}
		if len(recs) < readPage {
			return h.snapshotDone(w, snap, id, at, first)
		}
		from = recs[len(recs)-1].Revision + 1
	}
}

func (h *History) snapshotDone(w *worker.Worker, snap WorkerSnapshot, id string, at, first time.Time) (WorkerSnapshot, error) {
	if first.IsZero() {
		return WorkerSnapshot{}, notFound("worker", id)
	}
	if !w.Exists() {
		return WorkerSnapshot{}, &NotYetError{ID: id, At: at, CreatedAt: first}
	}
	snap.State = w.State()
	return snap, nil
}
