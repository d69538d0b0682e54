//! Removes an earlier protection, ours or the commercial product's, before protecting again.
//!
//! Protecting is always "unwrap, then wrap", which makes it idempotent and turns a definition
//! protected by an older version (another image tag, mode or sidecar name) or by Prisma Cloud
//! (Twistlock) into one protected by this version.
//!
//! Ours is recognised by the sidecar's entryPoint `[DEFENDER_BIN, "fargate", "sidecar"]`
//! (whatever its name or image) and by the entryPoint prefix
//! `[DEFENDER_BIN, "fargate", "entrypoint", "--"]`.
//!
//! The commercial layout, as seen in public protected task definitions: a sidecar named
//! `TwistlockDefender`; every application container's entryPoint starts with
//! `/var/lib/twistlock/fargate/fargate_defender.sh` (older) or `/var/lib/twistlock/fargate/defender`
//! (newer), then `fargate`, `entrypoint`, then the original entryPoint; it gets
//! `volumesFrom`/`dependsOn` (START) on `TwistlockDefender`, `SYS_PTRACE`, and the environment
//! variables `DEFENDER_TYPE`, `FARGATE_TASK`, `TW_CONTAINER_NAME`, `TW_IMAGE_NAME`. We strip any
//! `/var/lib/twistlock/...` executable followed by `fargate`, `entrypoint`, and a `--` only if it
//! comes right after (never a later one: in `[..., "entrypoint", "dumb-init", "--"]` the `--`
//! belongs to dumb-init). On containers of such a definition we remove every `TW_*` variable,
//! `DEFENDER_TYPE` and `FARGATE_TASK`; other `DEFENDER_*` names are kept, as they may be the
//! application's own.
//!
//! `SYS_PTRACE` and `pidMode` are left in place: nothing in the definition tells whether the
//! operator had set them, and keeping them is harmless. A list emptied by the removal
//! (`environment`, `volumesFrom`, `dependsOn`) is deleted, so after a mode switch an operator's
//! explicitly empty list may be absent instead, which means the same to ECS. An entryPoint that
//! came from an `--entrypoint` override stays explicit when switching to sidecar mode (the
//! definition does not record that it was an override).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::layout::{
    ENTRYPOINT_WRAPPER, ENV_CONTAINER_IMAGE, ENV_CONTAINER_NAME, SIDECAR_ENTRYPOINT, TWISTLOCK_DIR,
    TWISTLOCK_SIDECAR, container_name, json_list, retain_in_list, string_list,
};

/// What unwrapping found and removed.
#[derive(Debug, Default)]
pub(crate) struct Unwrapped {
    /// Containers whose wrapped entryPoint had nothing after the wrapper: they run `command`
    /// alone, i.e. their image ENTRYPOINT was stated to be empty.
    pub known_empty_entrypoint: BTreeSet<String>,
    /// Sidecars of an earlier protection of ours, as (name, image).
    pub our_sidecars: Vec<(String, String)>,
    /// Those sidecars' definitions as found, so that re-protecting keeps what the operator
    /// added to them by hand (secrets, logConfiguration, memoryReservation, ...).
    pub our_sidecar_definitions: Vec<Map<String, Value>>,
    /// Whether a commercial (Twistlock) protection was removed.
    pub twistlock: bool,
}

/// Is this container one of our sidecars?
fn is_our_sidecar(container: &Map<String, Value>) -> bool {
    string_list(container.get("entryPoint")).is_some_and(|ep| ep == SIDECAR_ENTRYPOINT)
}

/// Does `ep` start with the commercial entrypoint wrapper? Returns its length.
fn twistlock_prefix_len(ep: &[String]) -> Option<usize> {
    let [bin, fargate, entrypoint, rest @ ..] = ep else {
        return None;
    };
    if !(bin.starts_with(TWISTLOCK_DIR) && fargate == "fargate" && entrypoint == "entrypoint") {
        return None;
    }
    Some(if rest.first().is_some_and(|s| s == "--") {
        4
    } else {
        3
    })
}

/// Strips every known wrapper prefix from an entryPoint; reports which kinds were found.
fn strip_wrappers(mut ep: Vec<String>) -> (Vec<String>, bool, bool) {
    let (mut ours, mut twistlock) = (false, false);
    loop {
        if ep.len() >= ENTRYPOINT_WRAPPER.len()
            && ep.iter().zip(ENTRYPOINT_WRAPPER).all(|(a, b)| a == b)
        {
            ep.drain(..ENTRYPOINT_WRAPPER.len());
            ours = true;
        } else if let Some(n) = twistlock_prefix_len(&ep) {
            ep.drain(..n);
            twistlock = true;
        } else {
            return (ep, ours, twistlock);
        }
    }
}

/// Is this environment variable one the commercial protection adds?
fn is_twistlock_env(name: &str) -> bool {
    name.starts_with("TW_") || name == "DEFENDER_TYPE" || name == "FARGATE_TASK"
}

