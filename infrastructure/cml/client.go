// Package cml is the client of the Cisco Modeling Labs controllers' REST API
// (reference: /work/shared/reference/cml-api.md). It implements
// application.CMLClient: one Client serves every controller of the fleet,
// keeps one bearer token per controller until the token expires, logs in
// again once when a controller answers 401, and classifies every failure as
// an *application.CloudError.
package cml

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// Defaults of Options.
const (
	DefaultTimeout             = 15 * time.Second
	DefaultLabConcurrency      = 4
	DefaultMaxIdleConnsPerHost = 128
)

// maxResponseBytes caps what the client reads of one response. Telemetry
// events are the largest answer (the controller's whole history).
const maxResponseBytes = 64 << 20

// Clock tells the time; tests and benchmarks pass a controllable one.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Options configure a Client.
type Options struct {
	// Username and Password are the CML API credentials shared by every
	// controller of the fleet. They are never logged.
	Username string
	Password string
	// TLSVerify turns certificate verification on. It is off by default
	// because CML controllers ship self-signed certificates (the client logs
	// that once, at construction). Setting CAFile turns it on as well.
	TLSVerify bool
	// CAFile is a PEM bundle of the certificate authorities to trust instead
	// of the system roots; when set, verification is on.
	CAFile string
	// Timeout bounds each HTTP request (default 15 s).
	Timeout time.Duration
	// LabConcurrency bounds the concurrent GET /labs/{id} requests of Labs
	// on one controller (default 4).
	LabConcurrency int
	// MaxIdleConnsPerHost is the keep-alive pool size per host (default 128:
	// a real fleet has one host per controller and never fills it; the
	// simulated fleet serves every controller from one host).
	MaxIdleConnsPerHost int
	// Clock decides when cached tokens expire (default: the wall clock).
	Clock Clock
	// Logger receives the client's logs (default slog.Default()).
	Logger *slog.Logger
	// OnLogin, when set, is called after every login attempt (a metrics hook).
	OnLogin func(endpoint string)
	// HTTPClient replaces the client's own HTTP client (and with it every
	// TLS and pool option above). For tests.
	HTTPClient *http.Client
	// Transport replaces the client's own transport (TLS and pool options
	// above are then ignored). For tests.
	Transport http.RoundTripper
}

// Client talks to any number of CML controllers. It is safe for concurrent
// use.
type Client struct {
	username, password string
	http               *http.Client
	timeout            time.Duration
	labConcurrency     int
	clock              Clock
	log                *slog.Logger
	onLogin            func(string)

	logins atomic.Int64
	flight singleflight.Group

	mu       sync.Mutex
	sessions map[string]*session
	swept    time.Time
}

var _ application.CMLClient = (*Client)(nil)

