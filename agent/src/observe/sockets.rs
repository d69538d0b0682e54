//! Parses the kernel's socket tables (/proc/net/{tcp,tcp6,udp,udp6}) of the task's network
//! namespace. Fargate gives us no eBPF; these tables are what every container can read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// Transport protocol of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One row of a socket table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SocketEntry {
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel state code (TCP: 0x0A listen, 0x01 established).
    pub state: u8,
    pub inode: u64,
    pub uid: u32,
}

/// TCP LISTEN state code.
pub const TCP_LISTEN: u8 = 0x0A;
/// TCP ESTABLISHED state code.
pub const TCP_ESTABLISHED: u8 = 0x01;

impl SocketEntry {
    /// A socket that waits for peers: TCP in LISTEN, or UDP with no connected peer.
    pub fn is_listening(&self) -> bool {
        match self.proto {
            Proto::Tcp => self.state == TCP_LISTEN,
            Proto::Udp => self.remote.port() == 0 && self.remote.ip().is_unspecified(),
        }
    }

    /// A socket with a peer: established TCP, or connected UDP.
    pub fn is_connected(&self) -> bool {
        match self.proto {
            Proto::Tcp => self.state == TCP_ESTABLISHED,
            Proto::Udp => !self.is_listening(),
        }
    }
}

/// Reads the four tables under `proc_net` (normally `/proc/net` or `/proc/<pid>/net`).
/// A missing table (no IPv6, say) is skipped.
pub fn read_all(proc_net: &Path) -> Vec<SocketEntry> {
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", Proto::Tcp),
        ("tcp6", Proto::Tcp),
        ("udp", Proto::Udp),
        ("udp6", Proto::Udp),
    ] {
        if let Some(text) = read_table(&proc_net.join(file)) {
            out.extend(parse_table(&text, proto));
        }
    }
    out
}

/// Reads a socket table with few, large reads: the kernel walks its socket hash table again
/// for every read call, so the default small-then-growing reads cost several walks per poll.
fn read_table(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(256 * 1024);
    std::fs::File::open(path).ok()?.read_to_end(&mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// Parses one table's text; malformed lines are skipped.
pub fn parse_table(text: &str, proto: Proto) -> impl Iterator<Item = SocketEntry> + '_ {
    text.lines()
        .skip(1)
        .filter_map(move |line| parse_line(line, proto))
}

fn parse_line(line: &str, proto: Proto) -> Option<SocketEntry> {
    let mut f = line.split_whitespace();
    let _slot = f.next()?;
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let _queues = f.next()?;
    let _timer = f.next()?;
    let _retransmits = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let _timeout = f.next()?;
    let inode = f.next()?.parse().ok()?;
    Some(SocketEntry {
        proto,
        local,
        remote,
        state,
        inode,
        uid,
    })
}

/// `0100007F:1F90` → 127.0.0.1:8080. Addresses are the kernel's in-memory words printed as hex.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // Show IPv4-mapped addresses (::ffff:a.b.c.d) as plain IPv4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0F01000A:C350 2201000A:01BB 01 00000000:00000000 02:000A7D3B 00000000  1000        0 41299 2 0000000000000000 20 4 30 10 -1
   2: garbage line
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 5556 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000001000000:0050 00000000000000000000000001000000:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 5557 1 0000000000000000 20 4 30 10 -1
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0
  101: 0F01000A:E1F2 0202000A:0035 01 00000000:00000000 00:00000000 00000000  1000        0 778 2 0000000000000000 0
";

    #[test]
    fn parses_ipv4_tcp() {
        let rows: Vec<_> = parse_table(TCP, Proto::Tcp).collect();
        assert_eq!(rows.len(), 2, "the garbage line is skipped");
        assert_eq!(rows[0].local, "127.0.0.1:8080".parse().unwrap());
        assert!(rows[0].is_listening());
        assert_eq!(rows[0].inode, 41234);
        assert_eq!(rows[0].uid, 1000);
        assert_eq!(rows[1].local, "10.0.1.15:50000".parse().unwrap());
        assert_eq!(rows[1].remote, "10.0.1.34:443".parse().unwrap());
        assert!(rows[1].is_connected());
    }

    #[test]
    fn parses_ipv6_and_mapped_ipv4() {
        let rows: Vec<_> = parse_table(TCP6, Proto::Tcp).collect();
        assert_eq!(rows[0].local, "[::]:80".parse().unwrap());
        assert_eq!(rows[1].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(rows[1].remote, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(rows[2].local, "[::1]:80".parse().unwrap());
    }

    #[test]
    fn udp_bound_and_connected() {
        let rows: Vec<_> = parse_table(UDP, Proto::Udp).collect();
        assert!(rows[0].is_listening());
        assert_eq!(rows[0].local.port(), 68);
        assert!(rows[1].is_connected());
        assert_eq!(rows[1].remote, "10.0.2.2:53".parse().unwrap());
    }

    #[test]
    fn reads_this_machines_tables() {
        // A socket we hold must show up with its port.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let all = read_all(Path::new("/proc/net"));
        assert!(
            all.iter()
                .any(|e| e.local.port() == port && e.is_listening())
        );
    }
}
