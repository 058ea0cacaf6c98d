package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func runProjections(ctx context.Context, cli *CLI, args []string) error {
	fs := cli.flagSet("projections", "list | rebuild NAME",
		"list: show every read model with its checkpoint.\n"+
			"rebuild NAME: rebuild read model NAME from the whole event log into fresh tables while\n"+
			"the live ones keep serving, then swap them in one transaction. Running servers keep\n"+
			"serving and continue from the rebuilt position.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageErrorf("projections needs a subcommand: list or rebuild NAME")
	}
	switch {
	case rest[0] == "list" && len(rest) == 1:
	case rest[0] == "rebuild" && len(rest) == 2:
	default:
		return usageErrorf("projections: unknown or incomplete subcommand %q (want list, or rebuild NAME)", strings.Join(rest, " "))
	}

	cfg, logger, err := cli.setup()
	if err != nil {
		return err
	}
	all := projections.All(application.EventRegistry())
	if rest[0] == "rebuild" {
		i := slices.IndexFunc(all, func(p projections.Projection) bool { return p.Name() == rest[1] })
		if i < 0 {
			return usageErrorf("no read model named %q; known: %s", rest[1], strings.Join(names(all), ", "))
		}
		all = all[i : i+1]
	}

	pool, err := openDatabase(ctx, cfg, logger, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	defer pool.Close()

	if rest[0] == "list" {
		return listProjections(ctx, cli, pool, all)
	}
	store, closeStore, _, err := openEventStore(ctx, cfg, pool, logger)
	if err != nil {
		return err
	}
	defer closeStore()
	p := all[0]
	logger.InfoContext(ctx, "rebuilding read model", slog.String("projection", p.Name()))
	res, err := projections.Rebuild(ctx, store, pool, p, projections.RebuildOptions{Logger: logger})
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", p.Name(), err)
	}
	fmt.Fprintf(cli.Stdout, "rebuilt %s: %d events in %s (%.0f events/s), now at position %s\n",
		p.Name(), res.Events, res.Duration.Round(time.Millisecond), res.EventsPerSecond, res.Position)
	return nil
}

func names(ps []projections.Projection) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name()
	}
	return out
}

// listProjections prints each read model with its stored checkpoint.
func listProjections(ctx context.Context, cli *CLI, pool *pgxpool.Pool, all []projections.Projection) error {
	rows, err := pool.Query(ctx, `SELECT name, commit_position, prepare_position, updated_at FROM projection_checkpoints`)
	if err != nil {
		return fmt.Errorf("read checkpoints: %w", err)
	}
	type cp struct {
		pos string
		at  time.Time
	}
	stored := map[string]cp{}
	for rows.Next() {
		var (
			name            string
			commit, prepare int64
			at              time.Time
		)
		if err := rows.Scan(&name, &commit, &prepare, &at); err != nil {
			rows.Close()
			return fmt.Errorf("read checkpoints: %w", err)
		}
		pos := eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
		stored[name] = cp{pos: pos.String(), at: at}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read checkpoints: %w", err)
	}
	w := tabwriter.NewWriter(cli.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tTABLES\tPOSITION\tUPDATED")
	for _, p := range all {
		c, ok := stored[p.Name()]
		pos, at := "-", "never"
		if ok {
			pos, at = c.pos, c.at.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Name(), strings.Join(p.Tables(), ","), pos, at)
	}
	return w.Flush()
}
