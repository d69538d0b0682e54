//! The compiled policy and the evaluation of one event against it.

use std::collections::HashMap;

use defender_proto::v1::{
    Direction, DnsQuery, Event, NetworkConnection, NetworkListen, ProcessStart, Protocol,
    RuntimeAudit, event::Kind,
};
use serde::{Deserialize, Serialize};

use crate::cidr::{Cidr, parse_addr, parse_cidr};
use crate::error::PolicyError;
use crate::glob::Glob;
use crate::miners;
use crate::model::{Collection, Effect, PortRange, Rule, RuntimePolicy};
use crate::shells;
use crate::text::{show, show_argv, show_str};

/// Where an event happened: the task and container it comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope<'a> {
    /// ECS task definition family.
    pub family: &'a str,
    /// Container name.
    pub container: &'a str,
    /// Container image, as in the task definition.
    pub image: &'a str,
    /// ECS cluster name or ARN.
    pub cluster: &'a str,
}

/// What the Defender knows about an event beyond the event itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventContext<'a> {
    /// The process's executable differs from the first time its path ran in this container, or
    /// was written after the container started (see [`BinaryTracker`](crate::BinaryTracker)).
    pub binary_changed: bool,
    /// Executable path of the parent process, when known.
    pub parent_exe: Option<&'a [u8]>,
}

/// Which check produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    /// The process matches `processes.denied`.
    DeniedProcess,
    /// The process matches nothing in a non-empty `processes.allowed`.
    ProcessNotAllowed,
    /// The process is a crypto-miner (name or argv).
    CryptoMiner,
    /// An outbound connection to a mining pool port (under `processes.crypto_miners`).
    MiningPoolConnection,
    /// The process runs a binary modified after the container started.
    ModifiedBinary,
    /// A shell started by a non-shell parent.
    ShellFromNonShell,
    /// Listening on a port of `network.denied_listening_ports`.
    DeniedListeningPort,
    /// Listening on a port outside a non-empty `network.allowed_listening_ports`.
    ListeningPortNotAllowed,
    /// An outbound connection to a port of `network.denied_outbound_ports`.
    DeniedOutboundPort,
    /// An outbound connection to an address of `network.denied_outbound_ips`.
    DeniedOutboundIp,
    /// A DNS query for a name of `dns.denied`.
    DeniedDomain,
    /// A DNS query for a name matching nothing in a non-empty `dns.allowed`.
    DomainNotAllowed,
}

impl Check {
    /// Checks whose `prevent` refuses the syscall and never kills (DNS queries).
    pub fn blocks_without_kill(self) -> bool {
        matches!(self, Check::DeniedDomain | Check::DomainNotAllowed)
    }

    /// The policy setting (path within a rule) whose effect applies to this check.
    pub fn setting(self) -> &'static str {
        match self {
            Check::DeniedProcess => "processes.denied",
            Check::ProcessNotAllowed => "processes.allowed",
            Check::CryptoMiner | Check::MiningPoolConnection => "processes.crypto_miners",
            Check::ModifiedBinary => "processes.modified_binary",
            Check::ShellFromNonShell => "processes.shell_from_non_shell",
            Check::DeniedListeningPort => "network.denied_listening_ports",
            Check::ListeningPortNotAllowed => "network.allowed_listening_ports",
            Check::DeniedOutboundPort => "network.denied_outbound_ports",
            Check::DeniedOutboundIp => "network.denied_outbound_ips",
            Check::DeniedDomain => "dns.denied",
            Check::DomainNotAllowed => "dns.allowed",
        }
    }
}

/// One violation: what the Defender reports and, under `prevent`, which process it kills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Name of the rule that decided.
    pub rule: String,
    /// The check that fired.
    pub check: Check,
    /// `Alert` or `Prevent`, never `Disable`.
    pub effect: Effect,
    /// Bounded, printable description of the violation (not HTML-escaped).
    pub message: String,
    /// The violation without what the effect does about it (for a Defender that blocks the
    /// syscall instead of killing: "…; prevented: blocked before exec").
    pub description: String,
    /// The process concerned, 0 when unknown.
    pub pid: u32,
    /// Under `prevent`: the process to kill with SIGKILL at once (never 0 or 1).
    pub kill_pid: Option<u32>,
}

