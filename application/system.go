package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// ComponentCheck probes one dependency of the service for the system health
// view ("database", "event_store").
type ComponentCheck struct {
	Name string
	// Check returns nil when the component answers; it must return promptly
	// once ctx is done.
	Check func(ctx context.Context) error
}

// ProjectionStatus is the state of one read model: its checkpoint, the
// runner in this process (if any), how far it is behind the log, and its
// rebuild.
type ProjectionStatus struct {
	Name string `json:"name"`
	// Position is the stored checkpoint.
	Position string `json:"position"`
	// Running is true when this process runs the projection's runner;
	// Leader when that runner currently applies events (one instance does).
	Running bool `json:"running"`
	Leader  bool `json:"leader"`
	// CaughtUp is true once the projection has applied the log up to its
	// head.
	CaughtUp bool `json:"caught_up"`
	// LagEvents counts the events of the log after the checkpoint that the
	// projection still has to apply; counting stops at a cap, and LagCapped
	// says the real lag is larger.
	LagEvents int  `json:"lag_events"`
	LagCapped bool `json:"lag_capped,omitempty"`
	// LastError is the runner's latest failure; cleared by a committed batch.
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Rebuild is the state of the latest rebuild started in this process,
	// or "running" when another instance is rebuilding.
	Rebuild RebuildState `json:"rebuild"`
}

// Rebuild states.
const (
	RebuildIdle      = "idle"
	RebuildRunning   = "running"
	RebuildSucceeded = "succeeded"
	RebuildFailed    = "failed"
)

