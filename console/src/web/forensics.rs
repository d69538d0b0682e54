//! The forensics part of a Defender's page, and the parameters it shares with
//! `/api/v1/events`: the filterable, keyset-paginated, process-tree-aware timeline and the
//! observations summary beside it.
//!
//! Event fields are attacker-controlled bytes. They reach the markup only as text (maud escapes
//! it) after [`display`]/[`display_bytes`] (lossy UTF-8, deceptive characters made visible).

use std::collections::HashMap;

use defender_proto::v1::event::Kind;
use defender_proto::v1::{ProcessStart, Protocol};
use maud::{Markup, PreEscaped, html};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::render::{
    MAX_SUMMARY_CHARS, argv_line, display, display_bytes, event_summary, exit_status, form_encode,
    protocol, rfc3339, rfc3339_secs, sha_short, socket, thousands, truncate,
};
use crate::store::StoredEvent;
use crate::store::forensics::{EventPage, EventQuery, KIND_GROUPS, Observations, expand_kind};

/// Events on one page of the timeline.
pub const PAGE_SIZE: i64 = 100;
/// The observations cover this many of a Defender's newest events.
pub const OBSERVATION_WINDOW: i64 = 50_000;
/// Rows each observations table shows on the page (the API returns them all).
const OBSERVATION_ROWS: usize = 100;
/// Longest argv line shown in the timeline (characters); the API carries the whole argv.
const ARGV_CHARS: usize = 2000;
/// Deepest indentation the stylesheet has; deeper processes are marked by their depth.
const MAX_INDENT: usize = 8;

/// Styles of the forensics part (constant, no data; under the page's CSP nonce).
pub const CSS: &str = r#"
.forensics { display:grid; grid-template-columns:minmax(0,1fr) minmax(300px,420px); gap:20px; align-items:start; }
@media (max-width: 1100px) { .forensics { grid-template-columns:minmax(0,1fr); } }
form.filters { display:flex; flex-wrap:wrap; gap:10px 18px; align-items:end; background:#fff; border:1px solid var(--line); padding:10px 14px; margin-bottom:10px; }
form.filters fieldset { border:0; margin:0; padding:0; display:flex; gap:10px; align-items:baseline; }
form.filters legend { float:left; margin-right:6px; font-weight:600; color:#344054; }
form.filters label { display:grid; gap:2px; font-weight:600; color:#344054; }
form.filters label.choice { display:flex; gap:4px; font-weight:normal; }
form.filters input[type=datetime-local] { padding:4px 6px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; }
form.filters button { padding:5px 14px; border:0; border-radius:6px; background:var(--accent); color:#fff; font:inherit; cursor:pointer; }
form.filters .hint { flex-basis:100%; margin:0; }
nav.pager { display:flex; gap:16px; margin:8px 0; }
table.timeline td.detail { font-size:12.5px; }
table.timeline code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; word-break:break-all; }
table.timeline .argv { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; word-break:break-all; }
table.timeline .facts { color:var(--muted); display:flex; flex-wrap:wrap; gap:2px 12px; }
table.timeline .branch { color:var(--muted); }
table.timeline .d1 { padding-left:18px; } table.timeline .d2 { padding-left:36px; }
table.timeline .d3 { padding-left:54px; } table.timeline .d4 { padding-left:72px; }
table.timeline .d5 { padding-left:90px; } table.timeline .d6 { padding-left:108px; }
table.timeline .d7 { padding-left:126px; } table.timeline .d8 { padding-left:144px; }
aside.observations h3 { font-size:14px; margin:16px 0 6px; }
aside.observations table.grid td, aside.observations table.grid th { padding:5px 8px; font-size:12.5px; }
.dropped { color:var(--err); font-weight:600; white-space:nowrap; }
.flag { color:var(--err); }
"#;

// ---------------------------------------------------------------------------------------------
// Parameters

/// The query string as decoded pairs, repeated keys kept (`kind=process&kind=network`).
/// `+` is a space, `%XX` a byte; malformed escapes are kept literally.
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A time parameter as unix milliseconds. Accepted: unix milliseconds (`1700000000000`),
/// RFC 3339 (`2023-11-14T22:13:20Z`, any offset), and the value of an HTML `datetime-local`
/// input (`2023-11-14T22:13`, `…:20`, `…:20.5`), which has no zone and is taken as **UTC**.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(ms_of(t));
    }
    parse_datetime_local(s).ok_or_else(|| {
        format!(
            "{s:?} is not a time: use unix milliseconds, RFC 3339, or YYYY-MM-DDTHH:MM[:SS] (UTC)"
        )
    })
}

fn ms_of(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

fn parse_datetime_local(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (year, month, day) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let num = |v: &str| -> Option<u32> {
        v.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| v.parse().ok())
            .flatten()
    };
    let date = Date::from_calendar_date(
        i32::try_from(num(year)?).ok()?,
        Month::try_from(u8::try_from(num(month)?).ok()?).ok()?,
        u8::try_from(num(day)?).ok()?,
    )
    .ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time, None),
    };
    let mut t = hms.split(':');
    let (h, m) = (t.next()?, t.next()?);
    let sec = t.next();
    if t.next().is_some() || h.len() != 2 || m.len() != 2 || sec.is_some_and(|s| s.len() != 2) {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) if sec.is_some() && (1..=9).contains(&f.len()) => {
            num(f)? * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    let time = Time::from_hms_nano(
        u8::try_from(num(h)?).ok()?,
        u8::try_from(num(m)?).ok()?,
        u8::try_from(sec.map_or(Some(0), num)?).ok()?,
        nanos,
    )
    .ok()?;
    Some(ms_of(PrimitiveDateTime::new(date, time).assume_utc()))
}

