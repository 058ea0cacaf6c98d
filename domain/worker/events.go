package worker

import (
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// Stream names. The lifecycle stream is low volume and kept forever; the
// telemetry stream is high volume and pruned by age.
const (
	StreamPrefix          = "worker-"
	TelemetryStreamPrefix = "worker_telemetry-"
)

// Stream returns the lifecycle stream of a worker.
func Stream(id string) string { return StreamPrefix + id }

// TelemetryStream returns the telemetry stream of a worker.
func TelemetryStream(id string) string { return TelemetryStreamPrefix + id }

// Events returns a prototype of every worker event, lifecycle and telemetry,
// for the registry.
func Events() []domain.Event {
	return []domain.Event{
		Created{}, Imported{}, InstanceLaunched{}, ProvisioningFailed{}, ProvisioningRetried{},
		StartRequested{}, StartFailed{}, StopRequested{}, StopFailed{},
		TerminationRequested{}, TerminationFailed{}, Removed{},
		InstanceStateObserved{}, EndpointChanged{}, TagsChanged{}, DetailedMonitoringChanged{},
		ServiceStatusChanged{}, LicenseStatusChanged{},
		LicenseRegistrationRequested{}, LicenseRegistrationCompleted{}, LicenseRegistrationFailed{},
		LicenseDeregistrationRequested{}, LicenseDeregistrationCompleted{}, LicenseDeregistrationFailed{},
		IdleDetectionEnabled{}, IdleDetectionDisabled{}, ActivityObserved{}, IdleDetected{},
		LabActionRequested{}, LabActionCompleted{}, LabActionFailed{},
		MetricsSampled{}, LabsObserved{},
		InstanceClaimed{},
	}
}

// --- Lifecycle ---------------------------------------------------------------

// Created: a worker was created; a launch is requested.
type Created struct {
	WorkerID             string            `json:"worker_id"`
	Name                 string            `json:"name"`
	Region               string            `json:"region"`
	InstanceType         string            `json:"instance_type"`
	AMIID                string            `json:"ami_id"`
	AMIName              string            `json:"ami_name,omitempty"`
	SubnetID             string            `json:"subnet_id,omitempty"`
	SecurityGroupIDs     []string          `json:"security_group_ids,omitempty"`
	KeyName              string            `json:"key_name,omitempty"`
	Tags                 map[string]string `json:"tags,omitempty"`
	DetailedMonitoring   bool              `json:"detailed_monitoring"`
	IdleDetectionEnabled bool              `json:"idle_detection_enabled"`
}

// Imported: an existing EC2 instance became a managed worker.
type Imported struct {
	WorkerID             string            `json:"worker_id"`
	Name                 string            `json:"name"`
	Region               string            `json:"region"`
	InstanceID           string            `json:"instance_id"`
	InstanceType         string            `json:"instance_type"`
	AMIID                string            `json:"ami_id,omitempty"`
	AMIName              string            `json:"ami_name,omitempty"`
	EC2State             EC2State          `json:"ec2_state"`
	PublicIP             string            `json:"public_ip,omitempty"`
	PrivateIP            string            `json:"private_ip,omitempty"`
	Endpoint             string            `json:"endpoint,omitempty"`
	Tags                 map[string]string `json:"tags,omitempty"`
	IdleDetectionEnabled bool              `json:"idle_detection_enabled"`
}

// InstanceLaunched: RunInstances returned an instance for the worker.
type InstanceLaunched struct {
	InstanceID string `json:"instance_id"`
	Attempt    int    `json:"attempt"`
}

// ProvisioningFailed: the launch failed permanently.
type ProvisioningFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Attempt int    `json:"attempt"`
}

// ProvisioningRetried: a failed launch is tried again.
type ProvisioningRetried struct {
	Attempt int `json:"attempt"`
}

// StartRequested: somebody asked to start the stopped worker.
type StartRequested struct{}

// StartFailed: StartInstances failed or the start did not complete.
type StartFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StopRequested: a stop was asked for, by a person or by idle detection.
type StopRequested struct {
	Reason StopReason `json:"reason"`
}

// StopFailed: StopInstances failed or the stop did not complete.
type StopFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TerminationRequested: somebody asked to terminate the instance.
type TerminationRequested struct{}

// TerminationFailed: TerminateInstances failed.
type TerminationFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Removed: the worker is no longer managed; its instance is left untouched.
type Removed struct{}

