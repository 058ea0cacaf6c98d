package cloudsim

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/stretchr/testify/require"
)

func isDocumentationIP(t *testing.T, s string) bool {
	t.Helper()
	ip, err := netip.ParseAddr(s)
	require.NoError(t, err)
	return netip.MustParsePrefix("198.51.100.0/24").Contains(ip) || netip.MustParsePrefix("203.0.113.0/24").Contains(ip)
}

func TestTimedTransitions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	id := h.run(t, &ec2.RunInstancesInput{InstanceType: types.InstanceTypeM5znMetal})[0]
	first := h.describe(t, id)
	require.True(t, isDocumentationIP(t, aws.ToString(first.PublicIpAddress)), "public IP %s", aws.ToString(first.PublicIpAddress))
	require.True(t, strings.HasPrefix(aws.ToString(first.PrivateIpAddress), "10."))
	require.Equal(t, t0, aws.ToTime(first.LaunchTime))
	publicIPs := []string{aws.ToString(first.PublicIpAddress)}

	stop := func() error {
		_, err := h.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
		return err
	}
	start := func() error {
		_, err := h.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
		return err
	}
	terminate := func() error {
		_, err := h.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		return err
	}
	steps := []struct {
		name    string
		action  func() error
		advance time.Duration
		want    string
		public  bool // has a public IP
	}{
		{name: "still pending just before the deadline", advance: testTimings.Pending - time.Millisecond, want: StatePending, public: true},
		{name: "running at the deadline", advance: time.Millisecond, want: StateRunning, public: true},
		{name: "stop", action: stop, want: StateStopping, public: true},
		{name: "stopped", advance: testTimings.Stopping, want: StateStopped},
		{name: "start", action: start, want: StatePending, public: true},
		{name: "running again", advance: testTimings.Pending, want: StateRunning, public: true},
		{name: "terminate", action: terminate, want: StateShuttingDown, public: true},
		{name: "terminated", advance: testTimings.ShuttingDown, want: StateTerminated},
		{name: "terminated and still visible", advance: testTimings.TerminatedRetention - time.Millisecond, want: StateTerminated},
	}
	for _, st := range steps {
		if st.action != nil {
			require.NoError(t, st.action(), st.name)
		}
		h.clock.Advance(st.advance)
		in := h.describe(t, id)
		require.Equal(t, st.want, string(in.State.Name), st.name)
		ip := aws.ToString(in.PublicIpAddress)
		require.Equal(t, st.public, ip != "", "%s: public IP %q", st.name, ip)
		if ip != "" && ip != publicIPs[len(publicIPs)-1] {
			publicIPs = append(publicIPs, ip)
		}
	}
	require.Len(t, publicIPs, 2, "a new public IP after the stop and start")

	h.clock.Advance(time.Millisecond)
	_, err := h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	require.Equal(t, "InvalidInstanceID.NotFound", apiCode(t, err), "gone after the retention")
}

func TestStatusChecksAndLaunchTime(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	id := h.run(t, &ec2.RunInstancesInput{})[0]
	status := func() (string, string) {
		out, err := h.ec2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, IncludeAllInstances: aws.Bool(true)})
		require.NoError(t, err)
		require.Len(t, out.InstanceStatuses, 1)
		s := out.InstanceStatuses[0]
		return string(s.SystemStatus.Status), string(s.InstanceStatus.Status)
	}
	sys, inst := status()
	require.Equal(t, []string{"not-applicable", "not-applicable"}, []string{sys, inst}, "pending")
	h.clock.Advance(testTimings.Pending)
	sys, _ = status()
	require.Equal(t, "initializing", sys)
	h.clock.Advance(testTimings.StatusInitializing)
	sys, inst = status()
	require.Equal(t, []string{"ok", "ok"}, []string{sys, inst})
	require.NoError(t, h.sim.Console().SetStatusChecks(id, "impaired", ""))
	sys, inst = status()
	require.Equal(t, []string{"impaired", "ok"}, []string{sys, inst})

	// A start after a stop moves the launch time.
	require.NoError(t, h.sim.Console().Stop(id))
	h.clock.Advance(testTimings.Stopping)
	require.NoError(t, h.sim.Console().Start(id))
	require.Equal(t, h.clock.Now(), aws.ToTime(h.describe(t, id).LaunchTime))
	h.clock.Advance(testTimings.Pending + testTimings.StatusInitializing)
	sys, _ = status()
	require.Equal(t, "ok", sys, "the override ends with the next boot")
}

