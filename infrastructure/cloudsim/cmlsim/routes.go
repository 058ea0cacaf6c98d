package cmlsim

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Counter keys of the login endpoints.
const (
	loginKey         = "POST /authenticate"
	loginExtendedKey = "POST /auth_extended"
)

// Request body limits of the nginx in front of CML.
const (
	defaultBodyLimit = 100 << 10
	importBodyLimit  = 2 << 20
)

// labIDPattern is CML's validation of a lab id (a UUID4).
var labIDPattern = regexp.MustCompile(`^[\da-f]{8}-[\da-f]{4}-4[\da-f]{3}-[89ab][\da-f]{3}-[\da-f]{12}$`)

// telemetryTimeLayout is how CML writes telemetry timestamps: naive UTC.
const telemetryTimeLayout = "2006-01-02T15:04:05.000000"

// exchange is one request as a handler sees it, under the controller's lock.
type exchange struct {
	r      *http.Request
	body   []byte
	now    time.Time
	state  PowerState
	user   user
	serial uint64
}

type route struct {
	auth      bool
	bodyLimit int64
	handle    func(c *Controller, x *exchange) reply
}

func (f *Fleet) routes() *http.ServeMux {
	mux := http.NewServeMux()
	add := func(pattern string, rt route) {
		method, path, _ := strings.Cut(pattern, " ")
		mux.Handle(method+" /controllers/{instance}/api/v0"+path, f.wrap(pattern, rt))
	}
	add(loginKey, route{handle: handleAuthenticate})
	add(loginExtendedKey, route{handle: handleAuthExtended})
	add("GET /authok", route{auth: true, handle: func(*Controller, *exchange) reply { return jsonReply(200, "OK") }})
	add("DELETE /logout", route{auth: true, handle: handleLogout})
	add("GET /web_session_timeout", route{auth: true, handle: handleGetSessionTimeout})
	add("PATCH /web_session_timeout/{seconds}", route{auth: true, handle: handleSetSessionTimeout})
	add("GET /system_information", route{handle: handleSystemInformation})
	add("GET /system_health", route{auth: true, handle: handleSystemHealth})
	add("GET /system_stats", route{auth: true, handle: handleSystemStats})
	add("GET /licensing", route{auth: true, handle: handleLicensing})
	add("POST /licensing/registration", route{auth: true, handle: handleRegister})
	add("DELETE /licensing/deregistration", route{auth: true, handle: handleDeregister})
	add("PUT /licensing/registration/renew", route{auth: true, handle: handleRenew})
	add("PUT /licensing/authorization/renew", route{auth: true, handle: handleRenew})
	add("GET /labs", route{auth: true, handle: handleLabs})
	add("GET /labs/{lab_id}", route{auth: true, handle: withLab(handleLab)})
	add("DELETE /labs/{lab_id}", route{auth: true, handle: withLab(handleDeleteLab)})
	add("PUT /labs/{lab_id}/start", route{auth: true, handle: withLab(handleStartLab)})
	add("PUT /labs/{lab_id}/stop", route{auth: true, handle: withLab(handleStopLab)})
	add("PUT /labs/{lab_id}/wipe", route{auth: true, handle: withLab(handleWipeLab)})
	add("GET /labs/{lab_id}/state", route{auth: true, handle: withLab(func(_ *Controller, _ *exchange, l *lab) reply {
		return jsonReply(200, l.state())
	})})
	add("GET /labs/{lab_id}/check_if_converged", route{auth: true, handle: withLab(func(_ *Controller, _ *exchange, l *lab) reply {
		return jsonReply(200, l.converged())
	})})
	add("GET /labs/{lab_id}/download", route{auth: true, handle: withLab(func(_ *Controller, _ *exchange, l *lab) reply {
		return reply{status: 200, body: []byte(l.yaml), contentType: "text/plain; charset=utf-8"}
	})})
	add("GET /labs/{lab_id}/nodes", route{auth: true, handle: withLab(handleNodes)})
	add("POST /import", route{auth: true, bodyLimit: importBodyLimit, handle: handleImport})
	add("GET /telemetry/events", route{auth: true, handle: handleTelemetry})
	mux.Handle("/controllers/{instance}/", f.wrap("unmatched", route{handle: func(*Controller, *exchange) reply {
		return errorReply(http.StatusNotFound, "Not Found")
	}}))
	return mux
}

// abort drops the connection without an answer, as a powered-off machine
// would (net/http closes the connection, or resets the HTTP/2 stream).
func abort() { panic(http.ErrAbortHandler) }

