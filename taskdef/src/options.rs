//! What the operator chooses when protecting: image, install bundle, mode, sidecar name, overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::ProtectError;
use crate::images::ResolvedImages;

/// The Defender image used when the operator names none; tagged with this crate's version.
pub const DEFAULT_DEFENDER_IMAGE: &str =
    concat!("fargate-defender/defender:", env!("CARGO_PKG_VERSION"));

/// The sidecar container's name when the operator names none.
pub const DEFAULT_SIDECAR_NAME: &str = "defender";

/// Longest container name ECS accepts.
const MAX_CONTAINER_NAME: usize = 255;

/// How to protect a task definition; the CLI, the REST endpoint and the UI all fill this in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectOptions {
    /// Console address handed to the sidecar as `DEFENDER_CONSOLE_ADDR` (informational).
    pub console_addr: Option<String>,
    /// Image of the Defender sidecar container.
    pub defender_image: String,
    /// Where the sidecar gets its install bundle from.
    pub bundle: BundleSource,
    /// Whether application entrypoints are wrapped (embedded) or left alone (sidecar).
    pub mode: Mode,
    /// Name of the Defender sidecar container.
    pub sidecar_name: String,
    /// Per-container statement of the image ENTRYPOINT, replacing the container's `entryPoint`.
    pub entrypoints: BTreeMap<String, Vec<String>>,
    /// Image ENTRYPOINT/CMD and Defender image platforms looked up by the Console
    /// (`--resolve-images`); empty when nothing was looked up.
    pub resolved_images: ResolvedImages,
    /// `--waas APP_CONTAINER:EXPOSED_PORT`: the sidecar's WAAS proxy takes over the exposed
    /// port and forwards to the app on an internal one.
    pub waas: Option<crate::waas::WaasTarget>,
}

impl Default for ProtectOptions {
    fn default() -> Self {
        Self {
            console_addr: None,
            defender_image: DEFAULT_DEFENDER_IMAGE.to_owned(),
            bundle: BundleSource::None,
            mode: Mode::Embedded,
            sidecar_name: DEFAULT_SIDECAR_NAME.to_owned(),
            entrypoints: BTreeMap::new(),
            resolved_images: ResolvedImages::default(),
            waas: None,
        }
    }
}

/// How the sidecar receives the install bundle that lets it join the Console.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BundleSource {
    /// The bundle itself, as a plain `INSTALL_BUNDLE` environment variable.
    Env(String),
    /// An ECS `secrets` entry named `INSTALL_BUNDLE`, read from Secrets Manager or SSM Parameter Store.
    Secret {
        /// Secrets Manager secret ARN, SSM parameter ARN, or a bare SSM parameter name (same Region).
        value_from: String,
    },
    /// Leave the bundle out; the operator adds it afterwards.
    #[default]
    None,
}

/// Where the Defender runs relative to the application processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each application container starts under the Defender (entrypoint wrapped); full protection.
    #[default]
    Embedded,
    /// Only the sidecar runs the Defender and watches the task's processes (`pidMode: task`).
    Sidecar,
}

impl Mode {
    /// The lowercase name used on the command line, in the API and in `DEFENDER_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Sidecar => "sidecar",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ProtectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "embedded" => Ok(Mode::Embedded),
            "sidecar" => Ok(Mode::Sidecar),
            _ => Err(ProtectError::UnknownMode(s.to_owned())),
        }
    }
}

/// Tells whether `name` is a container name ECS accepts (1–255 of `[A-Za-z0-9_-]`).
pub(crate) fn is_valid_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CONTAINER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses the CLI's `NAME=JSON_ARRAY` entrypoint override, e.g. `web=["/docker-entrypoint.sh"]`.
pub fn parse_entrypoint_override(s: &str) -> Result<(String, Vec<String>), ProtectError> {
    let invalid = |reason: String| ProtectError::InvalidEntrypointOverride {
        input: s.to_owned(),
        reason,
    };
    let Some((name, array)) = s.split_once('=') else {
        return Err(invalid(
            "there is no '=' between the container name and the entrypoint".into(),
        ));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid("the container name before '=' is empty".into()));
    }
    if !is_valid_container_name(name) {
        return Err(invalid(format!(
            "{name:?} is not a container name (letters, digits, hyphens, underscores)"
        )));
    }
    let array = array.trim();
    if !array.starts_with('[') {
        return Err(invalid(
            "the entrypoint must be a JSON array of strings, not a plain command line (so that no word splitting has to be guessed)"
                .into(),
        ));
    }
    let argv: Vec<String> = serde_json::from_str(array).map_err(|e| {
        invalid(format!(
            "the entrypoint is not a JSON array of strings ({e})"
        ))
    })?;
    Ok((name.to_owned(), argv))
}

