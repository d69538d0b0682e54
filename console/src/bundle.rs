//! The install bundle: everything a Defender needs to find and trust the Console and enroll,
//! as base64 JSON so it fits one environment variable or secret.
//!
//! JSON shape: `{"console_addr": "host:port", "ca_pem": "...", "token": "dfe_..."}`. A bundle
//! for several Console replicas adds `"console_addrs": ["a:8084", "b:8084", ...]` (at most
//! [`MAX_CONSOLE_ADDRS`]) and keeps the first of them in `console_addr`, so Defenders that
//! predate the list still decode it and connect to that first address. A one-address bundle is
//! exactly the old shape.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Most Console addresses one bundle carries (the Defender refuses more). More replicas than
/// this belong behind one load balancer name.
pub const MAX_CONSOLE_ADDRS: usize = 16;

/// Contents of `INSTALL_BUNDLE` (the Defender decodes the same JSON shape).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstallBundle {
    /// `host:port` of the Console's gRPC listener; host must be one of the server certificate's
    /// SANs. With several addresses, the first of them.
    pub console_addr: String,
    /// Every `host:port` Defenders may connect to (Console replicas), when there are several;
    /// empty (and not serialized) for a one-address bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console_addrs: Vec<String>,
    /// PEM of the Console CA.
    pub ca_pem: String,
    /// Enrollment token (a secret).
    pub token: String,
}

impl InstallBundle {
    /// A bundle for `addrs` (checked by [`parse_console_addrs`], so never empty): the old
    /// one-address shape for one address, `console_addrs` beside it for several.
    pub fn new(addrs: &[String], ca_pem: &str, token: String) -> Self {
        let console_addr = addrs.first().cloned().unwrap_or_default();
        let console_addrs = if addrs.len() > 1 {
            addrs.to_vec()
        } else {
            Vec::new()
        };
        Self {
            console_addr,
            console_addrs,
            ca_pem: ca_pem.to_owned(),
            token,
        }
    }

    /// Every Console address of the bundle.
    pub fn addrs(&self) -> &[String] {
        if self.console_addrs.is_empty() {
            std::slice::from_ref(&self.console_addr)
        } else {
            &self.console_addrs
        }
    }

    /// The base64 form operators paste into task definitions.
    pub fn encode(&self) -> String {
        // Serializing plain strings to JSON cannot fail.
        STANDARD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Why a Console address (list) cannot go into an install bundle. The text completes
/// "invalid Console address: …".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error(
        "{addr:?} {why}; give host:port of the Console's gRPC listener as Defenders reach it, e.g. console.example.com:8084"
    )]
    Invalid { addr: String, why: &'static str },
    #[error(
        "none given; give host:port of the Console's gRPC listener as Defenders reach it, or several comma-separated (replicas), e.g. a.example.com:8084,b.example.com:8084"
    )]
    Empty,
    #[error("{list:?} has an empty entry; separate the host:port addresses with single commas")]
    EmptyEntry { list: String },
    #[error(
        "{count} addresses given; a bundle carries at most {MAX_CONSOLE_ADDRS}: put more replicas behind one load balancer name"
    )]
    TooMany { count: usize },
    #[error("{addr:?} is given twice")]
    Duplicate { addr: String },
}

/// The host of a `host:port` Console address (IPv6 in brackets, `[::1]:8084`), which the
/// Console's server certificate must name; ports 1 to 65535.
pub fn addr_host(addr: &str) -> Result<&str, AddrError> {
    let bad = |why: &'static str| AddrError::Invalid {
        addr: addr.to_owned(),
        why,
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("has no port"));
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        return Err(bad("has no valid port"));
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .filter(|h| h.parse::<IpAddr>().is_ok())
            .ok_or_else(|| bad("has a malformed [IPv6] address"))?,
        None => host,
    };
    let host_ok = !host.is_empty()
        && host.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '-' | '_')
                || (c == ':' && addr.starts_with('['))
        });
    if !host_ok {
        return Err(bad("is not a host name or IP address with a port"));
    }
    Ok(host)
}

