-- Issue 14: a Defender's page reads its event counts ("shown of N") from here instead of
-- counting its events on every view. Maintained by triggers, so every insert of the single
-- event writer and every delete of the retention purges updates it in the same transaction;
-- an insert skipped by ON CONFLICT DO NOTHING (a replayed event) fires no trigger.
CREATE TABLE event_counts (
    defender_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (defender_id, kind)
) WITHOUT ROWID;

INSERT INTO event_counts (defender_id, kind, n)
    SELECT defender_id, kind, COUNT(*) FROM events GROUP BY defender_id, kind;

CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (defender_id, kind, n) VALUES (NEW.defender_id, NEW.kind, 1)
    ON CONFLICT (defender_id, kind) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER events_uncounted AFTER DELETE ON events BEGIN
    UPDATE event_counts SET n = n - 1 WHERE defender_id = OLD.defender_id AND kind = OLD.kind;
END;

-- Manage › Defenders sorts by name (store/fleet.rs): the name as the list shows it, lowercased,
-- as an indexed virtual column, so that sorting by name reads the index instead of computing
-- the name of every Defender on each request.
ALTER TABLE defenders ADD COLUMN name_key TEXT GENERATED ALWAYS AS (lower(CASE
    WHEN task_arn <> '' THEN
        (CASE WHEN family <> '' THEN family || '/' ELSE '' END)
        || replace(task_arn, rtrim(task_arn, replace(task_arn, '/', '')), '')
    ELSE COALESCE(NULLIF(family, ''), NULLIF(hostname, ''), '') || ' ' || id END)) VIRTUAL;
CREATE INDEX defenders_by_name_key ON defenders(name_key, id);
