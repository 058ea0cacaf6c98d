-- +goose Up
-- Browser sessions, pending OIDC logins and login-attempt counters of
-- infrastructure/sessions (the Postgres backend; with REDIS_URL set the same
-- data lives in Redis instead and these tables stay empty). Every key is a
-- SHA-256 hash: the raw session id exists only in the browser's cookie, the
-- raw login binding only in its short-lived cookie, and attempted user names
-- (which are sometimes passwords typed into the wrong field) never at rest.

-- sessions: one row per signed-in browser. expires_at is the idle expiry,
-- which slides on activity but never past max_expires_at. tokens holds the
-- identity provider's tokens sealed with AES-GCM (OIDC mode), never plain.
-- version increases on every update of the identity or the tokens, so two
-- instances refreshing one session at once cannot overwrite each other.
CREATE TABLE sessions (
    id_hash          bytea       PRIMARY KEY,
    subject          text        NOT NULL,
    username         text        NOT NULL,
    method           text        NOT NULL,
    identity         jsonb       NOT NULL,
    csrf_token       text        NOT NULL,
    tokens           text        NOT NULL DEFAULT '',
    tokens_expire_at timestamptz,
    idle_timeout_ms  bigint      NOT NULL CHECK (idle_timeout_ms > 0),
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    max_expires_at   timestamptz NOT NULL,
    version          bigint      NOT NULL DEFAULT 1,
    CHECK (expires_at <= max_expires_at)
);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- login_states: the server side of an OIDC login in flight (state, nonce and
-- PKCE verifier, sealed), keyed by the hash of the random value in the
-- browser's login cookie. Read once: the callback deletes the row it reads.
CREATE TABLE login_states (
    key_hash   bytea       PRIMARY KEY,
    data       bytea       NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX login_states_expires_at_idx ON login_states (expires_at);

-- login_attempts: fixed-window counters of password attempts per user name
-- and per client address, shared by every instance. A window starts with its
-- first attempt and ends at reset_at.
CREATE TABLE login_attempts (
    key_hash bytea       PRIMARY KEY,
    attempts integer     NOT NULL,
    reset_at timestamptz NOT NULL
);
CREATE INDEX login_attempts_reset_at_idx ON login_attempts (reset_at);

-- +goose Down
DROP TABLE login_attempts;
DROP TABLE login_states;
DROP TABLE sessions;