/// Unix milliseconds as a `datetime-local` value in UTC (`2023-11-14T22:13:20`, with `.123`
/// when there are milliseconds).
pub fn datetime_local(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.millisecond() != 0 {
        s.push_str(&format!(".{:03}", t.millisecond()));
    }
    s
}

/// Kind parameters (each a stored kind or a group, comma-separated lists allowed) as the
/// accepted names (deduplicated, for links) and the stored kinds they stand for.
pub fn parse_kinds<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(Vec<String>, Vec<&'static str>), String> {
    let mut names = Vec::new();
    let mut kinds: Vec<&'static str> = Vec::new();
    for name in values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        let Some(expanded) = expand_kind(name) else {
            return Err(format!(
                "kind must be one of process, network, audit, notice, {}",
                crate::store::forensics::EVENT_KINDS.join(", ")
            ));
        };
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        for k in expanded {
            if !kinds.contains(k) {
                kinds.push(k);
            }
        }
    }
    Ok((names, kinds))
}

fn parse_seq(name: &str, v: &str) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| format!("{name} must be an event seq (an integer)"))
}

/// The timeline's parameters: `kind` (repeatable), `since`, `until`, `before`, `after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineParams {
    /// Kind names as given (validated, deduplicated).
    pub kind_names: Vec<String>,
    /// Stored kinds they stand for; empty: every kind.
    pub kinds: Vec<&'static str>,
    /// `since`, as given and as unix ms (inclusive).
    pub since: Option<(String, i64)>,
    /// `until`, as given and as unix ms (exclusive).
    pub until: Option<(String, i64)>,
    pub before: Option<i64>,
    pub after: Option<i64>,
}

