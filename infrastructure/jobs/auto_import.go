package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
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

// autoImport finds the instances by AMI name pattern (terminated and
// shutting-down ones are never returned, and are skipped again here) and
// imports each one no live worker manages.
func (rt *runtime) autoImport(ctx context.Context, jobID int64) (AutoImportResult, error) {
	var res AutoImportResult
	ai := rt.opts.AutoImport
	var insts []application.Instance
	err := rt.call(ctx, func(ctx context.Context) (err error) {
		insts, err = rt.deps.Cloud.FindInstances(ctx, ai.Region, application.InstanceQuery{AMINamePattern: ai.AMINamePattern})
		return err
	})
	if err != nil {
		return res, err
	}
	res.Found = len(insts)
	ctx = rbac.WithPrincipal(jobContext(ctx, application.JobAutoImport, jobID), autoImportPrincipal())
	for _, in := range insts {
		switch in.State {
		case worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped:
		default:
			res.Skipped++
			continue
		}
		if _, managed, err := rt.deps.Workers.FindByInstance(ctx, ai.Region, in.InstanceID); err != nil {
			return res, err
		} else if managed {
			res.Skipped++
			continue
		}
		amiName := ""
		if img, err := rt.deps.Cloud.DescribeImage(ctx, ai.Region, in.ImageID); err == nil {
			amiName = img.Name
		}
		r, err := rt.deps.App.ImportWorker(ctx, application.ImportWorker{
			Name: in.Tags[nameTag], Region: ai.Region, InstanceID: in.InstanceID, InstanceType: in.InstanceType,
			AMIID: in.ImageID, AMIName: amiName, State: in.State, PublicIP: in.PublicIP, PrivateIP: in.PrivateIP,
			Endpoint: endpointFor(rt.opts.EndpointTemplate, in), Tags: in.Tags,
		})
		switch {
		case errors.Is(err, domain.ErrAlreadyExists):
			res.Skipped++
			continue
		case err != nil:
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			rt.log.WarnContext(ctx, "jobs: cannot import an instance", slog.String("instance_id", in.InstanceID), slog.Any("error", err))
			res.Skipped++
			continue
		}
		res.Imported++
		res.WorkerIDs = append(res.WorkerIDs, r.ID)
	}
	return res, nil
}
