// Package aws is the EC2 and CloudWatch adapter: it implements
// application.CloudProvider over aws-sdk-go-v2 (service/ec2 and
// service/cloudwatch), with credentials from the SDK's standard chain and
// one client of each service per configured region. In development and
// tests the same clients talk to the cloud simulator (infrastructure/cloudsim)
// through the endpoint override.
package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

var _ application.CloudProvider = (*Provider)(nil)

// Defaults of Options.
const (
	DefaultMaxAttempts    = 3
	DefaultMaxBackoff     = 5 * time.Second
	DefaultPageSize       = 1000 // the EC2 maximum for DescribeInstances and DescribeInstanceStatus
	DefaultMetricPeriod   = time.Minute
	DefaultMetricWindow   = time.Hour
	DefaultImageCacheTTL  = time.Hour
	DefaultImageCacheSize = 256
)

// Clock tells the adapter the time (for metric windows and the image cache).
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Options configure a Provider. Regions is required; everything else has a
// default.
type Options struct {
	// Regions get one EC2 and one CloudWatch client each (AWS_REGIONS).
	// Calls for any other region fail with a CloudInvalid error.
	Regions []string
	// EndpointURL overrides the endpoint of both services, e.g. the cloud
	// simulator (AWS_ENDPOINT_URL); empty = the real AWS endpoints (the SDK
	// still honours AWS_ENDPOINT_URL from the environment by itself).
	EndpointURL string
	// DefaultTags are added to every launched instance (AWS_DEFAULT_TAGS);
	// the launch spec's tags win over them, the product's reserved tags win
	// over both.
	DefaultTags map[string]string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// HTTPClient replaces the SDK's HTTP client (optional). It is set on
	// the service clients as it is: AWS_CA_BUNDLE and the SDK's transport
	// settings do not apply to it.
	HTTPClient *http.Client
	// MaxAttempts is the SDK's attempts per call, the first included
	// (AWS_MAX_ATTEMPTS); default 3; 1 turns SDK retries off. The jobs
	// retry at their own level, so keep it small.
	MaxAttempts int
	// MaxBackoff caps the SDK's wait between attempts; default 5 s.
	MaxBackoff time.Duration
	// PageSize is MaxResults of DescribeInstances and DescribeInstanceStatus,
	// 5 to 1000; default 1000.
	PageSize int
	// MetricPeriod is the GetMetricData period, 60 s or 300 s; default 60 s.
	MetricPeriod time.Duration
	// MetricWindow bounds how far back Metrics looks, whatever "since" it
	// is given; default 1 h.
	MetricWindow time.Duration
	// ImageOwners restrict the AMI name look-ups of FindInstances
	// (DescribeImages Owners: "self", an account id, "amazon", ...); empty =
	// every AMI the account may launch, public ones included, which is
	// slower on real AWS.
	ImageOwners []string
	// ImageCacheTTL and ImageCacheSize bound the DescribeImage cache;
	// defaults 1 h and 256 images.
	ImageCacheTTL  time.Duration
	ImageCacheSize int
	// Clock; default the system clock.
	Clock Clock
	// LoadOptions are passed on to config.LoadDefaultConfig after the
	// adapter's own, e.g. config.WithSharedConfigProfile, or a credentials
	// provider for the simulator. Without them the standard chain applies:
	// environment, shared config and profile, web identity (IRSA), ECS and
	// EC2 instance roles.
	LoadOptions []func(*config.LoadOptions) error
}

// regionClients are the clients of one region.
type regionClients struct {
	ec2 *ec2.Client
	cw  *cloudwatch.Client
}

// Provider implements application.CloudProvider.
type Provider struct {
	log          *slog.Logger
	clients      map[string]*regionClients
	defaultTags  map[string]string
	imageOwners  []string
	pageSize     int32
	metricPeriod time.Duration
	metricWindow time.Duration
	clock        Clock
	images       *imageCache
}

