package cmlsim_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type manualClock struct {
	mu  sync.Mutex
	now time.Time
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

// sim is a fleet behind a real TLS server and a plain HTTP client.
type sim struct {
	t      *testing.T
	clock  *manualClock
	fleet  *cmlsim.Fleet
	server *httptest.Server
}

func newSim(t *testing.T, opts cmlsim.Options) *sim {
	t.Helper()
	s := &sim{t: t, clock: &manualClock{now: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}}
	if opts.Clock == nil {
		opts.Clock = s.clock
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s.fleet = cmlsim.NewFleet(opts)
	s.server = httptest.NewTLSServer(s.fleet)
	t.Cleanup(s.server.Close)
	return s
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals a JSON answer.
func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	require.Equal(t, "application/json", a.header.Get("Content-Type"), string(a.body))
	require.NoError(t, json.Unmarshal(a.body, v), string(a.body))
}

// do sends a request to controller instance's API path; err is the
// transport error, if any.
func (s *sim) do(instance, method, path, token string, body []byte) (answer, error) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.server.URL+cmlsim.ControllerPath(instance)+"/api/v0"+path, bytes.NewReader(body))
	require.NoError(s.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := s.server.Client().Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(s.t, err)
	return answer{status: res.StatusCode, header: res.Header, body: b}, nil
}

func (s *sim) must(instance, method, path, token string, body []byte) answer {
	s.t.Helper()
	a, err := s.do(instance, method, path, token, body)
	require.NoError(s.t, err)
	return a
}

func (s *sim) login(instance string) string {
	s.t.Helper()
	a := s.must(instance, http.MethodPost, "/authenticate", "", []byte(`{"username":"admin","password":"admin"}`))
	require.Equal(s.t, http.StatusOK, a.status, string(a.body))
	var tok string
	a.decode(s.t, &tok)
	return tok
}

// requireError asserts CML's JSON error body.
func requireError(t *testing.T, a answer, status int, contains string) {
	t.Helper()
	require.Equal(t, status, a.status, string(a.body))
	var e struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	}
	a.decode(t, &e)
	require.Equal(t, status, e.Code)
	require.Contains(t, e.Description, contains)
}

func TestPowerStates(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{BootDelay: time.Minute, ReadyDelay: 20 * time.Second})

	_, err := s.do("i-unknown", http.MethodGet, "/system_information", "", nil)
	require.Error(t, err, "a controller that never booted answers nothing")

	s.fleet.Boot("i-1")
	require.Equal(t, cmlsim.PowerBooting, s.fleet.Controller("i-1").State())
	for _, path := range []string{"/system_information", "/system_stats", "/no/such/path"} {
		a := s.must("i-1", http.MethodGet, path, "", nil)
		require.Equal(t, http.StatusBadGateway, a.status)
		require.Equal(t, "text/html", a.header.Get("Content-Type"))
		require.Equal(t, "nginx", a.header.Get("Server"))
		require.Contains(t, string(a.body), "<title>502 Bad Gateway</title>")
	}

	s.clock.Advance(time.Minute)
	require.Equal(t, cmlsim.PowerStarting, s.fleet.Controller("i-1").State())
	var info map[string]any
	s.must("i-1", http.MethodGet, "/system_information", "", nil).decode(t, &info)
	require.Equal(t, map[string]any{"version": cmlsim.DefaultVersion, "ready": false, "allow_ssh_pubkey_auth": false, "oui": "52:54:00:00:00:00"}, info)

	s.clock.Advance(20 * time.Second)
	require.Equal(t, cmlsim.PowerReady, s.fleet.Controller("i-1").State())
	s.must("i-1", http.MethodGet, "/system_information", "", nil).decode(t, &info)
	require.Equal(t, true, info["ready"])

	s.fleet.Boot("i-1") // already running: nothing changes
	require.Equal(t, cmlsim.PowerReady, s.fleet.Controller("i-1").State())

	s.fleet.Shutdown("i-1")
	require.Equal(t, cmlsim.PowerOff, s.fleet.Controller("i-1").State())
	_, err = s.do("i-1", http.MethodGet, "/system_information", "", nil)
	require.Error(t, err, "a stopped controller answers nothing")
	s.fleet.Shutdown("i-never") // nothing to do

	// Unknown paths and malformed ids on a running controller.
	s.fleet.Boot("i-2")
	s.clock.Advance(2 * time.Minute)
	requireError(t, s.must("i-2", http.MethodGet, "/no/such/path", "", nil), http.StatusNotFound, "Not Found")
	tok := s.login("i-2")
	a := s.must("i-2", http.MethodGet, "/labs/not-a-uuid", tok, nil)
	requireError(t, a, http.StatusBadRequest, "Input validation failed")
	var e struct{ Description string }
	a.decode(t, &e)
	require.True(t, json.Valid([]byte(e.Description)), "the description is JSON text: %s", e.Description)
}

