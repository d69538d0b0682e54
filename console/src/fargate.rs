//! Protecting ECS task definitions for AWS Fargate: what `defender-console fargate protect`, the
//! REST endpoint `POST /api/v1/defenders/fargate.json` and the Deploy > Defenders page share
//! around [`defender_taskdef::protect`] (reading entrypoint overrides, Console addresses, fresh
//! install bundles, the JSON output).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use defender_taskdef::{
    BundleSource, MAX_INPUT_BYTES, ProtectError, ProtectOptions, Protected,
    parse_entrypoint_override,
};
use serde_json::Value;

use crate::bundle::InstallBundle;
use crate::cli::ProtectArgs;
use crate::image_resolve::{
    RegistryCredentials, RegistryOptions, ResolveError, read_docker_config,
};
use crate::server::{self, ServerError};
use crate::store::{Store, StoreError, TokenKind};

/// Reads `NAME=JSON_ARRAY` entrypoint overrides. Each value is one override, or, when it does
/// not parse as one and spans several lines, one override per non-blank line (the form of the
/// `DEFENDER_ENTRYPOINTS` variable and of the UI's text field). A container named twice is an
/// error rather than a silent "last one wins".
pub fn parse_entrypoints<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, Vec<String>>, ProtectError> {
    let mut out = BTreeMap::new();
    for value in values {
        if value.trim().is_empty() {
            continue;
        }
        let items: Vec<&str> = match parse_entrypoint_override(value) {
            Ok(_) => vec![value],
            Err(_) if value.contains('\n') => value
                .lines()
                .filter(|line| !line.trim().is_empty())
                .collect(),
            Err(e) => return Err(e),
        };
        for item in items {
            let (name, argv) = parse_entrypoint_override(item)?;
            if out.contains_key(&name) {
                return Err(ProtectError::InvalidEntrypointOverride {
                    input: item.trim().to_owned(),
                    reason: format!(
                        "container {name:?} already has an entrypoint override; give one per container"
                    ),
                });
            }
            out.insert(name, argv);
        }
    }
    Ok(out)
}

