package worker_test

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/domain"
	"github.com/cmlcloud/cml-cloud-manager/domain/task"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

func TestSampleMetrics(t *testing.T) {
	t.Parallel()
	full := worker.MetricsSampled{
		EC2SystemStatus: "ok", EC2InstanceStatus: "ok",
		CloudWatchCPU: ptr(12.5), CloudWatchMemory: ptr(40.0), CMLCPU: ptr(0.0), CMLMemory: ptr(100.0), CMLDisk: ptr(63.2),
		NodesRunning: ptr(0), NodesTotal: ptr(12),
	}
	tests := []struct {
		name   string
		sample func(m worker.MetricsSampled) worker.MetricsSampled
		fields []string // nil when accepted
	}{
		{"every value, bounds included", func(m worker.MetricsSampled) worker.MetricsSampled { return m }, nil},
		{"nothing measured", func(worker.MetricsSampled) worker.MetricsSampled { return worker.MetricsSampled{} }, nil},
		{"NaN", func(m worker.MetricsSampled) worker.MetricsSampled { m.CMLCPU = ptr(math.NaN()); return m }, []string{"cml_cpu"}},
		{"negative", func(m worker.MetricsSampled) worker.MetricsSampled { m.CloudWatchCPU = ptr(-0.1); return m }, []string{"cloudwatch_cpu"}},
		{"over 100", func(m worker.MetricsSampled) worker.MetricsSampled { m.CMLDisk = ptr(100.01); return m }, []string{"cml_disk"}},
		{"+Inf", func(m worker.MetricsSampled) worker.MetricsSampled { m.CMLMemory = ptr(math.Inf(1)); return m }, []string{"cml_memory"}},
		{"-Inf", func(m worker.MetricsSampled) worker.MetricsSampled {
			m.CloudWatchMemory = ptr(math.Inf(-1))
			return m
		}, []string{"cloudwatch_memory"}},
		{"negative node count", func(m worker.MetricsSampled) worker.MetricsSampled { m.NodesTotal = ptr(-1); return m }, []string{"nodes_total"}},
		{"every problem at once", func(m worker.MetricsSampled) worker.MetricsSampled {
			m.CloudWatchCPU, m.CloudWatchMemory, m.CMLCPU, m.CMLMemory, m.CMLDisk = ptr(-1.0), ptr(101.0), ptr(math.NaN()), ptr(200.0), ptr(-5.0)
			m.NodesRunning, m.NodesTotal = ptr(-1), ptr(-2)
			return m
		}, []string{"cloudwatch_cpu", "cloudwatch_memory", "cml_cpu", "cml_memory", "cml_disk", "nodes_running", "nodes_total"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := tt.sample(full)
			events, err := worker.SampleMetrics(m)
			if tt.fields == nil {
				require.NoError(t, err)
				assert.Equal(t, []domain.Event{m}, events)
				return
			}
			assert.Empty(t, events)
			assert.ElementsMatch(t, tt.fields, problemFields(t, err))
		})
	}
}

func TestObserveLabs(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 2, 27, 10, 15, 0, 0, time.UTC)
	lab := func(id, state string) worker.Lab {
		return worker.Lab{
			ID: id, Title: "Lab " + id, State: state, Owner: "alice", NodeCount: 4, LinkCount: 3,
			Groups: []string{"netops"}, CreatedAt: created, ModifiedAt: created.Add(time.Hour),
		}
	}
	a, b, c := lab("a1", "STARTED"), lab("b2", "STOPPED"), lab("c3", "DEFINED_ON_CORE")
	changed := func(l worker.Lab, f func(*worker.Lab)) worker.Lab {
		l.Groups = append([]string(nil), l.Groups...)
		f(&l)
		return l
	}
	tests := []struct {
		name     string
		previous []worker.Lab
		current  []worker.Lab
		want     []worker.Lab // nil: no event
	}{
		{"same list", []worker.Lab{a, b, c}, []worker.Lab{a, b, c}, nil},
		{"same list, other order", []worker.Lab{a, b, c}, []worker.Lab{c, a, b}, nil},
		{"both empty", nil, []worker.Lab{}, nil},
		{"first list", nil, []worker.Lab{b, a}, []worker.Lab{a, b}},
		{"lab added", []worker.Lab{a, b}, []worker.Lab{c, b, a}, []worker.Lab{a, b, c}},
		{"lab removed", []worker.Lab{a, b, c}, []worker.Lab{c, a}, []worker.Lab{a, c}},
		{"all labs gone", []worker.Lab{a}, nil, []worker.Lab{}},
		{"state changed", []worker.Lab{a, b}, []worker.Lab{b, changed(a, func(l *worker.Lab) { l.State = "STOPPED" })},
			[]worker.Lab{changed(a, func(l *worker.Lab) { l.State = "STOPPED" }), b}},
		{"node count changed", []worker.Lab{a}, []worker.Lab{changed(a, func(l *worker.Lab) { l.NodeCount = 5 })},
			[]worker.Lab{changed(a, func(l *worker.Lab) { l.NodeCount = 5 })}},
		{"groups changed", []worker.Lab{a}, []worker.Lab{changed(a, func(l *worker.Lab) { l.Groups = append(l.Groups, "training") })},
			[]worker.Lab{changed(a, func(l *worker.Lab) { l.Groups = append(l.Groups, "training") })}},
		{"modified", []worker.Lab{a}, []worker.Lab{changed(a, func(l *worker.Lab) { l.ModifiedAt = l.ModifiedAt.Add(time.Second) })},
			[]worker.Lab{changed(a, func(l *worker.Lab) { l.ModifiedAt = l.ModifiedAt.Add(time.Second) })}},
		{"same instant in another zone", []worker.Lab{a},
			[]worker.Lab{changed(a, func(l *worker.Lab) { l.CreatedAt = l.CreatedAt.In(time.FixedZone("CET", 3600)) })}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			current := slices.Clone(tt.current)
			events := worker.ObserveLabs(tt.previous, tt.current)
			assert.Equal(t, current, tt.current, "the caller's list is not reordered")
			if tt.want == nil {
				assert.Empty(t, types(events))
				return
			}
			require.Equal(t, []string{"worker.labs_observed.v1"}, types(events))
			if len(tt.want) == 0 {
				assert.Empty(t, events[0].(worker.LabsObserved).Labs)
				return
			}
			assert.Equal(t, tt.want, events[0].(worker.LabsObserved).Labs)
		})
	}
}

