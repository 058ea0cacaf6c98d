package application_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
)

func readStream(t *testing.T, b *bundle, stream string) []eventstore.RecordedEvent {
	t.Helper()
	recs, err := b.store.ReadStream(context.Background(), stream, 0, 10000)
	require.NoError(t, err)
	return recs
}

func TestCreateWorkerResolvesDefaultsAndRecordsWhoAndWhy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := application.WithCorrelationID(adminCtx, "req-42")
	res, err := b.app.CreateWorker(ctx, application.CreateWorker{
		Name: "lab-1", Region: "us-west-2", Tags: map[string]string{"team": "netops", "Environment": "prod"},
	})
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Equal(t, []string{"worker.created.v1"}, res.Events)

	recs := readStream(t, b, worker.Stream(res.ID))
	require.Len(t, recs, 1)
	e, err := application.EventRegistry().Decode(recs[0].Type, recs[0].Data)
	require.NoError(t, err)
	c := e.(worker.Created)
	require.Equal(t, "ami-0fedcba9876543210", c.AMIID, "the region's default AMI")
	require.Equal(t, "m5zn.metal", c.InstanceType)
	require.Equal(t, "subnet-0123456789abcdef0", c.SubnetID)
	require.Equal(t, map[string]string{"team": "netops", "Environment": "prod"}, c.Tags, "request tags win over default tags")
	require.True(t, c.DetailedMonitoring)
	require.True(t, c.IdleDetectionEnabled)

	m, err := application.ParseMetadata(recs[0].Metadata)
	require.NoError(t, err)
	require.Equal(t, "admin-1", m.Actor.Subject)
	require.Equal(t, "user", m.Actor.Type)
	require.Equal(t, []string{"admin"}, m.Actor.Roles)
	require.Equal(t, "req-42", m.CorrelationID)
	require.True(t, application.ValidID(m.CausationID), "causation is the command id: %q", m.CausationID)
	require.Equal(t, b.clock.Now(), m.OccurredAt)
	require.Equal(t, "worker.create", m.Command)
	require.Equal(t, recs[0].ID, res.EventIDs[0])
}

func TestCreateWorkerRefusesBadInputWithEveryProblem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.app.CreateWorker(adminCtx, application.CreateWorker{Name: "", Region: "eu-west-1"})
	require.ErrorIs(t, err, domain.ErrInvalid)
	require.Contains(t, err.Error(), "not a managed region")

	_, err = b.app.CreateWorker(adminCtx, application.CreateWorker{Name: " ", Region: "us-east-1", InstanceType: "big", AMIID: "ami-x"})
	var ve *domain.ValidationError
	require.ErrorAs(t, err, &ve)
	fields := map[string]bool{}
	for _, p := range ve.Problems {
		fields[p.Field] = true
	}
	require.True(t, fields["name"] && fields["instance_type"] && fields["ami_id"], "every problem reported: %v", ve.Problems)
}

func TestSavedSettingsWinOverEnvironment(t *testing.T) {
	b := setup(t) // not parallel: settings are global to the database
	typ := "c5.2xlarge"
	res, err := b.app.UpdateSettings(adminCtx, settings.Patch{InstanceType: &typ}, nil)
	require.NoError(t, err)
	require.True(t, res.Changed)
	t.Cleanup(func() {
		_, err := b.app.UpdateSettings(adminCtx, settings.Patch{}, []settings.Key{settings.KeyInstanceType})
		require.NoError(t, err)
	})
	waitProjected(t, b, "settings_view", res.Position)

	view, err := b.app.GetSettings(adminCtx)
	require.NoError(t, err)
	require.Equal(t, "c5.2xlarge", view.Effective.InstanceType)
	require.Equal(t, settings.SourceSaved, view.Sources[settings.KeyInstanceType])
	require.Equal(t, settings.SourceEnvironment, view.Sources[settings.KeyAMIName])
	require.Equal(t, "admin-1", view.UpdatedBy.Subject)

	w, err := b.app.CreateWorker(adminCtx, application.CreateWorker{Name: "saved-type", Region: "us-east-1"})
	require.NoError(t, err)
	recs := readStream(t, b, worker.Stream(w.ID))
	e, _ := application.EventRegistry().Decode(recs[0].Type, recs[0].Data)
	require.Equal(t, "c5.2xlarge", e.(worker.Created).InstanceType)

	// Saving the same value again changes nothing.
	again, err := b.app.UpdateSettings(adminCtx, settings.Patch{InstanceType: &typ}, nil)
	require.NoError(t, err)
	require.False(t, again.Changed)
}

