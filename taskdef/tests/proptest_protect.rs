//! Property tests: for generated task definitions, protecting is idempotent, keeps every
//! application's argv exactly, and always yields a valid RegisterTaskDefinition input.

mod common;

use std::collections::BTreeMap;

use common::*;
use defender_taskdef::{BundleSource, Mode, ProtectOptions, protect};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Map, Value, json};

/// One argv element: unicode, quotes, shell syntax, separators, empty.
fn argv_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,12}",
        2 => "[ -~]{0,12}",
        1 => select(vec![
            "\"double\" and 'single' quotes",
            "back\\slash",
            "--",
            "fargate",
            "entrypoint",
            "",
            "line\nbreak\ttab",
            "emoji 🚀 日本語 Ünïcödé",
            "$HOME ${X:-y} `cmd`",
            "sh",
            "-c",
        ])
        .prop_map(str::to_owned),
    ]
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    vec(argv_string(), 0..5)
}

/// Optional other container keys, all accepted by RegisterTaskDefinition.
fn container_extras() -> impl Strategy<Value = Map<String, Value>> {
    let caps = [
        "SYS_PTRACE",
        "NET_RAW",
        "NET_ADMIN",
        "ALL",
        "MKNOD",
        "CHOWN",
    ];
    (
        (
            proptest::option::of(0..4096i64),
            proptest::option::of(6..4096i64),
            proptest::option::of(any::<bool>()),
            proptest::option::of("\\PC{0,16}"),
            proptest::option::of("[0-9]{1,5}(:[0-9]{1,5})?"),
            proptest::option::of(btree_map("[a-z][a-z.]{0,8}", "\\PC{0,8}", 0..3)),
        ),
        (
            proptest::option::of(vec((1..65535i64, select(vec!["tcp", "udp"])), 0..3)),
            proptest::option::of((
                proptest::option::of(any::<bool>()),
                proptest::option::of(subsequence(caps.to_vec(), 0..3)),
                proptest::option::of(subsequence(caps.to_vec(), 0..3)),
            )),
            proptest::option::of(vec(("[A-Z][A-Z0-9_]{0,8}", "arn:aws:ssm:eu-west-1:123456789012:parameter/[a-z]{1,8}"), 0..3)),
            proptest::option::of(("\\PC{0,20}", 5..300i64)),
            proptest::option::of(2..120i64),
            proptest::option::of(vec(("[a-z][a-z0-9-]{0,6}", "\\PC{0,10}"), 0..2)),
        ),
    )
        .prop_map(
            |((cpu, reservation, essential, workdir, user, labels), (ports, linux, secrets, health, stop, hosts))| {
                let mut m = Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        m.insert(k.to_owned(), v);
                    }
                };
                put("cpu", cpu.map(|v| json!(v)));
                put("memoryReservation", reservation.map(|v| json!(v)));
                put("essential", essential.map(|v| json!(v)));
                put("workingDirectory", workdir.map(|v| json!(v)));
                put("user", user.map(|v| json!(v)));
                put("dockerLabels", labels.map(|v| json!(v)));
                put(
                    "portMappings",
                    ports.map(|p| {
                        json!(p.into_iter().map(|(port, proto)| json!({"containerPort": port, "protocol": proto})).collect::<Vec<_>>())
                    }),
                );
                put(
                    "linuxParameters",
                    linux.map(|(init, add, drop)| {
                        let mut l = Map::new();
                        if let Some(init) = init {
                            l.insert("initProcessEnabled".into(), json!(init));
                        }
                        if add.is_some() || drop.is_some() {
                            let mut c = Map::new();
                            if let Some(add) = add {
                                c.insert("add".into(), json!(add));
                            }
                            if let Some(drop) = drop {
                                c.insert("drop".into(), json!(drop));
                            }
                            l.insert("capabilities".into(), Value::Object(c));
                        }
                        Value::Object(l)
                    }),
                );
                put(
                    "secrets",
                    secrets.map(|s| {
                        json!(s.into_iter().map(|(n, v)| json!({"name": n, "valueFrom": v})).collect::<Vec<_>>())
                    }),
                );
                put(
                    "healthCheck",
                    health.map(|(cmd, interval)| json!({"command": ["CMD-SHELL", cmd], "interval": interval})),
                );
                put("stopTimeout", stop.map(|v| json!(v)));
                put(
                    "extraHosts",
                    hosts.map(|h| {
                        json!(h.into_iter().map(|(n, ip)| json!({"hostname": n, "ipAddress": ip})).collect::<Vec<_>>())
                    }),
                );
                m
            },
        )
}

