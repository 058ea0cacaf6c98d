package application

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/settings"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// updateWorker authorises, checks the id, and runs one worker decision.
func (a *App) updateWorker(ctx context.Context, action rbac.Action, command, id string, decide func(*worker.Worker) ([]domain.Event, error)) (Result, error) {
	p, err := rbac.Authorize(ctx, action)
	if err != nil {
		return Result{}, err
	}
	if err := checkID("id", id); err != nil {
		return Result{}, err
	}
	saved, err := a.workers.Update(ctx, id, a.metadata(ctx, p, command), decide)
	if err != nil {
		return Result{}, asNotFound(err, "worker", id)
	}
	return result(id, saved), nil
}

// CreateWorker is the input of CreateWorker. Empty fields take the effective
// runtime settings (AMI of the region, instance type, network, tags).
type CreateWorker struct {
	Name                 string            `json:"name"`
	Region               string            `json:"region"`
	InstanceType         string            `json:"instance_type,omitempty"`
	AMIID                string            `json:"ami_id,omitempty"`
	AMIName              string            `json:"ami_name,omitempty"`
	Tags                 map[string]string `json:"tags,omitempty"`
	DetailedMonitoring   *bool             `json:"detailed_monitoring,omitempty"`
	IdleDetectionEnabled *bool             `json:"idle_detection_enabled,omitempty"`
}

// CreateWorker creates a worker and requests its launch (admin).
func (a *App) CreateWorker(ctx context.Context, in CreateWorker) (Result, error) {
	p, err := rbac.Authorize(ctx, rbac.WorkerCreate)
	if err != nil {
		return Result{}, err
	}
	if err := a.checkRegion(in.Region); err != nil {
		return Result{}, err
	}
	eff, err := a.effectiveSettings(ctx)
	if err != nil {
		return Result{}, err
	}
	spec := worker.CreateSpec{
		Name: in.Name, Region: in.Region, InstanceType: in.InstanceType, AMIID: in.AMIID, AMIName: in.AMIName,
		SubnetID: eff.SubnetID, SecurityGroupIDs: eff.SecurityGroupIDs, KeyName: eff.KeyName,
		DetailedMonitoring: true, IdleDetectionEnabled: true,
	}
	if spec.InstanceType == "" {
		spec.InstanceType = eff.InstanceType
	}
	if spec.AMIID == "" {
		spec.AMIID = eff.AMIIDs[in.Region]
		if spec.AMIName == "" {
			spec.AMIName = eff.AMIName
		}
	}
	spec.Tags = maps.Clone(eff.DefaultTags)
	if spec.Tags == nil {
		spec.Tags = map[string]string{}
	}
	maps.Copy(spec.Tags, in.Tags)
	if in.DetailedMonitoring != nil {
		spec.DetailedMonitoring = *in.DetailedMonitoring
	}
	if in.IdleDetectionEnabled != nil {
		spec.IdleDetectionEnabled = *in.IdleDetectionEnabled
	}
	id := a.opts.IDs.NewID()
	saved, err := a.workers.Update(ctx, id, a.metadata(ctx, p, "worker.create"), func(w *worker.Worker) ([]domain.Event, error) {
		return w.Create(id, spec)
	})
	if err != nil {
		return Result{}, err
	}
	return result(id, saved), nil
}

func (a *App) checkRegion(region string) error {
	if len(a.opts.Regions) > 0 && !slices.Contains(a.opts.Regions, region) {
		var p domain.Problems
		p.Add("region", "%q is not a managed region (managed: %s)", region, strings.Join(a.opts.Regions, ", "))
		return p.Err()
	}
	return nil
}

