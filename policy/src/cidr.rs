//! IP addresses and CIDR blocks of the denied-outbound list.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are treated as the IPv4 address they carry,
//! both in events and in rules (`::ffff:10.0.0.0/104` is `10.0.0.0/8`). Other IPv6 blocks, even
//! `::/0`, never match IPv4 addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A parsed address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    /// IPv4 network and prefix length.
    V4(u32, u8),
    /// IPv6 network and prefix length.
    V6(u128, u8),
}

/// The IPv4 network mask with `prefix` leading ones.
fn mask_u32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The network mask of an IPv6 prefix.
fn mask_u128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Cidr {
    /// Whether `addr` (already normalized by [`parse_addr`]) lies in the block.
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        match (*self, addr) {
            (Cidr::V4(net, p), IpAddr::V4(a)) => u32::from(a) & mask_u32(p) == net,
            (Cidr::V6(net, p), IpAddr::V6(a)) => u128::from(a) & mask_u128(p) == net,
            _ => false,
        }
    }
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d`; other addresses are returned as they are.
fn normalize(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses an address as events carry it: plain, `[v6]`, or with a `%zone`; mapped → IPv4.
pub(crate) fn parse_addr(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(t);
    let t = t.split_once('%').map_or(t, |(a, _)| a);
    t.parse::<IpAddr>().ok().map(normalize)
}

/// Parses a rule entry: an address (a one-address block) or `address/prefix`.
pub(crate) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let example = "expected an IP address or CIDR block, e.g. 10.0.0.0/8 or 2001:db8::/32";
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("{text:?} is not valid: {example}"))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => max,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} has an invalid prefix length: {example}"));
            }
            let n: u16 = p.parse().map_err(|_| format!("{text:?}: {example}"))?;
            if n > u16::from(max) {
                return Err(format!(
                    "{text:?}: prefix length /{n} is longer than {max} bits"
                ));
            }
            u8::try_from(n).unwrap_or(max)
        }
    };
    let cidr = match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let net = bits & mask_u32(prefix);
            if net != bits {
                let fixed = Ipv4Addr::from(net);
                return Err(format!(
                    "{text:?} has bits set after the /{prefix} prefix; did you mean {fixed}/{prefix}?"
                ));
            }
            Cidr::V4(net, prefix)
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let net = bits & mask_u128(prefix);
            if net != bits {
                let fixed = Ipv6Addr::from(net);
                return Err(format!(
                    "{text:?} has bits set after the /{prefix} prefix; did you mean {fixed}/{prefix}?"
                ));
            }
            match a.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Cidr::V4(u32::from(v4), prefix - 96),
                _ => Cidr::V6(net, prefix),
            }
        }
    };
    Ok(cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cidr: &str, addr: &str) -> bool {
        parse_cidr(cidr)
            .unwrap()
            .contains(parse_addr(addr).unwrap())
    }

    #[test]
    fn v4_blocks_and_hosts() {
        assert!(hit("10.0.0.0/8", "10.200.3.4"));
        assert!(!hit("10.0.0.0/8", "11.0.0.1"));
        assert!(hit("1.2.3.4", "1.2.3.4"));
        assert!(!hit("1.2.3.4", "1.2.3.5"));
        assert!(hit("0.0.0.0/0", "8.8.8.8"));
        assert!(hit("1.2.3.4/32", "1.2.3.4"));
    }

    #[test]
    fn v6_blocks() {
        assert!(hit("2001:db8::/32", "2001:db8:1::5"));
        assert!(!hit("2001:db8::/32", "2001:db9::5"));
        assert!(hit("::1", "[::1]"));
        assert!(hit("fe80::/10", "fe80::1%eth0"));
        assert!(hit("::/0", "2a00::1"));
        assert!(!hit("::/0", "1.2.3.4"));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert!(hit("10.0.0.0/8", "::ffff:10.1.2.3"));
        assert!(hit("::ffff:10.0.0.0/104", "10.9.9.9"));
        assert!(hit("::ffff:1.2.3.4", "1.2.3.4"));
        assert!(!hit("::ffff:10.0.0.0/104", "11.0.0.1"));
        assert_eq!(parse_cidr("::ffff:0.0.0.0/96").unwrap(), Cidr::V4(0, 0));
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "",
            "abc",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "1.2.3",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_cidr("10.0.0.1/8").unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        let e = parse_cidr("2001:db8::1/32").unwrap_err();
        assert!(e.contains("did you mean 2001:db8::/32"), "{e}");
    }

    #[test]
    fn event_addresses() {
        assert_eq!(
            parse_addr("1.2.3.4"),
            Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
        );
        assert_eq!(
            parse_addr("::ffff:1.2.3.4"),
            Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
        );
        assert_eq!(parse_addr("nope"), None);
        assert_eq!(parse_addr(""), None);
    }
}