/// A generated application container (its name is assigned later to keep names unique).
#[derive(Debug, Clone)]
struct GenContainer {
    stem: String,
    image: String,
    entry_point: Option<Vec<String>>,
    command: Option<Vec<String>>,
    env: Option<Vec<(String, String)>>,
    extras: Map<String, Value>,
    /// Entrypoint override the operator gives (used when embedded needs one, or at random).
    override_ep: Option<Vec<String>>,
}

fn gen_container() -> impl Strategy<Value = GenContainer> {
    (
        "[a-z][a-z0-9_]{0,10}",
        "[a-z0-9]{1,12}(/[a-z0-9._-]{1,12})?(:[a-z0-9._-]{1,10})?",
        proptest::option::of(argv()),
        proptest::option::of(argv()),
        proptest::option::of(vec(("[A-Z_][A-Z0-9_]{0,8}", "\\PC{0,12}"), 0..4)),
        container_extras(),
        proptest::option::weighted(0.3, argv()),
    )
        .prop_map(
            |(stem, image, entry_point, command, env, extras, override_ep)| GenContainer {
                stem,
                image,
                entry_point,
                command,
                env,
                extras,
                override_ep,
            },
        )
}

/// A generated task definition, its input form, and the options to protect it with.
#[derive(Debug, Clone)]
struct Case {
    input: Value,
    original: Value,
    opts: ProtectOptions,
}

