package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// WorkerLabs builds worker_labs: the lab list last observed on each worker's
// controller, from the labs_observed events of the telemetry streams.
type WorkerLabs struct {
	registry *domain.Registry
}

var _ = registerProjection(func(r *domain.Registry) Projection { return NewWorkerLabs(r) })

// NewWorkerLabs returns the worker_labs projection.
func NewWorkerLabs(registry *domain.Registry) *WorkerLabs { return &WorkerLabs{registry: registry} }

// Name implements Projection.
func (*WorkerLabs) Name() string { return "worker_labs" }

// labsTypePrefix matches every version of the labs event.
var labsTypePrefix = strings.TrimSuffix((worker.LabsObserved{}).EventType(), "v1")

// Filter implements Projection: the lab lists of the telemetry streams.
func (*WorkerLabs) Filter() eventstore.Filter {
	return eventstore.Filter{
		StreamPrefixes: []string{worker.TelemetryStreamPrefix},
		TypePrefixes:   []string{labsTypePrefix},
	}
}

// Tables implements Projection.
func (*WorkerLabs) Tables() []string { return []string{"worker_labs"} }

type labsRow struct {
	labs []byte
	n    int
	at   time.Time
	pos  eventstore.Position
}

// Apply implements Projection: the newest list of each worker in the batch
// replaces the row unless the row already holds a later (or the same)
// event, so a replay changes nothing.
func (p *WorkerLabs) Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	latest := map[string]labsRow{}
	var order []string
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, worker.TelemetryStreamPrefix)
		if !ok || !application.ValidID(id) {
			continue
		}
		e, at, err := application.Decode(p.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("worker_labs: %w", err)
		}
		obs, ok := e.(worker.LabsObserved)
		if !ok {
			continue
		}
		if obs.Labs == nil {
			obs.Labs = []worker.Lab{}
		}
		raw, err := json.Marshal(obs.Labs)
		if err != nil {
			return nil, fmt.Errorf("worker_labs: encode labs of %s: %w", id, err)
		}
		if _, seen := latest[id]; !seen {
			order = append(order, id)
		}
		latest[id] = labsRow{labs: raw, n: len(obs.Labs), at: at.UTC(), pos: rec.Position}
	}
	if len(order) == 0 {
		return nil, nil
	}
	var (
		labs              []string
		counts            []int32
		at                []time.Time
		commits, prepares []int64
	)
	for _, id := range order {
		r := latest[id]
		labs = append(labs, string(r.labs))
		counts = append(counts, int32(r.n))
		at = append(at, r.at)
		commits = append(commits, int64(r.pos.Commit))
		prepares = append(prepares, int64(r.pos.Prepare))
	}
	q := `INSERT INTO ` + t.Ident("worker_labs") + ` AS l
		(worker_id, labs, labs_count, observed_at, position_commit, position_prepare)
		SELECT * FROM unnest($1::uuid[], $2::jsonb[], $3::int[], $4::timestamptz[], $5::bigint[], $6::bigint[])
		ON CONFLICT (worker_id) DO UPDATE SET
			labs = excluded.labs, labs_count = excluded.labs_count, observed_at = excluded.observed_at,
			position_commit = excluded.position_commit, position_prepare = excluded.position_prepare
		WHERE (l.position_commit, l.position_prepare) < (excluded.position_commit, excluded.position_prepare)
		RETURNING worker_id::text`
	rows, err := tx.Query(ctx, q, order, labs, counts, at, commits, prepares)
	if err != nil {
		return nil, fmt.Errorf("worker_labs: write rows: %w", err)
	}
	changed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("worker_labs: write rows: %w", err)
	}
	return changed, nil
}

// LabsReader answers lab queries from worker_labs. It implements
// application.LabsReadModel.
type LabsReader struct {
	pool *pgxpool.Pool
}

var _ application.LabsReadModel = (*LabsReader)(nil)

// NewLabsReader returns a reader of worker_labs.
func NewLabsReader(pool *pgxpool.Pool) *LabsReader { return &LabsReader{pool: pool} }

// WorkerLabs implements application.LabsReadModel.
func (r *LabsReader) WorkerLabs(ctx context.Context, id string) (application.WorkerLabs, bool, error) {
	var (
		raw             []byte
		at              time.Time
		commit, prepare int64
	)
	err := r.pool.QueryRow(ctx, `SELECT labs, observed_at, position_commit, position_prepare
		FROM worker_labs WHERE worker_id = $1`, id).Scan(&raw, &at, &commit, &prepare)
	if errors.Is(err, pgx.ErrNoRows) {
		return application.WorkerLabs{WorkerID: id, Labs: []worker.Lab{}}, false, nil
	}
	if err != nil {
		return application.WorkerLabs{}, false, fmt.Errorf("read labs of worker %s: %w", id, err)
	}
	out := application.WorkerLabs{WorkerID: id, ObservedAt: at.UTC(),
		Position: eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}.String()}
	if err := json.Unmarshal(raw, &out.Labs); err != nil {
		return application.WorkerLabs{}, false, fmt.Errorf("decode labs of worker %s: %w", id, err)
	}
	if out.Labs == nil {
		out.Labs = []worker.Lab{}
	}
	out.Count = len(out.Labs)
	return out, true, nil
}
