//! One test per case in `tests/cases/` (copied from the issue's `shared/cases/taskdefs/`): the
//! task definitions people really have, and the outcome each must get.

mod common;

use std::collections::BTreeMap;

use common::*;
use defender_taskdef::{
    BundleSource, DEFAULT_DEFENDER_IMAGE, ImageConfig, MAX_TASK_DEFINITION_BYTES, Mode, Platform,
    ProtectError, ProtectOptions, ResolvedImages, ecs_size, plan_resolution, protect,
};
use serde_json::{Value, json};

/// A case file as text.
fn case(name: &str) -> String {
    let path = format!("{}/tests/cases/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A case file as JSON.
fn case_json(name: &str) -> Value {
    serde_json::from_str(&case(name)).expect("case parses")
}

fn platform(arch: &str) -> Platform {
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
    }
}

fn nginx_config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/docker-entrypoint.sh".into()],
        cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
        source: "registry public.ecr.aws, sha256:test".into(),
    }
}

fn warned(warnings: &[String], needle: &str) -> bool {
    warnings.iter().any(|w| w.contains(needle))
}

#[test]
fn image_entrypoint_and_cmd_unknown_is_refused_without_resolution() {
    let input = case("image-entrypoint-and-cmd-unknown.json");
    let err = protect(&input, &ProtectOptions::default()).expect_err("refused");
    assert_eq!(
        err,
        ProtectError::MissingEntryPoint {
            containers: vec!["web".into()]
        }
    );
    assert!(err.to_string().contains("--resolve-images"), "{err}");
    // The plan names the image and the default platform.
    let plan = plan_resolution(&input, &ProtectOptions::default()).expect("plan");
    assert_eq!(plan.images, ["public.ecr.aws/nginx/nginx:1.27"]);
    assert_eq!(plan.platform, platform("amd64"));
}

#[test]
fn image_entrypoint_and_cmd_unknown_runs_as_the_image_would_once_resolved() {
    let input = case("image-entrypoint-and-cmd-unknown.json");
    let opts = ProtectOptions {
        bundle: BundleSource::Env("b64".into()),
        resolved_images: ResolvedImages {
            configs: BTreeMap::from([("public.ecr.aws/nginx/nginx:1.27".into(), nginx_config())]),
            defender_platforms: None,
        },
        ..ProtectOptions::default()
    };
    let out = protect(&input, &opts).expect("protected");
    assert_valid(&out.task_definition, "nginx resolved");
    let web = &containers(&out.task_definition)[0];
    let mut expected_ep = owned(&WRAPPER);
    expected_ep.push("/docker-entrypoint.sh".into());
    assert_eq!(strings(web.get("entryPoint")), Some(expected_ep));
    assert_eq!(web["command"], json!(["nginx", "-g", "daemon off;"]));
    assert!(
        warned(
            &out.warnings,
            "container \"web\": ENTRYPOINT [\"/docker-entrypoint.sh\"] and CMD"
        ),
        "{:?}",
        out.warnings
    );
    // Idempotent, and the second run needs no lookup at all.
    let text = out.task_definition.to_string();
    assert!(
        plan_resolution(&text, &opts)
            .expect("plan")
            .images
            .is_empty()
    );
    let again = protect(
        &text,
        &ProtectOptions {
            resolved_images: ResolvedImages::default(),
            ..opts.clone()
        },
    )
    .expect("again");
    assert_eq!(again.task_definition, out.task_definition);
    assert!(warned(&again.warnings, "already protected"));

    // An explicit command replaces CMD; only ENTRYPOINT comes from the image.
    let mut with_command = case_json("image-entrypoint-and-cmd-unknown.json");
    with_command["containerDefinitions"][0]["command"] =
        json!(["nginx-debug", "-g", "daemon off;"]);
    let out = protect(&with_command.to_string(), &opts).expect("protected");
    let web = &containers(&out.task_definition)[0];
    assert_eq!(web["command"], json!(["nginx-debug", "-g", "daemon off;"]));
    assert_eq!(unwrapped_entry_point(web), ["/docker-entrypoint.sh"]);
}

