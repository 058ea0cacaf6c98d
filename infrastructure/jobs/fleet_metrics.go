package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// MetricsArgs is a fleet_metrics job: sample every running worker of a
// region (CloudWatch and CML) and record what changed in the CML service
// and licence.
type MetricsArgs struct {
	Region string `json:"region"`
	Manual bool   `json:"manual,omitempty"`
}

// Kind implements river.JobArgs.
func (MetricsArgs) Kind() string { return string(application.JobFleetMetrics) }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (MetricsArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueFleet, MaxAttempts: fleetMaxAttempts}
}

type metricsWorker struct {
	river.WorkerDefaults[MetricsArgs]
	rt *runtime
}

func (w *metricsWorker) NextRetry(job *river.Job[MetricsArgs]) time.Time {
	return w.rt.nextRetry(job.Attempt)
}

func (w *metricsWorker) Timeout(*river.Job[MetricsArgs]) time.Duration {
	return w.rt.opts.FleetJobTimeout
}

func (w *metricsWorker) Work(ctx context.Context, job *river.Job[MetricsArgs]) error {
	ctx = jobContext(ctx, application.JobFleetMetrics, job.ID)
	res, err := w.rt.collectMetrics(ctx, job.Args.Region)
	if err != nil {
		return fmt.Errorf("fleet_metrics %s: %w", job.Args.Region, err)
	}
	w.rt.log.DebugContext(ctx, "jobs: fleet metrics collected", slog.String("region", job.Args.Region),
		slog.Int("workers", res.Workers), slog.Int("samples", res.Samples), slog.Int("unreachable", res.Unreachable))
	return nil
}

// MetricsResult counts what one metrics collection of a region did.
type MetricsResult struct {
	Workers     int // running workers
	Samples     int // metrics_sampled events recorded
	Unreachable int // workers whose CML controller did not answer
}

// metricsLookback is how far back the CloudWatch query looks for the newest
// datapoint (the adapter caps it to its metric window).
const metricsLookback = 15 * time.Minute

// collectMetrics reads the CloudWatch metrics of every running worker of
// the region with one batched call (GetMetricData, up to 500 queries each),
// then polls their CML controllers with bounded concurrency through the
// token-caching CML client, and records one sample per worker. A CloudWatch
// failure costs the CloudWatch values, not the samples.
func (rt *runtime) collectMetrics(ctx context.Context, region string) (MetricsResult, error) {
	var res MetricsResult
	views, err := rt.listWorkers(ctx, application.WorkerFilter{Region: region, Status: worker.StatusRunning})
	if err != nil {
		return res, err
	}
	res.Workers = len(views)
	if len(views) == 0 {
		return res, nil
	}
	ids := make([]string, 0, len(views))
	for _, v := range views {
		if v.InstanceID != "" {
			ids = append(ids, v.InstanceID)
		}
	}
	var cw map[string]application.InstanceMetrics
	err = rt.call(ctx, func(ctx context.Context) (err error) {
		cw, err = rt.deps.Cloud.Metrics(ctx, region, ids, rt.now().Add(-metricsLookback))
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		rt.log.WarnContext(ctx, "jobs: CloudWatch metrics unavailable; sampling CML only",
			slog.String("region", region), slog.Any("error", err))
	}
	var samples, unreachable atomic.Int64
	err = forEach(ctx, rt.opts.CMLConcurrency, views, func(ctx context.Context, v application.WorkerView) error {
		var m *application.InstanceMetrics
		if got, ok := cw[v.InstanceID]; ok {
			m = &got
		}
		out, err := rt.pollWorker(ctx, v.State, m)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rt.log.WarnContext(ctx, "jobs: cannot record a worker's sample", slog.String("worker_id", v.ID), slog.Any("error", err))
			return nil
		}
		if out.sampled {
			samples.Add(1)
		}
		if !out.reachable {
			unreachable.Add(1)
		}
		return nil
	})
	res.Samples, res.Unreachable = int(samples.Load()), int(unreachable.Load())
	return res, err
}

// pollResult says what polling one worker found.
type pollResult struct {
	sampled   bool
	reachable bool
}