impl TimelineParams {
    /// Parses the page's query pairs; empty values count as absent (an empty form field).
    /// Unknown keys are ignored.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut p = Self::default();
        let (names, kinds) = parse_kinds(
            pairs
                .iter()
                .filter(|(k, _)| k == "kind")
                .map(|(_, v)| v.as_str()),
        )?;
        p.kind_names = names;
        p.kinds = kinds;
        for (k, v) in pairs {
            if v.trim().is_empty() {
                continue;
            }
            match k.as_str() {
                "since" => {
                    p.since = Some((v.clone(), parse_time(v).map_err(|e| format!("since: {e}"))?))
                }
                "until" => {
                    p.until = Some((v.clone(), parse_time(v).map_err(|e| format!("until: {e}"))?))
                }
                "before" => p.before = Some(parse_seq("before", v)?),
                "after" => p.after = Some(parse_seq("after", v)?),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The store query of one page.
    pub fn query(&self, limit: i64) -> EventQuery {
        EventQuery {
            kinds: self.kinds.clone(),
            since_ms: self.since.as_ref().map(|s| s.1),
            until_ms: self.until.as_ref().map(|u| u.1),
            before_seq: self.before,
            after_seq: self.after,
            limit,
        }
    }

    /// Whether any filter (not a cursor) is set.
    pub fn is_filtered(&self) -> bool {
        !self.kinds.is_empty() || self.since.is_some() || self.until.is_some()
    }

    /// The filters (no cursor) as a query string, without `?`.
    fn filter_query(&self) -> String {
        let mut parts: Vec<String> = self
            .kind_names
            .iter()
            .map(|k| format!("kind={}", form_encode(k)))
            .collect();
        if let Some((raw, _)) = &self.since {
            parts.push(format!("since={}", form_encode(raw)));
        }
        if let Some((raw, _)) = &self.until {
            parts.push(format!("until={}", form_encode(raw)));
        }
        parts.join("&")
    }

    /// Link to the page of these filters with one cursor (`before`/`after`) or none.
    fn href(&self, base: &str, cursor: Option<(&str, i64)>) -> String {
        let mut q = self.filter_query();
        if let Some((name, seq)) = cursor {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&format!("{name}={seq}"));
        }
        if q.is_empty() {
            format!("{base}#timeline")
        } else {
            format!("{base}?{q}#timeline")
        }
    }

    /// Whether the `group` checkbox is ticked: the group, or all of its kinds, selected.
    fn group_checked(&self, group: &str) -> bool {
        KIND_GROUPS
            .iter()
            .find(|(g, _)| *g == group)
            .is_some_and(|(_, kinds)| kinds.iter().all(|k| self.kinds.contains(k)))
    }
}

// ---------------------------------------------------------------------------------------------
// Timeline

/// Display order of a page (newest first) made tree-aware: a process start whose parent's start
/// is on the same page (same container, `pid == ppid`, the newest such start before it) is
/// listed right under its parent, one level deeper, siblings oldest first. Everything else keeps
/// its place. Returns `(index into events, depth)` for every event exactly once.
pub fn tree_order(events: &[StoredEvent]) -> Vec<(usize, usize)> {
    let starts = start_index(events);
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut is_child = vec![false; events.len()];
    for (i, e) in events.iter().enumerate() {
        if let Some(Kind::ProcessStart(p)) = &e.event.kind
            && let Some(parent) = latest_start(&starts, &e.container, p.ppid, e.seq)
        {
            children.entry(parent).or_default().push(i);
            is_child[i] = true;
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|i| events[*i].seq);
    }
    let mut order = Vec::with_capacity(events.len());
    for root in (0..events.len()).filter(|i| !is_child[*i]) {
        let mut stack = vec![(root, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            order.push((i, depth));
            if let Some(kids) = children.get(&i) {
                stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
            }
        }
    }
    order
}

type StartIndex<'a> = HashMap<(&'a str, u32), Vec<(i64, usize)>>;

/// Process starts of a page by (container, pid), each list by seq ascending.
fn start_index(events: &[StoredEvent]) -> StartIndex<'_> {
    let mut starts: StartIndex<'_> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(Kind::ProcessStart(p)) = &e.event.kind {
            starts
                .entry((e.container.as_str(), p.pid))
                .or_default()
                .push((e.seq, i));
        }
    }
    for list in starts.values_mut() {
        list.sort_unstable();
    }
    starts
}

/// The newest start of `pid` in `container` before `seq`.
fn latest_start(starts: &StartIndex<'_>, container: &str, pid: u32, seq: i64) -> Option<usize> {
    if pid == 0 {
        return None;
    }
    let list = starts.get(&(container, pid))?;
    let at = list.partition_point(|(s, _)| *s < seq);
    at.checked_sub(1).map(|j| list[j].1)
}

fn user_text(p: &ProcessStart) -> String {
    if p.user.is_empty() {
        format!("uid {}", p.uid)
    } else {
        format!("{} (uid {})", display(&p.user), p.uid)
    }
}

fn process_start_detail(p: &ProcessStart) -> Markup {
    html! {
        code.exe { (display_bytes(&p.exe)) }
        div.argv {
            (truncate(argv_line(&p.argv), ARGV_CHARS))
            @if p.argv_truncated { " " span.flag { "[argv truncated by the Defender]" } }
        }
        div.facts {
            span { "ppid " (p.ppid) }
            span { "user " (user_text(p)) }
            span { "cwd " code { (display_bytes(&p.cwd)) } }
            @if !p.exe_sha256.is_empty() {
                span title=(display(&p.exe_sha256)) { "sha256 " code { (sha_short(&p.exe_sha256)) } }
            }
        }
    }
}

