package jobs

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

func TestAlignedScheduleFollowsTheCurrentInterval(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		interval time.Duration
		now      time.Time
		want     time.Time
	}{
		{"next multiple within the recheck", time.Minute, base.Add(50 * time.Second), base.Add(time.Minute)},
		{"recheck before a far multiple", 5 * time.Minute, base.Add(10 * time.Second), base.Add(25 * time.Second)},
		{"on a multiple", time.Minute, base, base.Add(15 * time.Second)},
		{"short interval", 10 * time.Second, base.Add(3 * time.Second), base.Add(10 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := alignedSchedule{interval: func() time.Duration { return tc.interval }, recheck: 15 * time.Second}
			require.Equal(t, tc.want, s.Next(tc.now))
		})
	}
	// A changed interval applies at the next firing.
	interval := time.Hour
	s := alignedSchedule{interval: func() time.Duration { return interval }, recheck: 15 * time.Second}
	next := s.Next(base.Add(time.Minute))
	require.Equal(t, base.Add(time.Minute+15*time.Second), next)
	interval = 30 * time.Second
	require.Equal(t, base.Add(90*time.Second), s.Next(next))
}

func TestEndpointFor(t *testing.T) {
	t.Parallel()
	inst := application.Instance{InstanceID: "i-0123456789abcdef0", PublicIP: "198.51.100.7", PrivateIP: "10.0.0.7"}
	for _, tc := range []struct {
		template string
		inst     application.Instance
		want     string
	}{
		{"https://{public_ip}", inst, "https://198.51.100.7"},
		{"https://{private_ip}:8443", inst, "https://10.0.0.7:8443"},
		{"https://127.0.0.1:4567/controllers/{instance_id}", inst, "https://127.0.0.1:4567/controllers/i-0123456789abcdef0"},
		{"https://{public_ip}", application.Instance{InstanceID: "i-1", PrivateIP: "10.0.0.1"}, ""},
		{"", inst, ""},
		{"https://cml.example.com", inst, "https://cml.example.com"},
	} {
		require.Equal(t, tc.want, endpointFor(tc.template, tc.inst), tc.template)
	}
}

func FuzzEndpointFor(f *testing.F) {
	f.Add("https://{public_ip}", "198.51.100.7", "10.0.0.1", "i-0123456789abcdef0")
	f.Add("https://{instance_id}{instance_id}", "", "", "i-1")
	f.Fuzz(func(t *testing.T, template, public, private, id string) {
		got := endpointFor(template, application.Instance{InstanceID: id, PublicIP: public, PrivateIP: private})
		if got == "" {
			return
		}
		// Every placeholder is replaced, with non-empty values only.
		for _, p := range []struct{ name, value string }{{"{public_ip}", public}, {"{private_ip}", private}, {"{instance_id}", id}} {
			if strings.Contains(template, p.name) && p.value == "" {
				t.Fatalf("%q rendered %q without %s", template, got, p.name)
			}
		}
		if !strings.Contains(template, "{") && got != template {
			t.Fatalf("a template without placeholders changed: %q -> %q", template, got)
		}
	})
}

