//! Runtime policy of the App-Embedded Defender: the rules document the Console edits, validates,
//! versions and pushes (`Policy.rules_json`), and the evaluation of process and network events
//! the Defender performs against it. Pure logic: no I/O, no async.
//!
//! # Flow
//!
//! Console: [`RuntimePolicy::parse`] (strict JSON, errors with path, line and column), then
//! [`RuntimePolicy::validate`] (every problem at once, each with its path), store, push.
//! Defender: [`CompiledPolicy::from_json`] (parse + validate + [`RuntimePolicy::compile`]), then
//! [`CompiledPolicy::evaluate`] for each event; each [`Verdict`] becomes a `RuntimeAudit`
//! ([`Verdict::to_audit`]) and, when [`Verdict::kill_pid`] is set, the Defender sends SIGKILL
//! to that pid at once (after the fact: the event is observed once the process runs or the
//! socket exists). The Defender must never act on its own pid and should kill a pid once even
//! when several verdicts name it.
//!
//! # Document
//!
//! ```json
//! {
//!   "rules": [
//!     {
//!       "name": "web: no tools, no ssh",
//!       "collection": { "families": ["web-*"], "containers": [], "images": [], "clusters": ["prod"] },
//!       "processes": {
//!         "effect": "prevent",
//!         "allowed": [],
//!         "denied": ["nc", "ncat", "/tmp/*"],
//!         "modified_binary": "alert",
//!         "crypto_miners": "prevent",
//!         "shell_from_non_shell": "alert"
//!       },
//!       "network": {
//!         "effect": "alert",
//!         "allowed_listening_ports": [8080],
//!         "denied_listening_ports": [22],
//!         "denied_outbound_ports": [25, "6660-6669"],
//!         "denied_outbound_ips": ["169.254.169.254", "10.0.0.0/8", "2001:db8::/32"]
//!       }
//!     }
//!   ]
//! }
//! ```
//!
//! Keys are snake_case (camelCase spellings are still read) and unknown keys are errors. Only `rules` and each rule's `name` are
//! required: lists default to empty, effects to `"disable"`. Effects are `"disable"`,
//! `"alert"`, `"prevent"`. Ports are numbers or `"start-end"` strings.
//!
//! # Semantics
//!
//! - **Rule order.** The first rule whose collection matches the event's [`Scope`] applies, the
//!   whole rule; later rules are not consulted. A rule with every effect `disable` placed first
//!   exempts its workloads. No matching rule: no verdicts.
//! - **Collections.** Each non-empty list must hold a glob matching the scope's value (lists
//!   AND, entries OR); empty lists match anything. Globs are case-sensitive; `*` matches any run
//!   of characters including `/`, `?` one character; no other syntax (`[`, `]`, `\` are
//!   rejected by validation).
//! - **Process patterns.** A pattern with `/` matches the executable's full path; without `/` it
//!   matches a basename. `denied` checks the executable's basename and `argv[0]`'s basename (a
//!   renamed `argv[0]` does not hide a denied binary, and a denied name in `argv[0]` is enough);
//!   `allowed` checks the executable only, since `argv[0]` is the caller's choice (on busybox
//!   images, allow `busybox`; a script's executable is its interpreter). When the executable is
//!   unknown (empty), `argv[0]` stands in. A `/proc` ` (deleted)` suffix is ignored and a login
//!   shell's leading `-` in `argv[0]` too. Denied wins over allowed (validation rejects the same
//!   pattern in both). `processes.effect` applies to both lists.
//! - **Crypto-miners** (`crypto_miners`): the executable's or `argv[0]`'s basename is a known miner
//!   ([`MINER_NAMES`], also with a `-`/`_`/`.` suffix), or an argument holds a stratum URL
//!   (`stratum+tcp://`, `stratum+ssl://`, `stratum2+tcp://`…) or `--donate-level`, or a pool
//!   flag (`-o`, `--url`, `--pool`, `-pool`) names `host:port` with a pool port
//!   ([`POOL_PORTS`]). An open outbound TCP connection to a pool port is a
//!   [`Check::MiningPoolConnection`] under the same effect (a weaker signal: `prevent` kills the
//!   connecting process).
//! - **Modified binaries** (`modified_binary`): fires when [`EventContext::binary_changed`] is
//!   set, which the Defender computes with a per-container [`BinaryTracker`]: a path whose
//!   (device, inode, size, mtime, ctime), or SHA-256 when both sightings have one, differs from
//!   its first sighting; with [`BinaryTracker::with_container_start`] also any binary whose
//!   ctime is later than the container's start (a payload written and run).
//! - **Shell from a non-shell parent** (`shell_from_non_shell`): the process is a shell
//!   ([`SHELLS`], or busybox run as one) and its parent's executable
//!   ([`EventContext::parent_exe`]) is known and neither a shell nor a launcher that starts
//!   shells routinely ([`SHELL_LAUNCHERS`]: init systems, the Defender, sudo, cron…). `prevent`
//!   is rejected by validation (too many applications run `sh -c` legitimately; deny the shell
//!   instead to kill it).
//! - **Network** (`network.effect` for every list; TCP and UDP alike): listening on a denied
//!   port, or on a port outside a non-empty allowed list; an outbound connection to a denied
//!   port or to an address in a denied block (IPv4 and IPv6; IPv4-mapped IPv6 addresses count
//!   as IPv4). Inbound connections and `closed` socket events never violate.
//! - **Verdicts.** At most one per check and event, in this order: denied or not-allowed
//!   process, crypto-miner, modified binary, shell; listening port; outbound port, outbound
//!   address, mining pool.
//! - **Prevent.** `kill_pid` is the process's pid for process checks, the listening pid for
//!   listening ports, the connecting pid for outbound connections; never 0 (unknown) or 1.
//!   The message says what is killed.
//! - **Messages** are specific, single-line and bounded: attacker-controlled values (paths,
//!   argv, addresses) are cut to [`MAX_MESSAGE_VALUE_CHARS`] characters with control characters
//!   escaped. They are not HTML-escaped; the Console does that.

#![warn(missing_docs)]

mod binary;
mod cidr;
mod error;
mod evaluate;
mod glob;
mod miners;
mod model;
mod shells;
mod text;
mod validate;

pub use binary::{BinaryIdentity, BinaryTracker, DEFAULT_TRACKED_BINARIES};
pub use error::{PolicyError, ValidationError};
pub use evaluate::{Check, CompiledPolicy, EventContext, Scope, Verdict};
pub use glob::MAX_PATTERN_BYTES;
pub use miners::{MINER_NAMES, POOL_PORTS, is_pool_port};
pub use model::{
    Collection, DEFAULT_RULE_NAME, DnsSection, Effect, MAX_POLICY_BYTES, NetworkSection, PortRange,
    ProcessSection, Rule, RuntimePolicy,
};
pub use shells::{SHELL_LAUNCHERS, SHELLS};
pub use text::MAX_MESSAGE_VALUE_CHARS;
pub use validate::{MAX_LIST_ENTRIES, MAX_RULE_NAME_CHARS, MAX_RULES};
