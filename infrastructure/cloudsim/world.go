package cloudsim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"
)

// EC2 instance states, as the API names them.
const (
	StatePending      = "pending"
	StateRunning      = "running"
	StateShuttingDown = "shutting-down"
	StateTerminated   = "terminated"
	StateStopping     = "stopping"
	StateStopped      = "stopped"
)

// stateCodes are the numeric codes EC2 reports beside each state name.
var stateCodes = map[string]int{
	StatePending: 0, StateRunning: 16, StateShuttingDown: 32,
	StateTerminated: 48, StateStopping: 64, StateStopped: 80,
}

// Detailed-monitoring states.
const (
	monitoringDisabled  = "disabled"
	monitoringDisabling = "disabling"
	monitoringEnabled   = "enabled"
	monitoringPending   = "pending"
)

// Status-check values.
const (
	statusOK            = "ok"
	statusInitializing  = "initializing"
	statusNotApplicable = "not-applicable"
)

// OwnerID is the account that owns every simulated resource.
const OwnerID = "123456789012"

// Timings are the durations of the simulated state changes. A zero field
// takes its default.
type Timings struct {
	Pending             time.Duration // pending → running; default 3 s
	Stopping            time.Duration // stopping → stopped; default 3 s
	ShuttingDown        time.Duration // shutting-down → terminated; default 2 s
	StatusInitializing  time.Duration // running with status checks "initializing" before "ok"; default 5 s
	MonitoringChange    time.Duration // monitoring pending → enabled, disabling → disabled; default 1 s
	TerminatedRetention time.Duration // how long terminated instances stay visible; default 1 h, like AWS
}

func (t Timings) withDefaults() Timings {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Pending, 3*time.Second)
	def(&t.Stopping, 3*time.Second)
	def(&t.ShuttingDown, 2*time.Second)
	def(&t.StatusInitializing, 5*time.Second)
	def(&t.MonitoringChange, time.Second)
	def(&t.TerminatedRetention, time.Hour)
	return t
}

