package jobs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
)

// settle runs reconcile and metrics cycles until one appends no lifecycle
// event (the first cycles after an import record the instance's tags and
// the controller's service).
func (e *env) settle(t *testing.T) {
	t.Helper()
	rt := e.svc.rt
	for range 10 {
		e.waitTagsApplied(t)
		e.waitCaughtUp(t)
		before := e.lifecycleEvents(t)
		_, err := rt.reconcile(cycleCtx(application.JobFleetReconcile), region)
		require.NoError(t, err)
		_, err = rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
		require.NoError(t, err)
		if e.lifecycleEvents(t) == before {
			e.waitCaughtUp(t)
			return
		}
	}
	t.Fatal("the fleet does not settle")
}

// waitTagsApplied waits until no ec2_tags or worker_refresh job (the
// reactor's follow-up of an import) is left to run.
func (e *env) waitTagsApplied(t *testing.T) {
	t.Helper()
	for _, kind := range []application.JobKind{application.JobEC2Tags, application.JobWorkerRefresh} {
		waitFor(t, string(kind)+" jobs done", func() (bool, string) {
			pending, err := e.svc.rt.pendingJobs(context.Background(), kind)
			return err == nil && len(pending) == 0, fmt.Sprint(len(pending), err)
		})
	}
}

// lifecycleEvents counts the events of every worker lifecycle stream.
func (e *env) lifecycleEvents(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE stream LIKE 'worker-%'`).Scan(&n))
	return n
}

func TestThrottlingStormDuringStartAndStopOf20Workers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ids := e.importRunning(t, 20)
	e.waitTagsApplied(t)
	e.cloud.Sim.SetFaults("", cloudsim.Faults{ThrottleRate: 0.5})
	for _, id := range ids {
		_, err := e.app.StopWorker(managerCtx, id)
		require.NoError(t, err)
	}
	for _, id := range ids {
		e.waitStatus(t, id, worker.StatusStopped)
	}
	for _, id := range ids {
		_, err := e.app.StartWorker(managerCtx, id)
		require.NoError(t, err)
	}
	for _, id := range ids {
		e.waitStatus(t, id, worker.StatusRunning)
	}
	require.Positive(t, e.cloud.Sim.Calls()["ec2:StopInstances"])
	e.cloud.Sim.ClearFaults()
	for _, id := range ids {
		types := e.types(t, worker.Stream(id))
		require.Equal(t, 1, count(types, "stop_requested"), "%s: %v", id, types)
		require.Equal(t, 1, count(types, "start_requested"), "%s: %v", id, types)
		require.Zero(t, count(types, "stop_failed")+count(types, "start_failed"), "%s: %v", id, types)
		// No observation is recorded twice: consecutive observations differ.
		var prev string
		for _, rec := range e.events(t, worker.Stream(id)) {
			if shortType(rec.Type) != "instance_state_observed" {
				prev = ""
				continue
			}
			require.NotEqual(t, prev, string(rec.Data), "%s: an observation recorded twice", id)
			prev = string(rec.Data)
		}
	}
}

func TestOutOfBandStopIsObservedWithinOneReconcileInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		periodic: true,
		jobs:     Options{PeriodicRecheck: 200 * time.Millisecond},
		defaults: func(v *settings.Values) { v.FleetReconcileSeconds = int64(settings.MinInterval / time.Second) },
	})
	ids := e.importRunning(t, 1)
	id := ids[0]
	// The periodic reconciliation (every 10 s) observes the instance's tags
	// once the reactor's tag job applied them.
	waitFor(t, "the first reconciliations", func() (bool, string) {
		v := e.view(t, id)
		return v.Tags[worker.TagWorkerID] == id, fmt.Sprint(v.Tags)
	})
	inst := e.view(t, id).InstanceID
	require.NoError(t, e.cloud.Sim.Console().Stop(inst))
	waitFor(t, "EC2 stopped", func() (bool, string) {
		in, _ := e.cloud.Sim.Instance(inst)
		return in.State == cloudsim.StateStopped, in.State
	})
	stoppedAt := time.Now()
	v := e.waitStatus(t, id, worker.StatusStopped)
	require.Less(t, time.Since(stoppedAt), time.Duration(e.svc.rt.cachedSettings().FleetReconcileSeconds)*time.Second+5*time.Second)
	require.Equal(t, worker.StopExternal, v.StopReason)
	require.Equal(t, 1, v.ExternalStopCount)
	var external bool
	for _, rec := range e.events(t, worker.Stream(id)) {
		if shortType(rec.Type) == "instance_state_observed" {
			e, _, err := application.Decode(application.EventRegistry(), rec)
			require.NoError(t, err)
			obs := e.(worker.InstanceStateObserved)
			if obs.EC2State == worker.EC2Stopped || obs.EC2State == worker.EC2Stopping {
				external = external || obs.External
			}
		}
	}
	require.True(t, external, "the stop is recorded as external")
}

func TestSteadyFleetCycleAppendsNoLifecycleEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ids := e.importRunning(t, 10)
	e.settle(t)
	for _, id := range ids {
		v := e.view(t, id)
		require.Equal(t, worker.ServiceAvailable, v.Service, "%s", id)
		require.Equal(t, id, v.Tags[worker.TagWorkerID], "the instance's tags are observed")
	}
	head := e.head(t)
	e.cloud.Sim.ResetCalls()
	rec, err := e.svc.rt.reconcile(cycleCtx(application.JobFleetReconcile), region)
	require.NoError(t, err)
	met, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	require.Zero(t, rec.Events)
	require.Zero(t, rec.Observed, "a steady fleet sends no observation to the aggregates")
	require.Equal(t, len(ids), met.Samples)
	after := e.eventsAfter(t, head, eventstore.Filter{})
	for _, r := range after {
		require.True(t, worker.IsTelemetry(r.Type), "lifecycle event %s appended by a steady cycle", r.Type)
	}
	require.Equal(t, len(ids), len(after), "one metrics sample per worker")
	require.LessOrEqual(t, e.cloud.Sim.CallCount(""), int64(4), "calls: %v", e.cloud.Sim.Calls())
}

func TestCMLTokenExpiryMidCycleLogsInOnceAndLosesNoSample(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ids := e.importRunning(t, 3)
	e.settle(t)
	logins := e.cloud.CML.Logins()
	require.EqualValues(t, len(ids), logins, "one login per controller so far")

	// Tokens die: the first authenticated call of each controller gets 401,
	// logs in again once and retries.
	e.cloud.Fleet.ExpireAllTokens()
	e.waitCaughtUp(t)
	head := e.head(t)
	res, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	require.Equal(t, len(ids), res.Samples)
	require.EqualValues(t, logins+int64(len(ids)), e.cloud.CML.Logins(), "one re-login per controller")

	// A single 401 in the middle of a cycle, after system_information.
	e.cloud.Fleet.Controller(e.view(t, ids[0]).InstanceID).UnauthorizeNext()
	res, err = e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	require.Equal(t, len(ids), res.Samples)
	require.EqualValues(t, logins+int64(len(ids))+1, e.cloud.CML.Logins())

	// Every sample of both cycles carries the controller's values.
	after := e.eventsAfter(t, head, eventstore.Filter{TypePrefixes: []string{"worker.metrics_sampled."}})
	require.Equal(t, 2*len(ids), len(after))
	for _, rec := range after {
		ev, _, err := application.Decode(application.EventRegistry(), rec)
		require.NoError(t, err)
		m := ev.(worker.MetricsSampled)
		require.NotNil(t, m.CMLCPU, "sample without CML values: %s", rec.Data)
		require.NotNil(t, m.NodesTotal)
	}
}

func TestCML502WhileBootingThenAvailableWithoutOperator(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ids := e.importRunning(t, 1)
	id := ids[0]
	e.settle(t)
	require.Equal(t, worker.ServiceAvailable, e.view(t, id).Service)
	ctrl := e.cloud.Fleet.Controller(e.view(t, id).InstanceID)

	ctrl.SetUnavailable(true) // nginx answers 502, as while CML boots
	_, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	v := e.waitServiceStatus(t, id, worker.ServiceUnavailable)
	require.False(t, v.CMLReady)

	ctrl.SetUnavailable(false)
	_, err = e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	v = e.waitServiceStatus(t, id, worker.ServiceAvailable)
	require.True(t, v.CMLReady)
	require.Equal(t, cmlsim.DefaultVersion, v.CMLVersion)
}

func (e *env) waitServiceStatus(t *testing.T, id string, s worker.ServiceStatus) application.WorkerView {
	t.Helper()
	var v application.WorkerView
	waitFor(t, "service "+string(s), func() (bool, string) {
		v = e.view(t, id)
		return v.Service == s, string(v.Service)
	})
	return v
}

func TestNewWorkerBootingControllerBecomesAvailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{sim: simOptionsBoot(2 * time.Second)})
	id := e.importRunning(t, 1)[0]
	e.waitTagsApplied(t)
	_, err := e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	e.waitCaughtUp(t)
	require.Equal(t, worker.ServiceUnavailable, e.view(t, id).Service, "502 while booting")
	waitFor(t, "the controller up", func() (bool, string) {
		st := e.cloud.Fleet.Controller(e.view(t, id).InstanceID).State()
		return st == cmlsim.PowerReady, string(st)
	})
	_, err = e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	e.waitServiceStatus(t, id, worker.ServiceAvailable)
}

func simOptionsBoot(d time.Duration) simulation.Options {
	return simulation.Options{BootDelay: d}
}
