//! What an image runs when a container definition does not say: the image's ENTRYPOINT and CMD.
//!
//! ECS starts a container like `docker run`: the definition's `entryPoint` replaces the image's
//! ENTRYPOINT *and drops its CMD*; its `command` replaces CMD. Embedded mode has to write an
//! explicit `entryPoint` (the Defender wrapper in front), so a container that relied on the
//! image's ENTRYPOINT/CMD needs both written out or the program changes (nginx's entrypoint
//! script ends in `exec "$@"` and exits at once with no CMD). The Console reads them from the
//! image config (OCI image spec `config.Entrypoint` / `config.Cmd`, from a registry or from
//! `docker image inspect`) and hands them in as [`ResolvedImages`]; this module only plans which
//! images are needed and for which platform, so that the pure crate does no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::error::ProtectError;
use crate::layout::string_list;
use crate::options::{Mode, ProtectOptions};

/// The part of an image config (OCI image spec, `config` object) that decides what runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    /// `config.Entrypoint`; empty when the image has none (`null` in the JSON).
    pub entrypoint: Vec<String>,
    /// `config.Cmd`; empty when the image has none.
    pub cmd: Vec<String>,
    /// Where it was read, for the operator's warnings (e.g. `registry public.ecr.aws,
    /// sha256:…` or `local Docker engine`).
    pub source: String,
}

/// An OS/architecture pair as OCI image indexes name it (`linux`/`amd64`, `linux`/`arm64`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Platform {
    /// GOOS-style operating system: `linux`, `windows`.
    pub os: String,
    /// GOARCH-style architecture: `amd64`, `arm64`.
    pub architecture: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// Image facts the Console looked up before protecting (all optional: protecting without
/// them works as before, refusing what would need them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedImages {
    /// ENTRYPOINT/CMD by image reference exactly as the container definition spells it.
    pub configs: BTreeMap<String, ImageConfig>,
    /// Platforms the Defender image is published for, when the Console looked (an image
    /// index's entries, or the one platform of a single-platform image).
    pub defender_platforms: Option<Vec<Platform>>,
}

/// Which image configs protecting `input` needs, and for which platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolutionPlan {
    /// The platform the task runs on (`runtimePlatform`; linux/amd64 when unset).
    pub platform: Platform,
    /// Image references (deduplicated, in container order) whose ENTRYPOINT/CMD is needed.
    pub images: Vec<String>,
}

/// The platform of a cleaned task definition: `runtimePlatform.cpuArchitecture` `ARM64` is
/// `linux/arm64`, anything else (or unset, ECS's default) `linux/amd64`.
pub(crate) fn task_platform(task: &Map<String, Value>) -> Platform {
    let arch = task
        .get("runtimePlatform")
        .and_then(|p| p.get("cpuArchitecture"))
        .and_then(Value::as_str)
        .unwrap_or("X86_64");
    Platform {
        os: "linux".into(),
        architecture: if arch.eq_ignore_ascii_case("ARM64") {
            "arm64".into()
        } else {
            "amd64".into()
        },
    }
}

/// Does this container rely on its image's ENTRYPOINT or CMD, so that embedded mode needs
/// them? True when it states no `entryPoint` (its ENTRYPOINT is the image's) unless an
/// override states it and `command` is set, or when it has an override and no `command`.
pub(crate) fn needs_image_config(
    container: &Map<String, Value>,
    override_given: bool,
    known_empty: bool,
) -> bool {
    let has_entry_point = string_list(container.get("entryPoint")).is_some_and(|e| !e.is_empty());
    let has_command = string_list(container.get("command")).is_some_and(|c| !c.is_empty());
    if has_entry_point || known_empty {
        return false;
    }
    !(override_given && has_command)
}

/// Plans the image lookups for protecting `input` with `opts` (same parsing, cleaning and
/// unwrapping as [`crate::protect`], so the same errors for an unusable input).
pub fn plan_resolution(input: &str, opts: &ProtectOptions) -> Result<ResolutionPlan, ProtectError> {
    let task = crate::input::accept(input)?;
    let mut warnings = Vec::new();
    let mut task = crate::register_model::clean_task(task, &mut warnings)?;
    let unwrapped = crate::unwrap::unwrap(&mut task);
    let platform = task_platform(&task);
    let mut images = Vec::new();
    if opts.mode == Mode::Embedded {
        let mut seen = BTreeSet::new();
        let containers = task
            .get("containerDefinitions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for container in containers.iter().filter_map(Value::as_object) {
            let name = crate::layout::container_name(container).unwrap_or_default();
            let Some(image) = container.get("image").and_then(Value::as_str) else {
                continue;
            };
            let needed = needs_image_config(
                container,
                opts.entrypoints.contains_key(name),
                unwrapped.known_empty_entrypoint.contains(name),
            );
            if needed && seen.insert(image.to_owned()) {
                images.push(image.to_owned());
            }
        }
    }
    Ok(ResolutionPlan { platform, images })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn platform_follows_runtime_platform() {
        let arm = json!({"runtimePlatform": {"cpuArchitecture": "ARM64"}});
        let Value::Object(arm) = arm else {
            unreachable!()
        };
        assert_eq!(task_platform(&arm).to_string(), "linux/arm64");
        assert_eq!(task_platform(&Map::new()).to_string(), "linux/amd64");
    }

    #[test]
    fn plan_lists_each_image_once_and_only_when_needed() {
        let input = json!({"family": "f", "runtimePlatform": {"cpuArchitecture": "ARM64"},
        "containerDefinitions": [
            {"name": "a", "image": "nginx:1"},
            {"name": "b", "image": "nginx:1"},
            {"name": "c", "image": "app:1", "entryPoint": ["/app"]},
            {"name": "d", "image": "cmd-only:1", "command": ["x"]},
            {"name": "e", "image": "over:1"},
            {"name": "g", "image": "over-cmd:1", "command": ["y"]}
        ]})
        .to_string();
        let opts = ProtectOptions {
            entrypoints: BTreeMap::from([
                ("e".to_owned(), vec!["/e".to_owned()]),
                ("g".to_owned(), vec!["/g".to_owned()]),
            ]),
            ..ProtectOptions::default()
        };
        let plan = plan_resolution(&input, &opts).expect("plan");
        assert_eq!(plan.platform.to_string(), "linux/arm64");
        assert_eq!(plan.images, ["nginx:1", "cmd-only:1", "over:1"]);
        let sidecar = ProtectOptions {
            mode: Mode::Sidecar,
            ..ProtectOptions::default()
        };
        assert!(
            plan_resolution(&input, &sidecar)
                .expect("plan")
                .images
                .is_empty()
        );
    }
}
