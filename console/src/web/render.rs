//! Plain-text renderings shared by pages and the API: timestamps, sizes, names, and one-line
//! summaries of events. Everything returned here is *text*; HTML escaping is maud's job.
//!
//! Event fields (argv, paths, hostnames) are attacker-controlled, so besides being escaped they
//! go through [`display`], which makes control and bidirectional-override characters visible:
//! escaping stops script injection, this stops text that *reads* differently than it is.

use defender_proto::v1::agent_notice::Level;
use defender_proto::v1::event::Kind;
use defender_proto::v1::{Direction, Effect, Event, ProcessExit, Protocol};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::DefenderRecord;

/// Longest event summary shown in a table cell (characters); the API carries the full detail.
pub const MAX_SUMMARY_CHARS: usize = 600;

/// RFC 3339 UTC of unix milliseconds, with a fraction when there is one.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// RFC 3339 UTC of unix milliseconds, whole seconds (for tables).
pub fn rfc3339_secs(ms: i64) -> String {
    rfc3339(ms.div_euclid(1000) * 1000)
}

/// `text` with control and bidirectional-formatting characters replaced by visible `\u{..}`
/// escapes, so attacker-chosen strings cannot reorder or hide what an operator reads.
pub fn display(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_deceptive(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Raw bytes (paths, arguments) as displayable text: lossy UTF-8, then [`display`].
pub fn display_bytes(bytes: &[u8]) -> String {
    display(&String::from_utf8_lossy(bytes))
}

/// Cuts `text` to `max` characters, marking the cut.
pub fn truncate(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => {
            let mut cut = text[..at].to_owned();
            cut.push('…');
            cut
        }
        None => text,
    }
}

/// The last `/`- or `:`-separated part of an ARN (`…:task/cluster/abc123` → `abc123`).
pub fn arn_tail(arn: &str) -> &str {
    arn.rsplit(['/', ':']).next().unwrap_or(arn)
}

/// How a Defender is named in lists: see [`crate::store::fleet::fleet_name`]; escaped for display.
pub fn defender_name(d: &DefenderRecord) -> String {
    display(&crate::store::fleet::fleet_name(d))
}

/// `family:revision` of the Defender's task definition, or what of it is known.
pub fn task_definition(d: &DefenderRecord) -> String {
    match (d.family.is_empty(), d.revision.is_empty()) {
        (true, true) => String::new(),
        (false, true) => display(&d.family),
        _ => display(&format!("{}:{}", d.family, d.revision)),
    }
}

/// A byte count for people: `512 B`, `12.3 MiB`.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// An integer with thousands separators: `12345` → `12,345`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "12,345 events dropped" (one event: "1 event dropped").
pub fn dropped_text(n: i64) -> String {
    if n == 1 {
        "1 event dropped".to_owned()
    } else {
        format!("{} events dropped", thousands(n))
    }
}

/// The first 12 hex digits of a SHA-256 (the whole value goes into a `title`).
pub fn sha_short(hex: &str) -> String {
    display(&hex.chars().take(12).collect::<String>())
}

/// Percent-encodes one URL path segment (ids go into links).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One argument quoted the way a shell would need it, so boundaries between arguments show.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// An argv as one line.
pub fn argv_line(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|a| shell_word(&display_bytes(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `tcp`, `udp`, or `ip` when unspecified.
pub fn protocol(p: i32) -> &'static str {
    match Protocol::try_from(p) {
        Ok(Protocol::Tcp) => "tcp",
        Ok(Protocol::Udp) => "udp",
        _ => "ip",
    }
}

/// `addr:port`, with IPv6 addresses in brackets.
pub fn socket(addr: &str, port: u32) -> String {
    let addr = display(addr);
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// How a process ended: "exited with code 0", "killed by signal 9", or "exited, status
/// unknown" when the Defender saw it gone without collecting its status.
pub fn exit_status(x: &ProcessExit) -> String {
    if !x.status_known {
        "exited, status unknown".to_owned()
    } else if x.signal != 0 {
        format!("killed by signal {}", x.signal)
    } else {
        format!("exited with code {}", x.exit_code)
    }
}

/// One line saying what an event is about (not truncated; see [`MAX_SUMMARY_CHARS`]).
pub fn event_summary(e: &Event) -> String {
    match &e.kind {
        Some(Kind::ProcessStart(p)) => {
            let mut s = String::new();
            if p.blocked {
                s.push_str("[blocked before exec] ");
            } else if p.forked {
                s.push_str("[fork] ");
            }
            s.push_str(&format!(
                "{} — {}",
                display_bytes(&p.exe),
                argv_line(&p.argv)
            ));
            if p.argv_truncated {
                s.push_str(" [argv truncated]");
            }
            if !p.user.is_empty() {
                s.push_str(&format!(" (user {})", display(&p.user)));
            } else {
                s.push_str(&format!(" (uid {})", p.uid));
            }
            if p.euid != p.uid {
                s.push_str(&format!(" (effective uid {})", p.euid));
            }
            s
        }
        Some(Kind::DnsQuery(q)) => format!(
            "{}DNS query {} ({}) to {}",
            if q.blocked { "[blocked] " } else { "" },
            display(&q.name),
            qtype_name(q.qtype),
            socket(&q.server_addr, q.server_port)
        ),
        Some(Kind::ProcessExit(x)) => exit_status(x),
        Some(Kind::NetworkListen(n)) => {
            let mut s = format!(
                "{} {} {}",
                if n.blocked {
                    "[blocked] listen on"
                } else if n.closed {
                    "stopped listening"
                } else {
                    "listening"
                },
                protocol(n.protocol),
                socket(&n.local_addr, n.local_port)
            );
            if n.pids.len() > 1 {
                let pids: Vec<String> = n.pids.iter().take(16).map(u32::to_string).collect();
                s.push_str(&format!(" (shared by pids {})", pids.join(", ")));
            }
            s
        }
        Some(Kind::NetworkConnection(c)) => {
            let local = socket(&c.local_addr, c.local_port);
            let remote = socket(&c.remote_addr, c.remote_port);
            let line = match Direction::try_from(c.direction) {
                Ok(Direction::Inbound) => {
                    format!("inbound {} {remote} → {local}", protocol(c.protocol))
                }
                Ok(Direction::Outbound) => {
                    format!("outbound {} {local} → {remote}", protocol(c.protocol))
                }
                _ => format!("{} {local} ↔ {remote}", protocol(c.protocol)),
            };
            if c.blocked {
                format!("[blocked before connect] {line}")
            } else if c.closed {
                format!("{line} (closed)")
            } else {
                line
            }
        }
        Some(Kind::Audit(a)) => {
            let effect = match Effect::try_from(a.effect) {
                Ok(Effect::Prevent) => "prevent",
                Ok(Effect::Alert) => "alert",
                _ => "audit",
            };
            format!("[{effect}] {}: {}", display(&a.rule), display(&a.message))
        }
        Some(Kind::Notice(n)) => {
            let level = match Level::try_from(n.level) {
                Ok(Level::Error) => "error",
                Ok(Level::Warning) => "warning",
                _ => "info",
            };
            let mut s = format!("[{level}] {}", display(&n.message));
            if n.dropped > 0 {
                s.push_str(&format!(" ({} events dropped)", n.dropped));
            }
            s
        }
        Some(Kind::Inventory(i)) => format!(
            "inventory of {}: {} packages{}",
            display(&i.image_id),
            i.total_packages,
            if i.truncated { " (truncated)" } else { "" }
        ),
        Some(Kind::Compliance(c)) => format!(
            "compliance: {} of {} checks failed",
            c.results.iter().filter(|r| !r.passed).count(),
            c.results.len()
        ),
        Some(Kind::Waas(w)) => format!(
            "WAAS {} {} ({}): {} {} — {} {} {:?}",
            display(&w.effect),
            display(&w.rule),
            display(&w.family),
            display(&w.method),
            display(&w.path),
            display(&w.location),
            display(&w.name),
            display(&w.matched)
        ),
        None => "unknown event".to_owned(),
    }
}

/// "exact", "polling (1 s)", or "unknown" (a Defender that does not report its capture mode).
pub fn capture_summary(d: &crate::store::DefenderRecord) -> String {
    match d.capture_mode.as_str() {
        "exact" => "exact".to_owned(),
        "polling" => {
            let ms = d.capture_poll_interval_ms;
            if ms > 0 && ms % 1000 == 0 {
                format!("polling ({} s)", ms / 1000)
            } else if ms > 0 {
                format!("polling ({ms} ms)")
            } else {
                "polling".to_owned()
            }
        }
        _ => "unknown".to_owned(),
    }
}

/// The usual name of a DNS query type (RFC 1035 and successors), or its number.
pub fn qtype_name(qtype: u32) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        n => format!("TYPE{n}"),
    }
}

/// Standard base64 of raw bytes.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Puts a raw byte field into `obj` as `name` (lossy UTF-8) and, only when the bytes are not
/// valid UTF-8, also as `name_b64` (the exact bytes, standard base64).
pub fn put_bytes(obj: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    obj.insert(
        name.to_owned(),
        String::from_utf8_lossy(bytes).into_owned().into(),
    );
    if std::str::from_utf8(bytes).is_err() {
        obj.insert(format!("{name}_b64"), b64(bytes).into());
    }
}

/// The decoded event as JSON for the API: raw byte fields become lossy UTF-8 strings (not
/// [`display`]ed: API consumers get the data, and escape for their own medium). Where those
/// bytes are not valid UTF-8 the exact bytes ride along in base64: `exe_b64` and `cwd_b64`
/// beside `exe` and `cwd`, and `argv_b64` (every argument, parallel to `argv`) when any
/// argument is not valid UTF-8. Absent `*_b64` fields mean the strings are exact.
pub fn event_detail(e: &Event) -> serde_json::Value {
    use serde_json::json;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match &e.kind {
        Some(Kind::ProcessStart(p)) => {
            let mut obj = serde_json::Map::new();
            obj.insert("pid".into(), p.pid.into());
            obj.insert("ppid".into(), p.ppid.into());
            put_bytes(&mut obj, "exe", &p.exe);
            obj.insert(
                "argv".into(),
                p.argv.iter().map(|a| lossy(a)).collect::<Vec<_>>().into(),
            );
            if p.argv.iter().any(|a| std::str::from_utf8(a).is_err()) {
                obj.insert(
                    "argv_b64".into(),
                    p.argv.iter().map(|a| b64(a)).collect::<Vec<_>>().into(),
                );
            }
            obj.insert("argv_truncated".into(), p.argv_truncated.into());
            obj.insert("uid".into(), p.uid.into());
            obj.insert("user".into(), p.user.clone().into());
            put_bytes(&mut obj, "cwd", &p.cwd);
            obj.insert("start_time".into(), rfc3339(p.start_time_ms).into());
            obj.insert("exe_sha256".into(), p.exe_sha256.clone().into());
            obj.insert("euid".into(), p.euid.into());
            put_bytes(&mut obj, "exec_path", &p.exec_path);
            obj.insert("forked".into(), p.forked.into());
            obj.insert("intercepted".into(), p.intercepted.into());
            obj.insert("blocked".into(), p.blocked.into());
            serde_json::Value::Object(obj)
        }
        Some(Kind::ProcessExit(x)) => json!({
            "pid": x.pid, "exit_code": x.exit_code, "signal": x.signal,
            "status_known": x.status_known,
        }),
        Some(Kind::NetworkListen(n)) => json!({
            "protocol": protocol(n.protocol), "local_addr": n.local_addr,
            "local_port": n.local_port, "pid": n.pid, "closed": n.closed,
            "pids": n.pids, "blocked": n.blocked,
        }),
        Some(Kind::NetworkConnection(c)) => json!({
            "protocol": protocol(c.protocol),
            "direction": match Direction::try_from(c.direction) {
                Ok(Direction::Inbound) => "inbound",
                Ok(Direction::Outbound) => "outbound",
                _ => "unknown",
            },
            "local_addr": c.local_addr, "local_port": c.local_port,
            "remote_addr": c.remote_addr, "remote_port": c.remote_port,
            "pid": c.pid, "closed": c.closed, "blocked": c.blocked,
        }),
        Some(Kind::DnsQuery(q)) => json!({
            "pid": q.pid, "name": q.name, "qtype": q.qtype, "qtype_name": qtype_name(q.qtype),
            "server_addr": q.server_addr, "server_port": q.server_port, "blocked": q.blocked,
        }),
        Some(Kind::Audit(a)) => json!({
            "rule": a.rule,
            "effect": match Effect::try_from(a.effect) {
                Ok(Effect::Prevent) => "prevent",
                Ok(Effect::Alert) => "alert",
                _ => "unspecified",
            },
            "message": a.message, "subject_seq": a.subject_seq, "pid": a.pid,
        }),
        Some(Kind::Notice(n)) => json!({
            "level": match Level::try_from(n.level) {
                Ok(Level::Error) => "error",
                Ok(Level::Warning) => "warning",
                Ok(Level::Info) => "info",
                _ => "unspecified",
            },
            "message": n.message, "dropped": n.dropped,
        }),
        Some(Kind::Inventory(i)) => json!({
            "image_id": i.image_id, "image": i.image,
            "total_packages": i.total_packages, "truncated": i.truncated,
        }),
        Some(Kind::Compliance(c)) => json!({
            "image_id": c.image_id,
            "failed": c.results.iter().filter(|r| !r.passed).count(),
            "checks": c.results.len(),
        }),
        Some(Kind::Waas(w)) => json!({
            "event_id": w.event_id,
            "rule": w.rule,
            "family": w.family,
            "effect": w.effect,
            "client_ip": w.client_ip,
            "method": w.method,
            "path": w.path,
            "location": w.location,
            "name": w.name,
            "matched": w.matched,
            "message": w.message,
            "status": w.status,
            "incomplete": w.incomplete,
            "findings": w.findings,
            "listener": w.listener,
        }),
        None => serde_json::Value::Null,
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_proto::v1::{NetworkConnection, ProcessStart};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_secs(1_700_000_000_999), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn deceptive_characters_become_visible() {
        assert_eq!(display("a\u{202e}b\nc"), "a\\u{202e}b\\u{a}c");
        assert_eq!(display("plain <b>"), "plain <b>");
    }

    #[test]
    fn truncation_marks_the_cut_on_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "hé…");
        assert_eq!(truncate("abc".into(), 3), "abc");
    }

    #[test]
    fn names_fall_back_to_the_task_id() {
        assert_eq!(arn_tail("arn:aws:ecs:us-east-1:1:task/prod/0abc"), "0abc");
        assert_eq!(arn_tail("plain"), "plain");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12345), "12,345");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-12345), "-12,345");
        assert_eq!(thousands(i64::MIN), "-9,223,372,036,854,775,808");
        assert_eq!(dropped_text(12345), "12,345 events dropped");
        assert_eq!(dropped_text(1), "1 event dropped");
    }

    #[test]
    fn exits_say_when_their_status_is_unknown() {
        let exit = |exit_code, signal, status_known| {
            exit_status(&ProcessExit {
                pid: 1,
                exit_code,
                signal,
                status_known,
            })
        };
        assert_eq!(exit(3, 0, true), "exited with code 3");
        assert_eq!(exit(-1, 9, true), "killed by signal 9");
        assert_eq!(exit(-1, 0, false), "exited, status unknown");
    }

    #[test]
    fn non_utf8_bytes_travel_in_base64_too() {
        let e = Event {
            kind: Some(Kind::ProcessStart(ProcessStart {
                exe: b"/bin/ok".to_vec(),
                argv: vec![b"a".to_vec(), b"\xff\xfe".to_vec()],
                cwd: b"/tmp/\x80".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let d = event_detail(&e);
        assert_eq!(d["exe"], "/bin/ok");
        assert!(d.get("exe_b64").is_none());
        assert_eq!(d["argv"][1], "\u{fffd}\u{fffd}");
        assert_eq!(d["argv_b64"][0], "YQ==");
        assert_eq!(d["argv_b64"][1], "//4=");
        assert_eq!(d["cwd_b64"], "L3RtcC+A");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("ab-1"), "ab-1");
        assert_eq!(path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn process_start_shows_exe_and_quoted_argv() {
        let e = Event {
            kind: Some(Kind::ProcessStart(ProcessStart {
                exe: b"/bin/sh".to_vec(),
                argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo 'hi' \xff".to_vec()],
                user: "root".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            event_summary(&e),
            "/bin/sh — sh -c 'echo '\\''hi'\\'' \u{fffd}' (user root)"
        );
    }

    #[test]
    fn connections_show_both_ends() {
        let e = Event {
            kind: Some(Kind::NetworkConnection(NetworkConnection {
                protocol: Protocol::Tcp as i32,
                direction: Direction::Outbound as i32,
                local_addr: "10.0.0.5".into(),
                local_port: 40000,
                remote_addr: "2001:db8::1".into(),
                remote_port: 443,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            event_summary(&e),
            "outbound tcp 10.0.0.5:40000 → [2001:db8::1]:443"
        );
    }
}
