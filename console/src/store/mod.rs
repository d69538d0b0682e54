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
