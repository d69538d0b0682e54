//! The CA shared by Console replicas on one PostgreSQL database (`console_pki`). SQLite
//! Consoles keep theirs as files in the data directory instead (`pki::CertAuthority`).

use super::{Store, StoreError, now_ms};

impl Store {
    /// The database's CA as `(certificate PEM, key PEM)`: the one stored, or, when none is yet,
    /// `cert_pem`/`key_pem` (a CA the caller just generated), stored now. Replicas starting at
    /// the same moment all get the one that was stored first.
    pub async fn shared_ca(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(String, String), StoreError> {
        with_pool!(&self.pool, |pool| {
            sqlx::query(
                "INSERT INTO console_pki (id, ca_cert, ca_key, created_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(cert_pem)
            .bind(key_pem)
            .bind(now_ms())
            .execute(pool)
            .await?;
            Ok(
                sqlx::query_as("SELECT ca_cert, ca_key FROM console_pki WHERE id = 1")
                    .fetch_one(pool)
                    .await?,
            )
        })
    }
}
