//! Operator accounts and their browser sessions.

use super::{Store, StoreError, now_ms};
use crate::secrets::{hash_password, new_token, token_hash, verify_password};

/// How long a UI login lasts.
pub const UI_SESSION_MS: i64 = 12 * 3600 * 1000;

/// A logged-in browser session.
#[derive(Clone, Debug)]
pub struct UiSession {
    pub username: String,
    pub csrf_token: String,
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("no such user"))
}

impl Store {
    /// Creates the `admin` account on first start. Returns the password to print once when it
    /// was generated here (None when the account existed or the password came from config).
    pub async fn ensure_admin(&self, password: Option<&str>) -> Result<Option<String>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT username FROM users WHERE username = 'admin'")
                    .fetch_optional(pool)
                    .await?;
            if exists.is_some() {
                return Ok(None);
            }
            let (password, generated) = match password {
                Some(p) => (p.to_owned(), false),
                None => (new_token("pw"), true),
            };
            // Replicas starting together on an empty database race here: one inserts, and
            // only its generated password is shown.
            let inserted = sqlx::query(
                "INSERT INTO users (username, password_hash, created_at) VALUES ('admin', $1, $2) \
                 ON CONFLICT (username) DO NOTHING",
            )
            .bind(hash_password(&password))
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected();
            Ok(generated.then_some(password).filter(|_| inserted == 1))
        })
    }

    /// Sets `username`'s password (creating the account if needed) and ends its sessions, so
    /// a reset also logs out whoever held the old password. Returns true when the account was
    /// created.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            // PBKDF2 is slow by design; this runs from the CLI, where blocking is fine.
            let hash = hash_password(password);
            let mut tx = pool.begin().await?;
            let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
                .bind(&hash)
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                sqlx::query(
                    "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3)",
                )
                .bind(username)
                .bind(&hash)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM ui_sessions WHERE username = $1")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(updated == 0)
        })
    }

    /// Verifies a login and opens a session; returns the session cookie value.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<String>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT password_hash FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(pool)
                    .await?;
            // Unknown users are checked against a fixed hash: the same work, so timing does not
            // reveal account names. PBKDF2 is slow by design: keep it off the async workers.
            let known = stored.is_some();
            let hash = stored.unwrap_or_else(|| dummy_hash().to_owned());
            let password = password.to_owned();
            let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
                .await
                .unwrap_or(false)
                && known;
            if !ok {
                return Ok(None);
            }
            let cookie = new_token("dfs");
            let now = now_ms();
            sqlx::query(
            "INSERT INTO ui_sessions (id_hash, username, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash(&cookie))
        .bind(username)
        .bind(new_token("csrf"))
        .bind(now)
        .bind(now + UI_SESSION_MS)
        .execute(pool)
        .await?;
            Ok(Some(cookie))
        })
    }

    /// Looks up a live session by its cookie value.
    pub async fn ui_session(&self, cookie: &str) -> Result<Option<UiSession>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let row: Option<(String, String)> = sqlx::query_as(
            "SELECT username, csrf_token FROM ui_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash(cookie))
        .bind(now_ms())
        .fetch_optional(pool)
        .await?;
            Ok(row.map(|(username, csrf_token)| UiSession {
                username,
                csrf_token,
            }))
        })
    }

    /// Ends a session (logout) and forgets expired ones.
    pub async fn logout(&self, cookie: &str) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1 OR expires_at <= $2")
                .bind(token_hash(cookie))
                .bind(now_ms())
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}