/// Reads `host:port` or several comma-separated (`a:8084,b:8084`, spaces around entries
/// ignored): each checked by [`addr_host`], none twice, at most [`MAX_CONSOLE_ADDRS`]. The
/// first error names the offending entry.
pub fn parse_console_addrs(list: &str) -> Result<Vec<String>, AddrError> {
    if list.trim().is_empty() {
        return Err(AddrError::Empty);
    }
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.len() > MAX_CONSOLE_ADDRS {
        return Err(AddrError::TooMany {
            count: entries.len(),
        });
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.is_empty() {
            return Err(AddrError::EmptyEntry {
                list: list.trim().to_owned(),
            });
        }
        addr_host(entry)?;
        if out.iter().any(|a| a.eq_ignore_ascii_case(entry)) {
            return Err(AddrError::Duplicate {
                addr: entry.to_owned(),
            });
        }
        out.push(entry.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(b: &InstallBundle) -> serde_json::Value {
        serde_json::from_slice(&STANDARD.decode(b.encode()).unwrap()).unwrap()
    }

    #[test]
    fn one_address_keeps_the_old_shape() {
        let b = InstallBundle::new(&["c:8084".to_owned()], "CA", "dfe_t".into());
        let json = decoded(&b);
        assert_eq!(json["console_addr"], "c:8084");
        assert!(json.get("console_addrs").is_none(), "{json}");
        assert_eq!(b.addrs(), ["c:8084"]);
    }

    #[test]
    fn several_addresses_keep_the_first_in_console_addr() {
        let addrs = parse_console_addrs(" a:8084, b:9000 ").unwrap();
        let b = InstallBundle::new(&addrs, "CA", "dfe_t".into());
        let json = decoded(&b);
        assert_eq!(json["console_addr"], "a:8084");
        assert_eq!(
            json["console_addrs"],
            serde_json::json!(["a:8084", "b:9000"])
        );
        assert_eq!(b.addrs(), ["a:8084", "b:9000"]);
        // An old bundle (no list) reads back as its one address.
        let old: InstallBundle =
            serde_json::from_str(r#"{"console_addr":"c:1","ca_pem":"x","token":"t"}"#).unwrap();
        assert_eq!(old.addrs(), ["c:1"]);
    }

    #[test]
    fn every_address_is_checked_and_the_bad_one_named() {
        assert_eq!(
            parse_console_addrs("[::1]:8084,console.example.com:1").unwrap(),
            ["[::1]:8084", "console.example.com:1"]
        );
        let err = parse_console_addrs("a:8084,b").unwrap_err();
        assert_eq!(
            err,
            AddrError::Invalid {
                addr: "b".into(),
                why: "has no port"
            }
        );
        assert!(err.to_string().starts_with("\"b\" has no port"), "{err}");
        for bad in [
            "console",
            "console:",
            "console:0",
            "console:x",
            ":8084",
            "a:b:1",
            "[zz]:1",
            "a b:1",
            "u@h:1",
        ] {
            let err = parse_console_addrs(&format!("ok:1,{bad}")).unwrap_err();
            assert!(
                matches!(&err, AddrError::Invalid { addr, .. } if addr == bad),
                "{bad}: {err}"
            );
        }
        assert_eq!(parse_console_addrs(" "), Err(AddrError::Empty));
        assert!(matches!(
            parse_console_addrs("a:1,,b:1"),
            Err(AddrError::EmptyEntry { .. })
        ));
        assert!(matches!(
            parse_console_addrs("a:1,"),
            Err(AddrError::EmptyEntry { .. })
        ));
        assert_eq!(
            parse_console_addrs("a:1,A:1"),
            Err(AddrError::Duplicate { addr: "A:1".into() })
        );
        let sixteen: Vec<String> = (1..=16).map(|p| format!("h:{p}")).collect();
        assert_eq!(parse_console_addrs(&sixteen.join(",")).unwrap().len(), 16);
        let seventeen = format!("{},h:17", sixteen.join(","));
        assert_eq!(
            parse_console_addrs(&seventeen),
            Err(AddrError::TooMany { count: 17 })
        );
    }
}
