-- Runtime policy (App-Embedded): every saved version is kept; the highest version is in force.
CREATE TABLE runtime_policies (
    version    INTEGER PRIMARY KEY,
    rules_json TEXT NOT NULL,
    saved_at   INTEGER NOT NULL,
    saved_by   TEXT NOT NULL DEFAULT ''
);

-- Where webhook forwarding of audits has got to (one row per webhook URL).
CREATE TABLE webhook_cursor (
    url          TEXT PRIMARY KEY,
    last_rowid   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
