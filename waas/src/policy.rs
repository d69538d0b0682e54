//! The WAAS policy document (JSON, camelCase), its defaults and its validation.
//!
//! ```json
//! {
//!   "enabled": true,
//!   "protections": {"sqli": "prevent", "xss": "prevent", "scanner": "alert"},
//!   "access": {"allowed_cidrs": [], "denied_cidrs": ["203.0.113.0/24"],
//!              "allowed_methods": ["GET", "POST"], "effect": "prevent"},
//!   "exceptions": [{"rule_id": "sqli-110", "path_prefix": "/api/search"}],
//!   "rate_limit": {"requests_per_second": 100, "burst": 200, "effect": "prevent"},
//!   "ban": {"minutes": 10, "after_prevents": 5, "window_seconds": 60},
//!   "fail_open": true,
//!   "inspect_body_bytes": 65536,
//!   "trusted_proxies": ["10.0.0.0/16"],
//!   "max_header_bytes": 16384
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::detect::{Family, rule_catalog};

/// Largest policy document accepted, bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Most entries in one list (CIDRs, methods, exceptions).
pub const MAX_LIST: usize = 1024;
/// Largest body inspection prefix a policy may ask for, bytes.
pub const MAX_INSPECT_BODY_BYTES: usize = 1024 * 1024;

/// What happens when a protection fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The protection does not run.
    Disable,
    /// Let the request through, record an event.
    Alert,
    /// Refuse the request (403 with an event id; 429 for the rate limit), record an event.
    Prevent,
    /// Refuse, record an event and ban the client IP for `ban.minutes`.
    Ban,
}

impl Effect {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Disable => "disable",
            Effect::Alert => "alert",
            Effect::Prevent => "prevent",
            Effect::Ban => "ban",
        }
    }

    /// True for prevent and ban.
    pub fn blocks(self) -> bool {
        self >= Effect::Prevent
    }
}

/// Client access control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct Access {
    /// When not empty, only clients in these CIDRs (or bare IPs) are served.
    pub allowed_cidrs: Vec<String>,
    /// Clients in these CIDRs are refused (checked after `allowed_cidrs`).
    pub denied_cidrs: Vec<String>,
    /// When not empty, only these methods are served (upper case).
    pub allowed_methods: Vec<String>,
    /// Effect of an access violation.
    pub effect: Effect,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            allowed_cidrs: Vec::new(),
            denied_cidrs: Vec::new(),
            allowed_methods: Vec::new(),
            effect: Effect::Prevent,
        }
    }
}

/// Silences one rule under one path prefix (a false positive the operator accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct Exception {
    /// Rule id (`sqli-110`) or a family name (`sqli`) for all its rules.
    pub rule_id: String,
    /// Request paths starting with this (`/api/search`); `/` for every path.
    pub path_prefix: String,
}

/// Per-client-IP token bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct RateLimit {
    /// Sustained requests per second per client IP.
    pub requests_per_second: u32,
    /// Requests a client may send at once above the sustained rate (bucket size).
    pub burst: u32,
    /// Effect when a client exceeds the bucket (`disable` turns the limit off).
    pub effect: Effect,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests_per_second: 200,
            burst: 400,
            effect: Effect::Alert,
        }
    }
}

/// Bans: how long, and after how many prevent verdicts in a window a client is banned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct Ban {
    /// Ban length, minutes.
    pub minutes: u32,
    /// Prevent verdicts within `window_seconds` that ban the client (0: only the `ban` effect bans).
    pub after_prevents: u32,
    /// Window for `after_prevents`, seconds.
    pub window_seconds: u32,
}

impl Default for Ban {
    fn default() -> Self {
        Ban {
            minutes: 10,
            after_prevents: 10,
            window_seconds: 60,
        }
    }
}

