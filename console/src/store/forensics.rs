//! Read queries of the forensics views (the Defender page's timeline and observations,
//! `/api/v1/events`): keyset pages of one Defender's events by seq, and a bounded summary of
//! what its processes ran, listened on and connected to.
//!
//! Both stay bounded however many events a Defender has: a page is at most `limit` rows (the
//! callers cap it at 1000), and [`Store::observations`] decodes at most `window` events, in
//! chunks, keeping at most [`MAX_OBSERVED_KEYS`] distinct executables, ports and destinations.

use std::collections::HashMap;

use defender_proto::v1::event::Kind;
use defender_proto::v1::{Direction, Event};
use prost::Message;
use sqlx::QueryBuilder;

use super::events::EventRow;
use super::{Store, StoreError, StoredEvent};

/// The kind names stored beside each event (`events.kind`).
pub const EVENT_KINDS: [&str; 6] = [
    "process_start",
    "process_exit",
    "network_listen",
    "network_connection",
    "audit",
    "notice",
];

/// Kind groups the UI and the API accept besides the stored kinds.
pub const KIND_GROUPS: [(&str, &[&str]); 4] = [
    ("process", &["process_start", "process_exit"]),
    ("network", &["network_listen", "network_connection"]),
    ("audit", &["audit"]),
    ("notice", &["notice"]),
];

/// The stored kinds `name` stands for (a stored kind or a group), `None` when unknown.
pub fn expand_kind(name: &str) -> Option<&'static [&'static str]> {
    if let Some((_, kinds)) = KIND_GROUPS.iter().find(|(g, _)| *g == name) {
        return Some(kinds);
    }
    EVENT_KINDS
        .iter()
        .position(|k| *k == name)
        .map(|i| std::slice::from_ref(&EVENT_KINDS[i]))
}

/// Which events of one Defender a page holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Stored kind names; empty means every kind.
    pub kinds: Vec<&'static str>,
    /// Inclusive lower bound on the event's time, unix ms.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound on the event's time, unix ms.
    pub until_ms: Option<i64>,
    /// Only events with a smaller seq (the "Older" cursor).
    pub before_seq: Option<i64>,
    /// Only events with a larger seq (the "Newer" cursor).
    pub after_seq: Option<i64>,
    /// Most events on the page.
    pub limit: i64,
}

/// One page of events, newest first, with the cursors of its neighbours.
#[derive(Clone, Debug)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// `before` cursor of the next older page, when there are older matching events.
    pub older_before: Option<i64>,
    /// `after` cursor of the next newer page, when there are newer matching events.
    pub newer_after: Option<i64>,
}

const EVENT_COLUMNS: &str =
    "SELECT defender_id, seq, kind, time_ms, received_at, container, pid, body FROM events ";

/// `WHERE …` of `q` without its seq cursors.
fn push_filter<'a, DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, defender_id: &str, q: &EventQuery)
where
    String: super::Bind<'a, DB>,
    &'static str: super::Bind<'a, DB>,
    i64: super::Bind<'a, DB>,
{
    qb.push("WHERE defender_id = ")
        .push_bind(defender_id.to_owned());
    if !q.kinds.is_empty() {
        qb.push(" AND kind IN (");
        let mut list = qb.separated(", ");
        for k in &q.kinds {
            list.push_bind(*k);
        }
        qb.push(")");
    }
    if let Some(since) = q.since_ms {
        qb.push(" AND time_ms >= ").push_bind(since);
    }
    if let Some(until) = q.until_ms {
        qb.push(" AND time_ms < ").push_bind(until);
    }
}

