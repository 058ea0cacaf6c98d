// Package application holds the command and query handlers of CML Cloud
// Manager, the ports they need (declared here, implemented by adapters), and
// the repository that loads aggregates and appends their events. Commands
// only append events: they never call AWS or CML and never enqueue jobs.
package application

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Clock tells the time.
type Clock interface{ Now() time.Time }

// ClockFunc adapts a function to Clock.
type ClockFunc func() time.Time

// Now implements Clock.
func (f ClockFunc) Now() time.Time { return f() }

// SystemClock is the wall clock.
var SystemClock Clock = ClockFunc(time.Now)

// IDGenerator makes new unique ids (UUIDs in text form).
type IDGenerator interface{ NewID() string }

// UUIDv7 generates time-ordered UUIDs (RFC 9562 version 7).
type UUIDv7 struct{}

// NewID implements IDGenerator.
func (UUIDv7) NewID() string { return uuid.Must(uuid.NewV7()).String() }

// TokenSealer protects licence tokens: the event log keeps only a sealed
// token (for the job that registers the licence) and a fingerprint (for
// auditors).
type TokenSealer interface {
	Seal(plaintext string) (string, error)
	Open(sealed string) (string, error)
	Fingerprint(plaintext string) string
}

// EventRegistry returns the registry of every event type of the domain.
func EventRegistry() *domain.Registry {
	r := domain.NewRegistry(worker.Events()...)
	for _, e := range settings.Events() {
		r.Register(e)
	}
	for _, e := range task.Events() {
		r.Register(e)
	}
	return r
}

// WorkerView is a worker as the read model holds it.
type WorkerView struct {
	worker.State
	// Revision of the last lifecycle event folded in, and its global position.
	Revision int64  `json:"revision"`
	Position string `json:"position"`
	// CreatedBy is the actor of the worker's first event.
	CreatedBy Actor `json:"created_by"`
	// WorkerTelemetry is the newest metrics sample and the labs count, from
	// the telemetry read models.
	WorkerTelemetry
	// encoded, when set, is this view already encoded as JSON (a read model
	// kept in memory encodes each worker once, not on every request).
	encoded []byte
}

// WithJSON returns the view carrying its own JSON encoding, which
// MarshalJSON then returns as is. The caller guarantees that encoded is the
// encoding of this very view.
func (v WorkerView) WithJSON(encoded []byte) WorkerView {
	v.encoded = encoded
	return v
}

// EncodedJSON returns the JSON encoding set by WithJSON, if any.
func (v WorkerView) EncodedJSON() ([]byte, bool) { return v.encoded, v.encoded != nil }

// MarshalJSON encodes the view, reusing a JSON encoding set by WithJSON.
func (v WorkerView) MarshalJSON() ([]byte, error) {
	if v.encoded != nil {
		return v.encoded, nil
	}
	type plain WorkerView
	return json.Marshal(plain(v))
}

// WorkerFilter selects workers.
type WorkerFilter struct {
	Region            string
	Status            worker.Status
	IncludeTerminated bool   // include terminated and removed workers
	Query             string // matches name, instance id or region
	Limit             int
	Offset            int
}

// WorkerReadModel is the worker_view read model.
type WorkerReadModel interface {
	ListWorkers(ctx context.Context, f WorkerFilter) ([]WorkerView, int, error)
	// GetWorker returns domain.ErrNotFound (wrapped) for an unknown id.
	GetWorker(ctx context.Context, id string) (WorkerView, error)
	// FindByInstance returns the worker managing an instance, if any.
	FindByInstance(ctx context.Context, region, instanceID string) (WorkerView, bool, error)
}

// SettingsReadModel is the settings_view read model: the saved values.
type SettingsReadModel interface {
	SavedSettings(ctx context.Context) (saved settings.Patch, updatedAt time.Time, updatedBy Actor, err error)
}

// TaskView is a task as the read model holds it.
type TaskView struct {
	task.State
	CreatedBy Actor `json:"created_by"`
	Revision  int64 `json:"revision"`
}

// TaskFilter selects tasks; the handler narrows it to what the caller may see.
type TaskFilter struct {
	Department string
	AssigneeID string
	Limit      int
	Offset     int
}

// TaskReadModel is the task_view read model (deleted tasks are not listed).
type TaskReadModel interface {
	ListTasks(ctx context.Context, f TaskFilter) ([]TaskView, int, error)
	GetTask(ctx context.Context, id string) (TaskView, error)
}
