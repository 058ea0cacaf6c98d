// Package simulation wires the built-in cloud simulator (infrastructure/
// cloudsim and its CML controllers, cloudsim/cmlsim) to the production
// adapters: the real AWS SDK provider (infrastructure/aws) pointed at the
// simulator's endpoint with the simulator's dummy credentials, and the real
// CML client (infrastructure/cml) trusting the simulator's certificate. It
// is what `serve` uses when CLOUD=simulated, and what the `simulator`
// subcommand runs alone.
package simulation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/aws"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cloudsim/cmlsim"
	"github.com/cmlcloud/cml-cloud-manager/infrastructure/cml"
)

// DefaultAMIName is the simulator's newest seeded CML AMI (with the
// CloudWatch agent).
const DefaultAMIName = "cisco-cml2.9-lablet-v0.1.7"

// Fixed ports of the `simulator` subcommand.
const (
	DefaultAddr    = "127.0.0.1:4566"
	DefaultCMLAddr = "127.0.0.1:4567"
)

// Options configure the simulated cloud. Zero values take defaults.
type Options struct {
	// Regions are created at start with the seeded CML AMIs; default
	// us-east-1.
	Regions []string
	// Addr and CMLAddr are the loopback listeners of EC2/CloudWatch and of
	// the CML controllers; default a free port each.
	Addr, CMLAddr string
	// CMLUsername and CMLPassword are the controllers' admin account, which
	// the CML client logs in with; default admin/admin.
	CMLUsername, CMLPassword string
	// Timings of the EC2 state changes (cloudsim defaults: a few seconds).
	Timings cloudsim.Timings
	// BootDelay (502 from nginx), ReadyDelay (ready:false), LicenseDelay and
	// NodeBootDelay of the controllers; defaults 5 s, 5 s, 10 s and 20 s.
	BootDelay, ReadyDelay, LicenseDelay, NodeBootDelay time.Duration
	// EmptyControllers boots controllers without the two demo labs.
	EmptyControllers bool
	// DefaultTags are added to every instance the provider launches.
	DefaultTags map[string]string
	// Seed makes the simulator reproducible.
	Seed uint64
	// Clock drives the simulator and the controllers (default: wall clock).
	Clock  cloudsim.Clock
	Logger *slog.Logger
}

