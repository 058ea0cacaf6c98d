package jobs

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

// workerInstances returns the simulated instances tagged with the worker's id.
func (e *env) workerInstances(id string) []cloudsim.Instance {
	var out []cloudsim.Instance
	for _, in := range e.cloud.Sim.Instances(region) {
		if in.Tags[worker.TagWorkerID] == id {
			out = append(out, in)
		}
	}
	return out
}

func (e *env) create(t *testing.T, name string) string {
	t.Helper()
	res, err := e.app.CreateWorker(adminCtx, application.CreateWorker{Name: name, Region: region})
	require.NoError(t, err)
	return res.ID
}

func TestCreateLaunchesAndRunsTheWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.create(t, "lab-1")
	v := e.waitStatus(t, id, worker.StatusRunning)
	insts := e.workerInstances(id)
	require.Len(t, insts, 1)
	require.Equal(t, insts[0].ID, v.InstanceID)
	require.Equal(t, ClientToken(id, 1), insts[0].ClientToken)
	require.Equal(t, "lab-1", insts[0].Tags["Name"])
	require.Equal(t, worker.TagManagedByValue, insts[0].Tags[worker.TagManagedBy])
	require.NotEmpty(t, v.Endpoint, "the launch job records the CML endpoint")
	types := e.types(t, worker.Stream(id))
	require.Equal(t, 1, count(types, "instance_launched"), "%v", types)

	// Every event the job appended says who and why.
	for _, rec := range e.events(t, worker.Stream(id))[1:] {
		m, err := application.ParseMetadata(rec.Metadata)
		require.NoError(t, err)
		require.Equal(t, "system", m.Actor.Type, rec.Type)
		require.Equal(t, "system:ec2_launch", m.Actor.Subject, rec.Type)
		require.Equal(t, e.events(t, worker.Stream(id))[0].ID, m.CausationID, rec.Type)
	}
}

func TestLaunchRetriedAfterTimeoutCreatesExactlyOneInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{jobs: Options{CallTimeout: 300 * time.Millisecond}})
	// The simulator creates the instance, then answers late: the first call
	// times out after the instance exists, as with a slow EC2.
	e.cloud.Sim.SetFaults("ec2:RunInstances", cloudsim.Faults{Latency: 2 * time.Second})
	id := e.create(t, "slow-launch")
	waitFor(t, "a RunInstances call", func() (bool, string) {
		return e.cloud.Sim.CallCount("ec2:RunInstances") >= 1, ""
	})
	waitFor(t, "the instance of the first call", func() (bool, string) { return len(e.workerInstances(id)) == 1, "" })
	waitFor(t, "the first attempt to time out", func() (bool, string) {
		var errs []byte
		err := e.pool.QueryRow(context.Background(), `SELECT errors::text FROM river_job WHERE kind = 'ec2_launch'`).Scan(&errs)
		return err == nil && len(errs) > 0 && string(errs) != "null", string(errs)
	})
	e.cloud.Sim.ClearFaults()
	e.waitStatus(t, id, worker.StatusRunning)
	require.GreaterOrEqual(t, e.cloud.Sim.CallCount("ec2:RunInstances"), int64(2), "the launch was retried")
	require.Len(t, e.workerInstances(id), 1, "the retry found the first instance by its ClientToken")
	require.Equal(t, 1, count(e.types(t, worker.Stream(id)), "instance_launched"))
}

func TestCrashMidLaunchCompletesExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// crash ends the first service while its launch call is in flight.
		crash func(t *testing.T, e *env, svc *Service)
	}{
		{"shutdown cancels the job", func(t *testing.T, e *env, svc *Service) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // no grace: cancel the running job at once
			_ = svc.Stop(ctx)
			hard, stop := context.WithTimeout(context.Background(), 10*time.Second)
			defer stop()
			require.NoError(t, svc.Client().StopAndCancel(hard))
		}},
		{"process killed, job left running", func(t *testing.T, e *env, svc *Service) {
			hard, stop := context.WithTimeout(context.Background(), 10*time.Second)
			defer stop()
			require.NoError(t, svc.Client().StopAndCancel(hard))
			svc.cancel()
			<-svc.done
			// A killed process leaves its job running; only the rescuer
			// gives it to another process.
			_, err := e.pool.Exec(context.Background(), `UPDATE river_job SET state = 'running', finalized_at = NULL,
				attempted_at = now() - interval '1 hour', scheduled_at = now() - interval '1 hour' WHERE kind = 'ec2_launch'`)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{noService: true})
			e.cloud.Sim.SetFaults("ec2:RunInstances", cloudsim.Faults{Latency: 3 * time.Second})
			first, err := New(context.Background(), e.pool, e.deps, e.opts)
			require.NoError(t, err)
			require.NoError(t, first.Start(context.Background()))
			id := e.create(t, "crash")
			waitFor(t, "the launch call in flight", func() (bool, string) {
				return e.cloud.Sim.CallCount("ec2:RunInstances") >= 1, ""
			})
			tc.crash(t, e, first)
			require.Empty(t, e.events(t, worker.Stream(id))[1:], "a cancelled job records nothing")

			e.cloud.Sim.ClearFaults()
			opts := e.opts
			opts.RescueStuckJobsAfter = time.Second
			e.startService(t, opts)
			e.waitStatus(t, id, worker.StatusRunning)
			require.Len(t, e.workerInstances(id), 1)
			types := e.types(t, worker.Stream(id))
			require.Equal(t, 1, count(types, "instance_launched"), "%v", types)
			require.Zero(t, count(types, "provisioning_failed"), "%v", types)
		})
	}
}

