//! Network observation: listening sockets and TCP/UDP connections of the observed processes,
//! from the kernel's socket tables, attributed to a pid through socket inodes. Each socket is
//! reported once when first seen and once when gone, never on every poll.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use defender_proto::v1::{Direction, Event, NetworkConnection, NetworkListen, Protocol, event};

use super::sockets::{self, Proto, SocketEntry};

/// TCP states in which a connection exists and is owned by a socket (not TIME_WAIT/CLOSE):
/// ESTABLISHED, SYN_SENT (an attempt that may never complete is still an attempt), FIN_WAIT1/2,
/// CLOSE_WAIT, LAST_ACK, CLOSING.
const LIVE_TCP_STATES: [u8; 7] = [0x01, 0x02, 0x04, 0x05, 0x08, 0x09, 0x0B];

/// Each listening *socket* is its own key: a second SO_REUSEPORT listener on the same address is
/// another socket (another inode), reported on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ListenKey {
    proto: Proto,
    local: SocketAddr,
    inode: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    proto: Proto,
    local: SocketAddr,
    remote: SocketAddr,
}

#[derive(Clone, Debug)]
struct Seen {
    pid: u32,
    inbound: bool,
    /// Every observed process holding the socket (forked workers share listeners).
    pids: Vec<u32>,
}

/// Tracks the sockets of a set of pids between polls.
pub struct NetWatcher {
    proc_root: PathBuf,
    proc_net: PathBuf,
    container: String,
    listens: HashMap<ListenKey, Seen>,
    conns: HashMap<ConnKey, Seen>,
    /// Socket inode → observed pids holding it (sorted), for inodes of observed processes.
    owners: HashMap<u64, Vec<u32>>,
    /// Ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`): an unconnected UDP
    /// socket on such a port is a client that sent with `sendto()` (the kernel bound it), not a
    /// server.
    ephemeral: (u16, u16),
    /// Inodes looked for and not owned by an observed process (other containers, the Defender).
    foreign: HashSet<u64>,
    /// Directory scans of /proc/<pid>/fd done so far (for cost figures).
    fd_scans: u64,
    /// The pids whose descriptors the last scan covered.
    scanned: HashSet<u32>,
    /// Exact capture reports listens and outbound connections itself: only accepted (inbound)
    /// connections are reported from the tables.
    inbound_only: bool,
}

impl NetWatcher {
    /// Watches the tables in `proc_net` (normally `/proc/net`), resolving owners under `proc_root`.
    pub fn new(
        proc_root: impl Into<PathBuf>,
        proc_net: impl Into<PathBuf>,
        container: String,
    ) -> Self {
        Self {
            proc_root: proc_root.into(),
            proc_net: proc_net.into(),
            container,
            listens: HashMap::new(),
            conns: HashMap::new(),
            owners: HashMap::new(),
            ephemeral: read_ephemeral_range(),
            foreign: HashSet::new(),
            fd_scans: 0,
            scanned: HashSet::new(),
            inbound_only: false,
        }
    }

    /// Reports only accepted (inbound) connections (exact capture reports the rest).
    pub fn set_inbound_only(&mut self, inbound_only: bool) {
        self.inbound_only = inbound_only;
    }

    /// How many times the fd tables of observed processes were scanned.
    pub fn fd_scans(&self) -> u64 {
        self.fd_scans
    }

    /// One poll over the current tables: events for sockets of `pids` that appeared or went away.
    pub fn poll(&mut self, pids: &HashSet<u32>, now_ms: i64) -> Vec<Event> {
        let entries = sockets::read_all(&self.proc_net);
        self.poll_entries(&entries, pids, now_ms)
    }

