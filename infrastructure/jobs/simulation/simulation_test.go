package simulation_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSimulatedCloudSeedsWorkersThatMoveThroughTheirStates is what
// CLOUD=simulated does in `serve`: the simulator in-process, the real AWS
// and CML clients on it, the jobs, and a few seeded workers.
func TestSimulatedCloudSeedsWorkersThatMoveThroughTheirStates(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	cfg.MaxConns = 12
	pool, err := pgdb.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: quiet()})
	require.NoError(t, err)
	defer store.Close()
	registry := application.EventRegistry()
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	manager := projections.NewManager(store, pool, projections.All(registry), projections.RunnerOptions{Logger: quiet(), LockRetry: 100 * time.Millisecond})
	wg.Go(func() { _ = manager.Run(runCtx) })

	regions := []string{"us-east-1"}
	cloud, err := simulation.Start(ctx, simulation.Options{Regions: regions, Logger: quiet(),
		Timings:   cloudsim.Timings{Pending: 300 * time.Millisecond, Stopping: 300 * time.Millisecond},
		BootDelay: 100 * time.Millisecond, ReadyDelay: 100 * time.Millisecond})
	require.NoError(t, err)
	defer func() { require.NoError(t, cloud.Close()) }()

	sealer, err := sealing.New(sealing.RandomKey())
	require.NoError(t, err)
	defaults := settings.Values{AMIIDs: simulation.AMIIDs(regions, simulation.DefaultAMIName), InstanceType: "m5zn.metal",
		IdleTimeoutSeconds: 3600, FleetReconcileSeconds: 60, FleetMetricsSeconds: 300, LabsSyncSeconds: 1800, IdleCheckSeconds: 300}
	workers := projections.NewWorkerReader(pool)
	app := application.New(application.Options{Store: store, Sealer: sealer, Workers: workers,
		Settings: projections.NewSettingsReader(pool), Tasks: projections.NewTaskReader(pool),
		Regions: regions, Defaults: defaults, Logger: quiet()})
	svc, err := jobs.New(ctx, pool, jobs.Deps{
		App: app, Telemetry: application.NewTelemetry(app, projections.NewMetricsReader(pool), projections.NewLabsReader(pool)),
		Cloud: cloud.Provider, CML: cloud.CML, Sealer: sealer, Store: store, Registry: registry, Workers: workers,
		Settings: projections.NewSettingsReader(pool), Defaults: defaults, Regions: regions, Logger: quiet(),
	}, jobs.Options{EndpointTemplate: cloud.EndpointTemplate, PollInterval: 100 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond, FetchCooldown: 10 * time.Millisecond, ReactorLockRetry: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, svc.Start(ctx))
	defer func() {
		stopCtx, stop := context.WithTimeout(ctx, 30*time.Second)
		defer stop()
		require.NoError(t, svc.Stop(stopCtx))
	}()

	ids, err := cloud.Seed(ctx, app, store, simulation.SeedOptions{})
	require.NoError(t, err)
	require.Len(t, ids, 4)
	again, err := cloud.Seed(ctx, app, store, simulation.SeedOptions{})
	require.NoError(t, err)
	require.Empty(t, again, "seeded once: the log has workers")

	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for {
			v, err := workers.GetWorker(ctx, id)
			if err == nil && v.Status == worker.StatusRunning && v.Endpoint != "" {
				require.True(t, strings.HasPrefix(v.Endpoint, "https://127.0.0.1:"), v.Endpoint)
				break
			}
			require.True(t, time.Now().Before(deadline), "worker %s never ran: %+v %v", id, v.Status, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	require.Len(t, cloud.Sim.Instances("us-east-1"), 4)
}

// captureHandler keeps the records logged.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) attr(msg, key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		var v string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v = a.Value.String()
			}
			return true
		})
		return v
	}
	return ""
}

func TestRunSimulatorServesUntilCancelled(t *testing.T) {
	h := &captureHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- simulation.RunSimulator(ctx, simulation.Options{Addr: "127.0.0.1:0", CMLAddr: "127.0.0.1:0", Logger: slog.New(h)})
	}()
	var endpoint string
	deadline := time.Now().Add(10 * time.Second)
	for endpoint == "" {
		endpoint = h.attr("simulator running; point the service at it with these settings", "AWS_ENDPOINT_URL")
		require.True(t, time.Now().Before(deadline), "the simulator did not start")
		time.Sleep(10 * time.Millisecond)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(endpoint + "/sim/instances")
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, h.attr("simulator running; point the service at it with these settings", "CML_ENDPOINT_TEMPLATE"), "/controllers/{instance_id}")
	cancel()
	require.NoError(t, <-done)
}

func TestAMIIDsNameTheSeededImages(t *testing.T) {
	t.Parallel()
	got := simulation.AMIIDs([]string{"us-east-1", "eu-west-1"}, simulation.DefaultAMIName)
	require.Equal(t, map[string]string{
		"us-east-1": cloudsim.ImageID("us-east-1", simulation.DefaultAMIName),
		"eu-west-1": cloudsim.ImageID("eu-west-1", simulation.DefaultAMIName),
	}, got)
}
