//! Adds the Defender to a clean, unwrapped task definition.
//!
//! * The sidecar is appended last. It is `essential: false`: if it dies, the application keeps
//!   running (a security add-on must not take production down); its health check makes a
//!   failure visible instead.
//! * Embedded mode wraps every application container: `entryPoint` becomes
//!   `[DEFENDER_BIN, "fargate", "entrypoint", "--"]` followed by the original entryPoint,
//!   `command` is untouched (Docker runs entryPoint ++ command, so the application's argv is
//!   unchanged); the container mounts the sidecar's volumes read-only, starts after the
//!   sidecar has *started* (not become healthy: the application must start even when the
//!   Console is unreachable) and gets `SYS_PTRACE`.
//! * Sidecar mode leaves application containers alone and sets `pidMode: task` (Fargate
//!   platform 1.4+) so the sidecar sees every process of the task.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ProtectError;
use crate::images::ImageConfig;
use crate::layout::{
    ENTRYPOINT_WRAPPER, ENV_CONSOLE_ADDR, ENV_CONTAINER_IMAGE, ENV_CONTAINER_NAME,
    ENV_FARGATE_TASK, ENV_INSTALL_BUNDLE, ENV_MODE, SIDECAR_ENTRYPOINT, SIDECAR_HEALTHCHECK,
    SYS_PTRACE, container_name, json_list, retain_in_list, string_list,
};
use crate::options::{BundleSource, Mode, ProtectOptions, is_valid_container_name};
use crate::unwrap::Unwrapped;

/// Memory the sidecar reserves when the task sets no task-level memory (EC2 only).
const SIDECAR_MEMORY_RESERVATION_MIB: i64 = 128;

/// Log stream prefix of the sidecar when it logs to CloudWatch through `awslogs`.
const SIDECAR_LOG_STREAM_PREFIX: &str = "defender";

/// Checks the cleaned, unwrapped definition and adds the Defender according to `opts`.
pub(crate) fn apply(
    task: &mut Map<String, Value>,
    opts: &ProtectOptions,
    unwrapped: &Unwrapped,
    warnings: &mut Vec<String>,
) -> Result<(), ProtectError> {
    let family = match task.get("family").and_then(Value::as_str) {
        Some(f) if !f.trim().is_empty() => f.to_owned(),
        _ => return Err(ProtectError::MissingFamily),
    };
    check_platform(task, warnings)?;
    check_containers(task, opts)?;
    drop_references_to_sidecar(task, &opts.sidecar_name, warnings);

    match opts.mode {
        Mode::Embedded => wrap_containers(task, opts, unwrapped, warnings)?,
        Mode::Sidecar => {
            if !opts.entrypoints.is_empty() {
                warnings.push(
                    "entrypoint overrides are not used in sidecar mode: application containers are left unchanged"
                        .into(),
                );
            }
            match task.get("pidMode").and_then(Value::as_str) {
                None => {
                    task.insert("pidMode".into(), json!("task"));
                }
                Some("task") => {}
                Some(other) => warnings.push(format!(
                    "pidMode is {other:?}, kept: Fargate supports only \"task\", which sidecar mode needs there so the sidecar sees the task's processes"
                )),
            }
        }
    }

    if let BundleSource::Secret { value_from } = &opts.bundle
        && !task.contains_key("executionRoleArn")
    {
        warnings.push(format!(
            "the install bundle is read from {value_from:?}, which needs a task execution role: add \"executionRoleArn\" with permission to read it"
        ));
    }
    let log = sidecar_log_configuration(task, warnings);
    let mut sidecar = build_sidecar(&family, opts, log);
    if !task.contains_key("memory")
        && let Some(sidecar) = sidecar.as_object_mut()
    {
        // Without task-level memory (EC2 only) every container must reserve some itself.
        sidecar.insert(
            "memoryReservation".into(),
            json!(SIDECAR_MEMORY_RESERVATION_MIB),
        );
        warnings.push(format!(
            "the task definition sets no task-level \"memory\", so the Defender sidecar reserves {SIDECAR_MEMORY_RESERVATION_MIB} MiB (memoryReservation)"
        ));
    }
    if let (Some(previous), Value::Object(fresh)) = (
        crate::sidecar_edits::pick(&unwrapped.our_sidecar_definitions, opts),
        &sidecar,
    ) {
        let (mut merged, kept) = crate::sidecar_edits::merge(previous, fresh.clone(), opts);
        if opts.mode == Mode::Sidecar {
            add_sys_ptrace(&mut merged);
        }
        if !kept.is_empty() {
            warnings.push(format!(
                "container {:?}: kept what was added to the Defender sidecar by hand ({})",
                opts.sidecar_name,
                kept.join(", ")
            ));
        }
        sidecar = Value::Object(merged);
    }
    if let Value::Object(s) = &sidecar
        && !crate::sidecar_edits::has_install_bundle(s)
    {
        warnings.push(format!(
            "container {:?}: the Defender sidecar has no install bundle (no INSTALL_BUNDLE variable, secret or environmentFiles), so its Defender can never connect to the Console: create one with --new-bundle, read it from a secret with --bundle-secret, or add INSTALL_BUNDLE before registering",
            opts.sidecar_name
        ));
    }
    if let Some(Value::Array(containers)) = task.get_mut("containerDefinitions") {
        containers.push(sidecar);
    }
    Ok(())
}

