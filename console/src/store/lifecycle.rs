//! Identity lifecycle in SQL: the keys each Defender was certified for, renewals,
//! decommissioning, the token list, and retention (purging old events and Defenders).
//!
//! Retention and the rowid cursors: `audit_index.id` and the webhook cursors are `events`
//! rowids. Events are deleted oldest rowid first, together with their `audit_index` rows, and
//! the row holding the largest rowid is never deleted: SQLite gives a new row `MAX(rowid) + 1`,
//! so keeping that row keeps rowids growing and no cursor ever skips a new event.

use sqlx::FromRow;

use super::{Store, StoreError, TokenKind, now_ms};

/// Who owns a public key, and whether that Defender is decommissioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOwner {
    pub defender_id: String,
    pub decommissioned: bool,
}

/// One token as `token list`, Manage > Tokens and `GET /api/v1/tokens` show it (never the
/// token itself: only its hash is stored).
#[derive(Clone, Debug, FromRow)]
pub struct TokenRecord {
    /// `enrollment` or `api`.
    pub kind: String,
    pub id: i64,
    /// The API token's name, or the enrollment token's description.
    pub description: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// Enrollments made with it (enrollment tokens; 0 for API tokens).
    pub uses: i64,
}

impl TokenRecord {
    /// `enroll-3` / `api-5`: how the CLI, the UI and the API name a token.
    pub fn handle(&self) -> String {
        format!("{}-{}", handle_prefix(&self.kind), self.id)
    }

    /// `active`, `revoked` or `expired` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

fn handle_prefix(kind: &str) -> &'static str {
    if kind == "api" { "api" } else { "enroll" }
}

/// Parses a token handle (`enroll-3`, `api-5`).
pub fn parse_handle(handle: &str) -> Option<(TokenKind, i64)> {
    let (kind, id) = handle.trim().rsplit_once('-')?;
    let kind = match kind {
        "enroll" | "enrollment" => TokenKind::Enrollment,
        "api" => TokenKind::Api,
        _ => return None,
    };
    Some((kind, id.parse().ok().filter(|id| *id > 0)?))
}

/// What one retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub defenders: u64,
    pub sessions: u64,
}