    fn poll_entries(
        &mut self,
        entries: &[SocketEntry],
        pids: &HashSet<u32>,
        now_ms: i64,
    ) -> Vec<Event> {
        let live_inodes: HashSet<u64> = entries
            .iter()
            .map(|e| e.inode)
            .filter(|i| *i != 0)
            .collect();
        self.owners.retain(|inode, holders| {
            holders.retain(|p| pids.contains(p));
            live_inodes.contains(inode) && !holders.is_empty()
        });
        self.foreign.retain(|inode| live_inodes.contains(inode));
        let unknown = live_inodes
            .iter()
            .any(|i| !self.owners.contains_key(i) && !self.foreign.contains(i));
        // New processes may hold known sockets (forked workers): rescan when the set changed.
        let new_pids = pids.iter().any(|p| !self.scanned.contains(p));
        if unknown || new_pids {
            self.scan_fds(pids, &live_inodes);
            self.scanned = pids.clone();
        }

        let mut events = Vec::new();
        let mut listens_now: HashMap<ListenKey, Seen> = HashMap::new();
        let (lo, hi) = self.ephemeral;
        for e in entries.iter().filter(|e| e.is_listening()) {
            // An unconnected UDP socket on an ephemeral port was bound by a send (a DNS
            // resolver's `sendto()`), not by a server's `bind()`.
            if e.proto == Proto::Udp && (lo..=hi).contains(&e.local.port()) {
                continue;
            }
            if let Some(holders) = self.owners.get(&e.inode) {
                let key = ListenKey {
                    proto: e.proto,
                    local: e.local,
                    inode: e.inode,
                };
                listens_now.insert(
                    key,
                    Seen {
                        pid: holders[0],
                        inbound: false,
                        pids: holders.clone(),
                    },
                );
            }
        }
        let listening_ports: HashSet<(Proto, u16)> = listens_now
            .keys()
            .map(|k| (k.proto, k.local.port()))
            .collect();
        let mut conns_now: HashMap<ConnKey, Seen> = HashMap::new();
        for e in entries.iter().filter(|e| is_live_connection(e)) {
            if let Some(holders) = self.owners.get(&e.inode) {
                let key = ConnKey {
                    proto: e.proto,
                    local: e.local,
                    remote: e.remote,
                };
                let inbound = listening_ports.contains(&(e.proto, e.local.port()));
                conns_now.insert(
                    key,
                    Seen {
                        pid: holders[0],
                        inbound,
                        pids: Vec::new(),
                    },
                );
            }
        }

        let report_all = !self.inbound_only;
        for (key, seen) in &listens_now {
            match self.listens.get(key) {
                None if report_all => events.push(self.listen_event(key, seen, false, now_ms)),
                // Another worker now holds the listener too: say so (prevent kills them all).
                Some(old)
                    if report_all && old.pids != seen.pids && seen.pids.len() > old.pids.len() =>
                {
                    events.push(self.listen_event(key, seen, false, now_ms));
                }
                _ => {}
            }
        }
        for (key, seen) in &self.listens {
            if report_all && !listens_now.contains_key(key) {
                events.push(self.listen_event(key, seen, true, now_ms));
            }
        }
        for (key, seen) in &conns_now {
            if !self.conns.contains_key(key) && (report_all || seen.inbound) {
                events.push(self.conn_event(key, seen, false, now_ms));
            }
        }
        for (key, seen) in &self.conns {
            if !conns_now.contains_key(key) && (report_all || seen.inbound) {
                events.push(self.conn_event(key, seen, true, now_ms));
            }
        }
        self.listens = listens_now;
        self.conns = conns_now;
        events
    }

    /// Maps socket inodes to the observed pids that hold them (reads /proc/<pid>/fd links).
    fn scan_fds(&mut self, pids: &HashSet<u32>, live: &HashSet<u64>) {
        for pid in pids {
            self.fd_scans += 1;
            let Ok(dir) = std::fs::read_dir(self.proc_root.join(pid.to_string()).join("fd")) else {
                continue;
            };
            for entry in dir.flatten() {
                if let Some(inode) = socket_inode(&entry.path())
                    && live.contains(&inode)
                {
                    let holders = self.owners.entry(inode).or_default();
                    if let Err(at) = holders.binary_search(pid) {
                        holders.insert(at, *pid);
                    }
                }
            }
        }
        for inode in live {
            if !self.owners.contains_key(inode) {
                self.foreign.insert(*inode);
            }
        }
    }

    fn listen_event(&self, key: &ListenKey, seen: &Seen, closed: bool, now_ms: i64) -> Event {
        Event {
            seq: 0,
            time_ms: now_ms,
            container: self.container.clone(),
            kind: Some(event::Kind::NetworkListen(NetworkListen {
                protocol: protocol(key.proto) as i32,
                local_addr: key.local.ip().to_string(),
                local_port: u32::from(key.local.port()),
                pid: seen.pid,
                closed,
                pids: seen.pids.clone(),
                blocked: false,
            })),
        }
    }