func TestIncorrectInstanceState(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	// reach puts a new instance into state.
	reach := func(t *testing.T, state string) string {
		id := h.run(t, &ec2.RunInstancesInput{})[0]
		c := h.sim.Console()
		switch state {
		case StatePending:
			return id
		case StateRunning:
		case StateStopping:
			h.clock.Advance(testTimings.Pending)
			require.NoError(t, c.Stop(id))
			return id
		case StateStopped:
			h.clock.Advance(testTimings.Pending)
			require.NoError(t, c.Stop(id))
			h.clock.Advance(testTimings.Stopping)
			return id
		case StateShuttingDown:
			require.NoError(t, c.Terminate(id))
			return id
		case StateTerminated:
			require.NoError(t, c.Terminate(id))
			h.clock.Advance(testTimings.ShuttingDown)
			return id
		}
		h.clock.Advance(testTimings.Pending)
		return id
	}
	ops := map[string]func(id string) error{
		"start": func(id string) error {
			_, err := h.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
			return err
		},
		"stop": func(id string) error {
			_, err := h.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
			return err
		},
		"terminate": func(id string) error {
			_, err := h.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
			return err
		},
	}
	tests := []struct {
		from, op, wantCode, wantState string
	}{
		{StatePending, "start", "", StatePending},
		{StatePending, "stop", "IncorrectInstanceState", StatePending},
		{StatePending, "terminate", "", StateShuttingDown},
		{StateRunning, "start", "", StateRunning},
		{StateRunning, "stop", "", StateStopping},
		{StateRunning, "terminate", "", StateShuttingDown},
		{StateStopping, "start", "IncorrectInstanceState", StateStopping},
		{StateStopping, "stop", "", StateStopping},
		{StateStopping, "terminate", "", StateShuttingDown},
		{StateStopped, "start", "", StatePending},
		{StateStopped, "stop", "", StateStopped},
		{StateStopped, "terminate", "", StateShuttingDown},
		{StateShuttingDown, "start", "IncorrectInstanceState", StateShuttingDown},
		{StateShuttingDown, "stop", "IncorrectInstanceState", StateShuttingDown},
		{StateShuttingDown, "terminate", "", StateShuttingDown},
		{StateTerminated, "start", "IncorrectInstanceState", StateTerminated},
		{StateTerminated, "stop", "IncorrectInstanceState", StateTerminated},
		{StateTerminated, "terminate", "", StateTerminated},
	}
	for _, tc := range tests {
		t.Run(tc.from+"/"+tc.op, func(t *testing.T) {
			id := reach(t, tc.from)
			require.Equal(t, tc.from, h.state(t, id))
			require.Equal(t, tc.wantCode, apiCode(t, ops[tc.op](id)))
			require.Equal(t, tc.wantState, h.state(t, id))
		})
	}

	t.Run("a refused instance fails the whole request", func(t *testing.T) {
		running, pending := reach(t, StateRunning), reach(t, StatePending)
		_, err := h.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{running, pending}})
		require.Equal(t, "IncorrectInstanceState", apiCode(t, err))
		require.Equal(t, StateRunning, h.state(t, running))
	})
	t.Run("state change answers", func(t *testing.T) {
		id := reach(t, StateRunning)
		out, err := h.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
		require.NoError(t, err)
		require.Len(t, out.StoppingInstances, 1)
		c := out.StoppingInstances[0]
		require.Equal(t, id, aws.ToString(c.InstanceId))
		require.Equal(t, types.InstanceStateNameRunning, c.PreviousState.Name)
		require.Equal(t, types.InstanceStateNameStopping, c.CurrentState.Name)
		require.Equal(t, int32(64), aws.ToInt32(c.CurrentState.Code))
	})
}

