//! Table tests over realistic task definitions, in all three input forms and both modes.

mod common;

use std::collections::BTreeMap;

use common::*;
use defender_taskdef::{
    BundleSource, DEFAULT_DEFENDER_IMAGE, ImageConfig, Mode, ProtectError, ProtectOptions,
    ResolvedImages, parse_entrypoint_override, protect,
};
use serde_json::{Value, json};

/// One fixture and what protecting it must show.
struct Scenario {
    /// DescribeTaskDefinition response under tests/data.
    file: &'static str,
    /// `--entrypoint` arguments embedded mode needs (containers without entryPoint).
    overrides: &'static [&'static str],
    /// Image ENTRYPOINT/CMD as `--resolve-images` would find them: (image, ENTRYPOINT, CMD).
    images: &'static [(
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    )],
    /// Substrings that must each appear in some warning, per mode.
    embedded_warnings: &'static [&'static str],
    /// Substrings that must each appear in some warning in sidecar mode.
    sidecar_warnings: &'static [&'static str],
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        file: "nginx.json",
        overrides: &[],
        images: &[],
        embedded_warnings: &[],
        sidecar_warnings: &[],
    },
    Scenario {
        file: "java-firelens-xray.json",
        overrides: &[r#"xray=["/xray", "-t", "0.0.0.0:2000", "-b", "0.0.0.0:2000"]"#],
        // aws-for-fluent-bit has no ENTRYPOINT and the shell-form CMD `/entrypoint.sh`.
        images: &[(
            "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
            &[],
            &["/bin/sh", "-c", "/entrypoint.sh"],
        )],
        embedded_warnings: &["\"log_router\": ENTRYPOINT [] and CMD [\"/bin/sh\""],
        sidecar_warnings: &[],
    },
    Scenario {
        file: "shell-form.json",
        overrides: &[],
        images: &[],
        embedded_warnings: &[],
        sidecar_warnings: &[],
    },
    Scenario {
        file: "efs-arm64.json",
        overrides: &[],
        images: &[],
        embedded_warnings: &[],
        sidecar_warnings: &[],
    },
    Scenario {
        file: "appmesh-envoy.json",
        overrides: &[],
        images: &[],
        embedded_warnings: &["\"payments\" drops SYS_PTRACE"],
        sidecar_warnings: &[],
    },
    Scenario {
        file: "unicode-quotes.json",
        overrides: &[],
        images: &[],
        embedded_warnings: &["does not include \"FARGATE\"", "networkMode is \"bridge\""],
        sidecar_warnings: &["does not include \"FARGATE\"", "networkMode is \"bridge\""],
    },
];

fn overrides(args: &[&str]) -> BTreeMap<String, Vec<String>> {
    args.iter()
        .map(|a| parse_entrypoint_override(a).expect("test override parses"))
        .collect()
}

fn embedded_opts(s: &Scenario) -> ProtectOptions {
    ProtectOptions {
        console_addr: Some("https://console.example.com:8443".into()),
        bundle: BundleSource::Env("eyJidW5kbGUiOiJ0ZXN0In0=".into()),
        entrypoints: overrides(s.overrides),
        resolved_images: images(s),
        ..ProtectOptions::default()
    }
}

/// The scenario's image configs as the Console hands them to protect.
fn images(s: &Scenario) -> ResolvedImages {
    let strs = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    ResolvedImages {
        configs: s
            .images
            .iter()
            .map(|(image, ep, cmd)| {
                (
                    (*image).to_owned(),
                    ImageConfig {
                        entrypoint: strs(ep),
                        cmd: strs(cmd),
                        source: "test".into(),
                    },
                )
            })
            .collect(),
        defender_platforms: None,
    }
}

fn sidecar_opts() -> ProtectOptions {
    ProtectOptions {
        defender_image: "registry.example.com/defender:9.9.9".into(),
        bundle: BundleSource::Secret {
            value_from:
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:defender/bundle-AbCdEf".into(),
        },
        mode: Mode::Sidecar,
        sidecar_name: "dfd_sidecar".into(),
        ..ProtectOptions::default()
    }
}

/// The logConfiguration the sidecar must get: the first non-FireLens one of the app containers.
fn expected_sidecar_log(original: &Value) -> Option<Value> {
    let log = containers(original)
        .iter()
        .filter_map(|c| c.get("logConfiguration"))
        .find(|l| l["logDriver"] != "awsfirelens")?;
    let mut log = log.clone();
    if log["logDriver"] == "awslogs" {
        log["options"]["awslogs-stream-prefix"] = json!("defender");
    }
    Some(log)
}

fn assert_warnings(warnings: &[String], expected: &[&str], context: &str) {
    for e in expected {
        assert!(
            warnings.iter().any(|w| w.contains(e)),
            "{context}: no warning contains {e:?}; got {warnings:#?}"
        );
    }
}

