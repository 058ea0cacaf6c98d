package settings_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

const (
	amiEU = "ami-0a1b2c3d4e5f67890"
	amiUS = "ami-0123456789abcdef0"
	sgA   = "sg-0123456789abcdef0"
	sgB   = "sg-0fedcba9876543210"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// saved returns settings with the patches saved one after the other.
func saved(t *testing.T, patches ...settings.Patch) *settings.Settings {
	t.Helper()
	s := settings.New()
	for i, p := range patches {
		events, err := s.Update(p, nil)
		require.NoError(t, err)
		for _, e := range events {
			require.NoError(t, s.Apply(e, t0.Add(time.Duration(i)*time.Minute)))
		}
	}
	return s
}

func problems(t *testing.T, err error) []domain.Problem {
	t.Helper()
	require.ErrorIs(t, err, domain.ErrInvalid)
	var ve *domain.ValidationError
	require.ErrorAs(t, err, &ve)
	return ve.Problems
}

func TestUpdateRecordsOnlyRealChanges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given []settings.Patch
		set   settings.Patch
		clear []settings.Key
		then  []domain.Event
	}{
		{
			name: "first save",
			set:  settings.Patch{IdleTimeoutSeconds: ptr(int64(3600))},
			then: []domain.Event{settings.Changed{Set: settings.Patch{IdleTimeoutSeconds: ptr(int64(3600))}}},
		},
		{
			name:  "same value again",
			given: []settings.Patch{{IdleTimeoutSeconds: ptr(int64(3600))}},
			set:   settings.Patch{IdleTimeoutSeconds: ptr(int64(3600))},
		},
		{
			name:  "one value the same, one new",
			given: []settings.Patch{{IdleTimeoutSeconds: ptr(int64(3600))}},
			set:   settings.Patch{IdleTimeoutSeconds: ptr(int64(3600)), IdleSnoozeSeconds: ptr(int64(900))},
			then:  []domain.Event{settings.Changed{Set: settings.Patch{IdleSnoozeSeconds: ptr(int64(900))}}},
		},
		{
			name:  "equal map, other instance",
			given: []settings.Patch{{AMIIDs: ptr(map[string]string{"eu-west-1": amiEU, "us-east-1": amiUS})}},
			set:   settings.Patch{AMIIDs: ptr(map[string]string{"us-east-1": amiUS, "eu-west-1": amiEU})},
		},
		{
			name:  "map changed",
			given: []settings.Patch{{AMIIDs: ptr(map[string]string{"eu-west-1": amiEU})}},
			set:   settings.Patch{AMIIDs: ptr(map[string]string{"eu-west-1": amiUS})},
			then:  []domain.Event{settings.Changed{Set: settings.Patch{AMIIDs: ptr(map[string]string{"eu-west-1": amiUS})}}},
		},
		{
			name:  "equal list",
			given: []settings.Patch{{SecurityGroupIDs: ptr([]string{sgA, sgB})}},
			set:   settings.Patch{SecurityGroupIDs: ptr([]string{sgA, sgB})},
		},
		{
			name:  "equal tags and string",
			given: []settings.Patch{{DefaultTags: ptr(map[string]string{"team": "netops"}), InstanceType: ptr("c5.2xlarge")}},
			set:   settings.Patch{DefaultTags: ptr(map[string]string{"team": "netops"}), InstanceType: ptr("c5.2xlarge")},
		},
		{
			// Saving false is a change although the environment may say the
			// same: from now on the saved value wins.
			name: "explicit false over an unsaved value",
			set:  settings.Patch{IdleDetectionEnabled: ptr(false)},
			then: []domain.Event{settings.Changed{Set: settings.Patch{IdleDetectionEnabled: ptr(false)}}},
		},
		{
			name:  "clearing a never-saved key",
			clear: []settings.Key{settings.KeyIdleTimeoutSeconds},
		},
		{
			name:  "clearing a saved key",
			given: []settings.Patch{{IdleTimeoutSeconds: ptr(int64(3600))}},
			clear: []settings.Key{settings.KeyIdleTimeoutSeconds},
			then:  []domain.Event{settings.Changed{Cleared: []settings.Key{settings.KeyIdleTimeoutSeconds}}},
		},
		{
			name:  "clearing a saved and a never-saved key",
			given: []settings.Patch{{AMIName: ptr("cml-2.9.0")}},
			clear: []settings.Key{settings.KeyKeyName, settings.KeyAMIName},
			then:  []domain.Event{settings.Changed{Cleared: []settings.Key{settings.KeyAMIName}}},
		},
		{
			name:  "setting one key and clearing another",
			given: []settings.Patch{{IdleTimeoutSeconds: ptr(int64(3600))}},
			set:   settings.Patch{IdleSnoozeSeconds: ptr(int64(0))},
			clear: []settings.Key{settings.KeyIdleTimeoutSeconds},
			then: []domain.Event{settings.Changed{
				Set:     settings.Patch{IdleSnoozeSeconds: ptr(int64(0))},
				Cleared: []settings.Key{settings.KeyIdleTimeoutSeconds},
			}},
		},
		{
			name: "nothing at all",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := saved(t, tt.given...)
			before := s.Saved()

			events, err := s.Update(tt.set, tt.clear)

			require.NoError(t, err)
			assert.Equal(t, tt.then, events)
			assert.Equal(t, before, s.Saved(), "Update does not change the aggregate")
			if len(events) > 0 {
				version := s.Version()
				require.NoError(t, s.Apply(events[0], t0.Add(time.Hour)))
				assert.Equal(t, version+1, s.Version())
				assert.Equal(t, t0.Add(time.Hour), s.UpdatedAt())
				again, err := s.Update(tt.set, tt.clear)
				require.NoError(t, err)
				assert.Empty(t, again, "the same update again changes nothing")
			}
		})
	}
}

func TestUpdateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	s := saved(t, settings.Patch{AMIName: ptr("cml-2.9.0")})

	events, err := s.Update(
		settings.Patch{IdleTimeoutSeconds: ptr(int64(1)), InstanceType: ptr("huge")},
		[]settings.Key{"nope", settings.KeyIdleTimeoutSeconds, settings.KeyAMIName, settings.KeyAMIName},
	)

	assert.Empty(t, events)
	ps := problems(t, err)
	var got []string
	for _, p := range ps {
		got = append(got, p.Field+": "+p.Message)
	}
	assert.ElementsMatch(t, []string{
		`idle_timeout_seconds: must be between 300 and 604800 seconds`,
		`instance_type: "huge" is not an EC2 instance type`,
		`clear: unknown setting "nope"`,
		`clear: "idle_timeout_seconds" is both set and cleared`,
		`clear: "ami_name" is listed twice`,
	}, got)
}

func TestEffective(t *testing.T) {
	t.Parallel()
	env1 := settings.Values{
		AMIIDs: map[string]string{"us-east-1": amiUS}, InstanceType: "c5.2xlarge", SecurityGroupIDs: []string{sgA},
		DefaultTags: map[string]string{"env": "dev"}, IdleDetectionEnabled: true, IdleTimeoutSeconds: 3600,
		IdleSnoozeSeconds: 1800, FleetReconcileSeconds: 60, FleetMetricsSeconds: 300, LabsSyncSeconds: 120, IdleCheckSeconds: 300,
	}
	env2 := env1
	env2.InstanceType, env2.IdleTimeoutSeconds, env2.IdleDetectionEnabled = "m5.4xlarge", 1800, false
	env2.AMIIDs = map[string]string{"eu-central-1": amiEU}
	env2.SecurityGroupIDs = []string{sgB}

	s := saved(t,
		settings.Patch{IdleTimeoutSeconds: ptr(int64(7200)), AMIIDs: ptr(map[string]string{"eu-west-1": amiEU})},
		settings.Patch{IdleDetectionEnabled: ptr(true)},
	)

	tests := []struct {
		name     string
		defaults settings.Values
		want     settings.Values
	}{
		{"first environment", env1, settings.Values{
			AMIIDs: map[string]string{"eu-west-1": amiEU}, InstanceType: "c5.2xlarge", SecurityGroupIDs: []string{sgA},
			DefaultTags: map[string]string{"env": "dev"}, IdleDetectionEnabled: true, IdleTimeoutSeconds: 7200,
			IdleSnoozeSeconds: 1800, FleetReconcileSeconds: 60, FleetMetricsSeconds: 300, LabsSyncSeconds: 120, IdleCheckSeconds: 300,
		}},
		{"environment changed later", env2, settings.Values{
			AMIIDs: map[string]string{"eu-west-1": amiEU}, InstanceType: "m5.4xlarge", SecurityGroupIDs: []string{sgB},
			DefaultTags: map[string]string{"env": "dev"}, IdleDetectionEnabled: true, IdleTimeoutSeconds: 7200,
			IdleSnoozeSeconds: 1800, FleetReconcileSeconds: 60, FleetMetricsSeconds: 300, LabsSyncSeconds: 120, IdleCheckSeconds: 300,
		}},
	}
	wantSources := map[settings.Key]settings.Source{}
	for _, k := range settings.Keys {
		wantSources[k] = settings.SourceEnvironment
	}
	wantSources[settings.KeyIdleTimeoutSeconds] = settings.SourceSaved
	wantSources[settings.KeyAMIIDs] = settings.SourceSaved
	wantSources[settings.KeyIdleDetectionEnabled] = settings.SourceSaved

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, sources := settings.Effective(tt.defaults, s.Saved())
			assert.Equal(t, tt.want, got)
			assert.Equal(t, wantSources, sources)
		})
	}

	t.Run("a cleared key follows the environment again", func(t *testing.T) {
		t.Parallel()
		s := saved(t, settings.Patch{IdleTimeoutSeconds: ptr(int64(7200))})
		events, err := s.Update(settings.Patch{}, []settings.Key{settings.KeyIdleTimeoutSeconds})
		require.NoError(t, err)
		require.NoError(t, s.Apply(events[0], t0.Add(time.Hour)))
		got, sources := settings.Effective(env2, s.Saved())
		assert.Equal(t, int64(1800), got.IdleTimeoutSeconds)
		assert.Equal(t, settings.SourceEnvironment, sources[settings.KeyIdleTimeoutSeconds])
	})
	t.Run("nothing saved, nothing in the environment", func(t *testing.T) {
		t.Parallel()
		got, sources := settings.Effective(settings.Values{}, settings.Patch{})
		assert.Equal(t, map[string]string{}, got.AMIIDs)
		assert.Equal(t, map[string]string{}, got.DefaultTags)
		assert.Equal(t, []string{}, got.SecurityGroupIDs)
		assert.Len(t, sources, len(settings.Keys))
	})
	t.Run("a saved empty value wins", func(t *testing.T) {
		t.Parallel()
		got, sources := settings.Effective(env1, settings.Patch{
			SecurityGroupIDs: ptr([]string{}), SubnetID: ptr(""), IdleDetectionEnabled: ptr(false),
		})
		assert.Empty(t, got.SecurityGroupIDs)
		assert.Empty(t, got.SubnetID)
		assert.False(t, got.IdleDetectionEnabled)
		assert.Equal(t, settings.SourceSaved, sources[settings.KeySecurityGroupIDs])
		assert.Equal(t, settings.SourceSaved, sources[settings.KeySubnetID])
		assert.Equal(t, settings.SourceSaved, sources[settings.KeyIdleDetectionEnabled])
	})
}

