package auth

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCSRFRules(t *testing.T) {
	t.Parallel()
	h := newHarness(t, ModeLocal, harnessConfig{})
	browser := newBrowser(t)
	info := h.login(browser, "manager", DevPassword)
	r := h.do(newBrowser(t), http.MethodPost, "/api/auth/token", map[string]string{"username": "manager", "password": DevPassword}, nil)
	var tok TokenResponse
	r.json(t, &tok)

	tests := []struct {
		name   string
		method string
		header http.Header
		want   int
	}{
		{"GET needs nothing", http.MethodGet, nil, 200},
		{"POST without token or Origin", http.MethodPost, nil, 403},
		{"DELETE without token or Origin", http.MethodDelete, nil, 403},
		{"POST with the session's token", http.MethodPost, csrfHeader(info.CSRFToken), 200},
		{"POST with a wrong token", http.MethodPost, csrfHeader(randomToken()), 403},
		{"POST with a truncated token", http.MethodPost, csrfHeader(info.CSRFToken[:20]), 403},
		{"POST with our Origin", http.MethodPost, http.Header{"Origin": {h.url}}, 200},
		{"POST with our Origin in capitals", http.MethodPost, http.Header{"Origin": {strings.ToUpper(h.url)}}, 200},
		{"POST with a foreign Origin", http.MethodPost, http.Header{"Origin": {"http://evil.example"}}, 403},
		{"POST with a foreign Origin on our port", http.MethodPost, http.Header{"Origin": {strings.Replace(h.url, "127.0.0.1", "localhost", 1)}}, 403},
		{"POST with Origin null", http.MethodPost, http.Header{"Origin": {"null"}}, 403},
		{"POST with a wrong token and our Origin", http.MethodPost, http.Header{"Origin": {h.url}, "X-Csrf-Token": {"x"}}, 200},
		{"POST with a Referer only", http.MethodPost, http.Header{"Referer": {h.url + "/"}}, 403},
		{"POST with a bearer token as well", http.MethodPost, bearer(tok.AccessToken), 200},
	}
	for _, tt := range tests {
		r := h.do(browser, tt.method, "/api/probe", nil, tt.header)
		require.Equal(t, tt.want, r.StatusCode, "%s: %s", tt.name, r.body)
		if tt.want == http.StatusForbidden {
			require.Equal(t, CodeCSRF, r.problemCode(t), tt.name)
		}
	}

	// Bearer-only clients are exempt.
	r = h.do(newBrowser(t), http.MethodDelete, "/api/probe", nil, bearer(tok.AccessToken))
	require.Equal(t, http.StatusOK, r.StatusCode)

	// Logout is protected too: a forged logout leaves the session alone.
	r = h.do(browser, http.MethodPost, "/api/auth/logout", nil, http.Header{"Origin": {"http://evil.example"}})
	require.Equal(t, http.StatusForbidden, r.StatusCode)
	status, _ := h.probe(browser, nil)
	require.Equal(t, http.StatusOK, status)

	// Login from another site's page is refused (login CSRF).
	r = h.do(newBrowser(t), http.MethodPost, "/api/auth/login", "username=user&password=test",
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Origin": {"http://evil.example"}})
	require.Equal(t, http.StatusForbidden, r.StatusCode)
	require.Equal(t, CodeCSRF, r.problemCode(t))
}
