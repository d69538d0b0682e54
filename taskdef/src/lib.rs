//! Turns an ECS task definition into one that runs under the Defender.
//!
//! An operator pastes a task definition (ECS console JSON tab, DescribeTaskDefinition
//! response, or RegisterTaskDefinition input) and gets back a RegisterTaskDefinition input,
//! accepted as is by `aws ecs register-task-definition --cli-input-json`, with a Defender
//! sidecar added and, in embedded mode, every application container started under the
//! Defender. The Console's CLI (`defender-console fargate protect`), its REST endpoint
//! (`POST /api/v1/defenders/fargate.json`) and its UI all call [`protect`].
//!
//! The pipeline, one module each: `input` accepts the input forms; `register_model` removes
//! what registration rejects, against the botocore request model compiled in from
//! `model/register-task-definition.json`; `unwrap` removes an earlier protection (ours or
//! Prisma Cloud's); `protect` adds ours.

mod ecs_rules;
mod error;
mod images;
mod input;
mod layout;
mod options;
mod protect;
mod register_model;
mod sidecar_edits;
mod unwrap;
pub mod waas;

use serde_json::Value;

pub use ecs_rules::{MAX_CONTAINERS, MAX_TASK_DEFINITION_BYTES, ecs_size};
pub use error::ProtectError;
pub use images::{ImageConfig, Platform, ResolutionPlan, ResolvedImages, plan_resolution};
pub use input::MAX_INPUT_BYTES;
pub use layout::{DEFENDER_BIN, DEFENDER_DIR};
pub use options::{
    BundleSource, DEFAULT_DEFENDER_IMAGE, DEFAULT_SIDECAR_NAME, Mode, ProtectOptions,
    parse_entrypoint_override,
};

/// The protected task definition and what the operator should know about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Protected {
    /// RegisterTaskDefinition input (`--cli-input-json`), with the Defender added.
    pub task_definition: Value,
    /// Non-fatal findings to show the operator (Fargate compatibility, removed keys, ...).
    pub warnings: Vec<String>,
}

/// Protects the task definition in `input` (any accepted form) according to `opts`.
///
/// Idempotent: protecting the output again with the same options yields the same value.
/// A definition protected earlier (by another version, with other options, or by Prisma
/// Cloud / Twistlock) is unwrapped first and protected anew.
pub fn protect(input: &str, opts: &ProtectOptions) -> Result<Protected, ProtectError> {
    opts.validate()?;
    let mut warnings = Vec::new();
    let task = input::accept(input)?;
    let mut task = register_model::clean_task(task, &mut warnings)?;
    let before = Value::Object(task.clone());

    let os_stated = task
        .get("runtimePlatform")
        .and_then(|p| p.get("operatingSystemFamily"))
        .is_some();
    // Judged on the unwrapped definition with the entry points the operator stated, so that a
    // definition and its protected form get the same answer (idempotence).
    let unwrapped = unwrap::unwrap(&mut task);
    if !os_stated {
        ecs_rules::refuse_windows(&task, &opts.entrypoints)?;
    }
    ecs_rules::refuse_too_many_containers(&task)?;
    ecs_rules::warn_registration_rules(&task, &mut warnings);
    protect::apply(&mut task, opts, &unwrapped, &mut warnings)?;
    if let Some(target) = &opts.waas {
        waas::apply(&mut task, target, &opts.sidecar_name, &mut warnings)?;
    }
    if opts.mode == Mode::Embedded {
        ecs_rules::warn_drop_all(&task, &mut warnings);
    }
    ecs_rules::app_mesh_egress(&mut task, opts, &mut warnings);
    ecs_rules::warn_defender_platform(&task, opts, &mut warnings);

    let mut task_definition = Value::Object(task);
    layout::sort_keys(&mut task_definition);
    ecs_rules::refuse_too_large(&task_definition, &before)?;
    let unchanged = normalized(&task_definition) == normalized(&before);
    if unchanged {
        warnings.push("already protected with these options; nothing changed".into());
    } else if unwrapped.twistlock {
        warnings.push(
            "replaced the Prisma Cloud (Twistlock) protection: removed the TwistlockDefender sidecar and its entrypoint wrappers, volumesFrom, dependsOn and TW_*/DEFENDER_TYPE/FARGATE_TASK variables; SYS_PTRACE was kept"
                .into(),
        );
    }
    for (name, image) in &unwrapped.our_sidecars {
        if !unchanged {
            warnings.push(format!(
                "updated the Defender sidecar {name:?} ({image}) of an earlier protection: its image, entry point and the variables this tool sets were rewritten, everything else added to it was kept"
            ));
        }
    }
    Ok(Protected {
        task_definition,
        warnings,
    })
}

/// `task` with each container's `environment` and `secrets` sorted by name: a register /
/// describe round trip may reorder them without changing what the task gets.
fn normalized(task: &Value) -> Value {
    let mut task = task.clone();
    if let Some(containers) = task
        .get_mut("containerDefinitions")
        .and_then(Value::as_array_mut)
    {
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["environment", "secrets"] {
                if let Some(list) = container.get_mut(key).and_then(Value::as_array_mut) {
                    list.sort_by(|a, b| {
                        let name = |v: &Value| {
                            v.get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned()
                        };
                        name(a).cmp(&name(b))
                    });
                }
            }
        }
    }
    task
}
