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

mod error;
mod input;
mod layout;
mod options;
mod protect;
mod register_model;
mod unwrap;

use serde_json::Value;

pub use error::ProtectError;
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

    let unwrapped = unwrap::unwrap(&mut task);
    protect::apply(&mut task, opts, &unwrapped, &mut warnings)?;

    let mut task_definition = Value::Object(task);
    layout::sort_keys(&mut task_definition);
    if task_definition == before {
        warnings.push("already protected with these options; nothing changed".into());
    } else if unwrapped.twistlock {
        warnings.push(
            "replaced the Prisma Cloud (Twistlock) protection: removed the TwistlockDefender sidecar and its entrypoint wrappers, volumesFrom, dependsOn and TW_*/DEFENDER_TYPE/FARGATE_TASK variables; SYS_PTRACE was kept"
                .into(),
        );
    }
    for (name, image) in &unwrapped.our_sidecars {
        if task_definition != before {
            warnings.push(format!(
                "replaced the Defender sidecar {name:?} ({image}) of an earlier protection"
            ));
        }
    }
    Ok(Protected {
        task_definition,
        warnings,
    })
}
