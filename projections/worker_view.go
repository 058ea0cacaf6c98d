package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// WorkerView builds worker_view: one row per worker holding the fold of its
// lifecycle stream. It folds with the aggregate's own Apply, so a row always
// equals what loading the aggregate gives.
type WorkerView struct {
	registry *domain.Registry
}

var _ = registerProjection(func(r *domain.Registry) Projection { return NewWorkerView(r) })

// NewWorkerView returns the worker_view projection.
func NewWorkerView(registry *domain.Registry) *WorkerView { return &WorkerView{registry: registry} }

// Name implements Projection.
func (*WorkerView) Name() string { return "worker_view" }

// Filter implements Projection: the lifecycle streams only (the telemetry
// streams are named worker_telemetry-, which this prefix does not match).
func (*WorkerView) Filter() eventstore.Filter {
	return eventstore.Filter{StreamPrefixes: []string{worker.StreamPrefix}}
}

// Tables implements Projection.
func (*WorkerView) Tables() []string { return []string{"worker_view"} }

type workerRow struct {
	w         *worker.Worker
	createdBy application.Actor
	pos       eventstore.Position
	changed   bool
}

// Apply implements Projection: it loads the rows of the workers in the batch,
// folds the new events (skipping revisions already applied) and writes the
// changed rows back in one statement.
func (p *WorkerView) Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	rows := map[string]*workerRow{}
	var ids []string
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, worker.StreamPrefix)
		if !ok || !application.ValidID(id) {
			continue // not a worker lifecycle stream of ours
		}
		if _, seen := rows[id]; !seen {
			rows[id] = nil
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	if err := p.load(ctx, tx, t, ids, rows); err != nil {
		return nil, err
	}
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, worker.StreamPrefix)
		if !ok || !application.ValidID(id) {
			continue
		}
		r := rows[id]
		if r == nil {
			r = &workerRow{w: worker.New()}
			rows[id] = r
		}
		rev := int64(rec.Revision)
		if rev <= r.w.Version() {
			continue // applied in an earlier batch
		}
		if rev != r.w.Version()+1 {
			return nil, fmt.Errorf("worker_view: %s jumps from revision %d to %d", rec.Stream, r.w.Version(), rev)
		}
		e, at, err := application.Decode(p.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("worker_view: %w", err)
		}
		if err := r.w.Apply(e, at); err != nil {
			return nil, fmt.Errorf("worker_view: %s@%d: %w", rec.Stream, rec.Revision, err)
		}
		if rev == 0 {
			if m, err := application.ParseMetadata(rec.Metadata); err == nil {
				r.createdBy = m.Actor
			}
		}
		r.pos, r.changed = rec.Position, true
	}
	return p.store(ctx, tx, t, ids, rows)
}

func (p *WorkerView) load(ctx context.Context, tx pgx.Tx, t Tables, ids []string, rows map[string]*workerRow) error {
	q := `SELECT id::text, revision, state, created_by FROM ` + t.Ident("worker_view") + ` WHERE id = ANY($1::uuid[])`
	res, err := tx.Query(ctx, q, ids)
	if err != nil {
		return fmt.Errorf("worker_view: load rows: %w", err)
	}
	defer res.Close()
	for res.Next() {
		var (
			id        string
			rev       int64
			state     []byte
			createdBy []byte
		)
		if err := res.Scan(&id, &rev, &state, &createdBy); err != nil {
			return fmt.Errorf("worker_view: scan: %w", err)
		}
		var s worker.State
		if err := json.Unmarshal(state, &s); err != nil {
			return fmt.Errorf("worker_view: decode state of %s: %w", id, err)
		}
		r := &workerRow{w: worker.FromState(s, rev)}
		_ = json.Unmarshal(createdBy, &r.createdBy)
		rows[id] = r
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("worker_view: load rows: %w", err)
	}
	return nil
}

