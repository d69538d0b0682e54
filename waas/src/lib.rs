//! WAAS (Web Application and API Security) for the Defender's reverse proxy: the pure part.
//!
//! The agent's proxy reads a request head and a body prefix, builds an [`HttpRequest`], and asks
//! [`evaluate`] for a [`Verdict`] under the [`WaasPolicy`] in force; per-client rate limits and
//! bans live in a [`Guard`]. Nothing here does I/O or reads a clock, so everything is tested and
//! benchmarked in-process (`cargo bench -p defender-waas --bench detection` measures detection on
//! the OWASP CRS regression payloads and false positives on ordinary traffic).
//!
//! Detection combines libinjection (a Rust port, for SQLi and XSS) with pattern families written
//! for this project (see [`detect`]), run on every decoded form ([`decode`]) of every part of the
//! request ([`request::parts`]): path, query and body parameter names and values, JSON strings,
//! XML text, multipart fields, cookies and the non-structural headers.
//!
//! The [`Engine`] remembers parts it found clean (bounded, by exact value and everything their
//! inspection depends on), so repeated parts — the same User-Agent, the same paths — are not
//! inspected again.

pub mod decode;
pub mod detect;
pub mod guard;
pub mod policy;
pub mod request;

use std::net::IpAddr;

pub use detect::{
    Engine, Family, Finding, Inspection, OVERSIZED_HEAD, oversized_head, rule_catalog,
};
pub use guard::{Admission, Guard, client_ip, trusted_nets};
pub use ipnet::IpNet;
pub use policy::{Effect, PolicyProblem, WaasPolicy};
pub use request::{HttpRequest, Location};

/// Rule ids outside the detectors: access control, rate limit, ban.
pub const ACCESS_RULES: &[(&str, &str)] = &[
    ("access-110", "client IP in a denied CIDR"),
    ("access-120", "client IP outside the allowed CIDRs"),
    ("access-130", "HTTP method not allowed"),
    ("ratelimit-110", "client exceeded its request rate"),
    ("ban-110", "client is banned"),
    ("failopen-110", "inspection failed internally"),
];

/// A finding with the effect the policy gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// What was found.
    pub finding: Finding,
    /// What the policy does about it.
    pub effect: Effect,
}

/// The policy's answer for one request.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Findings not silenced, each with its effect (disabled families are not inspected).
    pub findings: Vec<Judged>,
    /// True when part of the request was not inspected (body beyond the prefix...).
    pub incomplete: bool,
}

impl Verdict {
    /// The strongest effect among the findings; `None` when nothing was found.
    pub fn effect(&self) -> Option<Effect> {
        self.findings.iter().map(|j| j.effect).max()
    }

    /// The finding that decided the verdict (first one with the strongest effect).
    pub fn decisive(&self) -> Option<&Judged> {
        let e = self.effect()?;
        self.findings.iter().find(|j| j.effect == e)
    }
}

/// A finding for a rule of [`ACCESS_RULES`].
pub fn access_finding(rule_id: &'static str, name: &str, matched: &str) -> Finding {
    let message = ACCESS_RULES
        .iter()
        .find(|r| r.0 == rule_id)
        .map(|r| r.1)
        .unwrap_or("");
    Finding {
        rule_id: rule_id.to_owned(),
        family: Family::Protocol,
        message: message.to_owned(),
        location: Location::Header,
        name: name.to_owned(),
        matched: request::cut(matched, detect::MAX_MATCH_BYTES).to_owned(),
    }
}

/// Access control: denied / not-allowed client CIDRs and methods. The finding's effect is
/// `access.effect`.
pub fn access_check(p: &WaasPolicy, client: IpAddr, method: &str) -> Option<Finding> {
    if !p.enabled || p.access.effect == Effect::Disable {
        return None;
    }
    let within = |list: &[String]| {
        list.iter()
            .filter_map(|c| policy::parse_cidr(c))
            .any(|n| n.contains(&client))
    };
    if !p.access.allowed_cidrs.is_empty() && !within(&p.access.allowed_cidrs) {
        return Some(access_finding("access-120", "client", &client.to_string()));
    }
    if within(&p.access.denied_cidrs) {
        return Some(access_finding("access-110", "client", &client.to_string()));
    }
    if !p.access.allowed_methods.is_empty() && !p.access.allowed_methods.iter().any(|m| m == method)
    {
        return Some(access_finding("access-130", "method", method));
    }
    None
}

/// Inspects `req` with the families the policy enables, drops findings silenced by a per-path
/// exception, and gives each the effect of its family.
pub fn evaluate(engine: &Engine, p: &WaasPolicy, req: &HttpRequest) -> Verdict {
    if !p.enabled {
        return Verdict::default();
    }
    let enabled = |f: Family| p.effect(f) != Effect::Disable;
    let ins = engine.inspect(req, &enabled);
    let path = req.path();
    let findings = ins
        .findings
        .into_iter()
        .filter(|f| !p.excepted(&f.rule_id, f.family.as_str(), path))
        .map(|f| Judged {
            effect: p.effect(f.family),
            finding: f,
        })
        .collect();
    Verdict {
        findings,
        incomplete: ins.incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            target: target.into(),
            headers: vec![("Host".into(), "x".into())],
            body: Vec::new(),
            body_complete: true,
        }
    }

    #[test]
    fn sqli_prevented_then_silenced_by_exception() {
        let e = Engine::new();
        let p = WaasPolicy::default();
        let v = evaluate(&e, &p, &get("/items?id=1%27%20OR%20%271%27=%271"));
        assert_eq!(v.effect(), Some(Effect::Prevent), "{v:?}");
        let d = v.decisive().unwrap();
        assert_eq!(d.finding.family, Family::Sqli);
        assert_eq!(d.finding.location, Location::Query);
        assert_eq!(d.finding.name, "id");
        let p =
            WaasPolicy::from_json(r#"{"exceptions":[{"rule_id":"sqli","path_prefix":"/items"}]}"#)
                .unwrap();
        assert_eq!(
            evaluate(&e, &p, &get("/items?id=1%27%20OR%20%271%27=%271")).effect(),
            None
        );
        let p = WaasPolicy::from_json(r#"{"protections":{"sqli":"alert"}}"#).unwrap();
        assert_eq!(
            evaluate(&e, &p, &get("/items?id=1%27%20OR%20%271%27=%271")).effect(),
            Some(Effect::Alert)
        );
    }

    #[test]
    fn access_control() {
        let p = WaasPolicy::from_json(
            r#"{"access":{"denied_cidrs":["203.0.113.0/24"],"allowed_methods":["GET"]}}"#,
        )
        .unwrap();
        let bad: IpAddr = "203.0.113.9".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(access_check(&p, bad, "GET").unwrap().rule_id, "access-110");
        assert_eq!(
            access_check(&p, good, "DELETE").unwrap().rule_id,
            "access-130"
        );
        assert!(access_check(&p, good, "GET").is_none());
        let p = WaasPolicy::from_json(r#"{"access":{"allowed_cidrs":["10.0.0.0/8"]}}"#).unwrap();
        assert_eq!(access_check(&p, good, "GET").unwrap().rule_id, "access-120");
    }
}