func TestValidationBounds(t *testing.T) {
	t.Parallel()
	type tc struct {
		name  string
		patch settings.Patch
		ok    bool
		field string // the field of the problem(s) when not ok
		count int    // problems expected when not ok (1 when 0)
	}
	tests := []tc{
		{name: "empty patch", ok: true},
		{name: "idle timeout 5 min", patch: settings.Patch{IdleTimeoutSeconds: ptr(int64(300))}, ok: true},
		{name: "idle timeout 7 days", patch: settings.Patch{IdleTimeoutSeconds: ptr(int64(604800))}, ok: true},
		{name: "idle timeout below 5 min", patch: settings.Patch{IdleTimeoutSeconds: ptr(int64(299))}, field: "idle_timeout_seconds"},
		{name: "idle timeout above 7 days", patch: settings.Patch{IdleTimeoutSeconds: ptr(int64(604801))}, field: "idle_timeout_seconds"},
		{name: "idle timeout zero", patch: settings.Patch{IdleTimeoutSeconds: ptr(int64(0))}, field: "idle_timeout_seconds"},
		{name: "snooze 0", patch: settings.Patch{IdleSnoozeSeconds: ptr(int64(0))}, ok: true},
		{name: "snooze 24 h", patch: settings.Patch{IdleSnoozeSeconds: ptr(int64(86400))}, ok: true},
		{name: "snooze negative", patch: settings.Patch{IdleSnoozeSeconds: ptr(int64(-1))}, field: "idle_snooze_seconds"},
		{name: "snooze above 24 h", patch: settings.Patch{IdleSnoozeSeconds: ptr(int64(86401))}, field: "idle_snooze_seconds"},
		{name: "AMI map", patch: settings.Patch{AMIIDs: ptr(map[string]string{"eu-west-1": amiEU, "us-gov-west-1": "ami-0123abcd"})}, ok: true},
		{name: "AMI map empty", patch: settings.Patch{AMIIDs: ptr(map[string]string{})}, ok: true},
		{name: "AMI map bad AMI", patch: settings.Patch{AMIIDs: ptr(map[string]string{"eu-west-1": "ami-xyz"})}, field: "ami_ids"},
		{name: "AMI map bad region", patch: settings.Patch{AMIIDs: ptr(map[string]string{"Europe": amiEU})}, field: "ami_ids"},
		{name: "AMI map both bad", patch: settings.Patch{AMIIDs: ptr(map[string]string{"Europe": "ubuntu"})}, field: "ami_ids", count: 2},
		{name: "AMI name 128", patch: settings.Patch{AMIName: ptr(strings.Repeat("a", 128))}, ok: true},
		{name: "AMI name 129", patch: settings.Patch{AMIName: ptr(strings.Repeat("a", 129))}, field: "ami_name"},
		{name: "instance type", patch: settings.Patch{InstanceType: ptr("m5zn.metal")}, ok: true},
		{name: "instance type bad", patch: settings.Patch{InstanceType: ptr("huge")}, field: "instance_type"},
		{name: "instance type empty", patch: settings.Patch{InstanceType: ptr("")}, field: "instance_type"},
		{name: "subnet", patch: settings.Patch{SubnetID: ptr("subnet-0123456789abcdef0")}, ok: true},
		{name: "subnet empty (default VPC)", patch: settings.Patch{SubnetID: ptr("")}, ok: true},
		{name: "subnet bad", patch: settings.Patch{SubnetID: ptr("net-1")}, field: "subnet_id"},
		{name: "security groups", patch: settings.Patch{SecurityGroupIDs: ptr([]string{sgA, sgB})}, ok: true},
		{name: "security groups none", patch: settings.Patch{SecurityGroupIDs: ptr([]string{})}, ok: true},
		{name: "security groups bad", patch: settings.Patch{SecurityGroupIDs: ptr([]string{"default", sgA, "sg-1"})}, field: "security_group_ids", count: 2},
		{name: "key name 255", patch: settings.Patch{KeyName: ptr(strings.Repeat("k", 255))}, ok: true},
		{name: "key name 256", patch: settings.Patch{KeyName: ptr(strings.Repeat("k", 256))}, field: "key_name"},
		{name: "tags", patch: settings.Patch{DefaultTags: ptr(map[string]string{"team": "netops", "cost-center": "4711"})}, ok: true},
		{name: "tags aws prefix", patch: settings.Patch{DefaultTags: ptr(map[string]string{"aws:createdBy": "x"})}, field: "default_tags"},
		{name: "tags reserved", patch: settings.Patch{DefaultTags: ptr(map[string]string{worker.TagManagedBy: worker.TagManagedByValue})}, field: "default_tags"},
		{name: "tags too many", patch: settings.Patch{DefaultTags: ptr(manyTags(worker.MaxTags - 1))}, field: "default_tags"},
		{name: "tags at the limit", patch: settings.Patch{DefaultTags: ptr(manyTags(worker.MaxTags - 2))}, ok: true},
		{name: "idle detection off", patch: settings.Patch{IdleDetectionEnabled: ptr(false)}, ok: true},
	}
	intervals := []struct {
		key string
		set func(p *settings.Patch, v int64)
	}{
		{"fleet_reconcile_interval_seconds", func(p *settings.Patch, v int64) { p.FleetReconcileSeconds = &v }},
		{"fleet_metrics_interval_seconds", func(p *settings.Patch, v int64) { p.FleetMetricsSeconds = &v }},
		{"labs_sync_interval_seconds", func(p *settings.Patch, v int64) { p.LabsSyncSeconds = &v }},
		{"idle_check_interval_seconds", func(p *settings.Patch, v int64) { p.IdleCheckSeconds = &v }},
	}
	for _, iv := range intervals {
		for _, b := range []struct {
			secs int64
			ok   bool
		}{{9, false}, {10, true}, {86400, true}, {86401, false}, {0, false}, {-10, false}} {
			var p settings.Patch
			iv.set(&p, b.secs)
			c := tc{name: iv.key + " " + time.Duration(b.secs*int64(time.Second)).String(), patch: p, ok: b.ok}
			if !b.ok {
				c.field = iv.key
			}
			tests = append(tests, c)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			verr := tt.patch.Validate()
			events, uerr := settings.New().Update(tt.patch, nil)
			if tt.ok {
				assert.NoError(t, verr)
				assert.NoError(t, uerr)
				assert.Equal(t, !tt.patch.IsEmpty(), len(events) == 1)
				return
			}
			assert.Empty(t, events)
			want := max(tt.count, 1)
			for _, err := range []error{verr, uerr} {
				ps := problems(t, err)
				assert.Len(t, ps, want, "%v", ps)
				for _, p := range ps {
					assert.Equal(t, tt.field, p.Field)
				}
			}
		})
	}
}

