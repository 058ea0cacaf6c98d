package aws

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	region      = "us-east-1"
	otherRegion = "eu-west-1"
)

// t0 is where every manual clock of these tests starts.
var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

var (
	cmlImage   = cloudsim.ImageID(region, "cisco-cml2.9-lablet-v0.1.7") // with the CloudWatch agent
	olderImage = cloudsim.ImageID(region, "cisco-cml2.9-lablet-v0.1.6") // with the CloudWatch agent
	plainImage = cloudsim.ImageID(region, "cisco-cml2.8-lablet-v0.1.5") // without
)

// simTimings are the simulator's default durations, which the tests
// advance the clock by.
var simTimings = struct{ pending, stopping, shuttingDown, status, monitoring time.Duration }{
	3 * time.Second, 3 * time.Second, 2 * time.Second, 5 * time.Second, time.Second,
}

// env is a started simulator on a manual clock and a Provider pointed at it.
type env struct {
	sim   *cloudsim.Simulator
	clock *cloudsim.ManualClock
	p     *Provider
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// simulatorCredentials are the simulator's static keys, passed the way the
// service passes them in CLOUD=simulated: through LoadDefaultConfig.
func simulatorCredentials() func(*config.LoadOptions) error {
	return config.WithCredentialsProvider(cloudsim.Credentials())
}

// newEnv starts a simulator and a provider. SDK retries are off unless
// opts.MaxAttempts says otherwise.
func newEnv(t testing.TB, simOpts cloudsim.Options, opts Options) *env {
	t.Helper()
	clock := cloudsim.NewManualClock(t0)
	simOpts.Clock = clock
	if simOpts.Logger == nil {
		simOpts.Logger = quietLogger()
	}
	sim := cloudsim.New(simOpts)
	require.NoError(t, sim.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, sim.Close()) })
	if opts.Regions == nil {
		opts.Regions = []string{region, otherRegion}
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 1
	}
	opts.EndpointURL = sim.EndpointURL()
	opts.Clock = clock
	opts.Logger = quietLogger()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	opts.HTTPClient = &http.Client{Transport: tr}
	opts.LoadOptions = append(opts.LoadOptions, simulatorCredentials())
	p, err := New(context.Background(), opts)
	require.NoError(t, err)
	return &env{sim: sim, clock: clock, p: p}
}

// spec is a valid launch spec for worker id.
func spec(id string) application.LaunchSpec {
	return application.LaunchSpec{
		ClientToken: id, WorkerID: id, Region: region, Name: "worker " + id, ImageID: cmlImage,
		InstanceType: "m5zn.metal", SubnetID: "subnet-0123456789abcdef0",
		SecurityGroupIDs: []string{"sg-0123456789abcdef0"}, KeyName: "cml", DetailedMonitoring: true,
	}
}

func (e *env) launch(t testing.TB, id string) application.Instance {
	t.Helper()
	inst, err := e.p.Launch(context.Background(), spec(id))
	require.NoError(t, err)
	return inst
}

// seed launches n running instances out of band, tagged as managed or not.
func (e *env) seed(t testing.TB, regionName, image string, n int, managed bool) []string {
	t.Helper()
	tags := map[string]string{"team": "lab"}
	if managed {
		tags["ManagedBy"] = "cml-cloud-manager"
	}
	var ids []string
	for n > 0 {
		count := min(n, 1000) // RunInstances' MaxCount limit
		ins, err := e.sim.Console().Launch(regionName, cloudsim.ConsoleLaunch{ImageID: image, Count: count, Running: true,
			DetailedMonitoring: true, Tags: tags})
		require.NoError(t, err)
		for _, in := range ins {
			ids = append(ids, in.ID)
		}
		n -= count
	}
	return ids
}

// requireCloudError checks that err is a *CloudError of kind with code.
func requireCloudError(t testing.TB, err error, kind application.CloudErrorKind, code string) *application.CloudError {
	t.Helper()
	require.Error(t, err)
	var ce *application.CloudError
	require.True(t, errors.As(err, &ce), "not a CloudError: %v", err)
	require.Equal(t, kind, ce.Kind, "%v", err)
	require.Equal(t, code, ce.Code, "%v", err)
	return ce
}
