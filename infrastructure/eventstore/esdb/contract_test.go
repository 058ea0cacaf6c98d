package esdb

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/eventstore/storetest"
)

// The contract suite runs three ways: always against the in-process server;
// against a real server when EVENTSTORE_TEST_URL is set; and against a
// container when a Docker engine answers. HoldAppend is nil in every
// harness: EventStoreDB assigns positions when it commits, so no append can
// hold a position while a later one commits, and the out-of-order tests skip.

// testLogger writes the store's logs to the test log at Info and above
// (set ESDB_TEST_DEBUG=1 for everything).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("ESDB_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// openStore opens a store on url; t.Cleanup closes it.
func openStore(t testing.TB, url string, opts Options) *Store {
	t.Helper()
	opts.URL = url
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	require.NoError(t, err, "open the store")
	t.Cleanup(func() {
		s.Close()
		requireClientsClosed(t, s)
	})
	return s
}

// requireClientsClosed checks, after Close, that the store closed every
// client it made.
func requireClientsClosed(t testing.TB, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.created != s.closedClients {
		t.Errorf("the store made %d clients and closed %d", s.created, s.closedClients)
	}
}

// TestContractInProcess runs the contract suite against the in-process
// server, one server per test. DropConnections stops the server (every
// connection and stream ends) and serves again on the same port.
func TestContractInProcess(t *testing.T) {
	t.Parallel()
	var servers sync.Map // *Store → *testServer
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) eventstore.Store {
			srv := startTestServer(t)
			s := openStore(t, srv.URL(), Options{})
			servers.Store(s, srv)
			return s
		},
		DropConnections: func(t *testing.T, s eventstore.Store) {
			srv, ok := servers.Load(s)
			require.True(t, ok, "the store of this test has a server")
			srv.(*testServer).restart(t)
		},
	})
}

// TestContractSharedLog runs the suite with every test on one server and one
// store, as against a real server: the suite never assumes an empty log.
// DropConnections replaces the shared store's client while the other tests
// run: their calls finish on the old client, then closing it ends every
// subscription's stream, and each must resume without a gap or a repeat.
func TestContractSharedLog(t *testing.T) {
	t.Parallel()
	srv := startTestServer(t)
	s := openStore(t, srv.URL(), Options{})
	storetest.Run(t, storetest.Harness{
		NewStore: func(*testing.T) eventstore.Store { return s },
		DropConnections: func(t *testing.T, _ eventstore.Store) {
			s.replaceClient(t)
		},
	})
}

// TestContractRealServer runs the suite against the server at
// EVENTSTORE_TEST_URL (for example esdb://127.0.0.1:2113?tls=false).
// DropConnections replaces the store's client, which ends every call and
// subscription of the old one.
func TestContractRealServer(t *testing.T) {
	url := os.Getenv("EVENTSTORE_TEST_URL")
	if url == "" {
		t.Skip("EVENTSTORE_TEST_URL is not set: no real EventStoreDB server to run the contract suite against")
	}
	t.Parallel()
	runAgainst(t, url)
}

// containerImage is the image of TestContractContainer; EVENTSTORE_TEST_IMAGE
// overrides it (an EventStoreDB image: the container is configured with
// EVENTSTORE_* variables).
const containerImage = "eventstore/eventstore:24.10"

// TestContractContainer runs the suite against an EventStoreDB container
// started through testcontainers-go when a Docker engine answers.
func TestContractContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no container")
	}
	provider, err := testcontainers.ProviderDefault.GetProvider(testcontainers.WithLogger(quietLogger{}))
	if err != nil {
		t.Skipf("no Docker engine answers, so no EventStoreDB container: %v", err)
	}
	defer func() { _ = provider.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	err = provider.Health(ctx)
	cancel()
	if err != nil {
		t.Skipf("no Docker engine answers, so no EventStoreDB container: %v", err)
	}
	t.Parallel()
	image := os.Getenv("EVENTSTORE_TEST_IMAGE")
	if image == "" {
		image = containerImage
	}
	c, err := testcontainers.GenericContainer(t.Context(), testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        image,
			ExposedPorts: []string{"2113/tcp"},
			Env: map[string]string{
				"EVENTSTORE_INSECURE":        "true",
				"EVENTSTORE_MEM_DB":          "true",
				"EVENTSTORE_RUN_PROJECTIONS": "None",
				"EVENTSTORE_CLUSTER_SIZE":    "1",
			},
			WaitingFor: wait.ForHTTP("/health/live").WithPort("2113/tcp").WithStartupTimeout(2 * time.Minute),
		},
		Started: true,
	})
	testcontainers.CleanupContainer(t, c)
	require.NoError(t, err, "start %s", image)
	endpoint, err := c.PortEndpoint(t.Context(), "2113/tcp", "")
	require.NoError(t, err)
	runAgainst(t, "esdb://"+endpoint+"?tls=false")
}

// quietLogger keeps testcontainers' provider lookup out of the test log.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// runAgainst runs the suite against the server at url, one store per test.
func runAgainst(t *testing.T, url string) {
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) eventstore.Store { return openStore(t, url, Options{}) },
		DropConnections: func(t *testing.T, s eventstore.Store) {
			s.(*Store).replaceClient(t)
		},
	})
}

// replaceClient drops the store's connections from its side: it swaps in a
// new client, waits for the calls on the old one and closes it, which ends
// its subscriptions' streams.
func (s *Store) replaceClient(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	old := s.gen
	client, err := esdb.NewClient(s.conf)
	require.NoError(t, err)
	s.gen = &clientGen{client: client, n: old.n + 1}
	s.created++
	s.mu.Unlock()
	old.calls.Wait()
	require.NoError(t, old.client.Close())
	s.mu.Lock()
	s.closedClients++
	s.mu.Unlock()
}
