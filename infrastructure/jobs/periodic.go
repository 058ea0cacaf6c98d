package jobs

import (
	"time"

	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
)

// periodic is one periodic job: a kind (per region or global), its
// interval, read from the effective runtime settings when it has a setting,
// and its arguments.
type periodic struct {
	kind     application.JobKind
	region   string
	interval func(settings.Values) time.Duration
	args     func(manual bool) river.JobArgs
}

// seconds reads an interval setting.
func seconds(get func(settings.Values) int64) func(settings.Values) time.Duration {
	return func(v settings.Values) time.Duration { return time.Duration(get(v)) * time.Second }
}

// periodics lists the periodic jobs: fleet_reconcile and fleet_metrics per
// region, labs_sync, idle_check and telemetry_prune, and auto_import when it
// is on.
func (rt *runtime) periodics() []periodic {
	var out []periodic
	for _, region := range rt.deps.Regions {
		out = append(out,
			periodic{kind: application.JobFleetReconcile, region: region,
				interval: seconds(func(v settings.Values) int64 { return v.FleetReconcileSeconds }),
				args:     func(manual bool) river.JobArgs { return ReconcileArgs{Region: region, Manual: manual} }},
			periodic{kind: application.JobFleetMetrics, region: region,
				interval: seconds(func(v settings.Values) int64 { return v.FleetMetricsSeconds }),
				args:     func(manual bool) river.JobArgs { return MetricsArgs{Region: region, Manual: manual} }})
	}
	out = append(out,
		periodic{kind: application.JobLabsSync,
			interval: seconds(func(v settings.Values) int64 { return v.LabsSyncSeconds }),
			args:     func(manual bool) river.JobArgs { return LabsSyncArgs{Manual: manual} }},
		periodic{kind: application.JobIdleCheck,
			interval: seconds(func(v settings.Values) int64 { return v.IdleCheckSeconds }),
			args:     func(manual bool) river.JobArgs { return IdleCheckArgs{Manual: manual} }},
		periodic{kind: application.JobTelemetryPrune,
			interval: func(settings.Values) time.Duration { return prunePeriod },
			args:     func(manual bool) river.JobArgs { return PruneArgs{Manual: manual} }})
	if rt.opts.AutoImport.Enabled {
		every := rt.opts.AutoImport.Interval
		out = append(out, periodic{kind: application.JobAutoImport,
			interval: func(settings.Values) time.Duration { return every },
			args:     func(manual bool) river.JobArgs { return AutoImportArgs{Manual: manual} }})
	}
	return out
}

// currentInterval is the job's interval under the cached settings, never
// below settings.MinInterval.
func (rt *runtime) currentInterval(p periodic) time.Duration {
	return max(p.interval(rt.cachedSettings()), settings.MinInterval)
}

// alignedSchedule runs a job at every multiple of its current interval
// (UTC), and re-reads the interval at least every recheck, so that a changed
// setting applies within recheck, without a restart. Each firing inserts the
// job unique for its period (ByPeriod = the interval): the firings between
// two multiples find the period's job there and insert nothing, and so does
// any other instance that leads meanwhile. The job of the current period is
// therefore inserted once, soon after start or after a change of interval.
type alignedSchedule struct {
	interval func() time.Duration
	recheck  time.Duration
}

// Next implements river.PeriodicSchedule.
func (s alignedSchedule) Next(t time.Time) time.Time {
	p := s.interval()
	next := t.Truncate(p).Add(p)
	if soon := t.Add(s.recheck); soon.Before(next) {
		return soon
	}
	return next
}

// riverPeriodicJobs builds the River periodic jobs of the list.
func (rt *runtime) riverPeriodicJobs(list []periodic) []*river.PeriodicJob {
	out := make([]*river.PeriodicJob, 0, len(list))
	for _, p := range list {
		interval := func() time.Duration { return rt.currentInterval(p) }
		out = append(out, river.NewPeriodicJob(
			alignedSchedule{interval: interval, recheck: rt.opts.PeriodicRecheck},
			func() (river.JobArgs, *river.InsertOpts) {
				return p.args(false), &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true, ByPeriod: interval()}}
			},
			nil))
	}
	return out
}
