//! Which database a test's Console uses. Unset `CONSOLE_TEST_DATABASE_URL`: the SQLite file in
//! the test's data directory (the default). Set (`.ci/run` does, with a throwaway cluster from
//! `deploy/pg-test-cluster.sh`): a PostgreSQL database of its own per data directory, created
//! on first use and named after the directory, so a Console restarted on the same directory
//! finds its data again.
#![allow(dead_code)]

use std::path::Path;

/// The `--database-url` for a Console on `data_dir`, `None` for SQLite.
pub fn database_url(data_dir: &Path) -> Option<String> {
    if std::env::var_os("CONSOLE_TEST_LOG").is_some() {
        // Debugging aid: the Console's logs on stderr (`--nocapture`).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("CONSOLE_TEST_LOG"))
            .try_init();
    }
    let admin = std::env::var("CONSOLE_TEST_DATABASE_URL").ok()?;
    Some(database_url_in(&admin, data_dir))
}

/// A database of its own for `data_dir` on the server of `admin` (a `postgres://` URL of a
/// user allowed to `CREATE DATABASE`), created when missing; its URL.
pub fn database_url_in(admin: &str, data_dir: &Path) -> String {
    let name = database_name(data_dir);
    // Created once per process: a test asks for its URL many times (Console, bundle, CLI
    // commands, polls of the stored rows).
    static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
    if !created.contains(&name) {
        create_database(admin, &name);
        created.push(name.clone());
    }
    drop(created);
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// Creates database `name` on the server of `admin` unless it exists.
fn create_database(admin: &str, name: &str) {
    let admin_url = admin.to_owned();
    let create = name.to_owned();
    // Called from sync and async code alike: the database is created on a thread of its own.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("CONSOLE_TEST_DATABASE_URL does not answer");
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&create)
                    .fetch_optional(&mut conn)
                    .await
                    .unwrap();
            if exists.is_none() {
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {create}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        })
    })
    .join()
    .unwrap();
}

/// The environment a `defender-console` command needs to work on the same database as a test
/// Console on `data_dir` (nothing for SQLite: `--data-dir` says it all).
pub fn env(data_dir: &Path) -> Vec<(&'static str, String)> {
    database_url(data_dir)
        .map(|url| vec![("CONSOLE_DATABASE_URL", url)])
        .unwrap_or_default()
}

/// `t_` and 16 hex digits of a hash of the directory's path: a valid unquoted identifier.
fn database_name(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    format!("t_{:016x}", h.finish())
}