/// `addr` with `port` appended when it names none: `console.example.com` becomes
/// `console.example.com:8084`, a bare IPv6 address `[addr]:port`. A comma-separated list
/// (Console replicas) gets the port on each entry that lacks one.
pub fn with_default_port(addr: &str, port: u16) -> String {
    if addr.contains(',') {
        return addr
            .split(',')
            .map(|a| match a.trim() {
                "" => String::new(),
                a => with_default_port(a, port),
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    let addr = addr.trim();
    if addr.starts_with('[') {
        return if addr.contains("]:") {
            addr.to_owned()
        } else {
            format!("{addr}:{port}")
        };
    }
    match addr.matches(':').count() {
        0 => format!("{addr}:{port}"),
        1 => addr.to_owned(),
        _ => format!("[{addr}]:{port}"),
    }
}

/// The host of a Console address that goes into an install bundle, which must be `host:port`
/// (as the Defender reads it); an operator-worded error otherwise.
pub fn bundle_addr_host(addr: &str) -> Result<&str, ProtectError> {
    crate::bundle::addr_host(addr).map_err(addr_error)
}

/// The Console addresses (`host:port`, or several comma-separated for replicas) that go into
/// an install bundle, each checked, at most [`crate::bundle::MAX_CONSOLE_ADDRS`]; the error
/// names the offending entry.
pub fn bundle_addrs(list: &str) -> Result<Vec<String>, ProtectError> {
    crate::bundle::parse_console_addrs(list).map_err(addr_error)
}

fn addr_error(e: crate::bundle::AddrError) -> ProtectError {
    ProtectError::InvalidOption {
        option: "Console address",
        reason: e.to_string(),
    }
}

/// Whether the Console's gRPC certificate, issued for `sans`, names `host` (DNS names compare
/// case-insensitively, IP addresses by value).
pub fn certificate_names(sans: &[String], host: &str) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    sans.iter().any(|san| match (ip, san.parse::<IpAddr>()) {
        (Some(ip), Ok(san_ip)) => ip == san_ip,
        (None, Err(_)) => san.eq_ignore_ascii_case(host),
        _ => false,
    })
}

/// Whether a Console address names this machine (`localhost`, `127.0.0.0/8`, `::1`, or the
/// unspecified `0.0.0.0` / `::`): a Fargate task runs elsewhere and cannot reach it.
pub fn is_loopback_addr(addr: &str) -> bool {
    let addr = addr.trim();
    let host = match addr.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None if addr.matches(':').count() > 1 => addr,
        None => addr.split(':').next().unwrap_or_default(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Sorts warnings by the container they concern (`container "NAME"…` or
/// `containerDefinitions[N]…`), in the definition's container order; the rest concern the task
/// definition as a whole. Returns `(task-level, [(container, warnings)])`.
pub fn warnings_by_container<'a>(
    task_definition: &Value,
    warnings: &'a [String],
) -> (Vec<&'a str>, Vec<(String, Vec<&'a str>)>) {
    let names: Vec<String> = task_definition
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    c.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut general = Vec::new();
    let mut by_container: Vec<(String, Vec<&str>)> =
        names.iter().map(|n| (n.clone(), Vec::new())).collect();
    for warning in warnings {
        let named = warning
            .strip_prefix("container ")
            .and_then(|rest| {
                serde_json::Deserializer::from_str(rest)
                    .into_iter::<String>()
                    .next()
            })
            .and_then(Result::ok)
            .or_else(|| {
                let rest = warning.strip_prefix("containerDefinitions[")?;
                let (index, _) = rest.split_once(']')?;
                names.get(index.parse::<usize>().ok()?).cloned()
            });
        match named.and_then(|n| by_container.iter_mut().find(|(name, _)| *name == n)) {
            Some((_, list)) => list.push(warning),
            None => general.push(warning.as_str()),
        }
    }
    by_container.retain(|(_, list)| !list.is_empty());
    (general, by_container)
}

/// Checks that `input` can be protected with `opts` before an enrollment token is made for it,
/// and returns its family (for the token's description).
pub fn family_if_protectable(input: &str, opts: &ProtectOptions) -> Result<String, ProtectError> {
    let dry_run = ProtectOptions {
        bundle: BundleSource::None,
        ..opts.clone()
    };
    let protected = defender_taskdef::protect(input, &dry_run)?;
    Ok(protected
        .task_definition
        .get("family")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

/// Creates an enrollment token in `store` and the install bundle for it (what
/// [`server::create_bundle`] does, for a Console that has its store and CA open already).
/// `console_addrs` come checked from [`bundle_addrs`].
pub async fn issue_bundle(
    store: &Store,
    ca_pem: &str,
    console_addrs: &[String],
    description: &str,
) -> Result<InstallBundle, StoreError> {
    // Every "Generate protected task" mints a token, so each one expires (90 days).
    let ttl_ms =
        i64::try_from(crate::store::DEFAULT_ENROLLMENT_TTL.as_millis()).unwrap_or(i64::MAX);
    let expires_at = crate::store::now_ms().saturating_add(ttl_ms);
    let token = store
        .create_token(TokenKind::Enrollment, description, Some(expires_at))
        .await?;
    Ok(InstallBundle::new(console_addrs, ca_pem, token))
}

/// The protected task definition as it is printed and served: pretty JSON, trailing newline.
pub fn to_pretty_json(task_definition: &Value) -> String {
    let mut text = serde_json::to_string_pretty(task_definition)
        .unwrap_or_else(|_| task_definition.to_string());
    text.push('\n');
    text
}

/// Why `defender-console fargate protect` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtectCommandError {
    #[error("cannot read {name}: {error}")]
    Read { name: String, error: std::io::Error },
    #[error(
        "{name} is larger than the {MAX_INPUT_BYTES}-byte (1 MiB) limit; give one task definition, not a list or an archive"
    )]
    TooLarge { name: String },
    #[error(
        "{name} is not UTF-8 text (invalid byte at offset {offset}); save the task definition as UTF-8 JSON"
    )]
    NotUtf8 { name: String, offset: usize },
    #[error("{name}: {error}")]
    Protect { name: String, error: ProtectError },
    #[error(
        "--new-bundle: {} holds no Console CA (ca.pem); pass the --data-dir of the Console your Defenders enroll with",
        dir.display()
    )]
    NoConsoleData { dir: PathBuf },
    #[error("--new-bundle: cannot create an enrollment token: {error}")]
    Bundle { error: ServerError },
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("cannot read {path}: {error}")]
    PasswordFile { path: String, error: std::io::Error },
}

/// How `path` is named in messages.
fn input_name(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads the task definition from `path` (`-`: stdin), at most [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> Result<String, ProtectCommandError> {
    let name = input_name(path);
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let mut buf = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut buf))
    };
    if let Err(error) = read {
        return Err(ProtectCommandError::Read { name, error });
    }
    if buf.len() > MAX_INPUT_BYTES {
        return Err(ProtectCommandError::TooLarge { name });
    }
    String::from_utf8(buf).map_err(|e| ProtectCommandError::NotUtf8 {
        name,
        offset: e.utf8_error().valid_up_to(),
    })
}