fn detail(e: &StoredEvent, events: &[StoredEvent], starts: &StartIndex<'_>) -> Markup {
    match &e.event.kind {
        Some(Kind::ProcessStart(p)) => process_start_detail(p),
        Some(Kind::ProcessExit(x)) => {
            let exe =
                latest_start(starts, &e.container, x.pid, e.seq).and_then(|i| {
                    match &events[i].event.kind {
                        Some(Kind::ProcessStart(p)) => Some(display_bytes(&p.exe)),
                        _ => None,
                    }
                });
            html! {
                span.exit { (exit_status(x)) }
                @if let Some(exe) = exe { " · " code { (exe) } }
            }
        }
        Some(Kind::NetworkListen(n)) => html! {
            (event_summary(&e.event)) " · pid " (n.pid)
            @if n.closed { " · closed" }
        },
        Some(Kind::NetworkConnection(c)) => html! {
            (event_summary(&e.event)) " · pid " (c.pid)
        },
        _ => html! { (truncate(event_summary(&e.event), MAX_SUMMARY_CHARS)) },
    }
}

/// The timeline when its parameters are invalid: the form, with the error, and no events.
pub fn timeline_error(base: &str, params: &TimelineParams, error: &str) -> Markup {
    html! {
        h2 #timeline { "Forensics timeline" }
        (filter_form(base, params, Some(error)))
    }
}

/// The filter form of the timeline.
fn filter_form(base: &str, params: &TimelineParams, error: Option<&str>) -> Markup {
    html! {
        form.filters method="get" action=(base) {
            fieldset {
                legend { "Kinds" }
                @for (group, label) in [("process", "Process"), ("network", "Network"), ("audit", "Audit"), ("notice", "Notice")] {
                    label.choice {
                        input type="checkbox" name="kind" value=(group) checked[params.group_checked(group)];
                        (label)
                    }
                }
            }
            label {
                "Since (UTC)"
                input type="datetime-local" name="since" step="1"
                    value=(params.since.as_ref().map(|s| datetime_local(s.1)).unwrap_or_default());
            }
            label {
                "Until (UTC)"
                input type="datetime-local" name="until" step="1"
                    value=(params.until.as_ref().map(|u| datetime_local(u.1)).unwrap_or_default());
            }
            button type="submit" { "Apply" }
            @if params.is_filtered() || params.before.is_some() || params.after.is_some() {
                a href=(format!("{base}#timeline")) { "Reset" }
            }
            p.hint {
                "Times are interpreted and shown as UTC, not in your browser's time zone; since is inclusive, until exclusive. "
                "No kind ticked shows every kind."
            }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
        }
    }
}

fn pager(base: &str, params: &TimelineParams, page: &EventPage) -> Markup {
    let on_newest = params.before.is_none() && params.after.is_none();
    html! {
        nav.pager aria-label="Timeline pages" {
            @if !on_newest {
                a data-page="newest" href=(params.href(base, None)) { "Newest" }
            }
            @if let Some(after) = page.newer_after {
                a rel="prev" data-page="newer" href=(params.href(base, Some(("after", after)))) { "← Newer" }
            } @else {
                span.muted { "← Newer" }
            }
            @if let Some(before) = page.older_before {
                a rel="next" data-page="older" href=(params.href(base, Some(("before", before)))) { "Older →" }
            } @else {
                span.muted { "Older →" }
            }
        }
    }
}

/// Class of a Details cell: indented by the process's depth in the tree.
fn detail_class(depth: usize) -> String {
    if depth == 0 {
        "detail".to_owned()
    } else {
        format!("detail tree d{}", depth.min(MAX_INDENT))
    }
}

