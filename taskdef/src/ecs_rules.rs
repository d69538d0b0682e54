//! ECS and Fargate rules that registration or the task launch enforces, checked before the
//! operator registers the result: refusals for what cannot work, warnings naming the AWS rule
//! for what will most likely be refused.
//!
//! Sources: Amazon ECS service quotas ("Containers per task definition": 10; "Task definition
//! size": 64 KiB, measured on the request's compact JSON), the Fargate task size table
//! ("Task CPU and memory"), `KernelCapabilities` ("For tasks on Fargate, only SYS_PTRACE can
//! be added"), the `family` rule ("up to 255 letters, numbers, hyphens and underscores"), and
//! App Mesh's `ProxyConfiguration` properties (`EgressIgnoredPorts`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::ProtectError;
use crate::images::{Platform, task_platform};
use crate::layout::{SYS_PTRACE, container_name, string_list};
use crate::options::ProtectOptions;

/// ECS's default quota of containers per task definition.
pub const MAX_CONTAINERS: usize = 10;

/// ECS's limit on a registered task definition: 64 KiB of compact request JSON.
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;

/// Byte length of `value` as ECS measures it: compact JSON.
pub fn ecs_size(value: &Value) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

/// The containers of a task definition, empty when absent.
fn containers(task: &Map<String, Value>) -> &[Value] {
    task.get("containerDefinitions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Does `s` start like a Windows path (`C:\`, `c:/`)?
fn is_windows_path(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
}

/// Is `program` PowerShell or `cmd`, however written (`powershell.exe`, `C:\…\pwsh.exe`)?
fn is_windows_shell(program: &str) -> bool {
    let base = program
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(program)
        .to_ascii_lowercase();
    let base = base.strip_suffix(".exe").unwrap_or(&base);
    matches!(base, "powershell" | "pwsh" | "cmd")
}

/// Is `image` a Windows base image or built on one (by its well-known names)?
fn is_windows_image(image: &str) -> bool {
    let image = image.to_ascii_lowercase();
    image.contains("mcr.microsoft.com/windows")
        || image.contains("/windows/servercore")
        || image.contains("/windows/nanoserver")
        || image.contains("windowsservercore")
        || image.contains("nanoserver")
        || image.contains("mcr.microsoft.com/dotnet/framework")
}

/// Refuses a Windows task definition that no `runtimePlatform` marks as such (EC2 Windows):
/// PowerShell/cmd entry points, `C:\` paths, Windows base images.
pub(crate) fn refuse_windows(
    task: &Map<String, Value>,
    stated_entrypoints: &BTreeMap<String, Vec<String>>,
) -> Result<(), ProtectError> {
    for container in containers(task).iter().filter_map(Value::as_object) {
        let name = container_name(container).unwrap_or_default().to_owned();
        let found = |evidence: String| ProtectError::WindowsDetected {
            container: name.clone(),
            evidence,
        };
        if let Some(image) = container.get("image").and_then(Value::as_str)
            && is_windows_image(image)
        {
            return Err(found(format!("runs the Windows image {image:?}")));
        }
        // An entry point stated with `--entrypoint NAME=…` stands for the image's.
        let entry_point = stated_entrypoints
            .get(&name)
            .cloned()
            .or_else(|| string_list(container.get("entryPoint")));
        let argv: Vec<String> = entry_point
            .iter()
            .flatten()
            .cloned()
            .chain(string_list(container.get("command")).into_iter().flatten())
            .collect();
        if let Some(first) = entry_point
            .and_then(|e| e.into_iter().next())
            .filter(|p| is_windows_shell(p))
        {
            return Err(found(format!("starts {first:?}")));
        }
        let mut paths = argv;
        paths.extend(
            container
                .get("workingDirectory")
                .and_then(Value::as_str)
                .map(str::to_owned),
        );
        if let Some(mounts) = container.get("mountPoints").and_then(Value::as_array) {
            paths.extend(
                mounts
                    .iter()
                    .filter_map(|m| m.get("containerPath").and_then(Value::as_str))
                    .map(str::to_owned),
            );
        }
        // Paths inside an argument count too ("New-Item -Path C:\inetpub\...").
        if let Some(path) = paths.iter().find(|p| {
            p.split_whitespace()
                .any(|w| is_windows_path(w.trim_matches(['"', '\'', ';'])))
        }) {
            let short: String = path.chars().take(60).collect();
            return Err(found(format!("uses the Windows path in {short:?}")));
        }
    }
    Ok(())
}

/// Refuses when the sidecar would push the definition over ECS's container limit.
pub(crate) fn refuse_too_many_containers(task: &Map<String, Value>) -> Result<(), ProtectError> {
    let count = containers(task).len();
    if count + 1 > MAX_CONTAINERS {
        return Err(ProtectError::TooManyContainers {
            count,
            limit: MAX_CONTAINERS,
        });
    }
    Ok(())
}

/// Refuses a protected definition over ECS's size limit.
pub(crate) fn refuse_too_large(output: &Value, input: &Value) -> Result<(), ProtectError> {
    let size = ecs_size(output);
    if size > MAX_TASK_DEFINITION_BYTES {
        let input_size = ecs_size(input);
        return Err(ProtectError::TaskDefinitionTooLarge {
            size,
            input_size,
            added: size.saturating_sub(input_size),
            limit: MAX_TASK_DEFINITION_BYTES,
        });
    }
    Ok(())
}

/// Parses a task-level `cpu` (units: `"1024"`, `"1 vCPU"`, `"0.25 vcpu"`).
fn cpu_units(value: &Value) -> Option<u64> {
    let s = value.as_str()?.trim().to_ascii_lowercase();
    if let Some(v) = s.strip_suffix("vcpu") {
        let v: f64 = v.trim().parse().ok()?;
        return Some((v * 1024.0).round() as u64);
    }
    s.parse().ok()
}

/// Parses a task-level `memory` in MiB (`"2048"`, `"2 GB"`, `"0.5gb"`).
fn memory_mib(value: &Value) -> Option<u64> {
    let s = value.as_str()?.trim().to_ascii_lowercase();
    if let Some(v) = s.strip_suffix("gb") {
        let v: f64 = v.trim().parse().ok()?;
        return Some((v * 1024.0).round() as u64);
    }
    s.parse().ok()
}

/// The memory values (MiB) Fargate accepts with `cpu` units, per AWS's task size table.
fn fargate_memory_choices(cpu: u64) -> Option<Vec<u64>> {
    let range = |from: u64, to: u64, step: u64| (from..=to).step_by(step as usize).collect();
    Some(match cpu {
        256 => vec![512, 1024, 2048],
        512 => range(1024, 4096, 1024),
        1024 => range(2048, 8192, 1024),
        2048 => range(4096, 16384, 1024),
        4096 => range(8192, 30720, 1024),
        8192 => range(16384, 61440, 4096),
        16384 => range(32768, 122880, 8192),
        _ => return None,
    })
}

/// Does the task declare FARGATE in `requiresCompatibilities`?
fn is_fargate(task: &Map<String, Value>) -> bool {
    task.get("requiresCompatibilities")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|v| v == "FARGATE"))
}