impl Store {
    /// One page of a Defender's events matching `q`, newest first. Without cursors it is the
    /// newest page; with `after_seq` alone it is the page just above that seq.
    pub async fn event_page(
        &self,
        defender_id: &str,
        q: &EventQuery,
    ) -> Result<EventPage, StoreError> {
        with_pool!(&self.pool, |pool| {
            let limit = q.limit.max(1);
            let ascending = q.after_seq.is_some() && q.before_seq.is_none();
            let mut qb = QueryBuilder::<Db>::new(EVENT_COLUMNS);
            push_filter(&mut qb, defender_id, q);
            if let Some(before) = q.before_seq {
                qb.push(" AND seq < ").push_bind(before);
            }
            if let Some(after) = q.after_seq {
                qb.push(" AND seq > ").push_bind(after);
            }
            qb.push(if ascending {
                " ORDER BY seq ASC LIMIT "
            } else {
                " ORDER BY seq DESC LIMIT "
            })
            .push_bind(limit + 1);
            let rows: Vec<EventRow> = qb.build_query_as().fetch_all(pool).await?;
            let more = rows.len() as i64 > limit;
            let mut events: Vec<StoredEvent> = rows
                .into_iter()
                .take(limit as usize)
                .map(EventRow::into_stored)
                .collect();
            if ascending {
                events.reverse();
            }
            let newest = events.first().map(|e| e.seq);
            let oldest = events.last().map(|e| e.seq);

            // The direction of travel is known from the extra row; the other one is asked.
            let (older_before, newer_after) = if ascending {
                let older = match oldest {
                    Some(s) => self
                        .any_event(defender_id, q, None, Some(s))
                        .await?
                        .then_some(s),
                    None => {
                        let after = q.after_seq.unwrap_or(0);
                        let exists = self
                            .any_event(defender_id, q, None, Some(after.saturating_add(1)))
                            .await?;
                        exists.then_some(after.saturating_add(1))
                    }
                };
                (older, if more { newest } else { None })
            } else {
                let newer = match (newest, q.before_seq) {
                    (Some(s), _) => self
                        .any_event(defender_id, q, Some(s), None)
                        .await?
                        .then_some(s),
                    (None, Some(before)) => {
                        let exists = self
                            .any_event(defender_id, q, Some(before.saturating_sub(1)), None)
                            .await?;
                        exists.then_some(before.saturating_sub(1))
                    }
                    (None, None) => None,
                };
                (if more { oldest } else { None }, newer)
            };
            Ok(EventPage {
                events,
                older_before,
                newer_after,
            })
        })
    }

    /// Whether an event matching `q`'s filters (not its cursors) lies above `above` / below
    /// `below`.
    async fn any_event(
        &self,
        defender_id: &str,
        q: &EventQuery,
        above: Option<i64>,
        below: Option<i64>,
    ) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut qb = QueryBuilder::<Db>::new("SELECT EXISTS (SELECT 1 FROM events ");
            push_filter(&mut qb, defender_id, q);
            if let Some(s) = above {
                qb.push(" AND seq > ").push_bind(s);
            }
            if let Some(s) = below {
                qb.push(" AND seq < ").push_bind(s);
            }
            qb.push(")");
            Ok(qb.build_query_scalar::<bool>().fetch_one(pool).await?)
        })
    }

    /// Number of a Defender's events matching `q`'s filters (its cursors and limit ignored).
    /// Filters by kind only are answered from the maintained counts (`event_counts`); a time
    /// filter counts the events in its range.
    pub async fn count_matching_events(
        &self,
        defender_id: &str,
        q: &EventQuery,
    ) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            if q.since_ms.is_none() && q.until_ms.is_none() {
                let mut qb = QueryBuilder::<Db>::new(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM event_counts WHERE defender_id = ",
                );
                qb.push_bind(defender_id.to_owned());
                if !q.kinds.is_empty() {
                    qb.push(" AND kind IN (");
                    let mut list = qb.separated(", ");
                    for k in &q.kinds {
                        list.push_bind(*k);
                    }
                    qb.push(")");
                }
                return Ok(qb.build_query_scalar().fetch_one(pool).await?);
            }
            let mut qb = QueryBuilder::<Db>::new("SELECT COUNT(*) FROM events ");
            push_filter(&mut qb, defender_id, q);
            Ok(qb.build_query_scalar().fetch_one(pool).await?)
        })
    }

    /// What a Defender's newest `window` events show: executables started, sockets listened
    /// on, outbound destinations. Decodes in chunks; memory is bounded by
    /// [`MAX_OBSERVED_KEYS`] per table, not by the number of events.
    pub async fn observations(
        &self,
        defender_id: &str,
        window: i64,
    ) -> Result<Observations, StoreError> {
        with_pool!(&self.pool, |pool| {
            const CHUNK: i64 = 500;
            let window = window.max(1);
            // The newest `window` events (of any kind) lie above the (window+1)-th newest seq.
            let floor: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM events WHERE defender_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2",
            )
            .bind(defender_id)
            .bind(window)
            .fetch_optional(pool)
            .await?;
            let window_events: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE defender_id = $1 AND seq > $2",
            )
            .bind(defender_id)
            .bind(floor.unwrap_or(i64::MIN))
            .fetch_one(pool)
            .await?;
            let mut acc = Accumulator::default();
            let mut cursor = floor.unwrap_or(i64::MIN);
            loop {
                let rows: Vec<(i64, i64, String, Vec<u8>)> = sqlx::query_as(
                    "SELECT seq, time_ms, container, body FROM events \
                 WHERE defender_id = $1 AND seq > $2 \
                 AND kind IN ('process_start', 'network_listen', 'network_connection') \
                 ORDER BY seq ASC LIMIT $3",
                )
                .bind(defender_id)
                .bind(cursor)
                .bind(CHUNK)
                .fetch_all(pool)
                .await?;
                let Some(last) = rows.last().map(|r| r.0) else {
                    break;
                };
                cursor = last;
                let short = (rows.len() as i64) < CHUNK;
                for (seq, time_ms, container, body) in rows {
                    match Event::decode(body.as_slice()) {
                        Ok(e) => acc.add(&e, &container, time_ms),
                        Err(e) => {
                            tracing::warn!(defender_id, seq, "stored event does not decode: {e}");
                        }
                    }
                }
                if short {
                    break;
                }
            }
            Ok(acc.finish(window_events, floor.is_some()))
        })
    }
}

