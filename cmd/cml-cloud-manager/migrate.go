package main

import "context"

func runMigrate(ctx context.Context, cli *CLI, args []string) error {
	fs := cli.flagSet("migrate", "",
		"Create the database named in DATABASE_URL if it does not exist, then apply every\n"+
			"migration (the service's own and River's). Idempotent, and safe to run from several\n"+
			"processes at once (an advisory lock serialises them).")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("migrate takes no arguments, got %q", fs.Args())
	}
	cfg, logger, err := cli.setup()
	if err != nil {
		return err
	}
	pool, err := openDatabase(ctx, cfg, logger, true)
	if err != nil {
		return err
	}
	pool.Close()
	return nil
}
