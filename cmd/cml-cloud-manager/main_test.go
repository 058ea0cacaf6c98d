package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/pgdb/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer collects output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testCLI returns a CLI whose environment is vars only (no .env file).
func testCLI(vars map[string]string) (*CLI, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return &CLI{Stdout: stdout, Stderr: stderr, LookupEnv: mapLookup(vars)}, stdout, stderr
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// httpGet fetches url without keeping connections alive (goleak).
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	res, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// freshDatabaseURL names a database that does not exist yet on the test
// server, and drops it when the test ends. The name follows pgtest's
// pattern, so pgtest's stale-database sweep also removes it if a run dies.
func freshDatabaseURL(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "cmlcm_test_" + strconv.FormatInt(time.Now().Unix(), 10) + "_" + hex.EncodeToString(b)
	u, err := url.Parse(pgtest.ServerURL())
	if err != nil || u.Scheme == "" {
		t.Skipf("TEST_DATABASE_URL is not a URL; this test needs one")
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgtest.ServerURL())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return u.String()
}

func TestCLIUsage(t *testing.T) {
	t.Run("NoCommand", func(t *testing.T) {
		cli, stdout, stderr := testCLI(nil)
		if code := cli.Run(t.Context(), nil); code != exitUsage {
			t.Fatalf("exit %d, want %d", code, exitUsage)
		}
		if !strings.Contains(stderr.String(), "Usage: cml-cloud-manager <command>") || stdout.String() != "" {
			t.Fatalf("stdout %q stderr %q", stdout, stderr)
		}
	})
	t.Run("UnknownCommand", func(t *testing.T) {
		cli, _, stderr := testCLI(nil)
		if code := cli.Run(t.Context(), []string{"frobnicate"}); code != exitUsage {
			t.Fatalf("exit %d, want %d", code, exitUsage)
		}
		if !strings.Contains(stderr.String(), `unknown command "frobnicate"`) || !strings.Contains(stderr.String(), "serve") {
			t.Fatalf("stderr %q", stderr)
		}
	})
	t.Run("Help", func(t *testing.T) {
		cli, stdout, _ := testCLI(nil)
		if code := cli.Run(t.Context(), []string{"help"}); code != exitOK {
			t.Fatalf("exit %d", code)
		}
		for name := range commands {
			if !strings.Contains(stdout.String(), "  "+name+" ") {
				t.Errorf("help does not list %s:\n%s", name, stdout)
			}
		}
	})
	t.Run("HelpServe", func(t *testing.T) {
		cli, stdout, _ := testCLI(nil)
		if code := cli.Run(t.Context(), []string{"help", "serve"}); code != exitOK {
			t.Fatalf("exit %d", code)
		}
		if !strings.Contains(stdout.String(), "-no-migrate") {
			t.Fatalf("help serve:\n%s", stdout)
		}
	})
	t.Run("BadFlag", func(t *testing.T) {
		cli, _, stderr := testCLI(nil)
		if code := cli.Run(t.Context(), []string{"serve", "--bogus"}); code != exitUsage {
			t.Fatalf("exit %d, want %d", code, exitUsage)
		}
		if n := strings.Count(stderr.String(), "flag provided but not defined"); n != 1 {
			t.Fatalf("error printed %d times:\n%s", n, stderr)
		}
	})
	t.Run("StrayArgument", func(t *testing.T) {
		cli, _, _ := testCLI(nil)
		if code := cli.Run(t.Context(), []string{"migrate", "now"}); code != exitUsage {
			t.Fatalf("exit %d, want %d", code, exitUsage)
		}
	})
}

func TestVersion(t *testing.T) {
	cli, stdout, _ := testCLI(nil)
	if code := cli.Run(t.Context(), []string{"version"}); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	out := stdout.String()
	for _, s := range []string{"cml-cloud-manager dev", "commit unknown", "go1."} {
		if !strings.Contains(out, s) {
			t.Fatalf("version output %q lacks %q", out, s)
		}
	}
}

func TestServeRejectsInvalidConfig(t *testing.T) {
	cli, _, stderr := testCLI(map[string]string{
		"LOG_LEVEL":   "chatty",
		"AWS_REGIONS": "nowhere",
		"IDLE_SNOOZE": "a while",
	})
	if code := cli.Run(t.Context(), []string{"serve"}); code != exitError {
		t.Fatalf("exit %d, want %d", code, exitError)
	}
	for _, v := range []string{"LOG_LEVEL", "AWS_REGIONS", "IDLE_SNOOZE"} {
		if !strings.Contains(stderr.String(), v+":") {
			t.Errorf("stderr does not name %s:\n%s", v, stderr)
		}
	}
}

// TestServeUsesEventStoreDB: with EVENTSTORE_URL, serve opens EventStoreDB
// (here nothing listens, so it must fail fast and say so).
func TestServeUsesEventStoreDB(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // a port nothing listens on
	cli, _, stderr := testCLI(map[string]string{
		"DATABASE_URL":   pgtest.NewDatabase(t),
		"EVENTSTORE_URL": "esdb://" + addr + "?tls=false", "EVENTSTORE_READ_TIMEOUT": "1s",
		"HTTP_ADDR": "127.0.0.1:0",
	})
	if code := cli.Run(t.Context(), []string{"serve"}); code != exitError {
		t.Fatalf("exit %d, want %d", code, exitError)
	}
	if !strings.Contains(stderr.String(), "open EventStoreDB") {
		t.Fatalf("stderr:\n%s", stderr)
	}
}

// startMain runs m in the background and waits until it is ready.
func startMain(t *testing.T, m *Main) (cancel func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		stop()
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(30 * time.Second):
		stop()
		t.Fatal("Main not ready after 30s")
	}
	return func() error {
		stop()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("Run did not return 30s after cancel")
		}
	}
}