/// Refuses Windows tasks; warns about settings that will not run on Fargate.
fn check_platform(
    task: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<(), ProtectError> {
    if let Some(os) = task
        .get("runtimePlatform")
        .and_then(|p| p.get("operatingSystemFamily"))
        .and_then(Value::as_str)
        && os.to_ascii_uppercase().starts_with("WINDOWS")
    {
        return Err(ProtectError::Windows {
            os_family: os.to_owned(),
        });
    }
    let fargate = task
        .get("requiresCompatibilities")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|v| v == "FARGATE"));
    if !fargate {
        warnings.push(
            "requiresCompatibilities does not include \"FARGATE\": this task definition may not run on Fargate, where the Defender is meant to run"
                .into(),
        );
    }
    match task.get("networkMode").and_then(Value::as_str) {
        Some("awsvpc") => {}
        other => warnings.push(format!(
            "networkMode is {}, not \"awsvpc\", which Fargate requires",
            other.map_or_else(
                || "not set (so \"bridge\")".to_owned(),
                |m| format!("{m:?}")
            )
        )),
    }
    Ok(())
}

/// Checks names, images, the sidecar name and the overrides' container names.
fn check_containers(task: &Map<String, Value>, opts: &ProtectOptions) -> Result<(), ProtectError> {
    let containers = task
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        return Err(ProtectError::NoContainers(
            "\"containerDefinitions\" has no application container left to protect".into(),
        ));
    }
    let mut names = Vec::with_capacity(containers.len());
    let mut seen = BTreeSet::new();
    for (i, container) in containers.iter().enumerate() {
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(ProtectError::ContainerWithoutName { index: i + 1 })?;
        if !is_valid_container_name(name) {
            return Err(ProtectError::InvalidContainerName {
                name: name.to_owned(),
            });
        }
        if !seen.insert(name) {
            return Err(ProtectError::DuplicateContainerName {
                name: name.to_owned(),
            });
        }
        if container
            .get("image")
            .and_then(Value::as_str)
            .is_none_or(|i| i.trim().is_empty())
        {
            return Err(ProtectError::ContainerWithoutImage {
                name: name.to_owned(),
            });
        }
        names.push(name.to_owned());
    }
    if seen.contains(opts.sidecar_name.as_str()) {
        return Err(ProtectError::SidecarNameClash {
            name: opts.sidecar_name.clone(),
        });
    }
    for name in opts.entrypoints.keys() {
        if !seen.contains(name.as_str()) {
            return Err(ProtectError::UnknownOverride {
                name: name.clone(),
                known: names.clone(),
            });
        }
    }
    Ok(())
}