func (p *WorkerView) store(ctx context.Context, tx pgx.Tx, t Tables, ids []string, rows map[string]*workerRow) ([]string, error) {
	var (
		changed                             []string
		names, regions, statuses, instances []string
		revs, commits, prepares             []int64
		createdBy, states                   []string
		createdAt, updatedAt                []time.Time
	)
	for _, id := range ids {
		r := rows[id]
		if r == nil || !r.changed {
			continue
		}
		s := r.w.State()
		state, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("worker_view: encode state of %s: %w", id, err)
		}
		by, err := json.Marshal(r.createdBy)
		if err != nil {
			return nil, fmt.Errorf("worker_view: encode creator of %s: %w", id, err)
		}
		changed = append(changed, id)
		names = append(names, s.Name)
		regions = append(regions, s.Region)
		statuses = append(statuses, string(s.Status))
		instances = append(instances, s.InstanceID)
		revs = append(revs, r.w.Version())
		commits = append(commits, int64(r.pos.Commit))
		prepares = append(prepares, int64(r.pos.Prepare))
		createdBy = append(createdBy, string(by))
		createdAt = append(createdAt, s.CreatedAt)
		updatedAt = append(updatedAt, s.UpdatedAt)
		states = append(states, string(state))
	}
	if len(changed) == 0 {
		return nil, nil
	}
	q := `INSERT INTO ` + t.Ident("worker_view") + ` AS w
		(id, name, region, status, instance_id, revision, position_commit, position_prepare, created_by, created_at, updated_at, state)
		SELECT u.id, u.name, u.region, u.status, NULLIF(u.instance_id, ''), u.revision, u.pc, u.pp, u.created_by, u.created_at, u.updated_at, u.state
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
		            $9::jsonb[], $10::timestamptz[], $11::timestamptz[], $12::jsonb[])
		     AS u(id, name, region, status, instance_id, revision, pc, pp, created_by, created_at, updated_at, state)
		ON CONFLICT (id) DO UPDATE SET
			name = excluded.name, region = excluded.region, status = excluded.status,
			instance_id = excluded.instance_id, revision = excluded.revision,
			position_commit = excluded.position_commit, position_prepare = excluded.position_prepare,
			updated_at = excluded.updated_at, state = excluded.state`
	if _, err := tx.Exec(ctx, q, changed, names, regions, statuses, instances, revs, commits, prepares,
		createdBy, createdAt, updatedAt, states); err != nil {
		return nil, fmt.Errorf("worker_view: write rows: %w", err)
	}
	return changed, nil
}

// WorkerReader answers queries from worker_view. It implements
// application.WorkerReadModel.
type WorkerReader struct {
	pool *pgxpool.Pool
}

var _ application.WorkerReadModel = (*WorkerReader)(nil)

// NewWorkerReader returns a reader of worker_view.
func NewWorkerReader(pool *pgxpool.Pool) *WorkerReader { return &WorkerReader{pool: pool} }

// workerColumns are the worker_view columns of a worker, then its newest
// metrics sample (worker_metrics) and its labs count (worker_labs); use them
// with workerFrom.
const workerColumns = `w.id::text, w.revision, w.position_commit, w.position_prepare, w.created_by, w.state,
	m.m_at, m.m_sys, m.m_inst, m.m_cwc, m.m_cwm, m.m_cc, m.m_cm, m.m_cd, m.m_nr, m.m_nt, l.l_count`

// workerFrom joins each worker_view row (alias w) with its newest metrics
// sample and its labs count. The joined columns have names of their own, so
// the unqualified worker_view columns of the filters stay unambiguous.
const workerFrom = ` FROM worker_view w
	LEFT JOIN LATERAL (SELECT sampled_at AS m_at, ec2_system_status AS m_sys, ec2_instance_status AS m_inst,
	                          cloudwatch_cpu AS m_cwc, cloudwatch_memory AS m_cwm, cml_cpu AS m_cc, cml_memory AS m_cm,
	                          cml_disk AS m_cd, nodes_running::float8 AS m_nr, nodes_total::float8 AS m_nt
	                     FROM worker_metrics WHERE worker_id = w.id ORDER BY sampled_at DESC LIMIT 1) m ON true
	LEFT JOIN LATERAL (SELECT labs_count AS l_count FROM worker_labs WHERE worker_id = w.id) l ON true`