/// Most distinct executables, listening sockets and destinations one summary keeps.
pub const MAX_OBSERVED_KEYS: usize = 5000;

/// A Defender's observations over its newest events.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// Events the summary covers (all kinds).
    pub events_examined: i64,
    /// True when older events exist that the summary does not cover.
    pub truncated: bool,
    /// By number of starts, most first.
    pub executables: Vec<ExecutableSeen>,
    /// By port.
    pub listening: Vec<ListenSeen>,
    /// Outbound only, by number of connections, most first.
    pub destinations: Vec<DestinationSeen>,
    /// True when a table reached [`MAX_OBSERVED_KEYS`] and further keys were not counted.
    pub capped: bool,
}

/// One executable path and its starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutableSeen {
    /// Raw bytes of the path.
    pub exe: Vec<u8>,
    pub starts: u64,
    pub last_seen_ms: i64,
    /// Hex SHA-256 of the newest start that carried one ("" when none did).
    pub sha256: String,
    /// True when starts of this path carried different hashes (the file changed).
    pub sha256_varies: bool,
}

/// One listening socket as last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSeen {
    /// `Protocol` value.
    pub protocol: i32,
    pub addr: String,
    pub port: u32,
    pub pid: u32,
    pub container: String,
    /// Executable of the process with that pid (newest start of it before the report), when seen.
    pub exe: Option<Vec<u8>>,
    /// False once the socket was reported closed.
    pub open: bool,
    pub last_seen_ms: i64,
}

/// One outbound destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationSeen {
    /// `Protocol` value.
    pub protocol: i32,
    pub addr: String,
    pub port: u32,
    /// Connections reported opened (closing reports are not counted again).
    pub connections: u64,
    pub last_seen_ms: i64,
}

#[derive(Default)]
struct Accumulator {
    exes: Vec<ExecutableSeen>,
    exe_index: HashMap<Vec<u8>, usize>,
    /// (container, pid) → index into `exes` of its newest start.
    pids: HashMap<(String, u32), usize>,
    listens: Vec<ListenSeen>,
    listen_index: HashMap<(i32, String, u32), usize>,
    dests: Vec<DestinationSeen>,
    dest_index: HashMap<(i32, String, u32), usize>,
    capped: bool,
}