fn gen_case() -> impl Strategy<Value = Case> {
    (
        vec(gen_container(), 1..5),
        "[A-Za-z0-9_-]{1,20}",
        proptest::option::of(subsequence(vec!["EC2", "FARGATE"], 0..=2)),
        proptest::option::of(select(vec!["awsvpc", "bridge", "host", "none"])),
        proptest::option::of(select(vec!["task", "host"])),
        proptest::option::of(vec(("[a-z][a-z0-9-]{0,8}", "[a-z0-9 ]{0,8}"), 0..3)),
        0..3usize,
        any::<bool>(),
        any::<bool>(),
        (
            select(vec!["defender", "dfd", "sec_car"]),
            0..3usize,
            proptest::option::of("[a-z.:0-9]{1,20}"),
            select(vec![
                "fargate-defender/defender:1.0.0",
                "registry.example.com/d:latest",
            ]),
        ),
    )
        .prop_map(
            |(
                gens,
                family,
                compat,
                network,
                pid,
                tags,
                form,
                read_only,
                sidecar_mode,
                (sidecar_name, bundle, console, image),
            )| {
                let mode = if sidecar_mode {
                    Mode::Sidecar
                } else {
                    Mode::Embedded
                };
                let mut overrides = BTreeMap::new();
                let mut cs = Vec::new();
                for (i, g) in gens.into_iter().enumerate() {
                    let name = format!("{}-{i}", g.stem);
                    let mut c = g.extras;
                    c.insert("name".into(), json!(name));
                    c.insert("image".into(), json!(g.image));
                    if let Some(ep) = &g.entry_point {
                        c.insert("entryPoint".into(), json!(ep));
                    }
                    if let Some(cmd) = &g.command {
                        c.insert("command".into(), json!(cmd));
                    }
                    if let Some(env) = g.env {
                        c.insert(
                            "environment".into(),
                            json!(
                                env.into_iter()
                                    .map(|(n, v)| json!({"name": n, "value": v}))
                                    .collect::<Vec<_>>()
                            ),
                        );
                    }
                    let has_ep = g.entry_point.as_ref().is_some_and(|e| !e.is_empty());
                    let has_cmd = g.command.as_ref().is_some_and(|e| !e.is_empty());
                    let needs_override = mode == Mode::Embedded && !has_ep;
                    let mut ov = g.override_ep.or_else(|| needs_override.then(Vec::new));
                    if let Some(o) = &mut ov
                        && o.is_empty()
                        && !has_cmd
                    {
                        // An empty override with no command leaves nothing to run.
                        o.push("/bin/app".into());
                    }
                    if ov.is_some() && !has_ep && !has_cmd {
                        // An override without a command would drop the image's CMD, which
                        // protect refuses (tested in protect_cases); state the CMD here.
                        c.insert("command".into(), json!(["run"]));
                    }
                    if let Some(o) = ov {
                        overrides.insert(name, o);
                    }
                    cs.push(Value::Object(c));
                }
                let mut task = Map::new();
                task.insert("family".into(), json!(family));
                task.insert("containerDefinitions".into(), Value::Array(cs));
                if let Some(c) = compat {
                    task.insert("requiresCompatibilities".into(), json!(c));
                }
                if let Some(n) = network {
                    task.insert("networkMode".into(), json!(n));
                }
                if let Some(p) = pid {
                    task.insert("pidMode".into(), json!(p));
                }
                let tags = tags.map(|t| {
                    json!(
                        t.into_iter()
                            .map(|(k, v)| json!({"key": k, "value": v}))
                            .collect::<Vec<_>>()
                    )
                });
                let mut original = task.clone();
                if let Some(t) = &tags {
                    original.insert("tags".into(), t.clone());
                }
                let mut bare = task.clone();
                if read_only {
                    bare.insert("revision".into(), json!(4));
                    bare.insert("status".into(), json!("ACTIVE"));
                    bare.insert(
                        "taskDefinitionArn".into(),
                        json!("arn:aws:ecs:eu-west-1:123456789012:task-definition/x:4"),
                    );
                    bare.insert("compatibilities".into(), json!(["EC2", "FARGATE"]));
                    bare.insert("registeredAt".into(), json!("2025-01-01T00:00:00Z"));
                }
                let input = match (form, &tags) {
                    (0, Some(t)) => json!({"taskDefinition": bare, "tags": t}),
                    (1, _) | (_, None) => {
                        if let Some(t) = &tags {
                            bare.insert("tags".into(), t.clone());
                        } else {
                            original.remove("tags");
                        }
                        Value::Object(bare)
                    }
                    (_, Some(t)) => {
                        let mut reg = task.clone();
                        reg.insert("tags".into(), t.clone());
                        Value::Object(reg)
                    }
                };
                let bundle = match bundle {
                    0 => BundleSource::None,
                    1 => BundleSource::Env("bundle-∂-\"x\"".into()),
                    _ => BundleSource::Secret {
                        value_from: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b-AbCdEf"
                            .into(),
                    },
                };
                Case {
                    input,
                    original: Value::Object(original),
                    opts: ProtectOptions {
                        console_addr: console,
                        defender_image: image.into(),
                        bundle,
                        mode,
                        sidecar_name: sidecar_name.into(),
                        entrypoints: overrides,
                        ..ProtectOptions::default()
                    },
                }
            },
        )
}

