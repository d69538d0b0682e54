-- Foundation schema. Times are unix milliseconds (INTEGER), ids are TEXT: portable to PostgreSQL.

CREATE TABLE enrollment_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users(username),
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE defenders (
    id                TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL DEFAULT '',
    cluster           TEXT NOT NULL DEFAULT '',
    task_arn          TEXT NOT NULL DEFAULT '',
    family            TEXT NOT NULL DEFAULT '',
    revision          TEXT NOT NULL DEFAULT '',
    availability_zone TEXT NOT NULL DEFAULT '',
    launch_type       TEXT NOT NULL DEFAULT '',
    containers_json   TEXT NOT NULL DEFAULT '[]',
    agent_version     TEXT NOT NULL DEFAULT '',
    mode              TEXT NOT NULL DEFAULT '',
    enrolled_at       INTEGER NOT NULL,
    enrollment_token  INTEGER REFERENCES enrollment_tokens(id),
    cert_not_after    INTEGER NOT NULL,
    decommissioned_at INTEGER,
    -- health from the last heartbeat
    queue_depth       INTEGER NOT NULL DEFAULT 0,
    spool_bytes       INTEGER NOT NULL DEFAULT 0,
    dropped_events    INTEGER NOT NULL DEFAULT 0,
    rss_bytes         INTEGER NOT NULL DEFAULT 0,
    cpu_centipercent  INTEGER NOT NULL DEFAULT 0
);

-- One row per Connect stream. Status is derived from the newest row of each Defender.
CREATE TABLE sessions (
    id                    INTEGER PRIMARY KEY,
    defender_id           TEXT NOT NULL REFERENCES defenders(id),
    console_instance      TEXT NOT NULL,
    started_at            INTEGER NOT NULL,
    last_heartbeat        INTEGER NOT NULL,
    heartbeat_interval_ms INTEGER NOT NULL,
    ended_at              INTEGER
);
CREATE INDEX sessions_by_defender ON sessions(defender_id, started_at);

-- Events are unique per (defender_id, seq): a replayed event is a no-op.
CREATE TABLE events (
    defender_id TEXT NOT NULL REFERENCES defenders(id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    container   TEXT NOT NULL DEFAULT '',
    pid         INTEGER,
    body        BLOB NOT NULL,
    PRIMARY KEY (defender_id, seq)
);
CREATE INDEX events_by_kind ON events(defender_id, kind, time_ms);
