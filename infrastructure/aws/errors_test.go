package aws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
)

func TestKindOfCode(t *testing.T) {
	t.Parallel()
	tests := map[string]application.CloudErrorKind{
		"RequestLimitExceeded":             application.CloudThrottled,
		"Throttling":                       application.CloudThrottled,
		"ThrottlingException":              application.CloudThrottled,
		"InternalError":                    application.CloudUnavailable,
		"ServiceUnavailable":               application.CloudUnavailable,
		"Unavailable":                      application.CloudUnavailable,
		"RequestTimeout":                   application.CloudTimeout,
		"UnauthorizedOperation":            application.CloudAuth,
		"AuthFailure":                      application.CloudAuth,
		"InvalidClientTokenId":             application.CloudAuth,
		"SignatureDoesNotMatch":            application.CloudAuth,
		"AccessDenied":                     application.CloudAuth,
		"AccessDeniedException":            application.CloudAuth,
		"OptInRequired":                    application.CloudAuth,
		"InvalidParameterValue":            application.CloudInvalid,
		"InvalidParameterCombination":      application.CloudInvalid,
		"InvalidParameter":                 application.CloudInvalid,
		"InvalidAMIID.NotFound":            application.CloudInvalid,
		"InvalidAMIID.Malformed":           application.CloudInvalid,
		"InvalidGroup.NotFound":            application.CloudInvalid,
		"InvalidSubnetID.NotFound":         application.CloudInvalid,
		"InvalidKeyPair.NotFound":          application.CloudInvalid,
		"IncorrectInstanceState":           application.CloudInvalid,
		"IdempotentParameterMismatch":      application.CloudInvalid,
		"MissingParameter":                 application.CloudInvalid,
		"InstanceLimitExceeded":            application.CloudQuota,
		"InsufficientInstanceCapacity":     application.CloudQuota,
		"VcpuLimitExceeded":                application.CloudQuota,
		"InvalidInstanceID.NotFound":       application.CloudNotFound,
		"InvalidInstanceID.Malformed":      application.CloudNotFound,
		"SomethingNobodyHasSeenBefore":     application.CloudUnknown,
		"":                                 application.CloudUnknown,
		"UnknownOperationException":        application.CloudUnknown,
		"ProvisionedThroughputExceededExc": application.CloudUnknown,
	}
	for code, want := range tests {
		require.Equal(t, want, kindOfCode(code), code)
	}
}

func TestClassifyWithoutAnAPIError(t *testing.T) {
	t.Parallel()
	status := func(code int) error {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: errors.New("boom")}
	}
	tests := []struct {
		name string
		err  error
		kind application.CloudErrorKind
		code string
	}{
		{"HTTP 429", status(http.StatusTooManyRequests), application.CloudThrottled, ""},
		{"HTTP 502", status(http.StatusBadGateway), application.CloudUnavailable, ""},
		{"HTTP 403", status(http.StatusForbidden), application.CloudAuth, ""},
		{"HTTP 418", status(http.StatusTeapot), application.CloudUnknown, ""},
		{"an API error with an unknown code and a 503", &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}},
			Err:      &smithy.GenericAPIError{Code: "Weird", Message: "m"}}, application.CloudUnavailable, "Weird"},
		{"deadline", fmt.Errorf("op: %w", context.DeadlineExceeded), application.CloudTimeout, ""},
		{"cancelled", fmt.Errorf("op: %w", context.Canceled), application.CloudTimeout, ""},
		{"retry quota", errors.Join(errors.New("x"), ratelimit.QuotaExceededError{Available: 0, Requested: 5}), application.CloudThrottled, ""},
		{"connection closed under the call", fmt.Errorf("read tcp: %w", net.ErrClosed), application.CloudUnavailable, ""},
		{"send failure", &smithyhttp.RequestSendError{Err: errors.New("connection reset by peer")}, application.CloudUnavailable, ""},
		{"anything else", errors.New("strange"), application.CloudUnknown, ""},
	}
	for _, tc := range tests {
		err := classify("ec2:Test", tc.err)
		ce := requireCloudError(t, err, tc.kind, tc.code)
		require.Equal(t, "ec2:Test", ce.Op, tc.name)
		require.ErrorIs(t, err, tc.err, "the cause stays in the chain")
	}
	require.NoError(t, classify("ec2:Test", nil))
	already := &application.CloudError{Kind: application.CloudQuota, Op: "x"}
	require.Same(t, already, classify("ec2:Test", already))
}

