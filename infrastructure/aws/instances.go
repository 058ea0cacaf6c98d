package aws

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Operation names, as CloudError.Op and the simulator's call counters
// spell them.
const (
	opRunInstances           = "ec2:RunInstances"
	opStartInstances         = "ec2:StartInstances"
	opStopInstances          = "ec2:StopInstances"
	opTerminateInstances     = "ec2:TerminateInstances"
	opCreateTags             = "ec2:CreateTags"
	opDeleteTags             = "ec2:DeleteTags"
	opMonitorInstances       = "ec2:MonitorInstances"
	opUnmonitorInstances     = "ec2:UnmonitorInstances"
	opDescribeInstances      = "ec2:DescribeInstances"
	opDescribeInstanceStatus = "ec2:DescribeInstanceStatus"
	opDescribeImages         = "ec2:DescribeImages"
	opGetMetricData          = "cloudwatch:GetMetricData"
)

// maxClientTokenLength is EC2's limit on ClientToken.
const maxClientTokenLength = 64

// liveStates are the instance states an import may pick up.
var liveStates = []string{
	string(types.InstanceStateNamePending), string(types.InstanceStateNameRunning),
	string(types.InstanceStateNameStopping), string(types.InstanceStateNameStopped),
}

// maxFilterValues bounds the values of one filter in a request.
const maxFilterValues = 200

func invalid(op, format string, args ...any) error {
	return &application.CloudError{Kind: application.CloudInvalid, Op: op, Message: fmt.Sprintf(format, args...)}
}

// Launch runs one instance with RunInstances. The ClientToken makes a
// repeated launch (after a timeout, or by a job that ran twice) return the
// instance of the first call instead of a second instance.
func (p *Provider) Launch(ctx context.Context, spec application.LaunchSpec) (application.Instance, error) {
	c, err := p.region(opRunInstances, spec.Region)
	if err != nil {
		return application.Instance{}, err
	}
	switch {
	case spec.ClientToken == "" || len(spec.ClientToken) > maxClientTokenLength:
		return application.Instance{}, invalid(opRunInstances, "the client token must have 1 to %d characters", maxClientTokenLength)
	case !printableASCII(spec.ClientToken):
		return application.Instance{}, invalid(opRunInstances, "the client token must be printable ASCII")
	case spec.WorkerID == "":
		return application.Instance{}, invalid(opRunInstances, "the worker id is missing")
	case spec.ImageID == "":
		return application.Instance{}, invalid(opRunInstances, "the AMI id is missing")
	case spec.InstanceType == "":
		return application.Instance{}, invalid(opRunInstances, "the instance type is missing")
	}
	in := &ec2.RunInstancesInput{
		ClientToken:  awssdk.String(spec.ClientToken),
		ImageId:      awssdk.String(spec.ImageID),
		InstanceType: types.InstanceType(spec.InstanceType),
		MinCount:     awssdk.Int32(1),
		MaxCount:     awssdk.Int32(1),
		Monitoring:   &types.RunInstancesMonitoringEnabled{Enabled: awssdk.Bool(spec.DetailedMonitoring)},
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeInstance,
			Tags:         sdkTags(p.launchTags(spec)),
		}},
	}
	if spec.SubnetID != "" {
		in.SubnetId = awssdk.String(spec.SubnetID)
	}
	if len(spec.SecurityGroupIDs) > 0 {
		in.SecurityGroupIds = slices.Clone(spec.SecurityGroupIDs)
	}
	if spec.KeyName != "" {
		in.KeyName = awssdk.String(spec.KeyName)
	}
	out, err := c.ec2.RunInstances(ctx, in)
	if err != nil {
		return application.Instance{}, classify(opRunInstances, err)
	}
	if len(out.Instances) != 1 {
		return application.Instance{}, &application.CloudError{Kind: application.CloudUnknown, Op: opRunInstances,
			Message: fmt.Sprintf("RunInstances returned %d instances instead of 1", len(out.Instances))}
	}
	inst := toInstance(spec.Region, out.Instances[0])
	if len(inst.Tags) == 0 { // RunInstances does not always echo the tags
		inst.Tags = p.launchTags(spec)
	}
	p.log.InfoContext(ctx, "instance launched", slog.String("region", spec.Region),
		slog.String("worker_id", spec.WorkerID), slog.String("instance_id", inst.InstanceID))
	return inst, nil
}

// launchTags are the tags of a new instance: the configured defaults, then
// the spec's own, then the product's reserved tags, each winning over the
// ones before.
func (p *Provider) launchTags(spec application.LaunchSpec) map[string]string {
	tags := maps.Clone(p.defaultTags)
	if tags == nil {
		tags = map[string]string{}
	}
	maps.Copy(tags, spec.Tags)
	if spec.Name != "" {
		tags["Name"] = spec.Name
	}
	tags[worker.TagManagedBy] = worker.TagManagedByValue
	tags[worker.TagWorkerID] = spec.WorkerID
	return tags
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func sdkTags(tags map[string]string) []types.Tag {
	out := make([]types.Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, types.Tag{Key: awssdk.String(k), Value: awssdk.String(tags[k])})
	}
	return out
}

