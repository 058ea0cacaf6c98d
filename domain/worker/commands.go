package worker

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// Commands check the state and return the events that record the decision.
// They never change the worker: the caller appends the events and applies
// them. A command that would change nothing returns no events and no error.

func (w *Worker) mustExist() error {
	if !w.exists {
		return fmt.Errorf("worker: %w", domain.ErrNotFound)
	}
	return nil
}

// allow returns a TransitionError unless the status is one of allowed.
func (w *Worker) allow(command string, allowed ...Status) error {
	if err := w.mustExist(); err != nil {
		return err
	}
	if slices.Contains(allowed, w.s.Status) {
		return nil
	}
	return &domain.TransitionError{Command: command, State: string(w.s.Status)}
}

func illegal(command string, st Status, reason string) error {
	return &domain.TransitionError{Command: command, State: string(st), Reason: reason}
}

// CreateSpec is what a new worker is launched with. The caller resolves
// defaults (AMI of the region, instance type, network) before calling Create.
type CreateSpec struct {
	Name                 string
	Region               string
	InstanceType         string
	AMIID                string
	AMIName              string
	SubnetID             string
	SecurityGroupIDs     []string
	KeyName              string
	Tags                 map[string]string
	DetailedMonitoring   bool
	IdleDetectionEnabled bool
}

// Create creates the worker and requests its launch.
func (w *Worker) Create(id string, spec CreateSpec) ([]domain.Event, error) {
	if w.exists {
		return nil, fmt.Errorf("worker %s: %w", w.s.ID, domain.ErrAlreadyExists)
	}
	var p domain.Problems
	if id == "" {
		p.Add("id", "is required")
	}
	checkName(&p, "name", spec.Name)
	checkRegion(&p, spec.Region)
	if !ValidInstanceType(spec.InstanceType) {
		p.Add("instance_type", "%q is not an EC2 instance type", spec.InstanceType)
	}
	if !ValidAMIID(spec.AMIID) {
		p.Add("ami_id", "%q is not an AMI id (no default AMI configured for the region?)", spec.AMIID)
	}
	if spec.SubnetID != "" && !ValidSubnetID(spec.SubnetID) {
		p.Add("subnet_id", "%q is not a subnet id", spec.SubnetID)
	}
	for _, sg := range spec.SecurityGroupIDs {
		if !ValidSecurityGroupID(sg) {
			p.Add("security_group_ids", "%q is not a security group id", sg)
		}
	}
	if len(spec.KeyName) > 255 {
		p.Add("key_name", "is longer than 255 characters")
	}
	CheckTags(&p, "tags", spec.Tags)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return []domain.Event{Created{
		WorkerID: id, Name: spec.Name, Region: spec.Region, InstanceType: spec.InstanceType,
		AMIID: spec.AMIID, AMIName: spec.AMIName, SubnetID: spec.SubnetID,
		SecurityGroupIDs: slices.Clone(spec.SecurityGroupIDs), KeyName: spec.KeyName,
		Tags: maps.Clone(spec.Tags), DetailedMonitoring: spec.DetailedMonitoring,
		IdleDetectionEnabled: spec.IdleDetectionEnabled,
	}}, nil
}

// ImportSpec describes an existing instance as EC2 reports it. The caller
// looks the instance up; the domain decides whether it can be imported.
type ImportSpec struct {
	Name                 string
	Region               string
	InstanceID           string
	InstanceType         string
	AMIID                string
	AMIName              string
	EC2State             EC2State
	PublicIP             string
	PrivateIP            string
	Endpoint             string
	Tags                 map[string]string
	IdleDetectionEnabled bool
}

