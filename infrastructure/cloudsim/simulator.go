// Package cloudsim is the built-in cloud simulator: EC2 (Query API, XML) and
// CloudWatch GetMetricData (Smithy RPC v2 CBOR) on one loopback HTTP
// listener, so that the real aws-sdk-go-v2 clients of infrastructure/aws run
// against it unchanged, and the simulated CML controllers (an http.Handler
// from package cmlsim) on a second loopback listener over HTTPS.
//
// Instances move through pending → running → stopping → stopped and
// shutting-down → terminated on a Clock, carry RFC 5737 documentation-range
// public IPs and 10.x private IPs as labels only (nothing may connect to
// them), and produce synthetic CloudWatch CPU (and memory, for AMIs with the
// CloudWatch agent) while they run. Every API call is counted; faults
// (throttling, server errors, latency, scripted error codes) can be injected
// per API or globally. Console changes the cloud out of band, as somebody in
// the AWS console would, and a small JSON admin API under /sim/ exposes all
// of it for demos.
package cloudsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Controllers boots and shuts down the simulated CML controller of an
// instance. The simulator calls it from one goroutine, in the order the
// changes happened, never while holding its own locks.
type Controllers interface {
	// Boot: the instance entered running; its controller starts booting.
	Boot(instanceID string)
	// Shutdown: the instance left running (it is stopping or shutting
	// down, on its way to stopped or terminated); its controller goes away.
	Shutdown(instanceID string)
}

// Options configure a Simulator. Every field is optional.
type Options struct {
	// Addr is the EC2 + CloudWatch + admin listener; default
	// "127.0.0.1:0" (a free loopback port). It must be a loopback address.
	Addr string
	// CMLAddr is the HTTPS listener of CMLHandler; default "127.0.0.1:0".
	// It must be a loopback address.
	CMLAddr string
	// Regions are created (with the seeded CML AMIs) at start; any other
	// region comes into being on first use.
	Regions []string
	// Timings of the state changes; zero fields take their defaults.
	Timings Timings
	// Clock drives state changes and metrics; default the system clock.
	Clock Clock
	// Seed makes ids, IPs and fault draws reproducible; 0 is a valid seed.
	Seed uint64
	// InstanceLimit is the number of non-terminated instances a region
	// allows before RunInstances answers InstanceLimitExceeded; 0 = no limit.
	InstanceLimit int
	// MetricsPageSize is the number of datapoints per GetMetricData answer
	// before NextToken paging; default 100,800 like CloudWatch.
	MetricsPageSize int
	// TickInterval is how often due state changes are applied (and
	// Controllers told) when no API call does it first; default 100 ms.
	TickInterval time.Duration
	// Controllers is told when instances boot and go down; nil = none.
	Controllers Controllers
	// CMLHandler serves the simulated CML controllers under
	// /controllers/{instance_id}/...; nil = no CML listener.
	CMLHandler http.Handler
	// Logger gets one debug line per request; default slog.Default().
	Logger *slog.Logger
}

// Simulator is the composed cloud simulator. Create it with New, then Start
// it; Close stops it.
type Simulator struct {
	opts            Options
	log             *slog.Logger
	world           *world
	faults          *faultBox
	events          *eventQueue
	metricsPageSize int
	reqSeq          atomic.Uint64
	admin           http.Handler

	mu        sync.Mutex
	started   bool
	closed    bool
	apiSrv    *http.Server
	cmlSrv    *http.Server
	endpoint  string
	cmlBase   string
	certPEM   []byte
	stop      chan struct{}
	wg        sync.WaitGroup
	stopAfter func() bool
}

