//! Checks a policy and reports every problem at once, each with its path in the document.

use std::collections::HashMap;

use crate::cidr::parse_cidr;
use crate::error::ValidationError;
use crate::glob::problem;
use crate::model::{Effect, NetworkSection, PortRange, ProcessSection, Rule, RuntimePolicy};
use crate::text::show_str;

/// Most rules a policy may hold.
pub const MAX_RULES: usize = 256;
/// Most entries one list (patterns, ports, addresses) may hold.
pub const MAX_LIST_ENTRIES: usize = 1024;
/// Longest rule name, in characters.
pub const MAX_RULE_NAME_CHARS: usize = 100;

/// Collects errors with their paths.
struct Report(Vec<ValidationError>);

impl Report {
    /// Adds one error at `path`.
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Reports a list longer than [`MAX_LIST_ENTRIES`]; true when it is.
    fn too_long<T>(&mut self, path: &str, list: &[T]) -> bool {
        if list.len() > MAX_LIST_ENTRIES {
            self.push(
                path,
                format!(
                    "list has {} entries; the limit is {MAX_LIST_ENTRIES}",
                    list.len()
                ),
            );
            return true;
        }
        false
    }
}

impl RuntimePolicy {
    /// Checks the policy; `Err` lists every problem, each with its path
    /// (`rules[2].network.denied_outbound_ips[0]`) and a message fit to show the operator.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut r = Report(Vec::new());
        if self.rules.len() > MAX_RULES {
            r.push(
                "rules",
                format!(
                    "policy has {} rules; the limit is {MAX_RULES}",
                    self.rules.len()
                ),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            check_name(&mut r, &at, rule);
            let key = rule.name.trim();
            if !key.is_empty() {
                if let Some(first) = names.get(key) {
                    r.push(
                        format!("{at}.name"),
                        format!(
                            "duplicate rule name \"{}\" (also rules[{first}].name); rule names must be unique",
                            show_str(key)
                        ),
                    );
                } else {
                    names.insert(key, i);
                }
            }
            let c = &rule.collection;
            for (field, list) in [
                ("families", &c.families),
                ("containers", &c.containers),
                ("images", &c.images),
                ("clusters", &c.clusters),
            ] {
                check_patterns(&mut r, &format!("{at}.collection.{field}"), list, false);
            }
            check_processes(&mut r, &format!("{at}.processes"), &rule.processes);
            check_network(&mut r, &format!("{at}.network"), &rule.network);
            check_patterns(
                &mut r,
                &format!("{at}.dns.allowed"),
                &rule.dns.allowed,
                false,
            );
            check_patterns(&mut r, &format!("{at}.dns.denied"), &rule.dns.denied, false);
            for (j, d) in rule.dns.denied.iter().enumerate() {
                if let Some(k) = rule
                    .dns
                    .allowed
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(d))
                {
                    r.push(
                        format!("{at}.dns.denied[{j}]"),
                        format!(
                            "\"{}\" is also in {at}.dns.allowed[{k}]; a name cannot be both allowed and denied",
                            show_str(d)
                        ),
                    );
                }
            }
        }
        if r.0.is_empty() { Ok(()) } else { Err(r.0) }
    }
}

/// Rule name: non-empty, bounded, printable.
fn check_name(r: &mut Report, at: &str, rule: &Rule) {
    let path = format!("{at}.name");
    let name = &rule.name;
    if name.trim().is_empty() {
        r.push(path, "rule name is empty");
    } else if name.chars().count() > MAX_RULE_NAME_CHARS {
        r.push(
            path,
            format!(
                "rule name is {} characters long; the limit is {MAX_RULE_NAME_CHARS}",
                name.chars().count()
            ),
        );
    } else if name.chars().any(char::is_control) {
        r.push(path, "rule name contains a control character");
    } else if name.trim() != name {
        r.push(path, "rule name starts or ends with whitespace");
    }
}