impl Verdict {
    /// The runtime audit reporting this verdict about the event with seq `subject_seq`.
    pub fn to_audit(&self, subject_seq: u64) -> RuntimeAudit {
        RuntimeAudit {
            rule: self.rule.clone(),
            effect: self.effect.to_proto() as i32,
            message: self.message.clone(),
            subject_seq,
            pid: self.pid,
        }
    }
}

/// A policy made ready for evaluation: patterns, ports and address blocks pre-parsed.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    rules: Vec<CompiledRule>,
}

/// One rule, compiled.
#[derive(Debug, Clone)]
struct CompiledRule {
    name: String,
    families: Vec<Glob>,
    containers: Vec<Glob>,
    images: Vec<Glob>,
    clusters: Vec<Glob>,
    processes: Processes,
    network: Network,
    dns: Dns,
}

/// The process section, compiled.
#[derive(Debug, Clone)]
struct Processes {
    effect: Effect,
    allowed: Patterns,
    denied: Patterns,
    modified_binary: Effect,
    crypto_miners: Effect,
    shell_from_non_shell: Effect,
}

/// The DNS section, compiled (lower-case globs).
#[derive(Debug, Clone)]
struct Dns {
    effect: Effect,
    allowed: Vec<(Glob, String)>,
    denied: Vec<(Glob, String)>,
}

/// The network section, compiled.
#[derive(Debug, Clone)]
struct Network {
    effect: Effect,
    allowed_listening: Vec<PortRange>,
    denied_listening: Vec<PortRange>,
    denied_outbound_ports: Vec<PortRange>,
    /// Blocks with the entry as written, for messages.
    denied_outbound_ips: Vec<(Cidr, String)>,
}

/// Process patterns split for speed: literal names and paths in maps, globs in lists.
#[derive(Debug, Clone, Default)]
struct Patterns {
    texts: Vec<String>,
    exact_names: HashMap<Vec<u8>, usize>,
    exact_paths: HashMap<Vec<u8>, usize>,
    name_globs: Vec<(Glob, usize)>,
    path_globs: Vec<(Glob, usize)>,
}

impl Patterns {
    /// Sorts each pattern by kind: with `/` it matches paths, without it basenames.
    fn new(list: &[String]) -> Self {
        let mut p = Patterns {
            texts: list.to_vec(),
            ..Patterns::default()
        };
        for (i, text) in list.iter().enumerate() {
            let glob = Glob::new(text);
            let is_path = text.contains('/');
            match (is_path, glob.is_literal()) {
                (false, true) => {
                    p.exact_names.entry(text.as_bytes().to_vec()).or_insert(i);
                }
                (true, true) => {
                    p.exact_paths.entry(text.as_bytes().to_vec()).or_insert(i);
                }
                (false, false) => p.name_globs.push((glob, i)),
                (true, false) => p.path_globs.push((glob, i)),
            }
        }
        p
    }

    /// Whether the list is empty.
    fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The first pattern (by kind: exact before glob) matching one of `names` or `paths`.
    fn find(&self, names: &[&[u8]], paths: &[&[u8]]) -> Option<&str> {
        let hit = names
            .iter()
            .find_map(|n| self.exact_names.get(*n).copied())
            .or_else(|| paths.iter().find_map(|p| self.exact_paths.get(*p).copied()))
            .or_else(|| {
                self.name_globs
                    .iter()
                    .find(|(g, _)| names.iter().any(|n| g.matches(n)))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.path_globs
                    .iter()
                    .find(|(g, _)| paths.iter().any(|p| g.matches(p)))
                    .map(|(_, i)| *i)
            })?;
        self.texts.get(hit).map(String::as_str)
    }
}

/// Compiles domain patterns, lower-cased (names are compared lower-case).
fn domain_globs(list: &[String]) -> Vec<(Glob, String)> {
    list.iter()
        .map(|p| {
            let lower = p.trim_end_matches('.').to_ascii_lowercase();
            (Glob::new(&lower), p.clone())
        })
        .collect()
}

/// Compiles every pattern of a collection list.
fn globs(list: &[String]) -> Vec<Glob> {
    list.iter().map(|p| Glob::new(p)).collect()
}

/// Whether `value` matches the list (an empty list matches anything).
fn any_matches(list: &[Glob], value: &str) -> bool {
    list.is_empty() || list.iter().any(|g| g.matches(value.as_bytes()))
}