// Start starts a stopped instance; starting a running one is a no-op in EC2.
func (p *Provider) Start(ctx context.Context, region, instanceID string) error {
	c, err := p.region(opStartInstances, region)
	if err != nil {
		return err
	}
	_, err = c.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{instanceID}})
	return classify(opStartInstances, err)
}

// Stop stops a running instance.
func (p *Provider) Stop(ctx context.Context, region, instanceID string) error {
	c, err := p.region(opStopInstances, region)
	if err != nil {
		return err
	}
	_, err = c.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{instanceID}})
	return classify(opStopInstances, err)
}

// Terminate terminates an instance.
func (p *Provider) Terminate(ctx context.Context, region, instanceID string) error {
	c, err := p.region(opTerminateInstances, region)
	if err != nil {
		return err
	}
	_, err = c.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{instanceID}})
	return classify(opTerminateInstances, err)
}

// SetTags creates or overwrites set (CreateTags) and deletes the keys of
// remove whatever their value (DeleteTags); an empty side makes no call.
func (p *Provider) SetTags(ctx context.Context, region, instanceID string, set map[string]string, remove []string) error {
	c, err := p.region(opCreateTags, region)
	if err != nil {
		return err
	}
	if len(set) > 0 {
		_, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{instanceID}, Tags: sdkTags(set)})
		if err != nil {
			return classify(opCreateTags, err)
		}
	}
	if len(remove) > 0 {
		keys := make([]types.Tag, 0, len(remove))
		for _, k := range slices.Sorted(slices.Values(remove)) {
			keys = append(keys, types.Tag{Key: awssdk.String(k)}) // no Value: delete whatever the value
		}
		_, err := c.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{instanceID}, Tags: keys})
		if err != nil {
			return classify(opDeleteTags, err)
		}
	}
	return nil
}

// SetDetailedMonitoring switches detailed CloudWatch monitoring with
// MonitorInstances or UnmonitorInstances.
func (p *Provider) SetDetailedMonitoring(ctx context.Context, region, instanceID string, enabled bool) error {
	op := opUnmonitorInstances
	if enabled {
		op = opMonitorInstances
	}
	c, err := p.region(op, region)
	if err != nil {
		return err
	}
	if enabled {
		_, err = c.ec2.MonitorInstances(ctx, &ec2.MonitorInstancesInput{InstanceIds: []string{instanceID}})
	} else {
		_, err = c.ec2.UnmonitorInstances(ctx, &ec2.UnmonitorInstancesInput{InstanceIds: []string{instanceID}})
	}
	return classify(op, err)
}

// DescribeManaged reads every instance tagged ManagedBy=cml-cloud-manager
// with one paged DescribeInstances, and the status checks of the whole
// region with one paged DescribeInstanceStatus (IncludeAllInstances): a
// fixed number of calls per page, whatever the number of instances.
func (p *Provider) DescribeManaged(ctx context.Context, region string) ([]application.Instance, error) {
	c, err := p.region(opDescribeInstances, region)
	if err != nil {
		return nil, err
	}
	out, pages, err := p.describeInstances(ctx, c, region, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: awssdk.String("tag:" + worker.TagManagedBy), Values: []string{worker.TagManagedByValue}}},
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	statuses, statusPages, err := p.describeStatuses(ctx, c, &ec2.DescribeInstanceStatusInput{
		IncludeAllInstances: awssdk.Bool(true), MaxResults: awssdk.Int32(p.pageSize),
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if st, ok := statuses[out[i].InstanceID]; ok {
			out[i].SystemStatus, out[i].InstanceStatus = st[0], st[1]
		}
	}
	p.log.DebugContext(ctx, "managed instances described", slog.String("region", region),
		slog.Int("instances", len(out)), slog.Int("instance_pages", pages), slog.Int("status_pages", statusPages))
	return out, nil
}

// describeInstances follows every page of a DescribeInstances query (page
// size p.pageSize unless the input names instances).
func (p *Provider) describeInstances(ctx context.Context, c *regionClients, region string, in *ec2.DescribeInstancesInput) ([]application.Instance, int, error) {
	if len(in.InstanceIds) == 0 {
		in.MaxResults = awssdk.Int32(p.pageSize)
	}
	var out []application.Instance
	pages := 0
	pager := ec2.NewDescribeInstancesPaginator(c.ec2, in)
	for pager.HasMorePages() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, pages, classify(opDescribeInstances, err)
		}
		pages++
		for _, r := range page.Reservations {
			for _, inst := range r.Instances {
				out = append(out, toInstance(region, inst))
			}
		}
	}
	return out, pages, nil
}

