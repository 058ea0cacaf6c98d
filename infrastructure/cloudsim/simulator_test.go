package cloudsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/stretchr/testify/require"
)

// throttlePattern makes n sequential DescribeImages calls and records which
// ones were throttled.
func throttlePattern(t *testing.T, h *harness, n int) []bool {
	t.Helper()
	out := make([]bool, n)
	for i := range out {
		_, err := h.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"}})
		code := apiCode(t, err)
		require.Contains(t, []string{"", "RequestLimitExceeded"}, code)
		out[i] = code != ""
	}
	return out
}

func TestFaultsAreDeterministicWhenSeeded(t *testing.T) {
	t.Parallel()
	storm := Faults{ThrottleRate: 0.5}
	run := func(seed uint64) []bool {
		h := newHarness(t, Options{Seed: seed})
		h.sim.SetFaults("", storm)
		return throttlePattern(t, h, 60)
	}
	a, b, c := run(7), run(7), run(8)
	require.Equal(t, a, b, "same seed, same throttled calls")
	require.NotEqual(t, a, c, "another seed, other throttled calls")
	throttled := 0
	for _, x := range a {
		if x {
			throttled++
		}
	}
	require.InDelta(t, 30, throttled, 15, "about half of the calls are throttled")
}

func TestFaultKnobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, Options{})
	id := h.seedRunning(t, cmlImage, true)
	describe := func() error {
		_, err := h.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		return err
	}
	metrics := func() error {
		_, err := h.cw.GetMetricData(ctx, &cloudwatch.GetMetricDataInput{
			MetricDataQueries: []cwtypes.MetricDataQuery{cpuQuery("c", id, 60, "Average")},
			StartTime:         aws.Time(t0), EndTime: aws.Time(t0.Add(time.Hour)),
		})
		return err
	}

	h.sim.SetFaults("", Faults{ThrottleRate: 1})
	require.Equal(t, "RequestLimitExceeded", apiCode(t, describe()))
	require.Equal(t, "Throttling", apiCode(t, metrics()), "CloudWatch's legacy code comes through X-Amzn-Query-Error")

	h.sim.SetFaults("ec2:DescribeInstances", Faults{})
	require.NoError(t, describe(), "an API's own faults win over the global ones")
	require.Equal(t, "Throttling", apiCode(t, metrics()))

	h.sim.ClearFaults()
	h.sim.SetFaults("cloudwatch:GetMetricData", Faults{ServerErrorRate: 1})
	require.Equal(t, "InternalServiceError", apiCode(t, metrics()))
	h.sim.SetFaults("cloudwatch:GetMetricData", Faults{})
	h.sim.SetFaults("ec2:DescribeInstances", Faults{ServerErrorRate: 1})
	require.Equal(t, "InternalError", apiCode(t, describe()))
	h.sim.ClearFaults()

	h.sim.FailNext("ec2:DescribeInstances", "UnauthorizedOperation", 2)
	require.Equal(t, "UnauthorizedOperation", apiCode(t, describe()))
	require.Equal(t, "UnauthorizedOperation", apiCode(t, describe()))
	require.NoError(t, describe())
	h.sim.FailNext("", "AccessDenied", 1)
	require.Equal(t, "AccessDenied", apiCode(t, metrics()))
	require.NoError(t, metrics())

	// Latency delays the answer; a client that gives up early still leaves
	// the change made.
	h.sim.SetFaults("ec2:RunInstances", Faults{Latency: 300 * time.Millisecond})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	before := len(h.sim.Instances(""))
	_, err := h.ec2.RunInstances(short, &ec2.RunInstancesInput{ImageId: aws.String(cmlImage), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, h.sim.Instances(""), before+1)

	h.sim.SetFaults("ec2:DescribeImages", Faults{Latency: 100 * time.Millisecond})
	start := time.Now()
	_, err = h.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
}

