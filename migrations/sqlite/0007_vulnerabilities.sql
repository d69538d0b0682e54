-- Vulnerabilities and compliance: OSV records, image inventories, findings, compliance results
-- and the compliance policy.

-- OSV records as imported (`body` is the record's JSON); re-imports replace a record when
-- theirs is at least as new (`modified`, RFC 3339, compares as text).
CREATE TABLE vuln_records (
    id          TEXT PRIMARY KEY,
    modified    TEXT NOT NULL DEFAULT '',
    summary     TEXT NOT NULL DEFAULT '',
    withdrawn   INTEGER NOT NULL DEFAULT 0,
    body        TEXT NOT NULL,
    imported_at INTEGER NOT NULL
);
-- Which (ecosystem key, package) each record names (`defender_vuln::PackageKey`), for matching.
CREATE TABLE vuln_affected (
    ecosystem TEXT NOT NULL,
    name      TEXT NOT NULL,
    record_id TEXT NOT NULL,
    -- The record's ecosystem as written (`Debian:12`, `Ubuntu:22.04:LTS`), for `vulndb status`.
    raw_ecosystem TEXT NOT NULL,
    PRIMARY KEY (ecosystem, name, record_id)
);
CREATE INDEX vuln_affected_by_record ON vuln_affected(record_id);
-- Id, aliases and upstream ids of each record: "where is CVE-X running".
CREATE TABLE vuln_ids (
    alias     TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (alias, record_id)
);
CREATE INDEX vuln_ids_by_record ON vuln_ids(record_id);

-- Images seen in inventories; `id` is the digest, or `inventory:<sha256>` of the package list.
CREATE TABLE images (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL DEFAULT '',
    os_id             TEXT NOT NULL DEFAULT '',
    os_version_id     TEXT NOT NULL DEFAULT '',
    os_pretty_name    TEXT NOT NULL DEFAULT '',
    total_packages    INTEGER NOT NULL DEFAULT 0,
    truncated         INTEGER NOT NULL DEFAULT 0,
    notes             TEXT NOT NULL DEFAULT '',
    inventory_ms      INTEGER NOT NULL DEFAULT 0,
    last_inventory_ms INTEGER NOT NULL
);
CREATE TABLE image_packages (
    image_id       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        TEXT NOT NULL,
    source_name    TEXT NOT NULL DEFAULT '',
    source_version TEXT NOT NULL DEFAULT '',
    arch           TEXT NOT NULL DEFAULT '',
    path           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX image_packages_by_image ON image_packages(image_id);
-- Which Defender (and container) runs which image, with the time of its last inventory.
CREATE TABLE image_defenders (
    image_id     TEXT NOT NULL,
    defender_id  TEXT NOT NULL,
    container    TEXT NOT NULL DEFAULT '',
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (image_id, defender_id, container)
);
CREATE INDEX image_defenders_by_defender ON image_defenders(defender_id);
-- Findings: one row per (image, record, package); recomputed for an image when its inventory
-- arrives and for every image when records are imported.
CREATE TABLE image_vulns (
    image_id    TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    package     TEXT NOT NULL,
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    ecosystem   TEXT NOT NULL,
    fixed       TEXT NOT NULL DEFAULT '',
    severity    TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    cvss_score  REAL,
    cvss_vector TEXT NOT NULL DEFAULT '',
    summary     TEXT NOT NULL DEFAULT '',
    link        TEXT NOT NULL DEFAULT '',
    ids         TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (image_id, record_id, package)
);
CREATE INDEX image_vulns_by_record ON image_vulns(record_id);

-- Latest compliance results per Defender and container.
CREATE TABLE compliance_results (
    defender_id TEXT NOT NULL,
    container   TEXT NOT NULL DEFAULT '',
    image_id    TEXT NOT NULL DEFAULT '',
    check_id    TEXT NOT NULL,
    title       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    passed      INTEGER NOT NULL,
    evidence    TEXT NOT NULL DEFAULT '',
    cis         TEXT NOT NULL DEFAULT '',
    time_ms     INTEGER NOT NULL,
    PRIMARY KEY (defender_id, container, check_id)
);
-- Defend > Compliance: per check, on/off and the severity alerts use (absent: on, default).
CREATE TABLE compliance_policy (
    check_id TEXT PRIMARY KEY,
    enabled  INTEGER NOT NULL,
    severity TEXT NOT NULL DEFAULT ''
);

-- How far inventory and compliance events have been applied (`events` rowid; see audits).
CREATE TABLE inventory_cursor (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    last_rowid INTEGER NOT NULL
);
INSERT INTO inventory_cursor (id, last_rowid) VALUES (1, 0);
CREATE INDEX events_inventory ON events(kind) WHERE kind IN ('inventory', 'compliance');
