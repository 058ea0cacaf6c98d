package application

import (
	"context"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
)

// SettingsView is the runtime settings as an admin sees them: the effective
// values, where each comes from, and what was explicitly saved.
type SettingsView struct {
	Effective settings.Values                  `json:"effective"`
	Sources   map[settings.Key]settings.Source `json:"sources"`
	Saved     settings.Patch                   `json:"saved"`
	UpdatedAt time.Time                        `json:"updated_at,omitzero"`
	UpdatedBy *Actor                           `json:"updated_by,omitempty"`
}

// GetSettings returns the runtime settings (admin, auditor).
func (a *App) GetSettings(ctx context.Context) (SettingsView, error) {
	if _, err := rbac.Authorize(ctx, rbac.SettingsRead); err != nil {
		return SettingsView{}, err
	}
	saved, at, by, err := a.opts.Settings.SavedSettings(ctx)
	if err != nil {
		return SettingsView{}, err
	}
	eff, sources := settings.Effective(a.opts.Defaults, saved)
	v := SettingsView{Effective: eff, Sources: sources, Saved: saved, UpdatedAt: at}
	if by.Subject != "" {
		v.UpdatedBy = &by
	}
	return v, nil
}

// UpdateSettings saves the values set in the patch and clears the saved
// values of the listed keys, which then follow the environment again (admin).
func (a *App) UpdateSettings(ctx context.Context, set settings.Patch, clear []settings.Key) (Result, error) {
	p, err := rbac.Authorize(ctx, rbac.SettingsUpdate)
	if err != nil {
		return Result{}, err
	}
	saved, err := a.settingsR.Update(ctx, settings.StreamName, a.metadata(ctx, p, "settings.update"), func(s *settings.Settings) ([]domain.Event, error) {
		return s.Update(set, clear)
	})
	if err != nil {
		return Result{}, err
	}
	return result(settings.StreamName, saved), nil
}
