//! The marks a protected task definition carries, shared by protecting and unwrapping.

use serde_json::{Map, Value};

/// Directory the sidecar shares with application containers (`volumesFrom`); holds the Defender.
pub const DEFENDER_DIR: &str = "/var/lib/defender";

/// The Defender executable inside [`DEFENDER_DIR`], used by the sidecar and by wrapped entrypoints.
pub const DEFENDER_BIN: &str = "/var/lib/defender/defender";

/// Prefix put before an application container's own entryPoint in embedded mode.
pub(crate) const ENTRYPOINT_WRAPPER: [&str; 4] = [DEFENDER_BIN, "fargate", "entrypoint", "--"];

/// The sidecar's entryPoint; also how an earlier protection's sidecar is recognised.
pub(crate) const SIDECAR_ENTRYPOINT: [&str; 3] = [DEFENDER_BIN, "fargate", "sidecar"];

/// The sidecar's Docker health check command.
pub(crate) const SIDECAR_HEALTHCHECK: [&str; 4] = ["CMD", DEFENDER_BIN, "fargate", "healthcheck"];

/// Environment variable naming the application container (set on wrapped containers).
pub(crate) const ENV_CONTAINER_NAME: &str = "DEFENDER_CONTAINER_NAME";

/// Environment variable naming the application container's image (set on wrapped containers).
pub(crate) const ENV_CONTAINER_IMAGE: &str = "DEFENDER_CONTAINER_IMAGE";

/// Sidecar environment variable carrying the task family.
pub(crate) const ENV_FARGATE_TASK: &str = "FARGATE_TASK";

/// Sidecar environment variable carrying the mode (embedded | sidecar).
pub(crate) const ENV_MODE: &str = "DEFENDER_MODE";

/// Sidecar environment variable carrying the Console address, when given.
pub(crate) const ENV_CONSOLE_ADDR: &str = "DEFENDER_CONSOLE_ADDR";

/// Sidecar environment variable or secret carrying the install bundle.
pub(crate) const ENV_INSTALL_BUNDLE: &str = "INSTALL_BUNDLE";

/// The only capability the Defender needs added; Fargate allows adding only this one.
pub(crate) const SYS_PTRACE: &str = "SYS_PTRACE";

/// Name of the sidecar container of the commercial (Prisma Cloud / Twistlock) protection.
pub(crate) const TWISTLOCK_SIDECAR: &str = "TwistlockDefender";

/// Directory under which the commercial protection's entrypoint wrapper lives.
pub(crate) const TWISTLOCK_DIR: &str = "/var/lib/twistlock/";

/// Reads a list of strings (entryPoint, command); `None` when absent or not all strings.
pub(crate) fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Converts argv-like strings into a JSON list.
pub(crate) fn json_list<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String(s.as_ref().to_owned()))
            .collect(),
    )
}

/// The container's `name`, if it is a string.
pub(crate) fn container_name(container: &Map<String, Value>) -> Option<&str> {
    container.get("name").and_then(Value::as_str)
}

/// Removes the entries of the list at `key` for which `drop` holds; deletes the key if the
/// list became empty by that. Returns how many entries were removed.
pub(crate) fn retain_in_list(
    container: &mut Map<String, Value>,
    key: &str,
    mut drop: impl FnMut(&Value) -> bool,
) -> usize {
    let Some(Value::Array(items)) = container.get_mut(key) else {
        return 0;
    };
    let before = items.len();
    items.retain(|item| !drop(item));
    let removed = before - items.len();
    if removed > 0 && items.is_empty() {
        container.remove(key);
    }
    removed
}

/// Sorts every object's keys so the output is the same bytes whatever map order serde_json uses.
pub(crate) fn sort_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, mut v) in entries {
                sort_keys(&mut v);
                map.insert(key, v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrapper_and_sidecar_start_with_the_shared_binary() {
        assert_eq!(DEFENDER_BIN, format!("{DEFENDER_DIR}/defender"));
        assert_eq!(ENTRYPOINT_WRAPPER[0], DEFENDER_BIN);
        assert_eq!(SIDECAR_ENTRYPOINT[0], DEFENDER_BIN);
    }

    #[test]
    fn string_list_needs_all_strings() {
        assert_eq!(
            string_list(Some(&json!(["a", "b"]))),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(string_list(Some(&json!(["a", 1]))), None);
        assert_eq!(string_list(None), None);
    }

    #[test]
    fn retain_removes_a_list_only_when_emptied_by_it() {
        let mut c = json!({"a": [1, 2], "b": []});
        let Value::Object(map) = &mut c else {
            unreachable!()
        };
        assert_eq!(retain_in_list(map, "a", |v| v == &json!(1)), 1);
        assert_eq!(retain_in_list(map, "b", |_| true), 0);
        assert_eq!(retain_in_list(map, "a", |_| true), 1);
        assert_eq!(c, json!({"b": []}));
    }
}