func TestClientTokenIdempotency(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	launch := func(token, instanceType string) (string, error) {
		out, err := h.ec2.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String(cmlImage), InstanceType: types.InstanceType(instanceType),
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(token),
		})
		if err != nil {
			return "", err
		}
		require.Len(t, out.Instances, 1)
		return aws.ToString(out.Instances[0].InstanceId), nil
	}
	first, err := launch("worker-1", "c5.xlarge")
	require.NoError(t, err)
	h.clock.Advance(testTimings.Pending)
	again, err := launch("worker-1", "c5.xlarge")
	require.NoError(t, err)
	require.Equal(t, first, again)
	require.Len(t, h.sim.Instances(testRegion), 1)
	require.Equal(t, StateRunning, h.state(t, again), "the repeated call shows the current state")

	_, err = launch("worker-1", "c5.2xlarge")
	require.Equal(t, "IdempotentParameterMismatch", apiCode(t, err))

	other, err := launch("worker-2", "c5.xlarge")
	require.NoError(t, err)
	require.NotEqual(t, first, other)
	require.Len(t, h.sim.Instances(testRegion), 2)
	require.Equal(t, int64(4), h.sim.CallCount("ec2:RunInstances"))
}

func TestRunInstancesValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{InstanceLimit: 2})
	ctx := context.Background()
	tests := []struct {
		name string
		in   ec2.RunInstancesInput
		want string
	}{
		{"unknown AMI", ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0")}, "InvalidAMIID.NotFound"},
		{"malformed AMI", ec2.RunInstancesInput{ImageId: aws.String("ami-xyz")}, "InvalidAMIID.Malformed"},
		{"AMI of another region", ec2.RunInstancesInput{ImageId: aws.String(ImageID("eu-west-1", "cisco-cml2.9-lablet-v0.1.7"))}, "InvalidAMIID.NotFound"},
		{"bad instance type", ec2.RunInstancesInput{InstanceType: "NOT A TYPE"}, "InvalidParameterValue"},
		{"malformed subnet", ec2.RunInstancesInput{SubnetId: aws.String("subnet-x")}, "InvalidSubnetID.Malformed"},
		{"malformed security group", ec2.RunInstancesInput{SecurityGroupIds: []string{"sg-1"}}, "InvalidGroupId.Malformed"},
		{"reserved tag prefix", ec2.RunInstancesInput{TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("aws:x"), Value: aws.String("y")}}}}}, "InvalidParameterValue"},
		{"min above max", ec2.RunInstancesInput{MinCount: aws.Int32(2), MaxCount: aws.Int32(1)}, "InvalidParameterValue"},
		{"over the instance limit", ec2.RunInstancesInput{MinCount: aws.Int32(3), MaxCount: aws.Int32(3)}, "InstanceLimitExceeded"},
		{"client token too long", ec2.RunInstancesInput{ClientToken: aws.String(strings.Repeat("x", 65))}, "InvalidParameterValue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if in.ImageId == nil {
				in.ImageId = aws.String(cmlImage)
			}
			if in.MinCount == nil {
				in.MinCount, in.MaxCount = aws.Int32(1), aws.Int32(1)
			}
			_, err := h.ec2.RunInstances(ctx, &in)
			require.Equal(t, tc.want, apiCode(t, err))
		})
	}
	require.Empty(t, h.sim.Instances(""), "no failed launch left an instance")

	// The limit counts live instances; MaxCount is cut to what is left.
	ids := h.run(t, &ec2.RunInstancesInput{MinCount: aws.Int32(1), MaxCount: aws.Int32(5)})
	require.Len(t, ids, 2)
	_, err := h.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(cmlImage), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	require.Equal(t, "InstanceLimitExceeded", apiCode(t, err))
	require.NoError(t, h.sim.Console().Terminate(ids[0]))
	h.run(t, &ec2.RunInstancesInput{})
}

func TestRunInstancesRecordsTheRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	out, err := h.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String(cmlImage), InstanceType: types.InstanceTypeC5Xlarge, MinCount: aws.Int32(3), MaxCount: aws.Int32(3),
		SubnetId: aws.String("subnet-0123456789abcdef0"), SecurityGroupIds: []string{"sg-0123456789abcdef0", "sg-00000000"},
		KeyName: aws.String("lab-key"), Monitoring: &types.RunInstancesMonitoringEnabled{Enabled: aws.Bool(true)},
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("w")}, {Key: aws.String("empty"), Value: aws.String("")}}},
			{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("vol"), Value: aws.String("only")}}},
		},
	})
	require.NoError(t, err)
	require.Len(t, out.Instances, 3)
	require.Equal(t, OwnerID, aws.ToString(out.OwnerId))
	for i, in := range out.Instances {
		require.Equal(t, int32(i), aws.ToInt32(in.AmiLaunchIndex))
		require.Equal(t, types.InstanceTypeC5Xlarge, in.InstanceType)
		require.Equal(t, "subnet-0123456789abcdef0", aws.ToString(in.SubnetId))
		require.Equal(t, "lab-key", aws.ToString(in.KeyName))
		require.Equal(t, types.MonitoringStatePending, in.Monitoring.State)
		require.Equal(t, []string{"sg-0123456789abcdef0", "sg-00000000"}, []string{aws.ToString(in.SecurityGroups[0].GroupId), aws.ToString(in.SecurityGroups[1].GroupId)})
		tags := map[string]string{}
		for _, tg := range in.Tags {
			tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		require.Equal(t, map[string]string{"Name": "w", "empty": ""}, tags)
	}
	h.clock.Advance(testTimings.MonitoringChange)
	require.Equal(t, types.MonitoringStateEnabled, h.describe(t, aws.ToString(out.Instances[0].InstanceId)).Monitoring.State)

	// The three share one reservation.
	d, err := h.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	require.NoError(t, err)
	require.Len(t, d.Reservations, 1)
	require.Equal(t, aws.ToString(out.ReservationId), aws.ToString(d.Reservations[0].ReservationId))
	require.Len(t, d.Reservations[0].Instances, 3)
}

func TestDescribeInstancesFilters(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	tag := func(k, v string) []types.TagSpecification {
		return []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String(k), Value: aws.String(v)}}}}
	}
	managed := h.run(t, &ec2.RunInstancesInput{TagSpecifications: tag("ManagedBy", "cml-cloud-manager")})[0]
	other := h.run(t, &ec2.RunInstancesInput{TagSpecifications: tag("ManagedBy", "someone-else"), ImageId: aws.String(plainImage)})[0]
	untagged := h.run(t, &ec2.RunInstancesInput{InstanceType: types.InstanceTypeT3Micro})[0]
	h.clock.Advance(testTimings.Pending)
	require.NoError(t, h.sim.Console().Stop(untagged))

	tests := []struct {
		name    string
		filters []types.Filter
		ids     []string
		want    []string
		code    string
	}{
		{name: "tag value", filters: []types.Filter{{Name: aws.String("tag:ManagedBy"), Values: []string{"cml-cloud-manager"}}}, want: []string{managed}},
		{name: "tag glob", filters: []types.Filter{{Name: aws.String("tag:ManagedBy"), Values: []string{"*else"}}}, want: []string{other}},
		{name: "tag values are ORed", filters: []types.Filter{{Name: aws.String("tag:ManagedBy"), Values: []string{"cml-cloud-manager", "someone-else"}}}, want: []string{managed, other}},
		{name: "tag key", filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{"ManagedBy"}}}, want: []string{managed, other}},
		{name: "instance id", filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{untagged}}}, want: []string{untagged}},
		{name: "image id", filters: []types.Filter{{Name: aws.String("image-id"), Values: []string{plainImage}}}, want: []string{other}},
		{name: "state", filters: []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"stopping", "stopped"}}}, want: []string{untagged}},
		{name: "filters are ANDed", filters: []types.Filter{
			{Name: aws.String("tag-key"), Values: []string{"ManagedBy"}},
			{Name: aws.String("instance-state-name"), Values: []string{"running"}},
			{Name: aws.String("image-id"), Values: []string{cmlImage}},
		}, want: []string{managed}},
		{name: "instance type", filters: []types.Filter{{Name: aws.String("instance-type"), Values: []string{"t3.*"}}}, want: []string{untagged}},
		{name: "ids and filters", ids: []string{managed, other}, filters: []types.Filter{{Name: aws.String("image-id"), Values: []string{cmlImage}}}, want: []string{managed}},
		{name: "no match", filters: []types.Filter{{Name: aws.String("tag:Missing"), Values: []string{"*"}}}, want: nil},
		{name: "unknown filter", filters: []types.Filter{{Name: aws.String("colour"), Values: []string{"blue"}}}, code: "InvalidParameterValue"},
		{name: "unknown id", ids: []string{"i-0123456789abcdef0"}, code: "InvalidInstanceID.NotFound"},
		{name: "malformed id", ids: []string{"i-nope"}, code: "InvalidInstanceID.Malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: tc.filters, InstanceIds: tc.ids})
			require.Equal(t, tc.code, apiCode(t, err))
			if tc.code != "" {
				return
			}
			var got []string
			for _, r := range out.Reservations {
				for _, in := range r.Instances {
					got = append(got, aws.ToString(in.InstanceId))
				}
			}
			sort.Strings(got)
			want := slices.Clone(tc.want)
			sort.Strings(want)
			require.Equal(t, want, got)
		})
	}
}

