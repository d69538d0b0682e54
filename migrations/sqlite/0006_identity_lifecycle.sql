-- Identity lifecycle: decommission, token management, certificate renewal, retention.

-- API tokens: their name is the description; the time of their last use (updated at most
-- once a minute).
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
-- Enrollment tokens: how often and when last a Defender enrolled with them.
ALTER TABLE enrollment_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enrollment_tokens ADD COLUMN last_used_at INTEGER;

-- Every public key a Defender was ever certified for (enrollment and each renewal), as the
-- hex SHA-256 of its DER SubjectPublicKeyInfo. A key belongs to one Defender forever: a
-- decommissioned Defender's keys can never enroll again, and a renewal must bring a new key.
-- No foreign key: the keys of a decommissioned Defender outlive its purge (a key whose
-- Defender is gone counts as decommissioned).
CREATE TABLE defender_keys (
    key_sha256  TEXT PRIMARY KEY,
    defender_id TEXT NOT NULL,
    added_at    INTEGER NOT NULL
);
CREATE INDEX defender_keys_by_defender ON defender_keys(defender_id);

-- When the Defender last renewed its client certificate, and how many times it did.
ALTER TABLE defenders ADD COLUMN cert_renewed_at INTEGER;
ALTER TABLE defenders ADD COLUMN cert_renewals INTEGER NOT NULL DEFAULT 0;
