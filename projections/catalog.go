package projections

import "github.com/cmlcloud/cml-cloud-manager/domain"

// catalog holds a constructor per read model. Each read-model file adds its
// own with registerProjection, so adding a read model is that one file (plus
// its migration): the runner, the manager and the wiring need no change.
var catalog []func(*domain.Registry) Projection

func registerProjection(newFn func(*domain.Registry) Projection) struct{} {
	catalog = append(catalog, newFn)
	return struct{}{}
}

// All returns every read-model projection, decoding events with registry.
func All(registry *domain.Registry) []Projection {
	out := make([]Projection, 0, len(catalog))
	for _, newFn := range catalog {
		out = append(out, newFn(registry))
	}
	return out
}
