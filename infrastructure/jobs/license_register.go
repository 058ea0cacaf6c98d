package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// LicenseRegisterArgs is a license_register job: register the CML licence
// of the worker with a Smart Licensing token after
// worker.license_registration_requested, then poll the controller until the
// registration completes or fails. The token travels sealed and is opened
// only here, just before the call; it is never logged.
type LicenseRegisterArgs struct {
	Cause
	SealedToken string `json:"sealed_token"`
	Reregister  bool   `json:"reregister"`
}

// Kind implements river.JobArgs.
func (LicenseRegisterArgs) Kind() string { return string(application.JobLicenseRegister) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (LicenseRegisterArgs) InsertOpts() river.InsertOpts {
	return reactorInsertOpts(QueueCML, cmlMaxAttempts)
}

// cmlMaxAttempts bounds the retries of the licence and lab jobs; their
// deadline normally ends them first.
const cmlMaxAttempts = 20

// cmlJobTimeout bounds one run of a licence or lab job.
const cmlJobTimeout = 3 * time.Minute

type licenseRegisterWorker struct {
	river.WorkerDefaults[LicenseRegisterArgs]
	rt *runtime
}

func (w *licenseRegisterWorker) NextRetry(job *river.Job[LicenseRegisterArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *licenseRegisterWorker) Timeout(*river.Job[LicenseRegisterArgs]) time.Duration {
	return cmlJobTimeout
}

// errTokenUnreadable ends a registration whose sealed token cannot be
// opened (another SECRETS_KEY).
var errTokenUnreadable = errors.New("the sealed licence token cannot be opened with the configured key")

// Work asks for the registration once (a resumable step: the runs after a
// snooze skip it; a run repeated after a crash that asks again gets 409 "in
// progress", which counts as asked), then polls GET /licensing.
func (w *licenseRegisterWorker) Work(ctx context.Context, job *river.Job[LicenseRegisterArgs]) error {
	rt, a := w.rt, job.Args
	ctx = causeContext(ctx, application.JobLicenseRegister, a.Cause)
	st, err := rt.deps.App.WorkerState(ctx, a.WorkerID)
	if err != nil {
		return fmt.Errorf("license_register: load worker %s: %w", a.WorkerID, err)
	}
	if st.LicenseOperation != worker.LicenseOpRegister {
		return nil // recorded already
	}
	record := func(code, message string) error {
		_, err := rt.deps.App.RecordLicenseRegistrationFailed(ctx, a.WorkerID, code, message)
		return err
	}
	if done, err := rt.cmlPreconditions(job.CreatedAt, rt.opts.LicenseDeadline, st, record); done {
		return err
	}
	var stepErr error
	river.ResumableStep(ctx, "register", nil, func(ctx context.Context) error {
		token, err := rt.deps.Sealer.Open(a.SealedToken)
		if err != nil {
			stepErr = &application.CloudError{Kind: application.CloudInvalid, Op: "open licence token",
				Code: "TokenUnreadable", Message: errTokenUnreadable.Error(), Err: errTokenUnreadable}
			return stepErr
		}
		err = rt.call(ctx, func(ctx context.Context) error {
			return rt.deps.CML.RegisterLicense(ctx, st.Endpoint, token, a.Reregister)
		})
		if ce := application.CloudErrorOf(err); err != nil && ce.Kind == application.CloudConflict {
			err = nil // a registration is in progress: ours, asked by an earlier run
		}
		stepErr = err
		return err
	})
	if stepErr != nil {
		return rt.failure(ctx, job.JobRow, stepErr, record)
	}
	var lic application.CMLLicensing
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		lic, err = rt.deps.CML.Licensing(ctx, st.Endpoint)
		return err
	})
	if err != nil {
		return rt.failure(ctx, job.JobRow, err, record)
	}
	switch lic.RegistrationStatus {
	case "COMPLETED":
		if _, err := rt.deps.App.RecordLicenseRegistrationCompleted(ctx, a.WorkerID, lic.Status(), lic.SmartAccount, lic.VirtualAccount); err != nil {
			return fmt.Errorf("license_register: record completion: %w", err)
		}
		rt.log.InfoContext(ctx, "jobs: licence registered", slog.String("worker_id", a.WorkerID))
		return nil
	case "FAILED", "REGISTRATION_FAILED", "RETRY_FAILED", "EXPIRED", "REGISTRATION_EXPIRED":
		msg := "CML reports the registration " + lic.RegistrationStatus
		if err := record(lic.RegistrationStatus, msg); err != nil {
			return err
		}
		return river.JobCancel(errors.New(msg))
	}
	return river.JobSnooze(rt.opts.PollInterval)
}

// cmlPreconditions ends a licence or lab job that is past its deadline or
// whose worker cannot be reached (not running, no endpoint), recording the
// failure. done is true when the job must return err.
func (rt *runtime) cmlPreconditions(created time.Time, deadline time.Duration, st worker.State, record func(code, message string) error) (done bool, err error) {
	var code, msg string
	switch {
	case rt.pastDeadline(created, deadline):
		code, msg = timeoutCode, fmt.Sprintf("the operation did not complete within %s", deadline)
	case st.Status != worker.StatusRunning:
		code, msg = "NotRunning", "the worker is "+string(st.Status)
	case st.Endpoint == "":
		code, msg = "NoEndpoint", "the worker has no CML endpoint"
	default:
		return false, nil
	}
	if err := record(code, msg); err != nil {
		return true, err
	}
	return true, river.JobCancel(errors.New(msg))
}