// describeStatuses follows every page of DescribeInstanceStatus and returns
// the system and instance status of each instance.
func (p *Provider) describeStatuses(ctx context.Context, c *regionClients, in *ec2.DescribeInstanceStatusInput) (map[string][2]string, int, error) {
	out := map[string][2]string{}
	pages := 0
	pager := ec2.NewDescribeInstanceStatusPaginator(c.ec2, in)
	for pager.HasMorePages() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, pages, classify(opDescribeInstanceStatus, err)
		}
		pages++
		for _, st := range page.InstanceStatuses {
			if st.InstanceId == nil {
				continue
			}
			var sys, inst string
			if st.SystemStatus != nil {
				sys = string(st.SystemStatus.Status)
			}
			if st.InstanceStatus != nil {
				inst = string(st.InstanceStatus.Status)
			}
			out[*st.InstanceId] = [2]string{sys, inst}
		}
	}
	return out, pages, nil
}

// DescribeInstance returns one instance with its status checks; a missing
// or malformed id is a CloudNotFound error.
func (p *Provider) DescribeInstance(ctx context.Context, region, instanceID string) (application.Instance, error) {
	c, err := p.region(opDescribeInstances, region)
	if err != nil {
		return application.Instance{}, err
	}
	found, _, err := p.describeInstances(ctx, c, region, &ec2.DescribeInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		return application.Instance{}, err
	}
	idx := slices.IndexFunc(found, func(i application.Instance) bool { return i.InstanceID == instanceID })
	if idx < 0 {
		return application.Instance{}, &application.CloudError{Kind: application.CloudNotFound, Op: opDescribeInstances,
			Code: "InvalidInstanceID.NotFound", Message: fmt.Sprintf("instance %s does not exist", instanceID)}
	}
	inst := found[idx]
	statuses, _, err := p.describeStatuses(ctx, c, &ec2.DescribeInstanceStatusInput{
		InstanceIds: []string{instanceID}, IncludeAllInstances: awssdk.Bool(true),
	})
	if err != nil {
		return application.Instance{}, err
	}
	if st, ok := statuses[instanceID]; ok {
		inst.SystemStatus, inst.InstanceStatus = st[0], st[1]
	}
	return inst, nil
}

// FindInstances looks instances up for an import, by AMI id or by AMI name
// pattern (DescribeImages with a name filter first), skipping terminated and
// shutting-down instances. Managed and unmanaged instances are both
// returned; the caller decides.
func (p *Provider) FindInstances(ctx context.Context, region string, q application.InstanceQuery) ([]application.Instance, error) {
	c, err := p.region(opDescribeInstances, region)
	if err != nil {
		return nil, err
	}
	var imageIDs []string
	switch {
	case (q.AMIID == "") == (q.AMINamePattern == ""):
		return nil, invalid(opDescribeInstances, "set exactly one of the AMI id and the AMI name pattern")
	case q.AMIID != "":
		imageIDs = []string{q.AMIID}
	default:
		pager := ec2.NewDescribeImagesPaginator(c.ec2, &ec2.DescribeImagesInput{
			Filters:    []types.Filter{{Name: awssdk.String("name"), Values: []string{q.AMINamePattern}}},
			Owners:     p.imageOwners,
			MaxResults: awssdk.Int32(1000),
		})
		for pager.HasMorePages() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return nil, classify(opDescribeImages, err)
			}
			for _, img := range page.Images {
				if img.ImageId != nil {
					imageIDs = append(imageIDs, *img.ImageId)
				}
			}
		}
	}
	var out []application.Instance
	for chunk := range slices.Chunk(imageIDs, maxFilterValues) {
		found, _, err := p.describeInstances(ctx, c, region, &ec2.DescribeInstancesInput{Filters: []types.Filter{
			{Name: awssdk.String("image-id"), Values: chunk},
			{Name: awssdk.String("instance-state-name"), Values: liveStates},
		}})
		if err != nil {
			return nil, err
		}
		for _, inst := range found {
			if inst.State != worker.EC2Terminated && inst.State != worker.EC2ShuttingDown {
				out = append(out, inst)
			}
		}
	}
	return out, nil
}

// toInstance converts an SDK instance.
func toInstance(region string, in types.Instance) application.Instance {
	out := application.Instance{
		InstanceID:   awssdk.ToString(in.InstanceId),
		Region:       region,
		InstanceType: string(in.InstanceType),
		ImageID:      awssdk.ToString(in.ImageId),
		PublicIP:     awssdk.ToString(in.PublicIpAddress),
		PrivateIP:    awssdk.ToString(in.PrivateIpAddress),
		LaunchTime:   awssdk.ToTime(in.LaunchTime).UTC(),
		Tags:         make(map[string]string, len(in.Tags)),
	}
	if in.State != nil {
		out.State = worker.EC2State(in.State.Name)
	}
	if in.Monitoring != nil {
		out.Monitoring = string(in.Monitoring.State)
	}
	for _, t := range in.Tags {
		if t.Key != nil {
			out.Tags[*t.Key] = awssdk.ToString(t.Value)
		}
	}
	return out
}
