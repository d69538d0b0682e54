-- Forensics views (Defender detail page, /api/v1/events): keyset pages by seq within one
-- Defender, optionally of some kinds, optionally within a time window.

-- Kind-filtered pages walk seq, not time: replaces events_by_kind (defender_id, kind, time_ms),
-- which no query used, so ingest keeps paying for two secondary indexes, not three.
DROP INDEX IF EXISTS events_by_kind;
CREATE INDEX events_by_kind_seq ON events(defender_id, kind, seq);

-- Time windows (since/until) of one Defender.
CREATE INDEX events_by_time ON events(defender_id, time_ms);