/// Removes `dependsOn`/`volumesFrom` entries naming the sidecar-to-be.
///
/// No container has that name yet (checked before), so such entries dangle; once the sidecar
/// is added they would point at it, and the next protection would remove them as ours. Dropping
/// them now keeps protecting idempotent; embedded mode adds its own entries afterwards.
fn drop_references_to_sidecar(
    task: &mut Map<String, Value>,
    sidecar: &str,
    warnings: &mut Vec<String>,
) {
    let Some(Value::Array(containers)) = task.get_mut("containerDefinitions") else {
        return;
    };
    for container in containers.iter_mut().filter_map(Value::as_object_mut) {
        let names =
            |item: &Value, key: &str| item.get(key).and_then(Value::as_str) == Some(sidecar);
        let removed = retain_in_list(container, "dependsOn", |d| names(d, "containerName"))
            + retain_in_list(container, "volumesFrom", |v| names(v, "sourceContainer"));
        if removed > 0 {
            let name = container_name(container).unwrap_or_default();
            warnings.push(format!(
                "container {name:?} referred to {sidecar:?} in dependsOn/volumesFrom before that container existed; those entries were removed and the Defender's own are used"
            ));
        }
    }
}

/// How an application container starts once wrapped: its ENTRYPOINT (after the wrapper) and,
/// when the image's CMD has to be written out, the `command` to set.
struct Start {
    /// The argv the image ENTRYPOINT contributes (explicit, override, resolved or stated empty).
    entry_point: Vec<String>,
    /// The image's CMD, to become `command` (the definition had none and the ENTRYPOINT is
    /// now explicit, so Docker would otherwise drop it).
    command: Option<Vec<String>>,
    /// What was read from the image, for the operator.
    note: Option<String>,
}

/// Works out how each application container starts, refusing what cannot be known.
///
/// Docker semantics (which ECS follows): an explicit `entryPoint` replaces the image's
/// ENTRYPOINT and drops its CMD; an explicit `command` replaces CMD.
fn starts(
    containers: &[Value],
    opts: &ProtectOptions,
    unwrapped: &Unwrapped,
) -> Result<Vec<Start>, ProtectError> {
    let mut out = Vec::with_capacity(containers.len());
    let mut missing = Vec::new();
    for container in containers {
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let image = container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let explicit = string_list(container.get("entryPoint")).filter(|ep| !ep.is_empty());
        let has_command = string_list(container.get("command")).is_some_and(|c| !c.is_empty());
        let resolved = opts.resolved_images.configs.get(image);
        // The image's CMD becomes `command` when the definition relied on it.
        let cmd_from = |config: &ImageConfig| {
            (!has_command && !config.cmd.is_empty()).then(|| config.cmd.clone())
        };
        let start = match (opts.entrypoints.get(name), explicit) {
            (Some(ep), _) if has_command => Start {
                entry_point: ep.clone(),
                command: None,
                note: None,
            },
            (Some(ep), Some(_)) => Start {
                // An explicit entryPoint already dropped the image's CMD: nothing to carry.
                entry_point: ep.clone(),
                command: None,
                note: None,
            },
            (Some(ep), None) => match resolved {
                Some(config) => Start {
                    entry_point: ep.clone(),
                    command: cmd_from(config),
                    note: Some(format!(
                        "container {name:?}: CMD {:?} of {image} ({}) written as \"command\" beside the --entrypoint override, so the image runs as before",
                        config.cmd, config.source
                    )),
                },
                None => {
                    return Err(ProtectError::OverrideWithoutCommand {
                        container: name.to_owned(),
                    });
                }
            },
            (None, Some(ep)) => Start {
                entry_point: ep,
                command: None,
                note: None,
            },
            (None, None) if unwrapped.known_empty_entrypoint.contains(name) => Start {
                entry_point: Vec::new(),
                command: None,
                note: None,
            },
            (None, None) => match resolved {
                Some(config) => {
                    let command = cmd_from(config);
                    let what = if command.is_some() {
                        format!(
                            "ENTRYPOINT {:?} and CMD {:?} of {image} ({}) written as \"entryPoint\" (after the Defender) and \"command\"",
                            config.entrypoint, config.cmd, config.source
                        )
                    } else {
                        format!(
                            "ENTRYPOINT {:?} of {image} ({}) written as \"entryPoint\" after the Defender; its own \"command\" is kept",
                            config.entrypoint, config.source
                        )
                    };
                    Start {
                        entry_point: config.entrypoint.clone(),
                        command,
                        note: Some(format!("container {name:?}: {what}, so it runs as before")),
                    }
                }
                None => {
                    missing.push(name.to_owned());
                    continue;
                }
            },
        };
        out.push(start);
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(ProtectError::MissingEntryPoint {
            containers: missing,
        })
    }
}

