package main

import (
	"context"
	"log/slog"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/jobs/simulation"
)

func runSimulator(ctx context.Context, cli *CLI, args []string) error {
	fs := cli.flagSet("simulator", "",
		"Run the built-in cloud simulator alone until SIGINT or SIGTERM: EC2 and CloudWatch on\n"+
			"SIMULATOR_ADDR (default 127.0.0.1:4566) and the simulated CML controllers on\n"+
			"SIMULATOR_CML_ADDR (default 127.0.0.1:4567), for the regions of AWS_REGIONS. Point a\n"+
			"service at it with CLOUD=aws, AWS_ENDPOINT_URL and CML_ENDPOINT_TEMPLATE as logged at\n"+
			"start (credentials: any; CML user admin/admin).")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("simulator takes no arguments, got %q", fs.Args())
	}
	cfg, logger, err := cli.setup()
	if err != nil {
		return err
	}
	return simulation.RunSimulator(ctx, simulation.Options{
		Regions: cfg.AWSRegions, Addr: cfg.Simulator.Addr, CMLAddr: cfg.Simulator.CMLAddr,
		Logger: logger.With(slog.String("component", "simulator")),
	})
}