impl Accumulator {
    fn add(&mut self, e: &Event, container: &str, time_ms: i64) {
        match &e.kind {
            Some(Kind::ProcessStart(p)) => {
                let idx = match self.exe_index.get(&p.exe) {
                    Some(i) => Some(*i),
                    None if self.exes.len() < MAX_OBSERVED_KEYS => {
                        self.exes.push(ExecutableSeen {
                            exe: p.exe.clone(),
                            starts: 0,
                            last_seen_ms: time_ms,
                            sha256: String::new(),
                            sha256_varies: false,
                        });
                        self.exe_index.insert(p.exe.clone(), self.exes.len() - 1);
                        Some(self.exes.len() - 1)
                    }
                    None => {
                        self.capped = true;
                        None
                    }
                };
                let key = (container.to_owned(), p.pid);
                match idx {
                    Some(i) => {
                        let x = &mut self.exes[i];
                        x.starts += 1;
                        x.last_seen_ms = x.last_seen_ms.max(time_ms);
                        if !p.exe_sha256.is_empty() {
                            if !x.sha256.is_empty() && x.sha256 != p.exe_sha256 {
                                x.sha256_varies = true;
                            }
                            x.sha256.clone_from(&p.exe_sha256);
                        }
                        if self.pids.len() < MAX_OBSERVED_KEYS * 4 || self.pids.contains_key(&key) {
                            self.pids.insert(key, i);
                        }
                    }
                    None => {
                        self.pids.remove(&key);
                    }
                }
            }
            Some(Kind::NetworkListen(n)) => {
                let exe = self
                    .pids
                    .get(&(container.to_owned(), n.pid))
                    .map(|i| self.exes[*i].exe.clone());
                let key = (n.protocol, n.local_addr.clone(), n.local_port);
                match self.listen_index.get(&key) {
                    Some(i) => {
                        let l = &mut self.listens[*i];
                        l.open = !n.closed;
                        l.last_seen_ms = l.last_seen_ms.max(time_ms);
                        // A closing report keeps the process the opening one named.
                        if !n.closed || l.pid != n.pid {
                            l.pid = n.pid;
                            l.container = container.to_owned();
                            if exe.is_some() || !n.closed {
                                l.exe = exe;
                            }
                        }
                    }
                    None if self.listens.len() < MAX_OBSERVED_KEYS => {
                        self.listens.push(ListenSeen {
                            protocol: n.protocol,
                            addr: n.local_addr.clone(),
                            port: n.local_port,
                            pid: n.pid,
                            container: container.to_owned(),
                            exe,
                            open: !n.closed,
                            last_seen_ms: time_ms,
                        });
                        self.listen_index.insert(key, self.listens.len() - 1);
                    }
                    None => self.capped = true,
                }
            }
            Some(Kind::NetworkConnection(c))
                if Direction::try_from(c.direction) == Ok(Direction::Outbound) =>
            {
                let key = (c.protocol, c.remote_addr.clone(), c.remote_port);
                let opened = u64::from(!c.closed);
                match self.dest_index.get(&key) {
                    Some(i) => {
                        let d = &mut self.dests[*i];
                        d.connections += opened;
                        d.last_seen_ms = d.last_seen_ms.max(time_ms);
                    }
                    None if self.dests.len() < MAX_OBSERVED_KEYS => {
                        self.dests.push(DestinationSeen {
                            protocol: c.protocol,
                            addr: c.remote_addr.clone(),
                            port: c.remote_port,
                            connections: opened,
                            last_seen_ms: time_ms,
                        });
                        self.dest_index.insert(key, self.dests.len() - 1);
                    }
                    None => self.capped = true,
                }
            }
            _ => {}
        }
    }