fn check_sidecar(sidecar: &Value, original: &Value, opts: &ProtectOptions, context: &str) {
    assert_eq!(sidecar["name"], json!(opts.sidecar_name), "{context}");
    assert_eq!(sidecar["image"], json!(opts.defender_image), "{context}");
    assert_eq!(sidecar["essential"], json!(false), "{context}");
    assert_eq!(
        strings(sidecar.get("entryPoint")),
        Some(owned(&SIDECAR_ENTRYPOINT)),
        "{context}"
    );
    assert_eq!(
        sidecar["healthCheck"],
        expected_sidecar_healthcheck(),
        "{context}"
    );
    assert_eq!(
        env_value(sidecar, "FARGATE_TASK"),
        original["family"].as_str(),
        "{context}"
    );
    assert_eq!(
        env_value(sidecar, "DEFENDER_MODE"),
        Some(opts.mode.to_string().as_str()),
        "{context}"
    );
    assert_eq!(
        env_value(sidecar, "DEFENDER_CONSOLE_ADDR"),
        opts.console_addr.as_deref(),
        "{context}"
    );
    match &opts.bundle {
        BundleSource::Env(b) => {
            assert_eq!(
                env_value(sidecar, "INSTALL_BUNDLE"),
                Some(b.as_str()),
                "{context}"
            );
            assert!(sidecar.get("secrets").is_none(), "{context}");
        }
        BundleSource::Secret { value_from } => {
            assert_eq!(env_value(sidecar, "INSTALL_BUNDLE"), None, "{context}");
            assert_eq!(
                sidecar["secrets"],
                json!([{"name": "INSTALL_BUNDLE", "valueFrom": value_from}]),
                "{context}"
            );
        }
        BundleSource::None => {
            assert_eq!(env_value(sidecar, "INSTALL_BUNDLE"), None, "{context}");
            assert!(sidecar.get("secrets").is_none(), "{context}");
        }
    }
    assert_eq!(
        sidecar.get("logConfiguration").cloned(),
        expected_sidecar_log(original),
        "{context}"
    );
    let allowed = [
        "name",
        "image",
        "essential",
        "entryPoint",
        "environment",
        "secrets",
        "healthCheck",
        "logConfiguration",
        "linuxParameters",
    ];
    for key in sidecar.as_object().expect("object").keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{context}: unexpected sidecar key {key}"
        );
    }
    let expected_env_len = 2
        + usize::from(opts.console_addr.is_some())
        + usize::from(matches!(opts.bundle, BundleSource::Env(_)));
    assert_eq!(
        sidecar["environment"].as_array().map(Vec::len),
        Some(expected_env_len),
        "{context}"
    );
}

/// Checks one wrapped application container against its original.
fn check_embedded_container(out: &Value, orig: &Value, opts: &ProtectOptions, context: &str) {
    let name = orig["name"].as_str().expect("name");
    let context = format!("{context} / {name}");
    let out_obj = out.as_object().expect("object");
    let orig_obj = orig.as_object().expect("object");
    let touched = [
        "entryPoint",
        "command",
        "environment",
        "volumesFrom",
        "dependsOn",
        "linuxParameters",
    ];
    for (key, value) in orig_obj {
        if !touched.contains(&key.as_str()) {
            assert_eq!(out_obj.get(key), Some(value), "{context}: {key} changed");
        }
    }
    for key in out_obj.keys() {
        assert!(
            orig_obj.contains_key(key) || touched.contains(&key.as_str()),
            "{context}: unexpected new key {key}"
        );
    }
    // entryPoint = wrapper ++ original (or the override); command untouched.
    // An image config read from the image stands in for a missing entryPoint, its CMD for a
    // missing command.
    let resolved = opts
        .resolved_images
        .configs
        .get(orig["image"].as_str().unwrap_or_default());
    let expected_ep = opts
        .entrypoints
        .get(name)
        .cloned()
        .or_else(|| strings(orig.get("entryPoint")))
        .or_else(|| resolved.map(|c| c.entrypoint.clone()))
        .expect("embedded containers have an entryPoint, override or image config");
    assert_eq!(unwrapped_entry_point(out), expected_ep, "{context}");
    let expected_command = orig
        .get("command")
        .cloned()
        .or_else(|| resolved.filter(|c| !c.cmd.is_empty()).map(|c| json!(c.cmd)));
    assert_eq!(out.get("command").cloned(), expected_command, "{context}");

    let mut env = orig.get("environment").cloned().unwrap_or(json!([]));
    let image = orig["image"].clone();
    env.as_array_mut().expect("list").extend([
        json!({"name": "DEFENDER_CONTAINER_NAME", "value": name}),
        json!({"name": "DEFENDER_CONTAINER_IMAGE", "value": image}),
    ]);
    assert_eq!(out["environment"], env, "{context}");

    let mut volumes_from = orig.get("volumesFrom").cloned().unwrap_or(json!([]));
    volumes_from
        .as_array_mut()
        .expect("list")
        .push(json!({"sourceContainer": opts.sidecar_name, "readOnly": true}));
    assert_eq!(out["volumesFrom"], volumes_from, "{context}");

    let mut depends_on = orig.get("dependsOn").cloned().unwrap_or(json!([]));
    depends_on
        .as_array_mut()
        .expect("list")
        .push(json!({"containerName": opts.sidecar_name, "condition": "START"}));
    assert_eq!(out["dependsOn"], depends_on, "{context}");

    // linuxParameters: everything kept, SYS_PTRACE merged into capabilities.add once.
    let mut linux = orig.get("linuxParameters").cloned().unwrap_or(json!({}));
    let caps = linux
        .as_object_mut()
        .expect("object")
        .entry("capabilities")
        .or_insert(json!({}));
    let add = caps
        .as_object_mut()
        .expect("object")
        .entry("add")
        .or_insert(json!([]));
    if !add
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c == "SYS_PTRACE")
    {
        add.as_array_mut().expect("list").push(json!("SYS_PTRACE"));
    }
    assert_eq!(out["linuxParameters"], linux, "{context}");
}

