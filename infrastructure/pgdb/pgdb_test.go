package pgdb_test

import (
	"context"
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
}
