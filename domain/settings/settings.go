// Package settings is the runtime-settings aggregate (stream settings-global):
// the values admins change in the UI — provisioning defaults, idle detection,
// poll intervals.
//
// Precedence (DESIGN.md section 12): a value an admin explicitly saved wins
// over the environment; a value never saved always follows the environment,
// even when the environment changes later. The aggregate therefore stores only
// the saved values, never a copy of the defaults.
package settings

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// StreamName is the single settings stream.
const StreamName = "settings-global"

// Key names a setting; it is also the JSON field name.
type Key string

// Setting keys.
const (
	KeyAMIIDs                Key = "ami_ids"
	KeyAMIName               Key = "ami_name"
	KeyInstanceType          Key = "instance_type"
	KeySubnetID              Key = "subnet_id"
	KeySecurityGroupIDs      Key = "security_group_ids"
	KeyKeyName               Key = "key_name"
	KeyDefaultTags           Key = "default_tags"
	KeyIdleDetectionEnabled  Key = "idle_detection_enabled"
	KeyIdleTimeoutSeconds    Key = "idle_timeout_seconds"
	KeyIdleSnoozeSeconds     Key = "idle_snooze_seconds"
	KeyFleetReconcileSeconds Key = "fleet_reconcile_interval_seconds"
	KeyFleetMetricsSeconds   Key = "fleet_metrics_interval_seconds"
	KeyLabsSyncSeconds       Key = "labs_sync_interval_seconds"
	KeyIdleCheckSeconds      Key = "idle_check_interval_seconds"
)

// Keys lists every setting.
var Keys = []Key{
	KeyAMIIDs, KeyAMIName, KeyInstanceType, KeySubnetID, KeySecurityGroupIDs, KeyKeyName, KeyDefaultTags,
	KeyIdleDetectionEnabled, KeyIdleTimeoutSeconds, KeyIdleSnoozeSeconds,
	KeyFleetReconcileSeconds, KeyFleetMetricsSeconds, KeyLabsSyncSeconds, KeyIdleCheckSeconds,
}

// Bounds of the poll intervals and the snooze.
const (
	MinInterval = 10 * time.Second
	MaxInterval = 24 * time.Hour
	MaxSnooze   = 24 * time.Hour
)

// Values is a complete set of effective settings.
type Values struct {
	AMIIDs                map[string]string `json:"ami_ids"`
	AMIName               string            `json:"ami_name"`
	InstanceType          string            `json:"instance_type"`
	SubnetID              string            `json:"subnet_id"`
	SecurityGroupIDs      []string          `json:"security_group_ids"`
	KeyName               string            `json:"key_name"`
	DefaultTags           map[string]string `json:"default_tags"`
	IdleDetectionEnabled  bool              `json:"idle_detection_enabled"`
	IdleTimeoutSeconds    int64             `json:"idle_timeout_seconds"`
	IdleSnoozeSeconds     int64             `json:"idle_snooze_seconds"`
	FleetReconcileSeconds int64             `json:"fleet_reconcile_interval_seconds"`
	FleetMetricsSeconds   int64             `json:"fleet_metrics_interval_seconds"`
	LabsSyncSeconds       int64             `json:"labs_sync_interval_seconds"`
	IdleCheckSeconds      int64             `json:"idle_check_interval_seconds"`
}

// Patch holds some settings: a nil field is absent.
type Patch struct {
	AMIIDs                *map[string]string `json:"ami_ids,omitempty"`
	AMIName               *string            `json:"ami_name,omitempty"`
	InstanceType          *string            `json:"instance_type,omitempty"`
	SubnetID              *string            `json:"subnet_id,omitempty"`
	SecurityGroupIDs      *[]string          `json:"security_group_ids,omitempty"`
	KeyName               *string            `json:"key_name,omitempty"`
	DefaultTags           *map[string]string `json:"default_tags,omitempty"`
	IdleDetectionEnabled  *bool              `json:"idle_detection_enabled,omitempty"`
	IdleTimeoutSeconds    *int64             `json:"idle_timeout_seconds,omitempty"`
	IdleSnoozeSeconds     *int64             `json:"idle_snooze_seconds,omitempty"`
	FleetReconcileSeconds *int64             `json:"fleet_reconcile_interval_seconds,omitempty"`
	FleetMetricsSeconds   *int64             `json:"fleet_metrics_interval_seconds,omitempty"`
	LabsSyncSeconds       *int64             `json:"labs_sync_interval_seconds,omitempty"`
	IdleCheckSeconds      *int64             `json:"idle_check_interval_seconds,omitempty"`
}

