// Package rbac holds the caller's identity (Principal), the roles, and the
// access policy of DESIGN.md section 8. The policy is one table, Policy, used
// by the application handlers to authorise every command and query, and by
// the API documentation; the UI's hiding of buttons is only a convenience.
package rbac

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Role is a role a principal may hold.
type Role string

// Roles. Admin includes manager, which includes user. Auditor reads
// everything plus history; integrator reads the domain stream and workers.
// System is the product's own background jobs; it is never taken from a token
// or an accounts file.
const (
	RoleAdmin      Role = "admin"
	RoleManager    Role = "manager"
	RoleUser       Role = "user"
	RoleAuditor    Role = "auditor"
	RoleIntegrator Role = "integrator"
	RoleSystem     Role = "system"
)

// ExternalRoles are the roles an identity provider or accounts file may grant.
var ExternalRoles = []Role{RoleAdmin, RoleManager, RoleUser, RoleAuditor, RoleIntegrator}

// ParseRole returns the role for an external role name; ok is false for names
// that are not ours (identity providers add their own, such as
// offline_access), which are ignored, and for "system".
func ParseRole(s string) (Role, bool) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	return r, slices.Contains(ExternalRoles, r)
}

// Principal is who is calling.
type Principal struct {
	Subject    string
	Username   string
	Roles      []Role
	Department string
}

// System returns the principal of a background job.
func System(job string) Principal {
	return Principal{Subject: "system:" + job, Username: "system:" + job, Roles: []Role{RoleSystem}}
}

// IsSystem reports whether the principal is a background job.
func (p Principal) IsSystem() bool { return p.hasExact(RoleSystem) }

func (p Principal) hasExact(r Role) bool { return slices.Contains(p.Roles, r) }

// Has reports whether the principal holds the role, directly or through the
// hierarchy admin ⊇ manager ⊇ user.
func (p Principal) Has(r Role) bool {
	switch r {
	case RoleUser:
		return p.hasExact(RoleUser) || p.hasExact(RoleManager) || p.hasExact(RoleAdmin)
	case RoleManager:
		return p.hasExact(RoleManager) || p.hasExact(RoleAdmin)
	default:
		return p.hasExact(r)
	}
}

// Action is something a principal may be allowed to do.
type Action string

// Actions, one per command and query of the application.
const (
	WorkersRead         Action = "workers.read"          // list and get workers
	WorkerCreate        Action = "worker.create"         // POST /api/workers
	WorkerImport        Action = "worker.import"         // POST /api/workers/import
	WorkerTerminate     Action = "worker.terminate"      // POST .../terminate
	WorkerRemove        Action = "worker.remove"         // DELETE /api/workers/{id}
	WorkerStart         Action = "worker.start"          // POST .../start
	WorkerStop          Action = "worker.stop"           // POST .../stop
	WorkerTags          Action = "worker.tags"           // PUT .../tags
	WorkerRefresh       Action = "worker.refresh"        // POST .../refresh
	WorkerMonitoring    Action = "worker.monitoring"     // PUT .../monitoring
	WorkerIdleDetection Action = "worker.idle_detection" // PUT .../idle-detection
	WorkerLicense       Action = "worker.license"        // POST/DELETE .../license
	WorkerObserve       Action = "worker.observe"        // metrics, idle-status, labs, lab download
	WorkerLabsManage    Action = "worker.labs.manage"    // lab import, start, stop, wipe, delete
	WorkerHistory       Action = "worker.history"        // history and time travel
	WorkerRecord        Action = "worker.record"         // outcomes and observations recorded by jobs
	AuditRead           Action = "audit.read"            // GET /api/audit
	SystemRead          Action = "system.read"           // health, jobs
	SystemJobsRun       Action = "system.jobs.run"       // POST /api/system/jobs/{kind}/run
	SettingsRead        Action = "settings.read"         // GET /api/settings
	SettingsUpdate      Action = "settings.update"       // PUT /api/settings
	ProjectionsRebuild  Action = "projections.rebuild"   // POST /api/admin/projections/{name}/rebuild
	TasksRead           Action = "tasks.read"            // GET /api/tasks (scoped per role)
	TaskCreate          Action = "task.create"           // POST /api/tasks
	TaskUpdate          Action = "task.update"           // PUT /api/tasks/{id} (admin or assignee)
	TaskDelete          Action = "task.delete"           // DELETE /api/tasks/{id} (admin, or manager of the department)
	EventsStream        Action = "events.stream"         // dashboard SSE
	EventsDomain        Action = "events.domain"         // integrator SSE
)

