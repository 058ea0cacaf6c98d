package worker

import "fmt"

// Status is the worker's lifecycle status: a real state machine whose
// transitions are driven by commands (intent) and EC2 observations (truth).
type Status string

// Worker statuses (DESIGN.md section 5).
const (
	StatusProvisioning Status = "provisioning" // created; launch requested
	StatusPending      Status = "pending"      // EC2 instance launching or starting
	StatusRunning      Status = "running"      // EC2 running
	StatusStopping     Status = "stopping"     // stop requested or observed
	StatusStopped      Status = "stopped"      // EC2 stopped
	StatusTerminating  Status = "terminating"  // terminate requested or shutting-down observed
	StatusTerminated   Status = "terminated"   // instance gone; terminal
	StatusFailed       Status = "failed"       // launch failed; may be retried or terminated
	StatusRemoved      Status = "removed"      // no longer managed; terminal
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{
	StatusProvisioning, StatusPending, StatusRunning, StatusStopping, StatusStopped,
	StatusTerminating, StatusTerminated, StatusFailed, StatusRemoved,
}

// ParseStatus validates a status name.
func ParseStatus(s string) (Status, error) {
	for _, st := range Statuses {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown worker status %q", s)
}

// Terminal reports whether no further lifecycle change can happen.
func (s Status) Terminal() bool { return s == StatusTerminated || s == StatusRemoved }

// EC2State is an instance state as EC2 reports it, plus NotFound for an
// instance EC2 no longer knows.
type EC2State string

// EC2 instance states.
const (
	EC2Pending      EC2State = "pending"
	EC2Running      EC2State = "running"
	EC2Stopping     EC2State = "stopping"
	EC2Stopped      EC2State = "stopped"
	EC2ShuttingDown EC2State = "shutting-down"
	EC2Terminated   EC2State = "terminated"
	EC2NotFound     EC2State = "not-found"
)

// ParseEC2State validates an EC2 state name.
func ParseEC2State(s string) (EC2State, error) {
	switch st := EC2State(s); st {
	case EC2Pending, EC2Running, EC2Stopping, EC2Stopped, EC2ShuttingDown, EC2Terminated, EC2NotFound:
		return st, nil
	}
	return "", fmt.Errorf("unknown EC2 instance state %q", s)
}

// status maps an EC2 state to the worker status it implies.
func (s EC2State) status() Status {
	switch s {
	case EC2Pending:
		return StatusPending
	case EC2Running:
		return StatusRunning
	case EC2Stopping:
		return StatusStopping
	case EC2Stopped:
		return StatusStopped
	case EC2ShuttingDown:
		return StatusTerminating
	default: // terminated, not-found
		return StatusTerminated
	}
}

// Intent is a lifecycle change that was requested and is not complete yet.
// While an intent is open, observations of the state before the request are
// the request still being in flight, not a change.
type Intent string

// Intents.
const (
	IntentNone      Intent = ""
	IntentLaunch    Intent = "launch"
	IntentStart     Intent = "start"
	IntentStop      Intent = "stop"
	IntentTerminate Intent = "terminate"
)

// transition is the pure rule shared by commands (to decide and to mark
// external changes) and apply (to evolve state): given the current status,
// the open intent and an observed EC2 state, it returns the new status, the
// intent left open, and whether the change was not requested by anybody.
func transition(cur Status, intent Intent, observed EC2State) (next Status, open Intent, external bool) {
	target := observed.status()
	switch intent {
	case IntentLaunch:
		switch observed {
		case EC2Pending:
			return StatusPending, IntentLaunch, false
		case EC2Running:
			return StatusRunning, IntentNone, false
		}
	case IntentStart:
		switch observed {
		case EC2Stopped: // StartInstances not done yet
			return cur, IntentStart, false
		case EC2Pending:
			return StatusPending, IntentStart, false
		case EC2Running:
			return StatusRunning, IntentNone, false
		}
	case IntentStop:
		switch observed {
		case EC2Running, EC2Pending: // StopInstances not done yet
			return cur, IntentStop, false
		case EC2Stopping:
			return StatusStopping, IntentStop, false
		case EC2Stopped:
			return StatusStopped, IntentNone, false
		}
	case IntentTerminate:
		switch observed {
		case EC2Pending, EC2Running, EC2Stopping, EC2Stopped: // TerminateInstances not done yet
			return cur, IntentTerminate, false
		case EC2ShuttingDown:
			return StatusTerminating, IntentTerminate, false
		default:
			return StatusTerminated, IntentNone, false
		}
	}
	// No intent, or an observation off the requested path: EC2 is the truth
	// and nobody here asked for it.
	return target, IntentNone, target != cur
}

// ServiceStatus says whether the CML controller on the worker answers.
type ServiceStatus string

// CML service statuses.
const (
	ServiceUnavailable ServiceStatus = "unavailable"
	ServiceAvailable   ServiceStatus = "available"
	ServiceDegraded    ServiceStatus = "degraded"
)

// ParseServiceStatus validates a service status name.
func ParseServiceStatus(s string) (ServiceStatus, error) {
	switch st := ServiceStatus(s); st {
	case ServiceUnavailable, ServiceAvailable, ServiceDegraded:
		return st, nil
	}
	return "", fmt.Errorf("unknown service status %q", s)
}

// LicenseStatus is the CML Smart Licensing registration state.
type LicenseStatus string

// Licence statuses.
const (
	LicenseUnregistered LicenseStatus = "unregistered"
	LicenseRegistered   LicenseStatus = "registered"
	LicenseEvaluation   LicenseStatus = "evaluation"
	LicenseExpired      LicenseStatus = "expired"
	LicenseInvalid      LicenseStatus = "invalid"
)

// ParseLicenseStatus validates a licence status name.
func ParseLicenseStatus(s string) (LicenseStatus, error) {
	switch st := LicenseStatus(s); st {
	case LicenseUnregistered, LicenseRegistered, LicenseEvaluation, LicenseExpired, LicenseInvalid:
		return st, nil
	}
	return "", fmt.Errorf("unknown licence status %q", s)
}

// LicenseOperation is a licence registration or deregistration in progress.
type LicenseOperation string

// Licence operations.
const (
	LicenseOpNone       LicenseOperation = ""
	LicenseOpRegister   LicenseOperation = "register"
	LicenseOpDeregister LicenseOperation = "deregister"
)

// StopReason says why a stop was requested.
type StopReason string

// Stop reasons.
const (
	StopManual      StopReason = "manual"
	StopIdleTimeout StopReason = "idle_timeout"
	// StopExternal is never requested; it marks a stop observed on EC2 that
	// nobody here asked for.
	StopExternal StopReason = "external"
)

// LabAction is an operation on a CML lab.
type LabAction string

// Lab actions.
const (
	LabStart  LabAction = "start"
	LabStop   LabAction = "stop"
	LabWipe   LabAction = "wipe"
	LabDelete LabAction = "delete"
	LabImport LabAction = "import"
)

// ParseLabAction validates a lab action name.
func ParseLabAction(s string) (LabAction, error) {
	switch a := LabAction(s); a {
	case LabStart, LabStop, LabWipe, LabDelete, LabImport:
		return a, nil
	}
	return "", fmt.Errorf("unknown lab action %q", s)
}
