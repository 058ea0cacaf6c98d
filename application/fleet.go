package application

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// Fleet answers the requests that must ask the cloud or a controller
// directly, on a caller's behalf, rather than through a job: importing
// instances found by a look-up, and downloading a lab's topology. Both change
// nothing in the cloud; the import records its outcome as worker events.
type Fleet struct {
	app   *App
	cloud CloudProvider
	cml   CMLClient
	opts  FleetOptions
}

// FleetOptions configure the Fleet.
type FleetOptions struct {
	// EndpointTemplate renders a worker's CML endpoint from its instance
	// (CML_ENDPOINT_TEMPLATE, see EndpointFor).
	EndpointTemplate string
	// CallTimeout bounds each call to AWS or CML; default 30 s.
	CallTimeout time.Duration
}

// NewFleet builds the Fleet handlers. It panics when a dependency is
// missing (a wiring bug).
func NewFleet(app *App, cloud CloudProvider, cml CMLClient, opts FleetOptions) *Fleet {
	if app == nil || cloud == nil || cml == nil {
		panic("application: NewFleet needs the App, a CloudProvider and a CMLClient")
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	return &Fleet{app: app, cloud: cloud, cml: cml, opts: opts}
}

// EndpointFor renders a CML endpoint template for an instance:
// {public_ip}, {private_ip} and {instance_id} are replaced by the instance's
// values; when the template names one the instance does not have (no public
// IP while stopped), the worker has no endpoint ("").
func EndpointFor(template string, inst Instance) string {
	if template == "" {
		return ""
	}
	pairs := []string{"{public_ip}", inst.PublicIP, "{private_ip}", inst.PrivateIP, "{instance_id}", inst.InstanceID}
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i+1] == "" && strings.Contains(template, pairs[i]) {
			return ""
		}
	}
	// One pass: a value that looks like a placeholder is not expanded.
	return strings.NewReplacer(pairs...).Replace(template)
}

// ImportRequest is POST /api/workers/import: which instances of a region to
// make workers. Exactly one of InstanceID, AMIID and AMINamePattern is set.
type ImportRequest struct {
	Region string `json:"region" doc:"The instances' region (one of AWS_REGIONS)."`
	// InstanceID imports that instance.
	InstanceID string `json:"instance_id,omitempty" doc:"Import this instance."`
	// AMIID and AMINamePattern select the live instances booted from an AMI
	// (by id, or by a name glob such as cisco-cml2.9-*).
	AMIID          string `json:"ami_id,omitempty" doc:"Import the live instances booted from this AMI."`
	AMINamePattern string `json:"ami_name_pattern,omitempty" doc:"Import the live instances booted from an AMI whose name matches this glob (* and ?)."`
	// All imports every unmanaged match; without it a look-up by AMI must
	// find exactly one unmanaged instance.
	All bool `json:"all,omitempty" doc:"Import every unmanaged match (AMI look-ups only). Without it, the look-up must find exactly one unmanaged instance."`
	// Name names the worker (single imports only); default the instance's
	// Name tag, else worker-<instance id>.
	Name string `json:"name,omitempty" doc:"The worker's name (single imports only); default the instance's Name tag, else worker-<instance id>."`
}

// ImportedWorker is one instance the import made a worker.
type ImportedWorker struct {
	Result
	InstanceID string          `json:"instance_id"`
	Name       string          `json:"name"`
	State      worker.EC2State `json:"instance_state"`
}