impl Store {
    /// The Defender a public key (hex SHA-256 of its SPKI) was certified for, if any.
    pub async fn key_owner(&self, key_sha256: &str) -> Result<Option<KeyOwner>, StoreError> {
        with_pool!(&self.pool, |pool| {
            // A key whose Defender was purged belonged to a decommissioned one (the keys of
            // Defenders purged for being long disconnected are deleted with them).
            let row: Option<(String, Option<i64>, Option<String>)> = sqlx::query_as(
                "SELECT k.defender_id, d.decommissioned_at, d.id FROM defender_keys k \
             LEFT JOIN defenders d ON d.id = k.defender_id WHERE k.key_sha256 = $1",
            )
            .bind(key_sha256)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|(defender_id, at, exists)| KeyOwner {
                defender_id,
                decommissioned: at.is_some() || exists.is_none(),
            }))
        })
    }

    /// Records the key a new Defender enrolled with, and the use of its enrollment token.
    pub async fn record_enrollment(
        &self,
        defender_id: &str,
        key_sha256: &str,
        token_id: i64,
    ) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let now = now_ms();
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO defender_keys (key_sha256, defender_id, added_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_sha256) DO NOTHING",
            )
            .bind(key_sha256)
            .bind(defender_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE enrollment_tokens SET uses = uses + 1, last_used_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records a renewal: the new key, the new certificate's expiry. Returns false (and
    /// changes nothing) when the Defender was decommissioned meanwhile or the key is known.
    pub async fn record_renewal(
        &self,
        defender_id: &str,
        key_sha256: &str,
        cert_not_after_ms: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let now = now_ms();
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
            "UPDATE defenders SET cert_not_after = $1, cert_renewed_at = $2, cert_renewals = cert_renewals + 1 \
             WHERE id = $3 AND decommissioned_at IS NULL",
        )
        .bind(cert_not_after_ms)
        .bind(now)
        .bind(defender_id)
        .execute(&mut *tx)
        .await?;
            let inserted = sqlx::query(
                "INSERT INTO defender_keys (key_sha256, defender_id, added_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_sha256) DO NOTHING",
            )
            .bind(key_sha256)
            .bind(defender_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 || inserted.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Renewal figures of a Defender: (certificate expiry, renewals, last renewal).
    pub async fn cert_state(
        &self,
        defender_id: &str,
    ) -> Result<Option<(i64, i64, Option<i64>)>, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_as(
            "SELECT cert_not_after, cert_renewals, cert_renewed_at FROM defenders WHERE id = $1",
        )
        .bind(defender_id)
        .fetch_optional(pool)
        .await?)
        })
    }

    /// Ids among `since_ms`-or-later decommissions (for closing streams decommissioned by
    /// another process), with the newest decommission time seen.
    pub async fn decommissioned_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_as(
            "SELECT id, decommissioned_at FROM defenders WHERE decommissioned_at >= $1 LIMIT 10000",
        )
        .bind(since_ms)
        .fetch_all(pool)
        .await?)
        })
    }

    /// Every token, newest first: enrollment tokens, then API tokens.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_as(
                "SELECT 'enrollment' AS kind, id, description, created_at, expires_at, revoked_at, \
                    last_used_at, uses FROM enrollment_tokens \
             UNION ALL \
             SELECT 'api' AS kind, id, description, created_at, NULL AS expires_at, revoked_at, \
                    last_used_at, 0 AS uses FROM api_tokens \
             ORDER BY kind DESC, created_at DESC, id DESC",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// The row id of a token given in clear, whatever its state (no side effects).
    pub async fn token_id(&self, kind: TokenKind, token: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let sql = match kind {
                TokenKind::Enrollment => "SELECT id FROM enrollment_tokens WHERE token_hash = $1",
                TokenKind::Api => "SELECT id FROM api_tokens WHERE token_hash = $1",
            };
            Ok(sqlx::query_scalar(sql)
                .bind(crate::secrets::token_hash(token))
                .fetch_optional(pool)
                .await?)
        })
    }

    /// One token by kind and id.
    pub async fn get_token(
        &self,
        kind: TokenKind,
        id: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .list_tokens()
            .await?
            .into_iter()
            .find(|t| t.id == id && (t.kind == "api") == (kind == TokenKind::Api)))
    }

    /// Revokes a token by its id; returns whether an active one was revoked.
    pub async fn revoke_token_id(&self, kind: TokenKind, id: i64) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let sql = match kind {
                TokenKind::Enrollment => {
                    "UPDATE enrollment_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
                }
                TokenKind::Api => {
                    "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
                }
            };
            let done = sqlx::query(sql)
                .bind(now_ms())
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Deletes up to `batch` events received before `cutoff_ms`, oldest rowid first, with
    /// their audit index rows; never the newest event (see the module docs). Returns how many
    /// were deleted; 0 means nothing older is left.
    pub async fn purge_events_before(&self, cutoff_ms: i64, batch: i64) -> Result<u64, StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            // The first `batch` rows in rowid order, cut at the first one that is young enough or
            // is the newest row: rowid order is commit order, so this is a prefix of the table.
            let rows: Vec<(i64, i64)> =
                sqlx::query_as("SELECT rowid, received_at FROM events ORDER BY rowid LIMIT $1")
                    .bind(batch)
                    .fetch_all(&mut *tx)
                    .await?;
            let max_rowid: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM events")
                .fetch_one(&mut *tx)
                .await?;
            let upto = rows
                .iter()
                .take_while(|(rowid, received)| *received < cutoff_ms && *rowid < max_rowid)
                .last()
                .map(|(rowid, _)| *rowid);
            let Some(upto) = upto else {
                tx.rollback().await?;
                return Ok(0);
            };
            let done = sqlx::query("DELETE FROM events WHERE rowid <= $1")
                .bind(upto)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM audit_index WHERE id <= $1")
                .bind(upto)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM waas_index WHERE id <= $1")
                .bind(upto)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        })
    }

    /// Deletes up to `batch` ended sessions that ended before `cutoff_ms` and are not their
    /// Defender's newest (the newest one decides the status). Returns how many.
    pub async fn purge_sessions_before(
        &self,
        cutoff_ms: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query(
                "DELETE FROM sessions WHERE id IN (SELECT s.id FROM sessions s \
             WHERE s.ended_at IS NOT NULL AND s.ended_at < $1 AND EXISTS \
               (SELECT 1 FROM sessions s2 WHERE s2.defender_id = s.defender_id AND s2.id > s.id) \
             LIMIT $2)",
            )
            .bind(cutoff_ms)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected())
        })
    }

    /// Deletes up to `batch` Defenders decommissioned before `cutoff_ms` or last seen before
    /// it (no stream end or heartbeat since — a session left open by a crashed Console counts
    /// by its last heartbeat — and enrolled before), with their
    /// sessions, keys and events (at most `events_batch` events per Defender per call: a
    /// Defender with more is finished on a later call). The Defender holding the newest
    /// event is left for later (see the module docs).
    pub async fn purge_defenders(
        &self,
        cutoff_ms: i64,
        batch: i64,
        events_batch: i64,
    ) -> Result<Purged, StoreError> {
        with_pool!(&self.pool, |pool| {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT d.id FROM defenders d WHERE \
               (d.decommissioned_at IS NOT NULL AND d.decommissioned_at < $1) \
               OR (NOT EXISTS (SELECT 1 FROM sessions s WHERE s.defender_id = d.id \
                               AND (s.ended_at >= $1 OR s.last_heartbeat >= $1)) \
                   AND d.enrolled_at < $1) \
             LIMIT $2",
            )
            .bind(cutoff_ms)
            .bind(batch)
            .fetch_all(pool)
            .await?;
            let mut purged = Purged::default();
            for id in ids {
                let mut tx = pool.begin().await?;
                let newest: Option<String> = sqlx::query_scalar(
                    "SELECT defender_id FROM events WHERE rowid = (SELECT MAX(rowid) FROM events)",
                )
                .fetch_optional(&mut *tx)
                .await?;
                if newest.as_deref() == Some(id.as_str()) {
                    tx.rollback().await?;
                    continue;
                }
                let events = sqlx::query(
                    "DELETE FROM events WHERE rowid IN \
                 (SELECT rowid FROM events WHERE defender_id = $1 LIMIT $2)",
                )
                .bind(&id)
                .bind(events_batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                purged.events += events;
                if events == u64::try_from(events_batch).unwrap_or(u64::MAX) {
                    // More to go: the Defender row stays until its events are gone.
                    tx.commit().await?;
                    continue;
                }
                sqlx::query("DELETE FROM audit_index WHERE defender_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM waas_index WHERE defender_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                purged.sessions += sqlx::query("DELETE FROM sessions WHERE defender_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // A decommissioned Defender's keys stay refused forever.
                sqlx::query(
                    "DELETE FROM defender_keys WHERE defender_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM defenders WHERE id = $2 AND decommissioned_at IS NOT NULL)",
                )
                .bind(&id)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                // Its events are gone (the triggers counted them down to 0): drop the counters.
                sqlx::query("DELETE FROM event_counts WHERE defender_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                purged.defenders += sqlx::query("DELETE FROM defenders WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
            }
            Ok(purged)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        assert_eq!(parse_handle("enroll-3"), Some((TokenKind::Enrollment, 3)));
        assert_eq!(parse_handle("api-12"), Some((TokenKind::Api, 12)));
        assert_eq!(parse_handle("api-0"), None);
        assert_eq!(parse_handle("user-1"), None);
        assert_eq!(parse_handle("api"), None);
    }
}
