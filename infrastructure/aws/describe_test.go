package aws

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

func ids(ins []application.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.InstanceID)
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestDescribeManagedPaging(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                  string
		pageSize              int
		managed, unmanaged    int
		wantDescribeInstances int64
		wantDescribeStatus    int64
	}{
		// DescribeInstances pages over the 23 managed instances (the tag
		// filter applies server-side); DescribeInstanceStatus over all 30.
		{name: "pages of 5", pageSize: 5, managed: 23, unmanaged: 7, wantDescribeInstances: 5, wantDescribeStatus: 6},
		{name: "a page boundary", pageSize: 10, managed: 20, unmanaged: 0, wantDescribeInstances: 2, wantDescribeStatus: 2},
		{name: "one page", pageSize: 1000, managed: 23, unmanaged: 7, wantDescribeInstances: 1, wantDescribeStatus: 1},
		{name: "nothing managed", pageSize: 5, managed: 0, unmanaged: 7, wantDescribeInstances: 1, wantDescribeStatus: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, cloudsim.Options{}, Options{PageSize: tc.pageSize})
			var managed []string
			if tc.managed > 0 {
				managed = e.seed(t, region, cmlImage, tc.managed, true)
			}
			if tc.unmanaged > 0 {
				e.seed(t, region, cmlImage, tc.unmanaged, false)
			}
			e.seed(t, otherRegion, cloudsim.ImageID(otherRegion, "cisco-cml2.9-lablet-v0.1.7"), 3, true)
			e.clock.Advance(simTimings.status)

			got, err := e.p.DescribeManaged(context.Background(), region)
			require.NoError(t, err)
			require.Equal(t, sorted(managed), ids(got))
			for _, in := range got {
				require.Equal(t, worker.EC2Running, in.State)
				require.Equal(t, "ok", in.SystemStatus)
				require.Equal(t, "ok", in.InstanceStatus)
				require.Equal(t, "enabled", in.Monitoring)
				require.Equal(t, region, in.Region)
				require.NotEmpty(t, in.PublicIP)
				require.Equal(t, "cml-cloud-manager", in.Tags["ManagedBy"])
			}
			require.Equal(t, map[string]int64{
				"ec2:DescribeInstances": tc.wantDescribeInstances, "ec2:DescribeInstanceStatus": tc.wantDescribeStatus,
			}, withoutZero(e.sim.Calls()))
		})
	}
}

func withoutZero(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	for _, k := range []string{"ec2:DescribeInstances", "ec2:DescribeInstanceStatus"} {
		if _, ok := out[k]; !ok {
			out[k] = 0
		}
	}
	return out
}

func TestDescribeManagedSeesOutOfBandChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{PageSize: 5})
	ctx := context.Background()
	fleet := e.seed(t, region, cmlImage, 8, true)
	e.clock.Advance(simTimings.status)
	byID := func() map[string]application.Instance {
		got, err := e.p.DescribeManaged(ctx, region)
		require.NoError(t, err)
		out := map[string]application.Instance{}
		for _, in := range got {
			out[in.InstanceID] = in
		}
		return out
	}
	before := byID()
	c := e.sim.Console()
	require.NoError(t, c.Stop(fleet[0]))      // somebody stops it in the console
	require.NoError(t, c.Terminate(fleet[1])) // or terminates it
	require.NoError(t, c.SetStatusChecks(fleet[2], "impaired", "ok"))
	require.NoError(t, c.SetTags(fleet[3], nil, []string{"ManagedBy"})) // no longer ours
	ip, err := c.ChangePublicIP(fleet[4])
	require.NoError(t, err)

	after := byID()
	require.Equal(t, worker.EC2Stopping, after[fleet[0]].State)
	require.Equal(t, worker.EC2ShuttingDown, after[fleet[1]].State)
	require.Equal(t, "impaired", after[fleet[2]].SystemStatus)
	require.NotContains(t, after, fleet[3])
	require.Equal(t, ip, after[fleet[4]].PublicIP)
	require.NotEqual(t, before[fleet[4]].PublicIP, ip)
	require.Equal(t, before[fleet[5]], after[fleet[5]], "untouched instances read the same")

	// Terminated instances stay visible for about an hour, then vanish.
	e.clock.Advance(simTimings.shuttingDown + time.Hour)
	after = byID()
	require.Equal(t, worker.EC2Stopped, after[fleet[0]].State)
	require.Equal(t, "not-applicable", after[fleet[0]].SystemStatus)
	require.Empty(t, after[fleet[0]].PublicIP)
	require.NotContains(t, after, fleet[1])
}

func TestDescribeInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	ctx := context.Background()
	unmanaged := e.seed(t, region, cmlImage, 1, false)[0]
	e.clock.Advance(simTimings.status)
	got, err := e.p.DescribeInstance(ctx, region, unmanaged)
	require.NoError(t, err)
	require.Equal(t, unmanaged, got.InstanceID)
	require.Equal(t, worker.EC2Running, got.State)
	require.Equal(t, "ok", got.SystemStatus)
	require.Equal(t, map[string]int64{"ec2:DescribeInstances": 1, "ec2:DescribeInstanceStatus": 1}, e.sim.Calls())

	tests := []struct {
		id, code string
	}{
		{"i-0123456789abcdef0", "InvalidInstanceID.NotFound"},
		{"i-nope", "InvalidInstanceID.Malformed"},
	}
	for _, tc := range tests {
		_, err := e.p.DescribeInstance(ctx, region, tc.id)
		ce := requireCloudError(t, err, application.CloudNotFound, tc.code)
		require.True(t, application.IsCloudNotFound(err))
		require.Equal(t, "ec2:DescribeInstances", ce.Op)
	}
	_, err = e.p.DescribeInstance(ctx, otherRegion, unmanaged)
	requireCloudError(t, err, application.CloudNotFound, "InvalidInstanceID.NotFound")
}

func TestFindInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{PageSize: 5})
	ctx := context.Background()
	c := e.sim.Console()
	latest := e.seed(t, region, cmlImage, 7, false)
	older := e.seed(t, region, olderImage, 2, true)
	plain := e.seed(t, region, plainImage, 2, false)
	require.NoError(t, c.Terminate(latest[0]))
	require.NoError(t, c.Terminate(latest[1]))
	e.clock.Advance(simTimings.shuttingDown)  // latest[0..1] terminated
	require.NoError(t, c.Terminate(older[0])) // shutting down
	require.NoError(t, c.Stop(latest[2]))     // stopping: still importable

	tests := []struct {
		name string
		q    application.InstanceQuery
		want []string
	}{
		{"by AMI id", application.InstanceQuery{AMIID: cmlImage}, latest[2:]},
		{"by exact name", application.InstanceQuery{AMINamePattern: "cisco-cml2.9-lablet-v0.1.6"}, older[1:]},
		{"by pattern", application.InstanceQuery{AMINamePattern: "cisco-cml2.9-*"}, append(append([]string{}, latest[2:]...), older[1:]...)},
		{"by a pattern of every CML image", application.InstanceQuery{AMINamePattern: "*lablet*"}, append(append(append([]string{}, latest[2:]...), older[1:]...), plain...)},
		{"no such image", application.InstanceQuery{AMINamePattern: "ubuntu-*"}, nil},
		{"AMI without instances", application.InstanceQuery{AMIID: cloudsim.ImageID(otherRegion, "x")}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.p.FindInstances(ctx, region, tc.q)
			require.NoError(t, err)
			require.Equal(t, sorted(tc.want), ids(got))
			for _, in := range got {
				require.NotContains(t, []worker.EC2State{worker.EC2Terminated, worker.EC2ShuttingDown}, in.State)
			}
		})
	}
	for _, q := range []application.InstanceQuery{{}, {AMIID: cmlImage, AMINamePattern: "x*"}} {
		_, err := e.p.FindInstances(ctx, region, q)
		requireCloudError(t, err, application.CloudInvalid, "")
	}
}

func TestDescribeImageCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{ImageCacheTTL: time.Hour, ImageCacheSize: 2})
	ctx := context.Background()
	describe := func(id string) application.Image {
		img, err := e.p.DescribeImage(ctx, region, id)
		require.NoError(t, err)
		return img
	}
	img := describe(cmlImage)
	require.Equal(t, application.Image{ImageID: cmlImage, Name: "cisco-cml2.9-lablet-v0.1.7",
		Description:  "Cisco Modeling Labs 2.9 lablet controller v0.1.7 with the CloudWatch agent",
		CreationDate: time.Date(2026, 9, 15, 10, 0, 0, 0, time.UTC)}, img)

	steps := []struct {
		name      string
		advance   time.Duration
		image     string
		wantCalls int64
	}{
		{"cached", 0, cmlImage, 1},
		{"still cached just before the TTL", time.Hour - time.Second, cmlImage, 1},
		{"expired", time.Second, cmlImage, 2},
		{"a second image", 0, olderImage, 3},
		{"both cached", 0, cmlImage, 3},
		{"a third evicts the least recently used", 0, plainImage, 4},
		{"the most recently used stays", 0, cmlImage, 4},
		{"the evicted one is read again", 0, olderImage, 5},
	}
	for _, st := range steps {
		e.clock.Advance(st.advance)
		describe(st.image)
		require.Equal(t, st.wantCalls, e.sim.CallCount("ec2:DescribeImages"), st.name)
	}
	require.Equal(t, 2, e.p.images.len())

	_, err := e.p.DescribeImage(ctx, region, "ami-0123456789abcdef0")
	requireCloudError(t, err, application.CloudNotFound, "InvalidAMIID.NotFound")
	_, err = e.p.DescribeImage(ctx, region, "ami-0123456789abcdef0")
	requireCloudError(t, err, application.CloudNotFound, "InvalidAMIID.NotFound")
	require.Equal(t, int64(7), e.sim.CallCount("ec2:DescribeImages"), "a missing image is not cached")
	_, err = e.p.DescribeImage(ctx, region, "ami-bad")
	requireCloudError(t, err, application.CloudInvalid, "InvalidAMIID.Malformed")
	_, err = e.p.DescribeImage(ctx, otherRegion, cmlImage)
	requireCloudError(t, err, application.CloudNotFound, "InvalidAMIID.NotFound")
}

func TestFindInstancesImageOwners(t *testing.T) {
	t.Parallel()
	tests := []struct {
		owners []string
		want   int
	}{
		{owners: nil, want: 2},
		{owners: []string{"self"}, want: 2},
		{owners: []string{cloudsim.OwnerID}, want: 2},
		{owners: []string{"amazon"}, want: 0}, // the simulated CML AMIs are the account's own
	}
	for _, tc := range tests {
		e := newEnv(t, cloudsim.Options{}, Options{ImageOwners: tc.owners})
		e.seed(t, region, cmlImage, 2, false)
		got, err := e.p.FindInstances(context.Background(), region, application.InstanceQuery{AMINamePattern: "cisco-cml2.9-*"})
		require.NoError(t, err)
		require.Len(t, got, tc.want, "owners %v", tc.owners)
	}
}
