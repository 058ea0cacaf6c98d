package cml_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cml"
)

// writePEM writes certificates as a PEM bundle and returns its path.
func writePEM(t *testing.T, ders ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	for _, der := range ders {
		require.NoError(t, pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	return path
}

// otherCA is a self-signed CA that signed nothing the servers present.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Not the controller's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return der
}

func TestTLSVerification(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fleet := cmlsim.NewFleet(cmlsim.Options{Logger: quietLogger(), EmptyControllers: true})
	fleet.Boot("i-tls")
	srv := newTLSServer(t, fleet)
	ep := srv.URL + cmlsim.ControllerPath("i-tls")

	tests := []struct {
		name     string
		opts     func(t *testing.T) cml.Options
		certFail bool
	}{
		{"verification off (the default)", func(*testing.T) cml.Options { return cml.Options{} }, false},
		{"the CA file holds the controller's certificate", func(t *testing.T) cml.Options {
			return cml.Options{CAFile: writePEM(t, srv.Certificate().Raw)}
		}, false},
		{"the CA file holds another CA", func(t *testing.T) cml.Options {
			return cml.Options{CAFile: writePEM(t, otherCA(t))}
		}, true},
		{"verification on against the system roots", func(*testing.T) cml.Options { return cml.Options{TLSVerify: true} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := tt.opts(t)
			opts.Username, opts.Password, opts.Logger = cmlsim.DefaultUsername, cmlsim.DefaultPassword, quietLogger()
			client, err := cml.New(opts)
			require.NoError(t, err)
			t.Cleanup(client.CloseIdleConnections)
			_, err = client.SystemStats(ctx, ep)
			if !tt.certFail {
				require.NoError(t, err)
				return
			}
			ce := requireCloudError(t, err, application.CloudAuth, cml.CertificateCode)
			require.True(t, cml.IsCertificateError(err))
			require.ErrorIs(t, err, cml.ErrCertificate)
			require.Contains(t, ce.Message, "certificate")
			require.False(t, ce.Retryable())
		})
	}

	t.Run("a bad CA file fails New", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{filepath.Join(t.TempDir(), "missing.pem"), writePEM(t)} {
			_, err := cml.New(cml.Options{Username: "u", Password: "p", CAFile: path, Logger: quietLogger()})
			require.Error(t, err, path)
		}
	})
	t.Run("credentials are required", func(t *testing.T) {
		t.Parallel()
		_, err := cml.New(cml.Options{Username: "admin"})
		require.Error(t, err)
	})
}

// cannedServer answers every request with handler, over TLS.
func cannedServer(t *testing.T, handler http.HandlerFunc) (*cml.Client, string) {
	t.Helper()
	srv := newTLSServer(t, handler)
	client, err := cml.New(cml.Options{Username: "admin", Password: "secret-password", Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(client.CloseIdleConnections)
	return client, srv.URL
}

// A controller's error bodies come in many shapes; nginx's are not JSON.
func TestErrorBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		kind        application.CloudErrorKind
		message     string
	}{
		{"description string", 404, "application/json", `{"code": 404, "description": "Lab not found: x"}`, application.CloudNotFound, "Lab not found: x"},
		{"description object", 400, "application/json", `{"code": 400, "description": {"field": "bad"}}`, application.CloudInvalid, `{"field":"bad"}`},
		{"description array", 400, "application/json", `{"code": 400, "description": [1, "two"]}`, application.CloudInvalid, `[1,"two"]`},
		{"nginx 413", 413, "text/html", "<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>", application.CloudInvalid, "413 Request Entity Too Large"},
		{"nginx 429", 429, "text/html", "<html><head><title>429 Too Many Requests</title></head></html>", application.CloudThrottled, "429 Too Many Requests"},
		{"nginx 504", 504, "text/html", "<html><head><title>504 Gateway Time-out</title></head></html>", application.CloudUnavailable, "504 Gateway Time-out"},
		{"plain text 500", 500, "text/plain", "Internal Server Error", application.CloudUnavailable, "Internal Server Error"},
		{"empty 503", 503, "", "", application.CloudUnavailable, "Service Unavailable"},
		{"JSON content type, HTML body", 502, "application/json", "<html><title>oops</title></html>", application.CloudUnavailable, "oops"},
		{"redirect", 302, "text/html", "", application.CloudUnknown, "Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, ep := cannedServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				}
				if tt.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			_, err := client.SystemInformation(ctx, ep)
			ce := requireCloudError(t, err, tt.kind, itoa(tt.status))
			require.Equal(t, tt.message, ce.Message)
			require.Equal(t, "cml:GET /system_information", ce.Op)
		})
	}
}

func TestSecretsStayOutOfErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const token = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2VjcmV0LXNpZ25hdHVyZQ"
	client, ep := cannedServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v0/auth_extended" {
			_, _ = w.Write([]byte(`"` + token + `"`))
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"code": 500, "description": "boom"}`))
	})
	_, err := client.Licensing(ctx, ep)
	require.Error(t, err)
	require.NotContains(t, err.Error(), token)
	require.NotContains(t, err.Error(), "secret-password")
}

// A lab deleted between the list and its details is left out; any other
// failure fails the whole list.
func TestLabsListToleratesADeletedLab(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		kept    = "11111111-1111-4111-8111-111111111111"
		deleted = "22222222-2222-4222-8222-222222222222"
		broken  = "33333333-3333-4333-8333-333333333333"
	)
	var failBroken atomic.Bool
	client, ep := cannedServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v0/auth_extended":
			_, _ = w.Write([]byte(`"a.b.c"`))
		case "/api/v0/labs":
			if r.URL.Query().Get("show_all") != "true" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			_, _ = w.Write([]byte(`["` + kept + `", "` + deleted + `", "` + broken + `", 17, "../escape"]`))
		case "/api/v0/labs/" + kept:
			_, _ = w.Write([]byte(`{"id": "` + kept + `", "lab_title": "Kept", "state": "STOPPED", "owner": "u-1",
				"node_count": 2.0, "link_count": null, "groups": [{"id": "g1", "name": "students", "permission": "read_only"}, {"id": "g2"}, "legacy"],
				"created": "2025-12-06T11:11:28+00:00", "modified": "2025-12-06 12:00:00", "effective_permissions": ["lab_view"]}`))
		case "/api/v0/labs/" + deleted:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code": 404, "description": "Lab not found: ` + deleted + `"}`))
		case "/api/v0/labs/" + broken:
			if failBroken.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte(`{"lab_title": "No id in the body", "state": "DEFINED_ON_CORE"}`))
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	})
	labs, err := client.Labs(ctx, ep)
	require.NoError(t, err)
	require.Len(t, labs, 2)
	require.Equal(t, kept, labs[0].ID)
	require.Equal(t, "Kept", labs[0].Title)
	require.Equal(t, "u-1", labs[0].Owner) // no owner_username: the owner id
	require.Equal(t, 2, labs[0].NodeCount)
	require.Zero(t, labs[0].LinkCount)
	require.Equal(t, []string{"students", "g2", "legacy"}, labs[0].Groups)
	require.Equal(t, time.Date(2025, 12, 6, 11, 11, 28, 0, time.UTC), labs[0].CreatedAt)
	require.Equal(t, time.Date(2025, 12, 6, 12, 0, 0, 0, time.UTC), labs[0].ModifiedAt)
	require.Equal(t, broken, labs[1].ID)

	failBroken.Store(true)
	_, err = client.Labs(ctx, ep)
	requireCloudError(t, err, application.CloudUnavailable, "503")
}

// The download's YAML may come as text or as a JSON string.
func TestDownloadAcceptsTextAndJSONString(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const yaml = "lab:\n  version: 0.3.0\n  title: \"quoted\"\n"
	for _, body := range []string{yaml, `"lab:\n  version: 0.3.0\n  title: \"quoted\"\n"`} {
		client, ep := cannedServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/v0/auth_extended" {
				_, _ = w.Write([]byte(`"a.b.c"`))
				return
			}
			_, _ = w.Write([]byte(body))
		})
		got, err := client.DownloadLab(ctx, ep, "11111111-1111-4111-8111-111111111111")
		require.NoError(t, err)
		require.Equal(t, yaml, got)
	}
}

func TestUndecodableSuccessIsAnError(t *testing.T) {
	t.Parallel()
	client, ep := cannedServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v0/auth_extended" {
			_, _ = w.Write([]byte(`"a.b.c"`))
			return
		}
		_, _ = w.Write([]byte(`<html>captive portal</html>`))
	})
	_, err := client.SystemStats(context.Background(), ep)
	ce := requireCloudError(t, err, application.CloudUnknown, "200")
	require.Contains(t, ce.Message, "undecodable")
}