// RebuildState describes the latest rebuild of a read model.
type RebuildState struct {
	// State is idle (none since this process started), running, succeeded or
	// failed.
	State string `json:"state"`
	// Elsewhere is true when the running rebuild belongs to another
	// instance.
	Elsewhere  bool      `json:"elsewhere,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// StartedBy is the subject of the admin who asked for it.
	StartedBy string `json:"started_by,omitempty"`
	// Events applied to the new tables and the checkpoint they reached
	// (once succeeded).
	Events   int64  `json:"events,omitempty"`
	Position string `json:"position,omitempty"`
	// Error is why it failed.
	Error string `json:"error,omitempty"`
}

// ProjectionMonitor reports the state of every read model.
type ProjectionMonitor interface {
	ProjectionStatuses(ctx context.Context) ([]ProjectionStatus, error)
}

// Health statuses of a component and of the whole service.
const (
	HealthUp       = "up"
	HealthDown     = "down"
	HealthDegraded = "degraded"
	HealthHealthy  = "healthy"
)

// ComponentHealth is the outcome of one component's probe. Error texts are
// logged, not returned: they can name internal hosts.
type ComponentHealth struct {
	Status    string  `json:"status"` // up, down or degraded
	LatencyMS float64 `json:"latency_ms"`
	// Reason is a short, fixed explanation when the component is not up
	// ("failed", "timeout", "behind", "runner_error").
	Reason string `json:"reason,omitempty"`
}

// ProjectionHealth is one read model as the health view shows it.
type ProjectionHealth struct {
	Name      string `json:"name"`
	Status    string `json:"status"` // up, degraded (behind or failing) or down (no checkpoint readable)
	Position  string `json:"position"`
	Running   bool   `json:"running"`
	Leader    bool   `json:"leader"`
	CaughtUp  bool   `json:"caught_up"`
	LagEvents int    `json:"lag_events"`
	LagCapped bool   `json:"lag_capped,omitempty"`
	Failing   bool   `json:"failing"`
	Rebuild   string `json:"rebuild"`
}

// SystemHealth is GET /api/system/health.
type SystemHealth struct {
	// Status is healthy when every component is up, else degraded.
	Status     string                     `json:"status"`
	CheckedAt  time.Time                  `json:"checked_at"`
	Components map[string]ComponentHealth `json:"components"`
	// Projections lists each read model.
	Projections []ProjectionHealth `json:"projections"`
}

// DefaultHealthTimeout bounds each component probe.
const DefaultHealthTimeout = 2 * time.Second

// SystemOptions configures System.
type SystemOptions struct {
	// Checks are the probed components besides the projections (the
	// database, the event store: see EventStoreCheck).
	Checks []ComponentCheck
	// Projections reports the read models.
	Projections ProjectionMonitor
	// Timeout bounds each probe (DefaultHealthTimeout when zero).
	Timeout time.Duration
	Clock   Clock // defaults to SystemClock
	Logger  *slog.Logger
}

// System answers the system queries.
type System struct {
	opts SystemOptions
}

// NewSystem builds the system queries. It panics when Projections is nil
// or a check has no name or function (wiring bugs).
func NewSystem(o SystemOptions) *System {
	if o.Projections == nil {
		panic("application: NewSystem needs Projections")
	}
	seen := map[string]bool{"projections": true}
	for _, c := range o.Checks {
		if c.Name == "" || c.Check == nil || seen[c.Name] {
			panic(fmt.Sprintf("application: NewSystem: check %q needs a unique name and a function", c.Name))
		}
		seen[c.Name] = true
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultHealthTimeout
	}
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &System{opts: o}
}

// EventStoreCheck returns a check that reads the first event of the log: it
// fails when the event store cannot be read.
func EventStoreCheck(store eventstore.Store) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, _, err := store.ReadAll(ctx, eventstore.Start, 1, eventstore.Filter{})
		return err
	}
}

// Health probes every component concurrently, each within the timeout, and
// reports the read models (user, manager, admin, auditor).
func (s *System) Health(ctx context.Context) (SystemHealth, error) {
	if _, err := rbac.Authorize(ctx, rbac.SystemRead); err != nil {
		return SystemHealth{}, err
	}
	out := SystemHealth{
		Status:      HealthHealthy,
		CheckedAt:   s.opts.Clock.Now().UTC(),
		Components:  make(map[string]ComponentHealth, len(s.opts.Checks)+1),
		Projections: []ProjectionHealth{},
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, c := range s.opts.Checks {
		wg.Go(func() {
			h := s.probe(ctx, c.Name, c.Check)
			mu.Lock()
			out.Components[c.Name] = h
			mu.Unlock()
		})
	}
	var statuses []ProjectionStatus
	proj := s.probe(ctx, "projections", func(ctx context.Context) error {
		var err error
		statuses, err = s.opts.Projections.ProjectionStatuses(ctx)
		return err
	})
	wg.Wait()
	if proj.Status == HealthUp {
		for _, st := range statuses {
			ph := ProjectionHealth{
				Name: st.Name, Status: HealthUp, Position: st.Position, Running: st.Running, Leader: st.Leader,
				CaughtUp: st.CaughtUp, LagEvents: st.LagEvents, LagCapped: st.LagCapped,
				Failing: st.LastError != "", Rebuild: st.Rebuild.State,
			}
			switch {
			case ph.Failing:
				ph.Status = HealthDegraded
				proj.Status, proj.Reason = HealthDegraded, "runner_error"
			case !st.CaughtUp:
				ph.Status = HealthDegraded
				if proj.Status == HealthUp {
					proj.Status, proj.Reason = HealthDegraded, "behind"
				}
			}
			out.Projections = append(out.Projections, ph)
		}
	}
	out.Components["projections"] = proj
	for _, c := range out.Components {
		if c.Status != HealthUp {
			out.Status = HealthDegraded
		}
	}
	return out, nil
}

func (s *System) probe(ctx context.Context, name string, check func(context.Context) error) ComponentHealth {
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	start := time.Now()
	err := check(cctx)
	h := ComponentHealth{Status: HealthUp, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		h.Status, h.Reason = HealthDown, "failed"
		if errors.Is(err, context.DeadlineExceeded) {
			h.Reason = "timeout"
		}
		s.opts.Logger.WarnContext(ctx, "system health: component down", slog.String("component", name), slog.Any("error", err))
	}
	return h
}
