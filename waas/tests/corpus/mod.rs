//! Loads the detection corpora in `tests/data`: the OWASP CRS regression payloads (`crs.jsonl`,
//! extracted by `extract_crs.py`, Apache-2.0) and the benign traffic set (`benign.jsonl`, made
//! by `make_benign.py`), and measures an engine on them. Shared by the `detection` test and the
//! `detection` bench.

#![allow(dead_code)]

use std::collections::BTreeMap;

use defender_waas::{Engine, Family, HttpRequest, WaasPolicy, evaluate};

/// One corpus request with its expected family (`None` for benign).
pub struct Case {
    pub family: Option<String>,
    pub id: String,
    pub req: HttpRequest,
}

fn load(text: &str, benign: bool) -> Vec<Case> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("uri").is_some())
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            let headers = v
                .get("headers")
                .and_then(|h| h.as_object())
                .map(|o| {
                    o.iter()
                        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let family = (!benign).then(|| s("family"));
            let id = format!(
                "{}#{}",
                v.get("rule_id").map(|x| x.to_string()).unwrap_or_default(),
                v.get("test_id").map(|x| x.to_string()).unwrap_or_default()
            );
            Case {
                family,
                id,
                req: HttpRequest {
                    method: s("method"),
                    target: s("uri"),
                    headers,
                    body: s("data").into_bytes(),
                    body_complete: true,
                },
            }
        })
        .collect()
}

/// The CRS attack payloads.
pub fn attacks() -> Vec<Case> {
    load(include_str!("../data/crs.jsonl"), false)
}

/// The benign traffic.
pub fn benign() -> Vec<Case> {
    load(include_str!("../data/benign.jsonl"), true)
}

/// Every family enabled (alert), nothing else.
pub fn policy() -> WaasPolicy {
    let mut p = WaasPolicy::default();
    for f in Family::ALL {
        p.protections.insert(f, defender_waas::Effect::Alert);
    }
    p
}

/// Detection per family: (detected by its own family, detected by any rule, total).
pub struct Rates {
    pub per_family: BTreeMap<String, (usize, usize, usize)>,
    pub false_positives: usize,
    pub benign_total: usize,
    pub misses: Vec<String>,
    pub fp_examples: Vec<String>,
}

/// Measures `engine` on both corpora.
pub fn measure(engine: &Engine) -> Rates {
    let p = policy();
    let mut per_family: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for c in attacks() {
        let fam = c.family.clone().unwrap_or_default();
        let v = evaluate(engine, &p, &c.req);
        let own = v
            .findings
            .iter()
            .any(|j| family_name(j.finding.family) == fam);
        let any = !v.findings.is_empty();
        let e = per_family.entry(fam.clone()).or_default();
        e.0 += usize::from(own);
        e.1 += usize::from(any);
        e.2 += 1;
        if !any {
            misses.push(format!(
                "{fam} {} {} {:?} | {}",
                c.id,
                c.req.method,
                c.req.target,
                String::from_utf8_lossy(&c.req.body)
            ));
        }
    }
    let mut fp = 0;
    let mut fp_examples = Vec::new();
    let benign = benign();
    for c in &benign {
        let v = evaluate(engine, &p, &c.req);
        if !v.findings.is_empty() {
            fp += 1;
            fp_examples.push(format!(
                "{} {:?}",
                c.req.target,
                v.findings
                    .iter()
                    .map(|j| format!(
                        "{} {:?} {:?}",
                        j.finding.rule_id, j.finding.name, j.finding.matched
                    ))
                    .collect::<Vec<_>>()
            ));
        }
    }
    Rates {
        per_family,
        false_positives: fp,
        benign_total: benign.len(),
        misses,
        fp_examples,
    }
}

/// The corpus family name for a detector family (CRS 944 = Java, 913 = scanners...).
fn family_name(f: Family) -> &'static str {
    match f {
        Family::Shellshock => "cmdi",
        Family::Ssrf => "rfi",
        other => other.as_str(),
    }
}