func TestImportRefusesAnInstanceAlreadyManaged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	in := application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running,
		Tags: map[string]string{"Name": "from-console"}}
	res, err := b.app.ImportWorker(adminCtx, in)
	require.NoError(t, err)
	waitProjected(t, b, "worker_view", res.Position)

	v, err := b.app.GetWorker(adminCtx, res.ID)
	require.NoError(t, err)
	require.Equal(t, "from-console", v.Name, "name from the Name tag")
	require.Equal(t, worker.StatusRunning, v.Status)
	require.Equal(t, "admin-1", v.CreatedBy.Subject)

	_, err = b.app.ImportWorker(adminCtx, in)
	require.ErrorIs(t, err, domain.ErrAlreadyExists)
	var am *application.AlreadyManagedError
	require.ErrorAs(t, err, &am)
	require.Equal(t, res.ID, am.WorkerID)

	// Once the worker is removed, the instance may be imported again.
	rm, err := b.app.RemoveWorker(adminCtx, res.ID)
	require.NoError(t, err)
	waitProjected(t, b, "worker_view", rm.Position)
	_, err = b.app.ImportWorker(adminCtx, in)
	require.NoError(t, err)
}

func TestCommandThatChangesNothingAppendsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	instance := "i-0" + hex16(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: instance, State: worker.EC2Running})
	require.NoError(t, err)
	before := readStream(t, b, worker.Stream(res.ID))

	managerCtx := as("m-1", "ops", rbac.RoleManager)
	again, err := b.app.StartWorker(managerCtx, res.ID)
	require.NoError(t, err)
	require.False(t, again.Changed)
	require.Empty(t, again.Events)
	require.Equal(t, int64(0), again.Revision)

	obs, err := b.app.ObserveInstance(systemCtx, res.ID, worker.Observation{InstanceID: instance, State: worker.EC2Running})
	require.NoError(t, err)
	require.False(t, obs.Changed, "a steady instance produces no event")
	require.Len(t, readStream(t, b, worker.Stream(res.ID)), len(before))
}

func TestIllegalTransitionAndMissingWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.CreateWorker(adminCtx, application.CreateWorker{Name: "w", Region: "us-east-1"})
	require.NoError(t, err)
	_, err = b.app.StartWorker(adminCtx, res.ID) // still provisioning
	require.ErrorIs(t, err, domain.ErrIllegalTransition)
	var te *domain.TransitionError
	require.ErrorAs(t, err, &te)
	require.Equal(t, "provisioning", te.State)

	_, err = b.app.StopWorker(adminCtx, "0190c6a0-0000-7000-8000-0000000000ff")
	require.ErrorIs(t, err, domain.ErrNotFound)
	var nf *application.NotFoundError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, "worker", nf.Kind)

	_, err = b.app.StopWorker(adminCtx, "not-an-id")
	require.ErrorIs(t, err, domain.ErrInvalid)
}

