package application

import (
	"context"
	"fmt"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/application/rbac"
	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

// MetricsSample is one sample of a worker's metrics (the newest one in the
// worker view, or one downsampled point of a series, whose values are the
// averages over its step and whose statuses are the last of its step).
type MetricsSample struct {
	At                time.Time `json:"at"`
	EC2SystemStatus   string    `json:"ec2_system_status,omitempty"`
	EC2InstanceStatus string    `json:"ec2_instance_status,omitempty"`
	CloudWatchCPU     *float64  `json:"cloudwatch_cpu,omitempty"`
	CloudWatchMemory  *float64  `json:"cloudwatch_memory,omitempty"`
	CMLCPU            *float64  `json:"cml_cpu,omitempty"`
	CMLMemory         *float64  `json:"cml_memory,omitempty"`
	CMLDisk           *float64  `json:"cml_disk,omitempty"`
	NodesRunning      *float64  `json:"nodes_running,omitempty"`
	NodesTotal        *float64  `json:"nodes_total,omitempty"`
	// Samples is how many samples the point summarises (1 for a raw one).
	Samples int `json:"samples"`
}

// WorkerTelemetry is what the telemetry read models add to a worker view:
// the newest metrics sample and the number of labs last observed (nil when
// none was recorded yet).
type WorkerTelemetry struct {
	LatestMetrics *MetricsSample `json:"latest_metrics,omitempty"`
	LabsCount     *int           `json:"labs_count,omitempty"`
}

// MetricsQuery selects a time series: samples from From (inclusive) to To
// (exclusive), averaged over buckets of Step. Zero values take defaults: To
// now, From DefaultMetricsRange before To, and a step that gives at most
// DefaultMetricsPoints points.
type MetricsQuery struct {
	From time.Time
	To   time.Time
	Step time.Duration
}

// Bounds of a metrics query.
const (
	DefaultMetricsRange  = 6 * time.Hour
	DefaultMetricsPoints = 360
	MaxMetricsPoints     = 2000
	MaxMetricsRange      = 31 * 24 * time.Hour
	MinMetricsStep       = 10 * time.Second
)

// MetricsSeries is GET /api/workers/{id}/metrics.
type MetricsSeries struct {
	WorkerID    string          `json:"worker_id"`
	From        time.Time       `json:"from"`
	To          time.Time       `json:"to"`
	StepSeconds int64           `json:"step_seconds"`
	Points      []MetricsSample `json:"points"`
}

// MetricsReadModel is the worker_metrics read model.
type MetricsReadModel interface {
	// MetricsSeries returns the samples of worker id in [from, to), one
	// point per non-empty bucket of step (buckets start at from), oldest
	// first.
	MetricsSeries(ctx context.Context, id string, from, to time.Time, step time.Duration) ([]MetricsSample, error)
}

// WorkerLabs is GET /api/workers/{id}/labs: the lab list last observed on
// the worker's controller.
type WorkerLabs struct {
	WorkerID   string       `json:"worker_id"`
	ObservedAt time.Time    `json:"observed_at,omitzero"`
	Count      int          `json:"count"`
	Labs       []worker.Lab `json:"labs"`
	// Position is the log position of the labs_observed event ("" when no
	// list was recorded yet).
	Position string `json:"position,omitempty"`
}

// LabsReadModel is the worker_labs read model.
type LabsReadModel interface {
	// WorkerLabs returns the last observed list; found is false when none
	// was recorded.
	WorkerLabs(ctx context.Context, id string) (labs WorkerLabs, found bool, err error)
}

// Telemetry answers the telemetry commands (recorded by jobs on the
// worker's telemetry stream) and the metrics and labs queries.
type Telemetry struct {
	app     *App
	metrics MetricsReadModel
	labs    LabsReadModel
}

// NewTelemetry builds the telemetry handlers. It panics when a dependency is
// missing (a wiring bug).
func NewTelemetry(app *App, metrics MetricsReadModel, labs LabsReadModel) *Telemetry {
	if app == nil || metrics == nil || labs == nil {
		panic("application: NewTelemetry needs the App and the metrics and labs read models")
	}
	return &Telemetry{app: app, metrics: metrics, labs: labs}
}

// RecordMetrics records one metrics sample on the worker's telemetry stream
// (the system principal only). Every call appends: a sample is a
// measurement, not a state change. The sample time is the event's time.
func (t *Telemetry) RecordMetrics(ctx context.Context, id string, m worker.MetricsSampled) (Result, error) {
	p, err := t.authorizeRecord(ctx, id)
	if err != nil {
		return Result{}, err
	}
	events, err := worker.SampleMetrics(m)
	if err != nil {
		return Result{}, err
	}
	return t.append(ctx, p, "worker.record_metrics", id, events)
}

// ObserveLabs records the full lab list of the worker's controller when it
// differs from the last one recorded (the system principal only); an
// unchanged list appends nothing.
func (t *Telemetry) ObserveLabs(ctx context.Context, id string, labs []worker.Lab) (Result, error) {
	p, err := t.authorizeRecord(ctx, id)
	if err != nil {
		return Result{}, err
	}
	prev, _, err := t.labs.WorkerLabs(ctx, id)
	if err != nil {
		return Result{}, fmt.Errorf("read the labs of worker %s: %w", id, err)
	}
	events := worker.ObserveLabs(prev.Labs, labs)
	if len(events) == 0 {
		return Result{ID: id, Events: []string{}, EventIDs: []string{}, Revision: -1}, nil
	}
	return t.append(ctx, p, "worker.observe_labs", id, events)
}

// authorizeRecord checks the system principal and that the worker exists.
func (t *Telemetry) authorizeRecord(ctx context.Context, id string) (rbac.Principal, error) {
	p, err := rbac.Authorize(ctx, rbac.WorkerRecord)
	if err != nil {
		return p, err
	}
	if err := checkID("id", id); err != nil {
		return p, err
	}
	if _, err := t.app.opts.Workers.GetWorker(ctx, id); err != nil {
		return p, asNotFound(err, "worker", id)
	}
	return p, nil
}

// append writes events to the telemetry stream. The stream has no aggregate
// to protect, so any revision is accepted.
func (t *Telemetry) append(ctx context.Context, p rbac.Principal, command, id string, events []domain.Event) (Result, error) {
	meta := t.app.metadata(ctx, p, command)
	meta.OccurredAt = t.app.opts.Clock.Now().UTC()
	data, ids, err := encodeEvents(t.app.opts.Registry, t.app.opts.IDs, meta, events)
	if err != nil {
		return Result{}, err
	}
	types := make([]string, len(data))
	for i, d := range data {
		types[i] = d.Type
	}
	stream := worker.TelemetryStream(id)
	res, err := t.app.opts.Store.Append(ctx, stream, eventstore.Any, data...)
	if err != nil {
		return Result{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	return Result{ID: id, Changed: true, Events: types, EventIDs: ids,
		Revision: int64(res.NextRevision), Position: res.Position.String()}, nil
}

// WorkerMetrics returns the worker's metrics over a time range, downsampled
// to the query's step (any reader of worker details).
func (t *Telemetry) WorkerMetrics(ctx context.Context, id string, q MetricsQuery) (MetricsSeries, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerObserve); err != nil {
		return MetricsSeries{}, err
	}
	if err := checkID("id", id); err != nil {
		return MetricsSeries{}, err
	}
	q, err := q.resolve(t.app.opts.Clock.Now().UTC())
	if err != nil {
		return MetricsSeries{}, err
	}
	if _, err := t.app.opts.Workers.GetWorker(ctx, id); err != nil {
		return MetricsSeries{}, asNotFound(err, "worker", id)
	}
	points, err := t.metrics.MetricsSeries(ctx, id, q.From, q.To, q.Step)
	if err != nil {
		return MetricsSeries{}, fmt.Errorf("read the metrics of worker %s: %w", id, err)
	}
	if points == nil {
		points = []MetricsSample{}
	}
	return MetricsSeries{WorkerID: id, From: q.From, To: q.To, StepSeconds: int64(q.Step / time.Second), Points: points}, nil
}

// resolve fills the defaults of a metrics query and validates it.
func (q MetricsQuery) resolve(now time.Time) (MetricsQuery, error) {
	if q.To.IsZero() {
		q.To = now
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-DefaultMetricsRange)
	}
	q.From, q.To = q.From.UTC(), q.To.UTC()
	var p domain.Problems
	span := q.To.Sub(q.From)
	switch {
	case span <= 0:
		p.Add("from", "must be before to")
	case span > MaxMetricsRange:
		p.Add("from", "the range may span at most %s", MaxMetricsRange)
	}
	if q.Step == 0 && span > 0 {
		q.Step = niceStep(span / DefaultMetricsPoints)
	}
	switch {
	case q.Step < 0 || q.Step%time.Second != 0:
		p.Add("step", "must be a positive whole number of seconds")
	case q.Step < MinMetricsStep:
		p.Add("step", "must be at least %s", MinMetricsStep)
	case span > 0 && int64(span/q.Step) > MaxMetricsPoints:
		p.Add("step", "gives more than %d points over the range; use a larger step", MaxMetricsPoints)
	}
	return q, p.Err()
}

// niceSteps are the steps a default step is rounded up to.
var niceSteps = []time.Duration{
	10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
	15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// niceStep rounds d up to a readable step.
func niceStep(d time.Duration) time.Duration {
	for _, s := range niceSteps {
		if d <= s {
			return s
		}
	}
	return d.Truncate(time.Hour) + time.Hour
}

// WorkerLabs returns the lab list last observed on the worker (any reader of
// worker details); an empty list before the first observation.
func (t *Telemetry) WorkerLabs(ctx context.Context, id string) (WorkerLabs, error) {
	if _, err := rbac.Authorize(ctx, rbac.WorkerObserve); err != nil {
		return WorkerLabs{}, err
	}
	if err := checkID("id", id); err != nil {
		return WorkerLabs{}, err
	}
	if _, err := t.app.opts.Workers.GetWorker(ctx, id); err != nil {
		return WorkerLabs{}, asNotFound(err, "worker", id)
	}
	labs, found, err := t.labs.WorkerLabs(ctx, id)
	if err != nil {
		return WorkerLabs{}, fmt.Errorf("read the labs of worker %s: %w", id, err)
	}
	if !found {
		labs = WorkerLabs{WorkerID: id}
	}
	if labs.Labs == nil {
		labs.Labs = []worker.Lab{}
	}
	labs.Count = len(labs.Labs)
	return labs, nil
}