/// Embedded mode: wraps every application container's entrypoint and links it to the sidecar.
fn wrap_containers(
    task: &mut Map<String, Value>,
    opts: &ProtectOptions,
    unwrapped: &Unwrapped,
    warnings: &mut Vec<String>,
) -> Result<(), ProtectError> {
    let Some(Value::Array(containers)) = task.get_mut("containerDefinitions") else {
        return Ok(());
    };
    let starts = starts(containers, opts, unwrapped)?;
    let sidecar = opts.sidecar_name.as_str();
    for (container, start) in containers.iter_mut().zip(starts) {
        let Some(container) = container.as_object_mut() else {
            continue;
        };
        let name = container_name(container).unwrap_or_default().to_owned();
        let image = container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(command) = &start.command {
            container.insert("command".into(), json_list(command));
        }
        warnings.extend(start.note);
        let original = start.entry_point;
        let has_command = string_list(container.get("command")).is_some_and(|c| !c.is_empty());
        if original.is_empty() && !has_command {
            return Err(ProtectError::NothingToRun { container: name });
        }
        let explicit = string_list(container.get("entryPoint")).filter(|ep| !ep.is_empty());
        if let Some(stated) = opts.entrypoints.get(&name) {
            match &explicit {
                Some(ep) if ep != stated => warnings.push(format!(
                    "container {name:?}: the entrypoint override {stated:?} replaces its entryPoint {ep:?}"
                )),
                _ => {}
            }
        }

        let mut wrapped: Vec<String> = ENTRYPOINT_WRAPPER.iter().map(|s| (*s).to_owned()).collect();
        wrapped.extend(original);
        container.insert("entryPoint".into(), json_list(&wrapped));

        if let Some(env) = list_entry(container, "environment") {
            // These names are ours: the application's own values would be overwritten anyway.
            env.retain(|e| {
                !matches!(
                    e.get("name").and_then(Value::as_str),
                    Some(ENV_CONTAINER_NAME | ENV_CONTAINER_IMAGE)
                )
            });
            env.push(json!({"name": ENV_CONTAINER_NAME, "value": name}));
            env.push(json!({"name": ENV_CONTAINER_IMAGE, "value": image}));
        }
        push_to_list(
            container,
            "volumesFrom",
            json!({"sourceContainer": sidecar, "readOnly": true}),
        );
        push_to_list(
            container,
            "dependsOn",
            json!({"containerName": sidecar, "condition": "START"}),
        );

        add_sys_ptrace(container);
        let drops = container
            .get("linuxParameters")
            .and_then(|l| l.get("capabilities"))
            .and_then(|c| string_list(c.get("drop")))
            .unwrap_or_default();
        if drops.iter().any(|d| is_sys_ptrace(d)) {
            warnings.push(format!(
                "container {name:?} drops SYS_PTRACE (linuxParameters.capabilities.drop) while the Defender adds it; remove it from \"drop\" or the Defender may not be able to watch this container"
            ));
        }
    }
    Ok(())
}

/// Is `cap` the ptrace capability, however spelled (`SYS_PTRACE`, `CAP_SYS_PTRACE`)?
fn is_sys_ptrace(cap: &str) -> bool {
    let cap = cap.to_ascii_uppercase();
    cap.strip_prefix("CAP_").unwrap_or(&cap) == SYS_PTRACE
}

/// Returns the list at `key`, creating it (or replacing a non-list) when needed.
fn list_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Vec<Value>> {
    let slot = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
}

/// Returns the object at `key`, creating it (or replacing a non-object) when needed.
fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Appends `item` to the list at `key`, creating the list when needed.
fn push_to_list(map: &mut Map<String, Value>, key: &str, item: Value) {
    if let Some(items) = list_entry(map, key) {
        items.push(item);
    }
}

/// Merges SYS_PTRACE into `linuxParameters.capabilities.add`, keeping everything else there.
fn add_sys_ptrace(container: &mut Map<String, Value>) {
    let add = object_entry(container, "linuxParameters")
        .and_then(|linux| object_entry(linux, "capabilities"))
        .and_then(|caps| list_entry(caps, "add"));
    if let Some(add) = add
        && !add.iter().any(|c| c.as_str().is_some_and(is_sys_ptrace))
    {
        add.push(json!(SYS_PTRACE));
    }
}

