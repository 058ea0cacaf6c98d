package pgdb_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
)

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	// The template is already migrated; a second run must change nothing and succeed.
	if err := pgdb.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM river_migration").Scan(&n); err != nil {
		t.Fatalf("river tables missing: %v", err)
	}
	if n == 0 {
		t.Fatal("no river migrations recorded")
	}
	if err := pgdb.CheckSchema(ctx, pool); err != nil {
		t.Fatalf("schema of a migrated database: %v", err)
	}
}

func TestCheckSchemaReportsPendingMigrations(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	// Forget the newest migration, as if the binary were newer than the database.
	if _, err := pool.Exec(ctx, "DELETE FROM schema_migrations WHERE version_id = (SELECT max(version_id) FROM schema_migrations)"); err != nil {
		t.Fatal(err)
	}
	if err := pgdb.CheckSchema(ctx, pool); !errors.Is(err, pgdb.ErrSchemaOutdated) {
		t.Fatalf("CheckSchema = %v; want ErrSchemaOutdated", err)
	}
}
