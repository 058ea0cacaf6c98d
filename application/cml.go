package application

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// CMLClient is the port to the CML controllers' REST API (reference:
// /work/shared/reference/cml-api.md). endpoint is a controller's base URL
// (https://host[:port][/path-prefix]: simulated controllers live under a
// path prefix); the adapter (infrastructure/cml) holds the
// credentials, caches one token per controller until it expires and logs in
// again once on a 401. Errors are *CloudError (Op "cml:METHOD /path", Code the
// HTTP status).
type CMLClient interface {
	// SystemInformation needs no login; it answers 502 while the controller
	// boots (CloudUnavailable).
	SystemInformation(ctx context.Context, endpoint string) (CMLSystemInformation, error)
	SystemHealth(ctx context.Context, endpoint string) (CMLSystemHealth, error)
	SystemStats(ctx context.Context, endpoint string) (CMLSystemStats, error)
	Licensing(ctx context.Context, endpoint string) (CMLLicensing, error)
	// RegisterLicense asks for a Smart Licensing registration; it completes
	// asynchronously (poll Licensing).
	RegisterLicense(ctx context.Context, endpoint, token string, reregister bool) error
	// DeregisterLicense deregisters; LocalOnly is true when CML could only
	// deregister locally (HTTP 202).
	DeregisterLicense(ctx context.Context, endpoint string) (CMLDeregistration, error)
	// Labs lists every lab of every user, with details.
	Labs(ctx context.Context, endpoint string) ([]worker.Lab, error)
	// LabAction starts, stops or wipes a lab.
	LabAction(ctx context.Context, endpoint, labID string, action worker.LabAction) error
	DeleteLab(ctx context.Context, endpoint, labID string) error
	// ImportLab imports a topology (YAML) and returns the new lab's id.
	ImportLab(ctx context.Context, endpoint, title, topologyYAML string) (string, error)
	// DownloadLab returns a lab's topology as YAML.
	DownloadLab(ctx context.Context, endpoint, labID string) (string, error)
	// TelemetryEvents returns the controller's telemetry events (CML returns
	// its whole history on every call).
	TelemetryEvents(ctx context.Context, endpoint string) ([]CMLTelemetryEvent, error)
}

// CMLSystemInformation is GET /system_information.
type CMLSystemInformation struct {
	Version string
	Ready   bool
}

// CMLSystemHealth is GET /system_health, reduced to what the fleet needs.
type CMLSystemHealth struct {
	Valid        bool
	IsLicensed   bool
	IsEnterprise bool
	// Computes counts the compute hosts; ComputesReady those with
	// admission_state READY.
	Computes      int
	ComputesReady int
}

// CMLSystemStats is GET /system_stats summed over the computes. Percentages
// are nil when the controller did not report them.
type CMLSystemStats struct {
	CPUCount      int
	CPUPercent    *float64
	MemoryPercent *float64
	DiskPercent   *float64
	MemoryTotal   float64 // bytes
	DiskTotal     float64 // bytes
	NodesRunning  int
	NodesTotal    int
}

// CMLLicensing is GET /licensing, reduced to what the fleet needs; Raw keeps
// the whole document for the licence details view.
type CMLLicensing struct {
	RegistrationStatus  string // NOT_REGISTERED, COMPLETED, FAILED, RETRY_IN_PROGRESS, ...
	AuthorizationStatus string // INIT, EVAL, IN_COMPLIANCE, OUT_OF_COMPLIANCE, ...
	SmartAccount        string
	VirtualAccount      string
	ProductLicense      string
	IsEnterprise        bool
	Raw                 json.RawMessage
}

// Status maps CML's registration and authorization states to the domain's
// licence status.
func (l CMLLicensing) Status() worker.LicenseStatus {
	switch l.RegistrationStatus {
	case "COMPLETED":
		switch l.AuthorizationStatus {
		case "EVAL":
			return worker.LicenseEvaluation
		case "AUTHORIZATION_EXPIRED", "EXPIRED":
			return worker.LicenseExpired
		case "OUT_OF_COMPLIANCE":
			return worker.LicenseInvalid
		}
		return worker.LicenseRegistered
	case "REGISTRATION_EXPIRED", "EXPIRED":
		return worker.LicenseExpired
	}
	if l.AuthorizationStatus == "EVAL" {
		return worker.LicenseEvaluation
	}
	return worker.LicenseUnregistered
}

// CMLDeregistration is the outcome of DELETE /licensing/deregistration.
type CMLDeregistration struct {
	LocalOnly bool
}

// CMLTelemetryEvent is one entry of GET /telemetry/events.
type CMLTelemetryEvent struct {
	Category  string
	Timestamp time.Time
	// UserID is data.user_id when the event carries one.
	UserID string
	Data   json.RawMessage
}
