package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultPruneBatch is how many events one statement of PruneStreams deletes
// at most.
const DefaultPruneBatch = 10000

// PruneStreams deletes the events of the streams whose names start with
// prefix (the high-volume telemetry streams, "worker_telemetry-") recorded
// before before: the Postgres side of the telemetry retention (EventStoreDB
// uses $maxAge instead). The newest event of each stream is always kept, so a
// stream's revisions never start over and a reader that tracks them never
// mistakes a new event for one it has seen. It deletes in batches of batch
// events (DefaultPruneBatch when batch <= 0), each in its own statement, and
// returns how many events it deleted.
//
// Deleted positions become permanent gaps of the global log, which readers
// already tolerate (a failed append leaves the same): they settle them once.
// The lifecycle streams must never be pruned; an empty prefix is refused.
func (s *Store) PruneStreams(ctx context.Context, prefix string, before time.Time, batch int) (int64, error) {
	if prefix == "" {
		return 0, errors.New("prune: a stream prefix is required")
	}
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	// The prefix scan uses the (stream, revision) index: stream is COLLATE
	// "C", where a LIKE prefix is an index range.
	const q = `DELETE FROM events WHERE position IN (
		SELECT e.position FROM events e
		 WHERE e.stream LIKE $1 AND e.recorded_at < $2
		   AND e.revision < (SELECT max(l.revision) FROM events l WHERE l.stream = e.stream)
		 LIMIT $3)`
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, q, likePrefix(prefix), before, batch)
		if err != nil {
			return total, fmt.Errorf("prune streams %s*: %w", prefix, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}

// TelemetryPruner prunes one stream prefix of a Store; its Prune method is
// what the telemetry_prune job calls.
type TelemetryPruner struct {
	Store  *Store
	Prefix string
}

// Prune deletes the prefix's events recorded before before.
func (p TelemetryPruner) Prune(ctx context.Context, before time.Time) (int64, error) {
	return p.Store.PruneStreams(ctx, p.Prefix, before, 0)
}
