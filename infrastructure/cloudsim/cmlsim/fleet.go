// Package cmlsim simulates the CML controllers of a fleet: one controller per
// running simulated EC2 instance, answering the subset of the CML 2.9 REST
// API that the manager uses (reference: /work/shared/reference/cml-api.md,
// section 12), with expiring tokens, asynchronous licence registration, labs
// with their state machine, telemetry events, fault injection and call
// counters. A Fleet is an http.Handler: controller X answers under
// /controllers/X/api/v0/…; the caller serves it over HTTPS.
//
// Time-driven behaviour (booting, licence registration, node boot) is
// evaluated from the Clock on each request, so a test that controls the
// clock controls the controllers, and the fleet runs no goroutines.
package cmlsim

import (
	"crypto/sha256"
	"encoding/binary"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Clock tells the time of the simulation.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Defaults of Options.
const (
	DefaultUsername        = "admin"
	DefaultPassword        = "admin"
	DefaultTokenTTL        = 24 * time.Hour
	DefaultVersion         = "2.9.1+build.7"
	DefaultBadLicenseToken = "bad-token"
	DefaultMaxEvents       = 5000
)

// AutomationUserID is the user id of the API user (Options.Username). CML
// gives automation accounts ids starting with 00000000-0000-; the manager's
// idle detection ignores their user_activity events.
const AutomationUserID = "00000000-0000-4000-8000-000000000001"

// Options configure a Fleet. Zero delays mean "at once".
type Options struct {
	// Username and Password are the admin credentials of every controller
	// (default admin/admin).
	Username string
	Password string
	// TokenTTL is the lifetime of the tokens a controller issues (default
	// 24 h, as CML).
	TokenTTL time.Duration
	// BootDelay is how long after Boot the controller answers 502 (nginx up,
	// CML not yet); ReadyDelay is how long after that system_information
	// says ready:false.
	BootDelay  time.Duration
	ReadyDelay time.Duration
	// LicenseDelay is how long a licence registration stays IN_PROGRESS.
	LicenseDelay time.Duration
	// NodeBootDelay is how long a started node takes to reach BOOTED (it is
	// QUEUED for the first fifth of it, then STARTED).
	NodeBootDelay time.Duration
	// BadLicenseToken is the registration token that ends in FAILED
	// (default "bad-token").
	BadLicenseToken string
	// Version is what system_information reports (default 2.9.1+build.7).
	Version string
	// EmptyControllers boots controllers without the two demo labs.
	EmptyControllers bool
	// MaxEvents caps each controller's telemetry history (default 5000; the
	// oldest events are dropped).
	MaxEvents int
	// Faults apply to every controller until changed with SetFaults.
	Faults Faults
	Clock  Clock
	Logger *slog.Logger
	// Seed makes ids, demo data and fault draws reproducible.
	Seed int64
}

// Faults are injected into every request that reaches a controller.
type Faults struct {
	// Latency delays every answer (real time, whatever the Clock).
	Latency time.Duration
	// ErrorRate is the probability (0–1) that a request fails with
	// ErrorStatus (default 500); 502, 504, 413 and 429 come with nginx's
	// HTML body, anything else with CML's JSON error.
	ErrorRate   float64
	ErrorStatus int
}

// Fleet is the set of simulated controllers, keyed by EC2 instance id.
type Fleet struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux

	mu          sync.RWMutex
	controllers map[string]*Controller
	faults      Faults

	rngMu sync.Mutex
	rng   *rand.Rand
}

// NewFleet returns an empty fleet; Boot adds controllers.
func NewFleet(opts Options) *Fleet {
	if opts.Username == "" {
		opts.Username = DefaultUsername
	}
	if opts.Password == "" {
		opts.Password = DefaultPassword
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.BadLicenseToken == "" {
		opts.BadLicenseToken = DefaultBadLicenseToken
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.Clock == nil {
		opts.Clock = wallClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Fleet{
		opts:        opts,
		log:         opts.Logger,
		controllers: make(map[string]*Controller),
		faults:      opts.Faults,
		rng:         rand.New(rand.NewPCG(uint64(opts.Seed), 0x434d4c73696d)),
	}
	f.mux = f.routes()
	return f
}

// ControllerPath is the path prefix under which the fleet serves the
// controller of instanceID: its CML endpoint is <base URL> + ControllerPath.
func ControllerPath(instanceID string) string { return "/controllers/" + instanceID }

// ServeHTTP routes /controllers/{instanceID}/api/v0/… to that controller.
func (f *Fleet) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.mux.ServeHTTP(w, r) }

// Boot powers the controller of instanceID on (creating it on first boot,
// with the demo labs unless EmptyControllers). It answers 502 for BootDelay,
// then ready:false for ReadyDelay, then ready:true. Booting a running
// controller does nothing.
func (f *Fleet) Boot(instanceID string) {
	f.mu.Lock()
	c, ok := f.controllers[instanceID]
	if !ok {
		c = newController(f, instanceID)
		f.controllers[instanceID] = c
	}
	f.mu.Unlock()
	c.boot(f.opts.Clock.Now())
}

// Shutdown powers the controller of instanceID off: it answers nothing
// (the connection is dropped) until the next Boot, its running nodes stop
// and its tokens die with it.
func (f *Fleet) Shutdown(instanceID string) {
	if c := f.Controller(instanceID); c != nil {
		c.shutdown(f.opts.Clock.Now())
	}
}

// Controller returns the controller of instanceID, or nil if it never
// booted. Its methods are the test hooks.
func (f *Fleet) Controller(instanceID string) *Controller {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.controllers[instanceID]
}

func (f *Fleet) all() []*Controller {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Controller, 0, len(f.controllers))
	for _, c := range f.controllers {
		out = append(out, c)
	}
	return out
}

// SetFaults replaces the faults injected into every controller that has no
// faults of its own (Controller.SetFaults).
func (f *Fleet) SetFaults(faults Faults) {
	f.mu.Lock()
	f.faults = faults
	f.mu.Unlock()
}

func (f *Fleet) fleetFaults() Faults {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.faults
}

// ExpireAllTokens makes every token issued so far by any controller invalid
// (the next request with one gets 401).
func (f *Fleet) ExpireAllTokens() {
	for _, c := range f.all() {
		c.ExpireTokens()
	}
}

// Calls returns the number of requests every controller received, by
// endpoint ("POST /authenticate", "GET /labs/{lab_id}", …), summed over the
// fleet.
func (f *Fleet) Calls() map[string]int64 {
	sum := make(map[string]int64)
	for _, c := range f.all() {
		for k, v := range c.Calls() {
			sum[k] += v
		}
	}
	return sum
}

// Logins returns the number of login requests (/authenticate and
// /auth_extended) the fleet received.
func (f *Fleet) Logins() int64 {
	var n int64
	for _, c := range f.all() {
		n += c.Logins()
	}
	return n
}

// ResetCounters sets every call counter to zero.
func (f *Fleet) ResetCounters() {
	for _, c := range f.all() {
		c.ResetCounters()
	}
}

// chance draws true with probability p.
func (f *Fleet) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	f.rngMu.Lock()
	defer f.rngMu.Unlock()
	return f.rng.Float64() < p
}

// controllerSeed derives a controller's random source from the fleet seed
// and its instance id, so that its ids do not depend on the boot order.
func controllerSeed(seed int64, instanceID string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seed))
	return sha256.Sum256(append(b[:], instanceID...))
}

func copyCounts(m map[string]int64) map[string]int64 { return maps.Clone(m) }
