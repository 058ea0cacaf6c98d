package main

import (
	"context"
	"fmt"
	"log/slog"

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

// seedSimulation creates and imports a few simulated workers when the log
// has none (CLOUD=simulated, SIMULATOR_SEED_WORKERS > 0), once the roles
// run: the created ones are then launched by the jobs like any other.
func (m *Main) seedSimulation(c *cloud) role {
	return role{name: "simulation-seed", run: func(ctx context.Context) error {
		n := m.Config.Simulator.SeedWorkers
		ids, err := c.sim.Seed(ctx, m.App, m.Store, simulation.SeedOptions{Created: (n + 1) / 2, Imported: n / 2, Exact: true})
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