func TestCallCounters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, Options{})
	id := h.run(t, &ec2.RunInstancesInput{})[0]
	h.describe(t, id)
	h.describe(t, id)
	_, err := h.cw.GetMetricData(ctx, &cloudwatch.GetMetricDataInput{
		MetricDataQueries: []cwtypes.MetricDataQuery{cpuQuery("c", id, 60, "Average")},
		StartTime:         aws.Time(t0), EndTime: aws.Time(t0.Add(time.Hour)),
	})
	require.NoError(t, err)
	h.sim.FailNext("ec2:StopInstances", "RequestLimitExceeded", 1)
	_, err = h.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	require.Error(t, err)
	require.NoError(t, h.sim.Console().Terminate(id), "out-of-band changes are not counted")

	require.Equal(t, map[string]int64{
		"ec2:RunInstances": 1, "ec2:DescribeInstances": 2, "ec2:StopInstances": 1, "cloudwatch:GetMetricData": 1,
	}, h.sim.Calls())
	require.Equal(t, int64(4), h.sim.CallCount("ec2"))
	require.Equal(t, int64(1), h.sim.CallCount("cloudwatch"))
	require.Equal(t, int64(5), h.sim.CallCount(""))
	h.sim.ResetCalls()
	require.Empty(t, h.sim.Calls())
}

func TestRequestsNeedASignature(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	tests := []struct {
		name, path, body, auth string
		status                 int
		code                   string
	}{
		{name: "EC2 unsigned", path: "/", body: "Action=DescribeInstances&Version=2016-11-15", status: 401, code: "AuthFailure"},
		{name: "EC2 not SigV4", path: "/", body: "Action=DescribeInstances&Version=2016-11-15", auth: "Basic dXNlcjpwYXNz", status: 401, code: "AuthFailure"},
		{name: "EC2 any signature", path: "/", body: "Action=DescribeInstances&Version=2016-11-15",
			auth: "AWS4-HMAC-SHA256 Credential=AKIAanything/20261128/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=00", status: 200},
		{name: "EC2 bad scope", path: "/", body: "Action=DescribeInstances&Version=2016-11-15",
			auth: "AWS4-HMAC-SHA256 Credential=AKIAanything/20261128/us-east-1/ec2, SignedHeaders=host, Signature=00", status: 401, code: "AuthFailure"},
		{name: "EC2 unknown action", path: "/", body: "Action=DescribeVolcanoes&Version=2016-11-15",
			auth: "AWS4-HMAC-SHA256 Credential=AKIAanything/20261128/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00", status: 400, code: "InvalidAction"},
		{name: "EC2 wrong version", path: "/", body: "Action=DescribeInstances&Version=2014-01-01",
			auth: "AWS4-HMAC-SHA256 Credential=AKIAanything/20261128/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00", status: 400, code: "NoSuchVersion"},
		{name: "CloudWatch unsigned", path: "/service/GraniteServiceVersion20100801/operation/GetMetricData", status: 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, h.sim.EndpointURL()+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
				req.Header.Set("X-Amz-Date", "20261128T120000Z")
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tc.status, resp.StatusCode, string(body))
			if tc.code != "" {
				var doc xmlErrorResponse
				require.NoError(t, xml.Unmarshal(body, &doc))
				require.Equal(t, tc.code, doc.Errors[0].Code)
				require.NotEmpty(t, doc.RequestID)
			}
		})
	}
	require.Equal(t, int64(3), h.sim.CallCount(""), "only signed requests are counted")
	http.DefaultClient.CloseIdleConnections()
}

// recorder is a Controllers that remembers what it was told.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Boot(id string)     { r.add("boot " + id) }
func (r *recorder) Shutdown(id string) { r.add("shutdown " + id) }
func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}
func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func TestControllersHearOfBootsAndShutdowns(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h := newHarness(t, Options{Controllers: rec, TickInterval: 5 * time.Millisecond})
	id := h.run(t, &ec2.RunInstancesInput{})[0]
	require.Empty(t, rec.seen(), "pending: nothing yet")
	h.clock.Advance(testTimings.Pending)
	// No API call: the background tick applies the change.
	eventually(t, func() bool { return len(rec.seen()) == 1 }, "boot")
	require.NoError(t, h.sim.Console().Stop(id))
	h.clock.Advance(testTimings.Stopping)
	require.NoError(t, h.sim.Console().Start(id))
	h.clock.Advance(testTimings.Pending)
	_, err := h.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	require.NoError(t, err)
	eventually(t, func() bool { return len(rec.seen()) == 4 }, "four events")
	require.Equal(t, []string{"boot " + id, "shutdown " + id, "boot " + id, "shutdown " + id}, rec.seen())
}