/// Picks the sidecar's logConfiguration: the first application container's that is not FireLens.
///
/// `awsfirelens` is skipped: ECS makes a container that logs through FireLens start after the
/// log router, and in embedded mode the router itself starts after the sidecar, so the sidecar
/// would wait for itself.
fn sidecar_log_configuration(
    task: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Option<Value> {
    let containers = task.get("containerDefinitions")?.as_array()?;
    let mut saw_firelens = false;
    for container in containers {
        let Some(log) = container.get("logConfiguration") else {
            continue;
        };
        match log.get("logDriver").and_then(Value::as_str) {
            Some("awsfirelens") => saw_firelens = true,
            Some("awslogs") => {
                let mut log = log.clone();
                if let Some(options) = log.as_object_mut().and_then(|m| object_entry(m, "options"))
                {
                    options.insert(
                        "awslogs-stream-prefix".into(),
                        json!(SIDECAR_LOG_STREAM_PREFIX),
                    );
                }
                return Some(log);
            }
            _ => return Some(log.clone()),
        }
    }
    if saw_firelens {
        warnings.push(
            "the Defender sidecar gets no logConfiguration: the containers log only through FireLens (awsfirelens), which the sidecar cannot use without a start-order cycle; add an awslogs configuration to it if you need its logs"
                .into(),
        );
    }
    None
}

/// Builds the Defender sidecar container definition.
fn build_sidecar(family: &str, opts: &ProtectOptions, log: Option<Value>) -> Value {
    let mut env = vec![
        json!({"name": ENV_FARGATE_TASK, "value": family}),
        json!({"name": ENV_MODE, "value": opts.mode.as_str()}),
    ];
    if let Some(addr) = &opts.console_addr {
        env.push(json!({"name": ENV_CONSOLE_ADDR, "value": addr}));
    }
    let mut sidecar = Map::new();
    sidecar.insert("name".into(), json!(opts.sidecar_name));
    sidecar.insert("image".into(), json!(opts.defender_image));
    sidecar.insert("essential".into(), json!(false));
    sidecar.insert("entryPoint".into(), json_list(&SIDECAR_ENTRYPOINT));
    match &opts.bundle {
        BundleSource::Env(bundle) => env.push(json!({"name": ENV_INSTALL_BUNDLE, "value": bundle})),
        BundleSource::Secret { value_from } => {
            sidecar.insert(
                "secrets".into(),
                json!([{"name": ENV_INSTALL_BUNDLE, "valueFrom": value_from}]),
            );
        }
        BundleSource::None => {}
    }
    sidecar.insert("environment".into(), Value::Array(env));
    sidecar.insert(
        "healthCheck".into(),
        json!({
            "command": SIDECAR_HEALTHCHECK,
            "interval": 10,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 10
        }),
    );
    if opts.mode == Mode::Sidecar {
        // Reading other processes' /proc entries needs ptrace access; Fargate allows this one.
        sidecar.insert(
            "linuxParameters".into(),
            json!({"capabilities": {"add": [SYS_PTRACE]}}),
        );
    }
    if let Some(log) = log {
        sidecar.insert("logConfiguration".into(), log);
    }
    Value::Object(sidecar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptrace_spellings() {
        assert!(is_sys_ptrace("SYS_PTRACE"));
        assert!(is_sys_ptrace("CAP_SYS_PTRACE"));
        assert!(is_sys_ptrace("sys_ptrace"));
        assert!(!is_sys_ptrace("SYS_ADMIN"));
    }

    #[test]
    fn sys_ptrace_merges_without_disturbing_other_settings() {
        let mut c = json!({"linuxParameters": {"initProcessEnabled": true,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["NET_RAW"]}}});
        let Value::Object(map) = &mut c else {
            unreachable!()
        };
        add_sys_ptrace(map);
        add_sys_ptrace(map);
        assert_eq!(
            c,
            json!({"linuxParameters": {"initProcessEnabled": true,
                "capabilities": {"add": ["NET_ADMIN", "SYS_PTRACE"], "drop": ["NET_RAW"]}}})
        );
        let mut empty = Map::new();
        add_sys_ptrace(&mut empty);
        assert_eq!(
            Value::Object(empty),
            json!({"linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"]}}})
        );
    }
}