func (o *Options) withDefaults() {
	if len(o.Regions) == 0 {
		o.Regions = []string{"us-east-1"}
	}
	if o.CMLUsername == "" {
		o.CMLUsername = cmlsim.DefaultUsername
	}
	if o.CMLPassword == "" {
		o.CMLPassword = cmlsim.DefaultPassword
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.BootDelay, 5*time.Second)
	def(&o.ReadyDelay, 5*time.Second)
	def(&o.LicenseDelay, 10*time.Second)
	def(&o.NodeBootDelay, 20*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Cloud is a started simulator and the production adapters pointed at it.
type Cloud struct {
	Sim   *cloudsim.Simulator
	Fleet *cmlsim.Fleet
	// Provider is the real aws-sdk-go-v2 adapter (application.CloudProvider).
	Provider *aws.Provider
	// CML is the real CML client (application.CMLClient).
	CML *cml.Client
	// EndpointTemplate is the CML endpoint template of the simulated workers
	// (a loopback URL per instance), for jobs.Options.EndpointTemplate.
	EndpointTemplate string
	regions          []string
	transports       []*http.Transport
}

// newSimulator builds the simulator and its CML controllers from opts
// (defaults applied).
func newSimulator(opts Options) (*cloudsim.Simulator, *cmlsim.Fleet) {
	fleet := cmlsim.NewFleet(cmlsim.Options{
		Username: opts.CMLUsername, Password: opts.CMLPassword,
		BootDelay: opts.BootDelay, ReadyDelay: opts.ReadyDelay, LicenseDelay: opts.LicenseDelay,
		NodeBootDelay: opts.NodeBootDelay, EmptyControllers: opts.EmptyControllers,
		Clock: opts.Clock, Logger: opts.Logger, Seed: int64(opts.Seed),
	})
	sim := cloudsim.New(cloudsim.Options{
		Addr: opts.Addr, CMLAddr: opts.CMLAddr, Regions: opts.Regions, Timings: opts.Timings,
		Clock: opts.Clock, Seed: opts.Seed, Controllers: fleet, CMLHandler: fleet, Logger: opts.Logger,
	})
	return sim, fleet
}

// Start starts the simulator in-process until ctx ends or Close, and builds
// the AWS provider and the CML client on it.
func Start(ctx context.Context, opts Options) (*Cloud, error) {
	opts.withDefaults()
	sim, fleet := newSimulator(opts)
	if err := sim.Start(ctx); err != nil {
		return nil, fmt.Errorf("simulation: %w", err)
	}
	c := &Cloud{Sim: sim, Fleet: fleet, EndpointTemplate: sim.CMLEndpointTemplate(), regions: slices.Clone(opts.Regions)}
	awsTransport := http.DefaultTransport.(*http.Transport).Clone()
	awsTransport.MaxIdleConnsPerHost = 64
	c.transports = append(c.transports, awsTransport)
	awsOpts := aws.Options{
		Regions: opts.Regions, EndpointURL: sim.EndpointURL(), DefaultTags: opts.DefaultTags, Logger: opts.Logger,
		HTTPClient:  &http.Client{Transport: awsTransport},
		LoadOptions: []func(*config.LoadOptions) error{config.WithCredentialsProvider(cloudsim.Credentials())},
	}
	cmlOpts := cml.Options{Username: opts.CMLUsername, Password: opts.CMLPassword, Logger: opts.Logger}
	if opts.Clock != nil {
		// Metric windows and token lifetimes follow the simulation's time.
		awsOpts.Clock, cmlOpts.Clock = opts.Clock, opts.Clock
	}
	provider, err := aws.New(ctx, awsOpts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("simulation: %w", err), sim.Close())
	}
	c.Provider = provider
	// The controllers' certificate is the simulator's own: trust exactly it.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sim.CMLCertificatePEM()) {
		return nil, errors.Join(errors.New("simulation: unreadable CML certificate"), sim.Close())
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, cml.DefaultMaxIdleConnsPerHost
	c.transports = append(c.transports, tr)
	cmlOpts.Transport = tr
	client, err := cml.New(cmlOpts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("simulation: %w", err), sim.Close())
	}
	c.CML = client
	opts.Logger.InfoContext(ctx, "simulated cloud ready", slog.String("aws_endpoint_url", sim.EndpointURL()),
		slog.String("cml_endpoint_template", c.EndpointTemplate), slog.Any("regions", opts.Regions))
	return c, nil
}

// Close stops the simulator and releases the clients' connections.
func (c *Cloud) Close() error {
	err := c.Sim.Close()
	for _, tr := range c.transports {
		tr.CloseIdleConnections()
	}
	return err
}

// AMIIDs returns the id of the seeded AMI called name in each region: the
// value of WORKER_AMI_IDS in simulated mode.
func AMIIDs(regions []string, name string) map[string]string {
	out := make(map[string]string, len(regions))
	for _, r := range regions {
		out[r] = cloudsim.ImageID(r, name)
	}
	return out
}

// SeedOptions say how many workers Seed creates (launched by the product)
// and imports (instances started out of band first).
type SeedOptions struct {
	Created  int // default 2 (unless Exact)
	Imported int // default 2 (unless Exact)
	// Exact takes Created and Imported as they are, zero included.
	Exact bool
	// Always seeds even when the log already has workers (the caller has
	// found that none of them lives in this simulator).
	Always bool
	// Region of the seeded workers; default the first region.
	Region string
}

// seedPrincipal is the identity of the seeding: a system actor with the
// admin role, because creating and importing are admin commands.
func seedPrincipal() rbac.Principal {
	p := rbac.System("simulation_seed")
	p.Roles = append(p.Roles, rbac.RoleAdmin)
	return p
}