func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	header, err := base64.RawURLEncoding.DecodeString(parts[0])
	require.NoError(t, err)
	require.JSONEq(t, `{"alg":"HS256","typ":"JWT"}`, string(header))
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(payload, &claims))
	return claims
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{TokenTTL: time.Hour, EmptyControllers: true})
	s.fleet.Boot("i-1")

	tests := []struct {
		name   string
		body   string
		status int
	}{
		{"wrong password", `{"username":"admin","password":"nope"}`, http.StatusForbidden},
		{"unknown user", `{"username":"bob","password":"admin"}`, http.StatusForbidden},
		{"no password", `{"username":"admin"}`, http.StatusBadRequest},
		{"not JSON", `admin:admin`, http.StatusBadRequest},
	}
	for _, tt := range tests {
		a := s.must("i-1", http.MethodPost, "/authenticate", "", []byte(tt.body))
		requireError(t, a, tt.status, "")
	}

	tok := s.login("i-1")
	claims := claimsOf(t, tok)
	require.Equal(t, "com.cisco.virl", claims["iss"])
	require.Equal(t, cmlsim.AutomationUserID, claims["sub"])
	require.Equal(t, float64(s.clock.Now().Unix()), claims["iat"])
	require.Equal(t, float64(s.clock.Now().Add(time.Hour).Unix()), claims["exp"])

	var ext map[string]any
	s.must("i-1", http.MethodPost, "/auth_extended", "", []byte(`{"username":"admin","password":"admin"}`)).decode(t, &ext)
	require.Equal(t, "admin", ext["username"])
	require.Equal(t, cmlsim.AutomationUserID, ext["id"])
	require.Equal(t, true, ext["admin"])
	require.NotEmpty(t, ext["token"])

	var ok string
	s.must("i-1", http.MethodGet, "/authok", tok, nil).decode(t, &ok)
	require.Equal(t, "OK", ok)
	for _, bad := range []string{"", "garbage", tok + "x", strings.Replace(tok, ".", ".e30", 1)} {
		requireError(t, s.must("i-1", http.MethodGet, "/system_stats", bad, nil), http.StatusUnauthorized, "No proper authentication")
	}

	// Expiry by the clock.
	s.clock.Advance(time.Hour - time.Second)
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodGet, "/authok", tok, nil).status)
	s.clock.Advance(time.Second)
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", tok, nil).status)

	// The hooks.
	tok = s.login("i-1")
	c := s.fleet.Controller("i-1")
	c.UnauthorizeNext()
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", tok, nil).status)
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodGet, "/authok", tok, nil).status, "only once")
	c.ExpireTokens()
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", tok, nil).status)
	tok = s.login("i-1")
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodGet, "/authok", tok, nil).status, "new tokens work")
	s.fleet.ExpireAllTokens()
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", tok, nil).status)

	// Logout revokes one token, or all of them.
	t1, t2 := s.login("i-1"), s.login("i-1")
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodDelete, "/logout", t1, nil).status)
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", t1, nil).status)
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodGet, "/authok", t2, nil).status)
	t3 := s.login("i-1")
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodDelete, "/logout?clear_all_sessions=true", t3, nil).status)
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", t2, nil).status)

	// The session timeout sets the lifetime of new tokens.
	tok = s.login("i-1")
	var seconds int
	s.must("i-1", http.MethodGet, "/web_session_timeout", tok, nil).decode(t, &seconds)
	require.Equal(t, 3600, seconds)
	require.Equal(t, http.StatusOK, s.must("i-1", http.MethodPatch, "/web_session_timeout/2", tok, nil).status)
	short := s.login("i-1")
	claims = claimsOf(t, short)
	require.Equal(t, float64(s.clock.Now().Add(2*time.Second).Unix()), claims["exp"])
	require.Equal(t, http.StatusBadRequest, s.must("i-1", http.MethodPatch, "/web_session_timeout/zero", tok, nil).status)

	// Tokens die with a reboot.
	s.fleet.Shutdown("i-1")
	s.fleet.Boot("i-1")
	require.Equal(t, http.StatusUnauthorized, s.must("i-1", http.MethodGet, "/authok", short, nil).status)

	// A changed password refuses logins.
	c.SetPassword("rotated")
	require.Equal(t, http.StatusForbidden, s.must("i-1", http.MethodPost, "/authenticate", "", []byte(`{"username":"admin","password":"admin"}`)).status)
	require.EqualValues(t, 14, c.Logins())
	require.EqualValues(t, 13, c.Calls()["POST /authenticate"])
	require.EqualValues(t, 1, c.Calls()["POST /auth_extended"])
}

