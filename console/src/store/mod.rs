//! The Console's database: one SQLite file (WAL) in the data directory by default, or a
//! PostgreSQL database (`--database-url postgres://…`, what several Console replicas share),
//! reached only through this module.
//!
//! One set of queries serves both where the SQL is the same (placeholders are written `$N`,
//! which SQLite reads as numbered parameters too); where the dialects differ a method matches
//! on [`Store::is_postgres`] and says why. Each method body is written once and compiled for
//! both drivers by [`with_pool!`], so each runs with its driver's own types and statements
//! (no `Any` driver: it drops SQLite's booleans and copies every bound blob). The schema has one
//! migration set per database (`migrations/sqlite`, `migrations/postgres`), same versions and
//! tables; ARCHITECTURE.md lists where they differ.

/// Runs `$body` with `$pool` bound to the store's pool, once compiled per database. Inside,
/// `Db` names the driver's database type (`QueryBuilder::<Db>`), and `&self.pool` must not be
/// used: the body sees only `$pool`. Exported for the tests, which look at rows directly
/// (`with_pool!(store.pool(), |p| sqlx::query("…").fetch_all(p).await)`).
#[macro_export]
macro_rules! with_pool {
    ($store_pool:expr, |$pool:ident| $body:expr) => {
        match $store_pool {
            $crate::store::Pool::Sqlite($pool) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                $body
            }
            $crate::store::Pool::Postgres($pool) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                $body
            }
        }
    };
}

pub mod audits;
pub mod capture;
mod defenders;
mod events;
pub mod fleet;
pub mod forensics;
pub mod heartbeats;
pub mod lifecycle;
mod policy;
mod policy_history;
mod shared_pki;
mod tokens;
mod users;
pub mod vulns;
pub mod waas;
mod web_queries;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, SqlitePool};

pub use defenders::{DefenderRecord, Health, NewDefender, SessionRef, Standing};
pub use events::{EventWriter, StoredEvent, WriteError, kind_name};
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
    #[error(
        "unsupported --database-url {0:?}: give postgres://USER@HOST:PORT/DATABASE (or postgresql://), \
         or leave it unset for the SQLite database in the data directory"
    )]
    Url(String),
}

/// The pool of whichever database the Console uses (see the module docs).
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// A value a query builder helper binds, on either database (see [`with_pool!`]).
pub(crate) trait Bind<'q, DB: Database>: sqlx::Encode<'q, DB> + sqlx::Type<DB> + 'q {}
impl<'q, DB: Database, T: sqlx::Encode<'q, DB> + sqlx::Type<DB> + 'q> Bind<'q, DB> for T {}

impl Store {
    /// Opens (creating if needed) the SQLite database in `data_dir` and applies pending
    /// migrations.
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
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
        })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://USER:PASSWORD@HOST:PORT/DB`,
    /// with libpq's parameters such as `sslmode=verify-full&sslrootcert=FILE` for Amazon RDS;
    /// user and password may instead come from libpq's `PGUSER`/`PGPASSWORD` environment
    /// variables, e.g. ECS secrets, so that the URL holds no secret) and applies pending
    /// migrations. Several Consoles may do this at once: sqlx takes an
    /// advisory lock around the migrations.
    ///
    /// Errors: [`StoreError::Url`] for another scheme, [`StoreError::Db`] when the server cannot
    /// be reached or refuses the login.
    pub async fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Url(redact_url(url)));
        }
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool: Pool::Postgres(pool),
        })
    }

    /// The underlying pool, for tests that look at rows directly.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes the pool's connections (waits for queries in flight).
    pub async fn close(&self) {
        with_pool!(&self.pool, |pool| pool.close().await)
    }

    /// Whether the database is PostgreSQL (where a query's dialect differs).
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }
}

/// `url` without its password, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".to_owned(),
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
        with_pool!(&self.pool, |pool| {
            let mut out = std::collections::HashMap::new();
            let ids: Vec<&str> = ids.collect();
            for chunk in ids.chunks(500) {
                let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT defender_id, COUNT(*), \
                     CAST(SUM(CASE WHEN {flagged} THEN 1 ELSE 0 END) AS BIGINT) \
                     FROM {table} WHERE defender_id IN ({}) GROUP BY defender_id",
                    marks.join(",")
                );
                let mut q = sqlx::query_as::<_, (String, i64, i64)>(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                out.extend(
                    q.fetch_all(pool)
                        .await?
                        .into_iter()
                        .map(|(id, total, flagged)| (id, (total, flagged))),
                );
            }
            Ok(out)
        })
    }
}
