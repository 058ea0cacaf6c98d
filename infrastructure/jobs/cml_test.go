package jobs

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// waitLicenseIdle waits until no licence operation is in progress.
func (e *env) waitLicenseIdle(t *testing.T, id string) application.WorkerView {
	t.Helper()
	var v application.WorkerView
	waitFor(t, "licence operation over", func() (bool, string) {
		v = e.view(t, id)
		return v.LicenseOperation == worker.LicenseOpNone, string(v.LicenseOperation)
	})
	return v
}

func TestLicenseRegistrationAndDeregistrationEndInTheirEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.importRunning(t, 1)[0]
	e.settle(t)
	stream := worker.Stream(id)

	const token = "R2VuZXJhdGVkLXRva2Vu-good-1234"
	res, err := e.app.RequestLicenseRegistration(adminCtx, id, token, false)
	require.NoError(t, err)
	e.waitApplied(t, res.Position)
	v := e.waitLicenseIdle(t, id)
	require.Equal(t, worker.LicenseRegistered, v.License)
	require.Equal(t, 1, count(e.types(t, stream), "license_registration_completed"))
	reg, _ := e.cloud.Fleet.Controller(v.InstanceID).License()
	require.Equal(t, "COMPLETED", reg)
	var leaked int
	require.NoError(t, e.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE args::text LIKE '%' || $1 || '%'`, token).Scan(&leaked))
	require.Zero(t, leaked, "the token travels sealed in the job")

	res, err = e.app.RequestLicenseDeregistration(adminCtx, id)
	require.NoError(t, err)
	e.waitApplied(t, res.Position)
	v = e.waitLicenseIdle(t, id)
	require.Equal(t, worker.LicenseUnregistered, v.License)

	// Deregistering again: CML says "already deregistered" (400), which is
	// the requested end state.
	res, err = e.app.RequestLicenseDeregistration(adminCtx, id)
	require.NoError(t, err)
	e.waitApplied(t, res.Position)
	e.waitLicenseIdle(t, id)
	types := e.types(t, stream)
	require.Equal(t, 2, count(types, "license_deregistration_completed"), "%v", types)
	require.Zero(t, count(types, "license_deregistration_failed"), "%v", types)

	// A token the Smart Software Manager refuses ends in FAILED.
	res, err = e.app.RequestLicenseRegistration(adminCtx, id, "bad-token", false)
	require.NoError(t, err)
	e.waitApplied(t, res.Position)
	v = e.waitLicenseIdle(t, id)
	require.NotNil(t, v.LicenseFailure)
	require.Equal(t, "FAILED", v.LicenseFailure.Code)
	require.Equal(t, 1, count(e.types(t, stream), "license_registration_failed"))
}

const testTopology = `lab:
  version: 0.3.0
  title: Test pair
nodes:
  - id: n0
    label: host-a
    node_definition: alpine
  - id: n1
    label: host-b
    node_definition: alpine
links:
  - id: l0
    n1: n0
    n2: n1
`

func TestEveryLabActionEndsInItsEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.importRunning(t, 1)[0]
	e.settle(t)
	stream := worker.Stream(id)

	// do requests an action and waits for its outcome event.
	do := func(in application.LabAction) (completed bool, ev domainOutcome) {
		t.Helper()
		res, reqID, err := e.app.RequestLabAction(managerCtx, id, in)
		require.NoError(t, err)
		e.waitApplied(t, res.Position)
		waitFor(t, "lab "+string(in.Action)+" recorded", func() (bool, string) {
			_, pending := e.view(t, id).PendingLabActions[reqID]
			return !pending, ""
		})
		for _, rec := range e.events(t, stream) {
			ev, _, err := application.Decode(application.EventRegistry(), rec)
			require.NoError(t, err)
			switch o := ev.(type) {
			case worker.LabActionCompleted:
				if o.RequestID == reqID {
					return true, domainOutcome{labID: o.LabID}
				}
			case worker.LabActionFailed:
				if o.RequestID == reqID {
					return false, domainOutcome{code: o.Code}
				}
			}
		}
		t.Fatalf("no outcome for request %s", reqID)
		return false, domainOutcome{}
	}

	ok, out := do(application.LabAction{Action: worker.LabImport, Title: "imported", YAML: testTopology})
	require.True(t, ok)
	lab := out.labID
	require.NotEmpty(t, lab)
	ctrl := e.cloud.Fleet.Controller(e.view(t, id).InstanceID)
	require.Len(t, ctrl.Labs(), 1)

	ok, _ = do(application.LabAction{Action: worker.LabStart, LabID: lab})
	require.True(t, ok)
	require.Equal(t, "STARTED", ctrl.Labs()[0].State)

	ok, out = do(application.LabAction{Action: worker.LabWipe, LabID: lab})
	require.False(t, ok, "a running lab cannot be wiped")
	require.Equal(t, "400", out.code)

	for _, a := range []worker.LabAction{worker.LabStop, worker.LabWipe, worker.LabDelete} {
		ok, out = do(application.LabAction{Action: a, LabID: lab})
		require.True(t, ok, "%s: %+v", a, out)
	}
	require.Empty(t, ctrl.Labs())

	ok, out = do(application.LabAction{Action: worker.LabStart, LabID: "0c8f9a2e-6c0b-4d55-9b7e-3f1f5a6b7c8d"})
	require.False(t, ok)
	require.Equal(t, "404", out.code)

	// The lab list is recorded after each action, and the person's
	// requests count as activity.
	e.waitCaughtUp(t)
	labs, err := e.tel.WorkerLabs(adminCtx, id)
	require.NoError(t, err)
	require.Zero(t, labs.Count)
	require.False(t, labs.ObservedAt.IsZero())
	require.False(t, e.view(t, id).LastActivityAt.IsZero())
}

type domainOutcome struct {
	labID string
	code  string
}