/// `defender-console fargate protect`: reads, protects, and returns the result for `main` to
/// print (JSON on stdout, warnings on stderr), so that nothing reaches stdout on an error.
pub async fn protect_command(args: &ProtectArgs) -> Result<Protected, ProtectCommandError> {
    let name = input_name(&args.file);
    let protect_error = |error| ProtectCommandError::Protect {
        name: name.clone(),
        error,
    };
    let input = read_input(&args.file)?;
    let entrypoints =
        parse_entrypoints(args.entrypoint.iter().map(String::as_str)).map_err(protect_error)?;
    let bundle = match (&args.install_bundle, &args.bundle_secret) {
        (Some(b64), _) => BundleSource::Env(b64.trim().to_owned()),
        (None, Some(arn)) => BundleSource::Secret {
            value_from: arn.clone(),
        },
        (None, None) => BundleSource::None,
    };
    let mut opts = ProtectOptions {
        console_addr: args.console_addr.clone(),
        defender_image: args.defender_image.clone(),
        bundle,
        mode: args.mode.into(),
        sidecar_name: args.sidecar_name.clone(),
        entrypoints,
        waas: args
            .waas
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(protect_error)?,
        ..ProtectOptions::default()
    };
    let mut resolve_warnings = Vec::new();
    if let Some(source) = args.resolve_images {
        let registry = registry_options(args)?;
        let plan = defender_taskdef::plan_resolution(&input, &opts).map_err(protect_error)?;
        let resolution =
            crate::image_resolve::resolve(&plan, source, &opts.defender_image, &registry).await?;
        opts.resolved_images = resolution.images;
        resolve_warnings = resolution.warnings;
    }
    if args.new_bundle {
        // clap makes --new-bundle require --console-addr.
        let addr = args.console_addr.as_deref().unwrap_or_default();
        bundle_addrs(addr).map_err(protect_error)?;
        let family = family_if_protectable(&input, &opts).map_err(protect_error)?;
        if args.database_url.is_none() && !args.data_dir.join("ca.pem").is_file() {
            return Err(ProtectCommandError::NoConsoleData {
                dir: args.data_dir.clone(),
            });
        }
        let bundle = server::create_bundle(
            &args.data_dir,
            args.database_url.as_deref(),
            addr,
            &format!("fargate protect: {family}"),
            None,
        )
        .await
        .map_err(|error| ProtectCommandError::Bundle { error })?;
        opts.bundle = BundleSource::Env(bundle.encode());
    }
    let mut protected = defender_taskdef::protect(&input, &opts).map_err(protect_error)?;
    protected.warnings.extend(resolve_warnings);
    Ok(protected)
}

