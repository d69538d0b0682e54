//! Saved versions of the App-Embedded runtime policy; the newest one is in force.

use super::{Store, StoreError, now_ms};

/// One saved policy version.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PolicyVersion {
    pub version: i64,
    pub rules_json: String,
    pub saved_at: i64,
    pub saved_by: String,
}

/// The policies kept as numbered versions, each in a table of its own (migrations 0003, 0010).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyTable {
    /// The App-Embedded runtime policy (`runtime_policies.rules_json`).
    Runtime,
    /// The WAAS policy (`waas_policies.policy_json`).
    Waas,
}

impl PolicyTable {
    /// (table, document column): constants, never input.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Runtime => ("runtime_policies", "rules_json"),
            Self::Waas => ("waas_policies", "policy_json"),
        }
    }
}

/// PostgreSQL `NOTIFY` channel on which a saved policy version is announced; the payload is
/// the policy's table name.
pub const POLICY_CHANNEL: &str = "console_policy";

impl Store {
    /// On PostgreSQL, a listener that receives a notification whenever any Console replica
    /// saves a policy version ([`POLICY_CHANNEL`]); `None` on SQLite (one Console per file).
    pub async fn policy_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        match &self.pool {
            super::Pool::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(POLICY_CHANNEL).await?;
                Ok(Some(listener))
            }
            super::Pool::Sqlite(_) => Ok(None),
        }
    }

    /// The policy in force, if one was ever saved.
    pub async fn current_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.current_version(PolicyTable::Runtime).await
    }

    /// Saves a new version (already validated by the caller) and returns it.
    pub async fn save_policy(
        &self,
        rules_json: &str,
        saved_by: &str,
    ) -> Result<PolicyVersion, StoreError> {
        self.save_version(PolicyTable::Runtime, rules_json, saved_by)
            .await
    }

    /// The newest version of `table`'s policy, if one was ever saved.
    pub async fn current_version(
        &self,
        table: PolicyTable,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let (name, column) = table.names();
            let sql = format!(
                "SELECT version, {column} AS rules_json, saved_at, saved_by FROM {name} \
             ORDER BY version DESC LIMIT 1"
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Saves `json` (already validated by the caller) as the next version of `table`'s policy.
    pub async fn save_version(
        &self,
        table: PolicyTable,
        json: &str,
        saved_by: &str,
    ) -> Result<PolicyVersion, StoreError> {
        with_pool!(&self.pool, |pool| {
            let (name, column) = table.names();
            let saved_at = now_ms();
            let sql = format!(
                "INSERT INTO {name} (version, {column}, saved_at, saved_by) \
             VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM {name}), $1, $2, $3) \
             RETURNING version"
            );
            let version: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(json)
                .bind(saved_at)
                .bind(saved_by)
                .fetch_one(pool)
                .await?;
            if self.is_postgres() {
                // Replicas listening (`policy_listener`) push the new version to their streams
                // at once instead of at their next poll.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(POLICY_CHANNEL)
                    .bind(name)
                    .execute(pool)
                    .await?;
            }
            Ok(PolicyVersion {
                version,
                rules_json: json.to_owned(),
                saved_at,
                saved_by: saved_by.to_owned(),
            })
        })
    }
}