/// Warns about what ECS or Fargate will refuse: task size, capabilities, family.
pub(crate) fn warn_registration_rules(task: &Map<String, Value>, warnings: &mut Vec<String>) {
    let family = task
        .get("family")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let placeholder = (family.contains('<') && family.contains('>'))
        || family.contains("${")
        || family.contains("{{")
        || family.starts_with('$');
    let family_ok = family.len() <= 255
        && family
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if placeholder {
        warnings.push(format!(
            "family {family:?} is an unfilled template placeholder: ECS allows up to 255 letters, numbers, hyphens and underscores in a family, so registration will fail; put the task definition's real name there"
        ));
    } else if !family_ok {
        warnings.push(format!(
            "family {family:?} breaks ECS's rule for family names (up to 255 letters, numbers, hyphens and underscores), so registration will fail"
        ));
    }

    if !is_fargate(task) {
        return;
    }
    match (task.get("cpu"), task.get("memory")) {
        (Some(cpu_v), Some(mem_v)) => match (cpu_units(cpu_v), memory_mib(mem_v)) {
            (Some(cpu), Some(mem)) => match fargate_memory_choices(cpu) {
                None => warnings.push(format!(
                    "cpu {cpu_v} is not a Fargate task size: Fargate accepts task cpu 256, 512, 1024, 2048, 4096, 8192 or 16384 units (AWS's Fargate task CPU and memory table), so the task will not launch"
                )),
                Some(choices) if !choices.contains(&mem) => warnings.push(format!(
                    "cpu {cpu_v} with memory {mem_v} is not a valid Fargate task size: with {cpu} CPU units Fargate accepts memory {} MiB (AWS's Fargate task CPU and memory table), so the task will not launch",
                    summarize(&choices)
                )),
                Some(_) => {}
            },
            _ => warnings.push(format!(
                "cpu {cpu_v} / memory {mem_v} cannot be read as a Fargate task size (CPU units or \"N vCPU\", MiB or \"N GB\")"
            )),
        },
        _ => warnings.push(
            "a Fargate task definition needs task-level \"cpu\" and \"memory\" (AWS's Fargate task CPU and memory table); registration will fail without them"
                .into(),
        ),
    }
    for container in containers(task).iter().filter_map(Value::as_object) {
        let added = container
            .get("linuxParameters")
            .and_then(|l| l.get("capabilities"))
            .and_then(|c| string_list(c.get("add")))
            .unwrap_or_default();
        let others: Vec<&String> = added
            .iter()
            .filter(|c| {
                let c = c.to_ascii_uppercase();
                c.strip_prefix("CAP_").unwrap_or(&c) != SYS_PTRACE
            })
            .collect();
        if !others.is_empty() {
            let name = container_name(container).unwrap_or_default();
            warnings.push(format!(
                "container {name:?} adds the capabilities {others:?}: on Fargate only SYS_PTRACE can be added (linuxParameters.capabilities.add), so registration or launch will fail"
            ));
        }
    }
}