#[test]
fn an_override_without_command_carries_the_image_cmd_or_is_refused() {
    let input = case("image-entrypoint-and-cmd-unknown.json");
    let overrides = BTreeMap::from([("web".to_owned(), vec!["/docker-entrypoint.sh".to_owned()])]);
    let opts = ProtectOptions {
        entrypoints: overrides.clone(),
        ..ProtectOptions::default()
    };
    let err = protect(&input, &opts).expect_err("refused");
    assert_eq!(
        err,
        ProtectError::OverrideWithoutCommand {
            container: "web".into()
        }
    );
    assert!(err.to_string().contains("CMD"), "{err}");
    let plan = plan_resolution(&input, &opts).expect("plan");
    assert_eq!(plan.images, ["public.ecr.aws/nginx/nginx:1.27"]);

    let resolved = ProtectOptions {
        resolved_images: ResolvedImages {
            configs: BTreeMap::from([("public.ecr.aws/nginx/nginx:1.27".into(), nginx_config())]),
            defender_platforms: None,
        },
        ..opts
    };
    let out = protect(&input, &resolved).expect("protected");
    let web = &containers(&out.task_definition)[0];
    assert_eq!(web["command"], json!(["nginx", "-g", "daemon off;"]));
    assert_eq!(unwrapped_entry_point(web), ["/docker-entrypoint.sh"]);
}

