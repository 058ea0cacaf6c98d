package cmlsim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// PowerState is what a controller is doing.
type PowerState string

// Power states of a controller.
const (
	PowerOff      PowerState = "off"      // answers nothing
	PowerBooting  PowerState = "booting"  // 502 from nginx
	PowerStarting PowerState = "starting" // API up, system_information ready:false
	PowerReady    PowerState = "ready"
)

// user is an account of a controller.
type user struct {
	id, username string
	admin        bool
}

// Event is one telemetry event of a controller.
type Event struct {
	Category  string
	Timestamp time.Time
	UserID    string
	Data      map[string]any
}

// Controller is one simulated CML controller. Its exported methods are test
// hooks; its API is served by the Fleet.
type Controller struct {
	fleet *Fleet
	id    string

	mu          sync.Mutex
	rng         *rand.ChaCha8
	powered     bool
	bootedAt    time.Time
	unavailable bool
	faults      *Faults
	calls       map[string]int64

	// authentication
	admin        user
	demoUser     user
	password     string
	key          []byte
	ttl          time.Duration
	serial       uint64
	minSerial    uint64
	revoked      map[uint64]bool
	rejectNext   bool
	lastActivity map[string]time.Time

	license        license
	deregLocalOnly bool

	computeID string
	labs      map[string]*lab
	labOrder  []string
	events    []Event
	seeded    bool
}

func newController(f *Fleet, instanceID string) *Controller {
	c := &Controller{
		fleet:        f,
		id:           instanceID,
		rng:          rand.NewChaCha8(controllerSeed(f.opts.Seed, instanceID)),
		calls:        make(map[string]int64),
		admin:        user{id: AutomationUserID, username: f.opts.Username, admin: true},
		password:     f.opts.Password,
		ttl:          f.opts.TokenTTL,
		revoked:      make(map[uint64]bool),
		lastActivity: make(map[string]time.Time),
		license:      license{registration: "NOT_REGISTERED", authorization: "EVAL"},
		labs:         make(map[string]*lab),
	}
	c.demoUser = user{id: c.newID(), username: "alice"}
	c.computeID = c.newID()
	return c
}

// newID returns a UUID4 from the controller's random source. Callers hold
// c.mu or own c exclusively.
func (c *Controller) newID() string {
	id, err := uuid.NewRandomFromReader(c.rng)
	if err != nil {
		panic(fmt.Sprintf("cmlsim: uuid from ChaCha8: %v", err)) // ChaCha8.Read never fails
	}
	return id.String()
}

func (c *Controller) boot(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.powered {
		return
	}
	c.powered = true
	c.bootedAt = now
	// A new signing key: tokens issued before the reboot are refused.
	c.key = make([]byte, 32)
	_, _ = c.rng.Read(c.key)
	if !c.seeded {
		c.seeded = true
		if !c.fleet.opts.EmptyControllers {
			c.seedDemoLabs(now)
		}
	}
	c.fleet.log.Debug("simulated CML controller booting", "instance_id", c.id)
}

func (c *Controller) shutdown(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.powered {
		return
	}
	c.advance(now)
	c.powered = false
	for _, id := range c.labOrder {
		for _, n := range c.labs[id].nodes {
			if n.active() {
				n.state = nodeStopped
			}
		}
	}
	c.fleet.log.Debug("simulated CML controller off", "instance_id", c.id)
}

// powerState tells what the controller does at now. Callers hold c.mu.
func (c *Controller) powerState(now time.Time) PowerState {
	opts := c.fleet.opts
	switch {
	case !c.powered:
		return PowerOff
	case now.Before(c.bootedAt.Add(opts.BootDelay)):
		return PowerBooting
	case now.Before(c.bootedAt.Add(opts.BootDelay + opts.ReadyDelay)):
		return PowerStarting
	}
	return PowerReady
}