func TestCMLListener(t *testing.T) {
	t.Parallel()
	cml := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "cml "+r.URL.Path)
	})
	h := newHarness(t, Options{CMLHandler: cml})
	require.True(t, strings.HasPrefix(h.sim.CMLBaseURL(), "https://127.0.0.1:"))
	require.Equal(t, h.sim.CMLBaseURL()+"/controllers/{instance_id}", h.sim.CMLEndpointTemplate())

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(h.sim.CMLCertificatePEM()))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(h.sim.CMLBaseURL() + "/controllers/i-0123456789abcdef0/api/v0/system_information")
	require.NoError(t, err, "the certificate verifies for 127.0.0.1")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "cml /controllers/i-0123456789abcdef0/api/v0/system_information", string(body))

	untrusted := &http.Transport{}
	defer untrusted.CloseIdleConnections()
	_, err = (&http.Client{Transport: untrusted}).Get(h.sim.CMLBaseURL() + "/controllers/x")
	require.Error(t, err, "self-signed: unknown to the system pool")

	plain := newHarness(t, Options{})
	require.Empty(t, plain.sim.CMLBaseURL())
	require.Empty(t, plain.sim.CMLEndpointTemplate())
}

func TestConsoleChangesOutOfBand(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	c := h.sim.Console()
	ins, err := c.Launch(testRegion, ConsoleLaunch{ImageID: cmlImage, Running: true, Tags: map[string]string{"a": "1"}})
	require.NoError(t, err)
	id := ins[0].ID
	before := h.describe(t, id)

	ip, err := c.ChangePublicIP(id)
	require.NoError(t, err)
	require.NotEqual(t, aws.ToString(before.PublicIpAddress), ip)
	require.Equal(t, ip, aws.ToString(h.describe(t, id).PublicIpAddress))

	require.NoError(t, c.SetTags(id, map[string]string{"b": "2"}, []string{"a"}))
	got, ok := h.sim.Instance(id)
	require.True(t, ok)
	require.Equal(t, map[string]string{"b": "2"}, got.Tags)
	require.Error(t, c.SetTags(id, map[string]string{"aws:x": "y"}, nil))

	require.NoError(t, c.Stop(id))
	require.Equal(t, StateStopping, h.state(t, id))
	require.Error(t, c.Stop("i-0123456789abcdef0"))
	h.clock.Advance(testTimings.Stopping)
	_, err = c.ChangePublicIP(id)
	require.Error(t, err, "a stopped instance has no public IP")
	require.Equal(t, map[string]int64{"ec2:DescribeInstances": 3}, h.sim.Calls(), "the console makes no API calls")

	_, err = c.Launch("not a region", ConsoleLaunch{ImageID: cmlImage})
	require.Error(t, err)
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{Regions: []string{testRegion}})
	base := h.sim.EndpointURL()
	do := func(t *testing.T, method, path, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, bytes.NewBufferString(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, out
	}
	defer http.DefaultClient.CloseIdleConnections()

	status, body := do(t, "POST", "/sim/instances", `{"region":"us-east-1","image_name":"cisco-cml2.9-lablet-v0.1.7","count":2,"running":true,"tags":{"ManagedBy":"cml-cloud-manager"}}`)
	require.Equal(t, http.StatusCreated, status, string(body))
	var launched []Instance
	require.NoError(t, json.Unmarshal(body, &launched))
	require.Len(t, launched, 2)
	id := launched[0].ID

	tests := []struct {
		name, method, path, body string
		status                   int
		contains                 string
	}{
		{"index", "GET", "/sim/", "", 200, `"endpoint_url"`},
		{"list", "GET", "/sim/instances?region=us-east-1", "", 200, id},
		{"one", "GET", "/sim/instances/" + id, "", 200, `"state": "running"`},
		{"missing", "GET", "/sim/instances/i-0123456789abcdef0", "", 404, "no such instance"},
		{"tags", "PUT", "/sim/instances/" + id + "/tags", `{"set":{"team":"x"},"remove":["ManagedBy"]}`, 200, `"team": "x"`},
		{"status checks", "PUT", "/sim/instances/" + id + "/status-checks", `{"system":"impaired"}`, 200, `"system_status": "impaired"`},
		{"agent", "PUT", "/sim/instances/" + id + "/cloudwatch-agent", `{"enabled":false}`, 200, `"cloudwatch_agent": false`},
		{"new public ip", "POST", "/sim/instances/" + id + "/public-ip", "", 200, `"public_ip"`},
		{"stop", "POST", "/sim/instances/" + id + "/stop", "", 200, `"state": "stopping"`},
		{"stop again while stopping is fine", "POST", "/sim/instances/" + id + "/stop", "", 200, `"state": "stopping"`},
		{"start while stopping", "POST", "/sim/instances/" + id + "/start", "", 409, "IncorrectInstanceState"},
		{"unknown op", "POST", "/sim/instances/" + id + "/explode", "", 404, "no operation"},
		{"unknown field", "PUT", "/sim/instances/" + id + "/tags", `{"sett":{}}`, 400, "invalid JSON"},
		{"images", "GET", "/sim/images?region=us-east-1", "", 200, "cisco-cml2.9-lablet-v0.1.7"},
		{"faults", "PUT", "/sim/faults", `{"global":{"throttle_rate":0.25},"apis":{"ec2:RunInstances":{"server_error_rate":1,"latency_ms":5}}}`, 204, ""},
		{"faults read", "GET", "/sim/faults", "", 200, `"server_error_rate": 1`},
		{"bad faults", "PUT", "/sim/faults", `{"global":{"throttle_rate":2}}`, 400, "between 0 and 1"},
		{"next fault", "POST", "/sim/faults/next", `{"api":"ec2:DescribeInstances","code":"AuthFailure"}`, 204, ""},
		{"calls", "GET", "/sim/calls", "", 200, "{}"},
	}
	for _, tc := range tests {
		status, body := do(t, tc.method, tc.path, tc.body)
		require.Equal(t, tc.status, status, "%s: %s", tc.name, body)
		require.Contains(t, string(body), tc.contains, tc.name)
	}
	global, per := h.sim.Faults()
	require.Equal(t, Faults{ThrottleRate: 0.25}, global)
	require.Equal(t, Faults{ServerErrorRate: 1, Latency: 5 * time.Millisecond}, per["ec2:RunInstances"])
	h.sim.ClearFaults()
	h.sim.SetFaults("", Faults{})
	h.sim.FailNext("ec2:DescribeInstances", "AuthFailure", 1)
	_, err := h.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	require.Equal(t, "AuthFailure", apiCode(t, err))
	status, body = do(t, "GET", "/sim/calls", "")
	require.Equal(t, 200, status)
	require.Contains(t, string(body), `"ec2:DescribeInstances": 1`)
	status, _ = do(t, "DELETE", "/sim/calls", "")
	require.Equal(t, http.StatusNoContent, status)
	require.Empty(t, h.sim.Calls())
	status, _ = do(t, "DELETE", "/sim/faults", "")
	require.Equal(t, http.StatusNoContent, status)
}

