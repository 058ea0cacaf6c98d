package projections

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// Manager runs one Runner per projection.
type Manager struct {
	projections []Projection
	runners     []*Runner
	byName      map[string]Projection
	err         error
}

// NewManager returns a manager of the given projections. Their names must be
// distinct and non-empty; otherwise Run fails at once.
func NewManager(store eventstore.Store, pool *pgxpool.Pool, projections []Projection, opts RunnerOptions) *Manager {
	m := &Manager{byName: make(map[string]Projection, len(projections))}
	var errs []error
	for _, p := range projections {
		name := p.Name()
		switch _, dup := m.byName[name]; {
		case name == "":
			errs = append(errs, fmt.Errorf("projection %T has an empty name", p))
			continue
		case dup:
			errs = append(errs, fmt.Errorf("two projections are named %q", name))
			continue
		}
		m.byName[name] = p
		m.projections = append(m.projections, p)
		m.runners = append(m.runners, NewRunner(store, pool, p, opts))
	}
	m.err = errors.Join(errs...)
	return m
}

// Run runs every runner concurrently until ctx ends, then returns nil once
// they have all stopped. It returns an error at once when the projections
// given to NewManager were invalid.
func (m *Manager) Run(ctx context.Context) error {
	if m.err != nil {
		return fmt.Errorf("projections: %w", m.err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, r := range m.runners {
		g.Go(func() error {
			if err := r.Run(gctx); err != nil {
				return fmt.Errorf("projection %s: %w", r.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Statuses returns the status of every runner, in the order the projections
// were given.
func (m *Manager) Statuses() []RunnerStatus {
	out := make([]RunnerStatus, len(m.runners))
	for i, r := range m.runners {
		out[i] = r.Status()
	}
	return out
}

// Ready reports whether every runner has caught up with the log (or stands
// by for another instance that leads its projection).
func (m *Manager) Ready() bool {
	if m.err != nil {
		return false
	}
	for _, r := range m.runners {
		if !r.Status().CaughtUp {
			return false
		}
	}
	return true
}

// Projection returns the projection named name.
func (m *Manager) Projection(name string) (Projection, bool) {
	p, ok := m.byName[name]
	return p, ok
}

// Projections returns the managed projections, in the order given.
func (m *Manager) Projections() []Projection {
	return append([]Projection(nil), m.projections...)
}