// Seed creates and imports a few workers through the application when the
// event log has no worker yet, so that the first screen is not empty. The
// created ones are launched by the jobs like any other; the imported ones
// are instances started out of band. It returns the new workers' ids.
func (c *Cloud) Seed(ctx context.Context, app *application.App, store eventstore.Store, opts SeedOptions) ([]string, error) {
	if !opts.Exact && opts.Created <= 0 {
		opts.Created = 2
	}
	if !opts.Exact && opts.Imported <= 0 {
		opts.Imported = 2
	}
	if opts.Region == "" {
		opts.Region = c.regions[0]
	}
	if !opts.Always {
		existing, _, err := store.ReadAll(ctx, eventstore.Start, 1, eventstore.Filter{StreamPrefixes: []string{worker.StreamPrefix}})
		if err != nil {
			return nil, fmt.Errorf("simulation: seed: read the log: %w", err)
		}
		if len(existing) > 0 {
			return nil, nil
		}
	}
	ctx = rbac.WithPrincipal(ctx, seedPrincipal())
	var ids []string
	for i := 1; i <= opts.Created; i++ {
		res, err := app.CreateWorker(ctx, application.CreateWorker{
			Name: fmt.Sprintf("sim-created-%d", i), Region: opts.Region,
			AMIID: cloudsim.ImageID(opts.Region, DefaultAMIName), AMIName: DefaultAMIName,
			Tags: map[string]string{"Environment": "simulated"},
		})
		if err != nil {
			return ids, fmt.Errorf("simulation: seed: create: %w", err)
		}
		ids = append(ids, res.ID)
	}
	if opts.Imported <= 0 {
		return ids, nil
	}
	insts, err := c.Sim.Console().Launch(opts.Region, cloudsim.ConsoleLaunch{
		ImageID: cloudsim.ImageID(opts.Region, DefaultAMIName), Count: opts.Imported, Running: true,
		DetailedMonitoring: true, Tags: map[string]string{"Environment": "simulated", "Origin": "out-of-band"},
	})
	if err != nil {
		return ids, fmt.Errorf("simulation: seed: launch out of band: %w", err)
	}
	for i, in := range insts {
		name := fmt.Sprintf("sim-imported-%d", i+1)
		tags := map[string]string{"Environment": "simulated", "Origin": "out-of-band", "Name": name}
		if err := c.Sim.Console().SetTags(in.ID, map[string]string{"Name": name}, nil); err != nil {
			return ids, fmt.Errorf("simulation: seed: tag %s: %w", in.ID, err)
		}
		endpoint := ""
		if c.EndpointTemplate != "" {
			endpoint = cloudsimEndpoint(c.EndpointTemplate, in.ID)
		}
		res, err := app.ImportWorker(ctx, application.ImportWorker{
			Name: name, Region: opts.Region, InstanceID: in.ID, InstanceType: in.InstanceType,
			AMIID: in.ImageID, AMIName: DefaultAMIName, State: worker.EC2State(in.State),
			PublicIP: in.PublicIP, PrivateIP: in.PrivateIP, Endpoint: endpoint, Tags: tags,
		})
		if err != nil {
			return ids, fmt.Errorf("simulation: seed: import %s: %w", in.ID, err)
		}
		ids = append(ids, res.ID)
	}
	return ids, nil
}

// cloudsimEndpoint renders the simulator's endpoint template for an
// instance.
func cloudsimEndpoint(template, instanceID string) string {
	return strings.ReplaceAll(template, "{instance_id}", instanceID)
}

// RunSimulator runs the simulator alone on fixed loopback ports (default
// DefaultAddr and DefaultCMLAddr) until ctx ends: the `simulator`
// subcommand. It logs what to point a service at.
func RunSimulator(ctx context.Context, opts Options) error {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.CMLAddr == "" {
		opts.CMLAddr = DefaultCMLAddr
	}
	opts.withDefaults()
	sim, _ := newSimulator(opts)
	if err := sim.Start(ctx); err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	opts.Logger.InfoContext(ctx, "simulator running; point the service at it with these settings",
		slog.String("AWS_ENDPOINT_URL", sim.EndpointURL()),
		slog.String("CML_ENDPOINT_TEMPLATE", sim.CMLEndpointTemplate()),
		slog.String("admin_api", sim.EndpointURL()+"/sim/"))
	<-ctx.Done()
	return sim.Close()
}
