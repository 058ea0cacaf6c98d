package aws

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want []string // fragments of the error; nil = valid
	}{
		{name: "minimal", opts: Options{Regions: []string{"us-east-1"}}},
		{name: "everything", opts: Options{Regions: []string{"us-east-1", "eu-west-1"}, EndpointURL: "http://127.0.0.1:9999",
			DefaultTags: map[string]string{"cost-center": "labs"}, MaxAttempts: 5, MaxBackoff: time.Second, PageSize: 5,
			MetricPeriod: 5 * time.Minute, MetricWindow: 2 * time.Hour, ImageCacheTTL: time.Minute, ImageCacheSize: 10}},
		{name: "no region", opts: Options{}, want: []string{"no region"}},
		{name: "all wrong at once", opts: Options{
			Regions: []string{"mars-1", "us-east-1", "us-east-1"}, EndpointURL: "ftp://x", PageSize: 1001, MaxAttempts: -1,
			MetricPeriod: 90 * time.Second, DefaultTags: map[string]string{"ManagedBy": "me"}, ImageCacheSize: -1,
		}, want: []string{`"mars-1"`, "twice", "endpoint URL", "page size", "max attempts", "metric period", "default tags", "image cache size"}},
		{name: "page size too small", opts: Options{Regions: []string{"us-east-1"}, PageSize: 4}, want: []string{"page size"}},
		{name: "window shorter than the period", opts: Options{Regions: []string{"us-east-1"}, MetricWindow: time.Second}, want: []string{"metric window"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = quietLogger()
			tc.opts.LoadOptions = append(tc.opts.LoadOptions, simulatorCredentials())
			p, err := New(context.Background(), tc.opts)
			if tc.want == nil {
				require.NoError(t, err)
				require.ElementsMatch(t, tc.opts.Regions, p.Regions())
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestRegionNotConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{Regions: []string{region}})
	ctx := context.Background()
	calls := []func() error{
		func() error { s := spec("w"); s.Region = otherRegion; _, err := e.p.Launch(ctx, s); return err },
		func() error { return e.p.Start(ctx, otherRegion, "i-0123456789abcdef0") },
		func() error { _, err := e.p.DescribeManaged(ctx, otherRegion); return err },
		func() error { _, err := e.p.Metrics(ctx, otherRegion, []string{"i-0123456789abcdef0"}, t0); return err },
		func() error { _, err := e.p.DescribeImage(ctx, otherRegion, cmlImage); return err },
	}
	for _, call := range calls {
		requireCloudError(t, call(), application.CloudInvalid, "RegionNotConfigured")
	}
	require.Empty(t, e.sim.Calls())
}

func TestLaunch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{DefaultTags: map[string]string{"cost-center": "labs", "team": "default"}})
	s := spec("0193a5b0-7c1e-7000-8000-000000000001")
	s.Tags = map[string]string{"team": "network", "Name": "spec tags do not win over the name"}
	inst, err := e.p.Launch(context.Background(), s)
	require.NoError(t, err)
	require.Equal(t, worker.EC2Pending, inst.State)
	require.True(t, worker.ValidInstanceID(inst.InstanceID), inst.InstanceID)
	require.Equal(t, region, inst.Region)
	require.Equal(t, cmlImage, inst.ImageID)
	require.Equal(t, "m5zn.metal", inst.InstanceType)
	require.Equal(t, t0, inst.LaunchTime)
	require.Equal(t, "pending", inst.Monitoring, "detailed monitoring requested")
	require.NotEmpty(t, inst.PrivateIP)
	want := map[string]string{
		"Name": "worker " + s.WorkerID, "ManagedBy": "cml-cloud-manager", "cml-cloud-manager/worker-id": s.WorkerID,
		"cost-center": "labs", "team": "network",
	}
	require.Equal(t, want, inst.Tags)

	got, ok := e.sim.Instance(inst.InstanceID)
	require.True(t, ok)
	require.Equal(t, want, got.Tags)
	require.Equal(t, "subnet-0123456789abcdef0", got.SubnetID)
	require.Equal(t, []string{"sg-0123456789abcdef0"}, got.SecurityGroupIDs)
	require.Equal(t, "cml", got.KeyName)
	require.Equal(t, s.ClientToken, got.ClientToken)

	t.Run("reserved tags win over the spec's", func(t *testing.T) {
		s := spec("w-reserved")
		s.Tags = map[string]string{"ManagedBy": "someone", "cml-cloud-manager/worker-id": "other"}
		inst, err := e.p.Launch(context.Background(), s)
		require.NoError(t, err)
		require.Equal(t, "cml-cloud-manager", inst.Tags["ManagedBy"])
		require.Equal(t, "w-reserved", inst.Tags["cml-cloud-manager/worker-id"])
	})
	t.Run("local checks make no call", func(t *testing.T) {
		e.sim.ResetCalls()
		for _, mutate := range []func(*application.LaunchSpec){
			func(s *application.LaunchSpec) { s.ClientToken = "" },
			func(s *application.LaunchSpec) { s.ClientToken = strings.Repeat("x", 65) },
			func(s *application.LaunchSpec) { s.ClientToken = "tab\tinside" },
			func(s *application.LaunchSpec) { s.WorkerID = "" },
			func(s *application.LaunchSpec) { s.ImageID = "" },
			func(s *application.LaunchSpec) { s.InstanceType = "" },
		} {
			s := spec("w-bad")
			mutate(&s)
			_, err := e.p.Launch(context.Background(), s)
			requireCloudError(t, err, application.CloudInvalid, "")
		}
		require.Empty(t, e.sim.Calls())
	})
}

func TestLaunchIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	ctx := context.Background()
	first := e.launch(t, "worker-1")
	e.clock.Advance(simTimings.pending)
	second := e.launch(t, "worker-1")
	require.Equal(t, first.InstanceID, second.InstanceID)
	require.Equal(t, worker.EC2Running, second.State, "the repeated launch reports the instance as it is now")
	require.Len(t, e.sim.Instances(region), 1, "two launches with one token make one instance")
	require.Equal(t, int64(2), e.sim.CallCount("ec2:RunInstances"))

	t.Run("after a timeout the retry finds the first instance", func(t *testing.T) {
		e.sim.SetFaults("ec2:RunInstances", cloudsim.Faults{Latency: 500 * time.Millisecond})
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := e.p.Launch(short, spec("worker-2"))
		ce := requireCloudError(t, err, application.CloudTimeout, "")
		require.True(t, ce.Retryable())
		e.sim.ClearFaults()
		again := e.launch(t, "worker-2")
		var matching []string
		for _, in := range e.sim.Instances(region) {
			if in.Tags["cml-cloud-manager/worker-id"] == "worker-2" {
				matching = append(matching, in.ID)
			}
		}
		require.Equal(t, []string{again.InstanceID}, matching, "exactly one instance for the worker")
	})

	t.Run("same token, other parameters", func(t *testing.T) {
		s := spec("worker-1")
		s.InstanceType = "c5.xlarge"
		_, err := e.p.Launch(ctx, s)
		requireCloudError(t, err, application.CloudInvalid, "IdempotentParameterMismatch")
	})
}

func TestStartStopTerminate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	ctx := context.Background()
	id := e.launch(t, "w").InstanceID
	state := func() worker.EC2State {
		inst, err := e.p.DescribeInstance(ctx, region, id)
		require.NoError(t, err)
		return inst.State
	}
	err := e.p.Stop(ctx, region, id)
	ce := requireCloudError(t, err, application.CloudInvalid, "IncorrectInstanceState")
	require.False(t, ce.Retryable())
	require.Equal(t, "ec2:StopInstances", ce.Op)

	e.clock.Advance(simTimings.pending)
	require.Equal(t, worker.EC2Running, state())
	require.NoError(t, e.p.Stop(ctx, region, id))
	require.Equal(t, worker.EC2Stopping, state())
	requireCloudError(t, e.p.Start(ctx, region, id), application.CloudInvalid, "IncorrectInstanceState")
	e.clock.Advance(simTimings.stopping)
	require.Equal(t, worker.EC2Stopped, state())
	require.NoError(t, e.p.Stop(ctx, region, id), "stopping a stopped instance is a no-op")
	require.NoError(t, e.p.Start(ctx, region, id))
	require.Equal(t, worker.EC2Pending, state())
	require.NoError(t, e.p.Terminate(ctx, region, id))
	require.Equal(t, worker.EC2ShuttingDown, state())
	e.clock.Advance(simTimings.shuttingDown)
	require.Equal(t, worker.EC2Terminated, state())
	require.NoError(t, e.p.Terminate(ctx, region, id), "terminating twice is fine")

	for _, call := range []func(context.Context, string, string) error{e.p.Start, e.p.Stop, e.p.Terminate} {
		requireCloudError(t, call(ctx, region, "i-0123456789abcdef0"), application.CloudNotFound, "InvalidInstanceID.NotFound")
	}
}

func TestSetTagsAndMonitoring(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	ctx := context.Background()
	s := spec("w")
	s.Tags = map[string]string{"team": "a", "old": "x"}
	s.DetailedMonitoring = false
	inst, err := e.p.Launch(ctx, s)
	require.NoError(t, err)
	id := inst.InstanceID
	require.Equal(t, "disabled", inst.Monitoring)
	e.sim.ResetCalls()

	require.NoError(t, e.p.SetTags(ctx, region, id, map[string]string{"team": "b", "env": "lab"}, []string{"old"}))
	got, _ := e.sim.Instance(id)
	require.Equal(t, map[string]string{"Name": "worker w", "ManagedBy": "cml-cloud-manager", "cml-cloud-manager/worker-id": "w",
		"team": "b", "env": "lab"}, got.Tags)
	require.NoError(t, e.p.SetTags(ctx, region, id, nil, nil))
	require.Equal(t, map[string]int64{"ec2:CreateTags": 1, "ec2:DeleteTags": 1}, e.sim.Calls(), "no call when there is nothing to do")
	requireCloudError(t, e.p.SetTags(ctx, region, id, map[string]string{"aws:x": "y"}, nil), application.CloudInvalid, "InvalidParameterValue")
	requireCloudError(t, e.p.SetTags(ctx, region, "i-0123456789abcdef0", map[string]string{"a": "b"}, nil), application.CloudNotFound, "InvalidInstanceID.NotFound")

	require.NoError(t, e.p.SetDetailedMonitoring(ctx, region, id, true))
	e.clock.Advance(simTimings.monitoring)
	d, err := e.p.DescribeInstance(ctx, region, id)
	require.NoError(t, err)
	require.Equal(t, "enabled", d.Monitoring)
	require.NoError(t, e.p.SetDetailedMonitoring(ctx, region, id, false))
	d, err = e.p.DescribeInstance(ctx, region, id)
	require.NoError(t, err)
	require.Equal(t, "disabling", d.Monitoring)
	require.Equal(t, int64(1), e.sim.CallCount("ec2:MonitorInstances"))
	require.Equal(t, int64(1), e.sim.CallCount("ec2:UnmonitorInstances"))
}