/// Whether any entryPoint/command word, workingDirectory or mount containerPath of `task`, or
/// any word of an entry point stated in `opts`, starts like a Windows path (`a:\`, `b:/`).
fn names_windows_path(task: &serde_json::Value, opts: &ProtectOptions) -> bool {
    let words = |c: &serde_json::Value, key: &str| -> Vec<String> {
        c.get(key)
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(serde_json::Value::as_str)
                    .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .collect()
            })
            .unwrap_or_default()
    };
    task.get("containerDefinitions")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let mut w = [words(c, "entryPoint"), words(c, "command")].concat();
            w.extend(
                c.get("workingDirectory")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
            );
            w.extend(
                c.get("mountPoints")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.get("containerPath").and_then(serde_json::Value::as_str))
                    .map(str::to_owned),
            );
            w
        })
        .chain(
            opts.entrypoints
                .values()
                .flatten()
                .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>()),
        )
        .any(|w| {
            let w = w.trim_matches(['"', '\'', ';']);
            let b = w.as_bytes();
            b.len() >= 3
                && b[0].is_ascii_alphabetic()
                && b[1] == b':'
                && (b[2] == b'\\' || b[2] == b'/')
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn protect_is_idempotent_and_keeps_argv(case in gen_case()) {
        // A definition whose argv names a Windows path (`C:\…`) is refused as a Windows task
        // on purpose (ecs_rules::refuse_windows); that refusal has tests of its own.
        prop_assume!(!names_windows_path(&case.original, &case.opts));
        let text = serde_json::to_string(&case.input).expect("serializes");
        let protected = protect(&text, &case.opts);
        prop_assert!(protected.is_ok(), "refused: {:?}", protected.err().map(|e| e.to_string()));
        let Ok(protected) = protected else { unreachable!() };
        let out = &protected.task_definition;
        let errors = validate(out);
        prop_assert!(errors.is_empty(), "invalid output: {errors:?}");

        // Idempotent, byte for byte.
        let out_text = serde_json::to_string(out).expect("serializes");
        let again = protect(&out_text, &case.opts).map(|p| p.task_definition);
        prop_assert_eq!(again.as_ref().ok(), Some(out));
        prop_assert_eq!(serde_json::to_string(&again.expect("ok")).expect("serializes"), out_text);

        // Top-level fields kept; read-only ones gone.
        for key in READ_ONLY {
            prop_assert!(out.get(*key).is_none());
        }
        for (key, value) in case.original.as_object().expect("object") {
            if key != "containerDefinitions" {
                prop_assert_eq!(out.get(key), Some(value), "top-level {} changed", key);
            }
        }

        // Every application's argv is exactly what it was; the sidecar comes last.
        let orig = containers(&case.original);
        let outs = containers(out);
        prop_assert_eq!(outs.len(), orig.len() + 1);
        prop_assert_eq!(&outs[orig.len()]["name"], &json!(case.opts.sidecar_name));
        for (o, c) in orig.iter().zip(outs) {
            let name = o["name"].as_str().expect("name");
            match case.opts.mode {
                Mode::Sidecar => prop_assert_eq!(c, o),
                Mode::Embedded => {
                    prop_assert_eq!(c.get("command"), o.get("command"), "command of {} changed", name);
                    let stated = case
                        .opts
                        .entrypoints
                        .get(name)
                        .cloned()
                        .or_else(|| strings(o.get("entryPoint")))
                        .expect("embedded cases have an entryPoint or override");
                    let command = strings(o.get("command")).unwrap_or_default();
                    let mut before = stated;
                    before.extend(command.iter().cloned());
                    let mut after = unwrapped_entry_point(c);
                    after.extend(strings(c.get("command")).unwrap_or_default());
                    prop_assert_eq!(after, before, "argv of {} changed", name);
                    prop_assert_eq!(env_value(c, "DEFENDER_CONTAINER_NAME"), Some(name));
                }
            }
        }
    }

    #[test]
    fn switching_mode_and_back_restores_the_protection(case in gen_case()) {
        prop_assume!(!names_windows_path(&case.original, &case.opts));
        let text = serde_json::to_string(&case.input).expect("serializes");
        let Ok(first) = protect(&text, &case.opts) else {
            return Err(TestCaseError::fail("generated case refused"));
        };
        let other = ProtectOptions {
            mode: match case.opts.mode { Mode::Embedded => Mode::Sidecar, Mode::Sidecar => Mode::Embedded },
            entrypoints: case.opts.entrypoints.clone(),
            ..ProtectOptions::default()
        };
        // Sidecar -> embedded needs an entrypoint for every container; skip when unknown.
        if let Ok(switched) = protect(&first.task_definition.to_string(), &other) {
            prop_assert!(validate(&switched.task_definition).is_empty());
            let back = protect(&switched.task_definition.to_string(), &case.opts).map(|p| p.task_definition);
            prop_assert!(back.is_ok(), "refused: {:?}", back.as_ref().err().map(|e| e.to_string()));
            let back = back.expect("ok");
            let mut expected = first.task_definition.clone();
            if case.opts.mode == Mode::Sidecar {
                // Overrides used in the embedded leg stay as explicit entryPoints (documented).
                for c in expected["containerDefinitions"].as_array_mut().expect("list") {
                    let name = c["name"].as_str().unwrap_or_default().to_owned();
                    match other.entrypoints.get(&name) {
                        // A stated-empty entrypoint unwraps to "no entryPoint".
                        Some(ep) if ep.is_empty() => {
                            c.as_object_mut().expect("object").remove("entryPoint");
                        }
                        Some(ep) => c["entryPoint"] = json!(ep),
                        None => {}
                    }
                }
            }
            prop_assert_eq!(without_mode_residue(&back), without_mode_residue(&expected));
        }
    }
}
