package application_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"pgregory.net/rapid"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// TestModelReadModelsEqualTheFold is the model check of the core: for random
// sequences of every worker command (people's and jobs'), once the
// projections have caught up, each worker_view row equals the fold of the
// worker's stream, and audit_log holds exactly one row per lifecycle event.
func TestModelReadModelsEqualTheFold(t *testing.T) {
	checkModel(t, setup(t))
}

// TestModelWithCatalogSnapshots runs the same model with commands that
// decide on the in-memory worker catalog's snapshots (stale ones included:
// commands follow each other faster than the catalog learns of them) and
// queries answered by the catalog.
func TestModelWithCatalogSnapshots(t *testing.T) {
	b := setup(t)
	catalog := projections.NewWorkerCatalog(b.pool, projections.CatalogOptions{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = catalog.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.NoError(t, catalog.WaitReady(ctx))
	b.opts.Workers = projections.NewCatalogReader(catalog, projections.NewWorkerReader(b.pool))
	b.opts.WorkerSnapshots = catalog.Snapshot
	b.app = application.New(b.opts)
	b.catalogAt = func(pos eventstore.Position) bool { return !catalog.Head().Lifecycle.Less(pos) }
	checkModel(t, b)
}

func checkModel(t *testing.T, b *bundle) {
	registry := application.EventRegistry()
	repo := application.NewRepository(b.store, registry, worker.New, worker.Stream, b.clock, application.UUIDv7{}, application.DefaultRetryPolicy)

	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		run := &modelRun{b: b, rt: rt, labRequests: map[string][]string{}}
		nWorkers := rapid.IntRange(1, 4).Draw(rt, "workers")
		for i := range nWorkers {
			run.newWorker(i)
		}
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		for range steps {
			id := rapid.SampledFrom(run.ids).Draw(rt, "worker")
			cmd := rapid.SampledFrom(modelCommands).Draw(rt, "command")
			b.clock.Advance(time.Duration(rapid.IntRange(0, 3600).Draw(rt, "seconds")) * time.Second)
			res, err := cmd.run(run, id)
			if err != nil && !expectedRefusal(err) {
				rt.Fatalf("%s on %s: unexpected error %v", cmd.name, id, err)
			}
			if err == nil && res.Changed {
				run.last = res.Position
			}
		}
		if run.last == "" {
			return
		}
		waitProjected(t, b, "worker_view", run.last)
		waitProjected(t, b, "audit_log", run.last)
		if b.catalogAt != nil {
			want, _ := eventstore.ParsePosition(run.last)
			deadline := time.Now().Add(15 * time.Second)
			for !b.catalogAt(want) {
				if time.Now().After(deadline) {
					rt.Fatalf("the catalog never reached %s", want)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}

		for _, id := range run.ids {
			folded, err := repo.Load(ctx, id)
			if err != nil {
				rt.Fatalf("load %s: %v", id, err)
			}
			view, err := b.app.GetWorker(adminCtx, id)
			if err != nil {
				rt.Fatalf("worker_view %s: %v", id, err)
			}
			want, _ := json.Marshal(folded.State())
			got, _ := json.Marshal(view.State)
			if string(want) != string(got) {
				rt.Fatalf("worker_view differs from the fold of %s\nview: %s\nfold: %s", id, got, want)
			}
			if view.Revision != folded.Version() {
				rt.Fatalf("worker_view revision %d, stream revision %d", view.Revision, folded.Version())
			}
			recs, err := b.store.ReadStream(ctx, worker.Stream(id), 0, 100000)
			if err != nil {
				rt.Fatal(err)
			}
			var rows, matching int
			if err := b.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE event_id = ANY($2::uuid[])) FROM audit_log WHERE worker_id = $1`,
				id, eventIDs(recs)).Scan(&rows, &matching); err != nil {
				rt.Fatal(err)
			}
			if rows != len(recs) || matching != len(recs) {
				rt.Fatalf("audit_log has %d rows (%d matching) for %s, the stream has %d events", rows, matching, id, len(recs))
			}
		}
	})
}

func eventIDs(recs []eventstore.RecordedEvent) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// expectedRefusal: the domain may refuse a random command; nothing else may
// fail.
func expectedRefusal(err error) bool {
	return errors.Is(err, domain.ErrInvalid) || errors.Is(err, domain.ErrIllegalTransition) ||
		errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrAlreadyExists)
}

// modelInstanceSeq makes every imported instance id unique across runs.
var modelInstanceSeq atomic.Uint64

type modelRun struct {
	b           *bundle
	rt          *rapid.T
	ids         []string
	labRequests map[string][]string
	last        string
}

func (r *modelRun) newWorker(i int) {
	if rapid.Bool().Draw(r.rt, "import") {
		inst := fmt.Sprintf("i-0%016x", modelInstanceSeq.Add(1))
		res, err := r.b.app.ImportWorker(adminCtx, application.ImportWorker{
			Region: "us-east-1", InstanceID: inst, State: rapid.SampledFrom([]worker.EC2State{worker.EC2Running, worker.EC2Stopped, worker.EC2Pending}).Draw(r.rt, "state"),
			PublicIP: "198.51.100.7", Endpoint: "https://127.0.0.1:1",
		})
		if err != nil {
			r.rt.Fatalf("import: %v", err)
		}
		r.ids = append(r.ids, res.ID)
		r.last = res.Position
		return
	}
	res, err := r.b.app.CreateWorker(adminCtx, application.CreateWorker{Name: fmt.Sprintf("model-%d", i), Region: "us-east-1"})
	if err != nil {
		r.rt.Fatalf("create: %v", err)
	}
	r.ids = append(r.ids, res.ID)
	r.last = res.Position
}

type modelCommand struct {
	name string
	run  func(r *modelRun, id string) (application.Result, error)
}

func (c modelCommand) String() string { return c.name }

var (
	managerCtx     = rbac.WithPrincipal(context.Background(), rbac.Principal{Subject: "m", Roles: []rbac.Role{rbac.RoleManager}})
	modelInstances = []string{"i-0123456789abcdef0", "i-0fedcba9876543210"}
	modelStates    = []worker.EC2State{worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped, worker.EC2ShuttingDown, worker.EC2Terminated, worker.EC2NotFound}
)

func (r *modelRun) currentInstance(id string) string {
	v, err := r.b.opts.Workers.GetWorker(context.Background(), id)
	if err == nil && v.InstanceID != "" {
		return v.InstanceID
	}
	return rapid.SampledFrom(modelInstances).Draw(r.rt, "instance")
}

var modelCommands = []modelCommand{
	{"start", func(r *modelRun, id string) (application.Result, error) { return r.b.app.StartWorker(managerCtx, id) }},
	{"stop", func(r *modelRun, id string) (application.Result, error) { return r.b.app.StopWorker(managerCtx, id) }},
	{"terminate", func(r *modelRun, id string) (application.Result, error) { return r.b.app.TerminateWorker(adminCtx, id) }},
	{"remove", func(r *modelRun, id string) (application.Result, error) {
		if rapid.IntRange(0, 9).Draw(r.rt, "remove?") > 0 { // keep removals rare
			return application.Result{}, nil
		}
		return r.b.app.RemoveWorker(adminCtx, id)
	}},
	{"retry", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RetryProvisioning(adminCtx, id)
	}},
	{"tags", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.ReplaceWorkerTags(managerCtx, id, map[string]string{"k": rapid.SampledFrom([]string{"a", "b"}).Draw(r.rt, "tag")})
	}},
	{"monitoring", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.SetDetailedMonitoring(adminCtx, id, rapid.Bool().Draw(r.rt, "on"))
	}},
	{"idle-detection", func(r *modelRun, id string) (application.Result, error) {
		on := rapid.Bool().Draw(r.rt, "on")
		var timeout time.Duration
		if on {
			timeout = rapid.SampledFrom([]time.Duration{0, 30 * time.Minute}).Draw(r.rt, "timeout")
		}
		return r.b.app.SetIdleDetection(adminCtx, id, on, timeout)
	}},
	{"license-register", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RequestLicenseRegistration(adminCtx, id, "tok-"+rapid.StringMatching(`[a-z]{4}`).Draw(r.rt, "token"), rapid.Bool().Draw(r.rt, "re"))
	}},
	{"license-deregister", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RequestLicenseDeregistration(adminCtx, id)
	}},
	{"lab-action", func(r *modelRun, id string) (application.Result, error) {
		in := application.LabAction{Action: rapid.SampledFrom([]worker.LabAction{worker.LabStart, worker.LabStop, worker.LabWipe, worker.LabDelete, worker.LabImport}).Draw(r.rt, "action")}
		if in.Action == worker.LabImport {
			in.YAML, in.Title = "lab:\n  title: x\n", "x"
		} else {
			in.LabID = "lab1"
		}
		res, req, err := r.b.app.RequestLabAction(managerCtx, id, in)
		if err == nil && res.Changed {
			r.labRequests[id] = append(r.labRequests[id], req)
		}
		return res, err
	}},
	{"record-launch", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RecordInstanceLaunched(systemCtx, id, rapid.SampledFrom(modelInstances).Draw(r.rt, "instance"))
	}},
	{"record-launch-failure", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RecordProvisioningFailed(systemCtx, id, "InsufficientInstanceCapacity", "no capacity")
	}},
	{"record-start-failure", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RecordStartFailed(systemCtx, id, "IncorrectInstanceState", "")
	}},
	{"record-stop-failure", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RecordStopFailed(systemCtx, id, "IncorrectInstanceState", "")
	}},
	{"record-termination-failure", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.RecordTerminationFailed(systemCtx, id, "UnauthorizedOperation", "")
	}},
	{"observe-instance", func(r *modelRun, id string) (application.Result, error) {
		state := rapid.SampledFrom(modelStates).Draw(r.rt, "state")
		o := worker.Observation{InstanceID: r.currentInstance(id), State: state}
		if state == worker.EC2Running {
			o.PublicIP = rapid.SampledFrom([]string{"198.51.100.7", "203.0.113.9"}).Draw(r.rt, "ip")
			o.PrivateIP = "10.0.0.5"
			o.Endpoint = "https://127.0.0.1:" + map[string]string{"198.51.100.7": "1", "203.0.113.9": "2"}[o.PublicIP]
			o.SystemStatus, o.InstanceStatus = "ok", rapid.SampledFrom([]string{"ok", "initializing"}).Draw(r.rt, "check")
		}
		if rapid.Bool().Draw(r.rt, "with tags") {
			o.Tags = map[string]string{"k": rapid.SampledFrom([]string{"a", "c"}).Draw(r.rt, "observed tag")}
		}
		return r.b.app.ObserveInstance(systemCtx, id, o)
	}},
	{"observe-service", func(r *modelRun, id string) (application.Result, error) {
		st := rapid.SampledFrom([]worker.ServiceStatus{worker.ServiceAvailable, worker.ServiceUnavailable, worker.ServiceDegraded}).Draw(r.rt, "service")
		return r.b.app.ObserveService(systemCtx, id, st, rapid.SampledFrom([]string{"2.8.1", "2.9.0"}).Draw(r.rt, "version"), rapid.Bool().Draw(r.rt, "ready"))
	}},
	{"observe-license", func(r *modelRun, id string) (application.Result, error) {
		return r.b.app.ObserveLicense(systemCtx, id, rapid.SampledFrom([]worker.LicenseStatus{worker.LicenseRegistered, worker.LicenseUnregistered, worker.LicenseEvaluation}).Draw(r.rt, "licence"))
	}},
	{"license-outcome", func(r *modelRun, id string) (application.Result, error) {
		switch rapid.IntRange(0, 3).Draw(r.rt, "outcome") {
		case 0:
			return r.b.app.RecordLicenseRegistrationCompleted(systemCtx, id, worker.LicenseRegistered, "sa", "va")
		case 1:
			return r.b.app.RecordLicenseRegistrationFailed(systemCtx, id, "InvalidToken", "bad token")
		case 2:
			return r.b.app.RecordLicenseDeregistrationCompleted(systemCtx, id, "")
		default:
			return r.b.app.RecordLicenseDeregistrationFailed(systemCtx, id, "Timeout", "")
		}
	}},
	{"observe-activity", func(r *modelRun, id string) (application.Result, error) {
		at := r.b.clock.Now().Add(-time.Duration(rapid.IntRange(0, 7200).Draw(r.rt, "ago")) * time.Second)
		return r.b.app.ObserveActivity(systemCtx, id, at, "start_lab")
	}},
	{"idle-check", func(r *modelRun, id string) (application.Result, error) {
		res, _, err := r.b.app.StopIfIdle(systemCtx, id)
		return res, err
	}},
	{"lab-outcome", func(r *modelRun, id string) (application.Result, error) {
		req := "0190c6a0-0000-7000-8000-000000000000"
		if pending := r.labRequests[id]; len(pending) > 0 {
			req = rapid.SampledFrom(pending).Draw(r.rt, "request")
		}
		if rapid.Bool().Draw(r.rt, "ok") {
			return r.b.app.RecordLabActionCompleted(systemCtx, id, req, "lab2")
		}
		return r.b.app.RecordLabActionFailed(systemCtx, id, req, "LabRunning", "")
	}},
}
