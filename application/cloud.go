package application

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// CloudProvider is the port to EC2 and CloudWatch. The jobs call it; the
// adapter (infrastructure/aws) implements it over aws-sdk-go-v2, which in
// development and tests talks to the cloud simulator (infrastructure/cloudsim).
// Every method takes the region explicitly; errors are *CloudError.
type CloudProvider interface {
	// Launch runs one instance. ClientToken makes a repeated call return the
	// instance of the first one instead of launching another.
	Launch(ctx context.Context, spec LaunchSpec) (Instance, error)
	Start(ctx context.Context, region, instanceID string) error
	Stop(ctx context.Context, region, instanceID string) error
	Terminate(ctx context.Context, region, instanceID string) error
	// SetTags creates or overwrites set and deletes remove on the instance.
	SetTags(ctx context.Context, region, instanceID string, set map[string]string, remove []string) error
	// SetDetailedMonitoring switches detailed CloudWatch monitoring.
	SetDetailedMonitoring(ctx context.Context, region, instanceID string, enabled bool) error
	// DescribeManaged returns every instance of the region tagged
	// ManagedBy=cml-cloud-manager that is not terminated long ago, with its
	// status checks and monitoring state, reading every page.
	DescribeManaged(ctx context.Context, region string) ([]Instance, error)
	// DescribeInstance returns one instance; a missing one is a CloudError
	// of kind CloudNotFound.
	DescribeInstance(ctx context.Context, region, instanceID string) (Instance, error)
	// FindInstances looks instances up for an import: by AMI id, or by AMI
	// name pattern (a glob such as "cisco-cml2.9-*"), skipping terminated
	// and shutting-down instances. Its results carry no status checks.
	FindInstances(ctx context.Context, region string, q InstanceQuery) ([]Instance, error)
	// DescribeImage returns an AMI's details (cached by the adapter).
	DescribeImage(ctx context.Context, region, imageID string) (Image, error)
	// Metrics returns the newest CPU (AWS/EC2 CPUUtilization) and memory
	// (CWAgent mem_used_percent) datapoint of each instance since the given
	// time, with as few GetMetricData calls as possible (up to 500 queries
	// per call). Instances without datapoints are absent from the map.
	Metrics(ctx context.Context, region string, instanceIDs []string, since time.Time) (map[string]InstanceMetrics, error)
}

// LaunchSpec is what RunInstances needs.
type LaunchSpec struct {
	// ClientToken makes the launch idempotent: it must stay the same across
	// retries of one launch (a job retried after a timeout must find the
	// instance it already created) and change only when a failed
	// provisioning is deliberately retried. The jobs use the worker id plus
	// the domain's launch attempt ("<worker id>-<attempt>"); at most 64
	// printable ASCII characters.
	ClientToken        string
	WorkerID           string
	Region             string
	Name               string
	ImageID            string
	InstanceType       string
	SubnetID           string
	SecurityGroupIDs   []string
	KeyName            string
	Tags               map[string]string
	DetailedMonitoring bool
}

// Instance is an EC2 instance as the product needs it.
type Instance struct {
	InstanceID     string
	Region         string
	InstanceType   string
	ImageID        string
	State          worker.EC2State
	PublicIP       string
	PrivateIP      string
	LaunchTime     time.Time
	Tags           map[string]string
	SystemStatus   string // ok, impaired, initializing, insufficient-data, not-applicable; "" unknown
	InstanceStatus string
	Monitoring     string // enabled, disabled, pending, disabling
}

// InstanceQuery selects instances to import. Exactly one field is set.
type InstanceQuery struct {
	AMIID          string
	AMINamePattern string
}

// Image is an AMI.
type Image struct {
	ImageID      string
	Name         string
	Description  string
	CreationDate time.Time
}

// InstanceMetrics is the newest CloudWatch datapoint of each metric (nil
// when there was none; memory needs the CloudWatch agent on the AMI).
type InstanceMetrics struct {
	CPU       *float64
	Memory    *float64
	Timestamp time.Time
}

// CloudErrorKind classifies a cloud or CML failure for retry decisions.
type CloudErrorKind string

// Kinds of cloud errors. Throttled, Unavailable and Timeout are retryable;
// the others are permanent and end a job with a *_failed event.
const (
	CloudThrottled   CloudErrorKind = "throttled"   // RequestLimitExceeded, Throttling, 429
	CloudUnavailable CloudErrorKind = "unavailable" // 5xx, connection refused or reset, 502 while booting
	CloudTimeout     CloudErrorKind = "timeout"     // also a cancelled context
	CloudAuth        CloudErrorKind = "auth"        // missing permission, bad credentials
	CloudInvalid     CloudErrorKind = "invalid"     // invalid parameter, wrong state
	CloudQuota       CloudErrorKind = "quota"       // instance limit, insufficient capacity
	CloudNotFound    CloudErrorKind = "not_found"   // instance, AMI, lab gone
	CloudConflict    CloudErrorKind = "conflict"    // CML 409: operation in progress
	CloudUnknown     CloudErrorKind = "unknown"
)

// CloudError is a classified failure of an EC2, CloudWatch or CML call.
// Code is the provider's own error code (AWS error code, or the HTTP status
// for CML), kept for the event that records the failure.
type CloudError struct {
	Kind    CloudErrorKind
	Op      string // e.g. "ec2:StartInstances", "cml:POST /licensing/registration"
	Code    string
	Message string
	Err     error
}

func (e *CloudError) Error() string {
	msg := e.Op + ": " + string(e.Kind)
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap exposes the underlying error.
func (e *CloudError) Unwrap() error { return e.Err }

// Retryable reports whether trying again later may succeed.
func (e *CloudError) Retryable() bool {
	switch e.Kind {
	case CloudThrottled, CloudUnavailable, CloudTimeout, CloudConflict:
		return true
	}
	return false
}

// CloudErrorOf returns the *CloudError in err's chain, or one of kind
// CloudUnknown wrapping err.
func CloudErrorOf(err error) *CloudError {
	var ce *CloudError
	if errors.As(err, &ce) {
		return ce
	}
	return &CloudError{Kind: CloudUnknown, Message: fmt.Sprint(err), Err: err}
}

// IsCloudNotFound reports whether err is a CloudError of kind CloudNotFound.
func IsCloudNotFound(err error) bool {
	var ce *CloudError
	return errors.As(err, &ce) && ce.Kind == CloudNotFound
}