impl CompiledRule {
    /// Compiles one rule; entries validation would reject are kept literally (patterns) or
    /// dropped (address blocks).
    fn new(rule: &Rule) -> Self {
        let Collection {
            families,
            containers,
            images,
            clusters,
        } = &rule.collection;
        let p = &rule.processes;
        let n = &rule.network;
        CompiledRule {
            name: rule.name.clone(),
            families: globs(families),
            containers: globs(containers),
            images: globs(images),
            clusters: globs(clusters),
            processes: Processes {
                effect: p.effect,
                allowed: Patterns::new(&p.allowed),
                denied: Patterns::new(&p.denied),
                modified_binary: p.modified_binary,
                crypto_miners: p.crypto_miners,
                // Validation rejects prevent here; an unvalidated policy gets alert.
                shell_from_non_shell: match p.shell_from_non_shell {
                    Effect::Prevent => Effect::Alert,
                    e => e,
                },
            },
            network: Network {
                effect: n.effect,
                allowed_listening: n.allowed_listening_ports.clone(),
                denied_listening: n.denied_listening_ports.clone(),
                denied_outbound_ports: n.denied_outbound_ports.clone(),
                denied_outbound_ips: n
                    .denied_outbound_ips
                    .iter()
                    .filter_map(|t| parse_cidr(t).ok().map(|c| (c, t.clone())))
                    .collect(),
            },
            dns: Dns {
                effect: rule.dns.effect,
                allowed: domain_globs(&rule.dns.allowed),
                denied: domain_globs(&rule.dns.denied),
            },
        }
    }

    /// A DNS query against the `dns` section.
    fn dns(&self, q: &DnsQuery, out: &mut Vec<Verdict>) {
        let d = &self.dns;
        if d.effect == Effect::Disable || q.name.is_empty() {
            return;
        }
        let name = q.name.trim_end_matches('.').to_ascii_lowercase();
        let who = || format!("DNS query for {} (pid {})", show_str(&name), q.pid);
        if let Some((_, text)) = d.denied.iter().find(|(g, _)| g.matches(name.as_bytes())) {
            let what = format!("{}: matches dns.denied \"{}\"", who(), show_str(text));
            out.push(self.verdict(Check::DeniedDomain, d.effect, q.pid, what));
        } else if !d.allowed.is_empty()
            && !d.allowed.iter().any(|(g, _)| g.matches(name.as_bytes()))
        {
            let what = format!("{}: not in dns.allowed", who());
            out.push(self.verdict(Check::DomainNotAllowed, d.effect, q.pid, what));
        }
    }

    /// Whether the rule's collection matches `scope`.
    fn applies_to(&self, scope: &Scope<'_>) -> bool {
        any_matches(&self.families, scope.family)
            && any_matches(&self.containers, scope.container)
            && any_matches(&self.images, scope.image)
            && any_matches(&self.clusters, scope.cluster)
    }

    /// Builds a verdict; under `prevent` it names the process to kill (never pid 0 or 1).
    fn verdict(&self, check: Check, effect: Effect, pid: u32, what: String) -> Verdict {
        let kill_pid = (effect == Effect::Prevent && pid > 1).then_some(pid);
        let description = what.clone();
        let message = match (effect, kill_pid) {
            (Effect::Prevent, _) if check.blocks_without_kill() => {
                format!("{what}; prevented: the query is refused")
            }
            (Effect::Prevent, Some(pid)) => {
                format!("{what}; prevented: killing pid {pid} (SIGKILL)")
            }
            (Effect::Prevent, None) if pid == 0 => {
                format!("{what}; prevent: the process is unknown, nothing is killed")
            }
            (Effect::Prevent, None) => format!("{what}; prevent: pid {pid} is never killed"),
            _ => what,
        };
        let kill_pid = kill_pid.filter(|_| !check.blocks_without_kill());
        Verdict {
            rule: self.name.clone(),
            check,
            effect,
            message,
            description,
            pid,
            kill_pid,
        }
    }

