package projections

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application"
	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
	"github.com/cmlcloud/cml-cloud-manager/domain/worker"
)

func pos(n uint64) eventstore.Position { return eventstore.Position{Commit: n, Prepare: n} }

func entry(id string, lifecycle, metrics uint64) *CatalogEntry {
	e := &CatalogEntry{Lifecycle: pos(lifecycle), Metrics: pos(metrics)}
	e.View = application.WorkerView{Revision: 0}
	e.View.ID, e.View.Status = id, worker.StatusRunning
	return e
}

// TestCatalogChangedSinceFollowsAnnouncements drives the catalog's apply
// by hand through an order of notifications that the projections produce:
// worker_view commits V@10 and then W@20, while a worker_metrics
// notification for W is handled first and its reload already shows W's
// lifecycle at 20. A subscriber that catches up at that moment must not
// get marks past 10 for the lifecycle, or it would skip V@10 when that
// change is announced.
func TestCatalogChangedSinceFollowsAnnouncements(t *testing.T) {
	t.Parallel()
	c := NewWorkerCatalog(nil, CatalogOptions{})
	changes, stop := c.Subscribe(16)
	defer stop()
	c.apply(true, map[string]*CatalogEntry{"u": entry("u", 5, 0)}, "", eventstore.Position{})

	// The worker_metrics notification for W (metrics at 15); the reload
	// reads W's row, which the view runner has already moved to 20.
	c.apply(false, map[string]*CatalogEntry{"w": entry("w", 20, 15)}, ChangeMetrics, pos(15))
	require.Equal(t, CatalogChange{Kind: ChangeMetrics, WorkerID: "w", Position: pos(15), Entry: c.byID["w"]}, <-changes)

	// A subscriber catches up now.
	var m Marks
	for _, ch := range c.ChangedSince(m) {
		require.False(t, m.Handled(ch))
		m.Advance(ch)
	}
	require.Equal(t, Marks{Lifecycle: pos(5), Metrics: pos(15)}, m, "marks stop at what was announced")

	// Then the view notifications, in commit order.
	c.apply(false, map[string]*CatalogEntry{"v": entry("v", 10, 0)}, ChangeSnapshot, pos(10))
	c.apply(false, map[string]*CatalogEntry{"w": entry("w", 20, 15)}, ChangeSnapshot, pos(20))
	for _, want := range []string{"v", "w"} {
		ch := <-changes
		require.Equal(t, want, ch.WorkerID)
		require.False(t, m.Handled(ch), "%s at %s is past %s", ch.WorkerID, ch.Position, m)
		m.Advance(ch)
	}
	require.Empty(t, c.ChangedSince(m))

	// A full reload makes everything it read count as told.
	c.apply(true, map[string]*CatalogEntry{"v": entry("v", 10, 0), "w": entry("w", 30, 15)}, "", eventstore.Position{})
	require.Equal(t, ChangeReset, (<-changes).Kind)
	since := c.ChangedSince(m)
	require.Len(t, since, 1)
	require.Equal(t, "w", since[0].WorkerID)
	require.Equal(t, pos(30), since[0].Position)
	_, gone := c.byID["u"]
	require.False(t, gone)
}