/// The timeline: heading, filters, pager, tree-aware table, pager.
pub fn timeline(base: &str, params: &TimelineParams, page: &EventPage, matching: i64) -> Markup {
    let events = &page.events;
    let starts = start_index(events);
    let order = tree_order(events);
    html! {
        h2 #timeline {
            "Forensics timeline "
            span.muted { "(" (events.len()) " shown of " (thousands(matching)) ")" }
        }
        (filter_form(base, params, None))
        (pager(base, params, page))
        @if events.is_empty() {
            p.muted {
                @if params.is_filtered() { "No events match these filters." } @else { "No events stored yet." }
            }
        } @else {
            table.grid.timeline {
                thead {
                    tr { th { "Seq" } th { "Time (UTC)" } th { "Kind" } th { "Container" } th { "PID" } th { "Details" } }
                }
                tbody {
                    @for (i, depth) in &order {
                        @let e = &events[*i];
                        tr data-seq=(e.seq) data-depth=(depth) {
                            td.num { (e.seq) }
                            td { time datetime=(rfc3339(e.time_ms)) { (rfc3339_secs(e.time_ms)) } }
                            td { (e.kind) }
                            td { (display(&e.container)) }
                            td.num { @if let Some(pid) = e.pid { (pid) } }
                            td class=(detail_class(*depth)) {
                                @if *depth > 0 {
                                    span.branch title=(format!("child process, depth {depth}")) { "└ " }
                                }
                                (detail(e, events, &starts))
                            }
                        }
                    }
                }
            }
            (pager(base, params, page))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Observations

fn proto_name(p: i32) -> &'static str {
    match Protocol::try_from(p) {
        Ok(Protocol::Tcp | Protocol::Udp) => protocol(p),
        _ => "?",
    }
}

/// The observations aside.
pub fn observations(o: &Observations, total_events: i64) -> Markup {
    let more = |n: usize| n.saturating_sub(OBSERVATION_ROWS);
    html! {
        aside.observations {
            h2 { "Observations" }
            p.hint #observations-coverage {
                @if o.truncated {
                    strong { "Truncated: " }
                    "computed over the newest " (thousands(o.events_examined)) " of "
                    (thousands(total_events)) " stored events; older events are not included."
                } @else {
                    "Computed over all " (thousands(o.events_examined)) " stored events."
                }
                @if o.capped {
                    " Some tables reached their limit of distinct entries; further entries were not counted."
                }
            }
            section #obs-executables {
                h3 { "Executables " span.muted { "(" (o.executables.len()) ")" } }
                @if o.executables.is_empty() {
                    p.muted { "No process starts seen." }
                } @else {
                    table.grid {
                        thead { tr { th { "Executable" } th { "Starts" } th { "Last seen (UTC)" } th { "SHA-256" } } }
                        tbody {
                            @for x in o.executables.iter().take(OBSERVATION_ROWS) {
                                tr {
                                    td.wrap { (display_bytes(&x.exe)) }
                                    td.num { (thousands(i64::try_from(x.starts).unwrap_or(i64::MAX))) }
                                    td { (rfc3339_secs(x.last_seen_ms)) }
                                    td.wrap title=(display(&x.sha256)) {
                                        (sha_short(&x.sha256))
                                        @if x.sha256_varies { " " span.flag { "(changed)" } }
                                    }
                                }
                            }
                        }
                    }
                    @if more(o.executables.len()) > 0 {
                        p.hint { (more(o.executables.len())) " more in " code { "GET /api/v1/defenders/{id}/observations" } "." }
                    }
                }
            }
            section #obs-listening {
                h3 { "Listening ports " span.muted { "(" (o.listening.len()) ")" } }
                @if o.listening.is_empty() {
                    p.muted { "No listening sockets seen." }
                } @else {
                    table.grid {
                        thead { tr { th { "Proto" } th { "Port" } th { "Address" } th { "Process" } th { "State" } } }
                        tbody {
                            @for l in o.listening.iter().take(OBSERVATION_ROWS) {
                                tr {
                                    td { (proto_name(l.protocol)) }
                                    td.num { (l.port) }
                                    td.wrap { (display(&l.addr)) }
                                    td.wrap {
                                        @if let Some(exe) = &l.exe { (display_bytes(exe)) " " }
                                        span.muted { "pid " (l.pid) }
                                    }
                                    td { @if l.open { "listening" } @else { "closed" } }
                                }
                            }
                        }
                    }
                    @if more(o.listening.len()) > 0 {
                        p.hint { (more(o.listening.len())) " more in " code { "GET /api/v1/defenders/{id}/observations" } "." }
                    }
                }
            }
            section #obs-destinations {
                h3 { "Outbound destinations " span.muted { "(" (o.destinations.len()) ")" } }
                @if o.destinations.is_empty() {
                    p.muted { "No outbound connections seen." }
                } @else {
                    table.grid {
                        thead { tr { th { "Destination" } th { "Proto" } th { "Connections" } th { "Last seen (UTC)" } } }
                        tbody {
                            @for d in o.destinations.iter().take(OBSERVATION_ROWS) {
                                tr {
                                    td.wrap { (socket(&d.addr, d.port)) }
                                    td { (proto_name(d.protocol)) }
                                    td.num { (thousands(i64::try_from(d.connections).unwrap_or(i64::MAX))) }
                                    td { (rfc3339_secs(d.last_seen_ms)) }
                                }
                            }
                        }
                    }
                    @if more(o.destinations.len()) > 0 {
                        p.hint { (more(o.destinations.len())) " more in " code { "GET /api/v1/defenders/{id}/observations" } "." }
                    }
                }
            }
        }
    }
}

