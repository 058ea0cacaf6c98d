package application

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// The two real-time streams (DESIGN.md section 10) are opened here, where
// the caller is authorised and the query validated; the API writes them
// out as server-sent events.
//
//   - The dashboard stream (rbac.EventsStream) tells what changed in the
//     worker read models. DashboardStream returns the scope of one
//     subscriber: which workers it may see and which kinds of change it
//     asked for.
//   - The domain stream (rbac.EventsDomain) is the event log itself, in log
//     order, for integrators. DomainEvents subscribes to the event store
//     after a position and turns each recorded event into a DomainEvent,
//     with secrets redacted.

// Event types of the dashboard stream (the SSE "event" field).
const (
	DashboardSnapshot = "worker.snapshot" // the worker view changed (or the first view of it)
	DashboardMetrics  = "worker.metrics"  // a new metrics sample
	DashboardLabs     = "worker.labs"     // a new lab list
	DashboardRemoved  = "worker.removed"  // the worker is no longer managed
)

// DashboardTypes lists the dashboard stream's change types, in the order
// of the documentation.
var DashboardTypes = []string{DashboardSnapshot, DashboardMetrics, DashboardLabs, DashboardRemoved}

// Bounds of the stream filters.
const (
	// MaxStreamWorkerIDs bounds the worker_ids filter of the dashboard
	// stream.
	MaxStreamWorkerIDs = 100
	// MaxStreamTypePrefixes bounds the types filter of the domain stream.
	MaxStreamTypePrefixes = 20
)

// DashboardQuery selects what one dashboard subscriber receives. Empty
// slices select everything.
type DashboardQuery struct {
	// WorkerIDs limits the stream to these workers.
	WorkerIDs []string
	// Types limits the stream to these change types (DashboardTypes).
	Types []string
}

// DashboardScope is what an authorised dashboard subscriber may receive
// and asked for. The zero value allows nothing.
type DashboardScope struct {
	principal rbac.Principal
	workers   map[string]bool // nil: every worker
	types     map[string]bool
}

// Principal returns the subscriber.
func (s DashboardScope) Principal() rbac.Principal { return s.principal }

// Allows reports whether a change of the given type about a worker goes to
// the subscriber: the subscriber may see the worker and asked for the
// worker and the type. Every role that may read workers (rbac.WorkersRead)
// sees every worker: the policy has no finer rule for workers (unlike
// tasks), so what a subscriber may see is the fleet, narrowed by its
// worker_ids.
func (s DashboardScope) Allows(changeType, workerID string) bool {
	if !s.types[changeType] {
		return false
	}
	return s.workers == nil || s.workers[workerID]
}

// DashboardStream authorises a dashboard subscriber (rbac.EventsStream) and
// validates its filters: worker ids must be canonical UUIDs (at most
// MaxStreamWorkerIDs), types must be DashboardTypes.
func (a *App) DashboardStream(ctx context.Context, q DashboardQuery) (DashboardScope, error) {
	p, err := rbac.Authorize(ctx, rbac.EventsStream)
	if err != nil {
		return DashboardScope{}, err
	}
	var problems domain.Problems
	scope := DashboardScope{principal: p, types: map[string]bool{}}
	if len(q.WorkerIDs) > MaxStreamWorkerIDs {
		problems.Add("worker_ids", "lists more than %d workers", MaxStreamWorkerIDs)
	} else if len(q.WorkerIDs) > 0 {
		scope.workers = make(map[string]bool, len(q.WorkerIDs))
		for _, id := range q.WorkerIDs {
			if !ValidID(id) {
				problems.Add("worker_ids", "%q is not a valid worker id (a lower-case UUID)", truncate(id, 64))
				break
			}
			scope.workers[id] = true
		}
	}
	for _, t := range q.Types {
		if !slices.Contains(DashboardTypes, t) {
			problems.Add("types", "%q is not one of %s", truncate(t, 64), strings.Join(DashboardTypes, ", "))
			break
		}
		scope.types[t] = true
	}
	if len(q.Types) == 0 {
		for _, t := range DashboardTypes {
			scope.types[t] = true
		}
	}
	if err := problems.Err(); err != nil {
		return DashboardScope{}, err
	}
	return scope, nil
}