// Import makes an existing instance a managed worker. Instances that are
// terminated or shutting down are refused.
func (w *Worker) Import(id string, spec ImportSpec) ([]domain.Event, error) {
	if w.exists {
		return nil, fmt.Errorf("worker %s: %w", w.s.ID, domain.ErrAlreadyExists)
	}
	var p domain.Problems
	if id == "" {
		p.Add("id", "is required")
	}
	if spec.Name == "" {
		spec.Name = spec.Tags["Name"]
	}
	if spec.Name == "" {
		spec.Name = "worker-" + spec.InstanceID
	}
	checkName(&p, "name", spec.Name)
	checkRegion(&p, spec.Region)
	if !ValidInstanceID(spec.InstanceID) {
		p.Add("instance_id", "%q is not an EC2 instance id", spec.InstanceID)
	}
	if spec.InstanceType != "" && !ValidInstanceType(spec.InstanceType) {
		p.Add("instance_type", "%q is not an EC2 instance type", spec.InstanceType)
	}
	if spec.AMIID != "" && !ValidAMIID(spec.AMIID) {
		p.Add("ami_id", "%q is not an AMI id", spec.AMIID)
	}
	switch spec.EC2State {
	case EC2Pending, EC2Running, EC2Stopping, EC2Stopped:
	case EC2ShuttingDown, EC2Terminated, EC2NotFound:
		p.Add("instance_id", "instance %s is %s and cannot be imported", spec.InstanceID, spec.EC2State)
	default:
		p.Add("ec2_state", "unknown EC2 state %q", spec.EC2State)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return []domain.Event{Imported{
		WorkerID: id, Name: spec.Name, Region: spec.Region, InstanceID: spec.InstanceID,
		InstanceType: spec.InstanceType, AMIID: spec.AMIID, AMIName: spec.AMIName,
		EC2State: spec.EC2State, PublicIP: spec.PublicIP, PrivateIP: spec.PrivateIP,
		Endpoint: spec.Endpoint, Tags: maps.Clone(spec.Tags),
		IdleDetectionEnabled: spec.IdleDetectionEnabled,
	}}, nil
}

// RecordInstanceLaunched records the instance RunInstances returned.
func (w *Worker) RecordInstanceLaunched(instanceID string) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if !ValidInstanceID(instanceID) {
		return nil, (&domain.Problems{{Field: "instance_id", Message: fmt.Sprintf("%q is not an EC2 instance id", instanceID)}}).Err()
	}
	if w.s.Status == StatusRemoved {
		return nil, illegal("record launch", w.s.Status, "")
	}
	if w.s.InstanceID == instanceID {
		return nil, nil // the job reported it twice
	}
	if w.s.InstanceID != "" {
		return nil, illegal("record launch", w.s.Status, "the worker already has instance "+w.s.InstanceID)
	}
	if err := w.allow("record launch", StatusProvisioning, StatusFailed); err != nil {
		return nil, err
	}
	return []domain.Event{InstanceLaunched{InstanceID: instanceID, Attempt: w.s.LaunchAttempt}}, nil
}

// RecordProvisioningFailed records that the launch failed permanently.
func (w *Worker) RecordProvisioningFailed(code, message string) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if code == "" {
		return nil, (&domain.Problems{{Field: "code", Message: "is required"}}).Err()
	}
	if w.s.Status == StatusFailed {
		return nil, nil
	}
	if err := w.allow("record launch failure", StatusProvisioning); err != nil {
		return nil, err
	}
	return []domain.Event{ProvisioningFailed{Code: code, Message: truncate(message), Attempt: w.s.LaunchAttempt}}, nil
}

// RetryProvisioning launches a failed worker again.
func (w *Worker) RetryProvisioning() ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if w.s.Status == StatusProvisioning {
		return nil, nil
	}
	if err := w.allow("retry provisioning", StatusFailed); err != nil {
		return nil, err
	}
	if w.s.InstanceID != "" {
		return nil, illegal("retry provisioning", w.s.Status, "the worker already has instance "+w.s.InstanceID)
	}
	return []domain.Event{ProvisioningRetried{Attempt: w.s.LaunchAttempt + 1}}, nil
}

// RequestStart asks to start a stopped worker. Starting a worker that is
// running or already starting changes nothing.
func (w *Worker) RequestStart() ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	switch w.s.Status {
	case StatusRunning, StatusPending:
		return nil, nil
	case StatusStopping:
		return nil, illegal("start", w.s.Status, "wait until the instance has stopped")
	}
	if err := w.allow("start", StatusStopped); err != nil {
		return nil, err
	}
	return []domain.Event{StartRequested{}}, nil
}

// RecordStartFailed closes a start that failed.
func (w *Worker) RecordStartFailed(code, message string) ([]domain.Event, error) {
	return w.recordIntentFailed(IntentStart, code, message, func() domain.Event {
		return StartFailed{Code: code, Message: truncate(message)}
	})
}

// RequestStop asks to stop a running worker. Stopping a stopped or stopping
// worker changes nothing. Idle stops go through StopIfIdle.
func (w *Worker) RequestStop(reason StopReason) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if reason != StopManual {
		return nil, (&domain.Problems{{Field: "reason", Message: fmt.Sprintf("%q cannot be requested; idle stops come from idle detection", reason)}}).Err()
	}
	switch w.s.Status {
	case StatusStopped, StatusStopping:
		return nil, nil
	case StatusPending:
		return nil, illegal("stop", w.s.Status, "wait until the instance is running")
	}
	if err := w.allow("stop", StatusRunning); err != nil {
		return nil, err
	}
	return []domain.Event{StopRequested{Reason: reason}}, nil
}

