//! Reading back saved versions of the runtime policy (Defend > Runtime's history); saving and
//! the version in force are in `policy.rs`.

use super::{PolicyVersion, Store, StoreError};

impl Store {
    /// The newest `limit` saved versions, newest first.
    pub async fn policy_history(&self, limit: i64) -> Result<Vec<PolicyVersion>, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_as(
                "SELECT version, rules_json, saved_at, saved_by FROM runtime_policies \
             ORDER BY version DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Saved version `version`, if it exists.
    pub async fn policy_version(&self, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_as(
            "SELECT version, rules_json, saved_at, saved_by FROM runtime_policies WHERE version = $1",
        )
        .bind(version)
        .fetch_optional(pool)
        .await?)
        })
    }
}
