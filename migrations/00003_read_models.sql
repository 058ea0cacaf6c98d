-- +goose Up
-- Read models built by the projections in projections/. Each table is owned
-- by exactly one projection, which writes it in the same transaction as its
-- checkpoint (projection_checkpoints). A rebuild recreates these tables with
-- CREATE TABLE ... (LIKE ... INCLUDING ALL), so everything a table needs
-- (defaults, constraints, indexes) must be declared on the table itself.

-- worker_view: one row per worker, the fold of its lifecycle stream. `state`
-- is the aggregate's State (domain/worker.State) as JSON; the other columns
-- are copies used for filtering and ordering.
CREATE TABLE worker_view (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL,
    region           text        NOT NULL,
    status           text        NOT NULL,
    instance_id      text,
    revision         bigint      NOT NULL,
    position_commit  bigint      NOT NULL,
    position_prepare bigint      NOT NULL,
    created_by       jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    state            jsonb       NOT NULL
);
CREATE INDEX worker_view_name_idx ON worker_view (name, id);
CREATE INDEX worker_view_region_status_idx ON worker_view (region, status);
CREATE INDEX worker_view_instance_idx ON worker_view (region, instance_id) WHERE instance_id IS NOT NULL;
CREATE INDEX worker_view_position_idx ON worker_view (position_commit, position_prepare);

-- audit_log: one row per lifecycle event (workers, settings, tasks; never the
-- telemetry streams): who did what, when, and why.
CREATE TABLE audit_log (
    position_commit  bigint      NOT NULL,
    position_prepare bigint      NOT NULL,
    event_id         uuid        NOT NULL,
    stream           text        NOT NULL,
    revision         bigint      NOT NULL,
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    worker_id        uuid,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL,
    actor_type       text        NOT NULL,
    actor_subject    text        NOT NULL,
    actor_username   text        NOT NULL,
    correlation_id   text        NOT NULL,
    causation_id     text        NOT NULL,
    command          text        NOT NULL,
    summary          text        NOT NULL,
    data             jsonb       NOT NULL,
    -- An event has one position; the log order is the audit order.
    PRIMARY KEY (position_commit, position_prepare)
);
-- Few indexes on purpose: every row pays for each. Time ranges use a BRIN
-- index (rows arrive in time order); event-type filters run within another
-- filter or over the position order.
CREATE INDEX audit_log_worker_idx ON audit_log (worker_id, position_commit, position_prepare) WHERE worker_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx ON audit_log (actor_subject, position_commit, position_prepare);
CREATE INDEX audit_log_time_idx ON audit_log USING brin (occurred_at);

-- settings_view: the explicitly saved runtime settings (a single row).
CREATE TABLE settings_view (
    id         smallint    PRIMARY KEY CHECK (id = 1),
    saved      jsonb       NOT NULL,
    revision   bigint      NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by jsonb       NOT NULL DEFAULT '{}'
);

-- task_view: one row per task (deleted tasks are kept, flagged).
CREATE TABLE task_view (
    id          uuid        PRIMARY KEY,
    title       text        NOT NULL,
    description text        NOT NULL,
    status      text        NOT NULL,
    priority    text        NOT NULL,
    assignee_id text        NOT NULL,
    department  text        NOT NULL,
    deleted     boolean     NOT NULL,
    revision    bigint      NOT NULL,
    created_by  jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX task_view_department_idx ON task_view (department) WHERE NOT deleted;
CREATE INDEX task_view_assignee_idx ON task_view (assignee_id) WHERE NOT deleted;

-- +goose Down
DROP TABLE task_view;
DROP TABLE settings_view;
DROP TABLE audit_log;
DROP TABLE worker_view;
