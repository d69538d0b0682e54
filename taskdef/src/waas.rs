//! `--waas APP_CONTAINER:EXPOSED_PORT`: put the Defender's WAAS reverse proxy in front of one
//! container. All containers of a Fargate task share one network namespace, so the sidecar
//! listens on the exposed port and forwards to the app on localhost; the app moves to an internal
//! port. The load balancer keeps the same port but must name the sidecar as its container.

use serde_json::{Map, Value, json};

use crate::error::ProtectError;

/// Environment variable of the sidecar holding `LISTEN=UPSTREAM`.
pub const ENV_WAAS: &str = "DEFENDER_WAAS";

/// Which container WAAS protects and on which port the load balancer reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaasTarget {
    /// The application container's name.
    pub container: String,
    /// The port clients (the load balancer) connect to; the sidecar takes it over.
    pub exposed_port: u16,
}

impl std::str::FromStr for WaasTarget {
    type Err = ProtectError;

    /// Parses `APP_CONTAINER:EXPOSED_PORT` (`web:8080`).
    fn from_str(s: &str) -> Result<Self, ProtectError> {
        let bad = |reason: &str| ProtectError::InvalidOption {
            option: "WAAS",
            reason: format!("{s:?}: {reason}; expected APP_CONTAINER:EXPOSED_PORT, e.g. web:8080"),
        };
        let (c, p) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = p
            .trim()
            .parse()
            .map_err(|_| bad("the port is not 1-65535"))?;
        if c.trim().is_empty() || port == 0 {
            return Err(bad("empty container name or port 0"));
        }
        Ok(WaasTarget {
            container: c.trim().to_owned(),
            exposed_port: port,
        })
    }
}

fn ports_of(c: &Value) -> Vec<u64> {
    c.get("portMappings")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("containerPort").and_then(Value::as_u64))
                .collect()
        })
        .unwrap_or_default()
}

/// The internal port for the app: exposed + 10000 when free (else the next free one above
/// 20000), never one any container maps.
fn internal_port(exposed: u16, used: &[u64]) -> u16 {
    let first = u32::from(exposed) + 10_000;
    let candidates = (first..=65_535).chain(20_000..=65_535);
    candidates
        .filter_map(|p| u16::try_from(p).ok())
        .find(|p| !used.contains(&u64::from(*p)) && *p != exposed)
        .unwrap_or(exposed.wrapping_add(1))
}

