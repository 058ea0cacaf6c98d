package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
)

// launchOutOfBand starts a running instance in the simulator's us-east-1,
// as if someone had launched it in the AWS console.
func launchOutOfBand(t testing.TB, name string) cloudsim.Instance {
	t.Helper()
	insts, err := shared.cloud.Sim.Console().Launch("us-east-1", cloudsim.ConsoleLaunch{
		ImageID: cloudsim.ImageID("us-east-1", simulation.DefaultAMIName), Running: true,
		Tags: map[string]string{"Name": name},
	})
	require.NoError(t, err)
	require.Len(t, insts, 1)
	return insts[0]
}

// importSimulated imports a simulated running instance as a worker with its
// (loopback) CML endpoint, and returns the worker id and the endpoint.
func (e *env) importSimulated(t testing.TB, name string) (id, endpoint string) {
	t.Helper()
	in := launchOutOfBand(t, name)
	endpoint = application.EndpointFor(shared.cloud.EndpointTemplate, application.Instance{
		InstanceID: in.ID, PublicIP: in.PublicIP, PrivateIP: in.PrivateIP,
	})
	res, err := e.app.ImportWorker(ctxAs("admin"), application.ImportWorker{
		Name: name, Region: "us-east-1", InstanceID: in.ID, State: worker.EC2Running, Endpoint: endpoint,
	})
	require.NoError(t, err)
	waitProjected(t, "worker_view", res.Position)
	return res.ID, endpoint
}

// firstLab waits for the simulated controller at endpoint to answer and
// returns the id of one of its demo labs.
func firstLab(t testing.TB, endpoint string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		labs, err := shared.cloud.CML.Labs(context.Background(), endpoint)
		if err == nil && len(labs) > 0 {
			return labs[0].ID
		}
		require.True(t, time.Now().Before(deadline), "the simulated controller never listed a lab: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
}

// onSimulatedLab calls .../labs/{lab}<suffix> on a lab of a simulated
// controller.
func onSimulatedLab(suffix string) func(*testing.T, *env) request {
	return func(t *testing.T, e *env) request {
		id, endpoint := e.importSimulated(t, "matrix-lab")
		return request{method: http.MethodGet, path: "/api/workers/" + id + "/labs/" + firstLab(t, endpoint) + suffix}
	}
}

func TestImportWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// By instance id: created, named from the Name tag, with its endpoint.
	in := launchOutOfBand(t, "by-id")
	r := e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "instance_id": in.ID}})
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	var out application.ImportOutcome
	r.json(t, &out)
	require.Len(t, out.Imported, 1)
	require.Equal(t, "by-id", out.Imported[0].Name)
	require.Equal(t, "/api/workers/"+out.Imported[0].ID, r.header.Get("Location"))
	waitProjected(t, "worker_view", out.Imported[0].Position)
	v, err := e.app.GetWorker(ctxAs("admin"), out.Imported[0].ID)
	require.NoError(t, err)
	require.Equal(t, in.ID, v.InstanceID)
	require.Equal(t, worker.StatusRunning, v.Status)
	require.Equal(t, simulation.DefaultAMIName, v.AMIName)
	require.True(t, strings.HasPrefix(v.Endpoint, "https://127.0.0.1:"), v.Endpoint)

	// The same instance again: 409 naming the worker.
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "instance_id": in.ID}})
	p := r.problem(t, http.StatusConflict, CodeAlreadyExists)
	require.Equal(t, out.Imported[0].ID, p["worker_id"])

	// An instance EC2 does not know: 404.
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "instance_id": "i-0123456789abcdef0"}})
	r.problem(t, http.StatusNotFound, CodeNotFound)

	// Bad requests: no criterion, two criteria, all with an instance id,
	// unknown region, bad pattern; every problem reported at once.
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "mars-1"}})
	p = r.problem(t, http.StatusBadRequest, CodeInvalid)
	require.Len(t, p["problems"], 2, "%s", r.body)
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "instance_id": in.ID, "ami_id": "ami-0123456789abcdef0", "all": true}})
	r.problem(t, http.StatusBadRequest, CodeInvalid)
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "ami_name_pattern": "cisco-[cml"}})
	r.problem(t, http.StatusBadRequest, CodeInvalid)
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "ami_name_pattern": "x", "surprise": 1}})
	r.problem(t, http.StatusBadRequest, CodeInvalid)
	require.Contains(t, string(r.body), "surprise")
}

func TestImportByAMIIsAmbiguousWithoutAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// An AMI of this test's own, so that it alone launches from it.
	name := "cml-import-test-" + randomHex(6)
	img, err := shared.cloud.Sim.Console().RegisterImage("us-east-1", name, "import test", true)
	require.NoError(t, err)
	image := img.ID
	_, err = shared.cloud.Sim.Console().Launch("us-east-1", cloudsim.ConsoleLaunch{ImageID: image, Count: 3, Running: true})
	require.NoError(t, err)
	gone, err := shared.cloud.Sim.Console().Launch("us-east-1", cloudsim.ConsoleLaunch{ImageID: image, Running: true})
	require.NoError(t, err)
	require.NoError(t, shared.cloud.Sim.Console().Terminate(gone[0].ID))

	r := e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "ami_id": image}})
	p := r.problem(t, http.StatusBadRequest, CodeAmbiguous)
	require.Len(t, p["instance_ids"], 3)

	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "ami_name_pattern": name[:len(name)-3] + "*", "all": true}})
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	var out application.ImportOutcome
	r.json(t, &out)
	require.Len(t, out.Imported, 3)
	for _, w := range out.Imported {
		// No Name tag: named after the instance.
		require.True(t, strings.HasPrefix(w.Name, "worker-i-"), w.Name)
		waitProjected(t, "worker_view", w.Position)
	}
	// Terminated instances are never returned by the look-up, or are
	// reported as not live.
	for _, s := range out.Skipped {
		require.Equal(t, gone[0].ID, s.InstanceID)
		require.Equal(t, application.SkipNotLive, s.Reason)
	}

	// Again: everything is managed now, nothing imported, 200.
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/import", as: "admin",
		body: map[string]any{"region": "us-east-1", "ami_id": image, "all": true}})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &out)
	require.Empty(t, out.Imported)
	managed := 0
	for _, s := range out.Skipped {
		if s.Reason == application.SkipManaged {
			managed++
			require.NotEmpty(t, s.WorkerID)
		}
	}
	require.Equal(t, 3, managed)
}

func TestDownloadLab(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id, endpoint := e.importSimulated(t, "download")
	lab := firstLab(t, endpoint)
	r := e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/labs/" + lab + "/download", as: "auditor"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(t, r.header.Get("Content-Type"), "application/yaml")
	require.Equal(t, `attachment; filename="`+lab+`.yaml"`, r.header.Get("Content-Disposition"))
	require.Contains(t, string(r.body), "nodes:")

	// A lab the controller does not have: 404.
	r = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/labs/0b7e7f9e-5a55-4c43-9a40-5f7d3f0e0a11/download", as: "user"})
	r.problem(t, http.StatusNotFound, CodeNotFound)

	// A stopped worker: 409 with its status.
	stopped := e.importWorker(t, "stopped", worker.EC2Stopped)
	r = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + stopped + "/labs/" + lab + "/download", as: "user"})
	p := r.problem(t, http.StatusConflict, CodeIllegalTransition)
	require.Equal(t, "stopped", p["current_status"])
}

func TestRefreshIsThrottledPerWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "refresh", worker.EC2Running)
	var first, second application.EnqueuedJob
	r := e.do(t, request{method: http.MethodPost, path: "/api/workers/" + id + "/refresh", as: "user"})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	r.json(t, &first)
	require.False(t, first.Duplicate)
	require.Equal(t, id, first.WorkerID)
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/" + id + "/refresh", as: "manager"})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	r.json(t, &second)
	require.True(t, second.Duplicate)
	require.Equal(t, first.JobID, second.JobID)

	removed := e.importWorker(t, "removed", worker.EC2Running)
	_, err := e.app.RemoveWorker(ctxAs("admin"), removed)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		v, err := e.app.GetWorker(ctxAs("admin"), removed)
		return err == nil && v.Status == worker.StatusRemoved
	}, 20*time.Second, 10*time.Millisecond)
	r = e.do(t, request{method: http.MethodPost, path: "/api/workers/" + removed + "/refresh", as: "user"})
	r.problem(t, http.StatusConflict, CodeIllegalTransition)
}

func TestMetricsAndLabsRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.importWorker(t, "observe", worker.EC2Running)
	r := e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/metrics", as: "user"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var series application.MetricsSeries
	r.json(t, &series)
	require.Equal(t, id, series.WorkerID)
	require.NotNil(t, series.Points)

	r = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/metrics?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z&step=5", as: "user"})
	p := r.problem(t, http.StatusBadRequest, CodeInvalid)
	require.Len(t, p["problems"], 2, "%s", r.body)

	r = e.do(t, request{method: http.MethodGet, path: "/api/workers/" + id + "/labs", as: "auditor"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var labs application.WorkerLabs
	r.json(t, &labs)
	require.Equal(t, 0, labs.Count)

	r = e.do(t, request{method: http.MethodGet, path: "/api/workers/0b7e7f9e-5a55-4c43-9a40-5f7d3f0e0a11/labs", as: "user"})
	r.problem(t, http.StatusNotFound, CodeNotFound)
}

func TestSystemJobsRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do(t, request{method: http.MethodPost, path: "/api/system/jobs/labs_sync/run", as: "admin"})
	require.Equal(t, http.StatusAccepted, r.status, "%s", r.body)
	var run RunJobAccepted
	r.json(t, &run)
	require.NotEmpty(t, run.Jobs)
	require.Equal(t, application.JobLabsSync, run.Jobs[0].Kind)

	r = e.do(t, request{method: http.MethodPost, path: "/api/system/jobs/ec2_launch/run", as: "admin"})
	r.problem(t, http.StatusNotFound, CodeNotFound)
	r = e.do(t, request{method: http.MethodPost, path: "/api/system/jobs/DROP%20TABLE/run", as: "admin"})
	r.problem(t, http.StatusBadRequest, CodeInvalid)

	r = e.do(t, request{method: http.MethodGet, path: "/api/system/jobs", as: "auditor"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var o application.JobsOverview
	r.json(t, &o)
	require.NotEmpty(t, o.Periodic)
	found := false
	for _, j := range o.Recent {
		if j.Kind == application.JobLabsSync {
			found = true
		}
	}
	require.True(t, found, "the job run now is among the recent jobs: %s", r.body)
}
