package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// step is one command of a sequence; its events are applied before the next.
type step func(w *worker.Worker) ([]domain.Event, error)

func observe(state worker.EC2State) step {
	return func(w *worker.Worker) ([]domain.Event, error) {
		o := worker.Observation{InstanceID: instanceID, State: state, PrivateIP: privateIP, InstanceType: instanceType}
		if state == worker.EC2Running {
			o.PublicIP, o.SystemStatus, o.InstanceStatus = publicIP, "ok", "ok"
		}
		return w.ObserveInstance(o)
	}
}

func requestStop(w *worker.Worker) ([]domain.Event, error)  { return w.RequestStop(worker.StopManual) }
func requestStart(w *worker.Worker) ([]domain.Event, error) { return w.RequestStart() }
func requestTermination(w *worker.Worker) ([]domain.Event, error) {
	return w.RequestTermination()
}
func remove(w *worker.Worker) ([]domain.Event, error) { return w.Remove() }

func stopIfIdle(w *worker.Worker) ([]domain.Event, error) {
	events, _, err := w.StopIfIdle(later.Add(10*24*time.Hour), idlePolicy())
	return events, err
}

func withService(name string, idle bool) []domain.Event {
	return append(history(name, idle), worker.ServiceStatusChanged{Status: worker.ServiceAvailable, Version: "2.9.0", Ready: true})
}

