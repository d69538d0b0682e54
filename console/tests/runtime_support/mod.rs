//! Shared by the `runtime_*` tests: Defenders written straight into the store, audit events
//! stored through the Console's own writer, and small readers of page markup.
#![allow(dead_code)]

use defender_console::store::{EventWriter, NewDefender, Store, TokenKind, now_ms};
use defender_proto::v1::event::Kind;
use defender_proto::v1::{Event, ProcessStart, RuntimeAudit, TaskMetadata};

/// 2024-05-01T00:00:00Z.
pub const T0: i64 = 1_714_521_600_000;
/// `RuntimeAudit.effect` values.
pub const ALERT: i32 = 1;
pub const PREVENT: i32 = 2;

pub fn metadata(hostname: &str, family: &str) -> TaskMetadata {
    TaskMetadata {
        hostname: hostname.into(),
        cluster: "prod".into(),
        task_arn: format!("arn:aws:ecs:eu-west-1:123456789012:task/prod/{hostname}"),
        family: family.into(),
        revision: "3".into(),
        ..Default::default()
    }
}

/// Enrolls a Defender directly in the store.
pub async fn add_defender(store: &Store, id: &str, metadata: &TaskMetadata) {
    let token = store
        .create_token(TokenKind::Enrollment, "runtime test", None)
        .await
        .unwrap();
    let token_id = store
        .check_token(TokenKind::Enrollment, &token)
        .await
        .unwrap()
        .unwrap();
    store
        .insert_defender(&NewDefender {
            id,
            metadata,
            agent_version: "1.2.3-test",
            mode: "embedded",
            enrollment_token: token_id,
            cert_not_after_ms: now_ms() + 3_600_000,
        })
        .await
        .unwrap();
}

/// An audit event.
pub fn audit(
    seq: u64,
    time_ms: i64,
    rule: &str,
    effect: i32,
    message: &str,
    subject_seq: u64,
) -> Event {
    Event {
        seq,
        time_ms,
        container: "app".into(),
        kind: Some(Kind::Audit(RuntimeAudit {
            rule: rule.into(),
            effect,
            message: message.into(),
            subject_seq,
            pid: 4000 + seq as u32,
        })),
    }
}

/// A process start (not an audit).
pub fn process(seq: u64, time_ms: i64) -> Event {
    Event {
        seq,
        time_ms,
        container: "app".into(),
        kind: Some(Kind::ProcessStart(ProcessStart {
            pid: 100 + seq as u32,
            ppid: 1,
            exe: b"/usr/bin/sleep".to_vec(),
            argv: vec![b"sleep".to_vec(), b"1".to_vec()],
            ..Default::default()
        })),
    }
}

/// Stores events through the Console's own writer; returns once committed.
pub async fn store_events(store: &Store, id: &str, events: Vec<Event>) {
    EventWriter::spawn(store.clone())
        .write(id, events)
        .await
        .unwrap();
}

/// `data-seq` values of the audit rows of the audits page, in page order.
pub fn audit_rows(html: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut rest = html;
    let marker = "<tr data-seq=\"";
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let end = rest.find('"').unwrap();
        let seq: i64 = rest[..end].parse().unwrap();
        let d = rest.find("data-defender=\"").unwrap() + "data-defender=\"".len();
        let d_end = d + rest[d..].find('"').unwrap();
        out.push((rest[d..d_end].to_owned(), seq));
    }
    out
}

/// The markup of the audit row of (`defender`, `seq`).
pub fn audit_row<'a>(html: &'a str, defender: &str, seq: i64) -> &'a str {
    let start = html
        .find(&format!(
            "<tr data-seq=\"{seq}\" data-defender=\"{defender}\""
        ))
        .unwrap_or_else(|| panic!("no row for {defender}/{seq}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

/// Target of the pager link `which` ("older", "newer", "newest"), unescaped; None when absent.
pub fn pager_link(html: &str, which: &str) -> Option<String> {
    let marker = format!("data-page=\"{which}\" href=\"");
    let at = html.find(&marker)? + marker.len();
    let end = at + html[at..].find('"').unwrap();
    Some(html[at..end].replace("&amp;", "&"))
}

/// The inner text of the first `<textarea …>` (still HTML-escaped).
pub fn textarea(html: &str) -> &str {
    let start = html.find("<textarea").expect("a textarea");
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let close = open_end + html[open_end..].find("</textarea>").unwrap();
    &html[open_end..close]
}

/// Undoes maud's escaping of text.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
