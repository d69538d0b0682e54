//! Known attack tools, by the signatures they leave in the User-Agent and other headers.

use std::sync::LazyLock;

use super::{Family, Finding, PatternRule};
use crate::request::{HttpRequest, Location, cut};

/// `(id, description, lowercase needles separated by |)`: plain substrings, no regex.
pub(crate) const RULES: &[PatternRule] = &[
    (
        "scanner-110",
        "vulnerability scanner User-Agent",
        "nikto|sqlmap|nessus|nuclei|zgrab|masscan|arachni|acunetix|wpscan|dirbuster|gobuster|feroxbuster|ffuf|wfuzz|openvas|w3af|havij|zmeu|netsparker|qualys|jaeles|whatweb|commix|xsstrike|skipfish|fimap|paros|webinspect|appscan|nmap scripting engine|nmap nse|morfeus|jorgee|brutus|bsqlbf|grendel-scan|webshag|httrack|nsauditor|pangolin|sqlninja|webvulnscan|dotdotpwn|mysqloit|zap/|burpcollaborator|interactsh|struts-pwn|cgichk|bbqsql|absinthe|sf-scanner|muieblackcat|(hydra)|netlab360|black widow|crimscanner|metis|webtrends security analyzer|teh forest lobster|fuzz faster u fool|x-scan|zgrab|censysinspect",
    ),
    (
        "scanner-120",
        "scanner marker header",
        "x-scanner|acunetix-product|acunetix-scanning-agreement|acunetix-user-agreement|x-wipp|x-request-memo|x-request-manager-memo|x-vscanner",
    ),
];

/// The User-Agent needles as one literal alternation, searched in one pass (the regex crate
/// runs a multi-literal searcher for it) instead of one substring search per needle.
static USER_AGENT: LazyLock<regex::Regex> = LazyLock::new(|| {
    let alternation: Vec<String> = RULES[0].2.split('|').map(regex::escape).collect();
    regex::RegexBuilder::new(&alternation.join("|"))
        .unicode(false)
        .build()
        .expect("scanner needles are literals")
});

/// Findings for scanner signatures in the User-Agent (and marker header names).
pub(crate) fn findings(req: &HttpRequest) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(ua) = req.header("user-agent") {
        let lower = ua.to_ascii_lowercase();
        if let Some(n) = USER_AGENT.find(&lower).map(|m| m.as_str()) {
            out.push(Finding {
                rule_id: RULES[0].0.to_owned(),
                family: Family::Scanner,
                message: RULES[0].1.to_owned(),
                location: Location::Header,
                name: "User-Agent".into(),
                matched: cut(n, 200).to_owned(),
            });
        }
    }
    for (name, _) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if RULES[1].2.split('|').any(|n| lower == n) {
            out.push(Finding {
                rule_id: RULES[1].0.to_owned(),
                family: Family::Scanner,
                message: RULES[1].1.to_owned(),
                location: Location::Header,
                name: cut(name, 200).to_owned(),
                matched: cut(name, 200).to_owned(),
            });
            break;
        }
    }
    out
}
