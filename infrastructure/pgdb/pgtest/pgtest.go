// Package pgtest gives tests their own freshly migrated Postgres database.
//
// The server comes from TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable). The first call
// in a run builds a migrated template database named after a hash of the
// migrations; every NewDatabase then copies it with CREATE DATABASE ...
// TEMPLATE, which takes a fraction of a second, and drops the copy when the
// test (or the test package, see Main) ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb"
	"github.com/cmlcloud/cml-cloud-manager/migrations"
)

// DefaultURL is used when TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

const prefix = "cmlcm_test_"

// templateLockKey serialises template creation across parallel test binaries.
const templateLockKey int64 = 0x434d4c4d_74706c74 // "CMLMtplt"

// staleAfter is the age after which databases left behind by killed test runs
// are dropped.
const staleAfter = 6 * time.Hour

// ServerURL returns the URL of the test server's maintenance database.
func ServerURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// NewDatabase creates a fresh migrated database for tb and returns its URL.
// The database is dropped when tb ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	url, drop, err := CreateDatabase(context.Background())
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := drop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return url
}

// NewPool creates a fresh database for tb and returns a pool connected to it.
// The pool is closed before the database is dropped.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	url := NewDatabase(tb)
	pool, err := pgdb.Connect(context.Background(), url)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// Main runs a test package with one database shared by all its tests, and
// drops it afterwards. It sets *url before the tests run. Use it from
// TestMain: func TestMain(m *testing.M) { pgtest.Main(m, &dbURL) }.
func Main(m *testing.M, url *string) {
	u, drop, err := CreateDatabase(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		os.Exit(1)
	}
	*url = u
	code := m.Run()
	if err := drop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// CreateDatabase creates a fresh migrated database and returns its URL and a
// function that drops it.
func CreateDatabase(ctx context.Context) (string, func() error, error) {
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	if templateErr != nil {
		return "", nil, templateErr
	}
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return "", nil, fmt.Errorf("connect to test server %s: %w", pgdb.Redact(ServerURL()), err)
	}
	defer admin.Close(ctx)

	name := prefix + strconv.FormatInt(time.Now().Unix(), 10) + "_" + randomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{templateName}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create test database: %w", err)
	}
	cfg, err := pgx.ParseConfig(ServerURL())
	if err != nil {
		return "", nil, err
	}
	url := withDatabase(ServerURL(), cfg.Database, name)
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		if err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
		return nil
	}
	return url, drop, nil
}

// ensureTemplate builds (once per schema version) the migrated template and
// drops stale databases of earlier runs.
func ensureTemplate(ctx context.Context) (string, error) {
	hash, err := schemaHash()
	if err != nil {
		return "", err
	}
	name := prefix + "template_" + hash
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return "", fmt.Errorf("connect to test server %s (set TEST_DATABASE_URL): %w", pgdb.Redact(ServerURL()), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLockKey); err != nil {
		return "", fmt.Errorf("lock template: %w", err)
	}
	defer func() {
		_, _ = admin.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", templateLockKey)
	}()

	dropStale(ctx, admin, name)

	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up template: %w", err)
	}
	if exists {
		return name, nil
	}
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop half-built template: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	cfg, err := pgx.ParseConfig(ServerURL())
	if err != nil {
		return "", err
	}
	pool, err := pgdb.Connect(ctx, withDatabase(ServerURL(), cfg.Database, name))
	if err != nil {
		return "", err
	}
	quiet := slog.New(slog.DiscardHandler)
	err = pgdb.Migrate(ctx, pool, quiet)
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	// Marking it a template both documents it and lets the next run reuse it.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH is_template true"); err != nil {
		return "", fmt.Errorf("mark template: %w", err)
	}
	return name, nil
}

// dropStale removes test databases older than staleAfter and templates of
// other schema versions. Failures only mean leftovers; they are ignored.
func dropStale(ctx context.Context, admin *pgx.Conn, keep string) {
	rows, err := admin.Query(ctx, "SELECT datname, datistemplate FROM pg_database WHERE datname LIKE 'cmlcm\\_test\\_%'")
	if err != nil {
		return
	}
	type db struct {
		name     string
		template bool
	}
	var dbs []db
	for rows.Next() {
		var d db
		if rows.Scan(&d.name, &d.template) == nil {
			dbs = append(dbs, d)
		}
	}
	rows.Close()
	cutoff := time.Now().Add(-staleAfter).Unix()
	for _, d := range dbs {
		stale := false
		if d.template {
			stale = d.name != keep
		} else if ts, ok := createdAt(d.name); ok {
			stale = ts < cutoff
		}
		if !stale {
			continue
		}
		if d.template {
			_, _ = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{d.name}.Sanitize()+" WITH is_template false")
		}
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
	}
}

func createdAt(name string) (int64, bool) {
	rest := strings.TrimPrefix(name, prefix)
	ts, _, ok := strings.Cut(rest, "_")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	return n, err == nil
}

// schemaHash identifies the schema: our migration files plus River's
// migration line, so a change to either builds a new template.
func schemaHash() (string, error) {
	h := sha256.New()
	var names []string
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := fs.ReadFile(migrations.FS, n)
		if err != nil {
			return "", err
		}
		h.Write([]byte(n))
		h.Write(b)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return "", fmt.Errorf("river migrator: %w", err)
	}
	for _, m := range migrator.AllVersions() {
		h.Write([]byte(strconv.Itoa(m.Version) + m.Name + m.SQLUp))
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("pgtest: no randomness"))
	}
	return hex.EncodeToString(b)
}

// withDatabase replaces the database of a URL or keyword/value string.
func withDatabase(conn, oldDB, newDB string) string {
	if strings.Contains(conn, "://") {
		u := strings.SplitN(conn, "?", 2)
		base := u[0]
		if i := strings.LastIndex(base, "/"); i > strings.Index(base, "://")+2 {
			base = base[:i]
		}
		out := base + "/" + newDB
		if len(u) == 2 {
			out += "?" + u[1]
		}
		return out
	}
	if oldDB != "" && strings.Contains(conn, "dbname="+oldDB) {
		return strings.Replace(conn, "dbname="+oldDB, "dbname="+newDB, 1)
	}
	return conn + " dbname=" + newDB
}