// wrap applies what every request meets before the controller's handler:
// power state, call counting, injected faults, nginx body limits and the
// bearer token.
func (f *Fleet) wrap(key string, rt route) http.Handler {
	limit := rt.bodyLimit
	if limit == 0 {
		limit = defaultBodyLimit
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := f.Controller(r.PathValue("instance"))
		if c == nil {
			abort()
		}
		faults := f.fleetFaults()
		now := f.opts.Clock.Now()
		c.mu.Lock()
		state := c.powerState(now)
		if state == PowerOff {
			c.mu.Unlock()
			abort()
		}
		c.calls[key]++
		if c.faults != nil {
			faults = *c.faults
		}
		unavailable := c.unavailable
		c.mu.Unlock()

		if faults.Latency > 0 {
			t := time.NewTimer(faults.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if state == PowerBooting || unavailable {
			nginxReply(http.StatusBadGateway).write(w)
			return
		}
		if f.chance(faults.ErrorRate) {
			status := faults.ErrorStatus
			if status == 0 {
				status = http.StatusInternalServerError
			}
			faultReply(status).write(w)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				nginxReply(http.StatusRequestEntityTooLarge).write(w)
				return
			}
			abort() // the client went away
		}

		now = f.opts.Clock.Now()
		c.mu.Lock()
		x := &exchange{r: r, body: body, now: now, state: c.powerState(now)}
		if x.state == PowerOff {
			c.mu.Unlock()
			abort()
		}
		c.advance(now)
		var rep reply
		if rt.auth {
			rep = c.authorize(x)
		}
		if rep.status == 0 {
			rep = rt.handle(c, x)
		}
		c.mu.Unlock()
		rep.write(w)
	})
}

// authorize checks the bearer token; a zero reply lets the request through.
// Callers hold c.mu.
func (c *Controller) authorize(x *exchange) reply {
	if c.rejectNext {
		c.rejectNext = false
		return errorReply(http.StatusUnauthorized, "No proper authentication was provided.")
	}
	token, ok := strings.CutPrefix(x.r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return errorReply(http.StatusUnauthorized, "No proper authentication was provided.")
	}
	u, serial, ok := c.verify(strings.TrimSpace(token), x.now)
	if !ok {
		return errorReply(http.StatusUnauthorized, "No proper authentication was provided.")
	}
	x.user, x.serial = u, serial
	c.noteAPIActivity(u, x.now)
	return reply{}
}

// --- authentication -------------------------------------------------------

func (c *Controller) checkCredentials(x *exchange) (user, reply) {
	var creds struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if json.Unmarshal(x.body, &creds) != nil || creds.Username == "" || creds.Password == "" {
		return user{}, validationReply([]string{"body"}, "missing", "username and password are required")
	}
	if creds.Username != c.admin.username || creds.Password != c.password {
		return user{}, errorReply(http.StatusForbidden, "Authentication failed!")
	}
	c.noteAPIActivity(c.admin, x.now)
	return c.admin, reply{}
}

func handleAuthenticate(c *Controller, x *exchange) reply {
	u, rep := c.checkCredentials(x)
	if rep.status != 0 {
		return rep
	}
	return jsonReply(http.StatusOK, c.issue(u, x.now))
}

func handleAuthExtended(c *Controller, x *exchange) reply {
	u, rep := c.checkCredentials(x)
	if rep.status != 0 {
		return rep
	}
	return jsonReply(http.StatusOK, map[string]any{
		"username": u.username, "id": u.id, "token": c.issue(u, x.now), "admin": u.admin,
	})
}

func handleLogout(c *Controller, x *exchange) reply {
	if all, _ := strconv.ParseBool(x.r.URL.Query().Get("clear_all_sessions")); all {
		c.minSerial = c.serial + 1
	} else {
		c.revoked[x.serial] = true
	}
	return jsonReply(http.StatusOK, true)
}

func handleGetSessionTimeout(c *Controller, _ *exchange) reply {
	return jsonReply(http.StatusOK, int64(c.ttl/time.Second))
}

func handleSetSessionTimeout(c *Controller, x *exchange) reply {
	seconds, err := strconv.Atoi(x.r.PathValue("seconds"))
	if err != nil || seconds < 1 {
		return validationReply([]string{"path", "seconds"}, "int_parsing", "a positive number of seconds is required")
	}
	c.ttl = time.Duration(seconds) * time.Second
	return jsonReply(http.StatusOK, "OK")
}

// --- system -----------------------------------------------------------------

func handleSystemInformation(c *Controller, x *exchange) reply {
	return jsonReply(http.StatusOK, map[string]any{
		"version": c.fleet.opts.Version, "ready": x.state == PowerReady,
		"allow_ssh_pubkey_auth": false, "oui": "52:54:00:00:00:00",
	})
}