// advance applies every time-driven transition due by now (licence
// registration, node boot), recording their telemetry events in time order.
// Callers hold c.mu.
func (c *Controller) advance(now time.Time) {
	if !c.powered {
		return
	}
	var due []Event
	if e, ok := c.license.advance(now, c.fleet.opts.BadLicenseToken); ok {
		due = append(due, e)
	}
	for _, id := range c.labOrder {
		l := c.labs[id]
		for _, n := range l.nodes {
			if n.state == nodeQueued && !now.Before(n.startAt) {
				n.state = nodeStarted
				due = append(due, Event{Category: "start_node", Timestamp: n.startAt, UserID: n.startedBy,
					Data: map[string]any{"lab_id": l.id, "node_id": n.id, "node_definition": n.definition, "user_id": n.startedBy}})
			}
			if n.state == nodeStarted && !now.Before(n.bootAt) {
				n.state = nodeBooted
				due = append(due, Event{Category: "boot_node", Timestamp: n.bootAt, UserID: n.startedBy,
					Data: map[string]any{"lab_id": l.id, "node_id": n.id, "node_definition": n.definition, "user_id": n.startedBy}})
			}
		}
	}
	slices.SortStableFunc(due, func(a, b Event) int { return a.Timestamp.Compare(b.Timestamp) })
	for _, e := range due {
		c.record(e)
	}
}

// record appends a telemetry event, dropping the oldest beyond MaxEvents.
// Callers hold c.mu.
func (c *Controller) record(e Event) {
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	if e.UserID != "" {
		e.Data["user_id"] = e.UserID
	}
	c.events = append(c.events, e)
	if over := len(c.events) - c.fleet.opts.MaxEvents; over > 0 {
		c.events = slices.Delete(c.events, 0, over)
	}
}

// noteAPIActivity records a user_activity event for a user of the API, at
// most one a minute per user (as the manager's own polling shows up in CML).
// Callers hold c.mu.
func (c *Controller) noteAPIActivity(u user, now time.Time) {
	if last, ok := c.lastActivity[u.id]; ok && now.Sub(last) < time.Minute {
		return
	}
	c.lastActivity[u.id] = now
	c.record(Event{Category: "user_activity", Timestamp: now, UserID: u.id,
		Data: map[string]any{"username": u.username, "activity": "api"}})
}

// --- tokens ---------------------------------------------------------------

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

type claims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	Jti string `json:"jti"`
}

// issue signs a new HS256 token for u. Callers hold c.mu.
func (c *Controller) issue(u user, now time.Time) string {
	c.serial++
	ttl := max(c.ttl, time.Second)
	payload, _ := json.Marshal(claims{
		Iss: "com.cisco.virl", Sub: u.id,
		Iat: now.Unix(), Exp: now.Add(ttl).Unix(),
		Jti: strconv.FormatUint(c.serial, 10),
	})
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signing + "." + c.sign(signing)
}