func TestActivityFilter(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f, err := newActivityFilter([]string{"self-user"}, DefaultExcludedUserPattern, nil)
	require.NoError(t, err)
	ev := func(cat string, at time.Duration, user string) application.CMLTelemetryEvent {
		return application.CMLTelemetryEvent{Category: cat, Timestamp: t0.Add(at), UserID: user}
	}
	person := "7d5b1c7e-2a4f-4b8e-9f0a-1c2d3e4f5a6b"
	automation := "00000000-0000-4000-8000-000000000001"
	for _, tc := range []struct {
		name    string
		events  []application.CMLTelemetryEvent
		since   time.Time
		wantOK  bool
		wantAt  time.Time
		wantCat string
	}{
		{"newest relevant event of a person", []application.CMLTelemetryEvent{
			ev("start_lab", time.Minute, person), ev("boot_node", 3*time.Minute, person), ev("user_activity", 2*time.Minute, person),
		}, t0, true, t0.Add(3 * time.Minute), "boot_node"},
		{"the automation user is not activity", []application.CMLTelemetryEvent{
			ev("user_activity", time.Minute, automation), ev("start_lab", 2*time.Minute, automation),
		}, t0, false, time.Time{}, ""},
		{"the product's own user is not activity", []application.CMLTelemetryEvent{ev("stop_lab", time.Minute, "self-user")}, t0, false, time.Time{}, ""},
		{"irrelevant categories", []application.CMLTelemetryEvent{ev("license_info", time.Minute, person), ev("wipe_node", time.Minute, person)}, t0, false, time.Time{}, ""},
		{"not newer than the last known", []application.CMLTelemetryEvent{ev("start_lab", time.Minute, person)}, t0.Add(time.Minute), false, time.Time{}, ""},
		{"no user is a person", []application.CMLTelemetryEvent{ev("import_lab", time.Minute, "")}, t0, true, t0.Add(time.Minute), "import_lab"},
		{"the future counts as now", []application.CMLTelemetryEvent{ev("start_node", 24*time.Hour, person)}, t0, true, t0.Add(time.Hour), "start_node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			at, cat, ok := f.latest("https://c", tc.events, tc.since, t0.Add(time.Hour))
			require.Equal(t, tc.wantOK, ok)
			if ok {
				require.Equal(t, tc.wantAt, at)
				require.Equal(t, tc.wantCat, cat)
			}
		})
	}
	_, err = newActivityFilter(nil, "([", nil)
	require.Error(t, err)

	// A client that knows its own user id excludes it too.
	self, err := newActivityFilter(nil, "", selfUser("me"))
	require.NoError(t, err)
	_, _, ok := self.latest("https://c", []application.CMLTelemetryEvent{ev("start_lab", time.Minute, "me")}, t0, t0.Add(time.Hour))
	require.False(t, ok)
}

type selfUser string

func (s selfUser) UserID(string) string { return string(s) }

func FuzzActivityFilter(f *testing.F) {
	f.Add("start_lab", "7d5b1c7e-2a4f-4b8e-9f0a-1c2d3e4f5a6b", int64(60))
	f.Add("user_activity", "00000000-0000-4000-8000-000000000001", int64(-5))
	af, err := newActivityFilter(nil, DefaultExcludedUserPattern, nil)
	if err != nil {
		f.Fatal(err)
	}
	automation := regexp.MustCompile(DefaultExcludedUserPattern)
	since := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	now := since.Add(time.Hour)
	f.Fuzz(func(t *testing.T, category, user string, offset int64) {
		e := application.CMLTelemetryEvent{Category: category, UserID: user, Timestamp: since.Add(time.Duration(offset) * time.Second)}
		at, _, ok := af.latest("https://c", []application.CMLTelemetryEvent{e}, since, now)
		if !ok {
			return
		}
		if !at.After(since) || at.After(now) {
			t.Fatalf("activity %v outside (%v, %v]", at, since, now)
		}
		if automation.MatchString(user) {
			t.Fatalf("automation user %q counted", user)
		}
	})
}

func TestTagChanges(t *testing.T) {
	t.Parallel()
	set, remove := tagChanges(
		map[string]string{"a": "1", "b": "2", "aws:cloudformation:stack": "x", "old": "o"},
		map[string]string{"a": "1", "b": "3", "c": "4"})
	require.Equal(t, map[string]string{"b": "3", "c": "4"}, set)
	require.Equal(t, []string{"old"}, remove)

	st := worker.State{ID: "w1", Name: "lab", Tags: map[string]string{"team": "x"}}
	require.Equal(t, map[string]string{"team": "x", "Name": "lab", worker.TagManagedBy: worker.TagManagedByValue, worker.TagWorkerID: "w1"}, desiredTags(st))
	require.Equal(t, map[string]string{"team": "x"}, userTags(map[string]string{"team": "x", worker.TagManagedBy: "y", worker.TagWorkerID: "z"}))
}