/// `[a, b, …, z]` for long lists of sizes.
fn summarize(choices: &[u64]) -> String {
    match choices {
        [first, .., last] if choices.len() > 4 => {
            let step = choices[1] - choices[0];
            format!("{first} to {last} in steps of {step}")
        }
        _ => choices
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Notes how `drop: ["ALL"]` and the Defender's SYS_PTRACE go together.
pub(crate) fn warn_drop_all(task: &Map<String, Value>, warnings: &mut Vec<String>) {
    for container in containers(task).iter().filter_map(Value::as_object) {
        let drops_all = container
            .get("linuxParameters")
            .and_then(|l| l.get("capabilities"))
            .and_then(|c| string_list(c.get("drop")))
            .is_some_and(|d| d.iter().any(|c| c.eq_ignore_ascii_case("ALL")));
        if drops_all {
            let name = container_name(container).unwrap_or_default();
            warnings.push(format!(
                "container {name:?} drops ALL capabilities and now adds SYS_PTRACE: Docker applies \"drop\" before \"add\", so the container keeps only SYS_PTRACE, which the Defender needs to watch its processes; nothing else is granted"
            ));
        }
    }
}

/// The Console's ports from its address (`host:port`, `[v6]:port`), or from each of a
/// comma-separated list (Console replicas), without repeats, in order.
fn console_ports(addr: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for entry in addr.split(',') {
        if let Some(port) = entry
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            && !ports.contains(&port)
        {
            ports.push(port);
        }
    }
    ports
}

/// App Mesh: Envoy intercepts the task's egress, so the Defender's connection to the Console
/// would go through the mesh; `EgressIgnoredPorts` lets it out directly (every port of the
/// Console addresses).
pub(crate) fn app_mesh_egress(
    task: &mut Map<String, Value>,
    opts: &ProtectOptions,
    warnings: &mut Vec<String>,
) {
    let Some(proxy) = task
        .get_mut("proxyConfiguration")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if proxy.get("type").and_then(Value::as_str) != Some("APPMESH") {
        return;
    }
    let ports = opts
        .console_addr
        .as_deref()
        .map(console_ports)
        .unwrap_or_default();
    if ports.is_empty() {
        warnings.push(
            "App Mesh (proxyConfiguration APPMESH) sends the task's egress through Envoy: give the Console address (--console-addr) so that its port is added to EgressIgnoredPorts, or add it there yourself, so the Defender reaches the Console directly"
                .into(),
        );
        return;
    }
    let properties = proxy
        .entry("properties")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(properties) = properties.as_array_mut() else {
        return;
    };
    let mut added = Vec::new();
    for port in ports {
        let port_s = port.to_string();
        let existing = properties
            .iter_mut()
            .find(|p| p.get("name").and_then(Value::as_str) == Some("EgressIgnoredPorts"));
        match existing {
            Some(entry) => {
                let value = entry
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if value.split(',').any(|p| p.trim() == port_s) {
                    continue;
                }
                let joined = if value.trim().is_empty() {
                    port_s.clone()
                } else {
                    format!("{value},{port_s}")
                };
                entry["value"] = json!(joined);
            }
            None => properties.push(json!({"name": "EgressIgnoredPorts", "value": port_s})),
        }
        added.push(port_s);
    }
    let what = match added.as_slice() {
        [] => return,
        [port] => format!("port {port}"),
        ports => format!("ports {}", ports.join(", ")),
    };
    warnings.push(format!(
        "App Mesh (proxyConfiguration APPMESH): added the Console's {what} to EgressIgnoredPorts, so the Defender connects to the Console directly instead of through Envoy"
    ));
}

/// Warns when the Console looked up the Defender image and it lacks the task's platform.
pub(crate) fn warn_defender_platform(
    task: &Map<String, Value>,
    opts: &ProtectOptions,
    warnings: &mut Vec<String>,
) {
    let Some(platforms) = &opts.resolved_images.defender_platforms else {
        return;
    };
    let wanted: Platform = task_platform(task);
    if !platforms.contains(&wanted) {
        let have: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        warnings.push(format!(
            "container {:?}: the Defender image {} is published for {} only, not for this task's {wanted} (runtimePlatform): the task will fail to start; use a multi-arch Defender image (deploy/build-images.sh builds linux/amd64 and linux/arm64)",
            opts.sidecar_name,
            opts.defender_image,
            if have.is_empty() { "no platform".to_owned() } else { have.join(", ") }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_sizes_follow_the_table() {
        assert_eq!(cpu_units(&json!("1 vCPU")), Some(1024));
        assert_eq!(cpu_units(&json!("256")), Some(256));
        assert_eq!(memory_mib(&json!("2 GB")), Some(2048));
        assert_eq!(memory_mib(&json!("0.5GB")), Some(512));
        assert!(fargate_memory_choices(256).is_some_and(|c| c.contains(&512)));
        assert!(fargate_memory_choices(1024).is_some_and(|c| !c.contains(&1024)));
        assert!(fargate_memory_choices(8192).is_some_and(|c| c.contains(&20480)));
        assert!(fargate_memory_choices(8192).is_some_and(|c| !c.contains(&17408)));
        assert!(fargate_memory_choices(128).is_none());
    }

    #[test]
    fn windows_evidence() {
        assert!(is_windows_shell("powershell"));
        assert!(is_windows_shell("C:\\Windows\\System32\\cmd.exe"));
        assert!(!is_windows_shell("/bin/sh"));
        assert!(is_windows_path("C:\\inetpub"));
        assert!(!is_windows_path("/c:/x"));
        assert!(is_windows_image(
            "mcr.microsoft.com/windows/servercore/iis:windowsservercore-ltsc2019"
        ));
        assert!(!is_windows_image("public.ecr.aws/nginx/nginx:1.27"));
    }

    #[test]
    fn console_ports_of_one_address_or_a_list() {
        assert_eq!(console_ports("console.example.com:8084"), [8084]);
        assert_eq!(console_ports("[::1]:443"), [443]);
        assert!(console_ports("console").is_empty());
        assert_eq!(console_ports("a:8084, b:9443,c:8084,d"), [8084, 9443]);
    }
}
