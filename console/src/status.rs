//! Connection status as operators read it: "Connected for 3m 12s" / "Disconnected for 45s",
//! derived from stored session rows so every Console replica computes the same answer.

use crate::store::DefenderRecord;

/// A Defender is disconnected once this many heartbeat intervals pass without one.
pub const MISSED_HEARTBEATS: i64 = 3;

/// The status of one Defender at a given instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub connected: bool,
    /// Start of the current stream, when connected.
    pub connected_since_ms: Option<i64>,
    /// Last sign of life: last heartbeat, stream end, or enrollment.
    pub last_seen_ms: i64,
    /// "Connected for 3m 12s" or "Disconnected for 45s".
    pub text: String,
}

/// Derives the status of `d` at `now_ms`.
///
/// Robust to steps of the wall clock: the age of the last heartbeat is clamped at 0 (a step
/// back makes it negative), and "Connected for" is the stream's monotonic open time at its last
/// heartbeat (`session_alive_ms`) plus that clamped age, never `now - started_at`. So after a
/// step either way, the duration is right again at the next heartbeat, and a step forward can
/// show a live Defender as disconnected only until its next heartbeat.
pub fn status_of(d: &DefenderRecord, now_ms: i64) -> Status {
    let last_seen_ms = d
        .session_ended_at
        .or(d.session_last_heartbeat)
        .unwrap_or(d.enrolled_at);
    let live = match (
        d.session_started_at,
        d.session_last_heartbeat,
        d.session_ended_at,
        d.session_interval_ms,
    ) {
        (Some(started), Some(hb), None, Some(interval)) => {
            let age = now_ms.saturating_sub(hb).max(0);
            (age < MISSED_HEARTBEATS * interval).then(|| {
                d.session_alive_ms
                    .map_or(now_ms.saturating_sub(started), |alive| {
                        alive.saturating_add(age)
                    })
                    .max(0)
            })
        }
        _ => None,
    };
    let (connected_since_ms, text) = match live {
        Some(connected_for) => (
            Some(now_ms.saturating_sub(connected_for)),
            format!("Connected for {}", human_duration(connected_for)),
        ),
        None => (
            None,
            format!(
                "Disconnected for {}",
                human_duration(now_ms.saturating_sub(last_seen_ms))
            ),
        ),
    };
    Status {
        connected: live.is_some(),
        connected_since_ms,
        last_seen_ms,
        text,
    }
}

/// Formats a span in milliseconds the way the Defenders list shows it: the two largest units.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(started: Option<i64>, hb: Option<i64>, ended: Option<i64>) -> DefenderRecord {
        DefenderRecord {
            id: "d".into(),
            hostname: String::new(),
            cluster: String::new(),
            task_arn: String::new(),
            family: String::new(),
            revision: String::new(),
            availability_zone: String::new(),
            launch_type: String::new(),
            containers_json: "[]".into(),
            agent_version: String::new(),
            mode: String::new(),
            enrolled_at: 1_000,
            decommissioned_at: None,
            queue_depth: 0,
            spool_bytes: 0,
            dropped_events: 0,
            rss_bytes: 0,
            cpu_centipercent: 0,
            session_started_at: started,
            session_last_heartbeat: hb,
            session_ended_at: ended,
            session_interval_ms: started.map(|_| 10_000),
            console_instance: None,
            ..DefenderRecord::default()
        }
    }

    #[test]
    fn durations_read_like_the_product() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(45_999), "45s");
        assert_eq!(human_duration(192_000), "3m 12s");
        assert_eq!(human_duration(3_600_000 + 5 * 60_000), "1h 5m");
        assert_eq!(human_duration(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
        assert_eq!(human_duration(-5), "0s");
    }

    #[test]
    fn connected_counts_from_stream_start() {
        let d = record(Some(100_000), Some(290_000), None);
        let s = status_of(&d, 292_000);
        assert!(s.connected);
        assert_eq!(s.connected_since_ms, Some(100_000));
        assert_eq!(s.text, "Connected for 3m 12s");
    }

    #[test]
    fn three_missed_heartbeats_disconnect() {
        let d = record(Some(100_000), Some(200_000), None);
        assert!(status_of(&d, 229_999).connected);
        let s = status_of(&d, 230_000);
        assert!(!s.connected);
        assert_eq!(s.text, "Disconnected for 30s");
    }

    #[test]
    fn ended_stream_is_disconnected_since_its_end() {
        let d = record(Some(100_000), Some(200_000), Some(205_000));
        let s = status_of(&d, 250_000);
        assert!(!s.connected);
        assert_eq!(s.last_seen_ms, 205_000);
        assert_eq!(s.text, "Disconnected for 45s");
    }

    #[test]
    fn clock_steps_do_not_outlast_a_heartbeat() {
        // Stream open 100 s at its last heartbeat (wall 200_000); 1 h step back: still
        // connected, and the duration is the monotonic one, not 0.
        let mut d = record(Some(100_000), Some(200_000), None);
        d.session_alive_ms = Some(100_000);
        let back = status_of(&d, 200_000 - 3_600_000);
        assert!(back.connected);
        assert_eq!(back.text, "Connected for 1m 40s");
        // 1 h step forward, next heartbeat (written with the stepped clock) 5 s later.
        let mut d = record(Some(100_000), Some(200_000 + 3_600_000 + 5_000), None);
        d.session_alive_ms = Some(105_000);
        let fwd = status_of(&d, 200_000 + 3_600_000 + 6_000);
        assert!(fwd.connected);
        assert_eq!(fwd.text, "Connected for 1m 46s");
    }

    #[test]
    fn never_connected_counts_from_enrollment() {
        let s = status_of(&record(None, None, None), 61_000);
        assert_eq!(s.text, "Disconnected for 1m 0s");
    }
}
