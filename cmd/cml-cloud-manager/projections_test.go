package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/postgres"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/sealing"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

func TestProjectionsCommand(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()

	// Two tasks in the log, and no read model has run yet.
	pool, err := pgdb.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store, err := postgres.Open(ctx, pool, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sealer, _ := sealing.New(sealing.RandomKey())
	app := application.New(application.Options{
		Store: store, Sealer: sealer,
		Workers: projections.NewWorkerReader(pool), Settings: projections.NewSettingsReader(pool), Tasks: projections.NewTaskReader(pool),
	})
	admin := rbac.WithPrincipal(ctx, rbac.Principal{Subject: "a", Roles: []rbac.Role{rbac.RoleAdmin}})
	for _, title := range []string{"one", "two"} {
		if _, err := app.CreateTask(admin, application.CreateTask{Title: title}); err != nil {
			t.Fatal(err)
		}
	}

	cli, stdout, stderr := testCLI(map[string]string{"DATABASE_URL": url})
	if code := cli.Run(ctx, []string{"projections", "rebuild", "task_view"}); code != exitOK {
		t.Fatalf("rebuild exited %d:\n%s", code, stderr)
	}
	if !strings.Contains(stdout.String(), "rebuilt task_view: 2 events") {
		t.Fatalf("rebuild output: %q", stdout)
	}
	views, total, err := projections.NewTaskReader(pool).ListTasks(ctx, application.TaskFilter{Limit: 10})
	if err != nil || total != 2 || views[0].Status != task.StatusPending {
		t.Fatalf("task_view after rebuild: %d rows, %v", total, err)
	}

	cli, stdout, stderr = testCLI(map[string]string{"DATABASE_URL": url})
	if code := cli.Run(ctx, []string{"projections", "list"}); code != exitOK {
		t.Fatalf("list exited %d:\n%s", code, stderr)
	}
	for _, want := range []string{"worker_view", "audit_log", "settings_view", "task_view  "} {
		if !strings.Contains(stdout.String(), want) {
			t.Fatalf("list output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(lineOf(stdout.String(), "task_view"), "never") {
		t.Fatalf("task_view has no checkpoint after its rebuild:\n%s", stdout)
	}

	for _, args := range [][]string{{"projections"}, {"projections", "rebuild"}, {"projections", "rebuild", "nope"}, {"projections", "drop", "x"}} {
		cli, _, stderr := testCLI(map[string]string{"DATABASE_URL": url})
		if code := cli.Run(ctx, args); code != exitUsage {
			t.Errorf("%v exited %d, want %d:\n%s", args, code, exitUsage, stderr)
		}
	}
}

func lineOf(s, prefix string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}