var (
	adminOnly   = []Role{RoleAdmin}
	managerPlus = []Role{RoleManager}
	userPlus    = []Role{RoleUser}
	readers     = []Role{RoleUser, RoleAuditor}
	historians  = []Role{RoleAdmin, RoleAuditor}
)

// Policy maps every action to the roles that may perform it. Hierarchy
// applies: listing RoleUser admits managers and admins too.
var Policy = map[Action][]Role{
	WorkersRead:         {RoleUser, RoleAuditor, RoleIntegrator},
	WorkerCreate:        adminOnly,
	WorkerImport:        adminOnly,
	WorkerTerminate:     adminOnly,
	WorkerRemove:        adminOnly,
	WorkerStart:         managerPlus,
	WorkerStop:          managerPlus,
	WorkerTags:          managerPlus,
	WorkerRefresh:       userPlus,
	WorkerMonitoring:    adminOnly,
	WorkerIdleDetection: adminOnly,
	WorkerLicense:       adminOnly,
	WorkerObserve:       readers,
	WorkerLabsManage:    managerPlus,
	WorkerHistory:       historians,
	WorkerRecord:        {RoleSystem},
	AuditRead:           historians,
	SystemRead:          readers,
	SystemJobsRun:       adminOnly,
	SettingsRead:        historians,
	SettingsUpdate:      adminOnly,
	ProjectionsRebuild:  adminOnly,
	TasksRead:           readers,
	TaskCreate:          userPlus,
	TaskUpdate:          userPlus,
	TaskDelete:          managerPlus,
	EventsStream:        {RoleUser, RoleAuditor, RoleIntegrator}, // every role that may read workers (WorkersRead)
	EventsDomain:        {RoleIntegrator, RoleAdmin},
}

// Actions returns every action of the policy, sorted.
func Actions() []Action {
	out := make([]Action, 0, len(Policy))
	for a := range Policy {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// Errors returned by Authorize.
var (
	ErrUnauthenticated = errors.New("authentication required")
	ErrForbidden       = errors.New("forbidden")
)

// ForbiddenError names the action that was refused. It matches ErrForbidden.
type ForbiddenError struct {
	Action Action
	Reason string
}

func (e *ForbiddenError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s is not allowed: %s", e.Action, e.Reason)
	}
	return fmt.Sprintf("%s is not allowed for your roles", e.Action)
}

// Is makes errors.Is(err, ErrForbidden) true.
func (e *ForbiddenError) Is(target error) bool { return target == ErrForbidden }

// Allowed reports whether the principal may perform the action.
func Allowed(p Principal, a Action) bool {
	for _, r := range Policy[a] {
		if p.Has(r) {
			return true
		}
	}
	return false
}

// Authorize returns nil when the principal in ctx may perform the action,
// ErrUnauthenticated when ctx holds no principal, and a *ForbiddenError
// otherwise. It returns the principal for the handler's own use.
func Authorize(ctx context.Context, a Action) (Principal, error) {
	p, ok := FromContext(ctx)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	if _, known := Policy[a]; !known {
		return p, &ForbiddenError{Action: a, Reason: "unknown action"}
	}
	if !Allowed(p, a) {
		return p, &ForbiddenError{Action: a}
	}
	return p, nil
}

type principalKey struct{}

// WithPrincipal returns a context carrying the principal.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal carried by ctx.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