func manyTags(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["tag-"+strings.Repeat("x", i)] = "v"
	}
	return m
}

// No copy shares a map or a slice with its source.
func TestCopiesDoNotShareStorage(t *testing.T) {
	t.Parallel()
	newPatch := func() settings.Patch {
		return settings.Patch{
			AMIIDs: ptr(map[string]string{"eu-west-1": amiEU}), SecurityGroupIDs: ptr([]string{sgA}),
			DefaultTags: ptr(map[string]string{"team": "netops"}),
		}
	}
	mutate := func(p settings.Patch) {
		(*p.AMIIDs)["eu-west-1"] = "ami-ffffffff"
		(*p.AMIIDs)["us-east-1"] = amiUS
		(*p.SecurityGroupIDs)[0] = sgB
		(*p.DefaultTags)["team"] = "changed"
	}
	t.Run("FromSaved copies the caller's values", func(t *testing.T) {
		t.Parallel()
		p := newPatch()
		s := settings.FromSaved(p, 4)
		mutate(p)
		assert.Equal(t, newPatch(), s.Saved())
		assert.Equal(t, int64(4), s.Version())
	})
	t.Run("Saved returns a copy", func(t *testing.T) {
		t.Parallel()
		s := settings.FromSaved(newPatch(), 0)
		mutate(s.Saved())
		assert.Equal(t, newPatch(), s.Saved())
	})
	t.Run("Update's event does not share the caller's patch", func(t *testing.T) {
		t.Parallel()
		p := newPatch()
		events, err := settings.New().Update(p, nil)
		require.NoError(t, err)
		mutate(p)
		assert.Equal(t, settings.Changed{Set: newPatch()}, events[0])
	})
	t.Run("Apply does not share the event's patch", func(t *testing.T) {
		t.Parallel()
		ev := settings.Changed{Set: newPatch()}
		s := settings.New()
		require.NoError(t, s.Apply(ev, t0))
		mutate(ev.Set)
		assert.Equal(t, newPatch(), s.Saved())
	})
	t.Run("Effective does not share the defaults or the saved values", func(t *testing.T) {
		t.Parallel()
		defaults := settings.Values{
			AMIIDs: map[string]string{"us-east-1": amiUS}, SecurityGroupIDs: []string{sgB},
			DefaultTags: map[string]string{"env": "dev"},
		}
		p := settings.Patch{AMIIDs: ptr(map[string]string{"eu-west-1": amiEU})}
		v, _ := settings.Effective(defaults, p)
		v.AMIIDs["x"] = "y"
		v.SecurityGroupIDs[0] = "sg-changed"
		v.DefaultTags["env"] = "prod"
		assert.Equal(t, map[string]string{"eu-west-1": amiEU}, *p.AMIIDs)
		assert.Equal(t, []string{sgB}, defaults.SecurityGroupIDs)
		assert.Equal(t, map[string]string{"env": "dev"}, defaults.DefaultTags)
	})
}

