//! The policy document: what the Console stores, edits and pushes as `Policy.rules_json`.
//!
//! JSON with snake_case keys (the camelCase spellings of earlier versions are still read, so
//! stored policies and Defenders' cached copies stay valid); unknown keys are rejected. Every field but `rules` and a rule's
//! `name` may be left out: lists default to empty, effects to `disable`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::PolicyError;

/// Largest policy document [`RuntimePolicy::parse`] accepts, in bytes.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// The runtime policy: rules in order; the first rule whose collection matches a scope applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePolicy {
    /// Ordered rules; earlier rules take precedence.
    pub rules: Vec<Rule>,
}

/// One rule: where it applies and what it checks there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique, non-empty name; audits name the rule that produced them.
    pub name: String,
    /// Which workloads the rule applies to.
    #[serde(default)]
    pub collection: Collection,
    /// Process checks.
    #[serde(default)]
    pub processes: ProcessSection,
    /// Network checks.
    #[serde(default)]
    pub network: NetworkSection,
    /// DNS checks (exact capture reads every query the application sends).
    #[serde(default)]
    pub dns: DnsSection,
}

/// DNS checks of a rule: the names the application resolves. Patterns are case-insensitive
/// domain globs (`*.example.com` matches every name below example.com, not example.com itself;
/// `pool.*` any name starting with `pool.`). Prevent refuses the query before it is sent (the
/// lookup fails), which needs exact capture; polling Defenders see no DNS queries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Effect of both lists.
    #[serde(default)]
    pub effect: Effect,
    /// When non-empty, resolving any other name is a violation.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Resolving a name matching one of these is a violation.
    #[serde(default)]
    pub denied: Vec<String>,
}

/// Workloads a rule applies to: every non-empty list must have a pattern matching the scope.
///
/// Patterns are case-sensitive globs (`*` any run of characters, `?` one character); an empty
/// list matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    /// ECS task definition families (`web-*`).
    #[serde(default)]
    pub families: Vec<String>,
    /// Container names within the task.
    #[serde(default)]
    pub containers: Vec<String>,
    /// Container images as written in the task definition (`*/nginx:*`).
    #[serde(default)]
    pub images: Vec<String>,
    /// ECS cluster names or ARNs.
    #[serde(default)]
    pub clusters: Vec<String>,
}

/// What a violated check does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The check is off.
    #[default]
    Disable,
    /// Report a runtime audit.
    Alert,
    /// Report a runtime audit and kill the offending process (SIGKILL).
    Prevent,
}

impl Effect {
    /// The effect as written in the policy document.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Disable => "disable",
            Effect::Alert => "alert",
            Effect::Prevent => "prevent",
        }
    }

    /// The wire form for `RuntimeAudit.effect` (`Disable` has none and maps to `UNSPECIFIED`).
    pub fn to_proto(self) -> defender_proto::v1::Effect {
        match self {
            Effect::Disable => defender_proto::v1::Effect::Unspecified,
            Effect::Alert => defender_proto::v1::Effect::Alert,
            Effect::Prevent => defender_proto::v1::Effect::Prevent,
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Process checks of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// Effect of the `allowed` and `denied` lists.
    #[serde(default)]
    pub effect: Effect,
    /// When non-empty, a process whose executable matches none of these patterns is a violation.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// A process matching any of these patterns (name or path globs) is a violation.
    #[serde(default)]
    pub denied: Vec<String>,
    /// A process started from a binary modified after the container started.
    #[serde(alias = "modifiedBinary")]
    #[serde(default)]
    pub modified_binary: Effect,
    /// A known crypto-miner (name, stratum URL or pool port in argv, outbound pool connection).
    #[serde(alias = "cryptoMiners")]
    #[serde(default)]
    pub crypto_miners: Effect,
    /// A shell started by a parent that is not a shell; `disable` or `alert` only.
    #[serde(alias = "shellFromNonShell")]
    #[serde(default)]
    pub shell_from_non_shell: Effect,
}

/// Network checks of a rule (TCP and UDP alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Effect of every list in this section.
    #[serde(default)]
    pub effect: Effect,
    /// When non-empty, listening on any other port is a violation.
    #[serde(alias = "allowedListeningPorts")]
    #[serde(default)]
    pub allowed_listening_ports: Vec<PortRange>,
    /// Listening on one of these ports is a violation.
    #[serde(alias = "deniedListeningPorts")]
    #[serde(default)]
    pub denied_listening_ports: Vec<PortRange>,
    /// An outbound connection to one of these remote ports is a violation.
    #[serde(alias = "deniedOutboundPorts")]
    #[serde(default)]
    pub denied_outbound_ports: Vec<PortRange>,
    /// An outbound connection to one of these addresses or blocks (`10.1.2.3`, `10.0.0.0/8`,
    /// `2001:db8::/32`).
    #[serde(alias = "deniedOutboundIps")]
    #[serde(default)]
    pub denied_outbound_ips: Vec<String>,
}