// pollWorker polls one running worker's CML controller (system_information
// without a login, then system_health, system_stats and licensing with the
// cached token), records the service status and licence status when they
// differ from st, and records one metrics sample (EC2 status checks from st,
// CloudWatch from cw, CML from the controller; what could not be read stays
// null).
func (rt *runtime) pollWorker(ctx context.Context, st worker.State, cw *application.InstanceMetrics) (pollResult, error) {
	var out pollResult
	sample := worker.MetricsSampled{EC2SystemStatus: st.SystemStatus, EC2InstanceStatus: st.InstanceStatus}
	if cw != nil {
		sample.CloudWatchCPU, sample.CloudWatchMemory = clampPercent(cw.CPU), clampPercent(cw.Memory)
	}
	if st.Endpoint != "" {
		status, version, ready := worker.ServiceUnavailable, "", false
		var info application.CMLSystemInformation
		err := rt.call(ctx, func(ctx context.Context) (err error) {
			info, err = rt.deps.CML.SystemInformation(ctx, st.Endpoint)
			return err
		})
		if err == nil {
			out.reachable = true
			status, version, ready = worker.ServiceAvailable, info.Version, info.Ready
			rt.readController(ctx, st, &sample, &status)
		} else if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if serviceDiffers(st, status, version, ready) {
			if _, err := rt.deps.App.ObserveService(ctx, st.ID, status, version, ready); err != nil {
				return out, fmt.Errorf("record service status: %w", err)
			}
		}
	}
	if _, err := rt.deps.Telemetry.RecordMetrics(ctx, st.ID, sample); err != nil {
		return out, fmt.Errorf("record metrics: %w", err)
	}
	out.sampled = true
	return out, nil
}

// readController reads health, stats and licensing of a reachable
// controller into the sample; an unhealthy controller is degraded. Each call
// that fails is logged and leaves its values null.
func (rt *runtime) readController(ctx context.Context, st worker.State, sample *worker.MetricsSampled, status *worker.ServiceStatus) {
	var health application.CMLSystemHealth
	if err := rt.call(ctx, func(ctx context.Context) (err error) {
		health, err = rt.deps.CML.SystemHealth(ctx, st.Endpoint)
		return err
	}); err == nil {
		if !health.Valid {
			*status = worker.ServiceDegraded
		}
	} else {
		rt.logCMLError(ctx, st, "system_health", err)
	}
	var stats application.CMLSystemStats
	if err := rt.call(ctx, func(ctx context.Context) (err error) {
		stats, err = rt.deps.CML.SystemStats(ctx, st.Endpoint)
		return err
	}); err == nil {
		sample.CMLCPU, sample.CMLMemory, sample.CMLDisk = clampPercent(stats.CPUPercent), clampPercent(stats.MemoryPercent), clampPercent(stats.DiskPercent)
		running, total := max(stats.NodesRunning, 0), max(stats.NodesTotal, 0)
		sample.NodesRunning, sample.NodesTotal = &running, &total
	} else {
		rt.logCMLError(ctx, st, "system_stats", err)
	}
	var lic application.CMLLicensing
	if err := rt.call(ctx, func(ctx context.Context) (err error) {
		lic, err = rt.deps.CML.Licensing(ctx, st.Endpoint)
		return err
	}); err == nil {
		if s := lic.Status(); s != st.License && st.LicenseOperation == worker.LicenseOpNone {
			if _, err := rt.deps.App.ObserveLicense(ctx, st.ID, s); err != nil {
				rt.log.WarnContext(ctx, "jobs: cannot record the licence status", slog.String("worker_id", st.ID), slog.Any("error", err))
			}
		}
	} else {
		rt.logCMLError(ctx, st, "licensing", err)
	}
}

func (rt *runtime) logCMLError(ctx context.Context, st worker.State, call string, err error) {
	if ctx.Err() == nil {
		rt.log.InfoContext(ctx, "jobs: CML call failed", slog.String("worker_id", st.ID), slog.String("call", call), slog.Any("error", err))
	}
}

// serviceDiffers mirrors the aggregate's rule (an unavailable controller
// keeps its last version and is not ready) to skip observations that change
// nothing.
func serviceDiffers(st worker.State, status worker.ServiceStatus, version string, ready bool) bool {
	if status == worker.ServiceUnavailable {
		version, ready = st.CMLVersion, false
	}
	return status != st.Service || version != st.CMLVersion || ready != st.CMLReady
}

// clampPercent keeps a reported percentage within 0–100 (controllers
// round; a sample outside the range would be refused whole).
func clampPercent(p *float64) *float64 {
	if p == nil || *p != *p {
		return nil
	}
	v := min(max(*p, 0), 100)
	return &v
}