// When the last lab is gone the event still carries the full list: an empty
// array, not null (a reader of the stored JSON iterates over "labs").
func TestObserveLabsAllGoneIsAnEmptyList(t *testing.T) {
	t.Parallel()
	for _, current := range [][]worker.Lab{nil, {}} {
		events := worker.ObserveLabs([]worker.Lab{{ID: "a1", Title: "Lab a1", State: "STOPPED"}}, current)
		require.Len(t, events, 1)
		data, err := json.Marshal(events[0])
		require.NoError(t, err)
		assert.JSONEq(t, `{"labs":[]}`, string(data))
	}
}

func TestRehydrate(t *testing.T) {
	t.Parallel()
	t.Run("folds the history", func(t *testing.T) {
		t.Parallel()
		events := history(gStopped, false)
		times := make([]time.Time, len(events))
		for i := range times {
			times[i] = at(i)
		}
		w, err := worker.Rehydrate(events, times)
		require.NoError(t, err)
		assert.Equal(t, worker.StatusStopped, w.Status())
		assert.Equal(t, int64(len(events)-1), w.Version())
		assert.Equal(t, workerID, w.ID())
		assert.Equal(t, t0, w.State().CreatedAt)
		assert.Equal(t, at(len(events)-1), w.State().UpdatedAt)
	})
	t.Run("mismatched lengths", func(t *testing.T) {
		t.Parallel()
		events := history(gRunning, false)
		_, err := worker.Rehydrate(events, []time.Time{at(0), at(1)})
		assert.Error(t, err)
		_, err = worker.Rehydrate(nil, []time.Time{at(0)})
		assert.Error(t, err)
	})
	for _, e := range []domain.Event{
		worker.MetricsSampled{CMLCPU: ptr(3.0)},
		worker.LabsObserved{Labs: []worker.Lab{{ID: "a1"}}},
	} {
		t.Run("telemetry "+e.EventType(), func(t *testing.T) {
			t.Parallel()
			assert.True(t, worker.IsTelemetry(e.EventType()))
			events := append(history(gRunning, false), e)
			times := make([]time.Time, len(events))
			_, err := worker.Rehydrate(events, times)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "telemetry")
		})
	}
	t.Run("foreign event", func(t *testing.T) {
		t.Parallel()
		events := append(history(gRunning, false), task.Deleted{})
		_, err := worker.Rehydrate(events, make([]time.Time, len(events)))
		assert.Error(t, err)
	})
}

// Every lifecycle event applies to an existing worker and bumps the version;
// a command must never produce an event Apply cannot take.
func TestApplyEveryLifecycleEvent(t *testing.T) {
	t.Parallel()
	for _, e := range worker.Events() {
		t.Run(e.EventType(), func(t *testing.T) {
			t.Parallel()
			if worker.IsTelemetry(e.EventType()) {
				return
			}
			w := fold(t, history(gRunning, false)...)
			if _, claim := e.(worker.InstanceClaimed); claim {
				// Recorded in an instance's claim stream, never a worker's.
				require.Error(t, w.Apply(e, later))
				return
			}
			before := w.Version()
			require.NoError(t, w.Apply(e, later))
			assert.Equal(t, before+1, w.Version())
			assert.Equal(t, later, w.State().UpdatedAt)
		})
	}
}

func TestStreams(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "worker-"+workerID, worker.Stream(workerID))
	assert.Equal(t, "worker_telemetry-"+workerID, worker.TelemetryStream(workerID))
	var telemetry []string
	for _, e := range worker.Events() {
		if worker.IsTelemetry(e.EventType()) {
			telemetry = append(telemetry, e.EventType())
		}
	}
	assert.Equal(t, []string{"worker.metrics_sampled.v1", "worker.labs_observed.v1"}, telemetry)
}

func TestFromState(t *testing.T) {
	t.Parallel()
	w := fold(t, history(gLabPending, false)...)
	s := w.State()
	restored := worker.FromState(s, w.Version())
	assert.True(t, restored.Exists())
	assert.Equal(t, w.Version(), restored.Version())
	assert.Equal(t, s, restored.State())

	s.Tags["team"] = "changed"
	s.PendingLabActions["req-9"] = worker.PendingLabAction{Action: worker.LabWipe}
	assert.Equal(t, "netops", restored.State().Tags["team"], "FromState copies the tags")
	assert.NotContains(t, restored.State().PendingLabActions, "req-9", "FromState copies the pending lab actions")

	assert.False(t, worker.FromState(worker.State{}, -1).Exists())
}
