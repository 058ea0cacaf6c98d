package projections

import (
	"context"
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

// WorkerMetrics builds worker_metrics: one row per metrics_sampled event of
// the workers' telemetry streams, a time series bounded by the telemetry
// retention (PruneWorkerMetrics).
type WorkerMetrics struct {
	registry *domain.Registry
}

var _ = registerProjection(func(r *domain.Registry) Projection { return NewWorkerMetrics(r) })

// NewWorkerMetrics returns the worker_metrics projection.
func NewWorkerMetrics(registry *domain.Registry) *WorkerMetrics {
	return &WorkerMetrics{registry: registry}
}

// Name implements Projection.
func (*WorkerMetrics) Name() string { return "worker_metrics" }

// metricsTypePrefix matches every version of the metrics event.
var metricsTypePrefix = strings.TrimSuffix((worker.MetricsSampled{}).EventType(), "v1")

// Filter implements Projection: the metrics samples of the telemetry streams.
func (*WorkerMetrics) Filter() eventstore.Filter {
	return eventstore.Filter{
		StreamPrefixes: []string{worker.TelemetryStreamPrefix},
		TypePrefixes:   []string{metricsTypePrefix},
	}
}

// Tables implements Projection.
func (*WorkerMetrics) Tables() []string { return []string{"worker_metrics"} }

// Apply implements Projection: one row per sample, inserted in one statement
// per batch; a replayed event hits the primary key and changes nothing. It
// returns the ids of the workers that got a sample.
func (p *WorkerMetrics) Apply(ctx context.Context, tx pgx.Tx, t Tables, batch []eventstore.RecordedEvent) ([]string, error) {
	var (
		ids, sysStatus, instStatus      []string
		at                              []time.Time
		commits, prepares               []int64
		cwCPU, cwMem, cmlCPU, cmlMem, d []*float64
		running, total                  []*int32
		changed                         []string
		seen                            = map[string]bool{}
	)
	for _, rec := range batch {
		id, ok := strings.CutPrefix(rec.Stream, worker.TelemetryStreamPrefix)
		if !ok || !application.ValidID(id) {
			continue
		}
		e, when, err := application.Decode(p.registry, rec)
		if err != nil {
			return nil, fmt.Errorf("worker_metrics: %w", err)
		}
		m, ok := e.(worker.MetricsSampled)
		if !ok {
			continue
		}
		ids = append(ids, id)
		at = append(at, when.UTC())
		commits = append(commits, int64(rec.Position.Commit))
		prepares = append(prepares, int64(rec.Position.Prepare))
		sysStatus = append(sysStatus, m.EC2SystemStatus)
		instStatus = append(instStatus, m.EC2InstanceStatus)
		cwCPU = append(cwCPU, m.CloudWatchCPU)
		cwMem = append(cwMem, m.CloudWatchMemory)
		cmlCPU = append(cmlCPU, m.CMLCPU)
		cmlMem = append(cmlMem, m.CMLMemory)
		d = append(d, m.CMLDisk)
		running = append(running, int32Ptr(m.NodesRunning))
		total = append(total, int32Ptr(m.NodesTotal))
		if !seen[id] {
			seen[id] = true
			changed = append(changed, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	q := `INSERT INTO ` + t.Ident("worker_metrics") + `
		(worker_id, sampled_at, position_commit, position_prepare, ec2_system_status, ec2_instance_status,
		 cloudwatch_cpu, cloudwatch_memory, cml_cpu, cml_memory, cml_disk, nodes_running, nodes_total)
		SELECT u.id, u.at, u.pc, u.pp, NULLIF(u.sys, ''), NULLIF(u.inst, ''), u.cwc, u.cwm, u.cc, u.cm, u.cd, u.nr, u.nt
		FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
		            $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::int[], $13::int[])
		     AS u(id, at, pc, pp, sys, inst, cwc, cwm, cc, cm, cd, nr, nt)
		ON CONFLICT DO NOTHING`
	if _, err := tx.Exec(ctx, q, ids, at, commits, prepares, sysStatus, instStatus,
		cwCPU, cwMem, cmlCPU, cmlMem, d, running, total); err != nil {
		return nil, fmt.Errorf("worker_metrics: insert samples: %w", err)
	}
	return changed, nil
}

func int32Ptr(v *int) *int32 {
	if v == nil {
		return nil
	}
	n := int32(min(max(*v, 0), 1<<31-1))
	return &n
}

// MetricsReader answers metrics queries from worker_metrics. It implements
// application.MetricsReadModel.
type MetricsReader struct {
	pool *pgxpool.Pool
}

var _ application.MetricsReadModel = (*MetricsReader)(nil)

// NewMetricsReader returns a reader of worker_metrics.
func NewMetricsReader(pool *pgxpool.Pool) *MetricsReader { return &MetricsReader{pool: pool} }

// metricsAggregates are the columns of one downsampled point: averages of
// the numbers, the last reported statuses, and the number of samples.
const metricsAggregates = `
	(array_agg(ec2_system_status ORDER BY sampled_at DESC) FILTER (WHERE ec2_system_status IS NOT NULL))[1],
	(array_agg(ec2_instance_status ORDER BY sampled_at DESC) FILTER (WHERE ec2_instance_status IS NOT NULL))[1],
	avg(cloudwatch_cpu), avg(cloudwatch_memory), avg(cml_cpu), avg(cml_memory), avg(cml_disk),
	avg(nodes_running)::float8, avg(nodes_total)::float8, count(*)`

// MetricsSeries implements application.MetricsReadModel with date_bin
// buckets of step starting at from.
func (r *MetricsReader) MetricsSeries(ctx context.Context, id string, from, to time.Time, step time.Duration) ([]application.MetricsSample, error) {
	if step <= 0 {
		return nil, fmt.Errorf("metrics series: step %s is not positive", step)
	}
	interval := strconv.FormatInt(int64(step/time.Microsecond), 10) + " microseconds"
	rows, err := r.pool.Query(ctx, `SELECT date_bin($4::interval, sampled_at, $2) AS bucket,`+metricsAggregates+`
		FROM worker_metrics
		WHERE worker_id = $1 AND sampled_at >= $2 AND sampled_at < $3
		GROUP BY bucket ORDER BY bucket`, id, from, to, interval)
	if err != nil {
		return nil, fmt.Errorf("metrics series of %s: %w", id, err)
	}
	defer rows.Close()
	out := []application.MetricsSample{}
	for rows.Next() {
		s, err := scanSample(rows)
		if err != nil {
			return nil, fmt.Errorf("metrics series of %s: %w", id, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("metrics series of %s: %w", id, err)
	}
	return out, nil
}

// scanSample reads a time, the two statuses, the seven numbers and a count.
func scanSample(row pgx.Row) (application.MetricsSample, error) {
	var (
		s          application.MetricsSample
		sys, inst  *string
		n          int64
		at         time.Time
		cpu, mem   *float64
		cc, cm, cd *float64
		nr, nt     *float64
	)
	if err := row.Scan(&at, &sys, &inst, &cpu, &mem, &cc, &cm, &cd, &nr, &nt, &n); err != nil {
		return s, err
	}
	s.At = at.UTC()
	if sys != nil {
		s.EC2SystemStatus = *sys
	}
	if inst != nil {
		s.EC2InstanceStatus = *inst
	}
	s.CloudWatchCPU, s.CloudWatchMemory, s.CMLCPU, s.CMLMemory, s.CMLDisk = cpu, mem, cc, cm, cd
	s.NodesRunning, s.NodesTotal, s.Samples = nr, nt, int(n)
	return s, nil
}

// PruneWorkerMetrics deletes the samples taken before before, the
// worker_metrics side of the telemetry retention. It returns how many rows
// it deleted.
func PruneWorkerMetrics(ctx context.Context, pool *pgxpool.Pool, before time.Time) (int64, error) {
	tag, err := pool.Exec(ctx, `DELETE FROM worker_metrics WHERE sampled_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune worker_metrics: %w", err)
	}
	return tag.RowsAffected(), nil
}

// MetricsPruner is PruneWorkerMetrics as a value (for the telemetry_prune
// job).
type MetricsPruner struct {
	Pool *pgxpool.Pool
}

// Prune deletes the samples taken before before.
func (p MetricsPruner) Prune(ctx context.Context, before time.Time) (int64, error) {
	return PruneWorkerMetrics(ctx, p.Pool, before)
}
