package worker

import (
	"math"
	"slices"
	"strings"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// The telemetry stream (worker_telemetry-<id>) holds high-volume samples and
// observations that lifecycle readers never need. It has no aggregate state
// to protect: these functions decide what to record from the inputs alone.

// SampleMetrics returns the event recording one metrics sample. Values that
// were not measured are nil; percentages outside 0–100 or not finite are
// refused.
func SampleMetrics(m MetricsSampled) ([]domain.Event, error) {
	var p domain.Problems
	for name, v := range map[string]*float64{
		"cloudwatch_cpu": m.CloudWatchCPU, "cloudwatch_memory": m.CloudWatchMemory,
		"cml_cpu": m.CMLCPU, "cml_memory": m.CMLMemory, "cml_disk": m.CMLDisk,
	} {
		if v != nil && (math.IsNaN(*v) || *v < 0 || *v > 100) {
			p.Add(name, "%v is not a percentage", *v)
		}
	}
	for name, v := range map[string]*int{"nodes_running": m.NodesRunning, "nodes_total": m.NodesTotal} {
		if v != nil && *v < 0 {
			p.Add(name, "is negative")
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return []domain.Event{m}, nil
}

// ObserveLabs returns a LabsObserved event when the current list differs
// from the previous one (order does not matter), and nothing otherwise.
func ObserveLabs(previous, current []Lab) []domain.Event {
	if labsEqual(previous, current) {
		return nil
	}
	labs := append(make([]Lab, 0, len(current)), current...)
	sortLabs(labs)
	return []domain.Event{LabsObserved{Labs: labs}}
}

func sortLabs(labs []Lab) {
	slices.SortFunc(labs, func(a, b Lab) int { return strings.Compare(a.ID, b.ID) })
}

func labsEqual(a, b []Lab) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	sortLabs(a)
	sortLabs(b)
	return slices.EqualFunc(a, b, func(x, y Lab) bool {
		return x.ID == y.ID && x.Title == y.Title && x.Description == y.Description &&
			x.State == y.State && x.Owner == y.Owner && x.NodeCount == y.NodeCount &&
			x.LinkCount == y.LinkCount && slices.Equal(x.Groups, y.Groups) &&
			x.CreatedAt.Equal(y.CreatedAt) && x.ModifiedAt.Equal(y.ModifiedAt)
	})
}