// scanWorker reads the workerColumns of a row, then any extra columns.
func scanWorker(row pgx.Row, extra ...any) (application.WorkerView, error) {
	var (
		v                application.WorkerView
		id               string
		commit, prepare  int64
		createdBy, state []byte
		mAt              *time.Time
		mSys, mInst      *string
		m                application.MetricsSample
		labs             *int32
	)
	dest := []any{&id, &v.Revision, &commit, &prepare, &createdBy, &state,
		&mAt, &mSys, &mInst, &m.CloudWatchCPU, &m.CloudWatchMemory, &m.CMLCPU, &m.CMLMemory, &m.CMLDisk,
		&m.NodesRunning, &m.NodesTotal, &labs}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return v, err
	}
	if err := json.Unmarshal(state, &v.State); err != nil {
		return v, fmt.Errorf("decode worker %s: %w", id, err)
	}
	_ = json.Unmarshal(createdBy, &v.CreatedBy)
	v.Position = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}.String()
	if mAt != nil {
		m.At, m.Samples = mAt.UTC(), 1
		if mSys != nil {
			m.EC2SystemStatus = *mSys
		}
		if mInst != nil {
			m.EC2InstanceStatus = *mInst
		}
		v.LatestMetrics = &m
	}
	if labs != nil {
		n := int(*labs)
		v.LabsCount = &n
	}
	return v, nil
}

// GetWorker implements application.WorkerReadModel.
func (r *WorkerReader) GetWorker(ctx context.Context, id string) (application.WorkerView, error) {
	v, err := scanWorker(r.pool.QueryRow(ctx, `SELECT `+workerColumns+workerFrom+` WHERE w.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, fmt.Errorf("worker %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("read worker %s: %w", id, err)
	}
	return v, nil
}

// FindByInstance implements application.WorkerReadModel. Terminated and
// removed workers no longer manage their instance.
func (r *WorkerReader) FindByInstance(ctx context.Context, region, instanceID string) (application.WorkerView, bool, error) {
	v, err := scanWorker(r.pool.QueryRow(ctx, `SELECT `+workerColumns+workerFrom+`
		WHERE w.region = $1 AND w.instance_id = $2 AND w.status NOT IN ('terminated', 'removed')
		ORDER BY w.created_at DESC LIMIT 1`, region, instanceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("find worker of instance %s: %w", instanceID, err)
	}
	return v, true, nil
}

// ListWorkers implements application.WorkerReadModel: ordered by name, with
// the total number of matching workers.
func (r *WorkerReader) ListWorkers(ctx context.Context, f application.WorkerFilter) ([]application.WorkerView, int, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Region != "" {
		where = append(where, "region = "+arg(f.Region))
	}
	switch {
	case f.Status != "":
		where = append(where, "status = "+arg(string(f.Status)))
	case !f.IncludeTerminated:
		where = append(where, "status NOT IN ('terminated', 'removed')")
	}
	if q := strings.TrimSpace(f.Query); q != "" {
		p := arg("%" + escapeLike(q) + "%")
		where = append(where, "(name ILIKE "+p+" OR instance_id ILIKE "+p+" OR region ILIKE "+p+" OR id::text = "+arg(strings.ToLower(q))+")")
	}
	sql := `SELECT ` + workerColumns + `, count(*) OVER ()` + workerFrom
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY w.name, w.id LIMIT " + arg(f.Limit) + " OFFSET " + arg(f.Offset)
	rows, err := r.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list workers: %w", err)
	}
	defer rows.Close()
	out := []application.WorkerView{}
	total := 0
	for rows.Next() {
		v, err := scanWorker(rows, &total)
		if err != nil {
			return nil, 0, fmt.Errorf("list workers: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list workers: %w", err)
	}
	if len(out) == 0 && f.Offset > 0 {
		// Past the end: count separately so the caller still learns the total.
		countSQL := `SELECT count(*) FROM worker_view`
		if len(where) > 0 {
			countSQL += " WHERE " + strings.Join(where, " AND ")
		}
		if err := r.pool.QueryRow(ctx, countSQL, args[:len(args)-2]...).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("count workers: %w", err)
		}
	}
	return out, total, nil
}

// escapeLike escapes the LIKE wildcards of a user's search text.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
