//! Shared by the `forensics_*` tests: event builders, storing events through the real writer,
//! and small readers of the Defender page's markup (rows, pager links, sections).
#![allow(dead_code)]

use defender_console::store::EventWriter;
use defender_proto::v1::event::Kind;
use defender_proto::v1::{
    AgentNotice, Direction, Event, NetworkConnection, NetworkListen, ProcessExit, ProcessStart,
    Protocol, RuntimeAudit,
};

use crate::web_support::Web;

/// 2024-05-01T00:00:00Z.
pub const T0: i64 = 1_714_521_600_000;

pub fn event(seq: u64, time_ms: i64, kind: Kind) -> Event {
    Event {
        seq,
        time_ms,
        container: "app".into(),
        kind: Some(kind),
    }
}

pub fn start(pid: u32, ppid: u32, exe: &[u8], argv: &[&[u8]]) -> Kind {
    Kind::ProcessStart(ProcessStart {
        pid,
        ppid,
        exe: exe.to_vec(),
        argv: argv.iter().map(|a| a.to_vec()).collect(),
        uid: 1000,
        user: "app".into(),
        cwd: b"/srv".to_vec(),
        start_time_ms: T0,
        ..Default::default()
    })
}

pub fn exit(pid: u32, exit_code: i32, status_known: bool) -> Kind {
    Kind::ProcessExit(ProcessExit {
        pid,
        exit_code,
        signal: 0,
        status_known,
    })
}

pub fn listen(pid: u32, proto: Protocol, addr: &str, port: u32, closed: bool) -> Kind {
    Kind::NetworkListen(NetworkListen {
        protocol: proto as i32,
        local_addr: addr.into(),
        local_port: port,
        pid,
        closed,
        pids: vec![pid],
        blocked: false,
    })
}

pub fn outbound(pid: u32, remote: &str, port: u32, closed: bool) -> Kind {
    connection(pid, Direction::Outbound, remote, port, closed)
}

pub fn connection(pid: u32, dir: Direction, remote: &str, port: u32, closed: bool) -> Kind {
    Kind::NetworkConnection(NetworkConnection {
        protocol: Protocol::Tcp as i32,
        direction: dir as i32,
        local_addr: "10.0.0.5".into(),
        local_port: 40_000,
        remote_addr: remote.into(),
        remote_port: port,
        pid,
        closed,
        blocked: false,
    })
}

pub fn audit(pid: u32, rule: &str) -> Kind {
    Kind::Audit(RuntimeAudit {
        rule: rule.into(),
        effect: 1,
        message: "matched".into(),
        subject_seq: 0,
        pid,
    })
}

pub fn notice(message: &str) -> Kind {
    Kind::Notice(AgentNotice {
        level: 1,
        message: message.into(),
        dropped: 0,
    })
}

/// Stores events through the Console's own writer; returns once committed.
pub async fn store_events(web: &Web, id: &str, events: Vec<Event>) {
    EventWriter::spawn(web.console.store.clone())
        .write(id, events)
        .await
        .unwrap();
}

/// `(seq, depth)` of every timeline row, in page order.
pub fn rows(html: &str) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<tr data-seq=\"") {
        rest = &rest[at + "<tr data-seq=\"".len()..];
        let seq_end = rest.find('"').unwrap();
        let seq = rest[..seq_end].parse().unwrap();
        let depth_at = rest.find("data-depth=\"").unwrap() + "data-depth=\"".len();
        let depth_end = depth_at + rest[depth_at..].find('"').unwrap();
        out.push((seq, rest[depth_at..depth_end].parse().unwrap()));
    }
    out
}

/// The seqs of the timeline rows, in page order.
pub fn seqs(html: &str) -> Vec<i64> {
    rows(html).into_iter().map(|(s, _)| s).collect()
}

/// The markup of the timeline row of `seq`.
pub fn row_html(html: &str, seq: i64) -> &str {
    let start = html
        .find(&format!("<tr data-seq=\"{seq}\""))
        .unwrap_or_else(|| panic!("no row for seq {seq}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

/// Target of the pager link `which` ("older", "newer", "newest"), unescaped, without the
/// fragment; None when the page has no such link.
pub fn pager_link(html: &str, which: &str) -> Option<String> {
    let marker = format!("data-page=\"{which}\" href=\"");
    let at = html.find(&marker)? + marker.len();
    let end = at + html[at..].find('"').unwrap();
    let href = html[at..end].replace("&amp;", "&");
    Some(href.split('#').next().unwrap().to_owned())
}

/// The markup of the element with `id` (up to its closing `</section>`).
pub fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = start + html[start..].find("</section>").unwrap();
    &html[start..end]
}

/// The table row (`<tr>…</tr>`) of `section` that contains `needle`.
pub fn table_row<'a>(section: &'a str, needle: &str) -> &'a str {
    section
        .split("<tr>")
        .find(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in {section}"))
}
