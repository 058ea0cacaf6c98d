package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// In the running idle given the worker was created at at(0) and started at
// at(2).
var startedAt = at(2)

func TestIdleDecision(t *testing.T) {
	t.Parallel()
	policy := func(enabled bool, timeout, snooze time.Duration) worker.IdlePolicy {
		return worker.IdlePolicy{Enabled: enabled, Timeout: timeout, Snooze: snooze}
	}
	std := policy(true, time.Hour, 30*time.Minute)
	running := history(gRunning, true)
	activityAt := func(tm time.Time) []domain.Event {
		return append(history(gRunning, true), worker.ActivityObserved{LastActivityAt: tm, Category: "ui"})
	}
	// Stopped and started again in the AWS console; the second start is at(4).
	externallyRestarted := append(history(gRunning, true), stoppedSeen,
		worker.InstanceStateObserved{EC2State: worker.EC2Running, PublicIP: publicIP, PrivateIP: privateIP, InstanceType: instanceType, External: true})
	imported := []domain.Event{worker.Imported{
		WorkerID: workerID, Name: "imported", Region: region, InstanceID: instanceID, InstanceType: instanceType,
		EC2State: worker.EC2Running, IdleDetectionEnabled: true,
	}}

	tests := []struct {
		name   string
		given  []domain.Event
		state  func(s worker.State) worker.State // optional: tweak the folded state (FromState)
		now    time.Time
		policy worker.IdlePolicy

		eligible      bool
		reason        string
		idle          bool
		referenceKind string
		referenceAt   time.Time
		timeoutSource string
		timeout       time.Duration
		inSnooze      bool
	}{
		{
			name: "idle past the timeout", given: running, now: startedAt.Add(2 * time.Hour), policy: std,
			eligible: true, idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "exactly at the timeout counts as idle", given: running, now: startedAt.Add(time.Hour), policy: std,
			eligible: true, idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "one second before the timeout", given: running, now: startedAt.Add(time.Hour - time.Second), policy: std,
			reason: "active recently", referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "recent activity is the reference", given: activityAt(startedAt.Add(90 * time.Minute)),
			now: startedAt.Add(2 * time.Hour), policy: std,
			reason: "active recently", referenceKind: "activity", referenceAt: startedAt.Add(90 * time.Minute),
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "activity older than the timeout", given: activityAt(startedAt.Add(30 * time.Minute)),
			now: startedAt.Add(90 * time.Minute), policy: std,
			eligible: true, idle: true, referenceKind: "activity", referenceAt: startedAt.Add(30 * time.Minute),
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "activity before the start: the start is the reference", given: activityAt(t0.Add(-time.Hour)),
			now: startedAt.Add(30 * time.Minute), policy: std,
			reason: "active recently", referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "creation is the reference when nothing is later", given: imported,
			now: t0.Add(2 * time.Hour), policy: std,
			eligible: true, idle: true, referenceKind: "created", referenceAt: t0,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "snoozed after a start", given: running,
			now: startedAt.Add(30 * time.Minute), policy: policy(true, 10*time.Minute, time.Hour),
			reason: "snoozed after a start", idle: true, inSnooze: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: 10 * time.Minute,
		},
		{
			name: "snooze over exactly at its end", given: running,
			now: startedAt.Add(time.Hour), policy: policy(true, 10*time.Minute, time.Hour),
			eligible: true, idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: 10 * time.Minute,
		},
		{
			name: "snoozed after a start made outside the product", given: externallyRestarted,
			now: at(4).Add(30 * time.Minute), policy: policy(true, 10*time.Minute, time.Hour),
			reason: "snoozed after a start", idle: true, inSnooze: true, referenceKind: "start", referenceAt: at(4),
			timeoutSource: "global", timeout: 10 * time.Minute,
		},
		{
			name: "snooze over: old activity is the reference", given: activityAt(startedAt.Add(5 * time.Minute)),
			now: startedAt.Add(2 * time.Hour), policy: policy(true, time.Hour, time.Hour),
			eligible: true, idle: true, referenceKind: "activity", referenceAt: startedAt.Add(5 * time.Minute),
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name:  "longer per-worker timeout overrides the global one",
			given: append(history(gRunning, true), worker.IdleDetectionEnabled{TimeoutSeconds: 7200}),
			now:   startedAt.Add(90 * time.Minute), policy: std,
			reason: "active recently", referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "worker", timeout: 2 * time.Hour,
		},
		{
			name:  "shorter per-worker timeout overrides the global one",
			given: append(history(gRunning, true), worker.IdleDetectionEnabled{TimeoutSeconds: 1800}),
			now:   startedAt.Add(45 * time.Minute), policy: policy(true, 2*time.Hour, 0),
			eligible: true, idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "worker", timeout: 30 * time.Minute,
		},
		{
			name: "disabled globally", given: running, now: startedAt.Add(10 * time.Hour),
			policy: policy(false, time.Hour, 30*time.Minute),
			reason: "idle detection is disabled globally", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "disabled for the worker", given: history(gRunning, false), now: startedAt.Add(10 * time.Hour), policy: std,
			reason: "idle detection is disabled for this worker", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name:  "disabled for the worker after being enabled",
			given: append(history(gRunning, true), worker.IdleDetectionDisabled{}),
			now:   startedAt.Add(10 * time.Hour), policy: std,
			reason: "idle detection is disabled for this worker", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "no timeout configured", given: running, now: startedAt.Add(10 * time.Hour),
			policy: policy(true, 0, 0),
			reason: "no idle timeout configured", referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global",
		},
		{
			name: "not running: stopped", given: history(gStopped, true), now: startedAt.Add(10 * time.Hour), policy: std,
			reason: "not running", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "not running: provisioning", given: history(gProvisioning, true), now: t0.Add(10 * time.Hour), policy: std,
			reason: "not running", idle: true, referenceKind: "created", referenceAt: t0,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "stop in progress", given: history(gStopping, true), now: startedAt.Add(10 * time.Hour), policy: std,
			reason: "not running", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "start in progress", given: history(gStarting, true), now: startedAt.Add(10 * time.Hour), policy: std,
			reason: "not running", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
		{
			name: "running with a stop still open", given: running,
			state: func(s worker.State) worker.State { s.Intent = worker.IntentStop; return s },
			now:   startedAt.Add(10 * time.Hour), policy: std,
			reason: "a stop is in progress", idle: true, referenceKind: "start", referenceAt: startedAt,
			timeoutSource: "global", timeout: time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := fold(t, tt.given...)
			if tt.state != nil {
				w = worker.FromState(tt.state(w.State()), w.Version())
			}

			d := w.IdleDecision(tt.now, tt.policy)

			assert.Equal(t, tt.eligible, d.Eligible, "Eligible")
			assert.Equal(t, tt.reason, d.Reason, "Reason")
			assert.Equal(t, tt.idle, d.Idle, "Idle")
			assert.Equal(t, tt.inSnooze, d.InSnooze, "InSnooze")
			assert.Equal(t, tt.referenceKind, d.ReferenceKind, "ReferenceKind")
			assert.Equal(t, tt.referenceAt, d.ReferenceAt, "ReferenceAt")
			assert.Equal(t, tt.timeoutSource, d.TimeoutSource, "TimeoutSource")
			assert.Equal(t, tt.timeout, d.Timeout, "Timeout")
			assert.Equal(t, int64(tt.timeout/time.Second), d.TimeoutSeconds, "TimeoutSeconds")
			assert.Equal(t, tt.now, d.CheckedAt)
			assert.Equal(t, w.Status(), d.Status)
			assert.Equal(t, tt.policy.Enabled, d.GlobalEnabled)
			assert.Equal(t, w.State().IdleDetectionEnabled, d.WorkerEnabled)
			wantIdleFor := max(tt.now.Sub(tt.referenceAt), 0)
			assert.Equal(t, wantIdleFor, d.IdleFor, "IdleFor")
			assert.Equal(t, int64(wantIdleFor/time.Second), d.IdleSeconds, "IdleSeconds")

			// StopIfIdle follows the decision exactly.
			events, d2, err := w.StopIfIdle(tt.now, tt.policy)
			require.NoError(t, err)
			assert.Equal(t, d, d2)
			if !tt.eligible {
				assert.Empty(t, types(events))
				return
			}
			assert.Equal(t, []domain.Event{
				worker.IdleDetected{IdleSince: tt.referenceAt, IdleSeconds: d.IdleSeconds, TimeoutSeconds: d.TimeoutSeconds},
				worker.StopRequested{Reason: worker.StopIdleTimeout},
			}, events)
		})
	}
}

func TestIdleDecisionSnoozeUntil(t *testing.T) {
	t.Parallel()
	w := fold(t, history(gRunning, true)...)
	d := w.IdleDecision(startedAt.Add(time.Minute), worker.IdlePolicy{Enabled: true, Timeout: time.Hour, Snooze: 45 * time.Minute})
	assert.Equal(t, startedAt.Add(45*time.Minute), d.SnoozeUntil)
	assert.True(t, d.InSnooze)

	d = w.IdleDecision(startedAt.Add(time.Minute), worker.IdlePolicy{Enabled: true, Timeout: time.Hour})
	assert.True(t, d.SnoozeUntil.IsZero(), "no snooze configured")
	assert.False(t, d.InSnooze)
}

func TestStopIfIdleOnMissingWorker(t *testing.T) {
	t.Parallel()
	events, _, err := worker.New().StopIfIdle(later, idlePolicy())
	assert.ErrorIs(t, err, domain.ErrNotFound)
	assert.Empty(t, events)
}
