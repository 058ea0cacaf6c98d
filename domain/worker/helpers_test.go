package worker_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Fixed inputs shared by the worker tests.
const (
	workerID        = "0195a3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"
	instanceID      = "i-0123456789abcdef0"
	otherInstanceID = "i-0fedcba9876543210"
	region          = "eu-west-1"
	instanceType    = "c5.2xlarge"
	amiID           = "ami-0a1b2c3d4e5f67890"
	amiName         = "cml-2.9.0-ubuntu-24.04"
	subnetID        = "subnet-0123456789abcdef0"
	securityGroupID = "sg-0123456789abcdef0"
	publicIP        = "203.0.113.10"
	privateIP       = "10.0.1.10"
)

// t0 is when the first event of every history occurred; event i occurred at
// at(i).
var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }

// Names of the matrix givens.
const (
	gNew          = "new"
	gProvisioning = "provisioning"
	gPending      = "pending"
	gStarting     = "starting"
	gRunning      = "running"
	gStopping     = "stopping"
	gStopped      = "stopped"
	gTerminating  = "terminating"
	gTerminated   = "terminated"
	gFailed       = "failed"
	gRemoved      = "removed"
	gRegistering  = "registering"
	gLabPending   = "lab-pending"
)

// givenNames lists every given of the transition matrix.
var givenNames = []string{
	gNew, gProvisioning, gPending, gStarting, gRunning, gStopping, gStopped,
	gTerminating, gTerminated, gFailed, gRemoved, gRegistering, gLabPending,
}

// The events the givens are made of.

func createdEvent(idle bool) worker.Created {
	return worker.Created{
		WorkerID: workerID, Name: "cml-lab-eu-1", Region: region, InstanceType: instanceType,
		AMIID: amiID, AMIName: amiName, SubnetID: subnetID, SecurityGroupIDs: []string{securityGroupID},
		KeyName: "cml-admin", Tags: map[string]string{"team": "netops"},
		DetailedMonitoring: false, IdleDetectionEnabled: idle,
	}
}

var (
	launchedEvent = worker.InstanceLaunched{InstanceID: instanceID, Attempt: 1}
	runningSeen   = worker.InstanceStateObserved{
		EC2State: worker.EC2Running, PublicIP: publicIP, PrivateIP: privateIP,
		InstanceType: instanceType, SystemStatus: "ok", InstanceStatus: "ok",
	}
	stoppedSeen    = worker.InstanceStateObserved{EC2State: worker.EC2Stopped, PrivateIP: privateIP, InstanceType: instanceType}
	terminatedSeen = worker.InstanceStateObserved{EC2State: worker.EC2Terminated, InstanceType: instanceType}
	failedEvent    = worker.ProvisioningFailed{Code: "InsufficientInstanceCapacity", Message: "no c5.2xlarge capacity in eu-west-1a", Attempt: 1}
	licenseAsked   = worker.LicenseRegistrationRequested{TokenFingerprint: "fp", SealedToken: "sealed"}
	labAsked       = worker.LabActionRequested{RequestID: "req-1", Action: worker.LabStart, LabID: "lab1"}
)

// history returns the events of a named given. idle sets
// IdleDetectionEnabled in the Created event.
func history(name string, idle bool) []domain.Event {
	with := func(base string, more ...domain.Event) []domain.Event {
		return append(history(base, idle), more...)
	}
	switch name {
	case gNew:
		return nil
	case gProvisioning:
		return []domain.Event{createdEvent(idle)}
	case gPending:
		return with(gProvisioning, launchedEvent)
	case gRunning:
		return with(gPending, runningSeen)
	case gStopping:
		return with(gRunning, worker.StopRequested{Reason: worker.StopManual})
	case gStopped:
		return with(gStopping, stoppedSeen)
	case gStarting:
		return with(gStopped, worker.StartRequested{})
	case gTerminating:
		return with(gRunning, worker.TerminationRequested{})
	case gTerminated:
		return with(gTerminating, terminatedSeen)
	case gFailed:
		return with(gProvisioning, failedEvent)
	case gRemoved:
		return with(gRunning, worker.Removed{})
	case gRegistering:
		return with(gRunning, licenseAsked)
	case gLabPending:
		return with(gRunning, labAsked)
	}
	panic("unknown given " + name)
}

// given is a worker history: events[i] occurred at at(i).
type given struct {
	name   string
	events []domain.Event
	state  worker.State
}

func newGiven(t testing.TB, name string, idle bool) given {
	t.Helper()
	g := given{name: name, events: history(name, idle)}
	g.state = g.worker(t).State()
	return g
}

// worker folds the history into a fresh aggregate.
func (g given) worker(t testing.TB) *worker.Worker {
	t.Helper()
	return fold(t, g.events...)
}

// last is when the last event of the history occurred (t0 for no events).
func (g given) last() time.Time {
	if len(g.events) == 0 {
		return t0
	}
	return at(len(g.events) - 1)
}

// fold rehydrates a worker from events occurring at at(0), at(1), ...
func fold(t testing.TB, events ...domain.Event) *worker.Worker {
	t.Helper()
	times := make([]time.Time, len(events))
	for i := range events {
		times[i] = at(i)
	}
	w, err := worker.Rehydrate(events, times)
	require.NoError(t, err)
	return w
}

// apply applies events to w, the i-th one at from + i seconds.
func apply(t testing.TB, w *worker.Worker, from time.Time, events ...domain.Event) {
	t.Helper()
	for i, e := range events {
		require.NoError(t, w.Apply(e, from.Add(time.Duration(i)*time.Second)), "apply %s", e.EventType())
	}
}

// types lists the event type names in order.
func types(events []domain.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventType()
	}
	return out
}

// requireTransitionError checks that err is an illegal transition in state.
func requireTransitionError(t testing.TB, err error, state worker.Status) {
	t.Helper()
	require.ErrorIs(t, err, domain.ErrIllegalTransition)
	var te *domain.TransitionError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, string(state), te.State, "TransitionError.State")
	assert.NotErrorIs(t, err, domain.ErrNotFound)
	assert.NotErrorIs(t, err, domain.ErrInvalid)
}

// problems returns the problems of a validation error, failing otherwise.
func problems(t testing.TB, err error) []domain.Problem {
	t.Helper()
	require.ErrorIs(t, err, domain.ErrInvalid)
	var ve *domain.ValidationError
	require.ErrorAs(t, err, &ve)
	require.NotEmpty(t, ve.Problems)
	return ve.Problems
}

// problemFields lists the distinct fields of a validation error's problems.
func problemFields(t testing.TB, err error) []string {
	t.Helper()
	seen := map[string]bool{}
	var fields []string
	for _, p := range problems(t, err) {
		if !seen[p.Field] {
			seen[p.Field] = true
			fields = append(fields, p.Field)
		}
	}
	return fields
}

func ptr[T any](v T) *T { return &v }

// describe formats an error for a failure message.
func describe(err error) string {
	if err == nil {
		return "<nil>"
	}
	var te *domain.TransitionError
	if errors.As(err, &te) {
		return fmt.Sprintf("TransitionError{%s in %s: %s}", te.Command, te.State, te.Reason)
	}
	return err.Error()
}