func TestErrorClassificationThroughTheSimulator(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	ctx := context.Background()
	fleet := e.seed(t, region, cmlImage, 2, true)
	e.clock.Advance(10 * time.Minute)
	calls := map[string]func() error{
		"ec2:RunInstances":  func() error { _, err := e.p.Launch(ctx, spec("w-err")); return err },
		"ec2:StopInstances": func() error { return e.p.Stop(ctx, region, fleet[0]) },
		"ec2:DescribeInstances": func() error {
			_, err := e.p.DescribeManaged(ctx, region)
			return err
		},
		"cloudwatch:GetMetricData": func() error {
			_, err := e.p.Metrics(ctx, region, fleet, e.clock.Now().Add(-5*time.Minute))
			return err
		},
	}
	tests := []struct {
		api, code string
		kind      application.CloudErrorKind
		wantCode  string // when the SDK reports another code than the one injected
	}{
		{api: "ec2:DescribeInstances", code: "RequestLimitExceeded", kind: application.CloudThrottled},
		{api: "ec2:DescribeInstances", code: "InternalError", kind: application.CloudUnavailable},
		{api: "ec2:DescribeInstances", code: "Unavailable", kind: application.CloudUnavailable},
		{api: "ec2:DescribeInstances", code: "UnauthorizedOperation", kind: application.CloudAuth},
		{api: "ec2:DescribeInstances", code: "AuthFailure", kind: application.CloudAuth},
		{api: "ec2:StopInstances", code: "IncorrectInstanceState", kind: application.CloudInvalid},
		{api: "ec2:StopInstances", code: "InvalidInstanceID.NotFound", kind: application.CloudNotFound},
		{api: "ec2:RunInstances", code: "InvalidParameterValue", kind: application.CloudInvalid},
		{api: "ec2:RunInstances", code: "InvalidAMIID.NotFound", kind: application.CloudInvalid},
		{api: "ec2:RunInstances", code: "InvalidGroup.NotFound", kind: application.CloudInvalid},
		{api: "ec2:RunInstances", code: "InvalidSubnetID.NotFound", kind: application.CloudInvalid},
		{api: "ec2:RunInstances", code: "InstanceLimitExceeded", kind: application.CloudQuota},
		{api: "ec2:RunInstances", code: "InsufficientInstanceCapacity", kind: application.CloudQuota},
		{api: "ec2:RunInstances", code: "VcpuLimitExceeded", kind: application.CloudQuota},
		{api: "ec2:RunInstances", code: "SomethingNew", kind: application.CloudUnknown},
		{api: "cloudwatch:GetMetricData", code: "Throttling", kind: application.CloudThrottled},
		{api: "cloudwatch:GetMetricData", code: "InternalServiceError", kind: application.CloudUnavailable},
		{api: "cloudwatch:GetMetricData", code: "AccessDenied", kind: application.CloudAuth},
		{api: "cloudwatch:GetMetricData", code: "InvalidParameterValue", kind: application.CloudInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.api+"/"+tc.code, func(t *testing.T) {
			e.sim.FailNext(tc.api, tc.code, 1)
			err := calls[tc.api]()
			want := tc.code
			if tc.wantCode != "" {
				want = tc.wantCode
			}
			ce := requireCloudError(t, err, tc.kind, want)
			require.Equal(t, tc.api, ce.Op)
			require.NotEmpty(t, ce.Message)
			switch tc.kind {
			case application.CloudThrottled, application.CloudUnavailable, application.CloudTimeout:
				require.True(t, ce.Retryable())
			default:
				require.False(t, ce.Retryable())
			}
		})
	}

	t.Run("rates", func(t *testing.T) {
		e.sim.SetFaults("ec2:DescribeInstances", cloudsim.Faults{ThrottleRate: 1})
		requireCloudError(t, calls["ec2:DescribeInstances"](), application.CloudThrottled, "RequestLimitExceeded")
		e.sim.SetFaults("ec2:DescribeInstances", cloudsim.Faults{ServerErrorRate: 1})
		requireCloudError(t, calls["ec2:DescribeInstances"](), application.CloudUnavailable, "InternalError")
		e.sim.SetFaults("cloudwatch:GetMetricData", cloudsim.Faults{ThrottleRate: 1})
		requireCloudError(t, calls["cloudwatch:GetMetricData"](), application.CloudThrottled, "Throttling")
		e.sim.ClearFaults()
	})
	t.Run("timeout", func(t *testing.T) {
		e.sim.SetFaults("", cloudsim.Faults{Latency: time.Second})
		defer e.sim.ClearFaults()
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		_, err := e.p.DescribeManaged(short, region)
		ce := requireCloudError(t, err, application.CloudTimeout, "")
		require.True(t, ce.Retryable())
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestConnectionRefusedIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{})
	require.NoError(t, e.sim.Close())
	_, err := e.p.DescribeManaged(context.Background(), region)
	ce := requireCloudError(t, err, application.CloudUnavailable, "")
	require.True(t, ce.Retryable())
}

func TestThrottlingStormWithoutSDKRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{Seed: 3}, Options{MaxAttempts: 1})
	ctx := context.Background()
	fleet := e.seed(t, region, cmlImage, 20, true)
	e.clock.Advance(10 * time.Minute)
	e.sim.SetFaults("", cloudsim.Faults{ThrottleRate: 0.5})

	var mu sync.Mutex
	kinds := map[application.CloudErrorKind]int{}
	ok := 0
	var wg sync.WaitGroup
	for i, id := range fleet {
		wg.Go(func() {
			var err error
			switch i % 4 {
			case 0:
				err = e.p.Stop(ctx, region, id)
			case 1:
				_, err = e.p.DescribeInstance(ctx, region, id)
			case 2:
				_, err = e.p.Metrics(ctx, region, []string{id}, e.clock.Now().Add(-5*time.Minute))
			case 3:
				err = e.p.SetTags(ctx, region, id, map[string]string{"k": "v"}, nil)
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
				return
			}
			ce := application.CloudErrorOf(err)
			kinds[ce.Kind]++
			require.Contains(t, []string{"RequestLimitExceeded", "Throttling"}, ce.Code)
			require.True(t, ce.Retryable())
		})
	}
	wg.Wait()
	require.Equal(t, []application.CloudErrorKind{application.CloudThrottled}, keys(kinds), "every failure is CloudThrottled")
	require.Positive(t, ok)
	require.Positive(t, kinds[application.CloudThrottled])
	require.Equal(t, len(fleet), ok+kinds[application.CloudThrottled])
}