func TestObservationDiffers(t *testing.T) {
	t.Parallel()
	st := worker.State{
		InstanceID: "i-1", EC2State: worker.EC2Running, PublicIP: "198.51.100.1", PrivateIP: "10.0.0.1",
		InstanceType: "m5zn.metal", SystemStatus: "ok", InstanceStatus: "ok", Endpoint: "https://198.51.100.1",
		Tags: map[string]string{"a": "1"},
	}
	same := worker.Observation{InstanceID: "i-1", State: worker.EC2Running, PublicIP: "198.51.100.1", PrivateIP: "10.0.0.1",
		InstanceType: "m5zn.metal", SystemStatus: "ok", InstanceStatus: "ok", Endpoint: "https://198.51.100.1",
		Tags: map[string]string{"a": "1"}}
	require.False(t, observationDiffers(st, same))
	noTags := same
	noTags.Tags = nil
	require.False(t, observationDiffers(st, noTags), "tags not read")
	for name, change := range map[string]func(o *worker.Observation){
		"state":    func(o *worker.Observation) { o.State = worker.EC2Stopping },
		"ip":       func(o *worker.Observation) { o.PublicIP = "198.51.100.2" },
		"status":   func(o *worker.Observation) { o.SystemStatus = "impaired" },
		"endpoint": func(o *worker.Observation) { o.Endpoint = "" },
		"tags":     func(o *worker.Observation) { o.Tags = map[string]string{"a": "2"} },
		"type":     func(o *worker.Observation) { o.InstanceType = "c5.xlarge" },
	} {
		o := same
		change(&o)
		require.True(t, observationDiffers(st, o), name)
	}
	inFlight := st
	inFlight.Intent = worker.IntentStop
	require.True(t, observationDiffers(inFlight, same), "an open intent is decided by the aggregate")
	adopt := st
	adopt.InstanceID = ""
	require.True(t, observationDiffers(adopt, same))
}

func TestNextRetryIsBoundedAndGrows(t *testing.T) {
	t.Parallel()
	rt := &runtime{opts: Options{RetryBase: time.Second, RetryMax: time.Minute}}
	prevMax := time.Duration(0)
	for attempt := 1; attempt <= 12; attempt++ {
		d := time.Until(rt.nextRetry(attempt))
		want := min(time.Second<<(attempt-1), time.Minute)
		require.GreaterOrEqual(t, d, want*8/10-time.Millisecond, "attempt %d", attempt)
		require.LessOrEqual(t, d, want*12/10+time.Millisecond, "attempt %d", attempt)
		require.GreaterOrEqual(t, want, prevMax)
		prevMax = want
	}
}

func TestServiceDiffersAndClamp(t *testing.T) {
	t.Parallel()
	st := worker.State{Service: worker.ServiceAvailable, CMLVersion: "2.9", CMLReady: true}
	require.False(t, serviceDiffers(st, worker.ServiceAvailable, "2.9", true))
	require.True(t, serviceDiffers(st, worker.ServiceAvailable, "2.9", false))
	require.True(t, serviceDiffers(st, worker.ServiceUnavailable, "", false))
	down := worker.State{Service: worker.ServiceUnavailable, CMLVersion: "2.9"}
	require.False(t, serviceDiffers(down, worker.ServiceUnavailable, "", false), "unavailable keeps the version")

	v := 104.5
	require.Equal(t, 100.0, *clampPercent(&v))
	v = -1
	require.Equal(t, 0.0, *clampPercent(&v))
	require.Nil(t, clampPercent(nil))
}

func TestEveryReactionHasAJob(t *testing.T) {
	t.Parallel()
	c := Cause{WorkerID: "w", EventID: "e", CorrelationID: "c"}
	for _, kind := range []application.JobKind{
		application.JobEC2Launch, application.JobEC2Start, application.JobEC2Stop, application.JobEC2Terminate,
		application.JobEC2Tags, application.JobEC2Monitoring, application.JobLicenseRegister,
		application.JobLicenseDeregister, application.JobLabAction, application.JobWorkerRefresh,
	} {
		args, _, err := jobArgs(application.Reaction{Kind: kind, WorkerID: "w"}, c)
		require.NoError(t, err, kind)
		require.Equal(t, string(kind), args.Kind())
	}
	_, _, err := jobArgs(application.Reaction{Kind: application.JobFleetMetrics}, c)
	require.Error(t, err)
	require.Equal(t, "w-2", ClientToken("w", 2))
}
