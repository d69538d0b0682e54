//! The Console's database: one SQLite file (WAL) in the data directory, reached only through
//! this module so the queries stay portable to PostgreSQL.

pub mod audits;
pub mod capture;
mod defenders;
mod events;
pub mod fleet;
pub mod forensics;
pub mod lifecycle;
mod policy;
mod policy_history;
mod tokens;
mod users;
pub mod vulns;
pub mod waas;
mod web_queries;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use defenders::{DefenderRecord, Health, NewDefender, SessionRef, Standing};
pub use events::{EventWriter, StoredEvent, WriteError};
pub use policy::{PolicyTable, PolicyVersion};
pub use tokens::{DEFAULT_ENROLLMENT_TTL, TokenKind};
pub use users::UiSession;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "console.db";

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and applies pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool, for the event writer and tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Current time as unix milliseconds, the unit of every stored timestamp ([`crate::clock`]).
pub fn now_ms() -> i64 {
    crate::clock::wall_ms()
}

impl Store {
    /// `(rows, rows matching `flagged`)` per Defender of `ids` in an index table with a
    /// `defender_id` column (`audit_index`, `waas_index`); Defenders without rows are left out.
    /// `table` and `flagged` are constants of the callers, never input. The ids are bound in
    /// chunks of 500, far under SQLite's bound-parameter limit, so a whole-fleet CSV export works.
    async fn counts_per_defender(
        &self,
        table: &'static str,
        flagged: &'static str,
        ids: impl Iterator<Item = &str>,
    ) -> Result<std::collections::HashMap<String, (i64, i64)>, StoreError> {
        let mut out = std::collections::HashMap::new();
        let ids: Vec<&str> = ids.collect();
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT defender_id, COUNT(*), SUM(CASE WHEN {flagged} THEN 1 ELSE 0 END) \
                 FROM {table} WHERE defender_id IN ({marks}) GROUP BY defender_id"
            );
            let mut q = sqlx::query_as::<_, (String, i64, i64)>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(
                q.fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|(id, total, flagged)| (id, (total, flagged))),
            );
        }
        Ok(out)
    }
}