// field gives uniform access to one setting of a Patch and of Values.
type field struct {
	key   Key
	isSet func(p Patch) bool
	clear func(p *Patch)
	copy  func(dst *Patch, src Patch) // copies src's value into dst
	equal func(a, b Patch) bool       // both set and equal
	apply func(v *Values, p Patch)    // overlays p's value on v
	check func(ps *domain.Problems, p Patch)
}

func ptrField[T any](key Key, get func(*Patch) **T, val func(*Values) *T, eq func(a, b T) bool, check func(*domain.Problems, Key, T)) field {
	return field{
		key:   key,
		isSet: func(p Patch) bool { return *get(&p) != nil },
		clear: func(p *Patch) { *get(p) = nil },
		copy: func(dst *Patch, src Patch) {
			v := clone(**get(&src))
			*get(dst) = &v
		},
		equal: func(a, b Patch) bool {
			pa, pb := *get(&a), *get(&b)
			return pa != nil && pb != nil && eq(*pa, *pb)
		},
		apply: func(v *Values, p Patch) {
			if pv := *get(&p); pv != nil {
				*val(v) = clone(*pv)
			}
		},
		check: func(ps *domain.Problems, p Patch) {
			if pv := *get(&p); pv != nil && check != nil {
				check(ps, key, *pv)
			}
		},
	}
}

// clone copies maps and slices so that patches never share storage.
func clone[T any](v T) T {
	switch x := any(v).(type) {
	case map[string]string:
		return any(maps.Clone(x)).(T)
	case []string:
		return any(slices.Clone(x)).(T)
	}
	return v
}

func eqComparable[T comparable](a, b T) bool { return a == b }

var fields = []field{
	ptrField(KeyAMIIDs, func(p *Patch) **map[string]string { return &p.AMIIDs }, func(v *Values) *map[string]string { return &v.AMIIDs },
		func(a, b map[string]string) bool { return maps.Equal(a, b) }, checkAMIIDs),
	ptrField(KeyAMIName, func(p *Patch) **string { return &p.AMIName }, func(v *Values) *string { return &v.AMIName }, eqComparable[string],
		func(ps *domain.Problems, k Key, s string) {
			if len(s) > 128 {
				ps.Add(string(k), "is longer than 128 characters")
			}
		}),
	ptrField(KeyInstanceType, func(p *Patch) **string { return &p.InstanceType }, func(v *Values) *string { return &v.InstanceType }, eqComparable[string],
		func(ps *domain.Problems, k Key, s string) {
			if !worker.ValidInstanceType(s) {
				ps.Add(string(k), "%q is not an EC2 instance type", s)
			}
		}),
	ptrField(KeySubnetID, func(p *Patch) **string { return &p.SubnetID }, func(v *Values) *string { return &v.SubnetID }, eqComparable[string],
		func(ps *domain.Problems, k Key, s string) {
			if s != "" && !worker.ValidSubnetID(s) {
				ps.Add(string(k), "%q is not a subnet id", s)
			}
		}),
	ptrField(KeySecurityGroupIDs, func(p *Patch) **[]string { return &p.SecurityGroupIDs }, func(v *Values) *[]string { return &v.SecurityGroupIDs },
		func(a, b []string) bool { return slices.Equal(a, b) },
		func(ps *domain.Problems, k Key, ids []string) {
			for _, id := range ids {
				if !worker.ValidSecurityGroupID(id) {
					ps.Add(string(k), "%q is not a security group id", id)
				}
			}
		}),
	ptrField(KeyKeyName, func(p *Patch) **string { return &p.KeyName }, func(v *Values) *string { return &v.KeyName }, eqComparable[string],
		func(ps *domain.Problems, k Key, s string) {
			if len(s) > 255 {
				ps.Add(string(k), "is longer than 255 characters")
			}
		}),
	ptrField(KeyDefaultTags, func(p *Patch) **map[string]string { return &p.DefaultTags }, func(v *Values) *map[string]string { return &v.DefaultTags },
		func(a, b map[string]string) bool { return maps.Equal(a, b) },
		func(ps *domain.Problems, k Key, tags map[string]string) { worker.CheckTags(ps, string(k), tags) }),
	ptrField(KeyIdleDetectionEnabled, func(p *Patch) **bool { return &p.IdleDetectionEnabled }, func(v *Values) *bool { return &v.IdleDetectionEnabled }, eqComparable[bool], nil),
	ptrField(KeyIdleTimeoutSeconds, func(p *Patch) **int64 { return &p.IdleTimeoutSeconds }, func(v *Values) *int64 { return &v.IdleTimeoutSeconds }, eqComparable[int64],
		checkSeconds(worker.MinIdleTimeout, worker.MaxIdleTimeout)),
	ptrField(KeyIdleSnoozeSeconds, func(p *Patch) **int64 { return &p.IdleSnoozeSeconds }, func(v *Values) *int64 { return &v.IdleSnoozeSeconds }, eqComparable[int64],
		checkSeconds(0, MaxSnooze)),
	ptrField(KeyFleetReconcileSeconds, func(p *Patch) **int64 { return &p.FleetReconcileSeconds }, func(v *Values) *int64 { return &v.FleetReconcileSeconds }, eqComparable[int64],
		checkSeconds(MinInterval, MaxInterval)),
	ptrField(KeyFleetMetricsSeconds, func(p *Patch) **int64 { return &p.FleetMetricsSeconds }, func(v *Values) *int64 { return &v.FleetMetricsSeconds }, eqComparable[int64],
		checkSeconds(MinInterval, MaxInterval)),
	ptrField(KeyLabsSyncSeconds, func(p *Patch) **int64 { return &p.LabsSyncSeconds }, func(v *Values) *int64 { return &v.LabsSyncSeconds }, eqComparable[int64],
		checkSeconds(MinInterval, MaxInterval)),
	ptrField(KeyIdleCheckSeconds, func(p *Patch) **int64 { return &p.IdleCheckSeconds }, func(v *Values) *int64 { return &v.IdleCheckSeconds }, eqComparable[int64],
		checkSeconds(MinInterval, MaxInterval)),
}