// RecordStopFailed closes a stop that failed.
func (w *Worker) RecordStopFailed(code, message string) ([]domain.Event, error) {
	return w.recordIntentFailed(IntentStop, code, message, func() domain.Event {
		return StopFailed{Code: code, Message: truncate(message)}
	})
}

// RequestTermination asks to terminate the instance.
func (w *Worker) RequestTermination() ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	switch w.s.Status {
	case StatusTerminating, StatusTerminated:
		return nil, nil
	case StatusProvisioning:
		return nil, illegal("terminate", w.s.Status, "the launch is in progress; terminate once it succeeded or failed")
	}
	if err := w.allow("terminate", StatusPending, StatusRunning, StatusStopping, StatusStopped, StatusFailed); err != nil {
		return nil, err
	}
	return []domain.Event{TerminationRequested{}}, nil
}

// RecordTerminationFailed closes a termination that failed.
func (w *Worker) RecordTerminationFailed(code, message string) ([]domain.Event, error) {
	return w.recordIntentFailed(IntentTerminate, code, message, func() domain.Event {
		return TerminationFailed{Code: code, Message: truncate(message)}
	})
}

func (w *Worker) recordIntentFailed(intent Intent, code, message string, event func() domain.Event) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if code == "" {
		return nil, (&domain.Problems{{Field: "code", Message: "is required"}}).Err()
	}
	if w.s.Status == StatusRemoved {
		return nil, illegal("record "+string(intent)+" failure", w.s.Status, "")
	}
	if w.s.Intent != intent {
		return nil, nil // stale: the request already completed or failed
	}
	return []domain.Event{event()}, nil
}

// Remove stops managing the worker; the instance is left as it is.
func (w *Worker) Remove() ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	switch w.s.Status {
	case StatusRemoved:
		return nil, nil
	case StatusProvisioning:
		return nil, illegal("remove", w.s.Status, "the launch is in progress; remove once it succeeded or failed")
	}
	return []domain.Event{Removed{}}, nil
}

// Observation is what EC2 reports about the worker's instance. Tags is nil
// when tags were not read. Endpoint is the CML endpoint the caller derives
// from the addresses ("" when the instance has none).
type Observation struct {
	InstanceID     string
	State          EC2State
	PublicIP       string
	PrivateIP      string
	InstanceType   string
	SystemStatus   string
	InstanceStatus string
	Endpoint       string
	Tags           map[string]string
}

// ObserveInstance records what EC2 reports, only where it differs from what
// is known. A steady instance produces no event.
func (w *Worker) ObserveInstance(o Observation) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if _, err := ParseEC2State(string(o.State)); err != nil {
		return nil, (&domain.Problems{{Field: "state", Message: err.Error()}}).Err()
	}
	if o.InstanceID != "" && !ValidInstanceID(o.InstanceID) {
		return nil, (&domain.Problems{{Field: "instance_id", Message: fmt.Sprintf("%q is not an EC2 instance id", o.InstanceID)}}).Err()
	}
	s := w.s
	switch {
	case s.Status == StatusRemoved:
		return nil, illegal("observe instance", s.Status, "the worker is no longer managed")
	case s.Status == StatusTerminated:
		return nil, nil
	case o.InstanceID != "" && s.InstanceID != "" && o.InstanceID != s.InstanceID:
		return nil, illegal("observe instance", s.Status, fmt.Sprintf("observed %s but the worker's instance is %s", o.InstanceID, s.InstanceID))
	}

	var events []domain.Event
	if s.InstanceID == "" {
		switch {
		case o.InstanceID != "" && (s.Status == StatusProvisioning || s.Status == StatusFailed):
			// The launch succeeded although its outcome was not recorded (or
			// was recorded as a failure): adopt the instance.
			events = append(events, InstanceLaunched{InstanceID: o.InstanceID, Attempt: s.LaunchAttempt})
			s.Status, s.Intent = StatusPending, IntentLaunch
		case o.State == EC2NotFound && s.Status == StatusTerminating:
			// Terminating a worker that never had an instance.
		default:
			return nil, nil // nothing launched yet: nothing to observe
		}
	}

	obs := InstanceStateObserved{
		EC2State: o.State, PublicIP: o.PublicIP, PrivateIP: o.PrivateIP,
		InstanceType: o.InstanceType, SystemStatus: o.SystemStatus, InstanceStatus: o.InstanceStatus,
	}
	if obs.InstanceType == "" {
		obs.InstanceType = s.InstanceType
	}
	next, _, external := transition(s.Status, s.Intent, o.State)
	obs.External = external && next != s.Status
	if obs.EC2State != s.EC2State || obs.PublicIP != s.PublicIP || obs.PrivateIP != s.PrivateIP ||
		obs.InstanceType != s.InstanceType || obs.SystemStatus != s.SystemStatus ||
		obs.InstanceStatus != s.InstanceStatus || next != s.Status {
		events = append(events, obs)
	}
	if o.Endpoint != s.Endpoint && next != StatusTerminated {
		events = append(events, EndpointChanged{Endpoint: o.Endpoint})
	}
	if o.Tags != nil && !maps.Equal(o.Tags, s.Tags) && next != StatusTerminated {
		events = append(events, TagsChanged{Tags: maps.Clone(o.Tags), External: true})
	}
	return events, nil
}