// New returns a Client. It fails when the credentials are missing or the CA
// bundle cannot be read.
func New(opts Options) (*Client, error) {
	if opts.Username == "" || opts.Password == "" {
		return nil, errors.New("cml: username and password are required")
	}
	c := &Client{
		username:       opts.Username,
		password:       opts.Password,
		timeout:        opts.Timeout,
		labConcurrency: opts.LabConcurrency,
		clock:          opts.Clock,
		log:            opts.Logger,
		onLogin:        opts.OnLogin,
		sessions:       make(map[string]*session),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.labConcurrency <= 0 {
		c.labConcurrency = DefaultLabConcurrency
	}
	if c.clock == nil {
		c.clock = wallClock{}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	switch {
	case opts.HTTPClient != nil:
		c.http = opts.HTTPClient
	case opts.Transport != nil:
		c.http = &http.Client{Transport: opts.Transport}
	default:
		tr, err := newTransport(opts, c.log)
		if err != nil {
			return nil, err
		}
		c.http = &http.Client{Transport: tr}
	}
	// Redirects are not part of the CML API; a 3xx is reported as is.
	if c.http.CheckRedirect == nil {
		hc := *c.http
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		c.http = &hc
	}
	return c, nil
}

func newTransport(opts Options, log *slog.Logger) (*http.Transport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case opts.CAFile != "":
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cml: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cml: CA file %s holds no PEM certificate", opts.CAFile)
		}
		tlsConf.RootCAs = pool
		log.Info("CML TLS certificate verification is on", "ca_file", opts.CAFile)
	case opts.TLSVerify:
		log.Info("CML TLS certificate verification is on", "ca_file", "system roots")
	default:
		tlsConf.InsecureSkipVerify = true
		log.Warn("CML TLS certificate verification is off (controllers use self-signed certificates); set a CA file to verify")
	}
	perHost := opts.MaxIdleConnsPerHost
	if perHost <= 0 {
		perHost = DefaultMaxIdleConnsPerHost
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.MaxIdleConnsPerHost = perHost
	tr.MaxIdleConns = max(256, perHost)
	tr.ResponseHeaderTimeout = 0 // the per-request context bounds the whole exchange
	return tr, nil
}

// Logins returns how many login requests the client has sent so far.
func (c *Client) Logins() int64 { return c.logins.Load() }

// CloseIdleConnections closes the keep-alive connections of the client's
// transport.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// request is one API call, relative to <endpoint>/api/v0.
type request struct {
	method string
	// path under /api/v0, its segments already escaped.
	path        string
	query       url.Values
	body        []byte
	contentType string
	accept      string
	auth        bool
}

func (r request) op() string { return "cml:" + r.method + " " + r.path }

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// call sends req to endpoint, logging in first when the call needs a token,
// and logging in again once when the controller answers 401. It returns the
// response when its status is 2xx and a classified error otherwise.
func (c *Client) call(ctx context.Context, endpoint string, req request) (response, error) {
	target, err := apiURL(endpoint, req.path, req.query)
	if err != nil {
		return response{}, &application.CloudError{Kind: application.CloudInvalid, Op: req.op(), Message: err.Error(), Err: err}
	}
	var token string
	if req.auth {
		if token, err = c.token(ctx, endpoint, ""); err != nil {
			return response{}, err
		}
	}
	resp, err := c.send(ctx, target, req, token)
	if err != nil {
		return response{}, err
	}
	if resp.status == http.StatusUnauthorized && req.auth {
		c.log.InfoContext(ctx, "CML token refused; logging in again", "endpoint", endpoint, "op", req.op())
		if token, err = c.token(ctx, endpoint, token); err != nil {
			return response{}, err
		}
		if resp, err = c.send(ctx, target, req, token); err != nil {
			return response{}, err
		}
	}
	if resp.status < 200 || resp.status > 299 {
		return resp, statusError(req.op(), resp)
	}
	return resp, nil
}

// send performs one HTTP exchange within the per-request timeout.
func (c *Client) send(ctx context.Context, target string, req request, token string) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, target, body)
	if err != nil {
		return response{}, &application.CloudError{Kind: application.CloudInvalid, Op: req.op(), Message: err.Error(), Err: err}
	}
	accept := req.accept
	if accept == "" {
		accept = "application/json"
	}
	hr.Header.Set("Accept", accept)
	hr.Header.Set("User-Agent", "cml-cloud-manager")
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.http.Do(hr)
	if err != nil {
		return response{}, transportError(req.op(), err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
	if err != nil {
		return response{}, transportError(req.op(), err)
	}
	if len(b) > maxResponseBytes {
		return response{}, &application.CloudError{Kind: application.CloudUnknown, Op: req.op(), Code: strconv.Itoa(res.StatusCode),
			Message: fmt.Sprintf("response larger than %d bytes", maxResponseBytes)}
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}

// decodeFailure reports a 2xx answer the client could not understand.
func decodeFailure(op string, resp response, err error) error {
	return &application.CloudError{Kind: application.CloudUnknown, Op: op, Code: strconv.Itoa(resp.status),
		Message: "undecodable response: " + err.Error(), Err: err}
}

// apiURL joins /api/v0/<path> onto an endpoint that may carry a path prefix.
func apiURL(endpoint, path string, query url.Values) (string, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return "", fmt.Errorf("invalid CML endpoint %q: %w", endpoint, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("invalid CML endpoint %q: want https://host[:port][/prefix]", endpoint)
	}
	u = u.JoinPath("api", "v0", strings.TrimPrefix(path, "/"))
	u.RawQuery = query.Encode()
	u.Fragment = ""
	u.User = nil
	return u.String(), nil
}

// labIDPattern accepts CML lab ids (UUIDs) and any similar opaque id, and
// refuses what could change the request path.
var labIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func labPath(op, labID string, suffix string) (string, error) {
	if !labIDPattern.MatchString(labID) || strings.Contains(labID, "..") {
		return "", &application.CloudError{Kind: application.CloudInvalid, Op: op, Message: fmt.Sprintf("%q is not a lab id", labID)}
	}
	p := "/labs/" + url.PathEscape(labID)
	if suffix != "" {
		p += "/" + suffix
	}
	return p, nil
}