/// Runs every check of one scenario, form and mode.
fn check_protected(
    input: &Value,
    original: &Value,
    opts: &ProtectOptions,
    expected_warnings: &[&str],
    context: &str,
) {
    let protected = protect_ok(input, opts);
    let out = &protected.task_definition;
    assert_valid(out, context);
    assert_warnings(&protected.warnings, expected_warnings, context);
    assert!(
        !protected.warnings.iter().any(|w| w.contains("removed")),
        "{context}: realistic input should need no key removal warnings: {:#?}",
        protected.warnings
    );

    // Read-only fields are gone; every other top-level field is kept exactly.
    for key in READ_ONLY {
        assert!(out.get(*key).is_none(), "{context}: {key} kept");
    }
    let out_obj = out.as_object().expect("object");
    for (key, value) in original.as_object().expect("object") {
        if key == "proxyConfiguration" && value["type"] == "APPMESH" {
            // The Console's port joins EgressIgnoredPorts; everything else is kept.
            let port = opts
                .console_addr
                .as_deref()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(_, p)| p.to_owned());
            let mut expected = value.clone();
            if let Some(port) = port {
                expected["properties"]
                    .as_array_mut()
                    .expect("list")
                    .push(json!({"name": "EgressIgnoredPorts", "value": port}));
            }
            assert_eq!(
                out_obj.get(key),
                Some(&expected),
                "{context}: App Mesh egress"
            );
        } else if key != "containerDefinitions" {
            assert_eq!(
                out_obj.get(key),
                Some(value),
                "{context}: top-level {key} changed"
            );
        }
    }
    let mut allowed_new: Vec<&str> = vec!["containerDefinitions"];
    if opts.mode == Mode::Sidecar {
        allowed_new.push("pidMode");
        assert_eq!(out["pidMode"], json!("task"), "{context}");
    }
    for key in out_obj.keys() {
        assert!(
            original.get(key).is_some() || allowed_new.contains(&key.as_str()),
            "{context}: new top-level key {key}"
        );
    }

    // Containers: order kept, sidecar last.
    let orig_containers = containers(original);
    let out_containers = containers(out);
    assert_eq!(out_containers.len(), orig_containers.len() + 1, "{context}");
    for (o, c) in orig_containers.iter().zip(out_containers) {
        assert_eq!(o["name"], c["name"], "{context}: container order");
        match opts.mode {
            Mode::Embedded => check_embedded_container(c, o, opts, context),
            Mode::Sidecar => assert_eq!(c, o, "{context}: sidecar mode changed an app container"),
        }
    }
    let sidecar = out_containers.last().expect("sidecar");
    check_sidecar(sidecar, original, opts, context);
    if opts.mode == Mode::Sidecar {
        assert_eq!(
            sidecar["linuxParameters"],
            json!({"capabilities": {"add": ["SYS_PTRACE"]}}),
            "{context}"
        );
    }

    // Idempotent: protecting the output again changes nothing, byte for byte.
    let again = protect_ok(out, opts);
    assert_eq!(&again.task_definition, out, "{context}: not idempotent");
    assert_eq!(
        serde_json::to_string(&again.task_definition).expect("serializes"),
        serde_json::to_string(out).expect("serializes"),
        "{context}: not byte-identical"
    );
    assert!(
        again
            .warnings
            .iter()
            .any(|w| w.contains("already protected")),
        "{context}: {:?}",
        again.warnings
    );
}