// ReplaceTags sets the worker's tags to exactly the given map, keeping the
// product's reserved tags.
func (w *Worker) ReplaceTags(tags map[string]string) ([]domain.Event, error) {
	if err := w.allow("change tags", StatusProvisioning, StatusPending, StatusRunning, StatusStopping, StatusStopped, StatusFailed); err != nil {
		return nil, err
	}
	var p domain.Problems
	user := map[string]string{}
	for k, v := range tags {
		if (k == TagManagedBy || k == TagWorkerID) && w.s.Tags[k] == v {
			continue // echoing the reserved tags back is fine
		}
		user[k] = v
	}
	CheckTags(&p, "tags", user)
	if err := p.Err(); err != nil {
		return nil, err
	}
	next := maps.Clone(user)
	for _, k := range []string{TagManagedBy, TagWorkerID} {
		if v, ok := w.s.Tags[k]; ok {
			next[k] = v
		}
	}
	if maps.Equal(next, w.s.Tags) {
		return nil, nil
	}
	return []domain.Event{TagsChanged{Tags: next}}, nil
}

// SetDetailedMonitoring switches detailed CloudWatch monitoring.
func (w *Worker) SetDetailedMonitoring(enabled bool) ([]domain.Event, error) {
	if err := w.allow("change detailed monitoring", StatusProvisioning, StatusPending, StatusRunning, StatusStopping, StatusStopped, StatusFailed); err != nil {
		return nil, err
	}
	if w.s.DetailedMonitoring == enabled {
		return nil, nil
	}
	return []domain.Event{DetailedMonitoringChanged{Enabled: enabled}}, nil
}

var idleDetectionStatuses = []Status{StatusProvisioning, StatusPending, StatusRunning, StatusStopping, StatusStopped, StatusTerminating, StatusFailed}

// EnableIdleDetection lets idle detection stop the worker. A positive timeout
// overrides the global idle timeout for this worker; zero uses the global one.
func (w *Worker) EnableIdleDetection(timeout time.Duration) ([]domain.Event, error) {
	if err := w.allow("enable idle detection", idleDetectionStatuses...); err != nil {
		return nil, err
	}
	if timeout < 0 || (timeout > 0 && (timeout < MinIdleTimeout || timeout > MaxIdleTimeout)) {
		return nil, (&domain.Problems{{Field: "timeout", Message: fmt.Sprintf("must be 0 (global timeout) or between %s and %s", MinIdleTimeout, MaxIdleTimeout)}}).Err()
	}
	secs := int64(timeout / time.Second)
	if w.s.IdleDetectionEnabled && w.s.IdleTimeoutSeconds == secs {
		return nil, nil
	}
	return []domain.Event{IdleDetectionEnabled{TimeoutSeconds: secs}}, nil
}

// DisableIdleDetection opts the worker out of idle auto-stop.
func (w *Worker) DisableIdleDetection() ([]domain.Event, error) {
	if err := w.allow("disable idle detection", idleDetectionStatuses...); err != nil {
		return nil, err
	}
	if !w.s.IdleDetectionEnabled {
		return nil, nil
	}
	return []domain.Event{IdleDetectionDisabled{}}, nil
}

// serviceObservable: only an instance that is up can have a CML service; an
// observation in another status is stale and ignored.
func (w *Worker) serviceObservable(command string) (bool, error) {
	if err := w.mustExist(); err != nil {
		return false, err
	}
	switch w.s.Status {
	case StatusRemoved:
		return false, illegal(command, w.s.Status, "the worker is no longer managed")
	case StatusPending, StatusRunning, StatusStopping:
		return true, nil
	}
	return false, nil
}

