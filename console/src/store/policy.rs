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

impl Store {
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
        let (name, column) = table.names();
        let sql = format!(
            "SELECT version, {column} AS rules_json, saved_at, saved_by FROM {name} \
             ORDER BY version DESC LIMIT 1"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Saves `json` (already validated by the caller) as the next version of `table`'s policy.
    pub async fn save_version(
        &self,
        table: PolicyTable,
        json: &str,
        saved_by: &str,
    ) -> Result<PolicyVersion, StoreError> {
        let (name, column) = table.names();
        let saved_at = now_ms();
        let sql = format!(
            "INSERT INTO {name} (version, {column}, saved_at, saved_by) \
             VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM {name}), ?, ?, ?) \
             RETURNING version"
        );
        let version: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(json)
            .bind(saved_at)
            .bind(saved_by)
            .fetch_one(&self.pool)
            .await?;
        Ok(PolicyVersion {
            version,
            rules_json: json.to_owned(),
            saved_at,
            saved_by: saved_by.to_owned(),
        })
    }
}
