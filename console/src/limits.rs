//! Hard limits on what a Defender may make the Console store: every string and list of an
//! event or of task metadata is cut to a fixed size at ingest (the cut is marked), and every
//! event batch is checked (seq and timestamp ranges) before anything of it is stored.
//!
//! The gRPC message limit (`MAX_MESSAGE_BYTES`, 4 MiB) bounds one message, not one field: a
//! single 3.6 MiB argv or hostname fits in it. Without these limits such fields were stored
//! whole and every page and API response that showed them grew with them (a Defender page of
//! 1.1 GB). With them, a stored event is at most a few tens of KiB, and a Defender row a few KiB,
//! so a page of N rows is bounded by N times that. The figures are in `PROTOCOL.md`.

use defender_proto::MAX_ARGV_BYTES;
use defender_proto::v1::{ContainerInfo, Event, TaskMetadata, event::Kind};

/// Appended to a string or path that was cut, so readers know they see a prefix.
pub const TRUNCATION_MARK: &str = "…[truncated]";

/// Longest hostname kept (bytes; a DNS name is at most 253).
pub const MAX_HOSTNAME_BYTES: usize = 256;
/// Longest task metadata field kept (cluster, task ARN, family, revision, availability zone,
/// launch type; an ARN is at most 2048 bytes by AWS's limits, these are far shorter in practice).
pub const MAX_METADATA_FIELD_BYTES: usize = 1024;
/// Most containers of one task kept (ECS allows 10 per task definition).
pub const MAX_CONTAINERS: usize = 64;
/// Longest container name kept (ECS: 255 characters).
pub const MAX_CONTAINER_NAME_BYTES: usize = 256;
/// Longest image reference, image id or docker id kept.
pub const MAX_IMAGE_BYTES: usize = 1024;
/// Longest agent version kept.
pub const MAX_VERSION_BYTES: usize = 64;
/// Longest executable or working-directory path kept (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most arguments kept in one argv (besides the byte limit `MAX_ARGV_BYTES`).
pub const MAX_ARGS: usize = 1024;
/// Longest user name, SHA-256 hex or address kept.
pub const MAX_SHORT_FIELD_BYTES: usize = 256;
/// Longest rule name kept.
pub const MAX_RULE_BYTES: usize = 256;
/// Longest audit or notice message kept.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 4096;

/// Earliest event time accepted: 2000-01-01T00:00:00Z, unix milliseconds. Anything before is a
/// clock that was never set or a forged event (it would show as 1970).
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// How far past the Console's clock an event time may be (clock skew between hosts).
pub const MAX_EVENT_FUTURE_MS: i64 = 24 * 3_600_000;

/// Makes the allocator hand every buffer of 256 KiB or more straight back to the system when it
/// is freed. glibc raises its mmap threshold after the first large free (up to 32 MiB), after
/// which multi-MiB message buffers (a Defender's 4 MiB batch) come from the heap arenas and their
/// memory stays with the process: RSS then grows with every large message, never shrinking. A
/// fixed threshold keeps RSS close to what is in use. No-op on other C libraries (musl returns
/// large allocations by itself).
pub fn return_large_buffers_to_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable, under malloc's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Why a whole batch is refused (nothing of it is stored or acked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("event seq {0} is outside the allowed range 1..=9223372036854775807")]
    Seq(u64),
    #[error(
        "event seq {seq} has time_ms {time_ms}, outside the plausible range \
         {MIN_EVENT_TIME_MS}..={max} (2000-01-01 to 24 h after the Console's clock)"
    )]
    Time { seq: u64, time_ms: i64, max: i64 },
}

