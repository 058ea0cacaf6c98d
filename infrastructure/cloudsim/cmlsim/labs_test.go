package cmlsim_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
)

const twoRouters = `lab:
  version: 0.3.0
  title: Two routers
nodes:
  - {id: n0, label: r1, node_definition: iosv}
  - {id: n1, label: r2, node_definition: csr1000v, cpus: 2}
links:
  - {id: l0, n1: n0, n2: n1}
`

func (s *sim) importLab(instance, token, yaml string) string {
	s.t.Helper()
	a := s.must(instance, http.MethodPost, "/import?title=Mine", token, []byte(yaml))
	require.Equal(s.t, http.StatusOK, a.status, string(a.body))
	var res struct {
		ID       string   `json:"id"`
		Warnings []string `json:"warnings"`
	}
	a.decode(s.t, &res)
	require.NotEmpty(s.t, res.ID)
	require.NotNil(s.t, res.Warnings)
	return res.ID
}

func (s *sim) labState(instance, token, id string) string {
	s.t.Helper()
	var state string
	s.must(instance, http.MethodGet, "/labs/"+id+"/state", token, nil).decode(s.t, &state)
	return state
}

func (s *sim) nodeStates(instance, token, id string) []string {
	s.t.Helper()
	var nodes []struct {
		State        string `json:"state"`
		BootProgress string `json:"boot_progress"`
	}
	s.must(instance, http.MethodGet, "/labs/"+id+"/nodes?data=true", token, nil).decode(s.t, &nodes)
	var out []string
	for _, n := range nodes {
		out = append(out, n.State+"/"+n.BootProgress)
	}
	return out
}

type statsDoc struct {
	Computes map[string]struct {
		Stats struct {
			Memory  map[string]json.Number `json:"memory"`
			DomInfo map[string]int         `json:"dominfo"`
		} `json:"stats"`
	} `json:"computes"`
}

func (s *sim) dominfo(instance, token string) map[string]int {
	s.t.Helper()
	a := s.must(instance, http.MethodGet, "/system_stats", token, nil)
	require.Contains(s.t, string(a.body), `"total":68719476736.0`, "bytes are floats, as CML sends them")
	var doc statsDoc
	a.decode(s.t, &doc)
	require.Len(s.t, doc.Computes, 1)
	for _, c := range doc.Computes {
		return c.Stats.DomInfo
	}
	return nil
}