// SkippedInstance is one instance the import left alone, and why.
type SkippedInstance struct {
	InstanceID string `json:"instance_id"`
	// Reason is managed (WorkerID says by which worker), not_live (the
	// instance is terminated or shutting down) or failed (Detail says why).
	Reason   string `json:"reason" enum:"managed,not_live,failed"`
	WorkerID string `json:"worker_id,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// Reasons of SkippedInstance.
const (
	SkipManaged = "managed"
	SkipNotLive = "not_live"
	SkipFailed  = "failed"
)

// ImportOutcome reports an import.
type ImportOutcome struct {
	Found    int               `json:"total_found"`
	Imported []ImportedWorker  `json:"imported"`
	Skipped  []SkippedInstance `json:"skipped"`
}

// AmbiguousImportError says a look-up without All found several unmanaged
// instances. It matches domain.ErrInvalid.
type AmbiguousImportError struct {
	InstanceIDs []string
}

func (e *AmbiguousImportError) Error() string {
	return fmt.Sprintf("%d unmanaged instances match (%s): import one by instance_id, or all with \"all\": true",
		len(e.InstanceIDs), strings.Join(e.InstanceIDs, ", "))
}

// Is makes errors.Is(err, domain.ErrInvalid) true.
func (e *AmbiguousImportError) Is(target error) bool { return target == domain.ErrInvalid }

// maxImportPattern bounds an AMI name pattern.
const maxImportPattern = 128

func (r ImportRequest) validate(a *App) error {
	var p domain.Problems
	if err := a.checkRegion(r.Region); err != nil {
		var ve *domain.ValidationError
		if !errors.As(err, &ve) {
			return err
		}
		p = append(p, ve.Problems...)
	}
	criteria := 0
	for _, v := range []string{r.InstanceID, r.AMIID, r.AMINamePattern} {
		if v != "" {
			criteria++
		}
	}
	switch {
	case criteria == 0:
		p.Add("instance_id", "give one of instance_id, ami_id or ami_name_pattern")
	case criteria > 1:
		p.Add("instance_id", "give only one of instance_id, ami_id or ami_name_pattern")
	}
	if r.InstanceID != "" && !worker.ValidInstanceID(r.InstanceID) {
		p.Add("instance_id", "%q is not an EC2 instance id", truncate(r.InstanceID, 64))
	}
	if r.AMIID != "" && !worker.ValidAMIID(r.AMIID) {
		p.Add("ami_id", "%q is not an AMI id", truncate(r.AMIID, 64))
	}
	if r.AMINamePattern != "" {
		if _, err := path.Match(r.AMINamePattern, ""); err != nil || len(r.AMINamePattern) > maxImportPattern ||
			strings.ContainsAny(r.AMINamePattern, "[]\\") {
			p.Add("ami_name_pattern", "must be at most %d characters of a name glob using * and ?", maxImportPattern)
		}
	}
	if r.All && r.InstanceID != "" {
		p.Add("all", "cannot be combined with instance_id")
	}
	if r.Name != "" && r.All {
		p.Add("name", "names a single import; leave it out with \"all\": true")
	}
	return p.Err()
}

// Import looks instances up in EC2 and makes each unmanaged live one a
// worker (admin). A look-up by instance id of an instance that does not
// exist is a not-found error; one of an instance already managed, or
// terminated, is refused. A look-up by AMI imports every unmanaged live match
// with All, or the single one without it (several are refused as
// ambiguous).
func (f *Fleet) Import(ctx context.Context, req ImportRequest) (ImportOutcome, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerImport); err != nil {
		return ImportOutcome{}, err
	}
	if err := req.validate(f.app); err != nil {
		return ImportOutcome{}, err
	}
	var found []Instance
	err := f.call(ctx, func(ctx context.Context) (err error) {
		if req.InstanceID != "" {
			var in Instance
			in, err = f.cloud.DescribeInstance(ctx, req.Region, req.InstanceID)
			found = []Instance{in}
			return err
		}
		found, err = f.cloud.FindInstances(ctx, req.Region, InstanceQuery{AMIID: req.AMIID, AMINamePattern: req.AMINamePattern})
		return err
	})
	if err != nil {
		if ce := CloudErrorOf(err); ce.Kind == CloudNotFound && req.InstanceID != "" {
			return ImportOutcome{}, &NotFoundError{Kind: "instance", ID: req.InstanceID}
		}
		return ImportOutcome{}, err
	}
	slices.SortFunc(found, func(a, b Instance) int { return strings.Compare(a.InstanceID, b.InstanceID) })
	out := ImportOutcome{Found: len(found), Imported: []ImportedWorker{}, Skipped: []SkippedInstance{}}

	var candidates []Instance
	for _, in := range found {
		if !importable(in.State) {
			out.Skipped = append(out.Skipped, SkippedInstance{InstanceID: in.InstanceID, Reason: SkipNotLive,
				Detail: "the instance is " + string(in.State)})
			continue
		}
		existing, managed, err := f.app.opts.Workers.FindByInstance(ctx, req.Region, in.InstanceID)
		if err != nil {
			return ImportOutcome{}, fmt.Errorf("look up instance %s: %w", in.InstanceID, err)
		}
		if managed {
			out.Skipped = append(out.Skipped, SkippedInstance{InstanceID: in.InstanceID, Reason: SkipManaged, WorkerID: existing.ID})
			continue
		}
		candidates = append(candidates, in)
	}
	if req.InstanceID != "" && len(candidates) == 0 {
		// A single named instance that cannot be imported is a refusal,
		// not an empty success.
		s := out.Skipped[0]
		if s.Reason == SkipManaged {
			return ImportOutcome{}, &AlreadyManagedError{InstanceID: s.InstanceID, WorkerID: s.WorkerID}
		}
		var p domain.Problems
		p.Add("instance_id", "instance %s cannot be imported: %s", s.InstanceID, s.Detail)
		return ImportOutcome{}, p.Err()
	}
	if !req.All && len(candidates) > 1 {
		ids := make([]string, len(candidates))
		for i, in := range candidates {
			ids[i] = in.InstanceID
		}
		return ImportOutcome{}, &AmbiguousImportError{InstanceIDs: ids}
	}
	single := req.InstanceID != "" || !req.All
	for _, in := range candidates {
		name := importName(req.Name, in)
		res, err := f.app.ImportWorker(ctx, ImportWorker{
			Name: name, Region: req.Region, InstanceID: in.InstanceID, InstanceType: in.InstanceType,
			AMIID: in.ImageID, AMIName: f.imageName(ctx, req.Region, in.ImageID), State: in.State,
			PublicIP: in.PublicIP, PrivateIP: in.PrivateIP, Endpoint: EndpointFor(f.opts.EndpointTemplate, in), Tags: in.Tags,
		})
		var am *AlreadyManagedError
		switch {
		case err == nil:
			out.Imported = append(out.Imported, ImportedWorker{Result: res, InstanceID: in.InstanceID, Name: name, State: in.State})
		case single:
			return ImportOutcome{}, err
		case errors.As(err, &am):
			out.Skipped = append(out.Skipped, SkippedInstance{InstanceID: in.InstanceID, Reason: SkipManaged, WorkerID: am.WorkerID})
		case ctx.Err() != nil:
			return out, ctx.Err()
		default:
			// One instance the domain refuses does not stop the others;
			// the detail is the domain's own, written for the caller.
			detail := "the import failed"
			var ve *domain.ValidationError
			if errors.As(err, &ve) {
				detail = ve.Error()
			}
			f.app.opts.Logger.WarnContext(ctx, "import: an instance was not imported",
				slog.String("instance_id", in.InstanceID), slog.Any("error", err))
			out.Skipped = append(out.Skipped, SkippedInstance{InstanceID: in.InstanceID, Reason: SkipFailed, Detail: detail})
		}
	}
	return out, nil
}

// importable reports whether an instance in state s can become a worker.
func importable(s worker.EC2State) bool {
	switch s {
	case worker.EC2Pending, worker.EC2Running, worker.EC2Stopping, worker.EC2Stopped:
		return true
	}
	return false
}

// importName is the worker's name: the requested one, else the instance's
// Name tag, else worker-<instance id>.
func importName(requested string, in Instance) string {
	switch {
	case requested != "":
		return requested
	case strings.TrimSpace(in.Tags["Name"]) != "":
		return strings.TrimSpace(in.Tags["Name"])
	}
	return "worker-" + in.InstanceID
}

// imageName returns an AMI's name, or "" when it cannot be described (the
// import does not depend on it).
func (f *Fleet) imageName(ctx context.Context, region, imageID string) string {
	if imageID == "" {
		return ""
	}
	var img Image
	if err := f.call(ctx, func(ctx context.Context) (err error) {
		img, err = f.cloud.DescribeImage(ctx, region, imageID)
		return err
	}); err != nil {
		f.app.opts.Logger.InfoContext(ctx, "import: AMI not described", slog.String("ami_id", imageID), slog.Any("error", err))
		return ""
	}
	return img.Name
}

// LabNotAvailableError says a lab cannot be downloaded because the worker's
// controller is not reachable in its current state. It matches
// domain.ErrIllegalTransition (HTTP 409 with the current status).
type LabNotAvailableError struct {
	WorkerID string
	Status   worker.Status
}

func (e *LabNotAvailableError) Error() string {
	return fmt.Sprintf("worker %s is %s: its labs can be downloaded only while it runs with a CML endpoint", e.WorkerID, e.Status)
}

// Is makes errors.Is(err, domain.ErrIllegalTransition) true.
func (e *LabNotAvailableError) Is(target error) bool { return target == domain.ErrIllegalTransition }

// DownloadLab returns a lab's topology (YAML) from the worker's controller
// (readers).
func (f *Fleet) DownloadLab(ctx context.Context, id, labID string) (string, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerObserve); err != nil {
		return "", err
	}
	if err := checkID("id", id); err != nil {
		return "", err
	}
	if !worker.ValidLabID(labID) {
		var p domain.Problems
		p.Add("lab", "%q is not a CML lab id", truncate(labID, 64))
		return "", p.Err()
	}
	v, err := f.app.opts.Workers.GetWorker(ctx, id)
	if err != nil {
		return "", asNotFound(err, "worker", id)
	}
	if v.Status != worker.StatusRunning || v.Endpoint == "" {
		return "", &LabNotAvailableError{WorkerID: id, Status: v.Status}
	}
	var topology string
	err = f.call(ctx, func(ctx context.Context) (err error) {
		topology, err = f.cml.DownloadLab(ctx, v.Endpoint, labID)
		return err
	})
	if err != nil {
		if CloudErrorOf(err).Kind == CloudNotFound {
			return "", &NotFoundError{Kind: "lab", ID: labID}
		}
		return "", err
	}
	return topology, nil
}

func (f *Fleet) call(ctx context.Context, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, f.opts.CallTimeout)
	defer cancel()
	return fn(cctx)
}