#[test]
fn every_scenario_in_every_form_and_mode() {
    for s in SCENARIOS {
        let forms = Forms::of(&load(s.file));
        for (label, input, original) in forms.each() {
            let embedded = embedded_opts(s);
            check_protected(
                input,
                &original,
                &embedded,
                s.embedded_warnings,
                &format!("{} {label} embedded", s.file),
            );
            let sidecar = sidecar_opts();
            check_protected(
                input,
                &original,
                &sidecar,
                s.sidecar_warnings,
                &format!("{} {label} sidecar", s.file),
            );
        }
    }
}

#[test]
fn the_three_forms_give_the_same_result_apart_from_tags() {
    for s in SCENARIOS {
        let forms = Forms::of(&load(s.file));
        let opts = embedded_opts(s);
        let describe = protect_ok(&forms.describe, &opts).task_definition;
        let register = protect_ok(&forms.register, &opts).task_definition;
        let mut json_tab = protect_ok(&forms.json_tab, &opts).task_definition;
        assert_eq!(describe, register, "{}", s.file);
        assert!(json_tab.get("tags").is_none(), "{}", s.file);
        if let Some(tags) = forms.describe.get("tags") {
            assert_eq!(describe["tags"], *tags, "{}: tags kept", s.file);
            json_tab["tags"] = tags.clone();
        }
        assert_eq!(describe, json_tab, "{}", s.file);
    }
}

#[test]
fn containers_without_entry_point_are_all_named_in_one_refusal() {
    let forms = Forms::of(&load("java-firelens-xray.json"));
    let err = protect(&forms.describe.to_string(), &ProtectOptions::default());
    assert_eq!(
        err,
        Err(ProtectError::MissingEntryPoint {
            containers: vec!["log_router".into(), "xray".into()]
        })
    );
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    for needle in [
        "\"log_router\"",
        "\"xray\"",
        "--entrypoint",
        "='[]'",
        "--mode sidecar",
    ] {
        assert!(msg.contains(needle), "{needle} missing from: {msg}");
    }
    // One override is not enough: the other container is still named.
    let opts = ProtectOptions {
        entrypoints: overrides(&[r#"xray=["/xray"]"#]),
        ..ProtectOptions::default()
    };
    assert_eq!(
        protect(&forms.describe.to_string(), &opts),
        Err(ProtectError::MissingEntryPoint {
            containers: vec!["log_router".into()]
        })
    );
    // `entryPoint: []` means "not set" to Docker, so it is refused the same way.
    let task = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": [], "command": ["x"]}]});
    assert_eq!(
        protect(&task.to_string(), &ProtectOptions::default()),
        Err(ProtectError::MissingEntryPoint {
            containers: vec!["a".into()]
        })
    );
    // Sidecar mode needs no entrypoints at all.
    let sidecar = ProtectOptions {
        mode: Mode::Sidecar,
        ..ProtectOptions::default()
    };
    assert!(protect(&forms.describe.to_string(), &sidecar).is_ok());
}

#[test]
fn empty_override_states_the_image_has_no_entry_point() {
    let task = json!({"family": "f", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "app", "image": "busybox", "command": ["sleep", "1d"]}]});
    let opts = ProtectOptions {
        entrypoints: overrides(&["app=[]"]),
        ..ProtectOptions::default()
    };
    let out = protect_ok(&task, &opts);
    let app = &containers(&out.task_definition)[0];
    assert_eq!(strings(app.get("entryPoint")), Some(owned(&WRAPPER)));
    assert_eq!(app["command"], json!(["sleep", "1d"]));
    // Re-protecting needs no override: the wrapper with nothing after it says "none".
    let again = protect_ok(&out.task_definition, &ProtectOptions::default());
    assert_eq!(again.task_definition, out.task_definition);
    // Nothing to run at all is refused.
    let no_command =
        json!({"family": "f", "containerDefinitions": [{"name": "app", "image": "busybox"}]});
    assert_eq!(
        protect(&no_command.to_string(), &opts),
        Err(ProtectError::OverrideWithoutCommand {
            container: "app".into()
        })
    );
}