/// An inclusive port range; JSON `8080` (one port) or `"8000-8999"`.
///
/// Held as `u32` so that [`RuntimePolicy::validate`] can report out-of-range ports with their path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub start: u32,
    /// Last port of the range (equal to `start` for a single port).
    pub end: u32,
}

impl PortRange {
    /// A range holding one port.
    pub fn single(port: u16) -> Self {
        Self {
            start: u32::from(port),
            end: u32::from(port),
        }
    }

    /// The range `start..=end`.
    pub fn new(start: u16, end: u16) -> Self {
        Self {
            start: u32::from(start),
            end: u32::from(end),
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u32) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.start == self.end {
            s.serialize_u32(self.start)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortRangeVisitor)
    }
}

/// Accepts a port number or a `"N"` / `"N-M"` string.
struct PortRangeVisitor;

/// What a port entry must look like, for error messages.
const PORT_EXPECTED: &str = "a port number or a range string like \"8000-8999\"";

impl Visitor<'_> for PortRangeVisitor {
    type Value = PortRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PORT_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
        let port =
            u32::try_from(v).map_err(|_| E::custom(format!("port {v} is out of range 1-65535")))?;
        Ok(PortRange {
            start: port,
            end: port,
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("port {v} is out of range 1-65535"))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
        parse_port_range(v).map_err(E::custom)
    }
}

/// Parses `"N"` or `"N-M"` (spaces around the numbers allowed).
fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let bad = || format!("{text:?} is not {PORT_EXPECTED}");
    let number = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u32>()
            .map_err(|_| format!("port {s} is out of range 1-65535"))
    };
    match text.split_once('-') {
        None => {
            let port = number(text)?;
            Ok(PortRange {
                start: port,
                end: port,
            })
        }
        Some((a, b)) => Ok(PortRange {
            start: number(a)?,
            end: number(b)?,
        }),
    }
}

impl RuntimePolicy {
    /// Parses a policy document strictly (unknown keys are errors); does not
    /// [`validate`](Self::validate).
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                size: json.len(),
                max: MAX_POLICY_BYTES,
            });
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let policy: RuntimePolicy =
            serde_path_to_error::deserialize(&mut de).map_err(PolicyError::from_json)?;
        de.end()
            .map_err(|e| PolicyError::from_json_error(String::new(), &e))?;
        Ok(policy)
    }

    /// The built-in policy: alerts on crypto-miners, modified binaries and shells started by
    /// non-shell programs, everywhere; prevents nothing.
    pub fn default_policy() -> Self {
        Self {
            rules: vec![Rule {
                name: DEFAULT_RULE_NAME.to_owned(),
                collection: Collection::default(),
                processes: ProcessSection {
                    effect: Effect::Alert,
                    allowed: Vec::new(),
                    denied: Vec::new(),
                    modified_binary: Effect::Alert,
                    crypto_miners: Effect::Alert,
                    shell_from_non_shell: Effect::Alert,
                },
                network: NetworkSection {
                    effect: Effect::Alert,
                    ..NetworkSection::default()
                },
                dns: DnsSection::default(),
            }],
        }
    }
}

/// Name of the single rule of [`RuntimePolicy::default_policy`].
pub const DEFAULT_RULE_NAME: &str = "Default - alert on suspicious activity";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_accepts_numbers_and_strings() {
        let p: Vec<PortRange> =
            serde_json::from_str(r#"[22, "80", "8000-8999", " 1 - 2 "]"#).unwrap();
        assert_eq!(
            p,
            vec![
                PortRange::single(22),
                PortRange::single(80),
                PortRange::new(8000, 8999),
                PortRange::new(1, 2)
            ]
        );
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"[22,80,"8000-8999","1-2"]"#
        );
    }

    #[test]
    fn port_range_rejects_garbage() {
        for bad in [
            r#""abc""#,
            r#""1-""#,
            r#""-5""#,
            "-1",
            "1.5",
            "true",
            r#""1-2-3""#,
        ] {
            let r: Result<PortRange, _> = serde_json::from_str(bad);
            assert!(r.is_err(), "{bad} parsed");
        }
        let e = serde_json::from_str::<PortRange>("99999999999").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn out_of_range_port_that_fits_u32_is_left_to_validation() {
        let p: PortRange = serde_json::from_str("70000").unwrap();
        assert_eq!((p.start, p.end), (70000, 70000));
    }

    #[test]
    fn effect_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&Effect::Prevent).unwrap(),
            r#""prevent""#
        );
        assert!(serde_json::from_str::<Effect>(r#""Prevent""#).is_err());
        assert_eq!(Effect::Alert.to_proto(), defender_proto::v1::Effect::Alert);
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let p = RuntimePolicy::parse(r#"{"rules":[{"name":"r"}]}"#).unwrap();
        let r = &p.rules[0];
        assert_eq!(r.collection, Collection::default());
        assert_eq!(r.processes, ProcessSection::default());
        assert_eq!(r.network.effect, Effect::Disable);
    }
}
