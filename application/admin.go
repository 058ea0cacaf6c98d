package application

import (
	"context"
	"errors"
	"regexp"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// ErrRebuildInProgress is returned (wrapped) when a rebuild of the same read
// model is already running, in this or another instance. The API answers 409.
var ErrRebuildInProgress = errors.New("a rebuild of this read model is already running")

// ProjectionAdmin operates the read models: it reports them and starts
// rebuilds, which run in the background.
type ProjectionAdmin interface {
	ProjectionMonitor
	// StartRebuild starts rebuilding the named read model and returns at
	// once with its state (running). An unknown name is domain.ErrNotFound;
	// a rebuild already running is ErrRebuildInProgress. by is the subject
	// of the admin who asked.
	StartRebuild(ctx context.Context, name, by string) (RebuildState, error)
}

// Admin answers the administration commands and queries.
type Admin struct {
	projections ProjectionAdmin
}

// NewAdmin builds the administration handlers. It panics when projections
// is nil (a wiring bug).
func NewAdmin(projections ProjectionAdmin) *Admin {
	if projections == nil {
		panic("application: NewAdmin needs a ProjectionAdmin")
	}
	return &Admin{projections: projections}
}

// projectionNameRE is the form of a read model's name.
var projectionNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Projections reports every read model with its checkpoint, runner, lag and
// rebuild state (admin).
func (a *Admin) Projections(ctx context.Context) ([]ProjectionStatus, error) {
	if _, err := rbac.Authorize(ctx, rbac.ProjectionsRebuild); err != nil {
		return nil, err
	}
	out, err := a.projections.ProjectionStatuses(ctx)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []ProjectionStatus{}
	}
	return out, nil
}

// RebuildProjection starts rebuilding a read model from the event log in the
// background; the old tables keep serving until the new ones are swapped in
// (admin).
func (a *Admin) RebuildProjection(ctx context.Context, name string) (RebuildState, error) {
	p, err := rbac.Authorize(ctx, rbac.ProjectionsRebuild)
	if err != nil {
		return RebuildState{}, err
	}
	if !projectionNameRE.MatchString(name) {
		var ps domain.Problems
		ps.Add("name", "%q is not a read model name", name)
		return RebuildState{}, ps.Err()
	}
	return a.projections.StartRebuild(ctx, name, p.Subject)
}