#[test]
fn override_replaces_an_explicit_entry_point_with_a_warning() {
    let task = json!({"family": "f", "containerDefinitions": [{"name": "app", "image": "i", "entryPoint": ["/old"], "command": ["run"]}]});
    let opts = ProtectOptions {
        entrypoints: overrides(&[r#"app=["/new", "-v"]"#]),
        ..ProtectOptions::default()
    };
    let out = protect_ok(&task, &opts);
    let app = &containers(&out.task_definition)[0];
    assert_eq!(unwrapped_entry_point(app), owned(&["/new", "-v"]));
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("replaces its entryPoint")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn shell_form_entry_points_are_wrapped_like_any_other() {
    let forms = Forms::of(&load("shell-form.json"));
    let out = protect_ok(&forms.register, &ProtectOptions::default()).task_definition;
    let worker = &containers(&out)[1];
    assert_eq!(
        strings(worker.get("entryPoint")),
        Some(owned(&[
            "/var/lib/defender/defender",
            "fargate",
            "entrypoint",
            "--",
            "sh",
            "-c",
            "exec python -m worker --queue \"$QUEUE\" --concurrency ${CONCURRENCY:-4}",
        ]))
    );
    assert!(worker.get("command").is_none());
    let migrate = &containers(&out)[0];
    assert_eq!(unwrapped_entry_point(migrate), owned(&["/bin/bash", "-lc"]));
    assert_eq!(
        migrate["command"],
        json!(["alembic upgrade head && echo \"migrations done\""])
    );
    // The worker's own dependency is kept before the sidecar's.
    assert_eq!(
        worker["dependsOn"],
        json!([{"containerName": "migrate", "condition": "SUCCESS"}, {"containerName": "defender", "condition": "START"}])
    );
    assert_eq!(
        worker["linuxParameters"],
        json!({"initProcessEnabled": true, "capabilities": {"add": ["SYS_PTRACE"]}})
    );
}

#[test]
fn capabilities_and_proxy_configuration_are_kept() {
    let forms = Forms::of(&load("appmesh-envoy.json"));
    let out = protect_ok(&forms.describe, &ProtectOptions::default());
    let task = &out.task_definition;
    assert_eq!(
        task["proxyConfiguration"],
        forms.register["proxyConfiguration"]
    );
    let payments = &containers(task)[0];
    assert_eq!(
        payments["linuxParameters"],
        json!({"capabilities": {"add": ["SYS_PTRACE"], "drop": ["NET_RAW", "SYS_PTRACE"]}, "initProcessEnabled": true})
    );
    let envoy = &containers(task)[1];
    assert_eq!(
        envoy["linuxParameters"],
        json!({"capabilities": {"add": ["SYS_PTRACE"], "drop": ["ALL"]}})
    );
    // Only the explicit SYS_PTRACE drop is warned about, not "ALL" (add applies after drop ALL).
    let ptrace_warnings: Vec<_> = out
        .warnings
        .iter()
        .filter(|w| w.contains("drops SYS_PTRACE"))
        .collect();
    assert_eq!(ptrace_warnings.len(), 1, "{:?}", out.warnings);
    assert_eq!(
        payments["dependsOn"],
        json!([{"containerName": "envoy", "condition": "HEALTHY"}, {"containerName": "defender", "condition": "START"}])
    );
}

#[test]
fn firelens_is_not_copied_to_the_sidecar() {
    let forms = Forms::of(&load("java-firelens-xray.json"));
    let opts = ProtectOptions {
        mode: Mode::Sidecar,
        ..ProtectOptions::default()
    };
    let out = protect_ok(&forms.describe, &opts).task_definition;
    let sidecar = containers(&out).last().expect("sidecar");
    assert_eq!(
        sidecar["logConfiguration"],
        json!({"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/orders-api/firelens",
            "awslogs-region": "us-east-1", "awslogs-stream-prefix": "defender"}})
    );
    // FireLens only: no logConfiguration, and a warning says why.
    let task = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/a"],
        "logConfiguration": {"logDriver": "awsfirelens", "options": {"Name": "stdout"}}}]});
    let out = protect_ok(&task, &ProtectOptions::default());
    assert!(
        containers(&out.task_definition)[1]
            .get("logConfiguration")
            .is_none()
    );
    assert!(
        out.warnings.iter().any(|w| w.contains("FireLens")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn unicode_and_quotes_survive_exactly() {
    let described = load("unicode-quotes.json");
    let original_command =
        described["taskDefinition"]["containerDefinitions"][0]["command"].clone();
    assert!(original_command[1].as_str().expect("string").contains('"'));
    let out = protect_ok(&described, &ProtectOptions::default());
    let text = serde_json::to_string_pretty(&out.task_definition).expect("serializes");
    let reparsed: Value = serde_json::from_str(&text).expect("parses");
    let greeter = &containers(&reparsed)[0];
    assert_eq!(greeter["command"], original_command);
    assert_eq!(
        unwrapped_entry_point(greeter),
        owned(&["/usr/local/bin/greet", "--locale=sv_SE.UTF-8"])
    );
    assert_eq!(env_value(greeter, "GREETING"), Some("Привет, мир"));
    assert_eq!(env_value(greeter, "EMPTY"), Some(""));
    assert_eq!(
        reparsed["tags"],
        json!([{"key": "owner", "value": "Åsa Öberg"}])
    );
}

#[test]
fn sidecar_reserves_memory_only_without_task_memory() {
    let mut task = json!({"family": "f", "memory": "512", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/a"]}]});
    let with = protect_ok(&task, &ProtectOptions::default()).task_definition;
    assert!(containers(&with)[1].get("memoryReservation").is_none());
    task.as_object_mut().expect("object").remove("memory");
    let without = protect_ok(&task, &ProtectOptions::default());
    assert_eq!(
        containers(&without.task_definition)[1]["memoryReservation"],
        json!(128)
    );
    assert!(
        without
            .warnings
            .iter()
            .any(|w| w.contains("memoryReservation"))
    );
}

#[test]
fn bundle_sources_and_console_address() {
    let task = json!({"family": "fam", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/a"]}]});
    let sidecar =
        |opts: &ProtectOptions| containers(&protect_ok(&task, opts).task_definition)[1].clone();

    let none = sidecar(&ProtectOptions::default());
    assert_eq!(env_value(&none, "INSTALL_BUNDLE"), None);
    assert_eq!(env_value(&none, "DEFENDER_CONSOLE_ADDR"), None);
    assert!(none.get("secrets").is_none());
    assert_eq!(none["image"], json!(DEFAULT_DEFENDER_IMAGE));
    assert!(DEFAULT_DEFENDER_IMAGE.ends_with(env!("CARGO_PKG_VERSION")));

    let ssm = sidecar(&ProtectOptions {
        bundle: BundleSource::Secret {
            value_from: "/defender/install-bundle".into(),
        },
        console_addr: Some("console.internal:8443".into()),
        ..ProtectOptions::default()
    });
    assert_eq!(
        ssm["secrets"],
        json!([{"name": "INSTALL_BUNDLE", "valueFrom": "/defender/install-bundle"}])
    );
    assert_eq!(
        env_value(&ssm, "DEFENDER_CONSOLE_ADDR"),
        Some("console.internal:8443")
    );
    let warnings = protect_ok(
        &task,
        &ProtectOptions {
            bundle: BundleSource::Secret {
                value_from: "/defender/install-bundle".into(),
            },
            ..ProtectOptions::default()
        },
    )
    .warnings;
    assert!(
        warnings.iter().any(|w| w.contains("executionRoleArn")),
        "{warnings:?}"
    );
    assert_eq!(
        ssm["environment"],
        json!([{"name": "FARGATE_TASK", "value": "fam"}, {"name": "DEFENDER_MODE", "value": "embedded"},
               {"name": "DEFENDER_CONSOLE_ADDR", "value": "console.internal:8443"}])
    );
    let bad = ProtectOptions {
        bundle: BundleSource::Secret {
            value_from: "arn:aws:s3:::bucket/bundle".into(),
        },
        ..ProtectOptions::default()
    };
    assert!(matches!(
        protect(&task.to_string(), &bad),
        Err(ProtectError::InvalidOption { .. })
    ));
}

#[test]
fn twistlock_protection_is_migrated() {
    let protected = Forms::of(&load("twistlock-protected.json"));
    let original = load("twistlock-original.json");
    let with_cache_override = ProtectOptions {
        entrypoints: overrides(&["cache=[]"]),
        ..ProtectOptions::default()
    };
    let expected = protect_ok(&original, &with_cache_override).task_definition;
    for (label, input, _) in protected.each() {
        for opts in [&ProtectOptions::default(), &with_cache_override] {
            let out = protect_ok(input, opts);
            let mut expected = expected.clone();
            if label == "json-tab" {
                expected.as_object_mut().expect("object").remove("tags");
            }
            assert_eq!(out.task_definition, expected, "{label}");
            assert!(
                out.warnings.iter().any(|w| w.contains("Twistlock")),
                "{label}: {:?}",
                out.warnings
            );
            let text = out.task_definition.to_string();
            assert!(
                !text.contains("TwistlockDefender")
                    && !text.contains("twistlock")
                    && !text.contains("TW_")
            );
        }
    }
    // The dumb-init `--` belongs to the application and is kept.
    let checkout = &containers(&expected)[0];
    assert_eq!(unwrapped_entry_point(checkout), owned(&["dumb-init", "--"]));
    assert_eq!(
        checkout["volumesFrom"],
        json!([{"sourceContainer": "defender", "readOnly": true}])
    );
    assert_eq!(
        checkout["dependsOn"],
        json!([{"containerName": "cache", "condition": "START"}, {"containerName": "defender", "condition": "START"}])
    );

    // Sidecar mode: the same, apart from the SYS_PTRACE Twistlock had added.
    let sidecar = ProtectOptions {
        mode: Mode::Sidecar,
        ..ProtectOptions::default()
    };
    let migrated = protect_ok(&protected.register, &sidecar).task_definition;
    let fresh = protect_ok(&original, &sidecar).task_definition;
    assert_ne!(migrated, fresh);
    assert_eq!(
        without_mode_residue(&migrated),
        without_mode_residue(&fresh)
    );
    assert!(
        containers(&migrated)[1].get("entryPoint").is_none(),
        "cache runs its image entrypoint again"
    );
}

#[test]
fn earlier_protections_of_ours_are_upgraded() {
    let older = ProtectOptions {
        defender_image: "fargate-defender/defender:0.0.1".into(),
        sidecar_name: "old-defender".into(),
        bundle: BundleSource::Env("old".into()),
        ..ProtectOptions::default()
    };
    for s in SCENARIOS {
        let forms = Forms::of(&load(s.file));
        let variants = [
            ProtectOptions {
                entrypoints: overrides(s.overrides),
                resolved_images: images(s),
                ..older.clone()
            },
            ProtectOptions {
                mode: Mode::Sidecar,
                ..older.clone()
            },
        ];
        let targets = [embedded_opts(s), sidecar_opts()];
        for first in &variants {
            let old = protect_ok(&forms.register, first).task_definition;
            for target in &targets {
                let context = format!("{}: {} -> {}", s.file, first.mode, target.mode);
                let upgraded = protect_ok(&old, target);
                let fresh = protect_ok(&forms.register, target).task_definition;
                assert_valid(&upgraded.task_definition, &context);
                if first.mode == target.mode {
                    assert_eq!(upgraded.task_definition, fresh, "{context}");
                } else {
                    // An entryPoint stated by an override stays explicit after the switch.
                    let mut fresh = fresh;
                    if target.mode == Mode::Sidecar {
                        for c in fresh["containerDefinitions"].as_array_mut().expect("list") {
                            let name = c["name"].as_str().unwrap_or_default().to_owned();
                            if let Some(ep) = first.entrypoints.get(&name) {
                                c["entryPoint"] = json!(ep);
                            }
                            // So do an ENTRYPOINT and CMD read from the image.
                            let image = c["image"].as_str().unwrap_or_default().to_owned();
                            if let Some(config) = first.resolved_images.configs.get(&image)
                                && !first.entrypoints.contains_key(&name)
                                && c.get("entryPoint").is_none()
                            {
                                if !config.entrypoint.is_empty() {
                                    c["entryPoint"] = json!(config.entrypoint);
                                }
                                if c.get("command").is_none() && !config.cmd.is_empty() {
                                    c["command"] = json!(config.cmd);
                                }
                            }
                        }
                    }
                    assert_eq!(
                        without_mode_residue(&upgraded.task_definition),
                        without_mode_residue(&fresh),
                        "{context}"
                    );
                }
                assert!(
                    upgraded
                        .warnings
                        .iter()
                        .any(|w| w.contains("\"old-defender\"")),
                    "{context}: {:?}",
                    upgraded.warnings
                );
                assert_eq!(
                    containers(&upgraded.task_definition).len(),
                    containers(&forms.register).len() + 1,
                    "{context}: exactly one sidecar"
                );
            }
        }
    }
}

/// Recognises the expected error variant.
type ErrorCheck = fn(&ProtectError) -> bool;

#[test]
fn input_refusals_are_clear() {
    let opts = ProtectOptions::default();
    let cases: Vec<(String, ErrorCheck, &str)> = vec![
        ("{\"family\": \"f\",\n \"containerDefinitions\": [}".into(), |e| matches!(e, ProtectError::NotJson { line: 2, .. }), "line 2"),
        ("[1, 2]".into(), |e| matches!(e, ProtectError::NotAnObject { .. }), "not a JSON object"),
        ("{\"family\": \"f\"}".into(), |e| matches!(e, ProtectError::NoContainers(_)), "containerDefinitions"),
        ("{\"family\": \"f\", \"containerDefinitions\": []}".into(), |e| matches!(e, ProtectError::NoContainers(_)), "empty"),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "entryPoint": ["/a"]}]}).to_string(),
            |e| matches!(e, ProtectError::ContainerWithoutImage { name } if name == "a"),
            "has no \"image\"",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i"}, {"image": "i"}]}).to_string(),
            |e| matches!(e, ProtectError::ContainerWithoutName { index: 2 }),
            "#2",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i"}, {"name": "a", "image": "j"}]}).to_string(),
            |e| matches!(e, ProtectError::DuplicateContainerName { name } if name == "a"),
            "unique",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "defender", "image": "mine", "entryPoint": ["/x"]}]}).to_string(),
            |e| matches!(e, ProtectError::SidecarNameClash { name } if name == "defender"),
            "another name for the Defender sidecar",
        ),
        (
            json!({"family": "f", "runtimePlatform": {"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"},
                "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/a"]}]}).to_string(),
            |e| matches!(e, ProtectError::Windows { .. }),
            "Linux tasks only",
        ),
        (
            json!({"containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/a"]}]}).to_string(),
            |e| matches!(e, ProtectError::MissingFamily),
            "family",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "cpu": "1"}]}).to_string(),
            |e| matches!(e, ProtectError::InvalidField { path, .. } if path == "containerDefinitions[0].cpu"),
            "whole number",
        ),
        (
            format!("{{\"family\": \"{}\"}}", "x".repeat(1024 * 1024)),
            |e| matches!(e, ProtectError::TooLarge { .. }),
            "1 MiB",
        ),
    ];
    for (input, is_expected, needle) in cases {
        let err = protect(&input, &opts).expect_err("must be refused");
        assert!(is_expected(&err), "{input:.80}: got {err:?}");
        assert!(
            err.to_string().contains(needle),
            "{:?} lacks {needle:?}",
            err.to_string()
        );
    }
}

