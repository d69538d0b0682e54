//! Crypto-miner indicators: well-known miner program names, stratum URLs and pool ports in
//! argv, and outbound connections to pool ports.

use crate::text::show;

/// Program names of well-known miners (and cryptojacking malware that runs them), lowercase.
/// A basename matches a name exactly, or followed by `-`, `_` or `.` (`xmrig-6.21.0`,
/// `ccminer_x64`).
pub const MINER_NAMES: &[&str] = &[
    "xmrig",
    "xmrig-notls",
    "xmrig-proxy",
    "xmr-stak",
    "xmr-stak-rx",
    "minerd",
    "cpuminer",
    "cpuminer-opt",
    "cpuminer-multi",
    "ccminer",
    "ethminer",
    "nbminer",
    "t-rex",
    "lolminer",
    "phoenixminer",
    "cgminer",
    "bfgminer",
    "sgminer",
    "nanominer",
    "teamredminer",
    "gminer",
    "srbminer",
    "srbminer-multi",
    "wildrig",
    "wildrig-multi",
    "kawpowminer",
    "nheqminer",
    "bminer",
    "z-enemy",
    "kdevtmpfsi",
    "kinsing",
];

/// Well-known mining pool ports (stratum, plain and TLS).
pub const POOL_PORTS: &[u32] = &[3333, 4444, 5555, 7777, 14433, 14444, 45560, 45700];

/// Stratum URL schemes, lowercase; any argv containing one is a miner.
const STRATUM_MARKERS: &[&str] = &[
    "stratum+tcp://",
    "stratum+ssl://",
    "stratum+tls://",
    "stratum1+tcp://",
    "stratum1+ssl://",
    "stratum2+tcp://",
    "stratum2+ssl://",
];

/// Flags introducing a pool address (`-o host:3333`, `--url=host:3333`, `-pool host:3333`).
const POOL_FLAGS: &[&str] = &["-o", "--url", "--pool", "-pool"];

/// Options only miners take.
const MINER_ONLY_FLAGS: &[&str] = &["--donate-level"];

/// Whether `port` is a well-known mining pool port.
pub fn is_pool_port(port: u32) -> bool {
    POOL_PORTS.contains(&port)
}

/// The miner name `basename` is, if any (case-insensitive).
pub(crate) fn miner_name(basename: &[u8]) -> Option<&'static str> {
    let lower = basename.to_ascii_lowercase();
    MINER_NAMES.iter().copied().find(|name| {
        let n = name.as_bytes();
        lower == n
            || (lower.starts_with(n) && matches!(lower.get(n.len()), Some(b'-' | b'_' | b'.')))
    })
}

/// Why these arguments look like a miner's, if they do.
pub(crate) fn argv_indicator(argv: &[Vec<u8>]) -> Option<String> {
    for (i, arg) in argv.iter().enumerate() {
        let lower = arg.to_ascii_lowercase();
        if let Some(marker) = STRATUM_MARKERS
            .iter()
            .find(|m| contains(&lower, m.as_bytes()))
        {
            return Some(format!("argument contains a mining pool URL ({marker})"));
        }
        if let Some(flag) = MINER_ONLY_FLAGS
            .iter()
            .find(|f| lower == f.as_bytes() || lower.starts_with(format!("{f}=").as_bytes()))
        {
            return Some(format!("argument {flag} is a crypto-miner option"));
        }
        if let Some(value) = pool_flag_value(arg, argv.get(i + 1))
            && let Some(port) = pool_port_of(value)
        {
            return Some(format!(
                "pool address {} uses the well-known mining pool port {port}",
                show(value)
            ));
        }
    }
    None
}

/// The value of a pool flag at `arg` (`-o V`, `-o=V`, `-oV`, `--url V`, `--url=V`).
fn pool_flag_value<'a>(arg: &'a [u8], next: Option<&'a Vec<u8>>) -> Option<&'a [u8]> {
    for flag in POOL_FLAGS {
        let f = flag.as_bytes();
        if arg == f {
            return next.map(Vec::as_slice);
        }
        if let Some(rest) = arg.strip_prefix(f) {
            if let Some(v) = rest.strip_prefix(b"=") {
                return Some(v);
            }
            // Short option with its value attached: `-ohost:3333`.
            if *flag == "-o" && !rest.is_empty() {
                return Some(rest);
            }
        }
    }
    None
}

/// The pool port of `[scheme://]host:port[/path]` when it is a well-known one and `host` looks
/// like a host name or address.
fn pool_port_of(value: &[u8]) -> Option<u32> {
    let v = match find(value, b"://") {
        Some(i) => &value[i + 3..],
        None => value,
    };
    let v = v.split(|&b| b == b'/').next().unwrap_or(v);
    let colon = v.iter().rposition(|&b| b == b':')?;
    let (host, port) = (&v[..colon], &v[colon + 1..]);
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let port: u32 = std::str::from_utf8(port).ok()?.parse().ok()?;
    let plausible_host = !host.is_empty()
        && (host.starts_with(b"[") && host.ends_with(b"]")
            || host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    (plausible_host && is_pool_port(port)).then_some(port)
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Index of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn names() {
        assert_eq!(miner_name(b"xmrig"), Some("xmrig"));
        assert_eq!(miner_name(b"XMRig"), Some("xmrig"));
        assert_eq!(miner_name(b"xmrig-6.21.0"), Some("xmrig"));
        assert_eq!(miner_name(b"ccminer_x64"), Some("ccminer"));
        assert_eq!(miner_name(b"t-rex"), Some("t-rex"));
        assert_eq!(miner_name(b"xmrigger"), None);
        assert_eq!(miner_name(b"python3"), None);
        assert_eq!(miner_name(b"miner"), None);
    }

    #[test]
    fn stratum_urls() {
        let r = argv_indicator(&argv(&["app", "-o", "stratum+tcp://pool.example:80"])).unwrap();
        assert!(r.contains("stratum+tcp://"), "{r}");
        assert!(argv_indicator(&argv(&["x", "--url=STRATUM+SSL://p:443"])).is_some());
        assert!(argv_indicator(&argv(&["ethminer", "-P", "stratum2+tcp://a.b:4444"])).is_some());
    }

    #[test]
    fn pool_port_flags() {
        for a in [
            &["x", "-o", "pool.minexmr.com:4444"][..],
            &["x", "-o=pool.example:3333"],
            &["x", "-opool.example:5555"],
            &["x", "--url", "10.0.0.1:14444"],
            &["x", "--url=pool.example:45700/path"],
            &["x", "--pool", "pool.example:7777"],
            &["x", "-o", "[2001:db8::1]:3333"],
        ] {
            let r = argv_indicator(&argv(a));
            assert!(
                r.as_deref().is_some_and(|r| r.contains("mining pool port")),
                "{a:?}: {r:?}"
            );
        }
    }

    #[test]
    fn ordinary_commands_are_not_miners() {
        for a in [
            &["gcc", "-o", "out", "main.c"][..],
            &["curl", "-o", "file.tar", "http://example.com:8080/x"],
            &["ssh", "-o", "ProxyJump=host:4444", "server"],
            &["x", "-o", "pool.example:8080"],
            &["x", "--url"],
            &["python3", "app.py", "--port", "3333"],
        ] {
            assert_eq!(argv_indicator(&argv(a)), None, "{a:?}");
        }
    }

    #[test]
    fn miner_only_options() {
        assert!(argv_indicator(&argv(&["kworker", "--donate-level=1"])).is_some());
        assert!(argv_indicator(&argv(&["kworker", "--donate-level", "1"])).is_some());
    }
}