/// A list of globs; `process` adds the rules of process patterns.
fn check_patterns(r: &mut Report, path: &str, list: &[String], process: bool) {
    if r.too_long(path, list) {
        return;
    }
    for (j, p) in list.iter().enumerate() {
        let at = format!("{path}[{j}]");
        if let Some(why) = problem(p) {
            r.push(at, why);
        } else if process && p.ends_with('/') {
            r.push(
                at,
                format!(
                    "\"{}\" ends with '/' and cannot match an executable; write \"{}*\" to match everything under it",
                    show_str(p),
                    show_str(p)
                ),
            );
        }
    }
}

/// The process section: its lists, and effects that cannot apply.
fn check_processes(r: &mut Report, at: &str, s: &ProcessSection) {
    check_patterns(r, &format!("{at}.allowed"), &s.allowed, true);
    check_patterns(r, &format!("{at}.denied"), &s.denied, true);
    if s.allowed.len() <= MAX_LIST_ENTRIES && s.denied.len() <= MAX_LIST_ENTRIES {
        for (j, d) in s.denied.iter().enumerate() {
            if let Some(k) = s.allowed.iter().position(|a| a == d) {
                r.push(
                    format!("{at}.denied[{j}]"),
                    format!(
                        "\"{}\" is also in {at}.allowed[{k}]; a process cannot be both allowed and denied",
                        show_str(d)
                    ),
                );
            }
        }
    }
    if s.shell_from_non_shell == Effect::Prevent {
        r.push(
            format!("{at}.shell_from_non_shell"),
            "effect \"prevent\" is not supported here: many applications start /bin/sh \
             legitimately (system(), popen(), exec with a shell); use \"alert\", or deny the \
             shell in processes.denied to kill it",
        );
    }
}

/// The network section: port ranges, overlaps, addresses.
fn check_network(r: &mut Report, at: &str, s: &NetworkSection) {
    let allowed = format!("{at}.allowed_listening_ports");
    let denied = format!("{at}.denied_listening_ports");
    let allowed_ok = check_ports(r, &allowed, &s.allowed_listening_ports);
    let denied_ok = check_ports(r, &denied, &s.denied_listening_ports);
    check_ports(
        r,
        &format!("{at}.denied_outbound_ports"),
        &s.denied_outbound_ports,
    );
    if allowed_ok && denied_ok {
        for (j, d) in s.denied_listening_ports.iter().enumerate() {
            if !well_formed(d) {
                continue;
            }
            if let Some(k) = s
                .allowed_listening_ports
                .iter()
                .position(|a| well_formed(a) && a.overlaps(d))
            {
                r.push(
                    format!("{denied}[{j}]"),
                    format!(
                        "port {d} overlaps {allowed}[{k}] ({}); a port cannot be both allowed and denied",
                        s.allowed_listening_ports[k]
                    ),
                );
            }
        }
    }
    let ips = format!("{at}.denied_outbound_ips");
    if !r.too_long(&ips, &s.denied_outbound_ips) {
        for (j, ip) in s.denied_outbound_ips.iter().enumerate() {
            if let Err(why) = parse_cidr(ip) {
                r.push(format!("{ips}[{j}]"), why);
            }
        }
    }
}

/// Whether a range is within 1-65535 and not reversed.
fn well_formed(p: &PortRange) -> bool {
    (1..=65535).contains(&p.start) && (1..=65535).contains(&p.end) && p.start <= p.end
}

/// Port ranges: within 1-65535, not reversed. True when the list is short enough to compare.
fn check_ports(r: &mut Report, path: &str, list: &[PortRange]) -> bool {
    if r.too_long(path, list) {
        return false;
    }
    for (j, p) in list.iter().enumerate() {
        let at = format!("{path}[{j}]");
        if let Some(bad) = [p.start, p.end].into_iter().find(|&n| n == 0 || n > 65535) {
            r.push(at, format!("port {bad} is out of range 1-65535"));
        } else if p.start > p.end {
            r.push(
                at,
                format!(
                    "range {}-{} is reversed; write {}-{}",
                    p.start, p.end, p.end, p.start
                ),
            );
        }
    }
    true
}
