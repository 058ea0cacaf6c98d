// Package worker is the CMLWorker aggregate: a CML controller on an EC2
// instance. Commands are methods that check the state and return events; one
// Apply evolves the state from events. The package does no I/O: time and ids
// are arguments.
package worker

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// State is everything the aggregate knows about a worker. It is what the
// worker_view read model stores, so a read model row always equals the fold
// of the worker's stream.
type State struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Region           string   `json:"region"`
	InstanceType     string   `json:"instance_type"`
	AMIID            string   `json:"ami_id,omitempty"`
	AMIName          string   `json:"ami_name,omitempty"`
	SubnetID         string   `json:"subnet_id,omitempty"`
	SecurityGroupIDs []string `json:"security_group_ids,omitempty"`
	KeyName          string   `json:"key_name,omitempty"`
	Imported         bool     `json:"imported"`
	InstanceID       string   `json:"instance_id,omitempty"`
	Status           Status   `json:"status"`
	Intent           Intent   `json:"intent,omitempty"`
	// IntentFrom and IntentPrev are the status and intent before the open
	// intent was requested, restored when it fails before EC2 reported
	// anything.
	IntentFrom         Status            `json:"intent_from,omitempty"`
	IntentPrev         Intent            `json:"intent_prev,omitempty"`
	EC2State           EC2State          `json:"ec2_state,omitempty"`
	PublicIP           string            `json:"public_ip,omitempty"`
	PrivateIP          string            `json:"private_ip,omitempty"`
	SystemStatus       string            `json:"system_status,omitempty"`
	InstanceStatus     string            `json:"instance_status,omitempty"`
	Endpoint           string            `json:"endpoint,omitempty"`
	Tags               map[string]string `json:"tags"`
	DetailedMonitoring bool              `json:"detailed_monitoring"`
	LaunchAttempt      int               `json:"launch_attempt"`
	LastFailure        *Failure          `json:"last_failure,omitempty"`

	Service    ServiceStatus `json:"service_status"`
	CMLVersion string        `json:"cml_version,omitempty"`
	CMLReady   bool          `json:"cml_ready"`

	License          LicenseStatus    `json:"license_status"`
	LicenseOperation LicenseOperation `json:"license_operation,omitempty"`
	LicenseFailure   *Failure         `json:"license_failure,omitempty"`

	IdleDetectionEnabled bool       `json:"idle_detection_enabled"`
	IdleTimeoutSeconds   int64      `json:"idle_timeout_seconds,omitempty"`
	LastActivityAt       time.Time  `json:"last_activity_at,omitzero"`
	LastIdleDetectedAt   time.Time  `json:"last_idle_detected_at,omitzero"`
	StopReason           StopReason `json:"stop_reason,omitempty"`
	AutoStopCount        int        `json:"auto_stop_count"`
	ManualStopCount      int        `json:"manual_stop_count"`
	ExternalStopCount    int        `json:"external_stop_count"`
	StartCount           int        `json:"start_count"`
	ExternalStartCount   int        `json:"external_start_count"`

	PendingLabActions map[string]PendingLabAction `json:"pending_lab_actions,omitempty"`

	CreatedAt          time.Time `json:"created_at,omitzero"`
	UpdatedAt          time.Time `json:"updated_at,omitzero"`
	StartRequestedAt   time.Time `json:"start_requested_at,omitzero"`
	StopRequestedAt    time.Time `json:"stop_requested_at,omitzero"`
	LastStartedAt      time.Time `json:"last_started_at,omitzero"`
	LastStoppedAt      time.Time `json:"last_stopped_at,omitzero"` // when EC2 was last seen stopped
	TerminationAskedAt time.Time `json:"termination_requested_at,omitzero"`
	TerminatedAt       time.Time `json:"terminated_at,omitzero"`
	RemovedAt          time.Time `json:"removed_at,omitzero"`
}

// Failure records the last failed operation.
type Failure struct {
	Operation string    `json:"operation"`
	Code      string    `json:"code"`
	Message   string    `json:"message"`
	At        time.Time `json:"at"`
}