#[test]
fn overrides_must_name_existing_containers() {
    let task = json!({"family": "f", "containerDefinitions": [{"name": "web", "image": "i", "entryPoint": ["/a"]}, {"name": "db", "image": "d", "entryPoint": ["/d"]}]});
    let opts = ProtectOptions {
        entrypoints: overrides(&["wbe=[]"]),
        ..ProtectOptions::default()
    };
    let err = protect(&task.to_string(), &opts).expect_err("typo refused");
    assert_eq!(
        err,
        ProtectError::UnknownOverride {
            name: "wbe".into(),
            known: vec!["web".into(), "db".into()]
        }
    );
    assert!(err.to_string().contains("\"web\", \"db\""));
}

#[test]
fn our_own_sidecar_name_is_not_a_clash() {
    let task = json!({"family": "f", "containerDefinitions": [{"name": "web", "image": "i", "entryPoint": ["/a"]}]});
    let once = protect_ok(&task, &ProtectOptions::default()).task_definition;
    // Even when the earlier sidecar had a different image, it is recognised and replaced.
    let mut edited = once.clone();
    edited["containerDefinitions"][1]["image"] = json!("fargate-defender/defender:0.0.0-old");
    assert_eq!(
        protect_ok(&edited, &ProtectOptions::default()).task_definition,
        once
    );
}