// TestRepositoryRetriesWhenAnotherWriterWins makes a real competing append
// between the load and the append of the first attempt: the repository must
// reload, decide again on the new state, and succeed.
func TestRepositoryRetriesWhenAnotherWriterWins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)

	repo := application.NewRepository(b.store, application.EventRegistry(), worker.New, worker.Stream, b.clock, application.UUIDv7{}, application.DefaultRetryPolicy)
	var calls atomic.Int32
	saved, err := repo.Update(context.Background(), res.ID, application.Metadata{Actor: application.Actor{Type: "user", Subject: "t"}},
		func(w *worker.Worker) ([]domain.Event, error) {
			if calls.Add(1) == 1 {
				// Another writer disables idle detection meanwhile.
				_, err := b.app.SetIdleDetection(adminCtx, res.ID, false, 0)
				require.NoError(t, err)
			}
			return w.ReplaceTags(map[string]string{"idle": boolString(w.State().IdleDetectionEnabled)})
		})
	require.NoError(t, err)
	require.Equal(t, int32(2), calls.Load(), "decided twice")
	require.Equal(t, int64(2), saved.Revision)
	w, err := repo.Load(context.Background(), res.ID)
	require.NoError(t, err)
	require.Equal(t, "false", w.State().Tags["idle"], "the second decision saw the other writer's change")
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestRepositoryGivesUpWithATypedConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	policy := application.RetryPolicy{Attempts: 3, BaseDelay: time.Millisecond}
	repo := application.NewRepository(b.store, application.EventRegistry(), worker.New, worker.Stream, b.clock, application.UUIDv7{}, policy)
	var calls atomic.Int32
	n := 0
	_, err = repo.Update(context.Background(), res.ID, application.Metadata{}, func(w *worker.Worker) ([]domain.Event, error) {
		calls.Add(1)
		n++
		// Always lose the race.
		_, err := b.app.ReplaceWorkerTags(adminCtx, res.ID, map[string]string{"round": strings.Repeat("x", n)})
		require.NoError(t, err)
		return w.ReplaceTags(map[string]string{"mine": "1"})
	})
	require.ErrorIs(t, err, application.ErrConflict)
	require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
	var ce *application.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 3, ce.Attempts)
	require.Equal(t, int32(3), calls.Load())
}

func TestConcurrentCommandsOnOneWorkerAllLand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := b.app.ReplaceWorkerTags(adminCtx, res.ID, map[string]string{"writer": strings.Repeat("w", i+1)})
			errs <- err
		}()
	}
	landed := 0
	for range n {
		err := <-errs
		if err == nil {
			landed++
			continue
		}
		require.ErrorIs(t, err, application.ErrConflict, "the only acceptable failure is a conflict after the retries")
	}
	require.GreaterOrEqual(t, landed, n/2, "retries let most concurrent writers land")
	recs := readStream(t, b, worker.Stream(res.ID))
	require.Len(t, recs, 1+landed, "one event per successful command, none lost, none doubled")
}

func TestLicenceTokenIsSealedInTheLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	const token = "ODNkMzQ3YzYtZTg2Zi00ZDJmLWJhZTAtNDQ3MzQ1MTk2NGYy"
	reg, err := b.app.RequestLicenseRegistration(adminCtx, res.ID, token, false)
	require.NoError(t, err)
	require.Equal(t, []string{"worker.license_registration_requested.v1"}, reg.Events)
	recs := readStream(t, b, worker.Stream(res.ID))
	last := recs[len(recs)-1]
	require.NotContains(t, string(last.Data), token)
	var ev worker.LicenseRegistrationRequested
	require.NoError(t, json.Unmarshal(last.Data, &ev))
	opened, err := b.opts.Sealer.Open(ev.SealedToken)
	require.NoError(t, err)
	require.Equal(t, token, opened)
	require.Equal(t, b.opts.Sealer.Fingerprint(token), ev.TokenFingerprint)

	_, err = b.app.RequestLicenseRegistration(adminCtx, res.ID, "has spaces in it", false)
	require.ErrorIs(t, err, domain.ErrInvalid)
	_, err = b.app.RequestLicenseRegistration(adminCtx, res.ID, token, false)
	require.ErrorIs(t, err, domain.ErrIllegalTransition, "a registration is already in progress")

	other, _ := sealing.New(sealing.RandomKey())
	_, err = other.Open(ev.SealedToken)
	require.ErrorIs(t, err, sealing.ErrOpen)
}

