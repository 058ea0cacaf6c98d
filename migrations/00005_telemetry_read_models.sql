-- +goose Up
-- Telemetry read models, built from the worker_telemetry-<id> streams by the
-- projections in projections/worker_metrics.go and projections/worker_labs.go.
-- Like every read-model table they carry no foreign key, trigger or view (a
-- rebuild recreates them with CREATE TABLE ... (LIKE ... INCLUDING ALL)).

-- worker_metrics: one row per metrics_sampled event, bounded by the telemetry
-- retention (the telemetry_prune job deletes old rows). The primary key serves
-- the per-worker range queries and makes a replayed event a no-op.
CREATE TABLE worker_metrics (
    worker_id           uuid             NOT NULL,
    sampled_at          timestamptz      NOT NULL,
    position_commit     bigint           NOT NULL,
    position_prepare    bigint           NOT NULL,
    ec2_system_status   text,
    ec2_instance_status text,
    cloudwatch_cpu      double precision,
    cloudwatch_memory   double precision,
    cml_cpu             double precision,
    cml_memory          double precision,
    cml_disk            double precision,
    nodes_running       integer,
    nodes_total         integer,
    PRIMARY KEY (worker_id, sampled_at, position_commit, position_prepare)
);
-- Rows arrive in time order: a BRIN index serves the retention deletes.
CREATE INDEX worker_metrics_sampled_at_idx ON worker_metrics USING brin (sampled_at);

-- worker_labs: the lab list last observed on each worker's controller
-- (labs_observed events are recorded only when the list changes).
CREATE TABLE worker_labs (
    worker_id        uuid        PRIMARY KEY,
    labs             jsonb       NOT NULL,
    labs_count       integer     NOT NULL,
    observed_at      timestamptz NOT NULL,
    position_commit  bigint      NOT NULL,
    position_prepare bigint      NOT NULL
);

-- +goose Down
DROP TABLE worker_labs;
DROP TABLE worker_metrics;