#[test]
fn null_and_unknown_keys_are_cleaned_with_warnings_for_misspellings() {
    let task = json!({
        "family": "f", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "pidMode": null,
        "inferenceAccelerators": null, "ipcMode": "",
        "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/a"], "linuxParameters": null,
            "healthCheck": null, "environment": [], "notAKeyAtAll": true, "firelensConfiguration": null,
            "logConfiguration": {}}]
    });
    let out = protect_ok(&task, &ProtectOptions::default());
    assert_valid(&out.task_definition, "cleaned");
    let a = &containers(&out.task_definition)[0];
    assert!(a.get("notAKeyAtAll").is_none());
    assert!(a.get("logConfiguration").is_none());
    assert!(out.task_definition.get("ipcMode").is_none());
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("removed"))
            .count(),
        1,
        "{:?}",
        out.warnings
    );
    assert!(out.warnings.iter().any(|w| w.contains("\"notAKeyAtAll\"")));
    // A misspelling of a known key that holds data is refused instead (its data would be lost).
    let mut misspelt = task.clone();
    misspelt["containerDefinitions"][0]["Essential"] = json!(true);
    assert!(matches!(
        protect(&misspelt.to_string(), &ProtectOptions::default()),
        Err(ProtectError::MisspeltKey { key, intended, .. }) if key == "Essential" && intended == "essential"
    ));
}