/// Moves `target`'s exposed port mapping from the app container to the sidecar named
/// `sidecar`, points the sidecar's WAAS at the app's new internal port, rewrites the app's
/// environment variables that held the exposed port, and says what the operator must change.
pub fn apply(
    task: &mut Map<String, Value>,
    target: &WaasTarget,
    sidecar: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ProtectError> {
    let containers = task
        .get_mut("containerDefinitions")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| ProtectError::NoContainers("no containerDefinitions".into()))?;
    let used: Vec<u64> = containers.iter().flat_map(ports_of).collect();
    let exposed = target.exposed_port;
    let app_idx = containers
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(target.container.as_str()))
        .ok_or_else(|| ProtectError::InvalidOption {
            option: "WAAS",
            reason: format!(
                "no container named {:?} in the task definition",
                target.container
            ),
        })?;
    let side_idx = containers
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(sidecar))
        .ok_or_else(|| ProtectError::InvalidOption {
            option: "WAAS",
            reason: format!("the Defender sidecar {sidecar:?} is missing"),
        })?;
    // Already done (a definition protected with --waas before): the sidecar holds the port.
    let done = ports_of(&containers[side_idx]).contains(&u64::from(exposed));
    let internal = if done {
        env_value(&containers[side_idx], ENV_WAAS)
            .and_then(|v| v.rsplit(':').next().and_then(|p| p.parse().ok()))
            .unwrap_or_else(|| internal_port(exposed, &used))
    } else {
        internal_port(exposed, &used)
    };
    if !done {
        let app = containers[app_idx]
            .as_object_mut()
            .ok_or_else(|| ProtectError::NoContainers("a container is not an object".into()))?;
        let maps = app.get_mut("portMappings").and_then(Value::as_array_mut);
        let Some(maps) = maps else {
            return Err(ProtectError::InvalidOption {
                option: "WAAS",
                reason: format!(
                    "container {:?} has no portMappings; name the port its load balancer uses",
                    target.container
                ),
            });
        };
        let Some(pos) = maps.iter().position(|m| {
            m.get("containerPort").and_then(Value::as_u64) == Some(u64::from(exposed))
        }) else {
            return Err(ProtectError::InvalidOption {
                option: "WAAS",
                reason: format!(
                    "container {:?} maps no containerPort {exposed}; its ports are {:?}",
                    target.container,
                    ports_of(&Value::Object(app.clone()))
                ),
            });
        };
        let mapping = maps.remove(pos);
        if maps.is_empty() {
            app.remove("portMappings");
        }
        let mut rewritten = Vec::new();
        if let Some(env) = app.get_mut("environment").and_then(Value::as_array_mut) {
            for e in env.iter_mut() {
                if e.get("value").and_then(Value::as_str) == Some(exposed.to_string().as_str()) {
                    if let Some(name) = e.get("name").and_then(Value::as_str) {
                        rewritten.push(name.to_owned());
                    }
                    e["value"] = json!(internal.to_string());
                }
            }
        }
        let side = containers[side_idx]
            .as_object_mut()
            .ok_or_else(|| ProtectError::NoContainers("a container is not an object".into()))?;
        let side_maps = side.entry("portMappings").or_insert_with(|| json!([]));
        if let Some(a) = side_maps.as_array_mut() {
            a.push(mapping);
        }
        if rewritten.is_empty() {
            warnings.push(format!(
                "WAAS: the app container {:?} must now listen on port {internal} (127.0.0.1 is enough) instead of {exposed}: no environment variable held {exposed}, so configure its listen port yourself",
                target.container
            ));
        } else {
            warnings.push(format!(
                "WAAS: the app container {:?} now listens on port {internal}: its environment variable(s) {} changed from {exposed} to {internal}",
                target.container,
                rewritten.join(", ")
            ));
        }
    }
    let side = containers[side_idx]
        .as_object_mut()
        .ok_or_else(|| ProtectError::NoContainers("a container is not an object".into()))?;
    let env = side.entry("environment").or_insert_with(|| json!([]));
    if let Some(env) = env.as_array_mut() {
        env.retain(|e| e.get("name").and_then(Value::as_str) != Some(ENV_WAAS));
        env.push(
            json!({"name": ENV_WAAS, "value": format!("0.0.0.0:{exposed}=127.0.0.1:{internal}")}),
        );
        env.sort_by(|a, b| {
            let n = |v: &Value| {
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            n(a).cmp(&n(b))
        });
    }
    // The sidecar now serves the task's traffic: it must be essential.
    side.insert("essential".into(), json!(true));
    warnings.push(format!(
        "WAAS: port {exposed} now belongs to the Defender sidecar {sidecar:?}; in the ECS service's loadBalancers (and any target group registration by container), change containerName from {:?} to {sidecar:?} and keep containerPort {exposed}; the target group's port and health check need no change",
        target.container
    ));
    Ok(())
}

fn env_value(c: &Value, name: &str) -> Option<String> {
    c.get("environment")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Map<String, Value> {
        json!({
            "family": "shop",
            "containerDefinitions": [
                {"name": "web", "image": "shop:1",
                 "portMappings": [{"containerPort": 8080, "protocol": "tcp"}, {"containerPort": 9090}],
                 "environment": [{"name": "PORT", "value": "8080"}, {"name": "MODE", "value": "prod"}]},
                {"name": "defender", "image": "defender:1", "environment": []}
            ]
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn moves_the_port_to_the_sidecar_and_the_app_inside() {
        let mut t = task();
        let mut w = Vec::new();
        let target: WaasTarget = "web:8080".parse().unwrap();
        apply(&mut t, &target, "defender", &mut w).unwrap();
        let c = t["containerDefinitions"].as_array().unwrap();
        assert_eq!(c[0]["portMappings"], json!([{"containerPort": 9090}]));
        assert_eq!(
            c[0]["environment"][0],
            json!({"name": "PORT", "value": "18080"})
        );
        assert_eq!(
            c[1]["portMappings"],
            json!([{"containerPort": 8080, "protocol": "tcp"}])
        );
        assert_eq!(
            env_value(&c[1], ENV_WAAS).as_deref(),
            Some("0.0.0.0:8080=127.0.0.1:18080")
        );
        assert_eq!(c[1]["essential"], json!(true));
        assert!(
            w.iter()
                .any(|x| x.contains("containerName from \"web\" to \"defender\"")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|x| x.contains("PORT changed from 8080 to 18080")),
            "{w:?}"
        );
        // Applying again changes nothing.
        let before = t.clone();
        apply(&mut t, &target, "defender", &mut Vec::new()).unwrap();
        assert_eq!(t, before);
    }

    #[test]
    fn refuses_unknown_container_or_port() {
        let mut t = task();
        let e = apply(
            &mut t,
            &"api:8080".parse().unwrap(),
            "defender",
            &mut Vec::new(),
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("no container named \"api\"")
        );
        let e = apply(
            &mut t,
            &"web:7000".parse().unwrap(),
            "defender",
            &mut Vec::new(),
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("maps no containerPort 7000")
        );
        assert!("web".parse::<WaasTarget>().is_err());
        assert!("web:0".parse::<WaasTarget>().is_err());
    }
}
