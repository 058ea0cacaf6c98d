package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

func TestPruneStreamsKeepsTheNewestEventOfEachStreamAndOtherPrefixes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	// Three telemetry streams with 5, 3 and 1 events; a lifecycle stream
	// with 4.
	for i, n := range []int{5, 3, 1} {
		for range n {
			_, err := s.Append(ctx, fmt.Sprintf("worker_telemetry-%d", i), eventstore.Any, event("worker.metrics_sampled.v1"))
			require.NoError(t, err)
		}
	}
	for range 4 {
		_, err := s.Append(ctx, "worker-1", eventstore.Any, event("worker.tags_changed.v1"))
		require.NoError(t, err)
	}
	sub, err := s.Subscribe(ctx, eventstore.Start, eventstore.Filter{})
	require.NoError(t, err)
	for range 13 {
		nextEvent(t, sub)
	}

	// Nothing is older than an hour ago.
	n, err := s.PruneStreams(ctx, "worker_telemetry-", time.Now().Add(-time.Hour), 0)
	require.NoError(t, err)
	require.Zero(t, n)

	// Everything recorded before now, in batches of two.
	n, err = s.PruneStreams(ctx, "worker_telemetry-", time.Now().Add(time.Second), 2)
	require.NoError(t, err)
	require.EqualValues(t, 4+2, n)
	for i, want := range []uint64{4, 2, 0} {
		recs, err := s.ReadStream(ctx, fmt.Sprintf("worker_telemetry-%d", i), 0, 100)
		require.NoError(t, err)
		require.Len(t, recs, 1, "stream %d keeps its newest event", i)
		require.Equal(t, want, recs[0].Revision)
	}
	recs, err := s.ReadStream(ctx, "worker-1", 0, 100)
	require.NoError(t, err)
	require.Len(t, recs, 4, "other prefixes are untouched")

	// The log reads past the gaps, and new events still arrive (with the
	// next revision: revisions never start over).
	all, _, err := s.ReadAll(ctx, eventstore.Start, 100, eventstore.Filter{})
	require.NoError(t, err)
	require.Len(t, all, 7)
	res, err := s.Append(ctx, "worker_telemetry-0", eventstore.Any, event("worker.metrics_sampled.v1"))
	require.NoError(t, err)
	require.EqualValues(t, 5, res.NextRevision)
	require.Equal(t, res.Position, nextEvent(t, sub).Position)

	pruned, err := TelemetryPruner{Store: s, Prefix: "worker_telemetry-"}.Prune(ctx, time.Now().Add(time.Second))
	require.NoError(t, err)
	require.EqualValues(t, 1, pruned)
	_, err = s.PruneStreams(ctx, "", time.Now(), 0)
	require.Error(t, err, "the whole log is never pruned")
}

func TestPruneStreamsEscapesThePrefix(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, stream := range []string{"a_b-1", "a_b-1", "axb-1", "axb-1"} {
		_, err := s.Append(ctx, stream, eventstore.Any, event("x.v1"))
		require.NoError(t, err)
	}
	n, err := s.PruneStreams(ctx, "a_b-", time.Now().Add(time.Second), 0)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "_ is not a wildcard")
	recs, err := s.ReadStream(ctx, "axb-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, recs, 2)
}