func TestApply(t *testing.T) {
	t.Parallel()
	s := settings.New()
	assert.Equal(t, int64(-1), s.Version())
	assert.True(t, s.Saved().IsEmpty())
	require.Error(t, s.Apply(worker.Removed{}, t0), "a foreign event")
	assert.Equal(t, int64(-1), s.Version())

	require.NoError(t, s.Apply(settings.Changed{Set: settings.Patch{KeyName: ptr("cml-admin"), AMIName: ptr("cml")}}, t0))
	require.NoError(t, s.Apply(settings.Changed{Cleared: []settings.Key{settings.KeyAMIName}}, t0.Add(time.Minute)))
	assert.Equal(t, settings.Patch{KeyName: ptr("cml-admin")}, s.Saved())
	assert.Equal(t, int64(1), s.Version())
	assert.Equal(t, t0.Add(time.Minute), s.UpdatedAt())
}

func TestPatchKeys(t *testing.T) {
	t.Parallel()
	p := settings.Patch{IdleSnoozeSeconds: ptr(int64(0)), AMIIDs: ptr(map[string]string{})}
	assert.Equal(t, []settings.Key{settings.KeyAMIIDs, settings.KeyIdleSnoozeSeconds}, p.SetKeys())
	assert.False(t, p.IsEmpty())
	assert.True(t, settings.Patch{}.IsEmpty())
}