// ObserveService records the CML controller's reachability and version.
func (w *Worker) ObserveService(status ServiceStatus, version string, ready bool) ([]domain.Event, error) {
	if _, err := ParseServiceStatus(string(status)); err != nil {
		return nil, (&domain.Problems{{Field: "status", Message: err.Error()}}).Err()
	}
	ok, err := w.serviceObservable("observe service")
	if !ok || err != nil {
		return nil, err
	}
	if status == ServiceUnavailable {
		version, ready = w.s.CMLVersion, false
	}
	if status == w.s.Service && version == w.s.CMLVersion && ready == w.s.CMLReady {
		return nil, nil
	}
	return []domain.Event{ServiceStatusChanged{Status: status, Version: version, Ready: ready}}, nil
}

// ObserveLicense records the licence status CML reports.
func (w *Worker) ObserveLicense(status LicenseStatus) ([]domain.Event, error) {
	if _, err := ParseLicenseStatus(string(status)); err != nil {
		return nil, (&domain.Problems{{Field: "status", Message: err.Error()}}).Err()
	}
	ok, err := w.serviceObservable("observe licence")
	if !ok || err != nil {
		return nil, err
	}
	if status == w.s.License {
		return nil, nil
	}
	return []domain.Event{LicenseStatusChanged{Status: status}}, nil
}

// RequestLicenseRegistration asks to register the CML licence. The token is
// passed sealed; fingerprint identifies it without revealing it.
func (w *Worker) RequestLicenseRegistration(reregister bool, fingerprint, sealedToken string) ([]domain.Event, error) {
	if err := w.licenseRequestAllowed("register licence"); err != nil {
		return nil, err
	}
	var p domain.Problems
	if fingerprint == "" {
		p.Add("token_fingerprint", "is required")
	}
	if sealedToken == "" {
		p.Add("token", "is required")
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	if w.s.License == LicenseRegistered && !reregister {
		return nil, illegal("register licence", w.s.Status, "the licence is already registered; ask for a re-registration")
	}
	return []domain.Event{LicenseRegistrationRequested{Reregister: reregister, TokenFingerprint: fingerprint, SealedToken: sealedToken}}, nil
}

// RequestLicenseDeregistration asks to deregister the CML licence.
func (w *Worker) RequestLicenseDeregistration() ([]domain.Event, error) {
	if err := w.licenseRequestAllowed("deregister licence"); err != nil {
		return nil, err
	}
	return []domain.Event{LicenseDeregistrationRequested{}}, nil
}

func (w *Worker) licenseRequestAllowed(command string) error {
	if err := w.mustExist(); err != nil {
		return err
	}
	if w.s.Status != StatusRunning {
		return illegal(command, w.s.Status, "the worker must be running")
	}
	if w.s.LicenseOperation != LicenseOpNone {
		return illegal(command, w.s.Status, "a licence "+string(w.s.LicenseOperation)+" operation is in progress")
	}
	return nil
}

// RecordLicenseRegistrationCompleted closes a registration that succeeded.
func (w *Worker) RecordLicenseRegistrationCompleted(status LicenseStatus, smartAccount, virtualAccount string) ([]domain.Event, error) {
	if status == "" {
		status = LicenseRegistered
	}
	if _, err := ParseLicenseStatus(string(status)); err != nil {
		return nil, (&domain.Problems{{Field: "status", Message: err.Error()}}).Err()
	}
	return w.recordLicenseOutcome(LicenseOpRegister, func() domain.Event {
		return LicenseRegistrationCompleted{Status: status, SmartAccount: smartAccount, VirtualAccount: virtualAccount}
	})
}

// RecordLicenseRegistrationFailed closes a registration that failed.
func (w *Worker) RecordLicenseRegistrationFailed(code, message string) ([]domain.Event, error) {
	if code == "" {
		return nil, (&domain.Problems{{Field: "code", Message: "is required"}}).Err()
	}
	return w.recordLicenseOutcome(LicenseOpRegister, func() domain.Event {
		return LicenseRegistrationFailed{Code: code, Message: truncate(message)}
	})
}

// RecordLicenseDeregistrationCompleted closes a deregistration that succeeded.
func (w *Worker) RecordLicenseDeregistrationCompleted(message string) ([]domain.Event, error) {
	return w.recordLicenseOutcome(LicenseOpDeregister, func() domain.Event {
		return LicenseDeregistrationCompleted{Message: truncate(message)}
	})
}

// RecordLicenseDeregistrationFailed closes a deregistration that failed.
func (w *Worker) RecordLicenseDeregistrationFailed(code, message string) ([]domain.Event, error) {
	if code == "" {
		return nil, (&domain.Problems{{Field: "code", Message: "is required"}}).Err()
	}
	return w.recordLicenseOutcome(LicenseOpDeregister, func() domain.Event {
		return LicenseDeregistrationFailed{Code: code, Message: truncate(message)}
	})
}

func (w *Worker) recordLicenseOutcome(op LicenseOperation, event func() domain.Event) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if w.s.Status == StatusRemoved {
		return nil, illegal("record licence outcome", w.s.Status, "the worker is no longer managed")
	}
	if w.s.LicenseOperation != op {
		return nil, nil // stale or repeated outcome
	}
	return []domain.Event{event()}, nil
}

