//! The App-Embedded Defender: runs the application, keeps an authenticated link to the Console
//! and reports what it sees.

pub mod bundle;
pub mod capture;
pub mod cli;
pub mod console_addrs;
pub mod enforce;
pub mod fargate;
pub mod identity;
pub mod inventory;
pub mod link;
pub mod local;
pub mod metadata;
pub mod observe;
pub mod outbox;
pub mod run;
pub mod selfstats;
pub mod simulate;
pub mod spool;
pub mod supervise;
pub mod transport;
pub mod waas;

/// Version reported to the Console.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Current time as unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