// Every key is the JSON name of its field in Patch and in Values, and every
// field of both has a key.
func TestKeysAreJSONFields(t *testing.T) {
	t.Parallel()
	keys := map[string]bool{}
	for _, k := range settings.Keys {
		keys[string(k)] = true
	}
	assert.Len(t, keys, len(settings.Keys), "duplicate key")
	for _, typ := range []reflect.Type{reflect.TypeFor[settings.Patch](), reflect.TypeFor[settings.Values]()} {
		fields := map[string]bool{}
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			fields[name] = true
		}
		assert.Equal(t, keys, fields, typ.Name())
	}
	full := settings.Patch{
		AMIIDs: ptr(map[string]string{}), AMIName: ptr(""), InstanceType: ptr(""), SubnetID: ptr(""),
		SecurityGroupIDs: ptr([]string{}), KeyName: ptr(""), DefaultTags: ptr(map[string]string{}),
		IdleDetectionEnabled: ptr(false), IdleTimeoutSeconds: ptr(int64(0)), IdleSnoozeSeconds: ptr(int64(0)),
		FleetReconcileSeconds: ptr(int64(0)), FleetMetricsSeconds: ptr(int64(0)), LabsSyncSeconds: ptr(int64(0)),
		IdleCheckSeconds: ptr(int64(0)),
	}
	assert.Equal(t, settings.Keys, full.SetKeys())
}

func TestIdlePolicy(t *testing.T) {
	t.Parallel()
	v := settings.Values{IdleDetectionEnabled: true, IdleTimeoutSeconds: 5400, IdleSnoozeSeconds: 1800}
	assert.Equal(t, worker.IdlePolicy{Enabled: true, Timeout: 90 * time.Minute, Snooze: 30 * time.Minute}, v.IdlePolicy())
	assert.Equal(t, worker.IdlePolicy{}, settings.Values{}.IdlePolicy())
}