impl ProtectOptions {
    /// Rejects options that would produce a task definition ECS refuses or that cannot work.
    pub(crate) fn validate(&self) -> Result<(), ProtectError> {
        let image = self.defender_image.as_str();
        if image.trim().is_empty() {
            return Err(ProtectError::InvalidOption {
                option: "Defender image",
                reason:
                    "it is empty; give an image reference such as fargate-defender/defender:1.2.3"
                        .into(),
            });
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ProtectError::InvalidOption {
                option: "Defender image",
                reason: format!("{image:?} contains spaces or control characters"),
            });
        }
        if !is_valid_container_name(&self.sidecar_name) {
            return Err(ProtectError::InvalidOption {
                option: "sidecar name",
                reason: format!(
                    "{:?} is not a container name: use 1 to 255 letters, digits, hyphens and underscores",
                    self.sidecar_name
                ),
            });
        }
        if let Some(addr) = &self.console_addr
            && addr.trim().is_empty()
        {
            return Err(ProtectError::InvalidOption {
                option: "Console address",
                reason: "it is empty; leave it out or give the address the Defender connects to"
                    .into(),
            });
        }
        match &self.bundle {
            BundleSource::Env(bundle) if bundle.trim().is_empty() => {
                return Err(ProtectError::InvalidOption {
                    option: "install bundle",
                    reason: "it is empty; paste the bundle from the Console, or leave it out and add INSTALL_BUNDLE yourself".into(),
                });
            }
            BundleSource::Secret { value_from } => {
                check_value_from(value_from).map_err(|reason| ProtectError::InvalidOption {
                    option: "install bundle secret",
                    reason,
                })?
            }
            _ => {}
        }
        for name in self.entrypoints.keys() {
            if !is_valid_container_name(name) {
                return Err(ProtectError::InvalidEntrypointOverride {
                    input: name.clone(),
                    reason: "that is not a container name (letters, digits, hyphens, underscores)"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

/// The accepted forms of a `secrets[].valueFrom` for the install bundle, for messages.
const VALUE_FROM_FORMS: &str = "use a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), \
an SSM parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME), \
or the name of an SSM parameter in the task's own Region (e.g. /defender/install-bundle)";

/// Checks that `value_from` names a Secrets Manager secret or an SSM parameter ECS can read.
///
/// Accepted: `arn:<aws partition>:secretsmanager:<region>:<12-digit account>:secret:<name>[...]`,
/// `arn:<aws partition>:ssm:<region>:<account>:parameter/<name>`, and a bare SSM parameter
/// name (ECS resolves it in the task's Region): `[A-Za-z0-9_.-/]`, hierarchical names start
/// with `/`, and the reserved prefixes `aws` / `ssm` are refused.
fn check_value_from(value_from: &str) -> Result<(), String> {
    let v = value_from.trim();
    if v.is_empty() {
        return Err(format!("it is empty; {VALUE_FROM_FORMS}"));
    }
    if v != value_from {
        return Err(format!("{value_from:?} has leading or trailing spaces"));
    }
    if let Some(rest) = v.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts.as_slice() else {
            return Err(format!("{v:?} is not a complete ARN; {VALUE_FROM_FORMS}"));
        };
        let partition_ok = (*partition == "aws" || partition.starts_with("aws-"))
            && partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if !partition_ok || !region_ok || !account_ok {
            return Err(format!(
                "{v:?} is not a valid ARN (partition, Region or 12-digit account is wrong); {VALUE_FROM_FORMS}"
            ));
        }
        let resource_ok = match *service {
            "secretsmanager" => resource
                .strip_prefix("secret:")
                .is_some_and(|n| !n.is_empty()),
            "ssm" => resource
                .strip_prefix("parameter")
                .is_some_and(|n| n.len() > 1 && n.starts_with('/')),
            _ => {
                return Err(format!(
                    "{v:?} is an ARN of {service:?}, which ECS cannot read secrets from; {VALUE_FROM_FORMS}"
                ));
            }
        };
        if !resource_ok {
            return Err(format!(
                "{v:?} does not name a secret or parameter; {VALUE_FROM_FORMS}"
            ));
        }
        return Ok(());
    }
    let chars_ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'));
    let first_segment = v.trim_start_matches('/').to_ascii_lowercase();
    if !chars_ok || v.len() > 2048 {
        return Err(format!(
            "{v:?} is neither an ARN nor an SSM parameter name; {VALUE_FROM_FORMS}"
        ));
    }
    if v.contains('/') && !v.starts_with('/') {
        return Err(format!(
            "{v:?}: a hierarchical SSM parameter name starts with '/'; {VALUE_FROM_FORMS}"
        ));
    }
    if first_segment.starts_with("aws") || first_segment.starts_with("ssm") {
        return Err(format!(
            "{v:?}: SSM parameter names cannot start with \"aws\" or \"ssm\"; {VALUE_FROM_FORMS}"
        ));
    }
    if v.ends_with('/') || v.contains("//") {
        return Err(format!(
            "{v:?} is not an SSM parameter name; {VALUE_FROM_FORMS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_image_carries_the_crate_version() {
        assert_eq!(
            DEFAULT_DEFENDER_IMAGE,
            format!("fargate-defender/defender:{}", env!("CARGO_PKG_VERSION"))
        );
        let opts = ProtectOptions::default();
        assert_eq!(opts.defender_image, DEFAULT_DEFENDER_IMAGE);
        assert_eq!(opts.sidecar_name, "defender");
        assert_eq!(opts.mode, Mode::Embedded);
        assert_eq!(opts.bundle, BundleSource::None);
        assert!(opts.validate().is_ok());
    }

    #[test]
    fn mode_round_trips_through_text() {
        for mode in [Mode::Embedded, Mode::Sidecar] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        assert_eq!("Sidecar".parse::<Mode>(), Ok(Mode::Sidecar));
        assert!(matches!("both".parse::<Mode>(), Err(ProtectError::UnknownMode(m)) if m == "both"));
        assert_eq!(
            serde_json::to_string(&Mode::Sidecar).ok().as_deref(),
            Some("\"sidecar\"")
        );
    }

    #[test]
    fn entrypoint_override_parses_name_and_array() {
        assert_eq!(
            parse_entrypoint_override(r#"web=["/docker-entrypoint.sh","--x=1"]"#),
            Ok((
                "web".to_owned(),
                vec!["/docker-entrypoint.sh".to_owned(), "--x=1".to_owned()]
            ))
        );
        assert_eq!(
            parse_entrypoint_override("xray=[]"),
            Ok(("xray".to_owned(), vec![]))
        );
        // Only the first '=' separates: the array may contain '='.
        assert_eq!(
            parse_entrypoint_override(r#"a=["k=v"]"#),
            Ok(("a".to_owned(), vec!["k=v".to_owned()]))
        );
    }

    #[test]
    fn entrypoint_override_errors_explain_the_syntax() {
        for bad in [
            "web",
            "=[]",
            "web=/docker-entrypoint.sh",
            "web=[1]",
            "web=[\"a\"",
            "we b=[]",
            "web={}",
        ] {
            let err = parse_entrypoint_override(bad);
            let Err(ProtectError::InvalidEntrypointOverride { input, reason }) = &err else {
                panic!("{bad:?} gave {err:?}");
            };
            assert_eq!(input, bad);
            assert!(!reason.is_empty());
            let msg = err
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(msg.contains("NAME='["), "{msg}");
        }
    }

    #[test]
    fn value_from_accepts_secrets_manager_and_ssm() {
        for ok in [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:defender/bundle-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:bundle-AbCdEf:bundle::",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:b-1",
            "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/defender/bundle",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/bundle",
            "/defender/install-bundle",
            "install_bundle.v2",
        ] {
            assert_eq!(check_value_from(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn value_from_rejects_other_things() {
        for bad in [
            "",
            " /x",
            "arn:aws:s3:::bucket/key",
            "arn:aws:secretsmanager:eu-west-1:123:secret:x",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
            "arn:aws:ssm:eu-west-1:123456789012:parameter",
            "arn:aws:ssm:eu-west-1:123456789012:document/x",
            "arn:gcp:ssm:eu-west-1:123456789012:parameter/x",
            "arn:aws:ssm",
            "defender/bundle",
            "aws-bundle",
            "/ssm/bundle",
            "has space",
            "https://example.com/bundle",
        ] {
            let err = check_value_from(bad);
            assert!(err.is_err(), "{bad:?} was accepted");
        }
        let opts = ProtectOptions {
            bundle: BundleSource::Secret {
                value_from: "arn:aws:s3:::b".into(),
            },
            ..ProtectOptions::default()
        };
        let msg = opts
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("install bundle secret") && msg.contains("secretsmanager"),
            "{msg}"
        );
    }

    #[test]
    fn options_are_validated() {
        let bad = [
            ProtectOptions {
                defender_image: " ".into(),
                ..ProtectOptions::default()
            },
            ProtectOptions {
                defender_image: "a b".into(),
                ..ProtectOptions::default()
            },
            ProtectOptions {
                sidecar_name: "de fender".into(),
                ..ProtectOptions::default()
            },
            ProtectOptions {
                sidecar_name: String::new(),
                ..ProtectOptions::default()
            },
            ProtectOptions {
                console_addr: Some(String::new()),
                ..ProtectOptions::default()
            },
            ProtectOptions {
                bundle: BundleSource::Env("  ".into()),
                ..ProtectOptions::default()
            },
            ProtectOptions {
                entrypoints: BTreeMap::from([("bad name".to_owned(), vec![])]),
                ..ProtectOptions::default()
            },
        ];
        for opts in bad {
            assert!(opts.validate().is_err(), "{opts:?}");
        }
        assert!(is_valid_container_name(&"a".repeat(255)));
        assert!(!is_valid_container_name(&"a".repeat(256)));
    }
}
