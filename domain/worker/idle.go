package worker

import (
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// Bounds of an idle timeout, global or per worker.
const (
	MinIdleTimeout = 5 * time.Minute
	MaxIdleTimeout = 7 * 24 * time.Hour
)

// IdlePolicy is the effective global idle configuration.
type IdlePolicy struct {
	Enabled bool
	Timeout time.Duration
	// Snooze is the grace period after any observed start (requested here or
	// made outside the product) during which the worker is never stopped.
	Snooze time.Duration
}

// IdleDecision explains whether the worker is idle and may be stopped, with
// every input of the decision, so operators can see why.
type IdleDecision struct {
	CheckedAt      time.Time     `json:"checked_at"`
	Status         Status        `json:"status"`
	GlobalEnabled  bool          `json:"global_enabled"`
	WorkerEnabled  bool          `json:"worker_enabled"`
	Timeout        time.Duration `json:"-"`
	TimeoutSeconds int64         `json:"timeout_seconds"`
	TimeoutSource  string        `json:"timeout_source"` // "worker" or "global"
	// Reference is the latest of: last activity, last start, creation.
	ReferenceAt   time.Time     `json:"reference_at"`
	ReferenceKind string        `json:"reference_kind"` // "activity", "start", "created"
	IdleFor       time.Duration `json:"-"`
	IdleSeconds   int64         `json:"idle_seconds"`
	SnoozeUntil   time.Time     `json:"snooze_until,omitzero"`
	InSnooze      bool          `json:"in_snooze"`
	Idle          bool          `json:"idle"`
	Eligible      bool          `json:"eligible"`
	// Reason says why the worker will not be stopped ("" when eligible).
	Reason string `json:"reason,omitempty"`
}

// IdleDecision evaluates the idle rule at now without deciding anything.
func (w *Worker) IdleDecision(now time.Time, p IdlePolicy) IdleDecision {
	s := w.s
	d := IdleDecision{
		CheckedAt: now, Status: s.Status,
		GlobalEnabled: p.Enabled, WorkerEnabled: s.IdleDetectionEnabled,
		Timeout: p.Timeout, TimeoutSource: "global",
	}
	if s.IdleTimeoutSeconds > 0 {
		d.Timeout, d.TimeoutSource = time.Duration(s.IdleTimeoutSeconds)*time.Second, "worker"
	}
	d.TimeoutSeconds = int64(d.Timeout / time.Second)

	d.ReferenceAt, d.ReferenceKind = s.CreatedAt, "created"
	if s.LastStartedAt.After(d.ReferenceAt) {
		d.ReferenceAt, d.ReferenceKind = s.LastStartedAt, "start"
	}
	if s.LastActivityAt.After(d.ReferenceAt) {
		d.ReferenceAt, d.ReferenceKind = s.LastActivityAt, "activity"
	}
	if now.After(d.ReferenceAt) {
		d.IdleFor = now.Sub(d.ReferenceAt)
	}
	d.IdleSeconds = int64(d.IdleFor / time.Second)
	if !s.LastStartedAt.IsZero() && p.Snooze > 0 {
		d.SnoozeUntil = s.LastStartedAt.Add(p.Snooze)
		d.InSnooze = now.Before(d.SnoozeUntil)
	}
	d.Idle = d.Timeout > 0 && d.IdleFor >= d.Timeout

	switch {
	case s.Status != StatusRunning:
		d.Reason = "not running"
	case !p.Enabled:
		d.Reason = "idle detection is disabled globally"
	case !s.IdleDetectionEnabled:
		d.Reason = "idle detection is disabled for this worker"
	case d.Timeout <= 0:
		d.Reason = "no idle timeout configured"
	case d.InSnooze:
		d.Reason = "snoozed after a start"
	case !d.Idle:
		d.Reason = "active recently"
	case s.Intent != IntentNone:
		d.Reason = "a " + string(s.Intent) + " is in progress"
	case s.LicenseOperation != LicenseOpNone:
		d.Reason = "a licence " + string(s.LicenseOperation) + " is in progress"
	case len(s.PendingLabActions) > 0:
		d.Reason = "a lab action is in progress"
	default:
		d.Eligible = true
	}
	return d
}

// StopIfIdle stops the worker when the idle rule says so: it returns
// IdleDetected followed by a stop with reason idle_timeout, and the decision.
func (w *Worker) StopIfIdle(now time.Time, p IdlePolicy) ([]domain.Event, IdleDecision, error) {
	if err := w.mustExist(); err != nil {
		return nil, IdleDecision{}, err
	}
	d := w.IdleDecision(now, p)
	if !d.Eligible {
		return nil, d, nil
	}
	return []domain.Event{
		IdleDetected{IdleSince: d.ReferenceAt.UTC(), IdleSeconds: d.IdleSeconds, TimeoutSeconds: d.TimeoutSeconds},
		StopRequested{Reason: StopIdleTimeout},
	}, d, nil
}
