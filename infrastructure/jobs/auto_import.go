package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
)

// AutoImportArgs is an auto_import job (off by default): import every
// unmanaged live instance of the configured region booted from an AMI whose
// name matches the configured pattern.
type AutoImportArgs struct {
	Manual bool `json:"manual,omitempty"`
}

// Kind implements river.JobArgs.
func (AutoImportArgs) Kind() string { return string(application.JobAutoImport) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (AutoImportArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

type autoImportWorker struct {
	river.WorkerDefaults[AutoImportArgs]
	rt *runtime
}

func (w *autoImportWorker) NextRetry(job *river.Job[AutoImportArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *autoImportWorker) Timeout(*river.Job[AutoImportArgs]) time.Duration {
	return w.rt.opts.FleetJobTimeout
}

func (w *autoImportWorker) Work(ctx context.Context, job *river.Job[AutoImportArgs]) error {
	if !w.rt.opts.AutoImport.Enabled {
		return nil
	}
	res, err := w.rt.autoImport(ctx, job.ID)
	if err != nil {
		return fmt.Errorf("auto_import: %w", err)
	}
	w.rt.log.InfoContext(ctx, "jobs: auto-import done", slog.String("region", w.rt.opts.AutoImport.Region),
		slog.Int("found", res.Found), slog.Int("imported", res.Imported), slog.Int("skipped", res.Skipped))
	return nil
}

// AutoImportResult counts what one auto-import did.
type AutoImportResult struct {
	Found    int
	Imported int
	Skipped  int // managed already, or not live
	// WorkerIDs are the new workers (the reactor refreshes each under its
	// own id).
	WorkerIDs []string
}

// autoImportPrincipal is the job's identity: a system actor that holds the
// admin role, because importing is an admin command.
func autoImportPrincipal() rbac.Principal {
	p := rbac.System(string(application.JobAutoImport))
	p.Roles = append(p.Roles, rbac.RoleAdmin)
	return p
}

// autoImport imports every unmanaged live instance of the configured region
// booted from an AMI whose name matches the configured pattern, through the
// same look-up as POST /api/workers/import with "all": true.
func (rt *runtime) autoImport(ctx context.Context, jobID int64) (AutoImportResult, error) {
	ai := rt.opts.AutoImport
	ctx = rbac.WithPrincipal(jobContext(ctx, application.JobAutoImport, jobID), autoImportPrincipal())
	fleet := application.NewFleet(rt.deps.App, rt.deps.Cloud, rt.deps.CML, application.FleetOptions{
		EndpointTemplate: rt.opts.EndpointTemplate, CallTimeout: rt.opts.CallTimeout,
	})
	out, err := fleet.Import(ctx, application.ImportRequest{Region: ai.Region, AMINamePattern: ai.AMINamePattern, All: true})
	if err != nil {
		return AutoImportResult{}, err
	}
	res := AutoImportResult{Found: out.Found, Imported: len(out.Imported), Skipped: len(out.Skipped)}
	for _, w := range out.Imported {
		res.WorkerIDs = append(res.WorkerIDs, w.ID)
	}
	return res, nil
}
