package projections

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/cmlcloud/cml-cloud-manager/application/eventstore"
)

// RowQuerier is what reading a checkpoint needs; *pgxpool.Pool, *pgx.Conn and
// pgx.Tx all satisfy it.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ReadCheckpoint returns the stored checkpoint of the projection (or reactor)
// name. found is false, and the position is the start of the log, when none
// has been written yet.
func ReadCheckpoint(ctx context.Context, db RowQuerier, name string) (pos eventstore.Position, found bool, err error) {
	var c, p int64
	err = db.QueryRow(ctx,
		`SELECT commit_position, prepare_position FROM projection_checkpoints WHERE name = $1`, name,
	).Scan(&c, &p)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventstore.Start, false, nil
	}
	if err != nil {
		return eventstore.Position{}, false, fmt.Errorf("read checkpoint %q: %w", name, err)
	}
	pos, err = fromColumns(c, p)
	if err != nil {
		return eventstore.Position{}, false, fmt.Errorf("read checkpoint %q: %w", name, err)
	}
	return pos, true, nil
}

// lockCheckpoint locks the checkpoint row of name for the rest of tx
// (creating it at the start of the log when missing) and returns its
// position. Every writer of a projection's tables takes this lock first, which
// serialises them and lets each check that nobody moved the checkpoint behind
// its back.
func lockCheckpoint(ctx context.Context, tx pgx.Tx, name string) (eventstore.Position, error) {
	for range 2 {
		var c, p int64
		err := tx.QueryRow(ctx,
			`SELECT commit_position, prepare_position FROM projection_checkpoints WHERE name = $1 FOR UPDATE`, name,
		).Scan(&c, &p)
		if err == nil {
			pos, err := fromColumns(c, p)
			if err != nil {
				return eventstore.Position{}, fmt.Errorf("lock checkpoint %q: %w", name, err)
			}
			return pos, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return eventstore.Position{}, fmt.Errorf("lock checkpoint %q: %w", name, err)
		}
		// Missing: create it at the start. A concurrent creator makes this a
		// no-op; the SELECT above then finds (and waits for) its row.
		if _, err := tx.Exec(ctx,
			`INSERT INTO projection_checkpoints (name, commit_position, prepare_position) VALUES ($1, 0, 0)
			 ON CONFLICT (name) DO NOTHING`, name,
		); err != nil {
			return eventstore.Position{}, fmt.Errorf("create checkpoint %q: %w", name, err)
		}
	}
	return eventstore.Position{}, fmt.Errorf("lock checkpoint %q: row vanished while being created", name)
}

// writeCheckpointSQL sets a checkpoint row (locked by lockCheckpoint).
const writeCheckpointSQL = `UPDATE projection_checkpoints
	SET commit_position = $2, prepare_position = $3, updated_at = now() WHERE name = $1`

// writeCheckpoint sets the checkpoint row of name, which tx has locked.
func writeCheckpoint(ctx context.Context, tx pgx.Tx, name string, pos eventstore.Position) error {
	c, p, err := toColumns(pos)
	if err != nil {
		return fmt.Errorf("write checkpoint %q: %w", name, err)
	}
	tag, err := tx.Exec(ctx, writeCheckpointSQL, name, c, p)
	if err != nil {
		return fmt.Errorf("write checkpoint %q: %w", name, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("write checkpoint %q: row missing", name)
	}
	return nil
}

// errPositionRange reports a position that does not fit a bigint column.
var errPositionRange = errors.New("position out of the bigint range")

func toColumns(pos eventstore.Position) (commit, prepare int64, err error) {
	if pos.Commit > math.MaxInt64 || pos.Prepare > math.MaxInt64 {
		return 0, 0, fmt.Errorf("%s: %w", pos, errPositionRange)
	}
	return int64(pos.Commit), int64(pos.Prepare), nil
}

func fromColumns(commit, prepare int64) (eventstore.Position, error) {
	if commit < 0 || prepare < 0 {
		return eventstore.Position{}, fmt.Errorf("%d-%d: %w", commit, prepare, errPositionRange)
	}
	return eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}, nil
}
