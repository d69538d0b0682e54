//! Shared test helpers: a strict RegisterTaskDefinition validator and fixture loading.
//!
//! The validator reads the vendored botocore model itself and shares no code with the crate's
//! cleaner, so a cleaning bug cannot hide behind the same logic.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use defender_taskdef::{ProtectOptions, Protected, protect};
use serde_json::{Map, Value, json};

/// The vendored, trimmed botocore model.
const MODEL_JSON: &str = include_str!("../../model/register-task-definition.json");

/// Keys of a described task definition that registration rejects (from the issue).
pub const READ_ONLY: &[&str] = &[
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
];

/// The embedded-mode entrypoint prefix, as the issue specifies it.
pub const WRAPPER: [&str; 4] = ["/var/lib/defender/defender", "fargate", "entrypoint", "--"];

/// The sidecar's entrypoint, as the issue specifies it.
pub const SIDECAR_ENTRYPOINT: [&str; 3] = ["/var/lib/defender/defender", "fargate", "sidecar"];

/// The parsed model.
pub fn model() -> &'static Value {
    static MODEL: OnceLock<Value> = OnceLock::new();
    MODEL.get_or_init(|| serde_json::from_str(MODEL_JSON).expect("vendored model parses"))
}

/// Validates `request` as a RegisterTaskDefinition input; returns every violation found.
pub fn validate(request: &Value) -> Vec<String> {
    let model = model();
    let input = model["input"].as_str().expect("model names its input");
    let mut errors = Vec::new();
    check(request, input, "$", &mut errors);
    errors
}

/// Panics with the violations when `request` is not a valid RegisterTaskDefinition input.
pub fn assert_valid(request: &Value, context: &str) {
    let errors = validate(request);
    assert!(
        errors.is_empty(),
        "{context}: output violates the request model:\n{}",
        errors.join("\n")
    );
}

fn check(value: &Value, shape_name: &str, path: &str, errors: &mut Vec<String>) {
    let shape = &model()["shapes"][shape_name];
    let kind = shape["type"].as_str().unwrap_or("?");
    if value.is_null() {
        errors.push(format!("{path}: null ({shape_name})"));
        return;
    }
    let limit = |name: &str| shape.get(name).and_then(Value::as_i64);
    let check_range = |n: i64, what: &str, errors: &mut Vec<String>| {
        if let Some(min) = limit("min")
            && n < min
        {
            errors.push(format!("{path}: {what} {n} below min {min}"));
        }
        if let Some(max) = limit("max")
            && n > max
        {
            errors.push(format!("{path}: {what} {n} above max {max}"));
        }
    };
    match kind {
        "structure" => {
            let Some(obj) = value.as_object() else {
                errors.push(format!(
                    "{path}: expected object for {shape_name}, got {value}"
                ));
                return;
            };
            let members = shape["members"].as_object().expect("structure has members");
            for (key, v) in obj {
                match members.get(key) {
                    Some(member) => check(
                        v,
                        member["shape"].as_str().expect("member shape"),
                        &format!("{path}.{key}"),
                        errors,
                    ),
                    None => errors.push(format!("{path}: unknown key {key:?} in {shape_name}")),
                }
            }
            for required in shape
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let required = required.as_str().expect("required is a name");
                if !obj.contains_key(required) {
                    errors.push(format!(
                        "{path}: missing required {required:?} of {shape_name}"
                    ));
                }
            }
            if shape.get("union") == Some(&Value::Bool(true)) && obj.len() != 1 {
                errors.push(format!(
                    "{path}: union {shape_name} must set exactly one member"
                ));
            }
        }
        "list" => {
            let Some(items) = value.as_array() else {
                errors.push(format!(
                    "{path}: expected list for {shape_name}, got {value}"
                ));
                return;
            };
            check_range(items.len() as i64, "length", errors);
            let member = shape["member"]["shape"].as_str().expect("list member");
            for (i, item) in items.iter().enumerate() {
                check(item, member, &format!("{path}[{i}]"), errors);
            }
        }
        "map" => {
            let Some(entries) = value.as_object() else {
                errors.push(format!(
                    "{path}: expected map for {shape_name}, got {value}"
                ));
                return;
            };
            let value_shape = shape["value"]["shape"].as_str().expect("map value");
            for (k, v) in entries {
                check(v, value_shape, &format!("{path}[{k:?}]"), errors);
            }
        }
        "string" => {
            let Some(s) = value.as_str() else {
                errors.push(format!(
                    "{path}: expected string for {shape_name}, got {value}"
                ));
                return;
            };
            if let Some(allowed) = shape.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a == s)
            {
                errors.push(format!("{path}: {s:?} is not a {shape_name} value"));
            }
            check_range(s.chars().count() as i64, "string length", errors);
        }
        "integer" | "long" => match value.as_i64() {
            Some(n) => check_range(n, "value", errors),
            None => errors.push(format!(
                "{path}: expected integer for {shape_name}, got {value}"
            )),
        },
        "boolean" => {
            if !value.is_boolean() {
                errors.push(format!(
                    "{path}: expected boolean for {shape_name}, got {value}"
                ));
            }
        }
        other => errors.push(format!("{path}: validator does not know type {other}")),
    }
}

