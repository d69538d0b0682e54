-- WAAS: the reverse proxy's policy versions and its events' index (Defend > WAAS,
-- Monitor > Events > WAAS, /api/v1/waas/*, WAAS counts per Defender, webhook forwarding).

-- Saved versions of the WAAS policy; the newest one is in force and pushed to every Defender.
CREATE TABLE waas_policies (
    version     INTEGER PRIMARY KEY,
    policy_json TEXT NOT NULL,
    saved_at    INTEGER NOT NULL,
    saved_by    TEXT NOT NULL
);

-- WAAS events in insertion order (the index sync and the webhook forwarders read
-- `kind = 'waas' AND rowid > cursor`).
CREATE INDEX events_waas ON events(kind) WHERE kind = 'waas';

-- The WAAS events' fields, decoded once from `events.body` (as audit_index does for audits);
-- `id` is the event's rowid in `events`. Text here is attacker-controlled: escape on output.
CREATE TABLE waas_index (
    id          INTEGER PRIMARY KEY,
    defender_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    time_ms     INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    family      TEXT NOT NULL,
    effect      TEXT NOT NULL,
    client_ip   TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    location    TEXT NOT NULL,
    name        TEXT NOT NULL,
    matched     TEXT NOT NULL,
    message     TEXT NOT NULL,
    status      INTEGER NOT NULL,
    incomplete  INTEGER NOT NULL
);
CREATE INDEX waas_index_by_defender ON waas_index(defender_id, id);
CREATE INDEX waas_index_by_event_id ON waas_index(event_id);
CREATE INDEX waas_index_counts ON waas_index(defender_id, effect);