/// The page's extra stylesheet element.
pub fn style(nonce: &str) -> Markup {
    html! { style nonce=(nonce) { (PreEscaped(CSS)) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_proto::v1::{Event, ProcessExit};

    fn stored(seq: i64, container: &str, kind: Kind) -> StoredEvent {
        StoredEvent {
            defender_id: "d".into(),
            seq,
            kind: String::new(),
            time_ms: seq,
            received_at: seq,
            container: container.into(),
            pid: None,
            event: Event {
                seq: seq as u64,
                time_ms: seq,
                container: container.into(),
                kind: Some(kind),
            },
        }
    }

    fn start(seq: i64, pid: u32, ppid: u32) -> StoredEvent {
        stored(
            seq,
            "app",
            Kind::ProcessStart(ProcessStart {
                pid,
                ppid,
                ..Default::default()
            }),
        )
    }

    fn seqs_and_depths(events: &[StoredEvent]) -> Vec<(i64, usize)> {
        tree_order(events)
            .into_iter()
            .map(|(i, d)| (events[i].seq, d))
            .collect()
    }

    #[test]
    fn children_follow_their_parent_indented() {
        // Newest first, as pages are.
        let events = vec![
            stored(
                7,
                "app",
                Kind::ProcessExit(ProcessExit {
                    pid: 11,
                    ..Default::default()
                }),
            ),
            start(6, 12, 10),
            start(5, 99, 1),
            start(4, 13, 11),
            start(3, 11, 10),
            start(2, 10, 1),
        ];
        assert_eq!(
            seqs_and_depths(&events),
            vec![(7, 0), (5, 0), (2, 0), (3, 1), (4, 2), (6, 1)]
        );
    }

    #[test]
    fn parents_are_matched_by_container_and_latest_start() {
        let mut other = start(3, 20, 10);
        other.container = "sidecar".into();
        let events = vec![
            start(5, 21, 10), // pid 10 restarted at seq 4: child of that one
            start(4, 10, 1),
            other, // another container's pid 10 is not its parent
            start(1, 10, 1),
        ];
        assert_eq!(
            seqs_and_depths(&events),
            vec![(4, 0), (5, 1), (3, 0), (1, 0)]
        );
    }

    #[test]
    fn every_event_is_listed_once() {
        let events: Vec<StoredEvent> = (1..=50)
            .rev()
            .map(|s| start(s, s as u32, (s / 2) as u32))
            .collect();
        let mut seen: Vec<i64> = seqs_and_depths(&events).iter().map(|x| x.0).collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn times_parse_in_three_forms_as_utc() {
        let t = 1_700_000_000_000;
        assert_eq!(parse_time("1700000000000"), Ok(t));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(t));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Ok(t));
        assert_eq!(parse_time("2023-11-14T22:13:20"), Ok(t));
        assert_eq!(parse_time("2023-11-14T22:13"), Ok(t - 20_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.5"), Ok(t + 500));
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00",
            "2023-11-14",
            "2023-11-14T22",
            "2023-11-14T22:13.5",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
        assert_eq!(datetime_local(t), "2023-11-14T22:13:20");
        assert_eq!(datetime_local(t + 5), "2023-11-14T22:13:20.005");
        assert_eq!(parse_time(&datetime_local(t + 5)), Ok(t + 5));
    }

    #[test]
    fn query_strings_round_trip() {
        let pairs = query_pairs("kind=process&kind=network&since=2023-11-14T22%3A13&x=%zz+y");
        assert_eq!(
            pairs,
            vec![
                ("kind".into(), "process".into()),
                ("kind".into(), "network".into()),
                ("since".into(), "2023-11-14T22:13".into()),
                ("x".into(), "%zz y".into()),
            ]
        );
        let p = TimelineParams::parse(&pairs).unwrap();
        assert_eq!(
            p.kinds,
            vec![
                "process_start",
                "process_exit",
                "network_listen",
                "network_connection"
            ]
        );
        assert!(p.group_checked("process") && !p.group_checked("audit"));
        assert_eq!(
            p.href("/d/x", Some(("before", 7))),
            "/d/x?kind=process&kind=network&since=2023-11-14T22%3A13&before=7#timeline"
        );
        assert!(TimelineParams::parse(&query_pairs("kind=bogus")).is_err());
        assert!(TimelineParams::parse(&query_pairs("before=x")).is_err());
        assert!(
            TimelineParams::parse(&query_pairs("since=&until=&kind=")).unwrap()
                == TimelineParams::default()
        );
    }
}
