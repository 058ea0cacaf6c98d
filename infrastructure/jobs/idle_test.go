package jobs

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
)

// idleDefaults: 5 min idle timeout, 30 min snooze after any start.
func idleDefaults(v *settings.Values) {
	v.IdleTimeoutSeconds = int64(worker.MinIdleTimeout / time.Second)
	v.IdleSnoozeSeconds = 1800
}

func TestIdleDetectionEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{defaults: idleDefaults})
	ids := e.importRunning(t, 3)
	person, robot, optedOut := ids[0], ids[1], ids[2]
	e.settle(t)
	_, err := e.app.SetIdleDetection(adminCtx, optedOut, false, 0)
	require.NoError(t, err)
	e.waitCaughtUp(t)

	e.clock.Advance(40 * time.Minute) // past the snooze and the timeout
	ctrl := func(id string) *cmlsim.Controller { return e.cloud.Fleet.Controller(e.view(t, id).InstanceID) }
	ctrl(person).AddUserActivity("7d5b1c7e-2a4f-4b8e-9f0a-1c2d3e4f5a6b") // somebody in the UI
	for _, id := range ids {
		ctrl(id).AddUserActivity(cmlsim.AutomationUserID) // the product's own API user
	}

	res, err := e.svc.rt.checkIdle(cycleCtx(application.JobIdleCheck))
	require.NoError(t, err)
	require.Equal(t, 2, res.Checked, "the opted-out worker is not checked")
	require.Equal(t, 1, res.Activity)
	require.Equal(t, 1, res.Stopped)

	// A person's activity keeps the worker up.
	e.waitCaughtUp(t)
	v := e.view(t, person)
	require.Equal(t, worker.StatusRunning, v.Status)
	require.WithinDuration(t, e.clock.Now(), v.LastActivityAt, time.Minute)
	require.Equal(t, 1, count(e.types(t, worker.Stream(person)), "activity_observed"))

	// Only the automation user: stopped for idleness, counted as automatic.
	v = e.waitStatus(t, robot, worker.StatusStopped)
	require.Equal(t, worker.StopIdleTimeout, v.StopReason)
	require.Equal(t, 1, v.AutoStopCount)
	require.Zero(t, v.ManualStopCount)
	require.True(t, v.LastActivityAt.IsZero(), "the automation user's events are not activity")
	types := e.types(t, worker.Stream(robot))
	require.Equal(t, []string{"idle_detected", "stop_requested"}, idleTail(types))

	// Opted out: never stopped.
	require.Equal(t, worker.StatusRunning, e.view(t, optedOut).Status)

	// A second check with nothing new appends nothing.
	e.waitCaughtUp(t)
	before := e.lifecycleEvents(t)
	res, err = e.svc.rt.checkIdle(cycleCtx(application.JobIdleCheck))
	require.NoError(t, err)
	require.Zero(t, res.Activity+res.Stopped)
	require.Equal(t, before, e.lifecycleEvents(t))
}

// idleTail returns the idle_detected event and the one after it.
func idleTail(types []string) []string {
	for i, t := range types {
		if t == "idle_detected" && i+1 < len(types) {
			return types[i : i+2]
		}
	}
	return nil
}

func TestStartOutsideTheProductSnoozesIdleDetection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{defaults: idleDefaults})
	id := e.importRunning(t, 1)[0]
	e.settle(t)
	_, err := e.app.StopWorker(managerCtx, id)
	require.NoError(t, err)
	e.waitStatus(t, id, worker.StatusStopped)
	e.clock.Advance(2 * time.Hour)

	// Somebody starts the instance in the AWS console.
	require.NoError(t, e.cloud.Sim.Console().Start(e.view(t, id).InstanceID))
	waitFor(t, "EC2 running", func() (bool, string) {
		in, _ := e.cloud.Sim.Instance(e.view(t, id).InstanceID)
		return in.State == "running", in.State
	})
	_, err = e.svc.rt.reconcile(cycleCtx(application.JobFleetReconcile), region)
	require.NoError(t, err)
	v := e.waitStatus(t, id, worker.StatusRunning)
	require.Equal(t, 1, v.ExternalStartCount)
	started := v.LastStartedAt
	_, err = e.svc.rt.collectMetrics(cycleCtx(application.JobFleetMetrics), region)
	require.NoError(t, err)
	e.waitServiceStatus(t, id, worker.ServiceAvailable)

	// Idle for 10 min (past the 5 min timeout) but within the 30 min snooze
	// that follows any start.
	e.clock.Advance(10 * time.Minute)
	res, err := e.svc.rt.checkIdle(cycleCtx(application.JobIdleCheck))
	require.NoError(t, err)
	require.Zero(t, res.Stopped)
	st, err := e.app.IdleStatus(adminCtx, id)
	require.NoError(t, err)
	require.True(t, st.Idle)
	require.True(t, st.InSnooze)
	require.Equal(t, "snoozed after a start", st.Reason)
	require.Equal(t, started, st.LastStartedAt)

	// After the snooze it is stopped.
	e.clock.Advance(25 * time.Minute)
	res, err = e.svc.rt.checkIdle(cycleCtx(application.JobIdleCheck))
	require.NoError(t, err)
	require.Equal(t, 1, res.Stopped)
	v = e.waitStatus(t, id, worker.StatusStopped)
	require.Equal(t, worker.StopIdleTimeout, v.StopReason)
}

// The product's own CML user is never a person's activity, even when no
// configured pattern names it: the CML client learns its user id at login
// (/auth_extended) and the activity filter leaves it out.
func TestOwnCMLUserIsNotActivityWithoutAPattern(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{defaults: idleDefaults, jobs: Options{ActivityExcludedPattern: "^matches-no-user-id$"}})
	id := e.importRunning(t, 1)[0]
	e.settle(t)

	e.clock.Advance(40 * time.Minute)
	e.cloud.Fleet.Controller(e.view(t, id).InstanceID).AddUserActivity(cmlsim.AutomationUserID)
	res, err := e.svc.rt.checkIdle(cycleCtx(application.JobIdleCheck))
	require.NoError(t, err)
	require.Zero(t, res.Activity, "the product's own calls counted as activity")
	require.Equal(t, 1, res.Stopped)
	v := e.waitStatus(t, id, worker.StatusStopped)
	require.Equal(t, worker.StopIdleTimeout, v.StopReason)
}