// New checks the options, loads the AWS configuration through the standard
// credential chain and builds the clients of every region. Credentials are
// resolved lazily, on the first call.
func New(ctx context.Context, opts Options) (*Provider, error) {
	if err := opts.withDefaults(); err != nil {
		return nil, err
	}
	load := []func(*config.LoadOptions) error{
		config.WithRetryer(func() awssdk.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.MaxAttempts
				o.MaxBackoff = opts.MaxBackoff
			})
		}),
	}
	cfg, err := config.LoadDefaultConfig(ctx, append(load, opts.LoadOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS configuration: %w", err)
	}
	var httpClient awssdk.HTTPClient = cfg.HTTPClient
	if opts.HTTPClient != nil {
		httpClient = opts.HTTPClient
	}
	httpClient = plainBodyClient{next: httpClient}
	p := &Provider{
		log:          opts.Logger.With(slog.String("component", "aws")),
		clients:      make(map[string]*regionClients, len(opts.Regions)),
		defaultTags:  maps.Clone(opts.DefaultTags),
		imageOwners:  slices.Clone(opts.ImageOwners),
		pageSize:     int32(opts.PageSize),
		metricPeriod: opts.MetricPeriod,
		metricWindow: opts.MetricWindow,
		clock:        opts.Clock,
		images:       newImageCache(opts.ImageCacheSize, opts.ImageCacheTTL),
	}
	for _, region := range opts.Regions {
		p.clients[region] = &regionClients{
			ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) {
				o.Region = region
				o.HTTPClient = httpClient
				if opts.EndpointURL != "" {
					o.BaseEndpoint = awssdk.String(opts.EndpointURL)
				}
			}),
			cw: cloudwatch.NewFromConfig(cfg, func(o *cloudwatch.Options) {
				o.Region = region
				o.HTTPClient = httpClient
				if opts.EndpointURL != "" {
					o.BaseEndpoint = awssdk.String(opts.EndpointURL)
				}
			}),
		}
	}
	endpoint := opts.EndpointURL
	if endpoint == "" {
		endpoint = "AWS"
	}
	p.log.Info("AWS clients ready", slog.Any("regions", opts.Regions), slog.String("endpoint", endpoint),
		slog.Int("max_attempts", opts.MaxAttempts))
	return p, nil
}

// withDefaults fills in defaults and reports every invalid option at once.
func (o *Options) withDefaults() error {
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if len(o.Regions) == 0 {
		add("no region is configured")
	}
	seen := map[string]bool{}
	for _, r := range o.Regions {
		if !worker.ValidRegion(r) {
			add("%q is not an AWS region name", r)
		}
		if seen[r] {
			add("region %q is configured twice", r)
		}
		seen[r] = true
	}
	if o.EndpointURL != "" {
		u, err := url.Parse(o.EndpointURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("endpoint URL %q is not an absolute http(s) URL", o.EndpointURL)
		}
	}
	var tagProblems domain.Problems
	worker.CheckTags(&tagProblems, "default_tags", o.DefaultTags)
	if err := tagProblems.Err(); err != nil {
		add("default tags: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.MaxAttempts == 0:
		o.MaxAttempts = DefaultMaxAttempts
	case o.MaxAttempts < 0 || o.MaxAttempts > 10:
		add("max attempts must be between 1 and 10, not %d", o.MaxAttempts)
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	} else if o.MaxBackoff < 0 {
		add("max backoff must not be negative")
	}
	switch {
	case o.PageSize == 0:
		o.PageSize = DefaultPageSize
	case o.PageSize < 5 || o.PageSize > 1000:
		add("page size must be between 5 and 1000, not %d", o.PageSize)
	}
	switch o.MetricPeriod {
	case 0:
		o.MetricPeriod = DefaultMetricPeriod
	case time.Minute, 5 * time.Minute:
	default:
		add("metric period must be 60 s or 300 s, not %s", o.MetricPeriod)
	}
	if o.MetricWindow == 0 {
		o.MetricWindow = DefaultMetricWindow
	} else if o.MetricWindow < o.MetricPeriod || o.MetricWindow > 24*time.Hour {
		add("metric window must be between the metric period and 24 h, not %s", o.MetricWindow)
	}
	if o.ImageCacheTTL == 0 {
		o.ImageCacheTTL = DefaultImageCacheTTL
	} else if o.ImageCacheTTL < 0 {
		add("image cache TTL must not be negative")
	}
	if o.ImageCacheSize == 0 {
		o.ImageCacheSize = DefaultImageCacheSize
	} else if o.ImageCacheSize < 0 {
		add("image cache size must not be negative")
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if len(problems) > 0 {
		return fmt.Errorf("aws options: %w", errors.Join(problems...))
	}
	return nil
}

// Regions returns the configured regions, sorted.
func (p *Provider) Regions() []string {
	return slices.Sorted(maps.Keys(p.clients))
}

// region returns the clients of a configured region.
func (p *Provider) region(op, region string) (*regionClients, error) {
	c, ok := p.clients[region]
	if !ok {
		return nil, &application.CloudError{Kind: application.CloudInvalid, Op: op, Code: "RegionNotConfigured",
			Message: fmt.Sprintf("region %q is not configured (configured: %v)", region, p.Regions())}
	}
	return c, nil
}
