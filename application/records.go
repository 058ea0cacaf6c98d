package application

import (
	"context"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// The handlers in this file record what background jobs observed or what
// their calls to EC2 and CML returned. Only the system principal may call
// them (rbac.WorkerRecord); each is a command that appends events only when
// something changed.

// RecordInstanceLaunched records the instance RunInstances returned.
func (a *App) RecordInstanceLaunched(ctx context.Context, id, instanceID string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_launch", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordInstanceLaunched(instanceID)
	})
}

// RecordProvisioningFailed records a launch that failed permanently.
func (a *App) RecordProvisioningFailed(ctx context.Context, id, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_launch_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordProvisioningFailed(code, message)
	})
}

// RecordStartFailed records a start that failed.
func (a *App) RecordStartFailed(ctx context.Context, id, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_start_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordStartFailed(code, message)
	})
}

// RecordStopFailed records a stop that failed.
func (a *App) RecordStopFailed(ctx context.Context, id, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_stop_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordStopFailed(code, message)
	})
}

// RecordTerminationFailed records a termination that failed.
func (a *App) RecordTerminationFailed(ctx context.Context, id, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_termination_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordTerminationFailed(code, message)
	})
}

// ObserveInstance records what EC2 reports about the worker's instance.
func (a *App) ObserveInstance(ctx context.Context, id string, o worker.Observation) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.observe_instance", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.ObserveInstance(o)
	})
}

// ObserveService records the CML controller's reachability and version.
func (a *App) ObserveService(ctx context.Context, id string, status worker.ServiceStatus, version string, ready bool) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.observe_service", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.ObserveService(status, version, ready)
	})
}

// ObserveLicense records the licence status CML reports.
func (a *App) ObserveLicense(ctx context.Context, id string, status worker.LicenseStatus) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.observe_license", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.ObserveLicense(status)
	})
}

// RecordLicenseRegistrationCompleted records a registration that succeeded.
func (a *App) RecordLicenseRegistrationCompleted(ctx context.Context, id string, status worker.LicenseStatus, smartAccount, virtualAccount string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_license_registered", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordLicenseRegistrationCompleted(status, smartAccount, virtualAccount)
	})
}

// RecordLicenseRegistrationFailed records a registration that failed.
func (a *App) RecordLicenseRegistrationFailed(ctx context.Context, id, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_license_registration_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordLicenseRegistrationFailed(code, message)
	})
}

// RecordLicenseDeregistrationCompleted records a deregistration that succeeded.
func (a *App) RecordLicenseDeregistrationCompleted(ctx context.Context, id, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_license_deregistered", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordLicenseDeregistrationCompleted(message)
	})
}

// RecordLicenseDeregistrationFailed records a deregistration that failed.
func (a *App) RecordLicenseDeregistrationFailed(ctx context.Context, id, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_license_deregistration_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordLicenseDeregistrationFailed(code, message)
	})
}

// ObserveActivity records user activity newer than the last known.
func (a *App) ObserveActivity(ctx context.Context, id string, at time.Time, category string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.observe_activity", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.ObserveActivity(at, category)
	})
}

// StopIfIdle applies the idle rule with the effective settings and requests
// a stop with reason idle_timeout when the worker is idle. It returns the
// decision with its inputs whether or not it stopped the worker.
func (a *App) StopIfIdle(ctx context.Context, id string) (Result, worker.IdleDecision, error) {
	var decision worker.IdleDecision
	res, err := a.updateWorker(ctx, rbac.WorkerRecord, "worker.idle_check", id, func(w *worker.Worker) ([]domain.Event, error) {
		eff, err := a.effectiveSettings(ctx)
		if err != nil {
			return nil, err
		}
		var events []domain.Event
		events, decision, err = w.StopIfIdle(a.opts.Clock.Now().UTC(), eff.IdlePolicy())
		return events, err
	})
	return res, decision, err
}

// RecordLabActionCompleted records a lab operation that succeeded.
func (a *App) RecordLabActionCompleted(ctx context.Context, id, requestID, labID string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_lab_action", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordLabActionCompleted(requestID, labID)
	})
}

// RecordLabActionFailed records a lab operation that failed.
func (a *App) RecordLabActionFailed(ctx context.Context, id, requestID, code, message string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRecord, "worker.record_lab_action_failure", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RecordLabActionFailed(requestID, code, message)
	})
}