func checkSeconds(min, max time.Duration) func(*domain.Problems, Key, int64) {
	return func(ps *domain.Problems, k Key, secs int64) {
		if secs < int64(min/time.Second) || secs > int64(max/time.Second) {
			ps.Add(string(k), "must be between %d and %d seconds", int64(min/time.Second), int64(max/time.Second))
		}
	}
}

func checkAMIIDs(ps *domain.Problems, k Key, ids map[string]string) {
	for region, ami := range ids {
		if !worker.ValidRegion(region) {
			ps.Add(string(k), "%q is not an AWS region name", region)
		}
		if !worker.ValidAMIID(ami) {
			ps.Add(string(k), "%q (for %s) is not an AMI id", ami, region)
		}
	}
}

func fieldFor(k Key) (field, bool) {
	for _, f := range fields {
		if f.key == k {
			return f, true
		}
	}
	return field{}, false
}

// Validate reports every problem in the patch's set values.
func (p Patch) Validate() error {
	var ps domain.Problems
	for _, f := range fields {
		f.check(&ps, p)
	}
	return ps.Err()
}

// SetKeys lists the keys the patch sets.
func (p Patch) SetKeys() []Key {
	var keys []Key
	for _, f := range fields {
		if f.isSet(p) {
			keys = append(keys, f.key)
		}
	}
	return keys
}

// IsEmpty reports whether the patch sets nothing.
func (p Patch) IsEmpty() bool { return len(p.SetKeys()) == 0 }

// Changed records saved settings: Set holds newly saved values, Cleared the
// keys whose saved value was removed (they follow the environment again).
type Changed struct {
	Set     Patch `json:"set"`
	Cleared []Key `json:"cleared,omitempty"`
}

// EventType implements domain.Event.
func (Changed) EventType() string { return "settings.changed.v1" }

// Events returns the settings event prototypes for the registry.
func Events() []domain.Event { return []domain.Event{Changed{}} }

// Settings is the aggregate: the saved values only.
type Settings struct {
	saved     Patch
	version   int64
	updatedAt time.Time
}