func keys(m map[application.CloudErrorKind]int) []application.CloudErrorKind {
	var out []application.CloudErrorKind
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSDKRetriesAbsorbShortThrottling(t *testing.T) {
	t.Parallel()
	e := newEnv(t, cloudsim.Options{}, Options{MaxAttempts: 3, MaxBackoff: time.Millisecond})
	ctx := context.Background()
	e.seed(t, region, cmlImage, 1, true)

	e.sim.FailNext("ec2:DescribeInstances", "RequestLimitExceeded", 2)
	_, err := e.p.DescribeManaged(ctx, region)
	require.NoError(t, err, "two throttled attempts, the third succeeds")
	require.Equal(t, int64(3), e.sim.CallCount("ec2:DescribeInstances"))

	e.sim.ResetCalls()
	e.sim.FailNext("ec2:DescribeInstances", "RequestLimitExceeded", 3)
	_, err = e.p.DescribeManaged(ctx, region)
	requireCloudError(t, err, application.CloudThrottled, "RequestLimitExceeded")
	require.Equal(t, int64(3), e.sim.CallCount("ec2:DescribeInstances"), "three attempts, then the error")

	e.sim.ResetCalls()
	e.sim.FailNext("ec2:RunInstances", "InsufficientInstanceCapacity", 1)
	_, err = e.p.Launch(ctx, spec("w"))
	requireCloudError(t, err, application.CloudQuota, "InsufficientInstanceCapacity")
	require.Equal(t, int64(1), e.sim.CallCount("ec2:RunInstances"), "permanent errors are not retried")
}

func TestMaxAttemptsWinsOverTheEnvironment(t *testing.T) {
	t.Setenv("AWS_MAX_ATTEMPTS", "5")
	e := newEnv(t, cloudsim.Options{}, Options{MaxAttempts: 2, MaxBackoff: time.Millisecond})
	e.sim.FailNext("ec2:DescribeInstances", "RequestLimitExceeded", 4)
	_, err := e.p.DescribeManaged(context.Background(), region)
	requireCloudError(t, err, application.CloudThrottled, "RequestLimitExceeded")
	require.Equal(t, int64(2), e.sim.CallCount("ec2:DescribeInstances"))
}