    /// Checks a process start.
    fn process(&self, p: &ProcessStart, ctx: &EventContext<'_>, out: &mut Vec<Verdict>) {
        let s = &self.processes;
        let exe_path = strip_deleted(&p.exe);
        let exe_name = basename(exe_path);
        let argv0 = p.argv.first().map(Vec::as_slice).unwrap_or_default();
        let argv0_name = argv0_basename(argv0);
        let who = || describe_process(p);

        if s.effect != Effect::Disable {
            // Denied: the executable, or what argv[0] claims to be.
            let (names, paths): (Vec<&[u8]>, Vec<&[u8]>) = if exe_path.is_empty() {
                (vec![argv0_name], vec![argv0])
            } else {
                (vec![exe_name, argv0_name], vec![exe_path])
            };
            if let Some(pattern) = s.denied.find(&names, &paths) {
                let what = format!("{} matches denied pattern \"{}\"", who(), show_str(pattern));
                out.push(self.verdict(Check::DeniedProcess, s.effect, p.pid, what));
            } else if !s.allowed.is_empty() {
                // Allowed: the executable only (argv[0] is the caller's choice), argv[0] when
                // the executable is unknown.
                let (names, paths): (Vec<&[u8]>, Vec<&[u8]>) = if exe_path.is_empty() {
                    (vec![argv0_name], vec![argv0])
                } else {
                    (vec![exe_name], vec![exe_path])
                };
                if s.allowed.find(&names, &paths).is_none() {
                    let what = format!("{} is not in the allowed process list", who());
                    out.push(self.verdict(Check::ProcessNotAllowed, s.effect, p.pid, what));
                }
            }
        }

        if s.crypto_miners != Effect::Disable {
            let reason = miners::miner_name(exe_name)
                .or_else(|| miners::miner_name(argv0_name))
                .map(|name| format!("named like the miner \"{name}\""))
                .or_else(|| miners::argv_indicator(&p.argv));
            if let Some(reason) = reason {
                let what = format!("crypto-miner: {}: {reason}", who());
                out.push(self.verdict(Check::CryptoMiner, s.crypto_miners, p.pid, what));
            }
        }

        if s.modified_binary != Effect::Disable && ctx.binary_changed {
            let what = format!(
                "{} started from a binary modified after the container started",
                who()
            );
            out.push(self.verdict(Check::ModifiedBinary, s.modified_binary, p.pid, what));
        }

        if s.shell_from_non_shell != Effect::Disable
            && shells::is_shell(exe_name, argv0_name)
            && let Some(parent) = ctx.parent_exe
        {
            let parent = strip_deleted(parent);
            if !parent.is_empty() && !shells::is_shell_like_parent(basename(parent)) {
                let what = format!(
                    "shell {} started by non-shell parent {} (pid {})",
                    who(),
                    show(parent),
                    p.ppid
                );
                out.push(self.verdict(
                    Check::ShellFromNonShell,
                    s.shell_from_non_shell,
                    p.pid,
                    what,
                ));
            }
        }
    }

    /// Checks a listening socket.
    fn listen(&self, l: &NetworkListen, out: &mut Vec<Verdict>) {
        let n = &self.network;
        if l.closed || l.local_port == 0 || n.effect == Effect::Disable {
            return;
        }
        let port = l.local_port;
        let who = || {
            format!(
                "{} listening on {} (pid {})",
                protocol_name(l.protocol),
                host_port(&l.local_addr, port),
                l.pid
            )
        };
        if let Some(r) = n.denied_listening.iter().find(|r| r.contains(port)) {
            let what = format!(
                "{}: port {port} is denied (denied_listening_ports {r})",
                who()
            );
            out.push(self.verdict(Check::DeniedListeningPort, n.effect, l.pid, what));
        } else if !n.allowed_listening.is_empty()
            && !n.allowed_listening.iter().any(|r| r.contains(port))
        {
            let what = format!("{}: port {port} is not an allowed listening port", who());
            out.push(self.verdict(Check::ListeningPortNotAllowed, n.effect, l.pid, what));
        }
    }