func TestLabLifecycle(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{EmptyControllers: true, NodeBootDelay: 50 * time.Second})
	s.fleet.Boot("i-1")
	tok := s.login("i-1")
	id := s.importLab("i-1", tok, twoRouters)

	var lab map[string]any
	s.must("i-1", http.MethodGet, "/labs/"+id, tok, nil).decode(t, &lab)
	require.Equal(t, "Mine", lab["lab_title"])
	require.Equal(t, "DEFINED_ON_CORE", lab["state"])
	require.EqualValues(t, 2, lab["node_count"])
	require.EqualValues(t, 1, lab["link_count"])
	require.Equal(t, "admin", lab["owner_username"])
	require.Equal(t, "2026-03-02T09:00:00Z", lab["created"])
	require.Equal(t, map[string]int{"total_nodes": 2, "running_nodes": 0, "allocated_cpus": 0, "allocated_memory": 0,
		"total_orphans": 0, "running_orphans": 0}, s.dominfo("i-1", tok))

	steps := []struct {
		name    string
		method  string
		action  string
		advance time.Duration
		status  int
		state   string
		nodes   []string
		conv    bool
	}{
		{"start", http.MethodPut, "start", 0, 204, "STARTED", []string{"QUEUED/Booting", "QUEUED/Booting"}, false},
		{"a fifth of the boot: started", "", "", 10 * time.Second, 0, "STARTED", []string{"STARTED/Booting", "STARTED/Booting"}, false},
		{"booted", "", "", 40 * time.Second, 0, "STARTED", []string{"BOOTED/Booted", "BOOTED/Booted"}, true},
		{"wipe refused while running", http.MethodPut, "wipe", 0, 400, "STARTED", []string{"BOOTED/Booted", "BOOTED/Booted"}, true},
		{"delete refused while running", http.MethodDelete, "", 0, 400, "STARTED", []string{"BOOTED/Booted", "BOOTED/Booted"}, true},
		{"stop", http.MethodPut, "stop", 0, 204, "STOPPED", []string{"STOPPED/Not running", "STOPPED/Not running"}, true},
		{"stop again", http.MethodPut, "stop", 0, 204, "STOPPED", []string{"STOPPED/Not running", "STOPPED/Not running"}, true},
		{"delete refused while stopped", http.MethodDelete, "", 0, 400, "STOPPED", []string{"STOPPED/Not running", "STOPPED/Not running"}, true},
		{"wipe", http.MethodPut, "wipe", 0, 204, "DEFINED_ON_CORE", []string{"DEFINED_ON_CORE/Not running", "DEFINED_ON_CORE/Not running"}, true},
	}
	for _, st := range steps {
		s.clock.Advance(st.advance)
		if st.method != "" {
			path := "/labs/" + id
			if st.action != "" {
				path += "/" + st.action
			}
			a := s.must("i-1", st.method, path, tok, nil)
			require.Equal(t, st.status, a.status, "%s: %s", st.name, a.body)
		}
		require.Equal(t, st.state, s.labState("i-1", tok, id), st.name)
		require.Equal(t, st.nodes, s.nodeStates("i-1", tok, id), st.name)
		var converged bool
		s.must("i-1", http.MethodGet, "/labs/"+id+"/check_if_converged", tok, nil).decode(t, &converged)
		require.Equal(t, st.conv, converged, st.name)
		if st.name == "booted" {
			require.Equal(t, map[string]int{"total_nodes": 2, "running_nodes": 2, "allocated_cpus": 3,
				"allocated_memory": (768 + 3072) * 1024, "total_orphans": 0, "running_orphans": 0}, s.dominfo("i-1", tok))
		}
	}
	require.Equal(t, http.StatusNoContent, s.must("i-1", http.MethodDelete, "/labs/"+id, tok, nil).status)
	requireError(t, s.must("i-1", http.MethodGet, "/labs/"+id, tok, nil), http.StatusNotFound, "Lab not found: "+id)
	requireError(t, s.must("i-1", http.MethodPut, "/labs/"+id+"/start", tok, nil), http.StatusNotFound, "Lab not found")

	// The telemetry history tells the story in time order.
	var events []struct {
		Category  string         `json:"category"`
		Timestamp string         `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	s.must("i-1", http.MethodGet, "/telemetry/events", tok, nil).decode(t, &events)
	var categories []string
	var last time.Time
	for _, e := range events {
		ts, err := time.Parse("2006-01-02T15:04:05.000000", e.Timestamp)
		require.NoError(t, err, "naive UTC timestamps: %s", e.Timestamp)
		require.False(t, ts.Before(last), "in time order")
		last = ts
		if e.Category != "user_activity" {
			categories = append(categories, e.Category)
			require.Equal(t, cmlsim.AutomationUserID, e.Data["user_id"])
		}
	}
	require.Equal(t, []string{"import_lab", "start_lab", "queue_node", "queue_node", "start_node", "start_node",
		"boot_node", "boot_node", "stop_lab", "stop_node", "stop_node", "wipe_lab", "wipe_node", "wipe_node"}, categories)
}

func TestStartNeedsAReadyController(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{EmptyControllers: true, ReadyDelay: time.Minute})
	s.fleet.Boot("i-1")
	tok := s.login("i-1")
	id := s.importLab("i-1", tok, twoRouters)
	requireError(t, s.must("i-1", http.MethodPut, "/labs/"+id+"/start", tok, nil), http.StatusBadRequest, "Cannot start lab.")
	s.clock.Advance(time.Minute)
	require.Equal(t, http.StatusNoContent, s.must("i-1", http.MethodPut, "/labs/"+id+"/start", tok, nil).status)
}

func TestDemoLabsAndShowAll(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{NodeBootDelay: time.Minute})
	s.fleet.Boot("i-1")
	tok := s.login("i-1")
	own := s.importLab("i-1", tok, twoRouters)

	var mine, all []string
	s.must("i-1", http.MethodGet, "/labs", tok, nil).decode(t, &mine)
	require.Equal(t, []string{own}, mine, "without show_all: the caller's labs")
	s.must("i-1", http.MethodGet, "/labs?show_all=true", tok, nil).decode(t, &all)
	require.Len(t, all, 3, "an admin with show_all sees every user's labs")

	labs := s.fleet.Controller("i-1").Labs()
	require.Equal(t, "OSPF triangle", labs[0].Title)
	require.Equal(t, "STARTED", labs[0].State)
	require.Equal(t, "alice", labs[0].Owner)
	require.Equal(t, "Alpine pair", labs[1].Title)
	require.Equal(t, "DEFINED_ON_CORE", labs[1].State)

	// A shutdown stops the running nodes; they stay stopped after the reboot,
	// and the demo labs are not seeded twice.
	s.fleet.Shutdown("i-1")
	s.fleet.Boot("i-1")
	labs = s.fleet.Controller("i-1").Labs()
	require.Len(t, labs, 3)
	require.Equal(t, "STOPPED", labs[0].State)
	require.Equal(t, map[string]int{"STOPPED": 3}, labs[0].NodeStates)
}

func TestImportValidation(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{EmptyControllers: true})
	s.fleet.Boot("i-1")
	tok := s.login("i-1")
	tests := []struct {
		name, body, title string
		status            int
		contains          string
	}{
		{"empty", "", "", 400, "empty"},
		{"not YAML", "lab: [\n", "", 400, "not valid YAML"},
		{"a list, not a topology", "- a\n- b\n", "", 400, "not valid YAML"},
		{"no lab section", "nodes: []\n", "", 400, "lab.version"},
		{"node without id", "lab: {version: 0.3.0}\nnodes: [{node_definition: iosv}]\n", "", 400, "no id"},
		{"duplicate node ids", "lab: {version: 0.3.0}\nnodes: [{id: a, node_definition: iosv}, {id: a, node_definition: iosv}]\n", "", 400, "twice"},
		{"node without definition", "lab: {version: 0.3.0}\nnodes: [{id: a}]\n", "", 400, "node_definition"},
		{"dangling link", "lab: {version: 0.3.0}\nnodes: [{id: a, node_definition: iosv}]\nlinks: [{id: l, n1: a, n2: b}]\n", "", 400, "unknown nodes"},
		{"title too long", twoRouters, strings.Repeat("t", 65), 400, "Input validation failed"},
	}
	for _, tt := range tests {
		a := s.must("i-1", http.MethodPost, "/import?title="+tt.title, tok, []byte(tt.body))
		requireError(t, a, tt.status, tt.contains)
	}
	big := s.must("i-1", http.MethodPost, "/import", tok, []byte("lab: {version: 0.3.0}\n#"+strings.Repeat("x", 2<<20)))
	require.Equal(t, http.StatusRequestEntityTooLarge, big.status)
	require.Equal(t, "text/html", big.header.Get("Content-Type"))

	id := s.importLab("i-1", tok, twoRouters)
	a := s.must("i-1", http.MethodGet, "/labs/"+id+"/download", tok, nil)
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, twoRouters, string(a.body))
	require.Len(t, s.fleet.Controller("i-1").Labs(), 1, "failed imports create nothing")
}

func TestLicensing(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{EmptyControllers: true, LicenseDelay: time.Minute, BadLicenseToken: "doomed"})
	s.fleet.Boot("i-1")
	tok := s.login("i-1")
	c := s.fleet.Controller("i-1")

	type status struct {
		Registration struct {
			Status       string  `json:"status"`
			SmartAccount *string `json:"smart_account"`
			Expires      *string `json:"expires"`
		} `json:"registration"`
		Authorization struct {
			Status string `json:"status"`
		} `json:"authorization"`
		Features []struct {
			InUse int `json:"in_use"`
			Max   int `json:"max"`
		} `json:"features"`
	}
	get := func() status {
		var st status
		s.must("i-1", http.MethodGet, "/licensing", tok, nil).decode(t, &st)
		return st
	}
	st := get()
	require.Equal(t, "NOT_REGISTERED", st.Registration.Status)
	require.Equal(t, "EVAL", st.Authorization.Status)
	require.Nil(t, st.Registration.SmartAccount)
	require.Len(t, st.Features, 2)

	requireError(t, s.must("i-1", http.MethodDelete, "/licensing/deregistration", tok, nil), 400, "already been deregistered")
	requireError(t, s.must("i-1", http.MethodPost, "/licensing/registration", tok, []byte(`{"token": "has spaces"}`)), 400, "Input validation failed")
	requireError(t, s.must("i-1", http.MethodPut, "/licensing/registration/renew", tok, nil), 400, "not registered")

	require.Equal(t, 204, s.must("i-1", http.MethodPost, "/licensing/registration", tok, []byte(`{"token": "T0k3n+/%=-", "reregister": false}`)).status)
	require.Equal(t, "IN_PROGRESS", get().Registration.Status)
	requireError(t, s.must("i-1", http.MethodPost, "/licensing/registration", tok, []byte(`{"token": "again"}`)), 409, "in progress")
	requireError(t, s.must("i-1", http.MethodDelete, "/licensing/deregistration", tok, nil), 409, "in progress")
	s.clock.Advance(59 * time.Second)
	require.Equal(t, "IN_PROGRESS", get().Registration.Status)
	s.clock.Advance(time.Second)
	st = get()
	require.Equal(t, "COMPLETED", st.Registration.Status)
	require.Equal(t, "IN_COMPLIANCE", st.Authorization.Status)
	require.NotNil(t, st.Registration.SmartAccount)
	require.NotNil(t, st.Registration.Expires)
	_, err := time.Parse("2006-01-02 15:04:05", *st.Registration.Expires)
	require.NoError(t, err, "naive licensing times with a space")
	var health map[string]any
	s.must("i-1", http.MethodGet, "/system_health", tok, nil).decode(t, &health)
	require.Equal(t, true, health["is_licensed"])
	require.Equal(t, 204, s.must("i-1", http.MethodPut, "/licensing/authorization/renew", tok, nil).status)

	c.SetDeregisterLocalOnly(true)
	require.Equal(t, 202, s.must("i-1", http.MethodDelete, "/licensing/deregistration", tok, nil).status)
	reg, auth := c.License()
	require.Equal(t, []string{"NOT_REGISTERED", "EVAL"}, []string{reg, auth})

	require.Equal(t, 204, s.must("i-1", http.MethodPost, "/licensing/registration", tok, []byte(`{"token": "doomed"}`)).status)
	s.clock.Advance(time.Minute)
	require.Equal(t, "FAILED", get().Registration.Status)
	c.SetDeregisterLocalOnly(false)
	require.Equal(t, 204, s.must("i-1", http.MethodDelete, "/licensing/deregistration", tok, nil).status)

	// Each outcome is a license_info event.
	n := 0
	for _, e := range c.Events() {
		if e.Category == "license_info" {
			n++
		}
	}
	require.Equal(t, 2, n)
}

func TestTelemetry(t *testing.T) {
	t.Parallel()
	s := newSim(t, cmlsim.Options{MaxEvents: 12})
	s.fleet.Boot("i-1")
	c := s.fleet.Controller("i-1")
	const person = "8f0c6c1e-3b1f-4f39-9a55-0c1f1b2a3d4e"

	// The demo labs: imported and one started by the demo user.
	events := c.Events()
	require.Equal(t, "import_lab", events[0].Category)
	require.NotEqual(t, cmlsim.AutomationUserID, events[0].UserID)
	require.NotEmpty(t, events[0].UserID)

	// The API user's activity, at most once a minute.
	tok := s.login("i-1")
	s.must("i-1", http.MethodGet, "/system_stats", tok, nil)
	s.clock.Advance(30 * time.Second)
	s.must("i-1", http.MethodGet, "/system_stats", tok, nil)
	s.clock.Advance(30 * time.Second)
	s.must("i-1", http.MethodGet, "/system_stats", tok, nil)
	c.AddUserActivity(person)
	events = c.Events()
	var automation []time.Time
	for _, e := range events {
		if e.Category == "user_activity" && e.UserID == cmlsim.AutomationUserID {
			automation = append(automation, e.Timestamp)
		}
	}
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	require.Equal(t, []time.Time{start, start.Add(time.Minute)}, automation)
	lastEvent := events[len(events)-1]
	require.Equal(t, "user_activity", lastEvent.Category)
	require.Equal(t, person, lastEvent.UserID)

	// The history is capped, oldest first out.
	for range 10 {
		c.AddUserActivity(person)
	}
	events = c.Events()
	require.Len(t, events, 12)
	require.True(t, slices.IsSortedFunc(events, func(a, b cmlsim.Event) int { return a.Timestamp.Compare(b.Timestamp) }))
}