// DomainQuery selects the domain events an integrator receives.
type DomainQuery struct {
	// From is the position after which the stream starts (exclusive);
	// the zero position starts at the beginning of the log.
	From eventstore.Position
	// TypePrefixes limits the stream to event types that start with one of
	// them ("worker.stop", "worker.lab_"); empty: every type.
	TypePrefixes []string
	// WorkerID limits the stream to one worker's lifecycle and telemetry
	// streams.
	WorkerID string
}

// DomainEvent is one event of the log as the domain stream sends it.
type DomainEvent struct {
	// ID is the event's own id (a UUID, unique in the log).
	ID string `json:"id" doc:"The event's id (a UUID), unique in the log."`
	// Position is the event's global position: the stream's SSE id and the
	// value to resume from.
	Position      string    `json:"position" doc:"The event's global position in the log; the frame's SSE id and what Last-Event-ID or ?from= resume after."`
	Type          string    `json:"type" doc:"The versioned event type, such as worker.created.v1."`
	Stream        string    `json:"stream" doc:"The event's stream: worker-<id>, worker_telemetry-<id>, settings-global or task-<id>."`
	Revision      int64     `json:"revision" doc:"The event's revision in its stream (from 0)."`
	Data          any       `json:"data" doc:"The event's payload. The sealed licence token is removed and an imported lab's YAML is replaced by its size (yaml_bytes)."`
	Actor         Actor     `json:"actor"`
	CorrelationID string    `json:"correlation_id" doc:"The HTTP request or job that started the chain."`
	CausationID   string    `json:"causation_id" doc:"The event or command that caused this event."`
	Command       string    `json:"command,omitempty" doc:"The application command that recorded it."`
	OccurredAt    time.Time `json:"occurred_at"`
	RecordedAt    time.Time `json:"recorded_at"`
	// DecodeError is set, and Data null, when the stored event could not be
	// read: the event still takes its place in the stream (no gap), and
	// nothing that should have been redacted leaves the service.
	DecodeError string `json:"decode_error,omitempty" doc:"Set (and data null) when the stored event could not be decoded."`
}

// DomainSubscription is an open domain stream: Messages delivers the
// matching events of the log in order (and checkpoints, when the filter
// skipped events), first the stored ones, then live ones, with no gap and
// no duplicate across the switch. Close ends it.
type DomainSubscription struct {
	sub      eventstore.Subscription
	cancel   context.CancelFunc
	envelope *envelopes
}

// Messages returns the subscription's channel; it closes when the
// subscription ends (Err then tells why).
func (s *DomainSubscription) Messages() <-chan eventstore.Message { return s.sub.Messages() }

// Err returns why the subscription ended (the context's error after Close).
func (s *DomainSubscription) Err() error { return s.sub.Err() }

// Close ends the subscription.
func (s *DomainSubscription) Close() { s.cancel() }

// Envelope turns a recorded event into the DomainEvent sent to integrators
// (see DomainEnvelope).
func (s *DomainSubscription) Envelope(rec *eventstore.RecordedEvent) DomainEvent {
	return s.envelope.of(rec)
}

// envelopes builds DomainEvents with one registry.
type envelopes struct {
	registry *domain.Registry
	// current holds the registry's current types (New allocates).
	current map[string]bool
}

func newEnvelopes(registry *domain.Registry) *envelopes {
	en := &envelopes{registry: registry, current: map[string]bool{}}
	for _, t := range registry.Types() {
		en.current[t] = true
	}
	return en
}

// redactedTypes are the current event types whose payload Redact changes.
var redactedTypes = map[string]bool{
	worker.LicenseRegistrationRequested{}.EventType(): true,
	worker.LabActionRequested{}.EventType():           true,
}

// DomainEnvelope turns a recorded event into the DomainEvent sent to
// integrators. The stored payload of a current, non-secret event type is
// passed through as is; an old version is upcast by the registry and sent
// under its current type; secrets are redacted (see Redact). An event that
// cannot be read is sent with DecodeError and no data.
func DomainEnvelope(registry *domain.Registry, rec *eventstore.RecordedEvent) DomainEvent {
	return newEnvelopes(registry).of(rec)
}