func TestFaults(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{Seed: 42, EmptyControllers: true, Faults: cmlsim.Faults{ErrorRate: 0.5}})
	s.fleet.Boot("i-1")
	failed := 0
	const n = 200
	for range n {
		a := s.must("i-1", http.MethodGet, "/system_information", "", nil)
		if a.status == http.StatusInternalServerError {
			requireError(t, a, 500, "Internal Server Error")
			failed++
		} else {
			require.Equal(t, http.StatusOK, a.status)
		}
	}
	require.InDelta(t, n/2, failed, n/5, "about half fail")
	require.EqualValues(t, n, s.fleet.Calls()["GET /system_information"])

	// HTML for the statuses nginx answers itself.
	for status, html := range map[int]bool{429: true, 502: true, 504: true, 503: false, 401: false} {
		s.fleet.SetFaults(cmlsim.Faults{ErrorRate: 1, ErrorStatus: status})
		a := s.must("i-1", http.MethodGet, "/system_information", "", nil)
		require.Equal(t, status, a.status)
		require.Equal(t, html, strings.HasPrefix(string(a.body), "<html>"), status)
	}

	// A controller's own faults win over the fleet's.
	s.fleet.SetFaults(cmlsim.Faults{ErrorRate: 1, ErrorStatus: 429})
	s.fleet.Boot("i-2")
	c2 := s.fleet.Controller("i-2")
	c2.SetFaults(&cmlsim.Faults{Latency: 150 * time.Millisecond})
	start := time.Now()
	require.Equal(t, http.StatusOK, s.must("i-2", http.MethodGet, "/system_information", "", nil).status)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	require.Equal(t, 429, s.must("i-1", http.MethodGet, "/system_information", "", nil).status)
	c2.SetFaults(nil)
	require.Equal(t, 429, s.must("i-2", http.MethodGet, "/system_information", "", nil).status)

	s.fleet.SetFaults(cmlsim.Faults{})
	c2.SetUnavailable(true)
	require.Equal(t, http.StatusBadGateway, s.must("i-2", http.MethodGet, "/system_information", "", nil).status)
	c2.SetUnavailable(false)
	require.Equal(t, http.StatusOK, s.must("i-2", http.MethodGet, "/system_information", "", nil).status)

	s.fleet.ResetCounters()
	require.Empty(t, s.fleet.Calls())
}

func TestSameSeedSameIDs(t *testing.T) {
	t.Parallel()
	ids := func(seed int64) []string {
		s := newSim(t, cmlsim.Options{Seed: seed})
		s.fleet.Boot("i-b")
		s.fleet.Boot("i-a")
		var out []string
		for _, id := range []string{"i-a", "i-b"} {
			for _, l := range s.fleet.Controller(id).Labs() {
				out = append(out, l.ID)
			}
		}
		return out
	}
	require.Equal(t, ids(1), ids(1))
	require.NotEqual(t, ids(1), ids(2))
	require.Len(t, ids(1), 4)
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{})
	var wg sync.WaitGroup
	statuses := make(chan int, 200)
	for i := range 8 {
		id := []string{"i-a", "i-b"}[i%2]
		wg.Go(func() {
			for range 20 {
				s.fleet.Boot(id)
				req, _ := http.NewRequest(http.MethodGet, s.server.URL+cmlsim.ControllerPath(id)+"/api/v0/system_information", nil)
				if res, err := s.server.Client().Do(req); err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					statuses <- res.StatusCode
				}
				_ = s.fleet.Calls()
				_ = s.fleet.Controller(id).Labs()
				if i%4 == 0 {
					s.fleet.Shutdown(id)
				}
			}
		})
	}
	wg.Wait()
	close(statuses)
	n := 0
	for status := range statuses {
		require.Equal(t, http.StatusOK, status)
		n++
	}
	require.Positive(t, n)
}
