-- Runtime audits (Monitor > Events > App-Embedded audits, /api/v1/audits, audit counts per
-- Defender, webhook forwarding).

-- Audit events in insertion order: the webhook forwarders and the audit index read
-- `kind = 'audit' AND rowid > cursor` through this (partial, so other events do not pay for it).
CREATE INDEX events_audits ON events(kind) WHERE kind = 'audit';

-- The audits' fields, decoded once from `events.body` so that pages filter, count and sort them
-- in SQL (rule and effect live only in the protobuf body). Filled from `events` by
-- `Store::sync_audit_index` before every audit read; `id` is the event's rowid in `events`,
-- so MAX(id) is how far the index has got.
CREATE TABLE audit_index (
    id          INTEGER PRIMARY KEY,
    defender_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    container   TEXT NOT NULL DEFAULT '',
    rule        TEXT NOT NULL,
    effect      INTEGER NOT NULL,
    message     TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    subject_seq INTEGER NOT NULL
);
-- Pages, newest first, keyset (time_ms, id): all Defenders, one Defender, one rule.
CREATE INDEX audit_index_by_time ON audit_index(time_ms, id);
CREATE INDEX audit_index_by_defender ON audit_index(defender_id, time_ms, id);
CREATE INDEX audit_index_by_rule ON audit_index(rule, time_ms, id);
-- Counts per Defender and effect (Manage > Defenders), from the index alone.
CREATE INDEX audit_index_counts ON audit_index(defender_id, effect);
