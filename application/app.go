package application

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Options configures the application.
type Options struct {
	Store    eventstore.Store
	Registry *domain.Registry // defaults to EventRegistry()
	Clock    Clock            // defaults to SystemClock
	IDs      IDGenerator      // defaults to UUIDv7
	Sealer   TokenSealer
	Retry    RetryPolicy // defaults to DefaultRetryPolicy
	Logger   *slog.Logger

	Workers  WorkerReadModel
	Settings SettingsReadModel
	Tasks    TaskReadModel
	// WorkerSnapshots, optional, returns a recent in-memory state of a
	// worker (the worker catalog); commands then skip reading the stream
	// when that state is current (see Repository.WithSnapshots).
	WorkerSnapshots func(id string) (*worker.Worker, bool)

	// Regions the product manages; workers may be created only there.
	Regions []string
	// Defaults are the environment's values of the runtime settings.
	Defaults settings.Values
}

// App is the application: every command and query handler.
type App struct {
	opts      Options
	workers   *Repository[*worker.Worker]
	settingsR *Repository[*settings.Settings]
	tasks     *Repository[*task.Task]
}

// New builds the application. It panics when a required dependency is
// missing: that is a wiring bug, found at start-up.
func New(o Options) *App {
	if o.Store == nil || o.Workers == nil || o.Settings == nil || o.Tasks == nil || o.Sealer == nil {
		panic("application: Store, Sealer and the Workers, Settings and Tasks read models are required")
	}
	if o.Registry == nil {
		o.Registry = EventRegistry()
	}
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.IDs == nil {
		o.IDs = UUIDv7{}
	}
	if o.Retry.Attempts == 0 {
		o.Retry = DefaultRetryPolicy
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Regions = slices.Clone(o.Regions)
	workers := NewRepository(o.Store, o.Registry, worker.New, worker.Stream, o.Clock, o.IDs, o.Retry)
	if o.WorkerSnapshots != nil {
		workers.WithSnapshots(o.WorkerSnapshots)
	}
	return &App{
		opts:      o,
		workers:   workers,
		settingsR: NewRepository(o.Store, o.Registry, settings.New, func(string) string { return settings.StreamName }, o.Clock, o.IDs, o.Retry),
		tasks:     NewRepository(o.Store, o.Registry, task.New, task.Stream, o.Clock, o.IDs, o.Retry),
	}
}

// Result is the outcome of a command.
type Result struct {
	// ID of the aggregate the command acted on.
	ID string `json:"id"`
	// Changed is false when the command changed nothing (no event).
	Changed bool `json:"changed"`
	// Events lists the types of the appended events.
	Events []string `json:"events"`
	// EventIDs lists their ids, for correlation with the event streams.
	EventIDs []string `json:"event_ids"`
	// Revision of the aggregate after the command.
	Revision int64 `json:"revision"`
	// Position of the last appended event in the global log ("" when none).
	Position string `json:"position,omitempty"`
}

func result(id string, s Saved) Result {
	r := Result{ID: id, Changed: s.Changed(), Revision: s.Revision, EventIDs: s.EventIDs, Events: []string{}}
	for _, e := range s.Events {
		r.Events = append(r.Events, e.EventType())
	}
	if r.EventIDs == nil {
		r.EventIDs = []string{}
	}
	if s.Changed() {
		r.Position = s.Position.String()
	}
	return r
}

// metadata builds the metadata of a command's events: the actor, the
// correlation id from ctx (or a new one: this command starts the chain) and
// the causation id from ctx (the causing event) or a new command id.
func (a *App) metadata(ctx context.Context, p rbac.Principal, command string) Metadata {
	corr := CorrelationID(ctx)
	if corr == "" {
		corr = a.opts.IDs.NewID()
	}
	cause := CausationID(ctx)
	if cause == "" {
		cause = a.opts.IDs.NewID()
	}
	return Metadata{Actor: ActorOf(p), CorrelationID: corr, CausationID: cause, Command: command}
}

// ValidID reports whether s is a canonical UUID (the form of every
// aggregate id).
func ValidID(s string) bool { return uuidRE.MatchString(s) }

// checkID returns a validation error for a malformed aggregate id, or
// domain.ErrNotFound semantics are left to the caller.
func checkID(field, id string) error {
	if !ValidID(id) {
		var p domain.Problems
		p.Add(field, "%q is not a valid id", id)
		return p.Err()
	}
	return nil
}

// notFound wraps domain.ErrNotFound for an aggregate kind and id.
func notFound(kind, id string) error {
	return &NotFoundError{Kind: kind, ID: id}
}

// NotFoundError says which aggregate does not exist. It matches
// domain.ErrNotFound.
type NotFoundError struct {
	Kind string
	ID   string
}

func (e *NotFoundError) Error() string { return e.Kind + " " + e.ID + " not found" }

// Is makes errors.Is(err, domain.ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == domain.ErrNotFound }

// asNotFound turns the domain's bare not-found into a NotFoundError naming
// the aggregate.
func asNotFound(err error, kind, id string) error {
	var nf *NotFoundError
	if errors.Is(err, domain.ErrNotFound) && !errors.As(err, &nf) {
		return notFound(kind, id)
	}
	return err
}