/// Checks every event of a batch: `seq` in `1..=i64::MAX` (the database column is a signed
/// 64-bit integer, and 0 means "none" in `Ack`/`Welcome`), `time_ms` between
/// [`MIN_EVENT_TIME_MS`] and `now_ms + MAX_EVENT_FUTURE_MS`.
pub fn check_batch(events: &[Event], now_ms: i64) -> Result<(), BatchError> {
    let max = now_ms.saturating_add(MAX_EVENT_FUTURE_MS);
    for e in events {
        if e.seq == 0 || i64::try_from(e.seq).is_err() {
            return Err(BatchError::Seq(e.seq));
        }
        if !(MIN_EVENT_TIME_MS..=max).contains(&e.time_ms) {
            return Err(BatchError::Time {
                seq: e.seq,
                time_ms: e.time_ms,
                max,
            });
        }
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes (on a character boundary, the mark included); true when cut.
pub fn bound_string(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut at = max.saturating_sub(TRUNCATION_MARK.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push_str(TRUNCATION_MARK);
    s.shrink_to_fit();
    true
}

/// Cuts raw bytes (a path, which need not be UTF-8) to at most `max` bytes, the mark included.
pub fn bound_bytes(b: &mut Vec<u8>, max: usize) -> bool {
    if b.len() <= max {
        return false;
    }
    b.truncate(max.saturating_sub(TRUNCATION_MARK.len()));
    b.extend_from_slice(TRUNCATION_MARK.as_bytes());
    b.shrink_to_fit();
    true
}

/// Cuts an argv the way the Defender does: at most [`MAX_ARGS`] arguments, and arguments plus
/// one separator each within `MAX_ARGV_BYTES` (the last one kept may be cut). True when cut.
pub fn bound_argv(argv: &mut Vec<Vec<u8>>) -> bool {
    let mut cut = argv.len() > MAX_ARGS;
    argv.truncate(MAX_ARGS);
    let mut used = 0usize;
    for i in 0..argv.len() {
        let room = MAX_ARGV_BYTES.saturating_sub(used);
        if argv[i].len() + 1 > room {
            argv[i].truncate(room.saturating_sub(1));
            argv[i].shrink_to_fit();
            let keep = if argv[i].is_empty() { i } else { i + 1 };
            argv.truncate(keep);
            cut = true;
            break;
        }
        used += argv[i].len() + 1;
    }
    cut
}

fn bound_container(c: &mut ContainerInfo) -> bool {
    bound_string(&mut c.name, MAX_CONTAINER_NAME_BYTES)
        | bound_string(&mut c.image, MAX_IMAGE_BYTES)
        | bound_string(&mut c.image_id, MAX_IMAGE_BYTES)
        | bound_string(&mut c.docker_id, MAX_IMAGE_BYTES)
}

/// Bounds every field of task metadata (from `Enroll` or `Hello`) before it is stored; true
/// when something was cut.
pub fn bound_metadata(m: &mut TaskMetadata) -> bool {
    let mut cut = bound_string(&mut m.hostname, MAX_HOSTNAME_BYTES);
    for f in [
        &mut m.cluster,
        &mut m.task_arn,
        &mut m.family,
        &mut m.revision,
        &mut m.availability_zone,
        &mut m.launch_type,
    ] {
        cut |= bound_string(f, MAX_METADATA_FIELD_BYTES);
    }
    if m.containers.len() > MAX_CONTAINERS {
        m.containers.truncate(MAX_CONTAINERS);
        cut = true;
    }
    for c in &mut m.containers {
        cut |= bound_container(c);
    }
    cut
}

/// Bounds the agent version a Defender reports.
pub fn bound_version(v: &mut String) -> bool {
    bound_string(v, MAX_VERSION_BYTES)
}

/// Most pids kept on a listening socket shared by forked workers.
pub const MAX_LISTEN_PIDS: usize = 256;

/// Bounds every string and list of one event before it is stored; true when something was cut.
/// A cut argv also sets `argv_truncated`, as the Defender does.
pub fn bound_event(e: &mut Event) -> bool {
    let mut cut = bound_string(&mut e.container, MAX_CONTAINER_NAME_BYTES);
    match &mut e.kind {
        Some(Kind::ProcessStart(p)) => {
            cut |= bound_bytes(&mut p.exe, MAX_PATH_BYTES);
            cut |= bound_bytes(&mut p.cwd, MAX_PATH_BYTES);
            if bound_argv(&mut p.argv) {
                p.argv_truncated = true;
                cut = true;
            }
            cut |= bound_string(&mut p.user, MAX_SHORT_FIELD_BYTES);
            cut |= bound_string(&mut p.exe_sha256, MAX_SHORT_FIELD_BYTES);
            cut |= bound_bytes(&mut p.exec_path, MAX_PATH_BYTES);
        }
        Some(Kind::NetworkListen(n)) => {
            cut |= bound_string(&mut n.local_addr, MAX_SHORT_FIELD_BYTES);
            if n.pids.len() > MAX_LISTEN_PIDS {
                n.pids.truncate(MAX_LISTEN_PIDS);
                cut = true;
            }
        }
        Some(Kind::DnsQuery(q)) => {
            // A DNS name is at most 253 characters; escaped bytes make it at most 4x that.
            cut |= bound_string(&mut q.name, MAX_SHORT_FIELD_BYTES.max(1024));
            cut |= bound_string(&mut q.server_addr, MAX_SHORT_FIELD_BYTES);
        }
        Some(Kind::NetworkConnection(n)) => {
            cut |= bound_string(&mut n.local_addr, MAX_SHORT_FIELD_BYTES);
            cut |= bound_string(&mut n.remote_addr, MAX_SHORT_FIELD_BYTES);
        }
        Some(Kind::Audit(a)) => {
            cut |= bound_string(&mut a.rule, MAX_RULE_BYTES);
            cut |= bound_string(&mut a.message, MAX_MESSAGE_TEXT_BYTES);
        }
        Some(Kind::Notice(n)) => {
            cut |= bound_string(&mut n.message, MAX_MESSAGE_TEXT_BYTES);
        }
        Some(Kind::Waas(w)) => {
            // The Defender cuts these already; a Console bounds what it stores anyway.
            for (s, max) in [
                (&mut w.event_id, 64),
                (&mut w.rule, MAX_RULE_BYTES),
                (&mut w.family, 64),
                (&mut w.effect, 16),
                (&mut w.client_ip, 64),
                (&mut w.method, 32),
                (&mut w.path, 1024),
                (&mut w.location, 32),
                (&mut w.name, 256),
                (&mut w.matched, 256),
                (&mut w.message, 256),
                (&mut w.listener, 64),
            ] {
                cut |= bound_string(s, max);
            }
        }
        Some(Kind::Inventory(inv)) => {
            cut |= bound_string(&mut inv.image_id, MAX_SHORT_FIELD_BYTES);
            cut |= bound_string(&mut inv.image, MAX_METADATA_FIELD_BYTES);
            // The Defender keeps an inventory under MAX_INVENTORY_BYTES; a larger one is cut
            // here the same way (packages dropped from the end, marked truncated).
            use prost::Message;
            let before = inv.packages.len();
            while inv.encoded_len() > defender_proto::MAX_INVENTORY_BYTES
                && !inv.packages.is_empty()
            {
                let keep = inv.packages.len() * 9 / 10;
                inv.packages.truncate(keep);
            }
            if inv.packages.len() < before {
                inv.truncated = true;
                cut = true;
            }
            for p in &mut inv.packages {
                for f in [
                    &mut p.kind,
                    &mut p.name,
                    &mut p.version,
                    &mut p.source_name,
                    &mut p.source_version,
                    &mut p.arch,
                ] {
                    cut |= bound_string(f, MAX_SHORT_FIELD_BYTES);
                }
                cut |= bound_string(&mut p.path, MAX_PATH_BYTES);
            }
            if inv.notes.len() > 64 {
                inv.notes.truncate(64);
                cut = true;
            }
            for n in &mut inv.notes {
                cut |= bound_string(n, MAX_MESSAGE_TEXT_BYTES);
            }
        }
        Some(Kind::Compliance(c)) => {
            cut |= bound_string(&mut c.image_id, MAX_SHORT_FIELD_BYTES);
            if c.results.len() > 256 {
                c.results.truncate(256);
                cut = true;
            }
            for r in &mut c.results {
                for f in [&mut r.check_id, &mut r.severity, &mut r.cis] {
                    cut |= bound_string(f, MAX_SHORT_FIELD_BYTES);
                }
                cut |= bound_string(&mut r.title, MAX_RULE_BYTES);
                cut |= bound_string(&mut r.evidence, MAX_MESSAGE_TEXT_BYTES);
            }
        }
        Some(Kind::ProcessExit(_)) | None => {}
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_proto::v1::ProcessStart;

    #[test]
    fn strings_are_cut_on_char_boundaries_and_marked() {
        let mut s = "é".repeat(300);
        assert!(bound_string(&mut s, 100));
        assert!(s.len() <= 100, "{}", s.len());
        assert!(s.ends_with(TRUNCATION_MARK));
        let mut short = "host".to_owned();
        assert!(!bound_string(&mut short, 100));
        assert_eq!(short, "host");
    }

    #[test]
    fn argv_is_cut_like_the_defender_cuts_it() {
        let mut argv = vec![vec![b'a'; 10], vec![b'b'; MAX_ARGV_BYTES]];
        assert!(bound_argv(&mut argv));
        let total: usize = argv.iter().map(|a| a.len() + 1).sum();
        assert!(total <= MAX_ARGV_BYTES, "{total}");
        assert_eq!(argv[0], vec![b'a'; 10]);
        let mut many = vec![b"x".to_vec(); MAX_ARGS + 5];
        assert!(bound_argv(&mut many));
        assert_eq!(many.len(), MAX_ARGS);
        let mut fine = vec![b"ls".to_vec(), b"-l".to_vec()];
        assert!(!bound_argv(&mut fine));
        assert_eq!(fine.len(), 2);
    }

    #[test]
    fn events_are_bounded_and_flagged() {
        let mut e = Event {
            seq: 1,
            time_ms: MIN_EVENT_TIME_MS,
            container: "c".repeat(10_000),
            kind: Some(Kind::ProcessStart(ProcessStart {
                exe: vec![b'/'; 100_000],
                argv: vec![vec![b'x'; 3 << 20]],
                ..Default::default()
            })),
        };
        assert!(bound_event(&mut e));
        let Some(Kind::ProcessStart(p)) = &e.kind else {
            unreachable!()
        };
        assert!(p.argv_truncated);
        assert!(p.exe.len() <= MAX_PATH_BYTES);
        assert!(p.argv[0].len() < MAX_ARGV_BYTES);
        assert!(e.container.len() <= MAX_CONTAINER_NAME_BYTES);
    }

    #[test]
    fn batches_with_bad_seq_or_time_are_refused() {
        let now = 1_800_000_000_000;
        let ev = |seq, time_ms| Event {
            seq,
            time_ms,
            ..Default::default()
        };
        assert_eq!(check_batch(&[ev(1, now)], now), Ok(()));
        assert_eq!(
            check_batch(&[ev(1, now), ev(1 << 63, now)], now),
            Err(BatchError::Seq(1 << 63))
        );
        assert_eq!(check_batch(&[ev(0, now)], now), Err(BatchError::Seq(0)));
        assert!(check_batch(&[ev(i64::MAX as u64, now)], now).is_ok());
        assert!(matches!(
            check_batch(&[ev(2, 5)], now),
            Err(BatchError::Time { seq: 2, .. })
        ));
        assert!(check_batch(&[ev(2, now + MAX_EVENT_FUTURE_MS + 1)], now).is_err());
    }
}