    /// Checks a connection; only open outbound ones can violate.
    fn connection(&self, c: &NetworkConnection, out: &mut Vec<Verdict>) {
        if c.closed || c.direction != Direction::Outbound as i32 {
            return;
        }
        let n = &self.network;
        let port = c.remote_port;
        let who = || {
            format!(
                "outbound {} connection to {} (pid {})",
                protocol_name(c.protocol),
                host_port(&c.remote_addr, port),
                c.pid
            )
        };
        if n.effect != Effect::Disable {
            if let Some(r) = n.denied_outbound_ports.iter().find(|r| r.contains(port)) {
                let what = format!(
                    "{}: port {port} is denied (denied_outbound_ports {r})",
                    who()
                );
                out.push(self.verdict(Check::DeniedOutboundPort, n.effect, c.pid, what));
            }
            if let Some(addr) = parse_addr(&c.remote_addr)
                && let Some((_, entry)) =
                    n.denied_outbound_ips.iter().find(|(b, _)| b.contains(addr))
            {
                let what = format!(
                    "{}: address {addr} is denied (denied_outbound_ips {})",
                    who(),
                    show_str(entry)
                );
                out.push(self.verdict(Check::DeniedOutboundIp, n.effect, c.pid, what));
            }
        }
        let miners = self.processes.crypto_miners;
        let tcp = matches!(
            Protocol::try_from(c.protocol),
            Ok(Protocol::Tcp | Protocol::Unspecified)
        );
        if miners != Effect::Disable && tcp && miners::is_pool_port(port) {
            let what = format!(
                "possible crypto-miner: {}: port {port} is a well-known mining pool port",
                who()
            );
            out.push(self.verdict(Check::MiningPoolConnection, miners, c.pid, what));
        }
    }
}

impl RuntimePolicy {
    /// Compiles the policy for [`CompiledPolicy::evaluate`]. Meant for a validated policy:
    /// invalid address blocks are skipped and other invalid entries never match usefully.
    pub fn compile(&self) -> CompiledPolicy {
        CompiledPolicy {
            rules: self.rules.iter().map(CompiledRule::new).collect(),
        }
    }
}

impl CompiledPolicy {
    /// Parses, validates and compiles a policy document (`Policy.rules_json`).
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        let policy = RuntimePolicy::parse(json)?;
        policy.validate().map_err(PolicyError::Invalid)?;
        Ok(policy.compile())
    }

    /// Name of the rule that applies to `scope`: the first whose collection matches.
    pub fn matching_rule(&self, scope: &Scope<'_>) -> Option<&str> {
        self.rule_for(scope).map(|r| r.name.as_str())
    }

    /// The first rule whose collection matches `scope`.
    fn rule_for(&self, scope: &Scope<'_>) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.applies_to(scope))
    }

    /// Evaluates one event observed in `scope` against the rule that applies there; returns the
    /// violations (empty when none, or when no rule applies). Process starts, listening sockets
    /// and outbound connections are checked; other events never violate.
    pub fn evaluate(
        &self,
        scope: &Scope<'_>,
        event: &Event,
        ctx: &EventContext<'_>,
    ) -> Vec<Verdict> {
        let mut out = Vec::new();
        let Some(rule) = self.rule_for(scope) else {
            return out;
        };
        match &event.kind {
            Some(Kind::ProcessStart(p)) => rule.process(p, ctx, &mut out),
            Some(Kind::NetworkListen(l)) => rule.listen(l, &mut out),
            Some(Kind::NetworkConnection(c)) => rule.connection(c, &mut out),
            Some(Kind::DnsQuery(q)) => rule.dns(q, &mut out),
            _ => {}
        }
        out
    }
}

/// The path without the ` (deleted)` suffix `/proc/<pid>/exe` gets once the file is removed.
fn strip_deleted(path: &[u8]) -> &[u8] {
    path.strip_suffix(b" (deleted)").unwrap_or(path)
}

/// The last `/`-separated component.
fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// Basename of `argv[0]`, without the `-` login shells carry.
fn argv0_basename(argv0: &[u8]) -> &[u8] {
    let b = basename(argv0);
    b.strip_prefix(b"-").unwrap_or(b)
}

/// `process /usr/bin/nc (pid 42, "nc -lvp 4444")`, bounded.
fn describe_process(p: &ProcessStart) -> String {
    let exe = if p.exe.is_empty() {
        "(unknown executable)".to_owned()
    } else {
        show(&p.exe)
    };
    format!("process {exe} (pid {}, \"{}\")", p.pid, show_argv(&p.argv))
}

/// `tcp`, `udp`, or `socket` when unknown.
fn protocol_name(protocol: i32) -> &'static str {
    match Protocol::try_from(protocol) {
        Ok(Protocol::Tcp) => "tcp",
        Ok(Protocol::Udp) => "udp",
        _ => "socket",
    }
}

/// `addr:port`, with IPv6 addresses in brackets; the address is bounded and printable.
fn host_port(addr: &str, port: u32) -> String {
    let a = show_str(addr);
    if a.contains(':') && !a.starts_with('[') {
        format!("[{a}]:{port}")
    } else {
        format!("{a}:{port}")
    }
}
