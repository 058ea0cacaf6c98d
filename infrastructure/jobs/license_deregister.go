package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// LicenseDeregisterArgs is a license_deregister job: deregister the CML
// licence of the worker after worker.license_deregistration_requested.
type LicenseDeregisterArgs struct {
	Cause
}

// Kind implements river.JobArgs.
func (LicenseDeregisterArgs) Kind() string { return string(application.JobLicenseDeregister) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (LicenseDeregisterArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCML, cmlMaxAttempts)
}

type licenseDeregisterWorker struct {
	river.WorkerDefaults[LicenseDeregisterArgs]
	rt *runtime
}

func (w *licenseDeregisterWorker) NextRetry(job *river.Job[LicenseDeregisterArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *licenseDeregisterWorker) Timeout(*river.Job[LicenseDeregisterArgs]) time.Duration {
	return cmlJobTimeout
}

// Work deregisters. CML answers 204 (done), 202 (done locally: the Smart
// Software Manager was unreachable) or 400 "already deregistered", which is
// the requested end state too and completes the request.
func (w *licenseDeregisterWorker) Work(ctx context.Context, job *river.Job[LicenseDeregisterArgs]) error {
	rt, id := w.rt, job.Args.WorkerID
	ctx = causeContext(ctx, application.JobLicenseDeregister, job.Args.Cause)
	st, err := rt.deps.App.WorkerState(ctx, id)
	if err != nil {
		return fmt.Errorf("license_deregister: load worker %s: %w", id, err)
	}
	if st.LicenseOperation != worker.LicenseOpDeregister {
		return nil
	}
	record := func(code, message string) error {
		_, err := rt.deps.App.RecordLicenseDeregistrationFailed(ctx, id, code, message)
		return err
	}
	if done, err := rt.cmlPreconditions(job.CreatedAt, rt.opts.LicenseDeadline, st, record); done {
		return err
	}
	var res application.CMLDeregistration
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		res, err = rt.deps.CML.DeregisterLicense(ctx, st.Endpoint)
		return err
	})
	msg := ""
	switch ce := application.CloudErrorOf(err); {
	case err == nil && res.LocalOnly:
		msg = "deregistered locally; the Smart Software Manager could not be reached"
	case err == nil:
	case ce.Kind == application.CloudInvalid && ce.Code == "400":
		msg = "the licence was already deregistered"
	default:
		return rt.failure(ctx, job.JobRow, err, record)
	}
	if _, err := rt.deps.App.RecordLicenseDeregistrationCompleted(ctx, id, msg); err != nil {
		return fmt.Errorf("license_deregister: record completion: %w", err)
	}
	rt.log.InfoContext(ctx, "jobs: licence deregistered", slog.String("worker_id", id), slog.String("note", msg))
	return nil
}