func handleSystemHealth(c *Controller, x *exchange) reply {
	ready := x.state == PowerReady
	admission := "READY"
	if !ready {
		admission = "REGISTERED"
	}
	return jsonReply(http.StatusOK, map[string]any{
		"valid": ready, "is_licensed": c.license.registration == regCompleted, "is_enterprise": true,
		"computes": map[string]any{c.computeID: map[string]any{
			"kvm_vmx_enabled": true, "enough_cpus": true, "lld_connected": ready, "lld_synced": ready,
			"libvirt": true, "fabric": true, "device_mux": true, "refplat_images_available": true,
			"docker_shim": true, "valid": ready, "admission_state": admission, "is_controller": true,
			"hostname": "cml-controller",
		}},
		"controller": map[string]any{"core_connected": true, "nodes_loaded": true, "images_loaded": true, "valid": true},
	})
}

// Resources of the simulated controller (one compute).
const (
	computeCPUs   = 16
	computeMemory = 64 << 30
	computeDisk   = 250e9
)

func handleSystemStats(c *Controller, _ *exchange) reply {
	var total, running, cpus, ramMB int
	for _, id := range c.labOrder {
		for _, n := range c.labs[id].nodes {
			total++
			if n.state == nodeStarted || n.state == nodeBooted {
				running++
				cpus += n.cpus
				ramMB += n.ramMB
			}
		}
	}
	jitter := float64(c.rng.Uint64()%200) / 100
	cpuPercent := min(97, 2+4*float64(running)+jitter)
	memUsed := min(float64(3<<30)+float64(ramMB)*(1<<20), computeMemory)
	diskUsed := min(40e9+2e9*float64(total), computeDisk)
	round := func(v float64) float64 { return float64(int64(v*100)) / 100 }
	cpu := map[string]any{"count": computeCPUs, "percent": round(cpuPercent),
		"model": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "predicted": cpus,
		"load": []float64{round(cpuPercent / 25), round(cpuPercent / 30), round(cpuPercent / 35)}}
	memory := map[string]any{"used": bytesValue(memUsed), "free": bytesValue(computeMemory - memUsed), "total": bytesValue(computeMemory)}
	disk := map[string]any{"used": bytesValue(diskUsed), "free": bytesValue(computeDisk - diskUsed), "total": bytesValue(computeDisk)}
	return jsonReply(http.StatusOK, map[string]any{
		"computes": map[string]any{c.computeID: map[string]any{
			"hostname": "cml-controller", "is_controller": true,
			"stats": map[string]any{"cpu": cpu, "memory": memory, "disk": disk, "dominfo": map[string]any{
				"total_nodes": total, "total_orphans": 0, "running_nodes": running, "running_orphans": 0,
				"allocated_cpus": cpus, "allocated_memory": ramMB * 1024,
			}},
		}},
		"all":        map[string]any{"cpu": map[string]any{"count": computeCPUs, "percent": round(cpuPercent)}, "memory": memory, "disk": disk},
		"controller": map[string]any{"disk": disk},
	})
}

// --- licensing --------------------------------------------------------------

func (c *Controller) runningNodes() int {
	n := 0
	for _, id := range c.labOrder {
		for _, nd := range c.labs[id].nodes {
			if nd.state == nodeStarted || nd.state == nodeBooted {
				n++
			}
		}
	}
	return n
}

func handleLicensing(c *Controller, x *exchange) reply {
	return jsonReply(http.StatusOK, c.license.document(c, x.now, c.runningNodes()))
}

func handleRegister(c *Controller, x *exchange) reply {
	var body struct {
		Token      string `json:"token"`
		Reregister bool   `json:"reregister"`
	}
	if json.Unmarshal(x.body, &body) != nil || !licenseTokenPattern.MatchString(body.Token) {
		return validationReply([]string{"body", "token"}, "string_pattern_mismatch", "the token must match ^[a-zA-Z\\d+/%=-]{1,256}$")
	}
	if !c.license.register(body.Token, x.now, c.fleet.opts.LicenseDelay) {
		return errorReply(http.StatusConflict, "Registration cannot be requested at this time: a registration is in progress.")
	}
	c.advance(x.now) // a zero LicenseDelay completes at once
	return noContent()
}

func handleDeregister(c *Controller, _ *exchange) reply {
	switch c.license.registration {
	case regInProgress:
		return errorReply(http.StatusConflict, "Deregistration cannot be requested at this time: a registration is in progress.")
	case regNotRegistered:
		return errorReply(http.StatusBadRequest, "The Product has already been deregistered from Smart Software Licensing.")
	}
	c.license = license{registration: regNotRegistered, authorization: "EVAL"}
	if c.deregLocalOnly {
		return reply{status: http.StatusAccepted}
	}
	return noContent()
}

