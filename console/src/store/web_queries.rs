//! Read-only queries the HTTP side needs beyond the ingest and enrollment ones.

use super::{Store, StoreError};

impl Store {
    /// Number of events stored for all Defenders (for `/metrics`).
    pub async fn count_all_events(&self) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(pool)
                .await?)
        })
    }
}
