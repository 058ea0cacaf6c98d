package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/aws"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cml"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// cloud is what serve talks to the cloud through: the EC2/CloudWatch
// provider, the CML client and the endpoint template of the workers'
// controllers. With CLOUD=simulated they are the real adapters pointed at
// the built-in simulator, which then runs in-process.
type cloud struct {
	provider         application.CloudProvider
	cml              application.CMLClient
	endpointTemplate string
	// sim is the simulator (CLOUD=simulated only).
	sim *simulation.Cloud
}

// openCloud builds the cloud of cfg.Cloud. The simulator is stopped by
// Close (through m.closers).
func (m *Main) openCloud(ctx context.Context) (*cloud, error) {
	cfg := m.Config
	if cfg.Cloud == CloudSimulated {
		sim, err := simulation.Start(ctx, simulation.Options{
			Regions: cfg.AWSRegions, Addr: cfg.Simulator.Addr, CMLAddr: cfg.Simulator.CMLAddr,
			Logger: m.Logger.With(slog.String("component", "simulator")),
			// A new world per start: instance ids must not repeat those of
			// an earlier run recorded in the log.
			Seed: rand.Uint64(),
		})
		if err != nil {
			return nil, err
		}
		m.closers = append(m.closers, func() { _ = sim.Close() })
		m.Logger.WarnContext(ctx, "CLOUD=simulated: workers run in the built-in cloud simulator, not on AWS",
			slog.String("aws_endpoint_url", sim.Sim.EndpointURL()))
		return &cloud{provider: sim.Provider, cml: sim.CML, endpointTemplate: sim.EndpointTemplate, sim: sim}, nil
	}
	provider, err := aws.New(ctx, aws.Options{
		Regions: cfg.AWSRegions, EndpointURL: cfg.AWS.EndpointURL, Logger: m.Logger,
		MaxAttempts: cfg.AWS.MaxAttempts, MaxBackoff: cfg.AWS.MaxBackoff, ImageOwners: cfg.AWS.ImageOwners,
	})
	if err != nil {
		return nil, fmt.Errorf("AWS: %w", err)
	}
	client, err := cml.New(cml.Options{
		Username: cfg.CML.Username, Password: cfg.CML.Password, TLSVerify: cfg.CML.TLSVerify,
		CAFile: cfg.CML.CAFile, Timeout: cfg.CML.RequestTimeout, Logger: m.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("CML client: %w", err)
	}
	return &cloud{provider: provider, cml: client, endpointTemplate: cfg.CML.EndpointTemplate}, nil
}

// openJobs builds the job system: with RUN_JOBS its workers, reactor and
// periodic jobs run here (a serve role); without it this instance only
// enqueues (refresh, run now).
func (m *Main) openJobs(ctx context.Context, c *cloud, sealer *sealing.Sealer) (*jobs.Service, error) {
	cfg := m.Config
	app := m.App
	var pruners []jobs.Pruner
	if ps, ok := m.Store.(*postgres.Store); ok {
		// EventStoreDB applies the retention itself ($maxAge).
		pruners = append(pruners, postgres.TelemetryPruner{Store: ps, Prefix: worker.TelemetryStreamPrefix})
	}
	pruners = append(pruners, projections.MetricsPruner{Pool: m.Pool})
	svc, err := jobs.New(ctx, m.Pool, jobs.Deps{
		App: app, Telemetry: m.Telemetry, Cloud: c.provider, CML: c.cml, Sealer: sealer,
		Store: m.Store, Registry: m.Registry, Workers: m.Workers,
		Settings: projections.NewSettingsReader(m.Pool), Defaults: m.settingsDefaults(c),
		Regions: cfg.AWSRegions, Pruners: pruners, Logger: m.Logger,
	}, jobs.Options{
		InsertOnly:   !cfg.Jobs.Run,
		CloudWorkers: cfg.Jobs.CloudWorkers, CMLWorkers: cfg.Jobs.CMLWorkers, FleetWorkers: cfg.Jobs.FleetWorkers,
		CMLConcurrency: cfg.Jobs.CMLConcurrency, CallTimeout: cfg.Jobs.CallTimeout,
		EndpointTemplate: c.endpointTemplate, TelemetryRetention: cfg.TelemetryRetention,
		RefreshThrottle:         cfg.Jobs.RefreshThrottle,
		ActivityExcludedUsers:   cfg.CML.ActivityExcludedUserIDs,
		ActivityExcludedPattern: cfg.CML.ActivityExcludedUserPattern,
		AutoImport: jobs.AutoImportOptions{
			Enabled: cfg.Jobs.AutoImport, Region: cfg.Jobs.AutoImportRegion,
			AMINamePattern: cfg.Jobs.AutoImportAMIPattern, Interval: cfg.Jobs.AutoImportInterval,
		},
	})
	if err != nil {
		return nil, err
	}
	m.roles = append(m.roles, role{name: "jobs", run: svc.Run})
	return svc, nil
}

// settingsDefaults are the environment's runtime settings; with the
// simulator and no WORKER_AMI_IDS, each region boots the simulator's AMI
// named WORKER_AMI_NAME.
func (m *Main) settingsDefaults(c *cloud) settings.Values {
	d := m.Config.SettingsDefaults()
	if c != nil && c.sim != nil && len(d.AMIIDs) == 0 {
		d.AMIIDs = simulation.AMIIDs(m.Config.AWSRegions, d.AMIName)
	}
	return d
}

// seedSimulation creates and imports a few simulated workers
// (CLOUD=simulated, SIMULATOR_SEED_WORKERS > 0) once the worker read model
// has caught up, unless a worker of the log lives in this simulator. The
// simulator starts empty on every start, so the workers of an earlier run
// are observed as gone by the first reconciliation; without a new seed the
// first screen would then be empty. The created ones are launched by the
// jobs like any other.
func (m *Main) seedSimulation(c *cloud) role {
	return role{name: "simulation-seed", run: func(ctx context.Context) error {
		live, err := m.simulatedWorkersLive(ctx, c)
		if err != nil || live {
			if err != nil && ctx.Err() == nil {
				m.Logger.WarnContext(ctx, "seeding the simulated fleet skipped", slog.Any("error", err))
			}
			<-ctx.Done()
			return nil
		}
		n := m.Config.Simulator.SeedWorkers
		ids, err := c.sim.Seed(ctx, m.App, m.Store, simulation.SeedOptions{
			Created: (n + 1) / 2, Imported: n / 2, Exact: true, Always: true,
		})
		switch {
		case err != nil && ctx.Err() == nil:
			// A failed seed leaves an emptier demo, never a broken service.
			m.Logger.WarnContext(ctx, "seeding the simulated fleet failed", slog.Any("error", err))
		case len(ids) > 0:
			m.Logger.InfoContext(ctx, "seeded the simulated fleet", slog.Int("workers", len(ids)))
		}
		<-ctx.Done()
		return nil
	}}
}

// simulatedWorkersLive waits for the worker read model to catch up with the
// log, then reports whether some worker that is not terminated either has
// no instance yet (a launch in flight) or has one the simulator knows.
func (m *Main) simulatedWorkersLive(ctx context.Context, c *cloud) (bool, error) {
	if err := m.Catalog.WaitReady(ctx); err != nil {
		return false, err
	}
	for m.Projections != nil && !m.Projections.Ready() {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	views, _, err := m.Workers.ListWorkers(ctx, application.WorkerFilter{Limit: application.MaxPageSize})
	if err != nil {
		return false, err
	}
	stale := 0
	for _, v := range views {
		if v.Status.Terminal() {
			continue
		}
		if _, known := c.sim.Sim.Instance(v.InstanceID); v.InstanceID == "" || known {
			return true, nil
		}
		stale++
	}
	if stale > 0 {
		m.Logger.InfoContext(ctx, "the simulator starts empty: workers of an earlier run will be observed as gone",
			slog.Int("workers", stale))
	}
	return false, nil
}