// TestStateAfterSequences: given a history, when a sequence of commands runs
// (each one's events applied at the next minute), then the state is right.
func TestStateAfterSequences(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given []domain.Event
		when  []step
		// then gets the worker and when(k), the time step k's events occurred.
		then func(t *testing.T, w *worker.Worker, when func(k int) time.Time)
	}{
		{
			name:  "manual stop completes",
			given: history(gRunning, false),
			when:  []step{requestStop, observe(worker.EC2Stopping), observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, 1, s.ManualStopCount)
				assert.Equal(t, 0, s.AutoStopCount)
				assert.Equal(t, 0, s.ExternalStopCount)
				assert.Equal(t, worker.StopManual, s.StopReason)
				assert.Equal(t, when(0), s.StopRequestedAt)
			},
		},
		{
			// LastStoppedAt must say when the instance last stopped, whoever
			// asked for it, not only for stops made outside the product.
			name:  "requested stop records LastStoppedAt",
			given: history(gRunning, false),
			when:  []step{requestStop, observe(worker.EC2Stopping), observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.False(t, s.LastStoppedAt.IsZero(), "LastStoppedAt is not set after a requested stop")
				assert.False(t, s.LastStoppedAt.Before(when(0)), "LastStoppedAt %v before the stop request", s.LastStoppedAt)
			},
		},
		{
			name:  "idle stop completes",
			given: history(gRunning, true),
			when:  []step{stopIfIdle, observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, 1, s.AutoStopCount)
				assert.Equal(t, 0, s.ManualStopCount)
				assert.Equal(t, 0, s.ExternalStopCount)
				assert.Equal(t, worker.StopIdleTimeout, s.StopReason)
				assert.Equal(t, when(0), s.LastIdleDetectedAt)
			},
		},
		{
			name:  "external stop",
			given: history(gRunning, false),
			when:  []step{observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, 1, s.ExternalStopCount)
				assert.Equal(t, 0, s.ManualStopCount)
				assert.Equal(t, worker.StopExternal, s.StopReason)
				assert.Equal(t, when(0), s.LastStoppedAt)
			},
		},
		{
			name:  "external stop seen stopping then stopped counts once",
			given: history(gRunning, false),
			when:  []step{observe(worker.EC2Stopping), observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, 1, s.ExternalStopCount)
				assert.Equal(t, worker.StopExternal, s.StopReason)
				// LastStoppedAt is when EC2 was seen stopped, not stopping.
				assert.Equal(t, when(1), s.LastStoppedAt)
			},
		},
		{
			name:  "requested start",
			given: history(gStopped, false),
			when:  []step{requestStart, observe(worker.EC2Pending), observe(worker.EC2Running)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, 2, s.StartCount)
				assert.Equal(t, 0, s.ExternalStartCount)
				assert.Equal(t, when(0), s.StartRequestedAt)
				assert.Equal(t, when(2), s.LastStartedAt)
			},
		},
		{
			name:  "external start sets LastStartedAt",
			given: history(gStopped, false),
			when:  []step{observe(worker.EC2Running)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, 2, s.StartCount)
				assert.Equal(t, 1, s.ExternalStartCount)
				assert.Equal(t, when(0), s.LastStartedAt)
			},
		},
		{
			name:  "external start through pending",
			given: history(gStopped, false),
			when:  []step{observe(worker.EC2Pending), observe(worker.EC2Running)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, 2, s.StartCount)
				assert.Equal(t, 1, s.ExternalStartCount)
				assert.Equal(t, when(1), s.LastStartedAt)
			},
		},
		{
			name:  "first launch is a start, not an external one",
			given: history(gPending, false),
			when:  []step{observe(worker.EC2Running)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, 1, s.StartCount)
				assert.Equal(t, 0, s.ExternalStartCount)
				assert.Equal(t, when(0), s.LastStartedAt)
				assert.Equal(t, worker.IntentNone, s.Intent)
			},
		},
		{
			name:  "a day in the life: every counter",
			given: history(gRunning, true),
			when: []step{
				requestStop, observe(worker.EC2Stopped), // manual stop
				requestStart, observe(worker.EC2Running), // requested start
				stopIfIdle, observe(worker.EC2Stopped), // idle stop
				observe(worker.EC2Running), // started in the AWS console
				observe(worker.EC2Stopped), // stopped in the AWS console
			},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, 3, s.StartCount)
				assert.Equal(t, 1, s.ExternalStartCount)
				assert.Equal(t, 1, s.ManualStopCount)
				assert.Equal(t, 1, s.AutoStopCount)
				assert.Equal(t, 1, s.ExternalStopCount)
				assert.Equal(t, worker.StopExternal, s.StopReason)
				assert.Equal(t, when(6), s.LastStartedAt)
				assert.Equal(t, when(7), s.LastStoppedAt)
			},
		},
		{
			name:  "StartFailed returns to the last observed EC2 state",
			given: history(gStarting, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordStartFailed("InsufficientInstanceCapacity", "no capacity")
			}},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, &worker.Failure{Operation: "start", Code: "InsufficientInstanceCapacity", Message: "no capacity", At: when(0)}, s.LastFailure)
				events, err := w.RequestStart()
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.StartRequested{}}, events, "the start can be retried")
			},
		},
		{
			name:  "StartFailed after pending was observed",
			given: history(gStarting, false),
			when: []step{observe(worker.EC2Pending), func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordStartFailed("Timeout", "did not reach running")
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusPending, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
			},
		},
		{
			name:  "StopFailed returns to running",
			given: history(gStopping, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordStopFailed("UnauthorizedOperation", "denied")
			}},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, &worker.Failure{Operation: "stop", Code: "UnauthorizedOperation", Message: "denied", At: when(0)}, s.LastFailure)
				assert.Equal(t, 1, s.StartCount, "a failed stop is not a new start")
				events, err := w.RequestStop(worker.StopManual)
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.StopRequested{Reason: worker.StopManual}}, events, "the stop can be retried")
			},
		},
		{
			name:  "TerminationFailed returns to running",
			given: history(gTerminating, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordTerminationFailed("OperationNotPermitted", "termination protection")
			}},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, "terminate", s.LastFailure.Operation)
				events, err := w.RequestTermination()
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.TerminationRequested{}}, events, "the termination can be retried")
			},
		},
		{
			// A failed launch has no instance and no observed EC2 state: a
			// failed termination must return it to failed, where it can be
			// retried or terminated again.
			name:  "TerminationFailed on a failed launch returns to failed",
			given: history(gFailed, false),
			when: []step{requestTermination, func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordTerminationFailed("RequestLimitExceeded", "throttled")
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Equal(t, worker.StatusFailed, w.Status())
				events, err := w.RequestTermination()
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.TerminationRequested{}}, events, "the termination can be retried")
			},
		},
		{
			// Terminating right after RunInstances, before any observation:
			// EC2's eventual consistency makes TerminateInstances fail with
			// InvalidInstanceID.NotFound. The worker must not be left in
			// terminating with no intent (a second RequestTermination would
			// be a no-op and the next running observation an "external"
			// start).
			name:  "TerminationFailed before the first observation returns to pending",
			given: history(gPending, false),
			when: []step{requestTermination, func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordTerminationFailed("InvalidInstanceID.NotFound", "eventual consistency")
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Equal(t, worker.StatusPending, w.Status())
				events, err := w.RequestTermination()
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.TerminationRequested{}}, events, "the termination can be retried")
			},
		},
		{
			name:  "termination completes",
			given: history(gRunning, false),
			when:  []step{requestTermination, observe(worker.EC2ShuttingDown), observe(worker.EC2Terminated)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusTerminated, s.Status)
				assert.True(t, s.Status.Terminal())
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, when(0), s.TerminationAskedAt)
				assert.Equal(t, when(2), s.TerminatedAt)
				assert.Equal(t, worker.ServiceUnavailable, s.Service)
			},
		},
		{
			name:  "external termination sets TerminatedAt",
			given: history(gStopped, false),
			when:  []step{observe(worker.EC2Terminated)},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusTerminated, s.Status)
				assert.Equal(t, when(0), s.TerminatedAt)
			},
		},
		{
			name:  "service reset when stopped outside the product",
			given: withService(gRunning, false),
			when:  []step{observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.ServiceUnavailable, s.Service)
				assert.False(t, s.CMLReady)
			},
		},
		{
			name:  "service reset when a requested stop completes",
			given: withService(gRunning, false),
			when:  []step{requestStop, observe(worker.EC2Stopping), observe(worker.EC2Stopped)},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.ServiceUnavailable, s.Service)
				assert.False(t, s.CMLReady)
			},
		},
		{
			name:  "service reset when shutting down outside the product",
			given: withService(gRunning, false),
			when:  []step{observe(worker.EC2ShuttingDown)},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Equal(t, worker.ServiceUnavailable, w.State().Service)
				assert.False(t, w.State().CMLReady)
			},
		},
		{
			// In terminating, service observations are ignored (ObserveService
			// records nothing), so a service left "available" here can never
			// be corrected until the instance is gone.
			name:  "service reset when termination is requested",
			given: withService(gRunning, false),
			when:  []step{requestTermination, observe(worker.EC2ShuttingDown)},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Equal(t, worker.StatusTerminating, w.Status())
				assert.Equal(t, worker.ServiceUnavailable, w.State().Service)
				assert.False(t, w.State().CMLReady)
			},
		},
		{
			// A removed worker is no longer observed: a service left
			// "available" stays so forever in the read model.
			name:  "service reset when removed",
			given: withService(gRunning, false),
			when:  []step{remove},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Equal(t, worker.StatusRemoved, w.Status())
				assert.Equal(t, worker.ServiceUnavailable, w.State().Service)
				assert.False(t, w.State().CMLReady)
			},
		},
		{
			name:  "service kept while running",
			given: withService(gRunning, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				o := runningObservation()
				o.PublicIP = "203.0.113.77"
				return w.ObserveInstance(o)
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, "203.0.113.77", s.PublicIP)
				assert.Equal(t, worker.ServiceAvailable, s.Service)
				assert.Equal(t, "2.9.0", s.CMLVersion)
				assert.True(t, s.CMLReady)
			},
		},
		{
			name:  "imported running instance counts as started at import",
			given: nil,
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.Import(workerID, importSpec())
			}},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.True(t, s.Imported)
				assert.Equal(t, worker.StatusRunning, s.Status)
				assert.Equal(t, worker.EC2Running, s.EC2State)
				assert.Equal(t, when(0), s.CreatedAt)
				assert.Equal(t, when(0), s.LastStartedAt)
				assert.Equal(t, "https://"+publicIP, s.Endpoint)
				assert.True(t, s.IdleDetectionEnabled)
			},
		},
		{
			name:  "imported stopped instance",
			given: nil,
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				spec := importSpec()
				spec.EC2State, spec.PublicIP, spec.Endpoint = worker.EC2Stopped, "", ""
				return w.Import(workerID, spec)
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusStopped, s.Status)
				assert.True(t, s.LastStartedAt.IsZero())
			},
		},
		{
			name:  "retried launch",
			given: history(gFailed, false),
			when: []step{
				func(w *worker.Worker) ([]domain.Event, error) { return w.RetryProvisioning() },
				func(w *worker.Worker) ([]domain.Event, error) { return w.RecordInstanceLaunched(instanceID) },
			},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusPending, s.Status)
				assert.Equal(t, worker.IntentLaunch, s.Intent)
				assert.Equal(t, 2, s.LaunchAttempt)
				assert.Equal(t, instanceID, s.InstanceID)
				assert.Nil(t, s.LastFailure, "a successful launch clears the failure")
			},
		},
		{
			name:  "provisioning failure",
			given: history(gProvisioning, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordProvisioningFailed("InvalidAMIID.NotFound", "The image id '[ami-0a1b2c3d4e5f67890]' does not exist")
			}},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.StatusFailed, s.Status)
				assert.Equal(t, worker.IntentNone, s.Intent)
				assert.Equal(t, &worker.Failure{
					Operation: "launch", Code: "InvalidAMIID.NotFound",
					Message: "The image id '[ami-0a1b2c3d4e5f67890]' does not exist", At: when(0),
				}, s.LastFailure)
			},
		},
		{
			name:  "lab action completes",
			given: history(gLabPending, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordLabActionCompleted("req-1", "")
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Empty(t, w.State().PendingLabActions)
			},
		},
		{
			name:  "lab action fails",
			given: history(gLabPending, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordLabActionFailed("req-1", "NODE_DEFINITION_MISSING", "iosv is not installed")
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				assert.Empty(t, w.State().PendingLabActions)
			},
		},
		{
			name:  "licence registration completes",
			given: history(gRegistering, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordLicenseRegistrationCompleted("", "ACME", "CML")
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.LicenseRegistered, s.License)
				assert.Equal(t, worker.LicenseOpNone, s.LicenseOperation)
				_, err := w.RequestLicenseRegistration(false, "fp", "sealed")
				requireTransitionError(t, err, worker.StatusRunning)
				events, err := w.RequestLicenseRegistration(true, "fp2", "sealed2")
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.LicenseRegistrationRequested{Reregister: true, TokenFingerprint: "fp2", SealedToken: "sealed2"}}, events)
			},
		},
		{
			name:  "licence registration fails",
			given: history(gRegistering, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.RecordLicenseRegistrationFailed("INVALID_TOKEN", "the token is invalid")
			}},
			then: func(t *testing.T, w *worker.Worker, when func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.LicenseUnregistered, s.License)
				assert.Equal(t, worker.LicenseOpNone, s.LicenseOperation)
				assert.Equal(t, &worker.Failure{Operation: "license_register", Code: "INVALID_TOKEN", Message: "the token is invalid", At: when(0)}, s.LicenseFailure)
			},
		},
		{
			name:  "licence deregistration completes",
			given: append(history(gRunning, false), worker.LicenseStatusChanged{Status: worker.LicenseRegistered}),
			when: []step{
				func(w *worker.Worker) ([]domain.Event, error) { return w.RequestLicenseDeregistration() },
				func(w *worker.Worker) ([]domain.Event, error) { return w.RecordLicenseDeregistrationCompleted("") },
			},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.Equal(t, worker.LicenseUnregistered, s.License)
				assert.Equal(t, worker.LicenseOpNone, s.LicenseOperation)
			},
		},
		{
			name:  "per-worker idle timeout",
			given: history(gRunning, false),
			when: []step{func(w *worker.Worker) ([]domain.Event, error) {
				return w.EnableIdleDetection(2 * time.Hour)
			}},
			then: func(t *testing.T, w *worker.Worker, _ func(int) time.Time) {
				s := w.State()
				assert.True(t, s.IdleDetectionEnabled)
				assert.Equal(t, int64(7200), s.IdleTimeoutSeconds)
				events, err := w.EnableIdleDetection(2 * time.Hour)
				require.NoError(t, err)
				assert.Empty(t, types(events), "same timeout again")
				events, err = w.EnableIdleDetection(0)
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{worker.IdleDetectionEnabled{}}, events, "back to the global timeout")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := fold(t, tt.given...)
			first := len(tt.given)
			for k, do := range tt.when {
				events, err := do(w)
				require.NoError(t, err, "step %d", k)
				require.NotEmpty(t, events, "step %d recorded nothing", k)
				apply(t, w, at(first+k), events...)
			}
			tt.then(t, w, func(k int) time.Time { return at(first + k) })
		})
	}
}

// TestEnableIdleDetectionBounds: a per-worker timeout is 0 (global) or
// between MinIdleTimeout and MaxIdleTimeout.
func TestEnableIdleDetectionBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		timeout time.Duration
		ok      bool
	}{
		{0, true},
		{-time.Second, false},
		{time.Minute, false},
		{worker.MinIdleTimeout - time.Second, false},
		{worker.MinIdleTimeout, true},
		{worker.MaxIdleTimeout, true},
		{worker.MaxIdleTimeout + time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.timeout.String(), func(t *testing.T) {
			t.Parallel()
			w := fold(t, history(gRunning, false)...)
			events, err := w.EnableIdleDetection(tt.timeout)
			if !tt.ok {
				assert.Equal(t, []string{"timeout"}, problemFields(t, err))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []domain.Event{worker.IdleDetectionEnabled{TimeoutSeconds: int64(tt.timeout / time.Second)}}, events)
		})
	}
}
