package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// Pruner deletes telemetry recorded before a time: the telemetry streams of
// the Postgres event store (postgres.TelemetryPruner) and the worker_metrics
// rows (projections.MetricsPruner).
type Pruner interface {
	Prune(ctx context.Context, before time.Time) (int64, error)
}

// PruneArgs is a telemetry_prune job (daily): apply the telemetry retention.
type PruneArgs struct {
	Manual bool `json:"manual,omitempty"`
}

// Kind implements river.JobArgs.
func (PruneArgs) Kind() string { return string(application.JobTelemetryPrune) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (PruneArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

// prunePeriod is how often telemetry_prune runs.
const prunePeriod = 24 * time.Hour

type pruneWorker struct {
	river.WorkerDefaults[PruneArgs]
	rt *runtime
}

func (w *pruneWorker) NextRetry(job *river.Job[PruneArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *pruneWorker) Timeout(*river.Job[PruneArgs]) time.Duration { return w.rt.opts.FleetJobTimeout }

func (w *pruneWorker) Work(ctx context.Context, job *river.Job[PruneArgs]) error {
	rt := w.rt
	before := rt.now().Add(-rt.opts.TelemetryRetention)
	for i, p := range rt.deps.Pruners {
		n, err := p.Prune(ctx, before)
		if err != nil {
			return fmt.Errorf("telemetry_prune: pruner %d: %w", i, err)
		}
		rt.log.InfoContext(ctx, "jobs: telemetry pruned", slog.Int("pruner", i), slog.Int64("deleted", n),
			slog.Time("before", before))
	}
	return nil
}