func (c *Controller) sign(s string) string {
	mac := hmac.New(sha256.New, c.key)
	mac.Write([]byte(s))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// verify returns the user and serial of a valid token. Callers hold c.mu.
func (c *Controller) verify(token string, now time.Time) (user, uint64, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != jwtHeader {
		return user{}, 0, false
	}
	if !hmac.Equal([]byte(parts[2]), []byte(c.sign(parts[0]+"."+parts[1]))) {
		return user{}, 0, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return user{}, 0, false
	}
	var cl claims
	if json.Unmarshal(raw, &cl) != nil || now.Unix() >= cl.Exp {
		return user{}, 0, false
	}
	serial, err := strconv.ParseUint(cl.Jti, 10, 64)
	if err != nil || serial < c.minSerial || c.revoked[serial] {
		return user{}, 0, false
	}
	if cl.Sub != c.admin.id {
		return user{}, 0, false
	}
	return c.admin, serial, true
}

// --- test hooks -------------------------------------------------------------

// ExpireTokens makes every token issued so far invalid.
func (c *Controller) ExpireTokens() {
	c.mu.Lock()
	c.minSerial = c.serial + 1
	c.mu.Unlock()
}

// UnauthorizeNext makes the next request to a protected endpoint fail with
// 401 once, whatever its token.
func (c *Controller) UnauthorizeNext() {
	c.mu.Lock()
	c.rejectNext = true
	c.mu.Unlock()
}

// SetPassword changes the admin password (a wrong one makes logins fail
// with 403).
func (c *Controller) SetPassword(password string) {
	c.mu.Lock()
	c.password = password
	c.mu.Unlock()
}

// SetTokenTTL changes the lifetime of the tokens issued from now on (as
// PATCH /web_session_timeout does).
func (c *Controller) SetTokenTTL(ttl time.Duration) {
	c.mu.Lock()
	c.ttl = ttl
	c.mu.Unlock()
}

// AddUserActivity records a user_activity telemetry event of userID now: a
// person working in a lab.
func (c *Controller) AddUserActivity(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.fleet.opts.Clock.Now()
	c.advance(now)
	c.record(Event{Category: "user_activity", Timestamp: now, UserID: userID,
		Data: map[string]any{"activity": "ui"}})
}

// SetDeregisterLocalOnly makes deregistrations answer 202 (deregistered
// locally, Smart Software Manager unreachable) instead of 204.
func (c *Controller) SetDeregisterLocalOnly(localOnly bool) {
	c.mu.Lock()
	c.deregLocalOnly = localOnly
	c.mu.Unlock()
}

// SetFaults gives the controller its own faults; nil returns it to the
// fleet's.
func (c *Controller) SetFaults(faults *Faults) {
	c.mu.Lock()
	if faults != nil {
		f := *faults
		faults = &f
	}
	c.faults = faults
	c.mu.Unlock()
}

// SetUnavailable makes the (powered) controller answer 502 from nginx, as
// while it boots, until called with false.
func (c *Controller) SetUnavailable(unavailable bool) {
	c.mu.Lock()
	c.unavailable = unavailable
	c.mu.Unlock()
}

// State returns what the controller does now.
func (c *Controller) State() PowerState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.powerState(c.fleet.opts.Clock.Now())
}

// Calls returns the number of requests the controller received, by
// endpoint ("GET /system_stats", "PUT /labs/{lab_id}/start", …).
func (c *Controller) Calls() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return copyCounts(c.calls)
}

// Logins returns the number of login requests the controller received.
func (c *Controller) Logins() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[loginKey] + c.calls[loginExtendedKey]
}

// ResetCounters sets the controller's call counters to zero.
func (c *Controller) ResetCounters() {
	c.mu.Lock()
	clear(c.calls)
	c.mu.Unlock()
}

// Events returns the controller's telemetry history, oldest first.
func (c *Controller) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(c.fleet.opts.Clock.Now())
	out := make([]Event, len(c.events))
	copy(out, c.events)
	return out
}

// License returns the registration and authorization states now.
func (c *Controller) License() (registration, authorization string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(c.fleet.opts.Clock.Now())
	return c.license.registration, c.license.authorization
}

// LabInfo describes a lab of a controller.
type LabInfo struct {
	ID, Title, State, Owner string
	Nodes, Links            int
	// NodeStates counts the lab's nodes by state.
	NodeStates map[string]int
}

// Labs returns the controller's labs in creation order.
func (c *Controller) Labs() []LabInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(c.fleet.opts.Clock.Now())
	out := make([]LabInfo, 0, len(c.labOrder))
	for _, id := range c.labOrder {
		l := c.labs[id]
		info := LabInfo{ID: l.id, Title: l.title, State: l.state(), Owner: l.owner.username,
			Nodes: len(l.nodes), Links: l.links, NodeStates: map[string]int{}}
		for _, n := range l.nodes {
			info.NodeStates[n.state]++
		}
		out = append(out, info)
	}
	return out
}