#[test]
fn ten_containers_are_refused_naming_the_limit() {
    let input = case("ten-containers.json");
    for mode in [Mode::Embedded, Mode::Sidecar] {
        let opts = ProtectOptions {
            mode,
            ..ProtectOptions::default()
        };
        let err = protect(&input, &opts).expect_err("refused");
        assert_eq!(
            err,
            ProtectError::TooManyContainers {
                count: 10,
                limit: 10
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("at most 10") && msg.contains("own task definition"),
            "{msg}"
        );
    }
    // Nine containers leave room for the sidecar.
    let mut nine = case_json("ten-containers.json");
    nine["containerDefinitions"]
        .as_array_mut()
        .expect("list")
        .pop();
    let out = protect(&nine.to_string(), &ProtectOptions::default()).expect("protected");
    assert_eq!(containers(&out.task_definition).len(), 10);
}

#[test]
fn near_size_limit_is_refused_with_the_size_ecs_would_measure() {
    let input = case("near-size-limit.json");
    let cleaned: Value = serde_json::from_str(&input).expect("parses");
    assert_eq!(ecs_size(&cleaned), 64_953, "the issue's measurement");
    let err = protect(&input, &ProtectOptions::default()).expect_err("refused");
    let ProtectError::TaskDefinitionTooLarge {
        size,
        input_size,
        added,
        limit,
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(limit, MAX_TASK_DEFINITION_BYTES);
    assert_eq!(input_size, 64_953);
    assert!(
        size > MAX_TASK_DEFINITION_BYTES && added == size - input_size,
        "{size}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&size.to_string()) && msg.contains("65536"),
        "{msg}"
    );

    // The same definition with a few variables fewer fits, and its output is measured the same way.
    let mut smaller = cleaned.clone();
    let env = smaller["containerDefinitions"][0]["environment"]
        .as_array_mut()
        .expect("env");
    env.truncate(env.len() - 20);
    let out = protect(&smaller.to_string(), &ProtectOptions::default()).expect("fits");
    assert!(ecs_size(&out.task_definition) <= MAX_TASK_DEFINITION_BYTES);
}

#[test]
fn invalid_fargate_size_and_placeholder_family_are_warned_about() {
    let input = case("invalid-fargate-size-and-placeholder.json");
    let out = protect(&input, &ProtectOptions::default()).expect("protected");
    assert!(
        warned(
            &out.warnings,
            "family \"<TASK_NAME>\" is an unfilled template placeholder"
        ),
        "{:?}",
        out.warnings
    );
    assert!(
        warned(&out.warnings, "cpu \"128\" is not a Fargate task size"),
        "{:?}",
        out.warnings
    );
    // A valid size with an invalid memory names the accepted range.
    let mut pair = case_json("invalid-fargate-size-and-placeholder.json");
    pair["family"] = json!("app");
    pair["cpu"] = json!("1024");
    pair["memory"] = json!("1024");
    let out = protect(&pair.to_string(), &ProtectOptions::default()).expect("protected");
    assert!(
        warned(&out.warnings, "memory 2048 to 8192 in steps of 1024"),
        "{:?}",
        out.warnings
    );
    assert!(!warned(&out.warnings, "placeholder"));
    // Capabilities other than SYS_PTRACE cannot be added on Fargate.
    pair["memory"] = json!("2 GB");
    pair["containerDefinitions"][0]["linuxParameters"] =
        json!({"capabilities": {"add": ["NET_ADMIN"]}});
    let out = protect(&pair.to_string(), &ProtectOptions::default()).expect("protected");
    assert!(
        warned(&out.warnings, "only SYS_PTRACE can be added"),
        "{:?}",
        out.warnings
    );
    assert!(
        !warned(&out.warnings, "Fargate task size"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn misspelt_environment_key_is_refused_naming_the_intended_key() {
    let err = protect(
        &case("misspelt-environment-key.json"),
        &ProtectOptions::default(),
    )
    .expect_err("refused");
    assert_eq!(
        err,
        ProtectError::MisspeltKey {
            path: "containerDefinitions[0]".into(),
            key: "Environment".into(),
            intended: "environment".into(),
        }
    );
}

/// The sidecar of a protected definition.
fn sidecar(task: &Value) -> &Value {
    containers(task).last().expect("sidecar")
}

#[test]
fn hand_edits_to_the_sidecar_survive_re_protection() {
    let input = case_json("protected-then-edited-by-hand.json");
    let out = protect(&input.to_string(), &ProtectOptions::default()).expect("protected");
    assert_valid(&out.task_definition, "edited");
    assert_eq!(out.task_definition, input, "nothing the tool owns changed");
    assert!(
        warned(&out.warnings, "already protected"),
        "{:?}",
        out.warnings
    );
    assert!(!warned(&out.warnings, "updated the Defender sidecar"));
    assert!(
        !warned(&out.warnings, "no install bundle"),
        "{:?}",
        out.warnings
    );
    let s = sidecar(&out.task_definition);
    assert_eq!(s["secrets"][0]["name"], "INSTALL_BUNDLE");
    assert_eq!(s["memoryReservation"], 64);
    assert_eq!(
        s["logConfiguration"]["options"]["awslogs-group"],
        "/ecs/defender"
    );

    // A new image rewrites the image only, and says so.
    let opts = ProtectOptions {
        defender_image: "registry.example.com/defender:2.0.0".into(),
        ..ProtectOptions::default()
    };
    let out = protect(&input.to_string(), &opts).expect("protected");
    let s = sidecar(&out.task_definition);
    assert_eq!(s["image"], "registry.example.com/defender:2.0.0");
    assert_eq!(s["secrets"], input["containerDefinitions"][1]["secrets"]);
    assert_eq!(s["memoryReservation"], 64);
    assert_eq!(
        s["logConfiguration"],
        input["containerDefinitions"][1]["logConfiguration"]
    );
    assert!(
        warned(
            &out.warnings,
            "updated the Defender sidecar \"defender\" (fargate-defender/defender:0.1.0)"
        ),
        "{:?}",
        out.warnings
    );

    // A new bundle option replaces the hand-added secret (never two INSTALL_BUNDLEs).
    let opts = ProtectOptions {
        bundle: BundleSource::Env("b64".into()),
        ..ProtectOptions::default()
    };
    let out = protect(&input.to_string(), &opts).expect("protected");
    let s = sidecar(&out.task_definition);
    assert!(s.get("secrets").is_none(), "{s}");
    assert_eq!(env_value(s, "INSTALL_BUNDLE"), Some("b64"));
    assert_eq!(s["memoryReservation"], 64);
}

#[test]
fn a_register_describe_round_trip_is_already_protected() {
    let input = case_json("protected-then-edited-by-hand.json");
    // What DescribeTaskDefinition returns for it: read-only fields, defaults filled in,
    // variables in another order.
    let mut described = input.clone();
    described["revision"] = json!(7);
    described["status"] = json!("ACTIVE");
    described["taskDefinitionArn"] =
        json!("arn:aws:ecs:us-east-1:123456789012:task-definition/arm:7");
    described["compatibilities"] = json!(["EC2", "FARGATE"]);
    described["registeredAt"] = json!("2026-11-29T10:00:00.000Z");
    for c in described["containerDefinitions"]
        .as_array_mut()
        .expect("list")
    {
        c["cpu"] = json!(0);
        c["portMappings"] = json!([]);
        c["mountPoints"] = json!([]);
        if let Some(env) = c["environment"].as_array_mut() {
            env.reverse();
        }
    }
    let wrapped = json!({"taskDefinition": described, "tags": []});
    let out = protect(&wrapped.to_string(), &ProtectOptions::default()).expect("protected");
    assert_valid(&out.task_definition, "described");
    assert!(
        warned(&out.warnings, "already protected"),
        "{:?}",
        out.warnings
    );
    assert!(!warned(&out.warnings, "updated"), "{:?}", out.warnings);
}

#[test]
fn a_sidecar_without_any_install_bundle_is_warned_about() {
    let input = case("arm64.json");
    let out = protect(&input, &ProtectOptions::default()).expect("protected");
    assert!(
        warned(
            &out.warnings,
            "container \"defender\": the Defender sidecar has no install bundle"
        ),
        "{:?}",
        out.warnings
    );
    let secret = ProtectOptions {
        bundle: BundleSource::Secret {
            value_from: "/defender/install-bundle".into(),
        },
        ..ProtectOptions::default()
    };
    let out = protect(&input, &secret).expect("protected");
    assert!(
        !warned(&out.warnings, "no install bundle"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn arm64_tasks_warn_when_the_defender_image_lacks_arm64() {
    let input = case("arm64.json");
    let plan = plan_resolution(&input, &ProtectOptions::default()).expect("plan");
    assert_eq!(plan.platform, platform("arm64"));
    let amd64_only = ProtectOptions {
        resolved_images: ResolvedImages {
            configs: BTreeMap::new(),
            defender_platforms: Some(vec![platform("amd64")]),
        },
        ..ProtectOptions::default()
    };
    let out = protect(&input, &amd64_only).expect("protected");
    assert!(
        warned(
            &out.warnings,
            "is published for linux/amd64 only, not for this task's linux/arm64"
        ),
        "{:?}",
        out.warnings
    );
    assert!(out.task_definition.get("pidMode").is_none());
    let multi = ProtectOptions {
        resolved_images: ResolvedImages {
            configs: BTreeMap::new(),
            defender_platforms: Some(vec![platform("amd64"), platform("arm64")]),
        },
        ..ProtectOptions::default()
    };
    let out = protect(&input, &multi).expect("protected");
    assert!(
        !warned(&out.warnings, "published for"),
        "{:?}",
        out.warnings
    );
    assert_eq!(
        sidecar(&out.task_definition)["image"],
        DEFAULT_DEFENDER_IMAGE
    );
}

#[test]
fn windows_without_runtime_platform_is_refused_in_both_modes() {
    let input = case("windows-ec2-no-runtime-platform.json");
    for mode in [Mode::Embedded, Mode::Sidecar] {
        let opts = ProtectOptions {
            mode,
            ..ProtectOptions::default()
        };
        let err = protect(&input, &opts).expect_err("refused");
        assert!(
            matches!(&err, ProtectError::WindowsDetected { container, .. } if container == "iis"),
            "{err:?}"
        );
        assert!(err.to_string().contains("Linux tasks only"), "{err}");
    }
    // Each kind of evidence on its own is enough.
    let linux = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "app:1", "entryPoint": ["/app"]}]});
    for (key, value) in [
        ("entryPoint", json!(["powershell.exe", "-Command"])),
        ("command", json!(["C:\\app\\run.exe"])),
        (
            "image",
            json!("mcr.microsoft.com/windows/nanoserver:ltsc2022"),
        ),
        ("workingDirectory", json!("C:\\app")),
    ] {
        let mut task = linux.clone();
        task["containerDefinitions"][0][key] = value;
        let result = protect(&task.to_string(), &ProtectOptions::default());
        assert!(
            matches!(result, Err(ProtectError::WindowsDetected { .. })),
            "{key}: {result:?}"
        );
    }
    assert!(protect(&linux.to_string(), &ProtectOptions::default()).is_ok());
}

/// A Windows entry point stated with `--entrypoint` is refused on the first protection, not
/// only when the protected output (which carries it wrapped) is protected again.
#[test]
fn a_stated_windows_entry_point_is_refused_at_once_and_the_same_way_again() {
    let task = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "app:1", "command": ["run"]}]});
    let opts = ProtectOptions {
        entrypoints: [("a".to_owned(), vec!["C:\\app\\run.exe".to_owned()])].into(),
        ..ProtectOptions::default()
    };
    let err = protect(&task.to_string(), &opts).expect_err("refused");
    assert!(
        matches!(&err, ProtectError::WindowsDetected { container, .. } if container == "a"),
        "{err:?}"
    );
    // The same override on a Linux path protects, and protecting the output again is a no-op.
    let opts = ProtectOptions {
        entrypoints: [("a".to_owned(), vec!["/app/run".to_owned()])].into(),
        ..ProtectOptions::default()
    };
    let out = protect(&task.to_string(), &opts).expect("protected");
    let again = protect(&out.task_definition.to_string(), &opts).expect("protected again");
    assert_eq!(again.task_definition, out.task_definition);
}