// PendingLabAction is a lab operation requested and not finished yet.
type PendingLabAction struct {
	Action      LabAction `json:"action"`
	LabID       string    `json:"lab_id,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
}

// Worker is the aggregate. The zero value is a worker that does not exist
// yet: only Create and Import are allowed on it.
type Worker struct {
	s       State
	version int64 // revision of the last applied event; -1 when new
	exists  bool
}

// New returns a worker that does not exist yet.
func New() *Worker { return &Worker{version: -1} }

// FromState rebuilds an aggregate from a stored state and the revision of the
// last event folded into it (as kept by a read model).
func FromState(s State, version int64) *Worker {
	return &Worker{s: s.clone(), version: version, exists: s.ID != ""}
}

// Rehydrate folds a stream's events into a new aggregate. times[i] is the
// occurred-at of events[i].
func Rehydrate(events []domain.Event, times []time.Time) (*Worker, error) {
	if len(events) != len(times) {
		return nil, fmt.Errorf("rehydrate: %d events but %d times", len(events), len(times))
	}
	w := New()
	for i, e := range events {
		if err := w.Apply(e, times[i]); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Exists reports whether the worker has been created or imported.
func (w *Worker) Exists() bool { return w.exists }

// Version is the revision of the last applied event, -1 for a new worker.
func (w *Worker) Version() int64 { return w.version }

// ID returns the worker id.
func (w *Worker) ID() string { return w.s.ID }

// Status returns the lifecycle status.
func (w *Worker) Status() Status { return w.s.Status }

// State returns a copy of the state.
func (w *Worker) State() State { return w.s.clone() }

func (s State) clone() State {
	c := s
	c.SecurityGroupIDs = slices.Clone(s.SecurityGroupIDs)
	c.Tags = maps.Clone(s.Tags)
	c.PendingLabActions = maps.Clone(s.PendingLabActions)
	if s.LastFailure != nil {
		f := *s.LastFailure
		c.LastFailure = &f
	}
	if s.LicenseFailure != nil {
		f := *s.LicenseFailure
		c.LicenseFailure = &f
	}
	return c
}

// Apply evolves the state by one event that occurred at the given time. It is
// the only place state changes, used both when loading the aggregate and by
// the read model.
func (w *Worker) Apply(e domain.Event, at time.Time) error {
	s := &w.s
	switch e := e.(type) {
	case Created:
		*s = State{
			ID: e.WorkerID, Name: e.Name, Region: e.Region, InstanceType: e.InstanceType,
			AMIID: e.AMIID, AMIName: e.AMIName, SubnetID: e.SubnetID,
			SecurityGroupIDs: slices.Clone(e.SecurityGroupIDs), KeyName: e.KeyName,
			Tags: maps.Clone(e.Tags), DetailedMonitoring: e.DetailedMonitoring,
			IdleDetectionEnabled: e.IdleDetectionEnabled,
			Status:               StatusProvisioning, Intent: IntentLaunch, LaunchAttempt: 1,
			Service: ServiceUnavailable, License: LicenseUnregistered,
			CreatedAt: at,
		}
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
		w.exists = true
	case Imported:
		*s = State{
			ID: e.WorkerID, Name: e.Name, Region: e.Region, InstanceID: e.InstanceID,
			InstanceType: e.InstanceType, AMIID: e.AMIID, AMIName: e.AMIName, Imported: true,
			EC2State: e.EC2State, Status: e.EC2State.status(),
			PublicIP: e.PublicIP, PrivateIP: e.PrivateIP, Endpoint: e.Endpoint,
			Tags: maps.Clone(e.Tags), IdleDetectionEnabled: e.IdleDetectionEnabled,
			Service: ServiceUnavailable, License: LicenseUnregistered,
			CreatedAt: at,
		}
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
		if s.Status == StatusRunning {
			s.LastStartedAt = at
		}
		w.exists = true
	case InstanceLaunched:
		s.InstanceID = e.InstanceID
		s.Status, s.Intent, s.LastFailure = StatusPending, IntentLaunch, nil
	case ProvisioningFailed:
		s.Status, s.Intent = StatusFailed, IntentNone
		s.LastFailure = &Failure{Operation: "launch", Code: e.Code, Message: e.Message, At: at}
	case ProvisioningRetried:
		s.Status, s.Intent, s.LaunchAttempt = StatusProvisioning, IntentLaunch, e.Attempt
	case StartRequested:
		w.openIntent(IntentStart)
		s.Status, s.StartRequestedAt, s.LastFailure = StatusPending, at, nil
	case StartFailed:
		w.failIntent("start", e.Code, e.Message, at)
	case StopRequested:
		w.openIntent(IntentStop)
		s.Status, s.StopRequestedAt, s.StopReason, s.LastFailure = StatusStopping, at, e.Reason, nil
		if e.Reason == StopIdleTimeout {
			s.AutoStopCount++
		} else {
			s.ManualStopCount++
		}
	case StopFailed:
		w.failIntent("stop", e.Code, e.Message, at)
	case TerminationRequested:
		w.openIntent(IntentTerminate)
		s.Status, s.TerminationAskedAt, s.LastFailure = StatusTerminating, at, nil
		// The controller is being shut down: no longer usable.
		s.Service, s.CMLReady = ServiceUnavailable, false
	case TerminationFailed:
		w.failIntent("terminate", e.Code, e.Message, at)
	case Removed:
		s.Status, s.Intent, s.IntentFrom, s.IntentPrev, s.RemovedAt = StatusRemoved, IntentNone, "", IntentNone, at
		// No longer watched: nothing is known about the controller any more.
		s.Service, s.CMLReady = ServiceUnavailable, false
	case InstanceStateObserved:
		prev := s.Status
		s.EC2State, s.PublicIP, s.PrivateIP = e.EC2State, e.PublicIP, e.PrivateIP
		s.SystemStatus, s.InstanceStatus = e.SystemStatus, e.InstanceStatus
		if e.InstanceType != "" {
			s.InstanceType = e.InstanceType
		}
		s.Status, s.Intent, _ = transition(prev, s.Intent, e.EC2State)
		if s.Intent == IntentNone {
			s.IntentFrom, s.IntentPrev = "", IntentNone
		}
		w.statusChanged(prev, e.External, at)
	case EndpointChanged:
		s.Endpoint = e.Endpoint
	case TagsChanged:
		s.Tags = maps.Clone(e.Tags)
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
	case DetailedMonitoringChanged:
		s.DetailedMonitoring = e.Enabled
	case ServiceStatusChanged:
		s.Service, s.CMLVersion, s.CMLReady = e.Status, e.Version, e.Ready
	case LicenseStatusChanged:
		s.License = e.Status
	case LicenseRegistrationRequested:
		s.LicenseOperation, s.LicenseFailure = LicenseOpRegister, nil
	case LicenseRegistrationCompleted:
		s.LicenseOperation = LicenseOpNone
		s.License = e.Status
		if s.License == "" {
			s.License = LicenseRegistered
		}
	case LicenseRegistrationFailed:
		s.LicenseOperation = LicenseOpNone
		s.LicenseFailure = &Failure{Operation: "license_register", Code: e.Code, Message: e.Message, At: at}
	case LicenseDeregistrationRequested:
		s.LicenseOperation, s.LicenseFailure = LicenseOpDeregister, nil
	case LicenseDeregistrationCompleted:
		s.LicenseOperation, s.License = LicenseOpNone, LicenseUnregistered
	case LicenseDeregistrationFailed:
		s.LicenseOperation = LicenseOpNone
		s.LicenseFailure = &Failure{Operation: "license_deregister", Code: e.Code, Message: e.Message, At: at}
	case IdleDetectionEnabled:
		s.IdleDetectionEnabled, s.IdleTimeoutSeconds = true, e.TimeoutSeconds
	case IdleDetectionDisabled:
		s.IdleDetectionEnabled = false
	case ActivityObserved:
		s.LastActivityAt = e.LastActivityAt
	case IdleDetected:
		s.LastIdleDetectedAt = at
	case LabActionRequested:
		if s.PendingLabActions == nil {
			s.PendingLabActions = map[string]PendingLabAction{}
		}
		s.PendingLabActions[e.RequestID] = PendingLabAction{Action: e.Action, LabID: e.LabID, RequestedAt: at}
	case LabActionCompleted:
		delete(s.PendingLabActions, e.RequestID)
	case LabActionFailed:
		delete(s.PendingLabActions, e.RequestID)
	case MetricsSampled, LabsObserved:
		return fmt.Errorf("worker: %s belongs on the telemetry stream, not the lifecycle stream", e.EventType())
	default:
		return fmt.Errorf("worker: cannot apply %T", e)
	}
	if len(s.PendingLabActions) == 0 {
		s.PendingLabActions = nil
	}
	s.UpdatedAt = at
	w.version++
	return nil
}

// openIntent records a requested change, remembering what it replaces.
func (w *Worker) openIntent(i Intent) {
	s := &w.s
	s.IntentFrom, s.IntentPrev, s.Intent = s.Status, s.Intent, i
}

// failIntent closes a failed start, stop or termination: the status returns
// to what EC2 last reported or, when EC2 has reported nothing yet (a launch
// that failed or was never observed), to the status and intent before the
// request.
func (w *Worker) failIntent(op, code, message string, at time.Time) {
	s := &w.s
	if s.EC2State != "" {
		s.Status, s.Intent = s.EC2State.status(), IntentNone
	} else if s.IntentFrom != "" {
		s.Status, s.Intent = s.IntentFrom, s.IntentPrev
	}
	s.IntentFrom, s.IntentPrev = "", IntentNone
	s.LastFailure = &Failure{Operation: op, Code: code, Message: message, At: at}
}

// statusChanged keeps the derived fields consistent after an observed change.
func (w *Worker) statusChanged(prev Status, external bool, at time.Time) {
	s := &w.s
	if s.Status == prev {
		return
	}
	switch s.Status {
	case StatusRunning:
		s.LastStartedAt = at
		s.StartCount++
		if external {
			s.ExternalStartCount++
		}
	case StatusStopping, StatusStopped:
		if external && (prev == StatusRunning || prev == StatusPending) {
			s.ExternalStopCount++
			s.StopReason = StopExternal
		}
		if s.Status == StatusStopped {
			s.LastStoppedAt = at
		}
	case StatusTerminated:
		s.TerminatedAt = at
	}
	if s.Status != StatusRunning {
		// Only a running controller answers; the next poll after a start says
		// whether it is available again.
		s.Service, s.CMLReady = ServiceUnavailable, false
	}
}
