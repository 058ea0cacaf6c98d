package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
)

// SettingsView builds settings_view: the explicitly saved runtime settings,
// folded with the aggregate's own Apply.
type SettingsView struct {
	registry *domain.Registry
}

var _ = registerProjection(func(r *domain.Registry) Projection { return NewSettingsView(r) })

// NewSettingsView returns the settings_view projection.
func NewSettingsView(registry *domain.Registry) *SettingsView {
	return &SettingsView{registry: registry}
}

// Name implements Projection.
func (*SettingsView) Name() string { return "settings_view" }

// Filter implements Projection.
func (*SettingsView) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{settings.StreamName}}
}

// Tables implements Projection.
func (*SettingsView) Tables() []string { return []string{"settings_view"} }

// Apply implements Projection.
func (p *SettingsView) Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	var (
		saved     []byte
		rev       int64 = -1
		updatedBy application.Actor
		updatedAt time.Time
	)
	err := tx.QueryRow(ctx, `SELECT saved, revision FROM `+t.Ident("settings_view")+` WHERE id = 1`).Scan(&saved, &rev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("settings_view: load: %w", err)
	}
	s := settings.New()
	if saved != nil {
		var patch settings.Patch
		if err := json.Unmarshal(saved, &patch); err != nil {
			return nil, fmt.Errorf("settings_view: decode saved settings: %w", err)
		}
		s = settings.FromSaved(patch, rev)
	}
	changed := false
	for _, rec := range batch {
		if rec.Stream != settings.StreamName || int64(rec.Revision) <= s.Version() {
			continue
		}
		e, at, err := application.Decode(p.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("settings_view: %w", err)
		}
		if err := s.Apply(e, at); err != nil {
			return nil, fmt.Errorf("settings_view: %w", err)
		}
		if m, err := application.ParseMetadata(rec.Metadata); err == nil {
			updatedBy = m.Actor
		}
		updatedAt, changed = at, true
	}
	if !changed {
		return nil, nil
	}
	out, err := json.Marshal(s.Saved())
	if err != nil {
		return nil, fmt.Errorf("settings_view: encode: %w", err)
	}
	by, err := json.Marshal(updatedBy)
	if err != nil {
		return nil, fmt.Errorf("settings_view: encode actor: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO `+t.Ident("settings_view")+` (id, saved, revision, updated_at, updated_by)
		VALUES (1, $1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET saved = excluded.saved, revision = excluded.revision,
			updated_at = excluded.updated_at, updated_by = excluded.updated_by`,
		string(out), s.Version(), updatedAt, string(by))
	if err != nil {
		return nil, fmt.Errorf("settings_view: write: %w", err)
	}
	return []string{"global"}, nil
}

// SettingsReader answers queries from settings_view. It implements
// application.SettingsReadModel.
type SettingsReader struct {
	pool *pgxpool.Pool
}

var _ application.SettingsReadModel = (*SettingsReader)(nil)

// NewSettingsReader returns a reader of settings_view.
func NewSettingsReader(pool *pgxpool.Pool) *SettingsReader { return &SettingsReader{pool: pool} }

// SavedSettings implements application.SettingsReadModel. With nothing saved
// it returns an empty patch.
func (r *SettingsReader) SavedSettings(ctx context.Context) (settings.Patch, time.Time, application.Actor, error) {
	var (
		patch     settings.Patch
		actor     application.Actor
		saved, by []byte
		at        time.Time
	)
	err := r.pool.QueryRow(ctx, `SELECT saved, updated_at, updated_by FROM settings_view WHERE id = 1`).Scan(&saved, &at, &by)
	if errors.Is(err, pgx.ErrNoRows) {
		return patch, time.Time{}, actor, nil
	}
	if err != nil {
		return patch, time.Time{}, actor, fmt.Errorf("read settings: %w", err)
	}
	if err := json.Unmarshal(saved, &patch); err != nil {
		return patch, time.Time{}, actor, fmt.Errorf("decode settings: %w", err)
	}
	_ = json.Unmarshal(by, &actor)
	return patch, at, actor, nil
}