/// Registry credentials and plain-HTTP registries from the command line and environment.
fn registry_options(args: &ProtectArgs) -> Result<RegistryOptions, ProtectCommandError> {
    let mut credentials = RegistryCredentials::default();
    if let Some(path) = &args.registry_auth_file {
        credentials.docker_config = read_docker_config(path)?;
    }
    if let Some(user) = &args.registry_username {
        let password = match &args.registry_password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|error| ProtectCommandError::PasswordFile {
                    path: path.display().to_string(),
                    error,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => std::env::var("REGISTRY_PASSWORD").unwrap_or_default(),
        };
        credentials.basic = Some((user.clone(), password));
    }
    let mut ca_pems = Vec::new();
    if let Some(path) = &args.registry_ca_file {
        let pem = std::fs::read(path).map_err(|error| ProtectCommandError::PasswordFile {
            path: path.display().to_string(),
            error,
        })?;
        ca_pems.push(pem);
    }
    Ok(RegistryOptions {
        credentials,
        insecure: args.insecure_registry.clone(),
        ca_pems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoints_one_per_value_or_per_line() {
        let one = parse_entrypoints([r#"web=["/docker-entrypoint.sh", "-x"]"#]).unwrap();
        assert_eq!(one["web"], ["/docker-entrypoint.sh", "-x"]);

        let lines = "web=[\"/a\"]\r\n\r\n  xray=[]  \r\n";
        let many = parse_entrypoints([lines, ""]).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many["web"], ["/a"]);
        assert!(many["xray"].is_empty());

        // A pretty-printed array spanning lines is still one override.
        let pretty = parse_entrypoints(["web=[\n  \"/a\",\n  \"b\"\n]"]).unwrap();
        assert_eq!(pretty["web"], ["/a", "b"]);

        let dup = parse_entrypoints(["web=[]", "web=[\"/b\"]"]).unwrap_err();
        assert!(dup.to_string().contains("already has"), "{dup}");
        let bad = parse_entrypoints(["web=[\"/a\"]\nxray=/xray"]).unwrap_err();
        assert!(bad.to_string().contains("xray=/xray"), "{bad}");
    }

    #[test]
    fn default_port_is_added_only_when_missing() {
        assert_eq!(with_default_port("console", 8084), "console:8084");
        assert_eq!(with_default_port(" console:443 ", 8084), "console:443");
        assert_eq!(with_default_port("10.0.0.1", 1), "10.0.0.1:1");
        assert_eq!(with_default_port("::1", 8084), "[::1]:8084");
        assert_eq!(with_default_port("[::1]", 8084), "[::1]:8084");
        assert_eq!(with_default_port("[::1]:9", 8084), "[::1]:9");
        assert_eq!(
            with_default_port("a, b:9 ,::1", 8084),
            "a:8084,b:9,[::1]:8084"
        );
        // An empty entry stays empty, for bundle_addrs to name.
        assert_eq!(with_default_port("a,,b", 1), "a:1,,b:1");
    }

    #[test]
    fn bundle_addresses_need_a_host_and_a_port() {
        assert_eq!(
            bundle_addr_host("console.example.com:8084").ok(),
            Some("console.example.com")
        );
        assert_eq!(bundle_addr_host("[::1]:8084").ok(), Some("::1"));
        for bad in [
            "console",
            "console:",
            "console:0",
            "console:x",
            ":8084",
            "a:b:1",
            "[zz]:1",
            "a b:1",
            "u@h:1",
        ] {
            let err = bundle_addr_host(bad).unwrap_err().to_string();
            assert!(
                err.contains("Console address") && err.contains("host:port"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn certificate_names_compare_like_tls() {
        let sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        assert!(certificate_names(&sans, "LocalHost"));
        assert!(certificate_names(&sans, "127.0.0.1"));
        assert!(certificate_names(&sans, "0:0:0:0:0:0:0:1"));
        assert!(!certificate_names(&sans, "console.example.com"));
        assert!(!certificate_names(&sans, "127.0.0.2"));
    }

    #[test]
    fn family_is_read_without_a_bundle() {
        let input = r#"{"family":"fam","containerDefinitions":[{"name":"a","image":"i","entryPoint":["/a"]}]}"#;
        let opts = ProtectOptions {
            bundle: BundleSource::Env("x".into()),
            ..ProtectOptions::default()
        };
        assert_eq!(family_if_protectable(input, &opts).unwrap(), "fam");
        let no_entry_point =
            r#"{"family":"fam","containerDefinitions":[{"name":"a","image":"i"}]}"#;
        assert!(matches!(
            family_if_protectable(no_entry_point, &opts),
            Err(ProtectError::MissingEntryPoint { .. })
        ));
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        for addr in [
            "127.0.0.1:8084",
            "localhost:8084",
            "LOCALHOST",
            "[::1]:8084",
            "::1",
            "127.1.2.3:1",
            "0.0.0.0:8084",
            "app.localhost:1",
        ] {
            assert!(is_loopback_addr(addr), "{addr}");
        }
        for addr in [
            "console.example.com:8084",
            "10.0.0.5:8084",
            "[fd00::1]:8084",
        ] {
            assert!(!is_loopback_addr(addr), "{addr}");
        }
    }

    #[test]
    fn warnings_are_sorted_by_container() {
        let task = serde_json::json!({"containerDefinitions": [{"name": "web"}, {"name": "api"}, {"name": "defender"}]});
        let warnings = vec![
            "family \"x\" is odd".to_owned(),
            "container \"api\" drops ALL capabilities".to_owned(),
            "containerDefinitions[0]: \"x\" is not one of the values".to_owned(),
            "container \"defender\": the Defender sidecar has no install bundle".to_owned(),
            "container \"gone\": not in the output".to_owned(),
        ];
        let (general, by) = warnings_by_container(&task, &warnings);
        assert_eq!(general, [warnings[0].as_str(), warnings[4].as_str()]);
        let names: Vec<&str> = by.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web", "api", "defender"]);
        assert_eq!(by[1].1, [warnings[1].as_str()]);
    }

    #[test]
    fn pretty_json_ends_with_a_newline() {
        let text = to_pretty_json(&serde_json::json!({"a": [1]}));
        assert!(text.ends_with("}\n"));
        assert!(text.contains("\n  \"a\""));
    }
}