// APIError is an error the simulated EC2 or CloudWatch answers with. The
// out-of-band operations return it too.
type APIError struct {
	Code    string
	Message string
	Status  int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func apiErrorf(status int, code, format string, args ...any) *APIError {
	return &APIError{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

func invalidParameter(format string, args ...any) *APIError {
	return apiErrorf(http.StatusBadRequest, "InvalidParameterValue", format, args...)
}

// Instance is a snapshot of a simulated EC2 instance.
type Instance struct {
	ID               string            `json:"instance_id"`
	Region           string            `json:"region"`
	ReservationID    string            `json:"reservation_id"`
	ImageID          string            `json:"image_id"`
	InstanceType     string            `json:"instance_type"`
	KeyName          string            `json:"key_name,omitempty"`
	SubnetID         string            `json:"subnet_id"`
	VpcID            string            `json:"vpc_id"`
	AvailabilityZone string            `json:"availability_zone"`
	SecurityGroupIDs []string          `json:"security_group_ids"`
	ClientToken      string            `json:"client_token,omitempty"`
	LaunchIndex      int               `json:"launch_index"`
	State            string            `json:"state"`
	StateSince       time.Time         `json:"state_since"`
	LaunchTime       time.Time         `json:"launch_time"`
	PublicIP         string            `json:"public_ip,omitempty"`
	PrivateIP        string            `json:"private_ip,omitempty"`
	Tags             map[string]string `json:"tags"`
	Monitoring       string            `json:"monitoring"`
	SystemStatus     string            `json:"system_status"`
	InstanceStatus   string            `json:"instance_status"`
	CloudWatchAgent  bool              `json:"cloudwatch_agent"`
}

// Image is a simulated AMI.
type Image struct {
	ID              string    `json:"image_id"`
	Region          string    `json:"region"`
	Name            string    `json:"name"`
	Description     string    `json:"description"`
	CreationDate    time.Time `json:"creation_date"`
	CloudWatchAgent bool      `json:"cloudwatch_agent"` // instances booted from it report memory metrics
}

// seedImages are the CML AMIs every region starts with.
var seedImages = []struct {
	name, description string
	created           time.Time
	agent             bool
}{
	{"cisco-cml2.9-lablet-v0.1.7", "Cisco Modeling Labs 2.9 lablet controller v0.1.7 with the CloudWatch agent",
		time.Date(2026, 9, 15, 10, 0, 0, 0, time.UTC), true},
	{"cisco-cml2.9-lablet-v0.1.6", "Cisco Modeling Labs 2.9 lablet controller v0.1.6 with the CloudWatch agent",
		time.Date(2026, 6, 2, 10, 0, 0, 0, time.UTC), true},
	{"cisco-cml2.8-lablet-v0.1.5", "Cisco Modeling Labs 2.8 lablet controller v0.1.5",
		time.Date(2025, 11, 20, 10, 0, 0, 0, time.UTC), false},
}

// ImageID returns the id a simulated region gives the AMI called name. It
// depends only on the two names, so configuration can name the seeded AMIs
// of the simulator ahead of time.
func ImageID(region, name string) string {
	sum := sha256.Sum256([]byte(region + "/" + name))
	return "ami-" + hex.EncodeToString(sum[:])[:17]
}

type transition struct {
	at time.Time
	to string
}

// interval is a time the instance was running; end is zero while it still is.
type interval struct{ start, end time.Time }

type instance struct {
	Instance
	seq            int64
	next           *transition
	monitoringNext *transition
	runs           []interval
	systemOverride string
	instOverride   string
}

type clientTokenRecord struct {
	fingerprint   string
	reservationID string
	instanceIDs   []string
}

type regionState struct {
	name      string
	instances map[string]*instance
	order     []*instance // by seq, for stable paging
	images    map[string]*Image
	tokens    map[string]clientTokenRecord
	privSeq   uint32
}

// controllerEvent tells the CML side that an instance booted or went down.
type controllerEvent struct {
	instanceID string
	boot       bool
}

// world is the simulated EC2 of every region. One mutex guards it all.
type world struct {
	mu       sync.Mutex
	clock    Clock
	timings  Timings
	rng      *rand.Rand
	limit    int
	regions  map[string]*regionState
	byID     map[string]*instance
	seq      int64
	ipCursor int
	ipInUse  map[string]int        // public IP → instances holding it
	notify   func(controllerEvent) // called with mu held; must not block
}

func newWorld(clock Clock, timings Timings, seed uint64, limit int, notify func(controllerEvent)) *world {
	return &world{
		clock:   clock,
		timings: timings.withDefaults(),
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		limit:   limit,
		regions: map[string]*regionState{},
		byID:    map[string]*instance{},
		ipInUse: map[string]int{},
		notify:  notify,
	}
}

var regionNameRE = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$`)

// region returns the state of a region, creating it with the seeded images
// on first use. Call with mu held.
func (w *world) region(name string) *regionState {
	if r, ok := w.regions[name]; ok {
		return r
	}
	r := &regionState{
		name: name, instances: map[string]*instance{}, images: map[string]*Image{},
		tokens: map[string]clientTokenRecord{},
	}
	for _, s := range seedImages {
		img := &Image{ID: ImageID(name, s.name), Region: name, Name: s.name, Description: s.description,
			CreationDate: s.created, CloudWatchAgent: s.agent}
		r.images[img.ID] = img
	}
	w.regions[name] = r
	return r
}

func (w *world) hexID(prefix string) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, len(prefix)+17)
	b = append(b, prefix...)
	for range 17 {
		b = append(b, digits[w.rng.IntN(16)])
	}
	return string(b)
}

// publicPool is every address of the two RFC 5737 ranges handed out as
// public IPs: labels only, nothing may connect to them.
var publicPool = func() []string {
	var out []string
	for _, net := range []string{"198.51.100.", "203.0.113."} {
		for host := 1; host <= 254; host++ {
			out = append(out, net+strconv.Itoa(host))
		}
	}
	return out
}()

// assignPublicIP gives in a pool address that no other instance holds and
// that differs from its current one; when every address is taken (more
// than 508 instances with a public IP) addresses repeat. Call with mu held.
func (w *world) assignPublicIP(in *instance) {
	old := in.PublicIP
	pick := ""
	for range publicPool {
		ip := publicPool[w.ipCursor%len(publicPool)]
		w.ipCursor++
		if ip != old && w.ipInUse[ip] == 0 {
			pick = ip
			break
		}
	}
	if pick == "" {
		pick = publicPool[w.ipCursor%len(publicPool)]
		w.ipCursor++
		if pick == old {
			pick = publicPool[w.ipCursor%len(publicPool)]
			w.ipCursor++
		}
	}
	w.setPublicIP(in, pick)
}

// setPublicIP changes the public IP of in, keeping the in-use counts.
func (w *world) setPublicIP(in *instance, ip string) {
	if in.PublicIP != "" {
		if w.ipInUse[in.PublicIP]--; w.ipInUse[in.PublicIP] <= 0 {
			delete(w.ipInUse, in.PublicIP)
		}
	}
	in.PublicIP = ip
	if ip != "" {
		w.ipInUse[ip]++
	}
}

func (r *regionState) newPrivateIP() string {
	r.privSeq++
	n := r.privSeq + 10
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&0xff, (n>>8)&0xff, n&0xff)
}

// advance applies every state change that is due at now and forgets
// terminated instances past their retention. Call with mu held.
func (w *world) advance() time.Time {
	now := w.clock.Now()
	var expired []*instance
	for _, in := range w.byID {
		w.advanceInstance(in, now)
		if in.State == StateTerminated && !now.Before(in.StateSince.Add(w.timings.TerminatedRetention)) {
			expired = append(expired, in)
		}
	}
	for _, in := range expired {
		w.forget(in)
	}
	return now
}

func (w *world) advanceInstance(in *instance, now time.Time) {
	for in.next != nil && !now.Before(in.next.at) {
		t := in.next
		in.next = nil
		w.setState(in, t.to, t.at)
	}
	if t := in.monitoringNext; t != nil && !now.Before(t.at) {
		in.monitoringNext = nil
		in.Monitoring = t.to
	}
}

func (w *world) forget(in *instance) {
	delete(w.byID, in.ID)
	r := w.regions[in.Region]
	delete(r.instances, in.ID)
	r.order = slices.DeleteFunc(r.order, func(x *instance) bool { return x == in })
}

// setState moves an instance into state to at time at, scheduling the next
// timed change and telling the CML side. Call with mu held.
func (w *world) setState(in *instance, to string, at time.Time) {
	from := in.State
	if from == to {
		return
	}
	if from == StateRunning {
		if n := len(in.runs); n > 0 && in.runs[n-1].end.IsZero() {
			in.runs[n-1].end = at
		}
		w.notify(controllerEvent{instanceID: in.ID})
	}
	in.State = to
	in.StateSince = at
	in.next = nil
	switch to {
	case StatePending:
		in.LaunchTime = at
		w.assignPublicIP(in)
		in.next = &transition{at: at.Add(w.timings.Pending), to: StateRunning}
	case StateRunning:
		in.runs = append(in.runs, interval{start: at})
		in.systemOverride, in.instOverride = "", ""
		w.notify(controllerEvent{instanceID: in.ID, boot: true})
	case StateStopping:
		in.next = &transition{at: at.Add(w.timings.Stopping), to: StateStopped}
	case StateStopped:
		w.setPublicIP(in, "")
	case StateShuttingDown:
		in.next = &transition{at: at.Add(w.timings.ShuttingDown), to: StateTerminated}
	case StateTerminated:
		w.setPublicIP(in, "")
		in.PrivateIP = ""
		in.Monitoring = monitoringDisabled
		in.monitoringNext = nil
	}
	// Keep a day of run history for CloudWatch.
	cut := at.Add(-24 * time.Hour)
	for len(in.runs) > 1 && !in.runs[0].end.IsZero() && in.runs[0].end.Before(cut) {
		in.runs = in.runs[1:]
	}
}

// snapshot copies an instance with its derived status checks.
func (w *world) snapshot(in *instance, now time.Time) Instance {
	s := in.Instance
	s.Tags = maps.Clone(in.Tags)
	s.SecurityGroupIDs = slices.Clone(in.SecurityGroupIDs)
	s.SystemStatus, s.InstanceStatus = statusNotApplicable, statusNotApplicable
	if in.State == StateRunning {
		derived := statusOK
		if now.Before(in.StateSince.Add(w.timings.StatusInitializing)) {
			derived = statusInitializing
		}
		s.SystemStatus, s.InstanceStatus = derived, derived
		if in.systemOverride != "" {
			s.SystemStatus = in.systemOverride
		}
		if in.instOverride != "" {
			s.InstanceStatus = in.instOverride
		}
	}
	return s
}