// New builds a simulator; nothing listens until Start.
func New(opts Options) *Simulator {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.CMLAddr == "" {
		opts.CMLAddr = "127.0.0.1:0"
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.TickInterval <= 0 {
		opts.TickInterval = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Simulator{
		opts:            opts,
		log:             opts.Logger.With(slog.String("component", "cloudsim")),
		faults:          newFaultBox(opts.Seed),
		events:          newEventQueue(),
		metricsPageSize: opts.MetricsPageSize,
		stop:            make(chan struct{}),
	}
	if s.metricsPageSize <= 0 {
		s.metricsPageSize = defaultMaxDatapoints
	}
	notify := func(controllerEvent) {}
	if opts.Controllers != nil {
		notify = s.events.push
	}
	s.world = newWorld(opts.Clock, opts.Timings, opts.Seed, opts.InstanceLimit, notify)
	s.world.mu.Lock()
	for _, r := range opts.Regions {
		s.world.region(r)
	}
	s.world.mu.Unlock()
	s.admin = s.adminHandler()
	return s
}

// Start listens and serves until Close or until ctx is done.
func (s *Simulator) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("cloudsim: already started")
	}
	apiLn, err := listenLoopback(s.opts.Addr)
	if err != nil {
		return err
	}
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.apiSrv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	s.endpoint = "http://" + apiLn.Addr().String()
	var cmlLn net.Listener
	if s.opts.CMLHandler != nil {
		cert, certPEM, err := selfSignedCertificate(time.Now())
		if err != nil {
			_ = apiLn.Close()
			return fmt.Errorf("cloudsim: certificate for the CML listener: %w", err)
		}
		if cmlLn, err = listenLoopback(s.opts.CMLAddr); err != nil {
			_ = apiLn.Close()
			return err
		}
		s.certPEM = certPEM
		s.cmlSrv = &http.Server{
			Handler: s.opts.CMLHandler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		}
		s.cmlBase = "https://" + cmlLn.Addr().String()
	}
	s.started = true
	s.serve(func() error { return s.apiSrv.Serve(apiLn) })
	if cmlLn != nil {
		s.serve(func() error { return s.cmlSrv.ServeTLS(cmlLn, "", "") })
	}
	s.wg.Add(1)
	go s.tick()
	if s.opts.Controllers != nil {
		s.wg.Add(1)
		go s.deliver()
	}
	s.stopAfter = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.log.Info("cloud simulator started", slog.String("endpoint", s.endpoint), slog.String("cml_base_url", s.cmlBase))
	return nil
}

// listenLoopback listens on addr, which must be a loopback address: the
// simulator (its admin API has no authentication) is for this machine only.
func listenLoopback(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cloudsim: listen on %s: %w", addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		_ = ln.Close()
		return nil, fmt.Errorf("cloudsim: %s is not a loopback address; the simulator listens on loopback only", addr)
	}
	return ln, nil
}

func (s *Simulator) serve(run func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := run(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("cloud simulator listener stopped", slog.Any("error", err))
		}
	}()
}

// tick applies due state changes in the background, so Controllers hear of
// them even when nobody calls the API.
func (s *Simulator) tick() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.world.mu.Lock()
			s.world.advance()
			s.world.mu.Unlock()
		}
	}
}

// deliver tells Controllers of boots and shutdowns, in order.
func (s *Simulator) deliver() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.events.wake:
			for _, ev := range s.events.drain() {
				if ev.boot {
					s.opts.Controllers.Boot(ev.instanceID)
				} else {
					s.opts.Controllers.Shutdown(ev.instanceID)
				}
			}
		}
	}
}

// Close stops the listeners and background work. It is safe to call more
// than once.
func (s *Simulator) Close() error {
	s.mu.Lock()
	if !s.started || s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.stopAfter != nil {
		s.stopAfter()
	}
	close(s.stop)
	err := s.apiSrv.Close()
	if s.cmlSrv != nil {
		err = errors.Join(err, s.cmlSrv.Close())
	}
	s.wg.Wait()
	return err
}

// EndpointURL is the base URL of EC2 and CloudWatch, the value for
// AWS_ENDPOINT_URL; empty before Start.
func (s *Simulator) EndpointURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoint
}

// CMLBaseURL is the https://127.0.0.1:PORT base of the simulated CML
// controllers; empty before Start or without Options.CMLHandler.
func (s *Simulator) CMLBaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmlBase
}

// CMLEndpointTemplate is the value for CML_ENDPOINT_TEMPLATE:
// CMLBaseURL()+"/controllers/{instance_id}"; empty without a CML listener.
func (s *Simulator) CMLEndpointTemplate() string {
	base := s.CMLBaseURL()
	if base == "" {
		return ""
	}
	return base + "/controllers/{instance_id}"
}

// CMLCertificatePEM is the self-signed certificate of the CML listener
// (PEM), for a client that verifies TLS (CML_CA_FILE); nil before Start.
func (s *Simulator) CMLCertificatePEM() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.certPEM)
}

// Calls returns the number of calls per API ("ec2:RunInstances",
// "cloudwatch:GetMetricData", ...) since the start or the last ResetCalls.
// Calls answered with an injected fault count too; out-of-band changes and
// requests without a signature do not.
func (s *Simulator) Calls() map[string]int64 { return s.faults.counts() }

// CallCount returns the calls of one API; "ec2" or "cloudwatch" sums a
// service, "" sums everything.
func (s *Simulator) CallCount(api string) int64 { return s.faults.count(api) }

