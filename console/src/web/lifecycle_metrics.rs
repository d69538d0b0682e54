//! The identity lifecycle's figures on `/metrics`: live streams, retention, rate-limit refusals.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use crate::lifecycle::Lifecycle;

/// Appends the lifecycle's metrics (Prometheus text format) to `out`.
pub fn write(out: &mut String, l: &Lifecycle) {
    let r = &l.retention;
    let cfg = &l.config;
    let _ = writeln!(
        out,
        "# HELP defender_console_streams_live Connect streams this Console process holds (one per Defender).\n\
         # TYPE defender_console_streams_live gauge\n\
         defender_console_streams_live {}",
        l.streams.len()
    );
    let _ = writeln!(
        out,
        "# HELP defender_console_retention_purged_total Rows deleted by retention since start, by kind.\n\
         # TYPE defender_console_retention_purged_total counter\n\
         defender_console_retention_purged_total{{kind=\"events\"}} {}\n\
         defender_console_retention_purged_total{{kind=\"defenders\"}} {}\n\
         defender_console_retention_purged_total{{kind=\"sessions\"}} {}",
        r.events_purged.load(Relaxed),
        r.defenders_purged.load(Relaxed),
        r.sessions_purged.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP defender_console_retention_passes_total Retention passes run since start.\n\
         # TYPE defender_console_retention_passes_total counter\n\
         defender_console_retention_passes_total {}\n\
         # HELP defender_console_retention_errors_total Retention passes that failed.\n\
         # TYPE defender_console_retention_errors_total counter\n\
         defender_console_retention_errors_total {}\n\
         # HELP defender_console_retention_last_pass_timestamp_seconds End of the last retention pass (unix seconds, 0: none yet).\n\
         # TYPE defender_console_retention_last_pass_timestamp_seconds gauge\n\
         defender_console_retention_last_pass_timestamp_seconds {}\n\
         # HELP defender_console_retention_last_pass_duration_seconds Wall time of the last retention pass.\n\
         # TYPE defender_console_retention_last_pass_duration_seconds gauge\n\
         defender_console_retention_last_pass_duration_seconds {:.3}",
        r.passes.load(Relaxed),
        r.errors.load(Relaxed),
        r.last_pass_ms.load(Relaxed) / 1000,
        r.last_pass_duration_ms.load(Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "# HELP defender_console_retention_seconds Configured retention, by what it applies to.\n\
         # TYPE defender_console_retention_seconds gauge\n\
         defender_console_retention_seconds{{what=\"events\"}} {}\n\
         defender_console_retention_seconds{{what=\"defenders\"}} {}",
        cfg.event_retention.as_secs(),
        cfg.defender_purge_after.as_secs()
    );
    let _ = writeln!(
        out,
        "# HELP defender_console_rate_limited_total Requests refused by a rate limit since start, by door.\n\
         # TYPE defender_console_rate_limited_total counter\n\
         defender_console_rate_limited_total{{door=\"enroll\"}} {}\n\
         defender_console_rate_limited_total{{door=\"renew\"}} {}\n\
         defender_console_rate_limited_total{{door=\"login\"}} {}",
        l.refused_enrollments.load(Relaxed),
        l.refused_renewals.load(Relaxed),
        l.refused_logins.load(Relaxed)
    );
}
