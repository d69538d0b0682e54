//! Which keys and value types RegisterTaskDefinition accepts, from the botocore request model.
//!
//! The model (`model/register-task-definition.json`, trimmed from botocore by
//! `tools/extract-register-model.py`) is compiled in and is the single source of truth: the
//! cleaner walks the input against it, so a key AWS adds to the model is kept without a code
//! change here. Cleaning rules, per the model:
//!
//! * a key the request does not accept is removed; the read-only keys of a described task
//!   definition (`taskDefinitionArn`, `revision`, `status`, ...) silently, any other key with a
//!   warning (it is most likely a misspelling, e.g. `entrypoint`);
//! * `null` members are removed (registration rejects `null`), and so is an empty string for
//!   an enum member (`"networkMode": ""` means "not set") and an empty object for a structure
//!   with required members (`"logConfiguration": {}` means "none");
//! * everything else is kept exactly, including empty lists (`"environment": []`) and empty
//!   strings of free-text members, which registration accepts;
//! * a value of the wrong JSON type, a `null` inside a list or map, and a partly filled
//!   structure missing a required member are refused with the path, because dropping them
//!   would silently change what the operator meant.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ProtectError;

/// The trimmed botocore model, compiled into the crate.
pub(crate) const MODEL_JSON: &str = include_str!("../model/register-task-definition.json");

/// Keys of a described task definition that registration rejects; removed without a warning.
pub(crate) const READ_ONLY_FIELDS: &[&str] = &[
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

/// The request model: named shapes and the input shape's name.
#[derive(Debug, Deserialize)]
pub(crate) struct Model {
    /// Name of the request structure (`RegisterTaskDefinitionRequest`).
    pub input: String,
    /// Every shape reachable from the request.
    pub shapes: BTreeMap<String, Shape>,
}

/// One botocore shape, reduced to what cleaning needs.
#[derive(Debug, Deserialize)]
pub(crate) struct Shape {
    /// botocore type name: structure, list, map, string, integer, boolean, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Members of a structure, by JSON key.
    #[serde(default)]
    pub members: BTreeMap<String, ShapeRef>,
    /// Members a structure must have.
    #[serde(default)]
    pub required: Vec<String>,
    /// Element shape of a list.
    pub member: Option<ShapeRef>,
    /// Value shape of a map.
    pub value: Option<ShapeRef>,
    /// Allowed values of an enum string.
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    /// Least length (string, list) or value (integer).
    pub min: Option<i64>,
    /// Greatest length (string, list) or value (integer).
    pub max: Option<i64>,
    /// A structure of which exactly one member is set.
    #[serde(default)]
    pub union: bool,
}

impl Shape {
    /// Explains why `n` (a length or value) is outside this shape's limits, if it is.
    fn out_of_range(&self, n: i64, what: &str) -> Option<String> {
        match (self.min, self.max) {
            (Some(min), _) if n < min => Some(format!("{what} is {n}, below the minimum of {min}")),
            (_, Some(max)) if n > max => Some(format!("{what} is {n}, above the maximum of {max}")),
            _ => None,
        }
    }
}

/// A reference from a member, list or map to a named shape.
#[derive(Debug, Deserialize)]
pub(crate) struct ShapeRef {
    /// The referenced shape's name.
    pub shape: String,
}

/// Returns the compiled-in model, parsed once.
pub(crate) fn model() -> Result<&'static Model, ProtectError> {
    static MODEL: OnceLock<Result<Model, String>> = OnceLock::new();
    MODEL
        .get_or_init(|| serde_json::from_str(MODEL_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ProtectError::Model(e.clone()))
}

impl Model {
    /// Looks a shape up, treating a dangling reference as a defect of the compiled-in model.
    fn shape(&self, name: &str) -> Result<&Shape, ProtectError> {
        self.shapes
            .get(name)
            .ok_or_else(|| ProtectError::Model(format!("shape {name} is missing")))
    }
}

/// Cleans a whole task definition (the request object) against the model.
pub(crate) fn clean_task(
    task: Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Map<String, Value>, ProtectError> {
    let model = model()?;
    let mut cleaner = Cleaner { model, warnings };
    let input = model.shape(&model.input)?;
    cleaner.structure(task, input, "", false)
}

/// Walks values against shapes, collecting warnings for removed keys.
struct Cleaner<'a> {
    /// The model to clean against.
    model: &'a Model,
    /// Where notes about removed keys go.
    warnings: &'a mut Vec<String>,
}

/// Describes a JSON value's type (and a short preview) for error messages.
fn describe(value: &Value) -> String {
    let preview = |s: String| {
        let short: String = s.chars().take(40).collect();
        if short.len() < s.len() {
            format!("{short}...")
        } else {
            short
        }
    };
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", preview(format!("{s:?}"))),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Joins a parent path and a key (`containerDefinitions[0]` + `cpu`).
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The path shown for the task definition's top level.
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the task definition"
    } else {
        path
    }
}