    fn finish(mut self, events_examined: i64, truncated: bool) -> Observations {
        self.exes
            .sort_by(|a, b| b.starts.cmp(&a.starts).then_with(|| a.exe.cmp(&b.exe)));
        self.listens
            .sort_by(|a, b| (a.port, a.protocol, &a.addr).cmp(&(b.port, b.protocol, &b.addr)));
        self.dests.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then_with(|| (&a.addr, a.port, a.protocol).cmp(&(&b.addr, b.port, b.protocol)))
        });
        Observations {
            events_examined,
            truncated,
            executables: self.exes,
            listening: self.listens,
            destinations: self.dests,
            capped: self.capped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_proto::v1::{NetworkConnection, NetworkListen, ProcessStart, Protocol};

    fn start(pid: u32, exe: &str, sha: &str) -> Event {
        Event {
            kind: Some(Kind::ProcessStart(ProcessStart {
                pid,
                exe: exe.as_bytes().to_vec(),
                exe_sha256: sha.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn listen(pid: u32, port: u32, closed: bool) -> Event {
        Event {
            kind: Some(Kind::NetworkListen(NetworkListen {
                protocol: Protocol::Tcp as i32,
                local_addr: "0.0.0.0".into(),
                local_port: port,
                pid,
                closed,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn connect(addr: &str, port: u32, direction: Direction, closed: bool) -> Event {
        Event {
            kind: Some(Kind::NetworkConnection(NetworkConnection {
                protocol: Protocol::Tcp as i32,
                direction: direction as i32,
                remote_addr: addr.into(),
                remote_port: port,
                closed,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn kinds_expand_to_stored_names() {
        assert_eq!(
            expand_kind("network"),
            Some(&["network_listen", "network_connection"][..])
        );
        assert_eq!(expand_kind("audit"), Some(&["audit"][..]));
        assert_eq!(expand_kind("process_exit"), Some(&["process_exit"][..]));
        assert_eq!(expand_kind("bogus"), None);
        assert_eq!(expand_kind(""), None);
    }

    #[test]
    fn accumulator_counts_resolves_pids_and_tracks_state() {
        let mut acc = Accumulator::default();
        acc.add(&start(10, "/bin/app", "aa"), "web", 1);
        acc.add(&start(11, "/bin/sh", ""), "web", 2);
        acc.add(&start(12, "/bin/sh", ""), "web", 3);
        acc.add(&start(13, "/bin/app", "bb"), "web", 4);
        acc.add(&listen(10, 8080, false), "web", 5);
        acc.add(&listen(99, 9090, false), "web", 6);
        acc.add(&listen(99, 9090, true), "web", 7);
        // Same pid in another container is another process.
        acc.add(&listen(11, 7070, false), "other", 8);
        for (t, closed) in [(9, false), (10, true), (11, false)] {
            acc.add(
                &connect("198.51.100.7", 443, Direction::Outbound, closed),
                "web",
                t,
            );
        }
        acc.add(
            &connect("10.0.0.9", 5432, Direction::Outbound, false),
            "web",
            12,
        );
        acc.add(
            &connect("203.0.113.1", 22, Direction::Inbound, false),
            "web",
            13,
        );
        let o = acc.finish(13, false);
        assert!(!o.capped);
        let exes: Vec<_> = o
            .executables
            .iter()
            .map(|x| {
                (
                    String::from_utf8_lossy(&x.exe).into_owned(),
                    x.starts,
                    x.last_seen_ms,
                )
            })
            .collect();
        assert_eq!(
            exes,
            vec![("/bin/app".into(), 2, 4), ("/bin/sh".into(), 2, 3)]
        );
        assert_eq!(o.executables[0].sha256, "bb");
        assert!(o.executables[0].sha256_varies);
        assert!(!o.executables[1].sha256_varies);
        let ports: Vec<_> = o
            .listening
            .iter()
            .map(|l| (l.port, l.open, l.exe.clone()))
            .collect();
        assert_eq!(
            ports,
            vec![
                (7070, true, None),
                (8080, true, Some(b"/bin/app".to_vec())),
                (9090, false, None)
            ]
        );
        let dests: Vec<_> = o
            .destinations
            .iter()
            .map(|d| (d.addr.as_str(), d.port, d.connections, d.last_seen_ms))
            .collect();
        assert_eq!(
            dests,
            vec![("198.51.100.7", 443, 2, 11), ("10.0.0.9", 5432, 1, 12)]
        );
    }

    #[tokio::test]
    async fn observations_cover_only_the_newest_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        // A Defender row for the foreign key.
        with_pool!(store.pool(), |p| {
            sqlx::query(
                "INSERT INTO defenders (id, enrolled_at, cert_not_after) VALUES ('d1', 0, 0)",
            )
            .execute(p)
            .await
            .unwrap();
        });
        let events: Vec<Event> = (1..=30u64)
            .map(|seq| {
                let exe = if seq <= 10 { "/old" } else { "/new" };
                Event {
                    seq,
                    time_ms: seq as i64,
                    ..start(seq as u32, exe, "")
                }
            })
            .collect();
        super::super::EventWriter::spawn(store.clone())
            .write("d1", events)
            .await
            .unwrap();
        let o = store.observations("d1", 20).await.unwrap();
        assert!(o.truncated);
        assert_eq!(o.events_examined, 20);
        assert_eq!(o.executables.len(), 1);
        assert_eq!(o.executables[0].exe, b"/new");
        assert_eq!(o.executables[0].starts, 20);
        let all = store.observations("d1", 30).await.unwrap();
        assert!(!all.truncated);
        assert_eq!(all.events_examined, 30);
        assert_eq!(all.executables.len(), 2);
    }
}
