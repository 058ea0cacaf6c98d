package application

import (
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// JobKind names a background job (a River job kind). The jobs adapter
// (infrastructure/jobs) has one worker per kind.
type JobKind string

// Job kinds (DESIGN.md section 6). The first group follows events of the log
// (the reactor inserts them), the second runs on a schedule (and on demand:
// RunJob), WorkerRefresh runs on demand for one worker.
const (
	JobEC2Launch         JobKind = "ec2_launch"
	JobEC2Start          JobKind = "ec2_start"
	JobEC2Stop           JobKind = "ec2_stop"
	JobEC2Terminate      JobKind = "ec2_terminate"
	JobEC2Tags           JobKind = "ec2_tags"
	JobEC2Monitoring     JobKind = "ec2_monitoring"
	JobLicenseRegister   JobKind = "license_register"
	JobLicenseDeregister JobKind = "license_deregister"
	JobLabAction         JobKind = "lab_action"

	JobFleetReconcile JobKind = "fleet_reconcile"
	JobFleetMetrics   JobKind = "fleet_metrics"
	JobLabsSync       JobKind = "labs_sync"
	JobIdleCheck      JobKind = "idle_check"
	JobTelemetryPrune JobKind = "telemetry_prune"
	JobAutoImport     JobKind = "auto_import"

	JobWorkerRefresh JobKind = "worker_refresh"
)

// PeriodicJobKinds are the jobs that run on a schedule; an admin may also run
// them at once (RunJob).
var PeriodicJobKinds = []JobKind{
	JobFleetReconcile, JobFleetMetrics, JobLabsSync, JobIdleCheck, JobTelemetryPrune, JobAutoImport,
}

// Reaction is a job that an event of a worker's lifecycle stream calls for.
// Only the fields of its kind are set.
type Reaction struct {
	Kind     JobKind
	WorkerID string
	// Attempt is the launch attempt of an ec2_launch (1 for a new worker,
	// the retried attempt after provisioning_retried): with the worker id it
	// makes the EC2 ClientToken.
	Attempt int
	// Enabled is the requested detailed-monitoring state (ec2_monitoring).
	Enabled bool
	// License is the registration request (license_register); its token
	// stays sealed until the job opens it.
	License worker.LicenseRegistrationRequested
	// Lab is the lab operation (lab_action).
	Lab worker.LabActionRequested
}

// Reactions returns the jobs that event e of worker workerID's lifecycle
// stream calls for (DESIGN.md section 6), none for an event that needs no
// side effect. It is pure: the reactor calls it for every event it reads, in
// log order, and inserts the jobs in the transaction that advances its
// checkpoint, unique by the causing event's id.
//
// Besides the table of section 6, an imported worker gets its instance
// tagged with the product's reserved tags (so that the region-wide
// reconciliation, which lists instances by the ManagedBy tag, sees it) and a
// refresh of its state, metrics and labs under its own worker id.
func Reactions(workerID string, e domain.Event) []Reaction {
	r := Reaction{WorkerID: workerID}
	switch e := e.(type) {
	case worker.Created:
		r.Kind, r.Attempt = JobEC2Launch, 1
	case worker.ProvisioningRetried:
		r.Kind, r.Attempt = JobEC2Launch, e.Attempt
	case worker.StartRequested:
		r.Kind = JobEC2Start
	case worker.StopRequested:
		r.Kind = JobEC2Stop
	case worker.TerminationRequested:
		r.Kind = JobEC2Terminate
	case worker.TagsChanged:
		if e.External {
			return nil // observed on the instance: nothing to apply
		}
		r.Kind = JobEC2Tags
	case worker.DetailedMonitoringChanged:
		r.Kind, r.Enabled = JobEC2Monitoring, e.Enabled
	case worker.LicenseRegistrationRequested:
		r.Kind, r.License = JobLicenseRegister, e
	case worker.LicenseDeregistrationRequested:
		r.Kind = JobLicenseDeregister
	case worker.LabActionRequested:
		r.Kind, r.Lab = JobLabAction, e
	case worker.Imported:
		return []Reaction{{Kind: JobEC2Tags, WorkerID: workerID}, {Kind: JobWorkerRefresh, WorkerID: workerID}}
	default:
		return nil
	}
	return []Reaction{r}
}