// New returns settings with nothing saved.
func New() *Settings { return &Settings{version: -1} }

// FromSaved rebuilds the aggregate from stored saved values (read model).
func FromSaved(saved Patch, version int64) *Settings {
	s := &Settings{version: version}
	for _, f := range fields {
		if f.isSet(saved) {
			f.copy(&s.saved, saved)
		}
	}
	return s
}

// Version is the revision of the last applied event, -1 when none.
func (s *Settings) Version() int64 { return s.version }

// Saved returns a copy of the explicitly saved values.
func (s *Settings) Saved() Patch {
	var out Patch
	for _, f := range fields {
		if f.isSet(s.saved) {
			f.copy(&out, s.saved)
		}
	}
	return out
}

// UpdatedAt is when the settings last changed.
func (s *Settings) UpdatedAt() time.Time { return s.updatedAt }

// Update saves the values set in the patch and forgets the saved values of
// the cleared keys. Only real changes are recorded; no change, no event.
func (s *Settings) Update(set Patch, clear []Key) ([]domain.Event, error) {
	var ps domain.Problems
	for _, f := range fields {
		f.check(&ps, set)
	}
	seen := map[Key]bool{}
	for _, k := range clear {
		f, ok := fieldFor(k)
		switch {
		case !ok:
			ps.Add("clear", "unknown setting %q", k)
		case f.isSet(set):
			ps.Add("clear", "%q is both set and cleared", k)
		case seen[k]:
			ps.Add("clear", "%q is listed twice", k)
		}
		seen[k] = true
	}
	if err := ps.Err(); err != nil {
		return nil, err
	}
	var ev Changed
	for _, f := range fields {
		if f.isSet(set) && !f.equal(set, s.saved) {
			f.copy(&ev.Set, set)
		}
	}
	for _, k := range clear {
		if f, _ := fieldFor(k); f.isSet(s.saved) {
			ev.Cleared = append(ev.Cleared, k)
		}
	}
	if ev.Set.IsEmpty() && len(ev.Cleared) == 0 {
		return nil, nil
	}
	return []domain.Event{ev}, nil
}

// Apply evolves the saved values.
func (s *Settings) Apply(e domain.Event, at time.Time) error {
	ev, ok := e.(Changed)
	if !ok {
		return fmt.Errorf("settings: cannot apply %T", e)
	}
	for _, f := range fields {
		if f.isSet(ev.Set) {
			f.copy(&s.saved, ev.Set)
		}
	}
	for _, k := range ev.Cleared {
		if f, ok := fieldFor(k); ok {
			f.clear(&s.saved)
		}
	}
	s.version++
	s.updatedAt = at
	return nil
}

// Source says where an effective value comes from.
type Source string

// Sources of an effective value.
const (
	SourceSaved       Source = "saved"
	SourceEnvironment Source = "environment"
)

// Effective overlays the saved values on the environment defaults and says
// where each value came from.
func Effective(defaults Values, saved Patch) (Values, map[Key]Source) {
	v := defaults
	v.AMIIDs, v.DefaultTags = maps.Clone(defaults.AMIIDs), maps.Clone(defaults.DefaultTags)
	v.SecurityGroupIDs = slices.Clone(defaults.SecurityGroupIDs)
	sources := make(map[Key]Source, len(fields))
	for _, f := range fields {
		sources[f.key] = SourceEnvironment
		if f.isSet(saved) {
			f.apply(&v, saved)
			sources[f.key] = SourceSaved
		}
	}
	if v.AMIIDs == nil {
		v.AMIIDs = map[string]string{}
	}
	if v.DefaultTags == nil {
		v.DefaultTags = map[string]string{}
	}
	if v.SecurityGroupIDs == nil {
		v.SecurityGroupIDs = []string{}
	}
	return v, sources
}

// IdlePolicy returns the idle rule's inputs from effective values.
func (v Values) IdlePolicy() worker.IdlePolicy {
	return worker.IdlePolicy{
		Enabled: v.IdleDetectionEnabled,
		Timeout: time.Duration(v.IdleTimeoutSeconds) * time.Second,
		Snooze:  time.Duration(v.IdleSnoozeSeconds) * time.Second,
	}
}