#[test]
fn the_validator_catches_violations() {
    let good = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i"}]});
    assert!(validate(&good).is_empty());
    let bad = [
        json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entrypoint": ["x"]}]}),
        json!({"family": "f", "containerDefinitions": [{"name": "a", "cpu": "1"}]}),
        json!({"containerDefinitions": []}),
        json!({"family": "f", "containerDefinitions": [{"dependsOn": [{"containerName": "x"}]}]}),
        json!({"family": "f", "containerDefinitions": [], "networkMode": "awsvpc2"}),
        json!({"family": "f", "containerDefinitions": [], "pidMode": null}),
        json!({"family": "f", "containerDefinitions": [], "tags": [{"key": "", "value": "v"}]}),
        json!({"family": "f", "containerDefinitions": [{"linuxParameters": {"capabilities": {"add": [1]}}}]}),
    ];
    for b in bad {
        assert!(!validate(&b).is_empty(), "validator accepted {b}");
    }
}

#[test]
fn vendored_model_names_its_origin() {
    let m = model();
    assert_eq!(m["input"], "RegisterTaskDefinitionRequest");
    assert!(m["botocoreVersion"].as_str().is_some_and(|v| !v.is_empty()));
    let notice = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/model/NOTICE"))
        .expect("NOTICE");
    assert!(notice.contains(m["botocoreVersion"].as_str().unwrap_or("?")));
    assert!(notice.contains("Apache License"));
}
