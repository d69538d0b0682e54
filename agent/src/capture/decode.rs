//! Pure decoders for what exact capture reads out of the application's memory: socket addresses
//! (`struct sockaddr_in` / `sockaddr_in6`, ip(7), ipv6(7)) and DNS query packets (RFC 1035
//! section 4.1). No I/O: everything here is unit-tested on byte slices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Largest socket address read from the application (`sizeof(struct sockaddr_storage)`).
pub const MAX_SOCKADDR: usize = 128;
/// Largest DNS name, in presentation form (RFC 1035 section 2.3.4: 255 octets on the wire).
const MAX_NAME: usize = 253;

/// A socket address as the application passed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// AF_INET or AF_INET6.
    Ip(SocketAddr),
    /// AF_UNIX, AF_NETLINK, … : not network traffic, never reported.
    Other(u16),
    /// Too short or unreadable.
    Invalid,
}

/// Decodes a `struct sockaddr` of `len` bytes (native endianness for the family, network order
/// for port and address).
pub fn sockaddr(buf: &[u8]) -> Addr {
    if buf.len() < 2 {
        return Addr::Invalid;
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]);
    match i32::from(family) {
        libc::AF_INET if buf.len() >= 8 => {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            Addr::Ip(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if buf.len() >= 24 => {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&buf[8..24]);
            let ip = Ipv6Addr::from(octets);
            // Show IPv4-mapped addresses (::ffff:a.b.c.d) as the IPv4 address they are.
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Addr::Ip(SocketAddr::new(ip, port))
        }
        libc::AF_INET | libc::AF_INET6 => Addr::Invalid,
        _ => Addr::Other(family),
    }
}

/// The question of a DNS query: (name, qtype). `None` when the packet is not a standard query
/// with at least one question (responses, malformed packets, compression in a query).
pub fn dns_question(packet: &[u8]) -> Option<(String, u16)> {
    if packet.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let is_response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    if is_response || opcode != 0 || qdcount == 0 {
        return None;
    }
    let mut pos = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*packet.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None; // compression pointers do not appear in a query's first name
        }
        let label = packet.get(pos..pos + len)?;
        pos += len;
        if !name.is_empty() {
            name.push('.');
        }
        for b in label {
            // Names are shown as text: anything outside printable ASCII is escaped RFC 4343-style.
            match b {
                b'!'..=b'~' => name.push(char::from(b.to_ascii_lowercase())),
                _ => name.push_str(&format!("\\{b:03}")),
            }
        }
        if name.len() > MAX_NAME * 4 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*packet.get(pos)?, *packet.get(pos + 1)?]);
    Some((name, qtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sin(port: u16, ip: [u8; 4]) -> Vec<u8> {
        let mut v = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v.extend(port.to_be_bytes());
        v.extend(ip);
        v.extend([0u8; 8]);
        v
    }

    #[test]
    fn decodes_ipv4_ipv6_mapped_and_others() {
        assert_eq!(
            sockaddr(&sin(443, [10, 0, 0, 1])),
            Addr::Ip("10.0.0.1:443".parse().unwrap())
        );
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.extend(53u16.to_be_bytes());
        v6.extend([0u8; 4]);
        v6.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0u8; 4]);
        assert_eq!(sockaddr(&v6), Addr::Ip("[2001:db8::1]:53".parse().unwrap()));
        let mut mapped = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        mapped.extend(80u16.to_be_bytes());
        mapped.extend([0u8; 4]);
        mapped.extend("::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(sockaddr(&mapped), Addr::Ip("192.0.2.7:80".parse().unwrap()));
        let unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        assert_eq!(sockaddr(&unix), Addr::Other(libc::AF_UNIX as u16));
        assert_eq!(sockaddr(&sin(1, [1, 2, 3, 4])[..6]), Addr::Invalid);
        assert_eq!(sockaddr(&[]), Addr::Invalid);
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend(label.as_bytes());
        }
        p.push(0);
        p.extend(qtype.to_be_bytes());
        p.extend(1u16.to_be_bytes());
        p
    }

    #[test]
    fn reads_the_question_of_a_query() {
        assert_eq!(
            dns_question(&query("Pool.Example.COM", 28)),
            Some(("pool.example.com".into(), 28))
        );
        let mut response = query("example.com", 1);
        response[2] |= 0x80;
        assert_eq!(dns_question(&response), None);
        assert_eq!(dns_question(&query("example.com", 1)[..14]), None);
        let mut odd = query("a b.example", 1);
        odd[13] = 0x07;
        assert!(dns_question(&odd).is_some_and(|(n, _)| n.contains("\\007")));
        assert_eq!(dns_question(&[0u8; 5]), None);
    }
}
