//! Why a task definition could not be protected, worded for the operator who pasted it.

use std::fmt::Write as _;

/// Every reason `protect` refuses; the Display text is shown to operators verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectError {
    /// The pasted text exceeds the size cap (a task definition is far smaller).
    #[error(
        "the input is {size} bytes, more than the {limit}-byte (1 MiB) limit; paste one task definition, not a list or an archive"
    )]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },

    /// The text does not parse as JSON.
    #[error(
        "the input is not valid JSON (line {line}, column {column}): {reason}; paste the task definition exactly as the ECS console's JSON tab shows it"
    )]
    NotJson {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// What the parser expected.
        reason: String,
    },

    /// The JSON is valid but is not an object, so it cannot be a task definition.
    #[error("the input is {found}, not a JSON object; {hint}")]
    NotAnObject {
        /// What was found instead (e.g. "a JSON array").
        found: &'static str,
        /// What to paste instead.
        hint: String,
    },

    /// The object holds no `containerDefinitions`, or an empty list of them.
    #[error("{0}")]
    NoContainers(String),

    /// A field has a value RegisterTaskDefinition would reject (wrong JSON type, missing member).
    #[error("{path}: {reason}")]
    InvalidField {
        /// Where, e.g. `containerDefinitions[0].cpu`.
        path: String,
        /// What is wrong and what is expected.
        reason: String,
    },

    /// The task definition has no `family`, which registration requires.
    #[error(
        "the task definition has no \"family\"; add \"family\": \"NAME\" (the task definition's name) and try again"
    )]
    MissingFamily,

    /// A container definition has no usable `name`.
    #[error(
        "container definition #{index} (counting from 1) has no \"name\"; every container needs a unique name of letters, digits, hyphens and underscores"
    )]
    ContainerWithoutName {
        /// 1-based position in `containerDefinitions`.
        index: usize,
    },

    /// A container name that ECS would reject.
    #[error(
        "container name {name:?} is not valid: use 1 to 255 letters (a-z, A-Z), digits, hyphens and underscores"
    )]
    InvalidContainerName {
        /// The offending name.
        name: String,
    },

    /// A container definition has no `image`.
    #[error(
        "container {name:?} has no \"image\"; add the image it runs (e.g. \"image\": \"nginx:1.27\")"
    )]
    ContainerWithoutImage {
        /// The container's name.
        name: String,
    },

    /// Two containers share a name, which registration rejects.
    #[error(
        "two containers are named {name:?}; container names must be unique within a task definition"
    )]
    DuplicateContainerName {
        /// The repeated name.
        name: String,
    },

    /// An application container already uses the name chosen for the Defender sidecar.
    #[error(
        "container {name:?} already exists and is not a Defender sidecar; choose another name for the Defender sidecar or rename that container"
    )]
    SidecarNameClash {
        /// The clashing name.
        name: String,
    },

    /// Windows tasks cannot run the Linux Defender.
    #[error(
        "this task definition runs on Windows (runtimePlatform.operatingSystemFamily = {os_family:?}); the Defender supports Linux tasks only"
    )]
    Windows {
        /// The operating system family found.
        os_family: String,
    },

    /// Embedded mode would have to guess the image ENTRYPOINT of these containers.
    #[error("{}", missing_entry_point_message(.containers))]
    MissingEntryPoint {
        /// Every container without an explicit `entryPoint` or override.
        containers: Vec<String>,
    },

    /// A container would be left with nothing to run after wrapping.
    #[error(
        "container {container:?} has no entryPoint (the override says the image has none) and no command, so it would have nothing to run; add its \"command\" to the task definition"
    )]
    NothingToRun {
        /// The container's name.
        container: String,
    },

    /// An entrypoint override names a container the task definition does not have.
    #[error("--entrypoint names container {name:?}, which is not in this task definition; its containers are: {}", quoted_list(.known))]
    UnknownOverride {
        /// The name given in the override.
        name: String,
        /// The application containers that do exist.
        known: Vec<String>,
    },

    /// An `--entrypoint NAME=JSON_ARRAY` argument that cannot be parsed.
    #[error(
        "cannot read entrypoint override {input:?}: {reason}; write it as NAME='[\"/path/to/entrypoint\", \"arg\"]' (or NAME='[]' when the image has no ENTRYPOINT)"
    )]
    InvalidEntrypointOverride {
        /// The argument as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A key RegisterTaskDefinition does not know carries data and looks like a misspelt
    /// known key (`Environment` for `environment`): dropping it would silently lose the data.
    #[error(
        "{path}: {key:?} is not a key RegisterTaskDefinition accepts, and it holds data that would be lost; did you mean {intended:?}? Rename it (keys are case-sensitive) and try again"
    )]
    MisspeltKey {
        /// Where the key is, e.g. `containerDefinitions[0]` or `the task definition`.
        path: String,
        /// The key as written.
        key: String,
        /// The accepted key it most likely means.
        intended: String,
    },

    /// No `runtimePlatform` says Windows, but the containers do (PowerShell or `cmd` entry
    /// points, `C:\` paths, Windows base images).
    #[error(
        "this task definition runs on Windows: container {container:?} {evidence}; the Defender supports Linux tasks only (a Windows task definition without runtimePlatform runs on EC2 Windows instances)"
    )]
    WindowsDetected {
        /// The container that shows it.
        container: String,
        /// What shows it, worded for the message.
        evidence: String,
    },

    /// The Defender sidecar would exceed ECS's container limit per task definition.
    #[error(
        "the task definition already has {count} containers, and ECS allows at most {limit} per task definition (service quota \"Containers per task definition\"), so the Defender sidecar cannot be added. There is no sidecar-free way to protect it (the sidecar carries the Defender binary in both modes): move one container to its own task definition (for example a separate service), or merge two of them, then protect again"
    )]
    TooManyContainers {
        /// Application containers in the definition.
        count: usize,
        /// ECS's limit.
        limit: usize,
    },

    /// The protected definition would exceed ECS's size limit for a registered task definition.
    #[error(
        "the protected task definition is {size} bytes as ECS measures it (compact JSON), more than the {limit}-byte (64 KiB) limit of RegisterTaskDefinition (the input is {input_size} bytes; the Defender adds {added}). Make it smaller: move environment variables into an S3 environment file (environmentFiles) or into secrets, or drop unused settings"
    )]
    TaskDefinitionTooLarge {
        /// Compact JSON size of the output in bytes.
        size: usize,
        /// Compact JSON size of the cleaned input in bytes.
        input_size: usize,
        /// Bytes the protection adds.
        added: usize,
        /// ECS's limit in bytes.
        limit: usize,
    },

    /// An entrypoint override without `command`: wrapping would drop the image's CMD.
    #[error(
        "container {container:?}: --entrypoint states its image's ENTRYPOINT, but the container has no \"command\", and once entryPoint is set Docker no longer runs the image's CMD, which would be silently dropped. Add the image's CMD as \"command\" (`docker image inspect --format '{{{{json .Config.Cmd}}}}' IMAGE` shows it), or use --resolve-images to read both from the image, or, if the image has no CMD, write the entry point as the container's \"entryPoint\" instead of an override"
    )]
    OverrideWithoutCommand {
        /// The container's name.
        container: String,
    },

    /// A protect option has an unusable value.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// Which option (e.g. "install bundle secret").
        option: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// The mode string is neither `embedded` nor `sidecar`.
    #[error(
        "unknown mode {0:?}; use \"embedded\" (wrap each container's entrypoint) or \"sidecar\" (no entrypoint changes)"
    )]
    UnknownMode(String),

    /// The request model compiled into the crate is unreadable (a build defect, never the input's fault).
    #[error(
        "internal error: the RegisterTaskDefinition model built into this program is unreadable ({0}); please report this"
    )]
    Model(String),
}