func TestTasksFollowTheSeedRules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dept := "dept-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + hex16(t)[:8]
	manager := as("mgr-"+dept, dept, rbac.RoleManager)
	alice := as("alice-"+dept, dept, rbac.RoleUser)
	bob := as("bob-"+dept, dept, rbac.RoleUser)
	outsider := as("carol", "elsewhere", rbac.RoleManager)

	mine, err := b.app.CreateTask(alice, application.CreateTask{Title: "alice's task"})
	require.NoError(t, err)
	forBob, err := b.app.CreateTask(manager, application.CreateTask{Title: "for bob", AssigneeID: "bob-" + dept})
	require.NoError(t, err)
	_, err = b.app.CreateTask(alice, application.CreateTask{Title: "for bob", AssigneeID: "bob-" + dept})
	require.ErrorIs(t, err, rbac.ErrForbidden, "users create tasks for themselves")
	_, err = b.app.CreateTask(outsider, application.CreateTask{Title: "x", Department: dept})
	require.ErrorIs(t, err, rbac.ErrForbidden)
	waitProjected(t, b, "task_view", forBob.Position)

	list := func(ctx context.Context) []string {
		views, _, err := b.app.ListTasks(ctx, application.TaskFilter{})
		require.NoError(t, err)
		var titles []string
		for _, v := range views {
			if v.Department == dept {
				titles = append(titles, v.Title)
			}
		}
		return titles
	}
	require.Equal(t, []string{"alice's task"}, list(alice))
	require.Equal(t, []string{"for bob"}, list(bob))
	require.ElementsMatch(t, []string{"alice's task", "for bob"}, list(manager))
	require.Empty(t, list(outsider))
	require.ElementsMatch(t, []string{"alice's task", "for bob"}, list(adminCtx))

	_, err = b.app.GetTask(bob, mine.ID)
	require.ErrorIs(t, err, domain.ErrNotFound, "invisible tasks are reported missing")

	title := "done by bob"
	_, err = b.app.UpdateTask(bob, forBob.ID, task.Patch{Title: &title})
	require.NoError(t, err, "the assignee updates")
	_, err = b.app.UpdateTask(manager, forBob.ID, task.Patch{Title: &title})
	require.ErrorIs(t, err, rbac.ErrForbidden, "a manager who is not the assignee may not update")
	other := "alice-" + dept
	_, err = b.app.UpdateTask(bob, forBob.ID, task.Patch{AssigneeID: &other})
	require.ErrorIs(t, err, rbac.ErrForbidden, "only admins reassign")

	_, err = b.app.DeleteTask(outsider, forBob.ID)
	require.ErrorIs(t, err, domain.ErrNotFound, "a manager of another department cannot see it")
	del, err := b.app.DeleteTask(manager, forBob.ID)
	require.NoError(t, err)
	require.Equal(t, []string{"task.deleted.v1"}, del.Events)
	_, err = b.app.DeleteTask(manager, forBob.ID)
	require.ErrorIs(t, err, domain.ErrNotFound)
}

func TestIdleStatusExplainsTheDecision(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	waitProjected(t, b, "worker_view", res.Position)
	st, err := b.app.IdleStatus(adminCtx, res.ID)
	require.NoError(t, err)
	require.False(t, st.Eligible)
	require.True(t, st.InSnooze, "just imported running: the import counts as a start")
	require.Equal(t, "snoozed after a start", st.Reason)

	b.clock.Advance(2 * time.Hour)
	_, decision, err := b.app.StopIfIdle(systemCtx, res.ID)
	require.NoError(t, err)
	require.True(t, decision.Eligible, "idle for two hours past a one hour timeout: %+v", decision)
	recs := readStream(t, b, worker.Stream(res.ID))
	require.Equal(t, "worker.idle_detected.v1", recs[len(recs)-2].Type)
	require.Equal(t, "worker.stop_requested.v1", recs[len(recs)-1].Type)
	m, _ := application.ParseMetadata(recs[len(recs)-1].Metadata)
	require.Equal(t, "system", m.Actor.Type)
	require.Equal(t, "system:test", m.Actor.Subject)

	_, err = b.app.IdleStatus(as("x", "", rbac.RoleIntegrator), res.ID)
	require.True(t, errors.Is(err, rbac.ErrForbidden))
}

