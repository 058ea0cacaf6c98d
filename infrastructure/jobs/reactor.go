package jobs

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
	"github.com/cmlcloud/cml-cloud-manager/projections"
)

// ReactorName is the name of the reactor's checkpoint and leadership lock.
const ReactorName = "reactor_jobs"

// Reactor turns the events of the workers' lifecycle streams into River jobs
// (application.Reactions says which). It is a projection run by a
// projections.Runner, so it gets leadership, fencing and a checkpoint
// written in the same transaction as its writes: its writes are the jobs,
// inserted with InsertManyTx in the batch's transaction. A crash before the
// commit loses neither the jobs nor the checkpoint (both roll back and the
// batch is read again); a replay inserts nothing new, because each job is
// unique by its causing event's id whatever the state of the first one.
// This is the outbox pattern with the event log as the outbox.
type Reactor struct {
	registry *domain.Registry
	client   *river.Client[pgx.Tx]
}

var _ projections.Projection = (*Reactor)(nil)

// NewReactor returns the reactor inserting jobs with client.
func NewReactor(registry *domain.Registry, client *river.Client[pgx.Tx]) *Reactor {
	return &Reactor{registry: registry, client: client}
}

// Name implements projections.Projection.
func (*Reactor) Name() string { return ReactorName }

// reactingEvents are the events Reactions acts on.
var reactingEvents = []domain.Event{
	worker.Created{}, worker.ProvisioningRetried{}, worker.Imported{},
	worker.StartRequested{}, worker.StopRequested{}, worker.TerminationRequested{},
	worker.TagsChanged{}, worker.DetailedMonitoringChanged{},
	worker.LicenseRegistrationRequested{}, worker.LicenseDeregistrationRequested{},
	worker.LabActionRequested{},
}

// Filter implements projections.Projection: the lifecycle streams, and only
// the event types a job follows (every version of each).
func (*Reactor) Filter() eventstore.Filter {
	f := eventstore.Filter{StreamPrefixes: []string{worker.StreamPrefix}}
	for _, e := range reactingEvents {
		t := e.EventType()
		f.TypePrefixes = append(f.TypePrefixes, t[:strings.LastIndex(t, ".")+1])
	}
	return f
}

// Tables implements projections.Projection: the reactor owns no read-model
// table (River's are not rebuilt).
func (*Reactor) Tables() []string { return nil }

// Apply implements projections.Projection: it inserts the batch's jobs in
// tx. It changes no read-model row, so it notifies nothing.
func (r *Reactor) Apply(ctx context.Context, tx pgx.Tx, _ projections.Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	var params []river.InsertManyParams
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, worker.StreamPrefix)
		if !ok || !application.ValidID(id) {
			continue
		}
		e, _, err := application.Decode(r.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("reactor: %w", err)
		}
		reactions := application.Reactions(id, e)
		if len(reactions) == 0 {
			continue
		}
		meta, err := application.ParseMetadata(rec.Metadata)
		if err != nil {
			return nil, fmt.Errorf("reactor: %s@%d: %w", rec.Stream, rec.Revision, err)
		}
		c := Cause{WorkerID: id, EventID: rec.ID, CorrelationID: meta.CorrelationID}
		for _, re := range reactions {
			args, opts, err := jobArgs(re, c)
			if err != nil {
				return nil, fmt.Errorf("reactor: %s@%d: %w", rec.Stream, rec.Revision, err)
			}
			params = append(params, river.InsertManyParams{Args: args, InsertOpts: opts})
		}
	}
	if len(params) == 0 {
		return nil, nil
	}
	if _, err := r.client.InsertManyTx(ctx, tx, params); err != nil {
		return nil, fmt.Errorf("reactor: insert %d jobs: %w", len(params), err)
	}
	return nil, nil
}

// jobArgs maps a reaction to its job's arguments, and the insert options
// when the kind's own are not those of a reactor job.
func jobArgs(re application.Reaction, c Cause) (river.JobArgs, *river.InsertOpts, error) {
	args, err := reactionArgs(re, c)
	if err != nil {
		return nil, nil, err
	}
	if re.Kind == application.JobWorkerRefresh {
		opts := reactorInsertOpts(QueueFleet, fleetMaxAttempts)
		return args, &opts, nil
	}
	return args, nil, nil
}

func reactionArgs(re application.Reaction, c Cause) (river.JobArgs, error) {
	switch re.Kind {
	case application.JobEC2Launch:
		return LaunchArgs{Cause: c, Attempt: re.Attempt}, nil
	case application.JobEC2Start:
		return StartArgs{Cause: c}, nil
	case application.JobEC2Stop:
		return StopArgs{Cause: c}, nil
	case application.JobEC2Terminate:
		return TerminateArgs{Cause: c}, nil
	case application.JobEC2Tags:
		return TagsArgs{Cause: c}, nil
	case application.JobEC2Monitoring:
		return MonitoringArgs{Cause: c, Enabled: re.Enabled}, nil
	case application.JobLicenseRegister:
		return LicenseRegisterArgs{Cause: c, SealedToken: re.License.SealedToken, Reregister: re.License.Reregister}, nil
	case application.JobLicenseDeregister:
		return LicenseDeregisterArgs{Cause: c}, nil
	case application.JobLabAction:
		return LabActionArgs{Cause: c, RequestID: re.Lab.RequestID, Action: re.Lab.Action, LabID: re.Lab.LabID,
			Title: re.Lab.Title, YAML: re.Lab.YAML}, nil
	case application.JobWorkerRefresh:
		return RefreshArgs(c), nil // the same fields, unique by worker and event
	}
	return nil, fmt.Errorf("no job for reaction %q", re.Kind)
}