impl Cleaner<'_> {
    /// Cleans one value; `None` means "drop this member" (null or empty-means-unset).
    fn value(
        &mut self,
        value: Value,
        shape_name: &str,
        path: &str,
        in_collection: bool,
    ) -> Result<Option<Value>, ProtectError> {
        let shape = self.model.shape(shape_name)?;
        if value.is_null() {
            if in_collection {
                return Err(ProtectError::InvalidField {
                    path: path.to_owned(),
                    reason: "null is not allowed inside a list or map; remove the entry".into(),
                });
            }
            return Ok(None);
        }
        let wrong = |expected: &str, value: &Value| ProtectError::InvalidField {
            path: path.to_owned(),
            reason: format!("expected {expected}, found {}", describe(value)),
        };
        match shape.kind.as_str() {
            "structure" => match value {
                Value::Object(map) => Ok(Some(Value::Object(self.structure(
                    map,
                    shape,
                    path,
                    in_collection,
                )?))
                .filter(|v| !is_empty_required_struct(v, shape))),
                other => Err(wrong("an object", &other)),
            },
            "list" => {
                let Value::Array(items) = value else {
                    let expected = if shape.member.as_ref().is_some_and(|m| m.shape == "String") {
                        "a list of strings such as [\"a\", \"b\"]"
                    } else {
                        "a list"
                    };
                    return Err(wrong(expected, &value));
                };
                let member = shape.member.as_ref().ok_or_else(|| {
                    ProtectError::Model(format!("list {shape_name} has no member"))
                })?;
                if let Some(reason) =
                    shape.out_of_range(len_i64(items.len()), "the number of entries")
                {
                    return Err(ProtectError::InvalidField {
                        path: path.to_owned(),
                        reason,
                    });
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let Some(v) = self.value(item, &member.shape, &item_path, true)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            "map" => {
                let Value::Object(entries) = value else {
                    return Err(wrong("an object of names to values", &value));
                };
                let value_shape = shape
                    .value
                    .as_ref()
                    .ok_or_else(|| ProtectError::Model(format!("map {shape_name} has no value")))?;
                let mut out = Map::new();
                for (k, v) in entries {
                    let entry_path = format!("{path}[{k:?}]");
                    if let Some(v) = self.value(v, &value_shape.shape, &entry_path, true)? {
                        out.insert(k, v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            "string" => {
                let Value::String(s) = &value else {
                    return Err(wrong("a string", &value));
                };
                if let Some(reason) = shape.out_of_range(len_i64(s.chars().count()), "its length") {
                    return Err(ProtectError::InvalidField {
                        path: path.to_owned(),
                        reason,
                    });
                }
                if let Some(allowed) = &shape.enum_values {
                    if s.is_empty() {
                        if in_collection {
                            return Err(ProtectError::InvalidField {
                                path: path.to_owned(),
                                reason: format!(
                                    "an empty string is not a valid value; use one of {}",
                                    allowed.join(", ")
                                ),
                            });
                        }
                        return Ok(None);
                    }
                    if !allowed.iter().any(|a| a == s) {
                        self.warnings.push(format!(
                            "{path}: {s:?} is not one of the values this tool knows ({}); kept as is, registration may reject it",
                            allowed.join(", ")
                        ));
                    }
                }
                Ok(Some(value))
            }
            "integer" | "long" => match value.as_i64() {
                Some(n) => match shape.out_of_range(n, "the value") {
                    Some(reason) => Err(ProtectError::InvalidField {
                        path: path.to_owned(),
                        reason,
                    }),
                    None => Ok(Some(value)),
                },
                None => Err(wrong("a whole number", &value)),
            },
            "float" | "double" => {
                if value.is_number() {
                    Ok(Some(value))
                } else {
                    Err(wrong("a number", &value))
                }
            }
            "boolean" => {
                if value.is_boolean() {
                    Ok(Some(value))
                } else {
                    Err(wrong("true or false", &value))
                }
            }
            "timestamp" => {
                if value.is_number() || value.is_string() {
                    Ok(Some(value))
                } else {
                    Err(wrong("a timestamp", &value))
                }
            }
            "blob" => {
                if value.is_string() {
                    Ok(Some(value))
                } else {
                    Err(wrong("a base64 string", &value))
                }
            }
            other => Err(ProtectError::Model(format!(
                "shape {shape_name} has unsupported type {other}"
            ))),
        }
    }

    /// Cleans the members of a structure and checks its required members.
    fn structure(
        &mut self,
        map: Map<String, Value>,
        shape: &Shape,
        path: &str,
        in_collection: bool,
    ) -> Result<Map<String, Value>, ProtectError> {
        let mut out = Map::new();
        for (key, value) in map {
            let Some(member) = shape.members.get(&key) else {
                let read_only = path.is_empty() && READ_ONLY_FIELDS.contains(&key.as_str());
                if !read_only
                    && carries_data(&value)
                    && let Some(intended) = likely_meant(&key, shape.members.keys())
                {
                    return Err(ProtectError::MisspeltKey {
                        path: shown(path).to_owned(),
                        key,
                        intended: intended.to_owned(),
                    });
                }
                if !read_only && !value.is_null() {
                    self.warnings.push(format!(
                        "removed {:?} from {}: RegisterTaskDefinition does not accept it (misspelled?)",
                        key,
                        shown(path)
                    ));
                }
                continue;
            };
            let member_path = join(path, &key);
            if let Some(v) = self.value(value, &member.shape, &member_path, false)? {
                out.insert(key, v);
            }
        }
        if shape.union && out.len() > 1 {
            return Err(ProtectError::InvalidField {
                path: path.to_owned(),
                reason: format!(
                    "set only one of {}",
                    out.keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if shape.union && out.is_empty() && in_collection {
            return Err(ProtectError::InvalidField {
                path: path.to_owned(),
                reason: "set one of its members".into(),
            });
        }
        let missing: Vec<&str> = shape
            .required
            .iter()
            .filter(|r| !out.contains_key(r.as_str()))
            .map(String::as_str)
            .collect();
        // A top-level or member struct that is entirely empty means "not set" and is dropped
        // by the caller; anything partly filled must be complete.
        let dropped_as_unset = out.is_empty() && !in_collection && !path.is_empty();
        if !missing.is_empty() && !dropped_as_unset && !path.is_empty() {
            return Err(ProtectError::InvalidField {
                path: path.to_owned(),
                reason: format!("missing required {}", missing.join(", ")),
            });
        }
        Ok(out)
    }
}

/// Whether a value holds something the operator would miss if it were dropped (not `null`,
/// `""`, `[]` or `{}`).
fn carries_data(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

/// The accepted key `key` most likely misspells: equal ignoring case, `-` and `_`, or within
/// two edits (insertions, deletions, substitutions, adjacent swaps) for keys of 6+ characters.
fn likely_meant<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key_folded = fold(key);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in known {
        let distance = if fold(candidate) == key_folded {
            0
        } else if key_folded.chars().count() >= 6 {
            edit_distance(&key_folded, &fold(candidate))
        } else {
            continue;
        };
        if distance <= 2 && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate.as_str()));
        }
    }
    best.map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// True for `{}` of a structure with required members (or a union): it means "not set".
fn is_empty_required_struct(value: &Value, shape: &Shape) -> bool {
    (shape.union || !shape.required.is_empty()) && value.as_object().is_some_and(Map::is_empty)
}

/// A length as i64 for range checks (saturating; lengths here are far below i64::MAX).
fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clean(v: Value) -> (Result<Value, ProtectError>, Vec<String>) {
        let mut warnings = Vec::new();
        let Value::Object(map) = v else {
            panic!("test input must be an object")
        };
        let out = clean_task(map, &mut warnings).map(Value::Object);
        (out, warnings)
    }

    #[test]
    fn model_loads_and_knows_the_request() {
        let m = model().expect("model parses");
        assert_eq!(m.input, "RegisterTaskDefinitionRequest");
        let req = &m.shapes["RegisterTaskDefinitionRequest"];
        assert!(req.members.contains_key("containerDefinitions"));
        assert!(!req.members.contains_key("taskDefinitionArn"));
        assert_eq!(req.required, vec!["family", "containerDefinitions"]);
    }

    #[test]
    fn read_only_fields_go_silently_and_unknown_keys_with_a_warning() {
        let (out, warnings) = clean(json!({
            "family": "f", "revision": 3, "status": "ACTIVE", "taskDefinitionArn": "arn",
            "compatibilities": ["EC2"], "requiresAttributes": [{"name": "x"}],
            "registeredAt": "2024-01-01T00:00:00Z", "registeredBy": "me",
            "deregisteredAt": 1.5, "deleteRequestedAt": null,
            "containerDefinitions": [{"name": "a", "image": "i", "entrypoint": [],
                "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"], "addd": []}}}],
            "bogus": 1
        }));
        assert_eq!(
            out,
            Ok(
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i",
                "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"]}}}]})
            )
        );
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("\"entrypoint\"") && w.contains("containerDefinitions[0]"))
        );
        assert!(warnings.iter().any(|w| w.contains("\"addd\"")));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("\"bogus\"") && w.contains("the task definition"))
        );
    }

    #[test]
    fn a_misspelt_key_holding_data_is_refused_with_the_intended_key() {
        for (bad, key, intended) in [
            (
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i",
                    "Environment": [{"name": "DB_HOST", "value": "db"}]}]}),
                "Environment",
                "environment",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entrypoint": ["x"]}]}),
                "entrypoint",
                "entryPoint",
            ),
            (
                json!({"family": "f", "containerDefinitions": [], "executionRoleARN": "arn:x"}),
                "executionRoleARN",
                "executionRoleArn",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "enviroment": [{"name": "A"}]}]}),
                "enviroment",
                "environment",
            ),
        ] {
            let (out, _) = clean(bad);
            let Err(ProtectError::MisspeltKey {
                key: k,
                intended: i,
                ..
            }) = &out
            else {
                panic!("{key}: {out:?}");
            };
            assert_eq!((k.as_str(), i.as_str()), (key, intended));
            let msg = out.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("did you mean"), "{msg}");
        }
        // Far from every known key, or empty: removed with a warning as before.
        let (out, warnings) = clean(json!({"family": "f", "containerDefinitions": [],
            "vendorExtension": {"a": 1}, "Tags": []}));
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(edit_distance("enviroment", "environment"), 1);
        assert_eq!(edit_distance("comamnd", "command"), 1);
    }

    #[test]
    fn nulls_and_unset_values_are_dropped_but_empty_lists_and_strings_kept() {
        let (out, warnings) = clean(json!({
            "family": "f", "networkMode": "", "pidMode": null, "cpu": "",
            "containerDefinitions": [{"name": "a", "image": "i", "environment": [],
                "linuxParameters": null, "logConfiguration": {}, "healthCheck": {"command": null},
                "user": "", "dockerLabels": {}, "command": []}]
        }));
        assert_eq!(
            out,
            Ok(
                json!({"family": "f", "cpu": "", "containerDefinitions": [{"name": "a", "image": "i",
                "environment": [], "user": "", "dockerLabels": {}, "command": []}]})
            )
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn wrong_types_are_refused_with_their_path() {
        let cases = [
            (
                json!({"family": 1, "containerDefinitions": []}),
                "family",
                "a string",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"name": "a", "cpu": "256"}]}),
                "containerDefinitions[0].cpu",
                "a whole number",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"command": "npm start"}]}),
                "containerDefinitions[0].command",
                "list of strings",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"essential": "true"}]}),
                "containerDefinitions[0].essential",
                "true or false",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"command": ["a", null]}]}),
                "containerDefinitions[0].command[1]",
                "null is not allowed",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"memory": 512.5}]}),
                "containerDefinitions[0].memory",
                "whole number",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"logConfiguration": {"options": {"a": "b"}}}]}),
                "containerDefinitions[0].logConfiguration",
                "missing required logDriver",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"dependsOn": [{}]}]}),
                "containerDefinitions[0].dependsOn[0]",
                "missing required containerName, condition",
            ),
            (
                json!({"family": "f", "containerDefinitions": [{"dockerLabels": {"a": 1}}]}),
                "containerDefinitions[0].dockerLabels[\"a\"]",
                "a string",
            ),
        ];
        for (input, path, reason) in cases {
            let (out, _) = clean(input.clone());
            match out {
                Err(ProtectError::InvalidField { path: p, reason: r }) => {
                    assert_eq!(p, path, "{input}");
                    assert!(r.contains(reason), "{r} / {reason}");
                }
                other => panic!("{input} gave {other:?}"),
            }
        }
    }

    #[test]
    fn model_limits_are_enforced() {
        let tag = |key: &str| json!({"family": "f", "containerDefinitions": [], "tags": [{"key": key, "value": "v"}]});
        let (out, _) = clean(tag(""));
        assert!(
            matches!(out, Err(ProtectError::InvalidField { path, reason })
            if path == "tags[0].key" && reason.contains("below the minimum of 1"))
        );
        assert!(clean(tag(&"k".repeat(128))).0.is_ok());
        assert!(clean(tag(&"k".repeat(129))).0.is_err());
        let many: Vec<Value> = (0..51)
            .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
            .collect();
        let (out, _) = clean(json!({"family": "f", "containerDefinitions": [], "tags": many}));
        assert!(matches!(out, Err(ProtectError::InvalidField { path, .. }) if path == "tags"));
        let gpu = |sharing: Value| {
            json!({"family": "f", "containerDefinitions": [{"resourceRequirements":
            [{"type": "GPU", "value": "1", "sharingStrategy": sharing}]}]})
        };
        let (out, _) = clean(gpu(json!({"nvidiaMps": {"memory": 0}})));
        assert!(matches!(out, Err(ProtectError::InvalidField { path, .. })
            if path == "containerDefinitions[0].resourceRequirements[0].sharingStrategy.nvidiaMps.memory"));
        let (out, _) = clean(gpu(json!({})));
        assert_eq!(
            out.ok()
                .map(|v| v["containerDefinitions"][0]["resourceRequirements"][0].clone()),
            Some(json!({"type": "GPU", "value": "1"}))
        );
    }

    #[test]
    fn unknown_enum_values_are_kept_with_a_warning() {
        let (out, warnings) =
            clean(json!({"family": "f", "networkMode": "awsvpc2", "containerDefinitions": []}));
        assert_eq!(
            out.ok().and_then(|v| v.get("networkMode").cloned()),
            Some(json!("awsvpc2"))
        );
        assert_eq!(warnings.len(), 1);
    }
}