// Imports of one instance racing each other: the read model cannot tell
// them apart (neither is projected yet), the instance's claim stream can.
// Exactly one wins; every other gets the winner's id.
func TestConcurrentImportsOfOneInstanceCreateOneWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const racers = 8
	instance := "i-0" + hex16(t)
	in := application.ImportWorker{Region: "us-west-2", InstanceID: instance, State: worker.EC2Running}
	var (
		wg      sync.WaitGroup
		results = make([]application.Result, racers)
		errs    = make([]error, racers)
	)
	for i := range racers {
		wg.Go(func() { results[i], errs[i] = b.app.ImportWorker(adminCtx, in) })
	}
	wg.Wait()
	var winner string
	for i, err := range errs {
		if err == nil {
			require.Empty(t, winner, "two imports of one instance succeeded")
			winner = results[i].ID
		}
	}
	require.NotEmpty(t, winner, "no import succeeded: %v", errs)
	for _, err := range errs {
		if err != nil {
			var am *application.AlreadyManagedError
			require.ErrorAs(t, err, &am)
			require.Equal(t, winner, am.WorkerID)
		}
	}
	// The losers appended nothing to any worker stream: the claim stream
	// names the winner alone.
	recs := readStream(t, b, worker.InstanceClaimStream("us-west-2", instance))
	require.Len(t, recs, 1)
	require.Equal(t, "worker.instance_claimed.v1", recs[0].Type)
}

// A claim whose worker never appeared (the process died between the claim
// and the import) holds for a grace period only.
func TestAnOrphanClaimExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	instance := "i-0" + hex16(t)
	orphan := application.UUIDv7{}.NewID()
	data, err := json.Marshal(worker.InstanceClaimed{Region: "us-east-1", InstanceID: instance, WorkerID: orphan})
	require.NoError(t, err)
	md, err := json.Marshal(map[string]any{"occurred_at": b.clock.Now()})
	require.NoError(t, err)
	_, err = b.store.Append(context.Background(), worker.InstanceClaimStream("us-east-1", instance), eventstore.NoStream,
		eventstore.EventData{ID: application.UUIDv7{}.NewID(), Type: "worker.instance_claimed.v1", Data: data, Metadata: md})
	require.NoError(t, err)

	in := application.ImportWorker{Region: "us-east-1", InstanceID: instance, State: worker.EC2Stopped}
	_, err = b.app.ImportWorker(adminCtx, in)
	var am *application.AlreadyManagedError
	require.ErrorAs(t, err, &am, "within the grace period the import in flight wins")
	require.Equal(t, orphan, am.WorkerID)

	b.clock.Advance(2 * time.Minute)
	res, err := b.app.ImportWorker(adminCtx, in)
	require.NoError(t, err)
	require.NotEqual(t, orphan, res.ID)
}

// An instance the product launched carries its worker's id in its tags from
// the launch on; an import of it is refused while that worker lives, even
// before the read model knows the instance.
func TestImportRefusesAnInstanceTaggedWithALiveWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	launching, err := b.app.CreateWorker(adminCtx, application.CreateWorker{Name: "launching", Region: "us-east-1"})
	require.NoError(t, err)
	in := application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Pending,
		Tags: map[string]string{worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: launching.ID}}
	_, err = b.app.ImportWorker(adminCtx, in)
	var am *application.AlreadyManagedError
	require.ErrorAs(t, err, &am)
	require.Equal(t, launching.ID, am.WorkerID)

	// A tag naming a worker that is gone does not hold the instance.
	gone, err := b.app.ImportWorker(adminCtx, application.ImportWorker{Region: "us-east-1", InstanceID: "i-0" + hex16(t), State: worker.EC2Running})
	require.NoError(t, err)
	_, err = b.app.RemoveWorker(adminCtx, gone.ID)
	require.NoError(t, err)
	in.Tags[worker.TagWorkerID] = gone.ID
	_, err = b.app.ImportWorker(adminCtx, in)
	require.NoError(t, err)
}
