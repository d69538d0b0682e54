//! The Console's wall clock, in one place so that every stored timestamp and every "now" a
//! status is derived against come from the same source.
//!
//! Wall-clock steps (an NTP correction, an operator's `date -s`) move this clock; durations that
//! must not jump with it are measured on the monotonic clock instead (a stream's connected time,
//! see `sessions.alive_ms`). Tests simulate a step with [`step_for_tests`] rather than stepping
//! the host's clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Offset added to the system clock, in milliseconds (0 outside tests).
static STEP_MS: AtomicI64 = AtomicI64::new(0);

/// Current wall time as unix milliseconds.
pub fn wall_ms() -> i64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    system.saturating_add(STEP_MS.load(Ordering::Relaxed))
}

/// Steps this process's wall clock by `delta_ms` (negative: back), as an NTP step of the host
/// clock would; the monotonic clock is untouched. For tests of clock-step behaviour only.
#[doc(hidden)]
pub fn step_for_tests(delta_ms: i64) {
    STEP_MS.fetch_add(delta_ms, Ordering::Relaxed);
}
