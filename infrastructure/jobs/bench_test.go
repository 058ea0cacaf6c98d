package jobs

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
)

// benchFleet is the size of the benchmarks' fleet.
const benchFleet = 1000

// benchConcurrency is the CML concurrency of the benchmarks' fleet jobs.
const benchConcurrency = 64

// newBenchEnv builds a steady fleet of n running workers in one region and
// an insert-only job service whose fleet jobs the benchmark runs itself (no
// job worker, reactor or periodic job runs in the background).
func newBenchEnv(b *testing.B, n int) *env {
	b.Helper()
	e := newEnv(b, envOptions{noService: true, jobs: Options{CMLConcurrency: benchConcurrency, ReconcileConcurrency: 16}})
	e.svc = e.insertOnly2(b)
	insts, err := e.cloud.Sim.Console().Launch(region, cloudsim.ConsoleLaunch{
		ImageID: cloudsim.ImageID(region, simulation.DefaultAMIName), Count: n, Running: true,
		DetailedMonitoring: true, Tags: map[string]string{worker.TagManagedBy: worker.TagManagedByValue},
	})
	require.NoError(b, err)
	var wg sync.WaitGroup
	errs := make(chan error, len(insts))
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				in := insts[i]
				_, err := e.app.ImportWorker(adminCtx, application.ImportWorker{
					Name: fmt.Sprintf("w-%04d", i), Region: region, InstanceID: in.ID, InstanceType: in.InstanceType,
					AMIID: in.ImageID, State: worker.EC2State(in.State), PublicIP: in.PublicIP, PrivateIP: in.PrivateIP,
					Endpoint: strings.ReplaceAll(e.cloud.EndpointTemplate, "{instance_id}", in.ID), Tags: in.Tags,
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range insts {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	e.waitCaughtUp(b)
	// The first cycle records every controller's service and licence.
	e.cycle(b)
	e.waitCaughtUp(b)
	return e
}

// insertOnly2 is insertOnly for a testing.TB.
func (e *env) insertOnly2(tb testing.TB) *Service {
	opts := e.opts
	opts.InsertOnly = true
	return e.startService(tb, opts)
}

// cycle runs one reconciliation and one metrics collection of the region.
func (e *env) cycle(tb testing.TB) (ReconcileResult, MetricsResult) {
	tb.Helper()
	rec, err := e.svc.rt.reconcile(cycleCtx(application.JobFleetReconcile), region)
	require.NoError(tb, err)
	met, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(tb, err)
	return rec, met
}

// upstreamCallsPerWorker is what the upstream collection costs per worker
// and cycle (upstream-behaviour.md section 5.2: DescribeInstanceStatus,
// DescribeInstances, DescribeImages, DescribeTags, a DescribeInstances
// existence check and two GetMetricStatistics).
const upstreamCallsPerWorker = 7

// BenchmarkFleetCycleAWSCalls counts the AWS API calls (simulator counters)
// of one reconcile + metrics cycle over benchFleet running workers.
func BenchmarkFleetCycleAWSCalls(b *testing.B) {
	e := newBenchEnv(b, benchFleet)
	var calls int64
	var events int
	for b.Loop() {
		e.cloud.Sim.ResetCalls()
		rec, met := e.cycle(b)
		calls = e.cloud.Sim.CallCount("")
		events += rec.Events
		require.Equal(b, benchFleet, met.Samples)
	}
	b.ReportMetric(float64(calls), "aws_calls/cycle")
	b.ReportMetric(float64(benchFleet*upstreamCallsPerWorker)/float64(calls), "x_fewer_than_upstream")
	b.ReportMetric(float64(events), "lifecycle_events")
	b.Logf("AWS calls of one cycle over %d workers: %v", benchFleet, e.cloud.Sim.Calls())
}

// BenchmarkCMLLoginsPerWorkerHour counts the CML logins of an hour of
// metrics collection at a 5-minute poll (12 cycles, the clock moved 5
// minutes between them): the first hour of a cold CML client (the
// environment's first cycle and 11 more), then a steady hour. Run it with
// -benchtime 1x: later iterations only repeat the steady hour.
func BenchmarkCMLLoginsPerWorkerHour(b *testing.B) {
	e := newBenchEnv(b, benchFleet) // its first cycle is the cold client's first
	poll := func(cycles int) {
		for range cycles {
			e.clock.Advance(5 * time.Minute)
			_, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
			require.NoError(b, err)
		}
	}
	poll(11)
	cold := float64(e.cloud.CML.Logins()) / benchFleet
	var steady float64
	for b.Loop() {
		before := e.cloud.CML.Logins()
		poll(12)
		steady = float64(e.cloud.CML.Logins()-before) / benchFleet
	}
	b.ReportMetric(cold, "logins/worker/hour_cold")
	b.ReportMetric(steady, "logins/worker/hour_steady")
}

// BenchmarkFleetCycleWallTime50msCML times one reconcile + metrics cycle
// over benchFleet workers whose controllers answer after 50 ms, with
// benchConcurrency controllers polled at once.
func BenchmarkFleetCycleWallTime50msCML(b *testing.B) {
	e := newBenchEnv(b, benchFleet)
	e.cloud.Fleet.SetFaults(cmlsim.Faults{Latency: 50 * time.Millisecond})
	for b.Loop() {
		e.cycle(b)
	}
	b.ReportMetric(float64(benchConcurrency), "cml_concurrency")
}