// ResetCalls sets every call counter to zero.
func (s *Simulator) ResetCalls() { s.faults.reset() }

// SetFaults sets the faults of one API ("ec2:StartInstances"), or with
// api == "" the global faults used by every API without its own.
func (s *Simulator) SetFaults(api string, f Faults) { s.faults.set(api, f) }

// Faults returns the global faults and those set per API.
func (s *Simulator) Faults() (Faults, map[string]Faults) { return s.faults.get() }

// ClearFaults removes every fault, scripted ones included.
func (s *Simulator) ClearFaults() { s.faults.clear() }

// FailNext answers the next n calls of api (any API when api is "") with
// the error code, e.g. "UnauthorizedOperation", "InsufficientInstanceCapacity"
// or "RequestLimitExceeded", with the HTTP status AWS uses for it. n <= 0
// cancels it.
func (s *Simulator) FailNext(api, code string, n int) { s.faults.failNext(api, code, n) }

// ServeHTTP routes a request: /sim/ to the admin API, signed EC2 Query
// requests to EC2 and signed RPC v2 CBOR requests to CloudWatch.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/sim" || strings.HasPrefix(r.URL.Path, "/sim/") {
		s.admin.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	isCloudWatch := strings.HasPrefix(r.URL.Path, "/service/")
	scope, ok := parseSigV4(r)
	switch {
	case !ok && isCloudWatch:
		writeCloudWatchError(rec, s.requestID(), apiErrorf(http.StatusForbidden, "MissingAuthenticationToken",
			"Request is missing Authentication Token"))
	case !ok:
		writeEC2Error(rec, s.requestID(), apiErrorf(http.StatusUnauthorized, "AuthFailure",
			"AWS was not able to validate the provided access credentials"))
	case isCloudWatch && scope.service == "monitoring" && r.Method == http.MethodPost &&
		strings.HasPrefix(r.URL.Path, cloudWatchPathPrefix):
		s.serveCloudWatch(rec, r, scope.region)
	case !isCloudWatch && scope.service == serviceEC2 && r.URL.Path == "/" &&
		(r.Method == http.MethodPost || r.Method == http.MethodGet):
		s.serveEC2(rec, r, scope.region)
	default:
		http.Error(rec, "no such service or path in the cloud simulator", http.StatusNotFound)
	}
	if !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return
	}
	s.log.Debug("cloudsim request", slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("region", scope.region), slog.String("service", scope.service),
		slog.Int("status", rec.status), slog.Duration("took", time.Since(start)))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// begin counts a call of api and draws its faults. A call that is to fail
// waits the latency and is answered with the error: begin returns false. A
// call that goes on gets the latency back, to wait after the work is done
// and before the answer is written, so that a client that gives up early
// (a timeout) still leaves the change made, as with the real EC2.
func (s *Simulator) begin(r *http.Request, api string, writeErr func(*APIError)) (time.Duration, bool) {
	latency, fault := s.faults.call(api)
	if fault != nil {
		if wait(r, latency) {
			writeErr(fault)
		}
		return 0, false
	}
	return latency, true
}

// wait waits d unless the client goes away first; it reports whether the
// client is still there.
func wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (s *Simulator) requestID() string {
	return fmt.Sprintf("5a1c0000-0000-4000-8000-%012x", s.reqSeq.Add(1))
}

// sigScope is the credential scope of a SigV4 Authorization header.
type sigScope struct {
	accessKey, date, region, service string
}

// parseSigV4 accepts any well-formed SigV4 Authorization header (the
// signature itself is not checked) and returns its scope.
func parseSigV4(r *http.Request) (sigScope, bool) {
	rest, ok := strings.CutPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ")
	if !ok || r.Header.Get("X-Amz-Date") == "" {
		return sigScope{}, false
	}
	var cred, signed, sig string
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	parts := strings.Split(cred, "/")
	if signed == "" || sig == "" || len(parts) != 5 || parts[0] == "" || parts[4] != "aws4_request" ||
		!regionNameRE.MatchString(parts[2]) || parts[3] == "" {
		return sigScope{}, false
	}
	return sigScope{accessKey: parts[0], date: parts[1], region: parts[2], service: parts[3]}, true
}

// eventQueue hands controller events from the world (under its lock) to
// the delivering goroutine without ever blocking the world.
type eventQueue struct {
	mu    sync.Mutex
	items []controllerEvent
	wake  chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{wake: make(chan struct{}, 1)} }

func (q *eventQueue) push(ev controllerEvent) {
	q.mu.Lock()
	q.items = append(q.items, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) drain() []controllerEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}
