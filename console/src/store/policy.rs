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

impl Store {
    /// The policy in force, if one was ever saved.
    pub async fn current_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT version, rules_json, saved_at, saved_by FROM runtime_policies \
             ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Saves a new version (already validated by the caller) and returns it.
    pub async fn save_policy(
        &self,
        rules_json: &str,
        saved_by: &str,
    ) -> Result<PolicyVersion, StoreError> {
        let saved_at = now_ms();
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO runtime_policies (version, rules_json, saved_at, saved_by) \
             VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM runtime_policies), ?, ?, ?) \
             RETURNING version",
        )
        .bind(rules_json)
        .bind(saved_at)
        .bind(saved_by)
        .fetch_one(&self.pool)
        .await?;
        Ok(PolicyVersion {
            version,
            rules_json: rules_json.to_owned(),
            saved_at,
            saved_by: saved_by.to_owned(),
        })
    }
}
