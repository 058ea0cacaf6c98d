package aws

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// codeKinds classifies AWS error codes that are not recognised by prefix.
// Throttling codes come from the SDK's own list (retry.DefaultThrottleErrorCodes).
var codeKinds = map[string]application.CloudErrorKind{
	// The instance is gone or never was.
	"InvalidInstanceID.NotFound":  application.CloudNotFound,
	"InvalidInstanceID.Malformed": application.CloudNotFound,

	// Server side: retry later.
	"InternalError":               application.CloudUnavailable,
	"InternalFailure":             application.CloudUnavailable,
	"InternalServiceError":        application.CloudUnavailable,
	"InternalServiceFault":        application.CloudUnavailable,
	"ServiceUnavailable":          application.CloudUnavailable,
	"ServiceUnavailableException": application.CloudUnavailable,
	"Unavailable":                 application.CloudUnavailable,
	"RequestTimeout":              application.CloudTimeout,
	"RequestTimeoutException":     application.CloudTimeout,

	// Credentials and permissions.
	"UnauthorizedOperation":       application.CloudAuth,
	"AuthFailure":                 application.CloudAuth,
	"InvalidClientTokenId":        application.CloudAuth,
	"InvalidAccessKeyId":          application.CloudAuth,
	"SignatureDoesNotMatch":       application.CloudAuth,
	"IncompleteSignature":         application.CloudAuth,
	"MissingAuthenticationToken":  application.CloudAuth,
	"UnrecognizedClientException": application.CloudAuth,
	"ExpiredToken":                application.CloudAuth,
	"ExpiredTokenException":       application.CloudAuth,
	"RequestExpired":              application.CloudAuth,
	"OptInRequired":               application.CloudAuth,
	"Blocked":                     application.CloudAuth,

	// Limits and capacity.
	"InstanceLimitExceeded":                application.CloudQuota,
	"InsufficientInstanceCapacity":         application.CloudQuota,
	"VcpuLimitExceeded":                    application.CloudQuota,
	"InsufficientCapacity":                 application.CloudQuota,
	"InsufficientHostCapacity":             application.CloudQuota,
	"InsufficientReservedInstanceCapacity": application.CloudQuota,
	"InsufficientFreeAddressesInSubnet":    application.CloudQuota,
	"MaxSpotInstanceCountExceeded":         application.CloudQuota,
	"ResourceLimitExceeded":                application.CloudQuota,

	// The request itself is wrong, or the resource is in the wrong state.
	"IncorrectInstanceState":      application.CloudInvalid,
	"IncorrectState":              application.CloudInvalid,
	"MissingParameter":            application.CloudInvalid,
	"MissingAction":               application.CloudInvalid,
	"ValidationError":             application.CloudInvalid,
	"IdempotentParameterMismatch": application.CloudInvalid,
	"UnsupportedOperation":        application.CloudInvalid,
	"Unsupported":                 application.CloudInvalid,
	"OperationNotPermitted":       application.CloudInvalid,
	"TagLimitExceeded":            application.CloudInvalid,
	"DryRunOperation":             application.CloudInvalid,
	"NoSuchVersion":               application.CloudInvalid,
	"SerializationException":      application.CloudInvalid,
}

// kindOfCode classifies an AWS error code; CloudUnknown when it is none of
// the known ones.
func kindOfCode(code string) application.CloudErrorKind {
	if _, ok := retry.DefaultThrottleErrorCodes[code]; ok {
		return application.CloudThrottled
	}
	if k, ok := codeKinds[code]; ok {
		return k
	}
	switch {
	case strings.HasPrefix(code, "AccessDenied"):
		return application.CloudAuth
	case strings.HasPrefix(code, "Invalid"):
		// InvalidParameter*, InvalidAMIID.*, InvalidGroup.NotFound,
		// InvalidSubnetID.NotFound, InvalidKeyPair.*, ...
		return application.CloudInvalid
	}
	return application.CloudUnknown
}

// kindOfStatus classifies an HTTP status of an AWS answer.
func kindOfStatus(status int) application.CloudErrorKind {
	switch {
	case status == http.StatusTooManyRequests:
		return application.CloudThrottled
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return application.CloudAuth
	case status >= 500:
		return application.CloudUnavailable
	}
	return application.CloudUnknown
}

// classify turns an SDK error into a *application.CloudError for op
// ("ec2:RunInstances"), keeping the AWS error code. The original error stays
// in the chain.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ce *application.CloudError
	if errors.As(err, &ce) {
		return err
	}
	ce = &application.CloudError{Kind: application.CloudUnknown, Op: op, Err: err}
	status := 0
	var withStatus interface{ HTTPStatusCode() int }
	if errors.As(err, &withStatus) {
		status = withStatus.HTTPStatusCode()
	}
	var apiErr smithy.APIError
	var netErr net.Error
	var sendErr *smithyhttp.RequestSendError
	var quotaErr ratelimit.QuotaExceededError
	switch {
	case errors.As(err, &apiErr):
		ce.Code, ce.Message = apiErr.ErrorCode(), apiErr.ErrorMessage()
		if ce.Kind = kindOfCode(ce.Code); ce.Kind == application.CloudUnknown {
			ce.Kind = kindOfStatus(status)
		}
	case errors.Is(err, context.DeadlineExceeded):
		ce.Kind, ce.Message = application.CloudTimeout, "deadline exceeded"
	case errors.Is(err, context.Canceled):
		// Retryable on purpose: a job cancelled at shutdown must run again,
		// not record a failure.
		ce.Kind, ce.Message = application.CloudTimeout, "cancelled"
	case errors.As(err, &netErr) && netErr.Timeout():
		ce.Kind, ce.Message = application.CloudTimeout, err.Error()
	case errors.Is(err, net.ErrClosed):
		// The connection went away under the call (see plainBodyClient).
		ce.Kind, ce.Message = application.CloudUnavailable, err.Error()
	case errors.As(err, &quotaErr):
		ce.Kind, ce.Message = application.CloudThrottled, err.Error()
	case errors.As(err, &sendErr):
		ce.Kind, ce.Message = application.CloudUnavailable, err.Error()
	case status != 0:
		ce.Kind, ce.Message = kindOfStatus(status), err.Error()
	default:
		ce.Message = err.Error()
	}
	return ce
}
