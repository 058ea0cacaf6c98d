-- +goose Up

-- The Postgres event store (infrastructure/eventstore/postgres).
--
-- One table holds every event. An append is one INSERT ... SELECT statement
-- run in autocommit (see appendSQL in store.go): it takes the appenders'
-- shared advisory lock, reads the stream's last revision, checks the
-- expectation, and only then draws positions from events_position_seq.
-- Readers rely on that order to tell a permanent gap in the positions (a
-- failed append) from an append still in flight, so the position column
-- deliberately has no default: an INSERT that bypasses the store would break
-- that guarantee.
--
-- Concurrency control needs no table of its own: two writers that read the
-- same last revision both insert the next one, and UNIQUE (stream, revision)
-- lets exactly one of them commit. event_id is unique so that a repeated
-- append is recognised (idempotency) and an id cannot be reused.
--
-- Stream names are identifiers: compared byte by byte (COLLATE "C"), which is
-- also what prefix filters mean.
--
-- No index for stream-prefix filtering: readers filter within bounded ranges
-- of positions (primary key), measured at 1.7 to 1.9 million positions per
-- second for a 1% prefix. An index on (stream, position) cannot serve "stream
-- LIKE prefix ORDER BY position" for a prefix matching many streams without
-- reading every matching entry of the whole history.

CREATE SEQUENCE events_position_seq AS bigint START WITH 1 CACHE 1;

CREATE TABLE events (
    position    bigint      PRIMARY KEY,
    stream      text        COLLATE "C" NOT NULL,
    revision    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_stream_revision_key UNIQUE (stream, revision),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

ALTER SEQUENCE events_position_seq OWNED BY events.position;

-- +goose Down
DROP TABLE IF EXISTS events;
