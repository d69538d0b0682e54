//! Protocol findings from the request head: request smuggling (Content-Length with
//! Transfer-Encoding, duplicate or malformed lengths, unknown codings), malformed targets, and
//! oversized heads (measured by the proxy, which alone sees the head's size).

use super::{Family, Finding, PatternRule};
use crate::request::{HttpRequest, Location, cut};

/// `(id, description, unused)`.
pub(crate) const RULES: &[PatternRule] = &[
    (
        "protocol-110",
        "Content-Length and Transfer-Encoding together (request smuggling)",
        "",
    ),
    (
        "protocol-120",
        "several or malformed Content-Length headers",
        "",
    ),
    (
        "protocol-130",
        "Transfer-Encoding other than chunked, or repeated",
        "",
    ),
    (
        "protocol-140",
        "malformed request target or control characters in the head",
        "",
    ),
    (
        "protocol-150",
        "request head larger than the policy's max_header_bytes",
        "",
    ),
];

/// Rule id of an oversized request head (answered 431 by the proxy).
pub const OVERSIZED_HEAD: &str = "protocol-150";

/// The finding for a request head of `size` bytes over `limit` (the proxy measures it).
pub fn oversized_head(size: usize, limit: usize) -> Finding {
    finding(4, "", &format!("{size} bytes (limit {limit})"))
}

/// Builds a protocol finding for rule `i` of [`RULES`].
pub(crate) fn finding(i: usize, name: &str, matched: &str) -> Finding {
    Finding {
        rule_id: RULES[i].0.to_owned(),
        family: Family::Protocol,
        message: RULES[i].1.to_owned(),
        location: Location::Header,
        name: cut(name, 200).to_owned(),
        matched: cut(matched, 200).to_owned(),
    }
}

/// Findings about the request head itself.
pub fn protocol_findings(req: &HttpRequest) -> Vec<Finding> {
    let mut out = Vec::new();
    let values = |n: &str| -> Vec<&str> {
        req.headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let cl = values("content-length");
    let te = values("transfer-encoding");
    if !cl.is_empty() && !te.is_empty() {
        out.push(finding(0, "Transfer-Encoding", te[0]));
    }
    let cl_bad = cl.len() > 1
        || cl
            .iter()
            .any(|v| v.is_empty() || !v.trim().bytes().all(|c| c.is_ascii_digit()));
    if cl_bad {
        out.push(finding(1, "Content-Length", &cl.join(", ")));
    }
    if te.len() > 1 || te.iter().any(|v| !v.trim().eq_ignore_ascii_case("chunked")) {
        out.push(finding(2, "Transfer-Encoding", &te.join(", ")));
    }
    let bad_target = !(req.target.starts_with('/') || req.target == "*")
        || req.target.bytes().any(|c| c < 0x20 || c == 0x7f)
        || req
            .headers
            .iter()
            .any(|(_, v)| v.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f));
    if bad_target {
        out.push(finding(3, "", &req.target));
    }
    out
}
