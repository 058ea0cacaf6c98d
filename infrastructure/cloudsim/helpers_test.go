package cloudsim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testRegion = "us-east-1"

// t0 is where every manual clock of these tests starts.
var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// testTimings are the (default) durations the tests advance the clock by.
var testTimings = Timings{}.withDefaults()

// cmlImage is the seeded AMI with the CloudWatch agent; plainImage has none.
var (
	cmlImage   = ImageID(testRegion, "cisco-cml2.9-lablet-v0.1.7")
	plainImage = ImageID(testRegion, "cisco-cml2.8-lablet-v0.1.5")
)

// harness is a started simulator on a manual clock with real SDK clients
// pointed at it (SDK retries off).
type harness struct {
	sim   *Simulator
	clock *ManualClock
	ec2   *ec2.Client
	cw    *cloudwatch.Client
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	clock := NewManualClock(t0)
	if opts.Clock == nil {
		opts.Clock = clock
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	sim := New(opts)
	require.NoError(t, sim.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, sim.Close()) })
	e, cw := sdkClients(t, sim.EndpointURL(), testRegion)
	return &harness{sim: sim, clock: clock, ec2: e, cw: cw}
}

func sdkClients(t *testing.T, endpoint, region string) (*ec2.Client, *cloudwatch.Client) {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := aws.Config{
		Region:      region,
		Credentials: Credentials(),
		HTTPClient:  plainBodyClient{&http.Client{Transport: tr}},
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		cloudwatch.NewFromConfig(cfg, func(o *cloudwatch.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// run launches count instances with RunInstances and returns their ids.
func (h *harness) run(t *testing.T, in *ec2.RunInstancesInput) []string {
	t.Helper()
	if in.MinCount == nil {
		in.MinCount, in.MaxCount = aws.Int32(1), aws.Int32(1)
	}
	if in.ImageId == nil {
		in.ImageId = aws.String(cmlImage)
	}
	out, err := h.ec2.RunInstances(context.Background(), in)
	require.NoError(t, err)
	ids := make([]string, 0, len(out.Instances))
	for _, i := range out.Instances {
		ids = append(ids, aws.ToString(i.InstanceId))
	}
	return ids
}

// describe returns one instance through DescribeInstances.
func (h *harness) describe(t *testing.T, id string) types.Instance {
	t.Helper()
	out, err := h.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	require.NoError(t, err)
	require.Len(t, out.Reservations, 1)
	require.Len(t, out.Reservations[0].Instances, 1)
	return out.Reservations[0].Instances[0]
}

func (h *harness) state(t *testing.T, id string) string {
	t.Helper()
	return string(h.describe(t, id).State.Name)
}

// plainBodyClient hides the WriteTo of request bodies, as
// infrastructure/aws does, against aws/aws-sdk-go-v2#2737: with a server as
// fast as this one, net/http may otherwise close the connection under a
// response ("use of closed network connection").
type plainBodyClient struct{ next *http.Client }

func (c plainBodyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = struct{ io.ReadCloser }{req.Body}
	}
	return c.next.Do(req)
}

// apiCode returns the AWS error code of err, or "" when err is nil.
func apiCode(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var apiErr smithy.APIError
	require.True(t, errors.As(err, &apiErr), "not an API error: %v", err)
	return apiErr.ErrorCode()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