func TestDescribePaging(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	_, err := h.sim.Console().Launch(testRegion, ConsoleLaunch{ImageID: cmlImage, Count: 12, Running: true,
		Tags: map[string]string{"ManagedBy": "cml-cloud-manager"}})
	require.NoError(t, err)
	_, err = h.sim.Console().Launch(testRegion, ConsoleLaunch{ImageID: cmlImage, Count: 3})
	require.NoError(t, err)

	tests := []struct {
		name     string
		filters  []types.Filter
		max      int32
		wantSize []int
	}{
		{name: "all in pages of 5", max: 5, wantSize: []int{5, 5, 5}},
		{name: "filtered in pages of 5", max: 5, filters: []types.Filter{{Name: aws.String("tag:ManagedBy"), Values: []string{"cml-cloud-manager"}}}, wantSize: []int{5, 5, 2}},
		{name: "one page when it fits", max: 1000, wantSize: []int{15}},
		{name: "exactly one page", max: 15, wantSize: []int{15}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sizes []int
			seen := map[string]bool{}
			pager := ec2.NewDescribeInstancesPaginator(h.ec2, &ec2.DescribeInstancesInput{Filters: tc.filters, MaxResults: aws.Int32(tc.max)})
			for pager.HasMorePages() {
				page, err := pager.NextPage(ctx)
				require.NoError(t, err)
				n := 0
				for _, r := range page.Reservations {
					for _, in := range r.Instances {
						require.False(t, seen[aws.ToString(in.InstanceId)], "an instance on two pages")
						seen[aws.ToString(in.InstanceId)] = true
						n++
					}
				}
				sizes = append(sizes, n)
			}
			require.Equal(t, tc.wantSize, sizes)

			sizes = nil
			spager := ec2.NewDescribeInstanceStatusPaginator(h.ec2, &ec2.DescribeInstanceStatusInput{IncludeAllInstances: aws.Bool(true), MaxResults: aws.Int32(tc.max)})
			for spager.HasMorePages() {
				page, err := spager.NextPage(ctx)
				require.NoError(t, err)
				sizes = append(sizes, len(page.InstanceStatuses))
			}
			if tc.filters == nil {
				require.Equal(t, tc.wantSize, sizes)
			}
		})
	}

	t.Run("without IncludeAllInstances only running ones", func(t *testing.T) {
		out, err := h.ec2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{})
		require.NoError(t, err)
		require.Len(t, out.InstanceStatuses, 12)
	})
	t.Run("bad page sizes", func(t *testing.T) {
		_, err := h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(4)})
		require.Equal(t, "InvalidParameterValue", apiCode(t, err))
		_, err = h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), InstanceIds: []string{h.sim.Instances("")[0].ID}})
		require.Equal(t, "InvalidParameterCombination", apiCode(t, err))
		_, err = h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), NextToken: aws.String("garbage")})
		require.Equal(t, "InvalidNextToken", apiCode(t, err))
	})
}

func TestTagsAndMonitoring(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	ctx := context.Background()
	id := h.run(t, &ec2.RunInstancesInput{TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance,
		Tags: []types.Tag{{Key: aws.String("keep"), Value: aws.String("1")}, {Key: aws.String("team"), Value: aws.String("a")}}}}})[0]
	tags := func() map[string]string {
		out := map[string]string{}
		for _, tg := range h.describe(t, id).Tags {
			out[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		return out
	}
	_, err := h.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{
		{Key: aws.String("team"), Value: aws.String("b")}, {Key: aws.String("env"), Value: aws.String("lab")}}})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"keep": "1", "team": "b", "env": "lab"}, tags())

	// A value in DeleteTags deletes only on a match; no value deletes whatever the value.
	_, err = h.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("a")}}})
	require.NoError(t, err)
	require.Equal(t, "b", tags()["team"])
	_, err = h.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("team")}, {Key: aws.String("env")}}})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"keep": "1"}, tags())

	_, err = h.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("aws:x"), Value: aws.String("y")}}})
	require.Equal(t, "InvalidParameterValue", apiCode(t, err))
	_, err = h.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"i-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	require.Equal(t, "InvalidInstanceID.NotFound", apiCode(t, err))

	mon, err := h.ec2.MonitorInstances(ctx, &ec2.MonitorInstancesInput{InstanceIds: []string{id}})
	require.NoError(t, err)
	require.Equal(t, types.MonitoringStatePending, mon.InstanceMonitorings[0].Monitoring.State)
	h.clock.Advance(testTimings.MonitoringChange)
	require.Equal(t, types.MonitoringStateEnabled, h.describe(t, id).Monitoring.State)
	unmon, err := h.ec2.UnmonitorInstances(ctx, &ec2.UnmonitorInstancesInput{InstanceIds: []string{id}})
	require.NoError(t, err)
	require.Equal(t, types.MonitoringStateDisabling, unmon.InstanceMonitorings[0].Monitoring.State)
	h.clock.Advance(testTimings.MonitoringChange)
	require.Equal(t, types.MonitoringStateDisabled, h.describe(t, id).Monitoring.State)
}