/// Path of a fixture under tests/data.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Loads a fixture as JSON.
pub fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(data_path(name)).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The three input forms derived from a DescribeTaskDefinition response fixture.
pub struct Forms {
    /// The bare task definition, as the console's JSON tab shows it (read-only fields included).
    pub json_tab: Value,
    /// The DescribeTaskDefinition response itself (with tags).
    pub describe: Value,
    /// A RegisterTaskDefinition input: read-only fields removed, tags inside.
    pub register: Value,
}

impl Forms {
    /// Builds the three forms of `described`.
    pub fn of(described: &Value) -> Self {
        let json_tab = described["taskDefinition"].clone();
        let mut register = json_tab
            .as_object()
            .expect("task definition object")
            .clone();
        for key in READ_ONLY {
            register.remove(*key);
        }
        if let Some(tags) = described.get("tags") {
            register.insert("tags".into(), tags.clone());
        }
        Self {
            json_tab,
            describe: described.clone(),
            register: Value::Object(register),
        }
    }

    /// Each form with its label and the task definition (register form) it stands for.
    pub fn each(&self) -> Vec<(&'static str, &Value, Value)> {
        let mut without_tags = self.register.as_object().expect("object").clone();
        without_tags.remove("tags");
        vec![
            ("json-tab", &self.json_tab, Value::Object(without_tags)),
            ("describe", &self.describe, self.register.clone()),
            ("register", &self.register, self.register.clone()),
        ]
    }
}

/// Protects `input` (serialized) and panics with the error when refused.
pub fn protect_ok(input: &Value, opts: &ProtectOptions) -> Protected {
    let text = serde_json::to_string_pretty(input).expect("serializes");
    match protect(&text, opts) {
        Ok(p) => p,
        Err(e) => panic!("protect refused: {e}"),
    }
}

/// The containers of a task definition.
pub fn containers(task: &Value) -> &Vec<Value> {
    task["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions list")
}

/// Reads a list of strings.
pub fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value.map(|v| {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect()
    })
}

/// Converts string slices into owned strings.
pub fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// entryPoint without the Defender wrapper; panics if the wrapper is missing.
pub fn unwrapped_entry_point(container: &Value) -> Vec<String> {
    let ep = strings(container.get("entryPoint")).expect("wrapped container has entryPoint");
    assert!(
        ep.len() >= WRAPPER.len() && ep[..WRAPPER.len()] == WRAPPER,
        "entryPoint {ep:?} does not start with the wrapper"
    );
    ep[WRAPPER.len()..].to_vec()
}

/// Looks up an environment variable in a container's `environment`.
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container
        .get("environment")?
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// Removes what a mode switch legitimately leaves behind, for comparisons: pidMode, SYS_PTRACE,
/// and the difference between an empty and an absent environment/volumesFrom/dependsOn list.
pub fn without_mode_residue(task: &Value) -> Value {
    let mut task = task.clone();
    let obj = task.as_object_mut().expect("object");
    obj.remove("pidMode");
    if let Some(Value::Array(containers)) = obj.get_mut("containerDefinitions") {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["environment", "volumesFrom", "dependsOn"] {
                if c.get(key) == Some(&json!([])) {
                    c.remove(key);
                }
            }
            let mut drop_linux = false;
            if let Some(Value::Object(linux)) = c.get_mut("linuxParameters") {
                let mut drop_caps = false;
                if let Some(Value::Object(caps)) = linux.get_mut("capabilities") {
                    if let Some(Value::Array(add)) = caps.get_mut("add") {
                        add.retain(|a| a != "SYS_PTRACE");
                        if add.is_empty() {
                            caps.remove("add");
                        }
                    }
                    drop_caps = caps.is_empty();
                }
                if drop_caps {
                    linux.remove("capabilities");
                }
                drop_linux = linux.is_empty();
            }
            if drop_linux {
                c.remove("linuxParameters");
            }
        }
    }
    task
}

/// An object from `json!` as a map.
pub fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// The healthCheck the issue specifies for the sidecar.
pub fn expected_sidecar_healthcheck() -> Value {
    json!({
        "command": ["CMD", "/var/lib/defender/defender", "fargate", "healthcheck"],
        "interval": 10, "timeout": 5, "retries": 3, "startPeriod": 10
    })
}