/// The whole WAAS policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields, default)]
pub struct WaasPolicy {
    /// False: the proxy forwards without inspecting anything.
    pub enabled: bool,
    /// Effect per family; families not named take [`default_effect`].
    pub protections: BTreeMap<Family, Effect>,
    /// Client CIDRs and methods.
    pub access: Access,
    /// Per-path rule exceptions.
    pub exceptions: Vec<Exception>,
    /// Per-client-IP rate limit.
    pub rate_limit: RateLimit,
    /// Bans.
    pub ban: Ban,
    /// When inspection fails internally: true lets the request through (counted, audited),
    /// false refuses it with 503.
    pub fail_open: bool,
    /// Most body bytes inspected; the rest streams through unseen (and events say so).
    pub inspect_body_bytes: usize,
    /// Proxies whose `X-Forwarded-For` is believed (the ALB's subnets). The client IP is the
    /// rightmost address not in these CIDRs; with none, the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Largest request head (request line plus headers), bytes; larger gets 431.
    pub max_header_bytes: usize,
}

/// Effect of a family the policy does not name.
pub fn default_effect(f: Family) -> Effect {
    match f {
        Family::Rfi | Family::Scanner => Effect::Alert,
        _ => Effect::Prevent,
    }
}

impl Default for WaasPolicy {
    fn default() -> Self {
        WaasPolicy {
            enabled: true,
            protections: BTreeMap::new(),
            access: Access::default(),
            exceptions: Vec::new(),
            rate_limit: RateLimit::default(),
            ban: Ban::default(),
            fail_open: true,
            inspect_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// One problem in a policy document, with its path (`access.denied_cidrs[2]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyProblem {
    /// Where (`exceptions[0].rule_id`); empty for the document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses a CIDR or a bare IP (taken as a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl WaasPolicy {
    /// The effect in force for `family`.
    pub fn effect(&self, family: Family) -> Effect {
        if !self.enabled {
            return Effect::Disable;
        }
        self.protections
            .get(&family)
            .copied()
            .unwrap_or_else(|| default_effect(family))
    }

    /// Parses and validates a document; `Err` holds every problem found (a JSON error is one
    /// problem with the path of the offending field).
    pub fn from_json(json: &str) -> Result<Self, Vec<PolicyProblem>> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(vec![PolicyProblem {
                path: String::new(),
                message: format!(
                    "policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                    json.len()
                ),
            }]);
        }
        let de = &mut serde_json::Deserializer::from_str(json);
        let p: WaasPolicy = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            vec![PolicyProblem {
                path: if path == "." { String::new() } else { path },
                message: e.inner().to_string(),
            }]
        })?;
        p.validate()?;
        Ok(p)
    }

    /// Checks limits, CIDRs, methods, exceptions; `Err` lists every problem.
    pub fn validate(&self) -> Result<(), Vec<PolicyProblem>> {
        let mut errs = Vec::new();
        let mut err = |path: String, message: String| errs.push(PolicyProblem { path, message });
        let lists: [(&str, &Vec<String>); 3] = [
            ("access.allowed_cidrs", &self.access.allowed_cidrs),
            ("access.denied_cidrs", &self.access.denied_cidrs),
            ("trusted_proxies", &self.trusted_proxies),
        ];
        for (name, list) in lists {
            if list.len() > MAX_LIST {
                err(name.into(), format!("more than {MAX_LIST} entries"));
            }
            for (i, c) in list.iter().enumerate().take(MAX_LIST) {
                if parse_cidr(c).is_none() {
                    err(
                        format!("{name}[{i}]"),
                        format!("{c:?} is not a CIDR (10.0.0.0/8) or an IP address"),
                    );
                }
            }
        }
        if self.access.allowed_methods.len() > MAX_LIST {
            err(
                "access.allowed_methods".into(),
                format!("more than {MAX_LIST} entries"),
            );
        }
        for (i, m) in self
            .access
            .allowed_methods
            .iter()
            .enumerate()
            .take(MAX_LIST)
        {
            let token = !m.is_empty()
                && m.len() <= 32
                && m.bytes().all(|c| c.is_ascii_uppercase() || c == b'-');
            if !token {
                err(
                    format!("access.allowed_methods[{i}]"),
                    format!("{m:?} is not an upper-case HTTP method (GET, POST...)"),
                );
            }
        }
        if self.exceptions.len() > MAX_LIST {
            err("exceptions".into(), format!("more than {MAX_LIST} entries"));
        }
        let catalog = rule_catalog();
        for (i, e) in self.exceptions.iter().enumerate().take(MAX_LIST) {
            let known = catalog.iter().any(|c| c.0 == e.rule_id)
                || Family::ALL.iter().any(|f| f.as_str() == e.rule_id)
                || matches!(e.rule_id.as_str(), "access" | "rate_limit");
            if !known {
                err(
                    format!("exceptions[{i}].rule_id"),
                    format!(
                        "unknown rule id {:?} (a rule id such as sqli-110, or a family such as sqli)",
                        e.rule_id
                    ),
                );
            }
            if !e.path_prefix.starts_with('/') || e.path_prefix.len() > 1024 {
                err(
                    format!("exceptions[{i}].path_prefix"),
                    "must start with / and be at most 1024 bytes".into(),
                );
            }
        }
        if self.rate_limit.effect != Effect::Disable {
            if self.rate_limit.requests_per_second == 0 {
                err(
                    "rate_limit.requests_per_second".into(),
                    "must be at least 1 (or set rate_limit.effect to disable)".into(),
                );
            }
            if self.rate_limit.burst < self.rate_limit.requests_per_second.min(1) {
                err("rate_limit.burst".into(), "must be at least 1".into());
            }
        }
        if self.ban.minutes == 0 || self.ban.minutes > 7 * 24 * 60 {
            err(
                "ban.minutes".into(),
                "must be between 1 and 10080 (one week)".into(),
            );
        }
        if self.ban.after_prevents > 0 && self.ban.window_seconds == 0 {
            err(
                "ban.window_seconds".into(),
                "must be at least 1 when after_prevents is set".into(),
            );
        }
        if self.inspect_body_bytes > MAX_INSPECT_BODY_BYTES {
            err(
                "inspect_body_bytes".into(),
                format!("at most {MAX_INSPECT_BODY_BYTES}"),
            );
        }
        if !(1024..=256 * 1024).contains(&self.max_header_bytes) {
            err(
                "max_header_bytes".into(),
                "must be between 1024 and 262144".into(),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// True when `rule_id` (of `family`) is silenced for `path`.
    pub fn excepted(&self, rule_id: &str, family: &str, path: &str) -> bool {
        self.exceptions.iter().any(|e| {
            (e.rule_id == rule_id || e.rule_id == family) && path.starts_with(&e.path_prefix)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let p = WaasPolicy::from_json("{}").unwrap();
        assert_eq!(p, WaasPolicy::default());
        assert_eq!(p.effect(Family::Sqli), Effect::Prevent);
        assert_eq!(p.effect(Family::Scanner), Effect::Alert);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(WaasPolicy::from_json(&json).unwrap(), p);
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let errs = WaasPolicy::from_json(
            r#"{"access":{"denied_cidrs":["10.0.0.0/8","nope"],"allowed_methods":["get"]},
                "exceptions":[{"rule_id":"sqli-999","path_prefix":"api"}],
                "ban":{"minutes":0},"max_header_bytes":10}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "access.denied_cidrs[1]",
                "access.allowed_methods[0]",
                "exceptions[0].rule_id",
                "exceptions[0].path_prefix",
                "ban.minutes",
                "max_header_bytes"
            ]
        );
        let e = WaasPolicy::from_json(r#"{"protections":{"sqli":"block"}}"#).unwrap_err();
        assert!(e[0].path.starts_with("protections"), "{e:?}");
        assert!(e[0].message.contains("block"), "{e:?}");
        let e = WaasPolicy::from_json(r#"{"typo":1}"#).unwrap_err();
        assert!(e[0].message.contains("typo"), "{e:?}");
    }

    #[test]
    fn exceptions_match_rule_or_family_under_prefix() {
        let p = WaasPolicy::from_json(
            r#"{"exceptions":[{"rule_id":"sqli-110","path_prefix":"/search"},{"rule_id":"xss","path_prefix":"/cms"}]}"#,
        )
        .unwrap();
        assert!(p.excepted("sqli-110", "sqli", "/search?q=1"));
        assert!(!p.excepted("sqli-120", "sqli", "/search"));
        assert!(!p.excepted("sqli-110", "sqli", "/other"));
        assert!(p.excepted("xss-140", "xss", "/cms/page"));
    }
}