// InstanceStateObserved: EC2 reported something new about the instance.
// External is true when the status changed without anybody here asking.
type InstanceStateObserved struct {
	EC2State       EC2State `json:"ec2_state"`
	PublicIP       string   `json:"public_ip,omitempty"`
	PrivateIP      string   `json:"private_ip,omitempty"`
	InstanceType   string   `json:"instance_type,omitempty"`
	SystemStatus   string   `json:"system_status,omitempty"`
	InstanceStatus string   `json:"instance_status,omitempty"`
	External       bool     `json:"external"`
}

// EndpointChanged: the CML endpoint of the worker moved (public IP change).
type EndpointChanged struct {
	Endpoint string `json:"endpoint"`
}

// TagsChanged: the full tag map after a change, requested here or observed
// (External) on the instance.
type TagsChanged struct {
	Tags     map[string]string `json:"tags"`
	External bool              `json:"external"`
}

// DetailedMonitoringChanged: detailed CloudWatch monitoring was switched.
type DetailedMonitoringChanged struct {
	Enabled bool `json:"enabled"`
}

// --- CML service -------------------------------------------------------------

// ServiceStatusChanged: the CML controller's reachability or version changed.
type ServiceStatusChanged struct {
	Status  ServiceStatus `json:"status"`
	Version string        `json:"version,omitempty"`
	Ready   bool          `json:"ready"`
}

// LicenseStatusChanged: the observed licence registration status changed.
type LicenseStatusChanged struct {
	Status LicenseStatus `json:"status"`
}

// LicenseRegistrationRequested: an admin asked to register the licence. The
// token itself is never stored in clear: SealedToken is encrypted by the
// application for the job that performs the registration, Fingerprint lets
// auditors tell tokens apart.
type LicenseRegistrationRequested struct {
	Reregister       bool   `json:"reregister"`
	TokenFingerprint string `json:"token_fingerprint"`
	SealedToken      string `json:"sealed_token"`
}

// LicenseRegistrationCompleted: CML reports the registration done.
type LicenseRegistrationCompleted struct {
	Status         LicenseStatus `json:"status"`
	SmartAccount   string        `json:"smart_account,omitempty"`
	VirtualAccount string        `json:"virtual_account,omitempty"`
}

// LicenseRegistrationFailed: the registration failed.
type LicenseRegistrationFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// LicenseDeregistrationRequested: an admin asked to deregister the licence.
type LicenseDeregistrationRequested struct{}

// LicenseDeregistrationCompleted: the licence is deregistered (Message notes
// a local-only deregistration, for example).
type LicenseDeregistrationCompleted struct {
	Message string `json:"message,omitempty"`
}

// LicenseDeregistrationFailed: the deregistration failed.
type LicenseDeregistrationFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// --- Idle --------------------------------------------------------------------

// IdleDetectionEnabled: the worker may be stopped when idle. TimeoutSeconds
// overrides the global idle timeout when positive.
type IdleDetectionEnabled struct {
	TimeoutSeconds int64 `json:"timeout_seconds,omitempty"`
}

// IdleDetectionDisabled: the worker opts out of idle auto-stop.
type IdleDetectionDisabled struct{}

// ActivityObserved: user activity newer than the last known was seen on the
// CML controller.
type ActivityObserved struct {
	LastActivityAt time.Time `json:"last_activity_at"`
	Category       string    `json:"category,omitempty"`
}

// IdleDetected: the worker has been idle past its timeout; a stop with reason
// idle_timeout follows.
type IdleDetected struct {
	IdleSince      time.Time `json:"idle_since"`
	IdleSeconds    int64     `json:"idle_seconds"`
	TimeoutSeconds int64     `json:"timeout_seconds"`
}

// --- Labs ----------------------------------------------------------------------

// LabActionRequested: a lab operation was asked for; the job performs it.
type LabActionRequested struct {
	RequestID string    `json:"request_id"`
	Action    LabAction `json:"action"`
	LabID     string    `json:"lab_id,omitempty"`
	Title     string    `json:"title,omitempty"`
	YAML      string    `json:"yaml,omitempty"`
}

// LabActionCompleted: the lab operation succeeded (LabID is the new lab for
// an import).
type LabActionCompleted struct {
	RequestID string `json:"request_id"`
	LabID     string `json:"lab_id,omitempty"`
}

