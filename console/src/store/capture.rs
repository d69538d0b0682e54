//! The capture status each Defender reports in Hello and heartbeats (exact or polling, why,
//! intercepted / timed-out / missed counts, and the error of a failing source), kept on its
//! `defenders` row. Written only when it changed, so heartbeats stay one statement otherwise.

use defender_proto::v1::{CaptureMode, CaptureStatus};

use super::{Store, StoreError};

/// Longest capture detail or error text kept (they come from the network).
const MAX_TEXT: usize = 1024;

/// `exact`, `polling`, or empty when the Defender did not say (older Defenders).
pub fn mode_name(status: &CaptureStatus) -> &'static str {
    match CaptureMode::try_from(status.mode) {
        Ok(CaptureMode::Exact) => "exact",
        Ok(CaptureMode::Polling) => "polling",
        _ => "",
    }
}

fn bounded(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Store {
    /// Records the Defender's capture status.
    pub async fn set_capture(&self, id: &str, status: &CaptureStatus) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            sqlx::query(
                "UPDATE defenders SET capture_mode = $1, capture_detail = $2, capture_error = $3, \
             capture_poll_interval_ms = $4, capture_intercepted = $5, capture_timed_out = $6, \
             capture_missed = $7 WHERE id = $8",
            )
            .bind(mode_name(status))
            .bind(bounded(&status.detail))
            .bind(bounded(&status.error))
            .bind(i64::from(status.poll_interval_ms))
            .bind(clamp(status.intercepted))
            .bind(clamp(status.timed_out))
            .bind(clamp(status.missed_processes))
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}