// ImportWorker describes an instance to manage, as looked up in EC2.
type ImportWorker struct {
	Name         string            `json:"name,omitempty"`
	Region       string            `json:"region"`
	InstanceID   string            `json:"instance_id"`
	InstanceType string            `json:"instance_type,omitempty"`
	AMIID        string            `json:"ami_id,omitempty"`
	AMIName      string            `json:"ami_name,omitempty"`
	State        worker.EC2State   `json:"state"`
	PublicIP     string            `json:"public_ip,omitempty"`
	PrivateIP    string            `json:"private_ip,omitempty"`
	Endpoint     string            `json:"endpoint,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
}

// ImportWorker makes an existing instance a managed worker (admin). An
// instance already managed by a live worker is refused.
func (a *App) ImportWorker(ctx context.Context, in ImportWorker) (Result, error) {
	p, err := rbac.Authorize(ctx, rbac.WorkerImport)
	if err != nil {
		return Result{}, err
	}
	if err := a.checkRegion(in.Region); err != nil {
		return Result{}, err
	}
	if existing, ok, err := a.opts.Workers.FindByInstance(ctx, in.Region, in.InstanceID); err != nil {
		return Result{}, fmt.Errorf("look up instance %s: %w", in.InstanceID, err)
	} else if ok {
		return Result{}, &AlreadyManagedError{InstanceID: in.InstanceID, WorkerID: existing.ID}
	}
	// An instance the product launched carries its worker's id from
	// RunInstances on, before the read model knows the instance: refuse it
	// while that worker lives.
	if owner := in.Tags[worker.TagWorkerID]; ValidID(owner) {
		w, err := a.workers.Load(ctx, owner)
		if err != nil {
			return Result{}, fmt.Errorf("load the worker named by the tags of %s: %w", in.InstanceID, err)
		}
		if w.Exists() && !w.State().Status.Terminal() {
			return Result{}, &AlreadyManagedError{InstanceID: in.InstanceID, WorkerID: owner}
		}
	}
	eff, err := a.effectiveSettings(ctx)
	if err != nil {
		return Result{}, err
	}
	spec := worker.ImportSpec{
		Name: in.Name, Region: in.Region, InstanceID: in.InstanceID, InstanceType: in.InstanceType,
		AMIID: in.AMIID, AMIName: in.AMIName, EC2State: in.State, PublicIP: in.PublicIP,
		PrivateIP: in.PrivateIP, Endpoint: in.Endpoint, Tags: in.Tags,
		IdleDetectionEnabled: eff.IdleDetectionEnabled,
	}
	id := a.opts.IDs.NewID()
	// Validate before claiming: a refused import must not hold the claim.
	if _, err := worker.New().Import(id, spec); err != nil {
		return Result{}, err
	}
	if err := a.claimInstance(ctx, p, in.Region, in.InstanceID, id); err != nil {
		return Result{}, err
	}
	saved, err := a.workers.Update(ctx, id, a.metadata(ctx, p, "worker.import"), func(w *worker.Worker) ([]domain.Event, error) {
		return w.Import(id, spec)
	})
	if err != nil {
		return Result{}, err
	}
	return result(id, saved), nil
}

// AlreadyManagedError says an instance is already a worker. It matches
// domain.ErrAlreadyExists.
type AlreadyManagedError struct {
	InstanceID string
	WorkerID   string
}

func (e *AlreadyManagedError) Error() string {
	return fmt.Sprintf("instance %s is already managed as worker %s", e.InstanceID, e.WorkerID)
}

// Is makes errors.Is(err, domain.ErrAlreadyExists) true.
func (e *AlreadyManagedError) Is(target error) bool { return target == domain.ErrAlreadyExists }

// StartWorker requests a start (manager+).
func (a *App) StartWorker(ctx context.Context, id string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerStart, "worker.start", id, (*worker.Worker).RequestStart)
}

// StopWorker requests a manual stop (manager+).
func (a *App) StopWorker(ctx context.Context, id string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerStop, "worker.stop", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RequestStop(worker.StopManual)
	})
}

// TerminateWorker requests the termination of the instance (admin).
func (a *App) TerminateWorker(ctx context.Context, id string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerTerminate, "worker.terminate", id, (*worker.Worker).RequestTermination)
}

// RemoveWorker stops managing the worker, leaving the instance as it is
// (admin).
func (a *App) RemoveWorker(ctx context.Context, id string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerRemove, "worker.remove", id, (*worker.Worker).Remove)
}

// RetryProvisioning launches a failed worker again (admin, like create).
func (a *App) RetryProvisioning(ctx context.Context, id string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerCreate, "worker.retry_provisioning", id, (*worker.Worker).RetryProvisioning)
}

// ReplaceWorkerTags sets the worker's tags (manager+).
func (a *App) ReplaceWorkerTags(ctx context.Context, id string, tags map[string]string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerTags, "worker.tags", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.ReplaceTags(tags)
	})
}

// SetDetailedMonitoring switches detailed CloudWatch monitoring (admin).
func (a *App) SetDetailedMonitoring(ctx context.Context, id string, enabled bool) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerMonitoring, "worker.monitoring", id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.SetDetailedMonitoring(enabled)
	})
}

// SetIdleDetection enables (with an optional per-worker timeout, 0 = global)
// or disables idle auto-stop for the worker (admin).
func (a *App) SetIdleDetection(ctx context.Context, id string, enabled bool, timeout time.Duration) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerIdleDetection, "worker.idle_detection", id, func(w *worker.Worker) ([]domain.Event, error) {
		if enabled {
			return w.EnableIdleDetection(timeout)
		}
		if timeout != 0 {
			var p domain.Problems
			p.Add("timeout", "cannot be set while disabling idle detection")
			return nil, p.Err()
		}
		return w.DisableIdleDetection()
	})
}

// MaxLicenseTokenLength bounds a Smart Licensing token.
const MaxLicenseTokenLength = 4096

// RequestLicenseRegistration asks to register the worker's CML licence with a
// Smart Licensing token (admin). The token is sealed before it is recorded.
func (a *App) RequestLicenseRegistration(ctx context.Context, id, token string, reregister bool) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerLicense, "worker.license_register", id, func(w *worker.Worker) ([]domain.Event, error) {
		token := strings.TrimSpace(token)
		if token == "" || len(token) > MaxLicenseTokenLength || strings.ContainsAny(token, "\r\n\t ") {
			var p domain.Problems
			p.Add("token", "must be a non-empty Smart Licensing token without spaces, at most %d characters", MaxLicenseTokenLength)
			return nil, p.Err()
		}
		sealed, err := a.opts.Sealer.Seal(token)
		if err != nil {
			return nil, fmt.Errorf("seal licence token: %w", err)
		}
		return w.RequestLicenseRegistration(reregister, a.opts.Sealer.Fingerprint(token), sealed)
	})
}

// RequestLicenseDeregistration asks to deregister the worker's licence (admin).
func (a *App) RequestLicenseDeregistration(ctx context.Context, id string) (Result, error) {
	return a.updateWorker(ctx, rbac.WorkerLicense, "worker.license_deregister", id, (*worker.Worker).RequestLicenseDeregistration)
}

// LabAction is the input of RequestLabAction.
type LabAction struct {
	Action worker.LabAction `json:"action"`
	LabID  string           `json:"lab_id,omitempty"`
	Title  string           `json:"title,omitempty"`
	YAML   string           `json:"yaml,omitempty"`
}

// RequestLabAction asks for a lab operation on a running worker (manager+).
// The result's ID is the worker; the request id is returned separately.
func (a *App) RequestLabAction(ctx context.Context, id string, in LabAction) (Result, string, error) {
	requestID := a.opts.IDs.NewID()
	res, err := a.updateWorker(ctx, rbac.WorkerLabsManage, "worker.lab_"+string(in.Action), id, func(w *worker.Worker) ([]domain.Event, error) {
		return w.RequestLabAction(worker.LabActionRequest{RequestID: requestID, Action: in.Action, LabID: in.LabID, Title: in.Title, YAML: in.YAML})
	})
	return res, requestID, err
}

// ListWorkers lists workers (any reader). By default terminated and removed
// workers are left out.
func (a *App) ListWorkers(ctx context.Context, f WorkerFilter) ([]WorkerView, int, error) {
	f, err := a.workerFilter(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	return a.opts.Workers.ListWorkers(ctx, f)
}

// WorkerPageEncoder is an optional capability of a WorkerReadModel: it
// returns a page of workers already encoded as the JSON object {"items":
// [...], "total", "limit", "offset"}, typically from a cache that lives as
// long as the workers do not change.
type WorkerPageEncoder interface {
	EncodedWorkerPage(ctx context.Context, f WorkerFilter) ([]byte, error)
}

// ListWorkersJSON is ListWorkers for the HTTP API: the page encoded as JSON,
// when the read model can provide it (ok is false otherwise; then call
// ListWorkers).
func (a *App) ListWorkersJSON(ctx context.Context, f WorkerFilter) (page []byte, ok bool, err error) {
	f, err = a.workerFilter(ctx, f)
	if err != nil {
		return nil, false, err
	}
	enc, can := a.opts.Workers.(WorkerPageEncoder)
	if !can {
		return nil, false, nil
	}
	page, err = enc.EncodedWorkerPage(ctx, f)
	return page, err == nil, err
}

// workerFilter authorises a worker list and validates its filter.
func (a *App) workerFilter(ctx context.Context, f WorkerFilter) (WorkerFilter, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkersRead); err != nil {
		return f, err
	}
	var p domain.Problems
	if f.Status != "" {
		if _, err := worker.ParseStatus(string(f.Status)); err != nil {
			p.Add("status", "%v", err)
		}
	}
	if f.Region != "" && !worker.ValidRegion(f.Region) {
		p.Add("region", "%q is not an AWS region name", f.Region)
	}
	if f.Limit < 0 || f.Limit > MaxPageSize {
		p.Add("limit", "must be between 1 and %d", MaxPageSize)
	}
	if f.Offset < 0 {
		p.Add("offset", "must not be negative")
	}
	if len(f.Query) > 200 {
		p.Add("q", "is longer than 200 characters")
	}
	if err := p.Err(); err != nil {
		return f, err
	}
	if f.Limit == 0 {
		f.Limit = DefaultPageSize
	}
	return f, nil
}

// Paging bounds of list queries.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// GetWorker returns one worker (any reader).
func (a *App) GetWorker(ctx context.Context, id string) (WorkerView, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkersRead); err != nil {
		return WorkerView{}, err
	}
	if err := checkID("id", id); err != nil {
		return WorkerView{}, err
	}
	v, err := a.opts.Workers.GetWorker(ctx, id)
	if err != nil {
		return WorkerView{}, asNotFound(err, "worker", id)
	}
	return v, nil
}

// WorkerIdleStatus is the idle rule evaluated now for a worker, with its
// inputs.
type WorkerIdleStatus struct {
	WorkerID string `json:"worker_id"`
	worker.IdleDecision
	LastActivityAt time.Time `json:"last_activity_at,omitzero"`
	LastStartedAt  time.Time `json:"last_started_at,omitzero"`
}

// IdleStatus evaluates the idle rule for a worker from the read model (any
// reader of worker details).
func (a *App) IdleStatus(ctx context.Context, id string) (WorkerIdleStatus, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerObserve); err != nil {
		return WorkerIdleStatus{}, err
	}
	if err := checkID("id", id); err != nil {
		return WorkerIdleStatus{}, err
	}
	v, err := a.opts.Workers.GetWorker(ctx, id)
	if err != nil {
		return WorkerIdleStatus{}, asNotFound(err, "worker", id)
	}
	eff, err := a.effectiveSettings(ctx)
	if err != nil {
		return WorkerIdleStatus{}, err
	}
	w := worker.FromState(v.State, v.Revision)
	return WorkerIdleStatus{
		WorkerID: id, IdleDecision: w.IdleDecision(a.opts.Clock.Now().UTC(), eff.IdlePolicy()),
		LastActivityAt: v.LastActivityAt, LastStartedAt: v.LastStartedAt,
	}, nil
}

// effectiveSettings overlays the saved runtime settings on the environment.
func (a *App) effectiveSettings(ctx context.Context) (settings.Values, error) {
	saved, _, _, err := a.opts.Settings.SavedSettings(ctx)
	if err != nil {
		return settings.Values{}, fmt.Errorf("read settings: %w", err)
	}
	v, _ := settings.Effective(a.opts.Defaults, saved)
	return v, nil
}