func TestMainServes(t *testing.T) {
	// A database that does not exist yet: Run must create and migrate it.
	cfg := mustLoad(t, map[string]string{
		"DATABASE_URL": freshDatabaseURL(t),
		"HTTP_ADDR":    "127.0.0.1:0",
	})
	m := NewMain(cfg, testLogger(t))
	stop := startMain(t, m)
	base := "http://" + m.Addr().String()

	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	// Ready once the database is migrated and every read model has caught
	// up with the log; until then 503 names what is missing.
	var (
		code  int
		body  string
		ready struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
	)
	for deadline := time.Now().Add(20 * time.Second); ; {
		code, body = httpGet(t, base+"/readyz")
		if code == http.StatusOK || time.Now().After(deadline) {
			break
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"projections":"failed"`) {
			t.Fatalf("/readyz while starting: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := json.Unmarshal([]byte(body), &ready); err != nil || code != http.StatusOK || ready.Status != "ready" {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	for _, check := range []string{"database", "migrations", "projections"} {
		if ready.Checks[check] != "ok" {
			t.Fatalf("/readyz check %s = %q: %s", check, ready.Checks[check], body)
		}
	}
	var migrated bool
	if err := m.Pool.QueryRow(t.Context(), "SELECT to_regclass('river_job') IS NOT NULL AND to_regclass('schema_migrations') IS NOT NULL").Scan(&migrated); err != nil || !migrated {
		t.Fatalf("database not migrated: %v", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", m.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still open after shutdown")
	}
}

func TestServeNoMigrateCLI(t *testing.T) {
	cli, _, stderr := testCLI(map[string]string{
		"DATABASE_URL": pgtest.NewDatabase(t),
		"HTTP_ADDR":    "127.0.0.1:0",
		"LOG_FORMAT":   "json",
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	exited := make(chan int, 1)
	go func() { exited <- cli.Run(ctx, []string{"serve", "--no-migrate"}) }()

	// The bound address is only known from the log line.
	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" {
		for line := range strings.SplitSeq(stderr.String(), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http server listening" {
				addr = rec.Addr
			}
		}
		select {
		case code := <-exited:
			t.Fatalf("serve exited %d before listening:\n%s", code, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not listening after 30s:\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	cancel()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("serve exited %d after cancel:\n%s", code, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit 30s after cancel")
	}
	if strings.Contains(stderr.String(), "database schema is up to date") {
		t.Fatalf("--no-migrate still migrated:\n%s", stderr)
	}
	if !strings.Contains(stderr.String(), `"msg":"role stopped","service":"cml-cloud-manager","role":"http"`) {
		t.Fatalf("no clean stop logged:\n%s", stderr)
	}
}

func TestMainFailsWhenAddressTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := mustLoad(t, map[string]string{
		"DATABASE_URL":     pgtest.NewDatabase(t),
		"HTTP_ADDR":        taken.Addr().String(),
		"MIGRATE_ON_START": "false",
	})
	m := NewMain(cfg, testLogger(t))
	err = m.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "HTTP_ADDR") {
		t.Fatalf("Run = %v, want a listen error naming HTTP_ADDR", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateCommand(t *testing.T) {
	dbURL := freshDatabaseURL(t)
	for i, wantCreated := range []bool{true, false} {
		cli, _, stderr := testCLI(map[string]string{"DATABASE_URL": dbURL})
		if code := cli.Run(t.Context(), []string{"migrate"}); code != exitOK {
			t.Fatalf("run %d: exit %d:\n%s", i, code, stderr)
		}
		if got := strings.Contains(stderr.String(), "created database"); got != wantCreated {
			t.Fatalf("run %d: logged creation=%v, want %v:\n%s", i, got, wantCreated, stderr)
		}
		if !strings.Contains(stderr.String(), "database schema is up to date") {
			t.Fatalf("run %d:\n%s", i, stderr)
		}
	}
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM river_migration").Scan(&n); err != nil || n == 0 {
		t.Fatalf("river migrations: %d, %v", n, err)
	}
}