    fn conn_event(&self, key: &ConnKey, seen: &Seen, closed: bool, now_ms: i64) -> Event {
        let direction = if seen.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        Event {
            seq: 0,
            time_ms: now_ms,
            container: self.container.clone(),
            kind: Some(event::Kind::NetworkConnection(NetworkConnection {
                protocol: protocol(key.proto) as i32,
                direction: direction as i32,
                local_addr: key.local.ip().to_string(),
                local_port: u32::from(key.local.port()),
                remote_addr: key.remote.ip().to_string(),
                remote_port: u32::from(key.remote.port()),
                pid: seen.pid,
                closed,
                blocked: false,
            })),
        }
    }
}

/// The kernel's ephemeral port range (default 32768–60999).
fn read_ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999))
}

fn is_live_connection(e: &SocketEntry) -> bool {
    match e.proto {
        Proto::Tcp => LIVE_TCP_STATES.contains(&e.state),
        Proto::Udp => e.is_connected(),
    }
}

fn protocol(p: Proto) -> Protocol {
    match p {
        Proto::Tcp => Protocol::Tcp,
        Proto::Udp => Protocol::Udp,
    }
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.kind {
                Some(event::Kind::NetworkListen(l)) => {
                    format!(
                        "listen {}:{} closed={}",
                        l.local_addr, l.local_port, l.closed
                    )
                }
                Some(event::Kind::NetworkConnection(c)) => format!(
                    "{} {}:{} closed={}",
                    if c.direction == Direction::Inbound as i32 {
                        "in"
                    } else {
                        "out"
                    },
                    c.remote_addr,
                    c.remote_port,
                    c.closed
                ),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn reports_listen_connect_accept_once_and_their_end() {
        let me: HashSet<u32> = [std::process::id()].into();
        let mut w = NetWatcher::new("/proc", "/proc/net", "app".into());
        let _ = w.poll(&me, 0);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let client_port = client.local_addr().unwrap().port();

        let first = kinds(&w.poll(&me, 1));
        assert!(
            first.contains(&format!("listen 127.0.0.1:{port} closed=false")),
            "{first:?}"
        );
        assert!(
            first.contains(&format!("out 127.0.0.1:{port} closed=false")),
            "{first:?}"
        );
        assert!(
            first.contains(&format!("in 127.0.0.1:{client_port} closed=false")),
            "{first:?}"
        );
        // Nothing new: nothing reported.
        let again = kinds(&w.poll(&me, 2));
        assert!(
            !again.iter().any(|k| k.contains(&port.to_string())),
            "{again:?}"
        );

        drop(client);
        drop(server_side);
        drop(listener);
        let gone = kinds(&w.poll(&me, 3));
        assert!(
            gone.contains(&format!("listen 127.0.0.1:{port} closed=true")),
            "{gone:?}"
        );
        assert!(
            gone.contains(&format!("out 127.0.0.1:{port} closed=true")),
            "{gone:?}"
        );
    }

    #[test]
    fn sockets_of_other_processes_are_not_reported() {
        let nobody: HashSet<u32> = HashSet::new();
        let mut w = NetWatcher::new("/proc", "/proc/net", "app".into());
        let _l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(w.poll(&nobody, 0).is_empty());
    }

    #[test]
    fn udp_client_that_only_sends_is_not_a_listen() {
        let me: HashSet<u32> = [std::process::id()].into();
        let mut w = NetWatcher::new("/proc", "/proc/net", "app".into());
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.send_to(b"x", "127.0.0.1:9").unwrap();
        let port = u32::from(u.local_addr().unwrap().port());
        let events = w.poll(&me, 0);
        assert!(
            !events.iter().any(|e| matches!(&e.kind,
                Some(event::Kind::NetworkListen(l)) if l.local_port == port)),
            "{:?}",
            kinds(&events)
        );
    }

    #[test]
    fn udp_bound_socket_is_a_listen() {
        let me: HashSet<u32> = [std::process::id()].into();
        let mut w = NetWatcher::new("/proc", "/proc/net", "app".into());
        // A server binds a port of its own (an ephemeral port is what a sending client gets).
        let u = (20_000..30_000)
            .find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .unwrap();
        let port = u.local_addr().unwrap().port();
        let events = w.poll(&me, 0);
        let found = events.iter().any(|e| {
            matches!(&e.kind,
            Some(event::Kind::NetworkListen(l)) if l.local_port == u32::from(port)
                && l.protocol == Protocol::Udp as i32 && l.pid == std::process::id())
        });
        assert!(found, "{:?}", kinds(&events));
    }
}
