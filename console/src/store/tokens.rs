//! Enrollment tokens (in install bundles) and API tokens (for scripts): stored hashed, revocable.
//! Enrollment tokens expire ([`DEFAULT_ENROLLMENT_TTL`] unless told otherwise); a running
//! fleet does not need its token any more once enrolled, since Defenders renew their
//! certificates over their own identity.

use super::{Store, StoreError, now_ms};
use crate::secrets::{new_token, token_hash};

/// Life of an enrollment token when none is given: long enough for a service's whole
/// release cycle, but finite, so a leaked install bundle stops working by itself.
pub const DEFAULT_ENROLLMENT_TTL: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// Which kind of token, each with its own table and visible prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Enrollment,
    Api,
}

impl TokenKind {
    fn table(self) -> &'static str {
        match self {
            TokenKind::Enrollment => "enrollment_tokens",
            TokenKind::Api => "api_tokens",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Enrollment => "dfe",
            TokenKind::Api => "dfa",
        }
    }
}

impl Store {
    /// Creates a token and returns it in clear; only its hash is stored.
    pub async fn create_token(
        &self,
        kind: TokenKind,
        description: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<String, StoreError> {
        with_pool!(&self.pool, |pool| {
            let token = new_token(kind.prefix());
            let sql = match kind {
                TokenKind::Enrollment => {
                    "INSERT INTO enrollment_tokens (token_hash, description, created_at, expires_at) VALUES ($1, $2, $3, $4)"
                }
                TokenKind::Api => {
                    "INSERT INTO api_tokens (token_hash, description, created_at) VALUES ($1, $2, $3)"
                }
            };
            let mut q = sqlx::query(sql)
                .bind(token_hash(&token))
                .bind(description)
                .bind(now_ms());
            if kind == TokenKind::Enrollment {
                q = q.bind(expires_at_ms);
            }
            q.execute(pool).await?;
            Ok(token)
        })
    }

    /// Returns the token's row id when it exists, is not revoked and has not expired.
    pub async fn check_token(
        &self,
        kind: TokenKind,
        token: &str,
    ) -> Result<Option<i64>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let sql = match kind {
                TokenKind::Enrollment => {
                    "SELECT id FROM enrollment_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)"
                }
                TokenKind::Api => {
                    "SELECT id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
                }
            };
            let mut q = sqlx::query_scalar(sql).bind(token_hash(token));
            if kind == TokenKind::Enrollment {
                q = q.bind(now_ms());
            }
            let id: Option<i64> = q.fetch_optional(pool).await?;
            if let (TokenKind::Api, Some(id)) = (kind, id) {
                // Last use, for Manage > Tokens; written at most once a minute per token.
                let now = now_ms();
                sqlx::query(
                    "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $3)",
                )
                .bind(now)
                .bind(id)
                .bind(now - 60_000)
                .execute(pool)
                .await?;
            }
            Ok(id)
        })
    }

    /// Revokes a token given in clear; returns whether one was revoked.
    pub async fn revoke_token(&self, kind: TokenKind, token: &str) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let sql = format!(
                "UPDATE {} SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
                kind.table()
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_ms())
                .bind(token_hash(token))
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }
}