func (en *envelopes) of(rec *eventstore.RecordedEvent) DomainEvent {
	out := DomainEvent{
		ID: rec.ID, Position: rec.Position.String(), Type: rec.Type, Stream: rec.Stream, Revision: int64(rec.Revision),
		RecordedAt: rec.RecordedAt.UTC(),
	}
	var problems []string
	if m, err := ParseMetadata(rec.Metadata); err != nil {
		problems = append(problems, err.Error())
	} else {
		out.Actor, out.CorrelationID, out.CausationID, out.Command = m.Actor, m.CorrelationID, m.CausationID, m.Command
		out.OccurredAt = m.OccurredAt.UTC()
	}
	if out.OccurredAt.IsZero() {
		out.OccurredAt = out.RecordedAt
	}
	switch {
	case en.current[rec.Type] && !redactedTypes[rec.Type] && json.Valid(rec.Data):
		// The stored payload is the encoding of this very type, and holds
		// nothing secret.
		out.Data = json.RawMessage(rec.Data)
	default:
		e, err := en.registry.Decode(rec.Type, rec.Data)
		if err != nil {
			problems = append(problems, err.Error())
			break
		}
		// An old version comes out under its current type.
		out.Type = e.EventType()
		out.Data, _ = Redact(e)
	}
	if len(problems) > 0 {
		out.DecodeError = strings.Join(problems, "; ")
	}
	return out
}

// Redact returns what may leave the service of an event: the sealed licence
// token is removed and an imported lab's YAML (up to 4 MiB) is replaced by
// its size. changed is false for every other event, which is returned as
// is.
func Redact(e domain.Event) (redacted any, changed bool) {
	switch e := e.(type) {
	case worker.LicenseRegistrationRequested:
		return struct {
			Reregister       bool   `json:"reregister"`
			TokenFingerprint string `json:"token_fingerprint"`
		}{Reregister: e.Reregister, TokenFingerprint: e.TokenFingerprint}, true
	case worker.LabActionRequested:
		if e.YAML != "" {
			return struct {
				worker.LabActionRequested
				YAMLBytes int `json:"yaml_bytes"`
			}{
				LabActionRequested: worker.LabActionRequested{RequestID: e.RequestID, Action: e.Action, LabID: e.LabID, Title: e.Title},
				YAMLBytes:          len(e.YAML),
			}, true
		}
	}
	return e, false
}

// DomainEvents authorises an integrator (rbac.EventsDomain), validates the
// query and subscribes to the event log after q.From. The subscription
// lives until Close or until ctx ends.
func (a *App) DomainEvents(ctx context.Context, q DomainQuery) (*DomainSubscription, error) {
	if _, err := rbac.Authorize(ctx, rbac.EventsDomain); err != nil {
		return nil, err
	}
	filter, err := domainFilter(q)
	if err != nil {
		return nil, err
	}
	subCtx, cancel := context.WithCancel(ctx)
	sub, err := a.opts.Store.Subscribe(subCtx, q.From, filter)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to the event log: %w", err)
	}
	return &DomainSubscription{sub: sub, cancel: cancel, envelope: newEnvelopes(a.opts.Registry)}, nil
}

// domainFilter validates a DomainQuery and returns its store filter.
func domainFilter(q DomainQuery) (eventstore.Filter, error) {
	var (
		problems domain.Problems
		f        eventstore.Filter
	)
	if len(q.TypePrefixes) > MaxStreamTypePrefixes {
		problems.Add("types", "lists more than %d type prefixes", MaxStreamTypePrefixes)
	}
	for _, t := range q.TypePrefixes {
		if t == "" || len(t) > MaxTypePrefixLength || !typePrefixRE.MatchString(t) {
			problems.Add("types", "%q must be an event type prefix of at most %d characters a-z, 0-9, '_' and '.'",
				truncate(t, 64), MaxTypePrefixLength)
			break
		}
	}
	if len(problems) == 0 {
		f.TypePrefixes = slices.Clone(q.TypePrefixes)
	}
	if q.WorkerID != "" {
		if !ValidID(q.WorkerID) {
			problems.Add("worker_id", "%q is not a valid worker id (a lower-case UUID)", truncate(q.WorkerID, 64))
		} else {
			f.StreamPrefixes = []string{worker.Stream(q.WorkerID), worker.TelemetryStream(q.WorkerID)}
		}
	}
	if err := problems.Err(); err != nil {
		return eventstore.Filter{}, err
	}
	return f, nil
}

// truncate keeps a client's bad value short in an error message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