#[test]
fn app_mesh_lets_the_defender_reach_the_console_directly() {
    let input = case("app-mesh.json");
    let opts = ProtectOptions {
        console_addr: Some("console.example.com:8084".into()),
        ..ProtectOptions::default()
    };
    let out = protect(&input, &opts).expect("protected");
    assert_valid(&out.task_definition, "app mesh");
    let props = out.task_definition["proxyConfiguration"]["properties"]
        .as_array()
        .expect("properties");
    assert!(props.contains(&json!({"name": "EgressIgnoredPorts", "value": "8084"})));
    assert!(
        props.contains(
            &json!({"name": "EgressIgnoredIPs", "value": "169.254.170.2,169.254.169.254"})
        )
    );
    assert!(
        warned(&out.warnings, "EgressIgnoredPorts"),
        "{:?}",
        out.warnings
    );
    // Idempotent: the port is not added twice.
    let again = protect(&out.task_definition.to_string(), &opts).expect("again");
    assert_eq!(again.task_definition, out.task_definition);
    // An existing list is extended.
    let mut listed = case_json("app-mesh.json");
    listed["proxyConfiguration"]["properties"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "EgressIgnoredPorts", "value": "22"}));
    let out = protect(&listed.to_string(), &opts).expect("protected");
    let props = out.task_definition["proxyConfiguration"]["properties"]
        .as_array()
        .expect("properties");
    assert!(props.contains(&json!({"name": "EgressIgnoredPorts", "value": "22,8084"})));
    // Several Console replicas: each port once.
    let replicas = ProtectOptions {
        console_addr: Some("a.example.com:8084,b.example.com:9443,c.example.com:8084".into()),
        ..ProtectOptions::default()
    };
    let out = protect(&listed.to_string(), &replicas).expect("protected");
    let props = out.task_definition["proxyConfiguration"]["properties"]
        .as_array()
        .expect("properties");
    assert!(props.contains(&json!({"name": "EgressIgnoredPorts", "value": "22,8084,9443"})));
    assert!(
        warned(&out.warnings, "ports 8084, 9443"),
        "{:?}",
        out.warnings
    );
    // Without a Console address the operator is told to add the port.
    let out = protect(&input, &ProtectOptions::default()).expect("protected");
    assert!(
        warned(&out.warnings, "give the Console address"),
        "{:?}",
        out.warnings
    );
}