// LabActionFailed: the lab operation failed.
type LabActionFailed struct {
	RequestID string `json:"request_id"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// --- Telemetry stream ------------------------------------------------------------

// MetricsSampled is one sample of the worker's health and load. Missing
// values are null, never zero.
type MetricsSampled struct {
	EC2SystemStatus   string   `json:"ec2_system_status,omitempty"`
	EC2InstanceStatus string   `json:"ec2_instance_status,omitempty"`
	CloudWatchCPU     *float64 `json:"cloudwatch_cpu,omitempty"`
	CloudWatchMemory  *float64 `json:"cloudwatch_memory,omitempty"`
	CMLCPU            *float64 `json:"cml_cpu,omitempty"`
	CMLMemory         *float64 `json:"cml_memory,omitempty"`
	CMLDisk           *float64 `json:"cml_disk,omitempty"`
	NodesRunning      *int     `json:"nodes_running,omitempty"`
	NodesTotal        *int     `json:"nodes_total,omitempty"`
}

// LabsObserved is the full list of labs on the controller, recorded only when
// it differs from the previous list.
type LabsObserved struct {
	Labs []Lab `json:"labs"`
}

// Lab is a CML lab as observed.
type Lab struct {
	ID          string    `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description,omitempty"`
	State       string    `json:"state"`
	Owner       string    `json:"owner,omitempty"`
	NodeCount   int       `json:"node_count"`
	LinkCount   int       `json:"link_count"`
	Groups      []string  `json:"groups,omitempty"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	ModifiedAt  time.Time `json:"modified_at,omitzero"`
}

// EventType names, stable forever. A change of meaning gets a new version.
func (Created) EventType() string                   { return "worker.created.v1" }
func (Imported) EventType() string                  { return "worker.imported.v1" }
func (InstanceLaunched) EventType() string          { return "worker.instance_launched.v1" }
func (ProvisioningFailed) EventType() string        { return "worker.provisioning_failed.v1" }
func (ProvisioningRetried) EventType() string       { return "worker.provisioning_retried.v1" }
func (StartRequested) EventType() string            { return "worker.start_requested.v1" }
func (StartFailed) EventType() string               { return "worker.start_failed.v1" }
func (StopRequested) EventType() string             { return "worker.stop_requested.v1" }
func (StopFailed) EventType() string                { return "worker.stop_failed.v1" }
func (TerminationRequested) EventType() string      { return "worker.termination_requested.v1" }
func (TerminationFailed) EventType() string         { return "worker.termination_failed.v1" }
func (Removed) EventType() string                   { return "worker.removed.v1" }
func (InstanceStateObserved) EventType() string     { return "worker.instance_state_observed.v1" }
func (EndpointChanged) EventType() string           { return "worker.endpoint_changed.v1" }
func (TagsChanged) EventType() string               { return "worker.tags_changed.v1" }
func (DetailedMonitoringChanged) EventType() string { return "worker.detailed_monitoring_changed.v1" }
func (ServiceStatusChanged) EventType() string      { return "worker.service_status_changed.v1" }
func (LicenseStatusChanged) EventType() string      { return "worker.license_status_changed.v1" }
func (LicenseRegistrationRequested) EventType() string {
	return "worker.license_registration_requested.v1"
}
func (LicenseRegistrationCompleted) EventType() string {
	return "worker.license_registration_completed.v1"
}
func (LicenseRegistrationFailed) EventType() string { return "worker.license_registration_failed.v1" }
func (LicenseDeregistrationRequested) EventType() string {
	return "worker.license_deregistration_requested.v1"
}
func (LicenseDeregistrationCompleted) EventType() string {
	return "worker.license_deregistration_completed.v1"
}
func (LicenseDeregistrationFailed) EventType() string {
	return "worker.license_deregistration_failed.v1"
}
func (IdleDetectionEnabled) EventType() string  { return "worker.idle_detection_enabled.v1" }
func (IdleDetectionDisabled) EventType() string { return "worker.idle_detection_disabled.v1" }
func (ActivityObserved) EventType() string      { return "worker.activity_observed.v1" }
func (IdleDetected) EventType() string          { return "worker.idle_detected.v1" }
func (LabActionRequested) EventType() string    { return "worker.lab_action_requested.v1" }
func (LabActionCompleted) EventType() string    { return "worker.lab_action_completed.v1" }
func (LabActionFailed) EventType() string       { return "worker.lab_action_failed.v1" }
func (MetricsSampled) EventType() string        { return "worker.metrics_sampled.v1" }
func (LabsObserved) EventType() string          { return "worker.labs_observed.v1" }

// IsTelemetry reports whether an event type belongs on the telemetry stream.
func IsTelemetry(eventType string) bool {
	return eventType == (MetricsSampled{}).EventType() || eventType == (LabsObserved{}).EventType()
}