func TestDescribeImages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{Regions: []string{testRegion}})
	ctx := context.Background()
	names := func(imgs []types.Image) []string {
		var out []string
		for _, i := range imgs {
			out = append(out, aws.ToString(i.Name))
		}
		sort.Strings(out)
		return out
	}
	tests := []struct {
		name string
		in   ec2.DescribeImagesInput
		want []string
		code string
	}{
		{name: "name glob", in: ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"cisco-cml2.9-*"}}}},
			want: []string{"cisco-cml2.9-lablet-v0.1.6", "cisco-cml2.9-lablet-v0.1.7"}},
		{name: "name with ?", in: ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"cisco-cml2.?-lablet-v0.1.5"}}}},
			want: []string{"cisco-cml2.8-lablet-v0.1.5"}},
		{name: "image id filter", in: ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("image-id"), Values: []string{cmlImage}}}},
			want: []string{"cisco-cml2.9-lablet-v0.1.7"}},
		{name: "by id", in: ec2.DescribeImagesInput{ImageIds: []string{cmlImage}}, want: []string{"cisco-cml2.9-lablet-v0.1.7"}},
		{name: "own images", in: ec2.DescribeImagesInput{Owners: []string{"self"}}, want: []string{"cisco-cml2.8-lablet-v0.1.5", "cisco-cml2.9-lablet-v0.1.6", "cisco-cml2.9-lablet-v0.1.7"}},
		{name: "amazon's images", in: ec2.DescribeImagesInput{Owners: []string{"amazon"}}, want: nil},
		{name: "unknown id", in: ec2.DescribeImagesInput{ImageIds: []string{"ami-0123456789abcdef0"}}, code: "InvalidAMIID.NotFound"},
		{name: "unknown filter", in: ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("colour"), Values: []string{"x"}}}}, code: "InvalidParameterValue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := h.ec2.DescribeImages(ctx, &tc.in)
			require.Equal(t, tc.code, apiCode(t, err))
			if tc.code == "" {
				require.Equal(t, tc.want, names(out.Images))
			}
		})
	}
	out, err := h.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{cmlImage}})
	require.NoError(t, err)
	require.Equal(t, "2026-09-15T10:00:00.000Z", aws.ToString(out.Images[0].CreationDate))
	require.Equal(t, types.ImageStateAvailable, out.Images[0].State)

	img, err := h.sim.Console().RegisterImage(testRegion, "cisco-cml2.10-lablet-v0.2.0", "next", true)
	require.NoError(t, err)
	out, err = h.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img.ID}})
	require.NoError(t, err)
	require.Equal(t, "cisco-cml2.10-lablet-v0.2.0", aws.ToString(out.Images[0].Name))
}

func TestRegionsAreSeparate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	west, _ := sdkClients(t, h.sim.EndpointURL(), "eu-west-1")
	id := h.run(t, &ec2.RunInstancesInput{})[0]
	_, err := west.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	require.Equal(t, "InvalidInstanceID.NotFound", apiCode(t, err))
	_, err = west.StopInstances(context.Background(), &ec2.StopInstancesInput{InstanceIds: []string{id}})
	require.Equal(t, "InvalidInstanceID.NotFound", apiCode(t, err))
	imgs, err := west.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{ImageID("eu-west-1", "cisco-cml2.9-lablet-v0.1.7")}})
	require.NoError(t, err)
	require.Len(t, imgs.Images, 1)
	require.ElementsMatch(t, []string{"eu-west-1", testRegion}, h.sim.Regions())
}
