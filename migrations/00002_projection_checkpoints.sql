-- +goose Up
-- One row per projection (read model) and per reactor: the position in the
-- global event log up to which its tables are up to date. The row is written
-- in the same transaction as the read-model changes it covers, and it is
-- locked (SELECT ... FOR UPDATE) at the start of every batch so that two
-- appliers of the same name can never both commit the same events.
-- Positions are uint64 in Go; values above 2^63-1 are rejected by the code.
CREATE TABLE projection_checkpoints (
    name             text        PRIMARY KEY,
    commit_position  bigint      NOT NULL CHECK (commit_position >= 0),
    prepare_position bigint      NOT NULL CHECK (prepare_position >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE projection_checkpoints;