/// Formats names as `"a", "b"` for messages.
pub(crate) fn quoted_list(names: &[String]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{name:?}");
    }
    out
}

/// Builds the refusal text for containers whose image ENTRYPOINT is unknown.
fn missing_entry_point_message(containers: &[String]) -> String {
    let (noun, verb) = if containers.len() == 1 {
        ("container", "has")
    } else {
        ("containers", "have")
    };
    let example = containers.first().map_or("NAME", String::as_str);
    format!(
        "cannot protect in embedded mode: {noun} {} {verb} no \"entryPoint\", so the image's ENTRYPOINT is unknown and wrapping would silently drop it. \
Use --resolve-images (or --resolve-images=docker) to read each image's ENTRYPOINT and CMD from its registry or the local Docker engine, or, for each one, state the image's ENTRYPOINT with --entrypoint {example}='[\"/path/to/entrypoint\"]' (or {example}='[]' if the image has none; \
`docker image inspect --format '{{{{json .Config.Entrypoint}}}}' IMAGE` shows it), or add \"entryPoint\" to the container definition, \
or use --mode sidecar, which leaves entrypoints unchanged",
        quoted_list(containers)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_entry_point_names_every_container_and_both_ways_out() {
        let err = ProtectError::MissingEntryPoint {
            containers: vec!["web".into(), "xray".into()],
        };
        let msg = err.to_string();
        assert!(msg.contains("\"web\", \"xray\""), "{msg}");
        assert!(
            msg.contains("--entrypoint web='[\"/path/to/entrypoint\"]'"),
            "{msg}"
        );
        assert!(msg.contains("web='[]'"), "{msg}");
        assert!(msg.contains("--mode sidecar"), "{msg}");
        assert!(msg.contains("{{json .Config.Entrypoint}}"), "{msg}");
    }

    #[test]
    fn singular_wording_for_one_container() {
        let err = ProtectError::MissingEntryPoint {
            containers: vec!["api".into()],
        };
        assert!(err.to_string().contains("container \"api\" has no"));
    }
}