/// Removes earlier protections from `task` in place.
pub(crate) fn unwrap(task: &mut Map<String, Value>) -> Unwrapped {
    let mut found = Unwrapped::default();
    let Some(Value::Array(containers)) = task.get_mut("containerDefinitions") else {
        return found;
    };
    let mut removed = BTreeSet::new();
    containers.retain(|c| {
        let Some(c) = c.as_object() else { return true };
        let name = container_name(c).unwrap_or_default().to_owned();
        if is_our_sidecar(c) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            found.our_sidecars.push((name.clone(), image.to_owned()));
            found.our_sidecar_definitions.push(c.clone());
        } else if name == TWISTLOCK_SIDECAR {
            found.twistlock = true;
        } else {
            return true;
        }
        removed.insert(name);
        false
    });
    let twistlock_sidecar = found.twistlock;

    for container in containers.iter_mut().filter_map(Value::as_object_mut) {
        let (mut had_ours, mut had_twistlock) = (false, false);
        if let Some(ep) = string_list(container.get("entryPoint")) {
            let (rest, ours, twistlock) = strip_wrappers(ep);
            (had_ours, had_twistlock) = (ours, twistlock);
            if ours || twistlock {
                if rest.is_empty() {
                    container.remove("entryPoint");
                    if let Some(name) = container_name(container) {
                        found.known_empty_entrypoint.insert(name.to_owned());
                    }
                } else {
                    container.insert("entryPoint".into(), json_list(&rest));
                }
            }
        }
        found.twistlock |= had_twistlock;

        let refers_to_removed = |item: &Value, key: &str| {
            item.get(key)
                .and_then(Value::as_str)
                .is_some_and(|n| removed.contains(n))
        };
        retain_in_list(container, "volumesFrom", |v| {
            refers_to_removed(v, "sourceContainer")
        });
        retain_in_list(container, "dependsOn", |d| {
            refers_to_removed(d, "containerName")
        });
        retain_in_list(container, "environment", |e| {
            let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
            (had_ours && (name == ENV_CONTAINER_NAME || name == ENV_CONTAINER_IMAGE))
                || ((had_twistlock || twistlock_sidecar) && is_twistlock_env(name))
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn strips_only_the_wrappers() {
        let cases: [(&[&str], &[&str], bool, bool); 7] = [
            (
                &[crate::DEFENDER_BIN, "fargate", "entrypoint", "--", "/app"],
                &["/app"],
                true,
                false,
            ),
            (
                &[crate::DEFENDER_BIN, "fargate", "entrypoint", "--"],
                &[],
                true,
                false,
            ),
            (
                &[
                    "/var/lib/twistlock/fargate/fargate_defender.sh",
                    "fargate",
                    "entrypoint",
                    "dumb-init",
                    "--",
                ],
                &["dumb-init", "--"],
                false,
                true,
            ),
            (
                &[
                    "/var/lib/twistlock/fargate/defender",
                    "fargate",
                    "entrypoint",
                    "--",
                    "x",
                ],
                &["x"],
                false,
                true,
            ),
            (
                &[
                    crate::DEFENDER_BIN,
                    "fargate",
                    "entrypoint",
                    "--",
                    "/var/lib/twistlock/fargate/defender",
                    "fargate",
                    "entrypoint",
                    "sh",
                ],
                &["sh"],
                true,
                true,
            ),
            // Near misses are the application's own argv and stay.
            (
                &[crate::DEFENDER_BIN, "fargate", "entrypoint", "x"],
                &[crate::DEFENDER_BIN, "fargate", "entrypoint", "x"],
                false,
                false,
            ),
            (
                &["/opt/twistlock/defender", "fargate", "entrypoint"],
                &["/opt/twistlock/defender", "fargate", "entrypoint"],
                false,
                false,
            ),
        ];
        for (input, rest, ours, tw) in cases {
            assert_eq!(
                strip_wrappers(strs(input)),
                (strs(rest), ours, tw),
                "{input:?}"
            );
        }
    }

    #[test]
    fn removes_sidecars_and_their_traces() {
        let mut task = json!({
            "family": "f",
            "containerDefinitions": [
                {"name": "app", "image": "app:1",
                 "entryPoint": [crate::DEFENDER_BIN, "fargate", "entrypoint", "--", "/run"],
                 "environment": [{"name": "A", "value": "1"}, {"name": "DEFENDER_CONTAINER_NAME", "value": "app"},
                                 {"name": "DEFENDER_CONTAINER_IMAGE", "value": "app:1"}],
                 "volumesFrom": [{"sourceContainer": "dfd", "readOnly": true}],
                 "dependsOn": [{"containerName": "db", "condition": "START"}, {"containerName": "dfd", "condition": "START"}]},
                {"name": "db", "image": "db:1", "entryPoint": ["/db"], "environment": [{"name": "FARGATE_TASK", "value": "mine"}]},
                {"name": "dfd", "image": "old:0.1", "entryPoint": [crate::DEFENDER_BIN, "fargate", "sidecar"]}
            ]
        });
        let Value::Object(map) = &mut task else {
            unreachable!()
        };
        let found = unwrap(map);
        assert_eq!(
            found.our_sidecars,
            vec![("dfd".to_owned(), "old:0.1".to_owned())]
        );
        assert!(!found.twistlock);
        assert_eq!(
            task,
            json!({
                "family": "f",
                "containerDefinitions": [
                    {"name": "app", "image": "app:1", "entryPoint": ["/run"],
                     "environment": [{"name": "A", "value": "1"}],
                     "dependsOn": [{"containerName": "db", "condition": "START"}]},
                    {"name": "db", "image": "db:1", "entryPoint": ["/db"], "environment": [{"name": "FARGATE_TASK", "value": "mine"}]}
                ]
            })
        );
    }
}