// ObserveActivity records user activity seen on the controller, only when it
// is newer than the last known activity.
func (w *Worker) ObserveActivity(at time.Time, category string) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if at.IsZero() {
		return nil, (&domain.Problems{{Field: "last_activity_at", Message: "is required"}}).Err()
	}
	switch w.s.Status {
	case StatusRemoved:
		return nil, illegal("observe activity", w.s.Status, "the worker is no longer managed")
	case StatusTerminated:
		return nil, nil
	}
	if !at.After(w.s.LastActivityAt) {
		return nil, nil
	}
	return []domain.Event{ActivityObserved{LastActivityAt: at.UTC(), Category: category}}, nil
}

// LabActionRequest is a lab operation to perform on the worker's controller.
type LabActionRequest struct {
	RequestID string
	Action    LabAction
	LabID     string
	Title     string
	YAML      string
}

// RequestLabAction asks for a lab operation. The worker must be running.
func (w *Worker) RequestLabAction(r LabActionRequest) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	var p domain.Problems
	if r.RequestID == "" {
		p.Add("request_id", "is required")
	}
	if _, err := ParseLabAction(string(r.Action)); err != nil {
		p.Add("action", "%v", err)
	}
	if r.Action == LabImport {
		switch {
		case strings.TrimSpace(r.YAML) == "":
			p.Add("yaml", "is required to import a lab")
		case len(r.YAML) > MaxLabYAMLBytes:
			p.Add("yaml", "is larger than %d bytes", MaxLabYAMLBytes)
		}
		if r.LabID != "" {
			p.Add("lab_id", "must be empty for an import")
		}
		if len(r.Title) > 255 {
			p.Add("title", "is longer than 255 characters")
		}
	} else {
		if !labIDRE.MatchString(r.LabID) {
			p.Add("lab_id", "%q is not a lab id", r.LabID)
		}
		if r.YAML != "" {
			p.Add("yaml", "is only for an import")
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	if w.s.Status != StatusRunning {
		return nil, illegal("lab "+string(r.Action), w.s.Status, "the worker must be running")
	}
	if _, dup := w.s.PendingLabActions[r.RequestID]; dup {
		return nil, nil
	}
	return []domain.Event{LabActionRequested(r)}, nil
}

// RecordLabActionCompleted closes a lab operation that succeeded.
func (w *Worker) RecordLabActionCompleted(requestID, labID string) ([]domain.Event, error) {
	return w.recordLabOutcome(requestID, func() domain.Event {
		return LabActionCompleted{RequestID: requestID, LabID: labID}
	})
}

// RecordLabActionFailed closes a lab operation that failed.
func (w *Worker) RecordLabActionFailed(requestID, code, message string) ([]domain.Event, error) {
	if code == "" {
		return nil, (&domain.Problems{{Field: "code", Message: "is required"}}).Err()
	}
	return w.recordLabOutcome(requestID, func() domain.Event {
		return LabActionFailed{RequestID: requestID, Code: code, Message: truncate(message)}
	})
}

func (w *Worker) recordLabOutcome(requestID string, event func() domain.Event) ([]domain.Event, error) {
	if err := w.mustExist(); err != nil {
		return nil, err
	}
	if w.s.Status == StatusRemoved {
		return nil, illegal("record lab outcome", w.s.Status, "the worker is no longer managed")
	}
	if _, ok := w.s.PendingLabActions[requestID]; !ok {
		return nil, nil // unknown or already recorded
	}
	return []domain.Event{event()}, nil
}
