//! Re-protecting keeps what the operator added to the Defender sidecar by hand.
//!
//! The README asks operators to add `INSTALL_BUNDLE` to the sidecar themselves; others add a
//! `logConfiguration`, a `memoryReservation`, `secrets`, variables. Protecting such a
//! definition again must not wipe those: the tool rewrites only what it owns — `name`,
//! `image`, `entryPoint`, the variables it sets (`FARGATE_TASK`, `DEFENDER_MODE`,
//! `DEFENDER_CONSOLE_ADDR` when given, `INSTALL_BUNDLE` when a bundle option is given) and, in
//! sidecar mode, `SYS_PTRACE` — and keeps every other key of the earlier sidecar as it was.
//! Keys the earlier sidecar lacks are taken from the freshly built one.

use serde_json::{Map, Value};

use crate::layout::ENV_INSTALL_BUNDLE;
use crate::options::{BundleSource, ProtectOptions};

/// Keys of the sidecar definition the tool always sets.
const OWNED_KEYS: [&str; 3] = ["name", "image", "entryPoint"];

/// The earlier sidecar to carry edits from: the one with the chosen name, else the first.
pub(crate) fn pick<'a>(
    previous: &'a [Map<String, Value>],
    opts: &ProtectOptions,
) -> Option<&'a Map<String, Value>> {
    previous
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(opts.sidecar_name.as_str()))
        .or_else(|| previous.first())
}

/// The name of an `environment` / `secrets` entry.
fn entry_name(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
}

/// Merges the freshly built sidecar into the earlier one; returns the merged definition and
/// the keys kept from the earlier one that the tool would not have set (for the report).
pub(crate) fn merge(
    previous: &Map<String, Value>,
    fresh: Map<String, Value>,
    opts: &ProtectOptions,
) -> (Map<String, Value>, Vec<String>) {
    let mut out = previous.clone();
    let kept: Vec<String> = previous
        .keys()
        .filter(|k| !fresh.contains_key(k.as_str()))
        .cloned()
        .collect();
    let fresh_env: Vec<Value> = fresh
        .get("environment")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let fresh_secrets: Vec<Value> = fresh
        .get("secrets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (key, value) in fresh {
        if OWNED_KEYS.contains(&key.as_str()) || !out.contains_key(&key) {
            out.insert(key, value);
        }
    }

    // Variables: ours first (in the order a fresh protection writes them), then the
    // operator's, in their order.
    let ours: Vec<Option<&str>> = fresh_env.iter().map(entry_name).collect();
    let mut env = fresh_env.clone();
    env.extend(
        previous
            .get("environment")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| !ours.contains(&entry_name(e)))
            .cloned(),
    );
    let mut secrets: Vec<Value> = previous
        .get("secrets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match &opts.bundle {
        BundleSource::Secret { .. } => {
            env.retain(|e| entry_name(e) != Some(ENV_INSTALL_BUNDLE));
            secrets.retain(|s| entry_name(s) != Some(ENV_INSTALL_BUNDLE));
            secrets.extend(fresh_secrets);
        }
        BundleSource::Env(_) => {
            secrets.retain(|s| entry_name(s) != Some(ENV_INSTALL_BUNDLE));
        }
        BundleSource::None => {}
    }
    out.insert("environment".into(), Value::Array(env));
    if secrets.is_empty() {
        out.remove("secrets");
    } else {
        out.insert("secrets".into(), Value::Array(secrets));
    }
    (out, kept)
}

/// Whether the sidecar carries an install bundle in any form ECS can give it: a plain
/// `INSTALL_BUNDLE` variable, an `INSTALL_BUNDLE` secret, or an `environmentFiles` file (which
/// may hold it; its content is not visible here).
pub(crate) fn has_install_bundle(sidecar: &Map<String, Value>) -> bool {
    let named = |key: &str| {
        sidecar
            .get(key)
            .and_then(Value::as_array)
            .is_some_and(|list| {
                list.iter()
                    .any(|e| entry_name(e) == Some(ENV_INSTALL_BUNDLE))
            })
    };
    let files = sidecar
        .get("environmentFiles")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    named("environment") || named("secrets") || files
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn owned_keys_are_rewritten_and_the_rest_kept() {
        let previous = obj(json!({
            "name": "defender", "image": "old:1", "entryPoint": ["x"], "essential": true,
            "memoryReservation": 64,
            "environment": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "DEFENDER_MODE", "value": "sidecar"}],
            "secrets": [{"name": "INSTALL_BUNDLE", "valueFrom": "/b"}]
        }));
        let fresh = obj(json!({
            "name": "defender", "image": "new:2", "entryPoint": ["y"], "essential": false,
            "environment": [{"name": "FARGATE_TASK", "value": "f"}, {"name": "DEFENDER_MODE", "value": "embedded"}]
        }));
        let (out, kept) = merge(&previous, fresh, &ProtectOptions::default());
        assert_eq!(
            Value::Object(out.clone()),
            json!({
                "name": "defender", "image": "new:2", "entryPoint": ["y"], "essential": true,
                "memoryReservation": 64,
                "environment": [{"name": "FARGATE_TASK", "value": "f"}, {"name": "DEFENDER_MODE", "value": "embedded"},
                                {"name": "LOG_LEVEL", "value": "debug"}],
                "secrets": [{"name": "INSTALL_BUNDLE", "valueFrom": "/b"}]
            })
        );
        assert_eq!(kept, ["memoryReservation", "secrets"]);
        assert!(has_install_bundle(&out));
    }

    #[test]
    fn a_new_bundle_option_replaces_the_old_bundle_whatever_its_form() {
        let previous = obj(
            json!({"name": "d", "secrets": [{"name": "INSTALL_BUNDLE", "valueFrom": "/b"}, {"name": "X", "valueFrom": "/x"}]}),
        );
        let fresh =
            obj(json!({"name": "d", "environment": [{"name": "INSTALL_BUNDLE", "value": "b64"}]}));
        let opts = ProtectOptions {
            bundle: BundleSource::Env("b64".into()),
            ..ProtectOptions::default()
        };
        let (out, _) = merge(&previous, fresh, &opts);
        assert_eq!(out["secrets"], json!([{"name": "X", "valueFrom": "/x"}]));
        assert_eq!(
            out["environment"],
            json!([{"name": "INSTALL_BUNDLE", "value": "b64"}])
        );
        assert!(!has_install_bundle(&obj(json!({"environment": []}))));
        assert!(has_install_bundle(&obj(
            json!({"environmentFiles": [{"value": "arn:aws:s3:::b/d.env", "type": "s3"}]})
        )));
    }
}