func handleRenew(c *Controller, _ *exchange) reply {
	if c.license.registration != regCompleted {
		return errorReply(http.StatusBadRequest, "The Product is not registered.")
	}
	return noContent()
}

// --- labs -------------------------------------------------------------------

func withLab(h func(c *Controller, x *exchange, l *lab) reply) func(*Controller, *exchange) reply {
	return func(c *Controller, x *exchange) reply {
		id := x.r.PathValue("lab_id")
		if !labIDPattern.MatchString(id) {
			return validationReply([]string{"path", "lab_id"}, "string_pattern_mismatch", "the lab id must be a UUID4")
		}
		l, ok := c.labs[id]
		if !ok {
			return errorReply(http.StatusNotFound, "Lab not found: "+id)
		}
		return h(c, x, l)
	}
}

func handleLabs(c *Controller, x *exchange) reply {
	all, _ := strconv.ParseBool(x.r.URL.Query().Get("show_all"))
	ids := make([]string, 0, len(c.labOrder))
	for _, id := range c.labOrder {
		if (all && x.user.admin) || c.labs[id].owner.id == x.user.id {
			ids = append(ids, id)
		}
	}
	return jsonReply(http.StatusOK, ids)
}

func handleLab(_ *Controller, _ *exchange, l *lab) reply {
	return jsonReply(http.StatusOK, map[string]any{
		"id": l.id, "created": l.created.UTC().Format(time.RFC3339), "modified": l.modified.UTC().Format(time.RFC3339),
		"lab_title": l.title, "lab_description": l.description, "lab_notes": l.notes,
		"owner": l.owner.id, "owner_username": l.owner.username, "owner_fullname": "",
		"state": l.state(), "node_count": len(l.nodes), "link_count": l.links,
		"groups": []any{}, "effective_permissions": []string{"lab_view", "lab_admin", "lab_exec", "lab_edit"},
	})
}

func handleStartLab(c *Controller, x *exchange, l *lab) reply {
	if x.state != PowerReady {
		return errorReply(http.StatusBadRequest, "Cannot start lab.")
	}
	c.startLab(l, x.user, x.now)
	return noContent()
}

func handleStopLab(c *Controller, x *exchange, l *lab) reply {
	c.stopLab(l, x.user, x.now)
	return noContent()
}

func handleWipeLab(c *Controller, x *exchange, l *lab) reply {
	if err := c.wipeLab(l, x.user, x.now); err != nil {
		return errorReply(http.StatusBadRequest, "The lab must be stopped before it can be wiped.")
	}
	return noContent()
}

func handleDeleteLab(c *Controller, _ *exchange, l *lab) reply {
	if err := c.deleteLab(l); err != nil {
		return errorReply(http.StatusBadRequest, "The lab must be stopped and wiped before it can be removed.")
	}
	return noContent()
}

func handleNodes(_ *Controller, x *exchange, l *lab) reply {
	data, _ := strconv.ParseBool(x.r.URL.Query().Get("data"))
	out := make([]any, 0, len(l.nodes))
	for _, n := range l.nodes {
		if !data {
			out = append(out, n.id)
			continue
		}
		progress := "Not running"
		switch n.state {
		case nodeQueued, nodeStarted:
			progress = "Booting"
		case nodeBooted:
			progress = "Booted"
		}
		out = append(out, map[string]any{"id": n.id, "lab_id": l.id, "label": n.label, "node_definition": n.definition,
			"cpus": n.cpus, "ram": n.ramMB, "state": n.state, "boot_progress": progress, "x": 0, "y": 0})
	}
	return jsonReply(http.StatusOK, out)
}

func handleImport(c *Controller, x *exchange) reply {
	title := x.r.URL.Query().Get("title")
	if len(title) > 64 {
		return validationReply([]string{"query", "title"}, "string_too_long", "the title has at most 64 characters")
	}
	t, err := parseTopology(x.body)
	if err != nil {
		return errorReply(http.StatusBadRequest, "Import failed: "+err.Error())
	}
	l := c.importLab(t, string(x.body), title, x.user, x.now)
	return jsonReply(http.StatusOK, map[string]any{"id": l.id, "warnings": []string{}})
}

func handleTelemetry(c *Controller, _ *exchange) reply {
	out := make([]any, len(c.events))
	for i, e := range c.events {
		out[i] = map[string]any{"category": e.Category, "timestamp": e.Timestamp.UTC().Format(telemetryTimeLayout), "data": e.Data}
	}
	return jsonReply(http.StatusOK, out)
}
