package cml_test

import (
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cml"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// manualClock is a clock that tests move by hand; the client and the
// simulated controllers share it.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *manualClock {
	return &manualClock{now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTLSServer serves h over TLS on loopback; refused handshakes (the
// certificate tests) are not logged.
func newTLSServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// env is a simulated fleet served over real TLS and a real client.
type env struct {
	clock  *manualClock
	fleet  *cmlsim.Fleet
	server *httptest.Server
	client *cml.Client
}

// newEnv starts a fleet with opts (its clock and logger are filled in) and a
// client with copts (credentials, clock and logger filled in).
func newEnv(t testing.TB, opts cmlsim.Options, copts cml.Options) *env {
	t.Helper()
	e := &env{clock: newClock()}
	if opts.Clock == nil {
		opts.Clock = e.clock
	}
	opts.Logger = quietLogger()
	e.fleet = cmlsim.NewFleet(opts)
	e.server = newTLSServer(t, e.fleet)
	if copts.Username == "" {
		copts.Username, copts.Password = cmlsim.DefaultUsername, cmlsim.DefaultPassword
	}
	if copts.Clock == nil {
		copts.Clock = e.clock
	}
	if copts.Logger == nil {
		copts.Logger = quietLogger()
	}
	client, err := cml.New(copts)
	require.NoError(t, err)
	t.Cleanup(client.CloseIdleConnections)
	e.client = client
	return e
}

// boot powers a controller on and returns its endpoint.
func (e *env) boot(instanceID string) string {
	e.fleet.Boot(instanceID)
	return e.endpoint(instanceID)
}

func (e *env) endpoint(instanceID string) string {
	return e.server.URL + cmlsim.ControllerPath(instanceID)
}