func TestPermanentLaunchFailureIsRecordedAndCancelsTheJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.cloud.Sim.FailNext("ec2:RunInstances", "InsufficientInstanceCapacity", 1)
	id := e.create(t, "no-capacity")
	v := e.waitStatus(t, id, worker.StatusFailed)
	require.NotNil(t, v.LastFailure)
	require.Equal(t, "InsufficientInstanceCapacity", v.LastFailure.Code)
	waitFor(t, "the job cancelled", func() (bool, string) {
		var state string
		_ = e.pool.QueryRow(context.Background(), `SELECT state FROM river_job WHERE kind = 'ec2_launch'`).Scan(&state)
		return state == "cancelled", state
	})
	require.Empty(t, e.workerInstances(id))

	// A deliberate retry gets a new token and launches.
	_, err := e.app.RetryProvisioning(adminCtx, id)
	require.NoError(t, err)
	v = e.waitStatus(t, id, worker.StatusRunning)
	insts := e.workerInstances(id)
	require.Len(t, insts, 1)
	require.Equal(t, ClientToken(id, 2), insts[0].ClientToken)
	require.Equal(t, 2, v.LaunchAttempt)
}

func TestStopStartTerminateThroughTheJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ids := e.importRunning(t, 1)
	id := ids[0]
	_, err := e.app.StopWorker(managerCtx, id)
	require.NoError(t, err)
	v := e.waitStatus(t, id, worker.StatusStopped)
	require.Equal(t, worker.StopManual, v.StopReason)
	require.Equal(t, 1, v.ManualStopCount)
	_, err = e.app.StartWorker(managerCtx, id)
	require.NoError(t, err)
	e.waitStatus(t, id, worker.StatusRunning)
	_, err = e.app.TerminateWorker(adminCtx, id)
	require.NoError(t, err)
	e.waitStatus(t, id, worker.StatusTerminated)
	in, ok := e.cloud.Sim.Instance(v.InstanceID)
	require.True(t, ok)
	require.Equal(t, cloudsim.StateTerminated, in.State)

	// The stop job's events carry the stop request as their cause.
	var stopReq string
	for _, rec := range e.events(t, worker.Stream(id)) {
		m, err := application.ParseMetadata(rec.Metadata)
		require.NoError(t, err)
		if shortType(rec.Type) == "stop_requested" {
			stopReq = rec.ID
		}
		if m.Actor.Subject == "system:ec2_stop" {
			require.Equal(t, stopReq, m.CausationID)
		}
	}
	require.NotEmpty(t, stopReq)
}

func TestTagsAndMonitoringReachTheInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.importRunning(t, 1)[0]
	v := e.view(t, id)
	// The reactor tags an imported instance with the product's tags.
	waitFor(t, "reserved tags", func() (bool, string) {
		in, _ := e.cloud.Sim.Instance(v.InstanceID)
		return in.Tags[worker.TagWorkerID] == id, ""
	})
	_, err := e.app.ReplaceWorkerTags(managerCtx, id, map[string]string{"team": "blue", "Name": "renamed"})
	require.NoError(t, err)
	waitFor(t, "the new tags on the instance", func() (bool, string) {
		in, _ := e.cloud.Sim.Instance(v.InstanceID)
		b, _ := json.Marshal(in.Tags)
		return in.Tags["team"] == "blue" && in.Tags["Name"] == "renamed" && in.Tags[worker.TagManagedBy] == worker.TagManagedByValue, string(b)
	})
	// An imported worker starts with monitoring off in the product (the
	// instance had it on): switch it on, then off.
	_, err = e.app.SetDetailedMonitoring(adminCtx, id, true)
	require.NoError(t, err)
	_, err = e.app.SetDetailedMonitoring(adminCtx, id, false)
	require.NoError(t, err)
	waitFor(t, "monitoring off", func() (bool, string) {
		in, _ := e.cloud.Sim.Instance(v.InstanceID)
		return in.Monitoring == "disabled", in.Monitoring
	})
}