func TestStartAndClose(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	sim := New(Options{Logger: quietLogger()})
	require.Empty(t, sim.EndpointURL())
	require.NoError(t, sim.Close(), "closing an unstarted simulator is fine")
	require.NoError(t, sim.Start(ctx))
	require.Error(t, sim.Start(ctx), "only once")
	endpoint := sim.EndpointURL()
	tr := &http.Transport{DisableKeepAlives: true}
	client := &http.Client{Transport: tr}
	resp, err := client.Get(endpoint + "/sim/")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	cancel() // the context ends the simulator
	eventually(t, func() bool {
		resp, err := client.Get(endpoint + "/sim/")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err != nil
	}, "the listener closes")
	require.NoError(t, sim.Close())

	other := New(Options{Logger: quietLogger()})
	require.NoError(t, other.Start(context.Background()))
	defer other.Close()
	taken := New(Options{Logger: quietLogger(), Addr: strings.TrimPrefix(other.EndpointURL(), "http://")})
	require.Error(t, taken.Start(context.Background()), "the address is in use")
	public := New(Options{Logger: quietLogger(), Addr: "0.0.0.0:0"})
	require.ErrorContains(t, public.Start(context.Background()), "loopback only")
	publicCML := New(Options{Logger: quietLogger(), CMLAddr: "0.0.0.0:0", CMLHandler: http.NotFoundHandler()})
	require.ErrorContains(t, publicCML.Start(context.Background()), "loopback only")
}