#[test]
fn drop_all_capabilities_keeps_sys_ptrace_working_and_says_so() {
    let input = case("drop-all-capabilities.json");
    let out = protect(&input, &ProtectOptions::default()).expect("protected");
    assert_valid(&out.task_definition, "drop all");
    let app = &containers(&out.task_definition)[0];
    assert_eq!(
        app["linuxParameters"]["capabilities"],
        json!({"add": ["SYS_PTRACE"], "drop": ["ALL"]})
    );
    assert!(
        warned(
            &out.warnings,
            "container \"app\" drops ALL capabilities and now adds SYS_PTRACE"
        ),
        "{:?}",
        out.warnings
    );
    // Sidecar mode leaves the container alone, so nothing to say about it.
    let sidecar_mode = ProtectOptions {
        mode: Mode::Sidecar,
        ..ProtectOptions::default()
    };
    let out = protect(&input, &sidecar_mode).expect("protected");
    assert!(!warned(&out.warnings, "drops ALL"), "{:?}", out.warnings);
}

#[test]
fn every_case_is_covered_by_a_test_here() {
    let dir = format!("{}/tests/cases", env!("CARGO_MANIFEST_DIR"));
    let source = include_str!("protect_cases.rs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10, "{names:?}");
    for name in names {
        assert!(
            source.contains(&format!("case(\"{name}\")"))
                || source.contains(&format!("case_json(\"{name}\")")),
            "{name} has no test"
        );
    }
}
