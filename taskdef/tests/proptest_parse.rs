//! Robustness: arbitrary text, bytes and JSON never make `protect` panic, and whatever it
//! accepts comes out as a valid, idempotent RegisterTaskDefinition input.

mod common;

use common::*;
use defender_taskdef::{Mode, ProtectOptions, protect};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value, json};

/// Keys that matter to the parser, cleaner and protector, mixed into random objects.
const KEYS: &[&str] = &[
    "family",
    "containerDefinitions",
    "taskDefinition",
    "tags",
    "name",
    "image",
    "entryPoint",
    "command",
    "environment",
    "secrets",
    "volumesFrom",
    "dependsOn",
    "linuxParameters",
    "capabilities",
    "add",
    "drop",
    "logConfiguration",
    "logDriver",
    "options",
    "healthCheck",
    "runtimePlatform",
    "operatingSystemFamily",
    "requiresCompatibilities",
    "networkMode",
    "pidMode",
    "sourceContainer",
    "containerName",
    "condition",
    "value",
    "key",
    "revision",
    "status",
    "resourceRequirements",
    "sharingStrategy",
    "nvidiaMps",
    "memory",
    "cpu",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        "\\PC{0,10}".prop_map(Value::String),
        select(vec![
            "awslogs",
            "awsfirelens",
            "START",
            "SYS_PTRACE",
            "FARGATE",
            "WINDOWS_SERVER_2022_CORE",
            "/var/lib/defender/defender",
            "/var/lib/twistlock/fargate/defender",
            "TwistlockDefender",
            "defender",
            "fargate",
            "entrypoint",
            "sidecar",
            "--",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        let key = prop_oneof![3 => select(KEYS.to_vec()).prop_map(str::to_owned), 1 => "\\PC{0,8}"];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Container keys with values that are each plausible, including earlier protections' marks.
fn plausible_container_pairs() -> Vec<(&'static str, Value)> {
    vec![
        ("entryPoint", json!(["/bin/sh", "-c"])),
        ("entryPoint", json!([])),
        (
            "entryPoint",
            json!([
                "/var/lib/defender/defender",
                "fargate",
                "entrypoint",
                "--",
                "/x"
            ]),
        ),
        (
            "entryPoint",
            json!(["/var/lib/defender/defender", "fargate", "entrypoint", "--"]),
        ),
        (
            "entryPoint",
            json!([
                "/var/lib/twistlock/fargate/defender",
                "fargate",
                "entrypoint"
            ]),
        ),
        (
            "entryPoint",
            json!(["/var/lib/defender/defender", "fargate", "sidecar"]),
        ),
        ("command", json!(["run", "--flag"])),
        ("command", json!([])),
        (
            "environment",
            json!([{"name": "DEFENDER_CONTAINER_NAME", "value": "x"}]),
        ),
        (
            "environment",
            json!([{"name": "TW_IMAGE_NAME", "value": "1"}, {"name": "A", "value": ""}]),
        ),
        ("environment", json!([])),
        (
            "volumesFrom",
            json!([{"sourceContainer": "TwistlockDefender", "readOnly": false}]),
        ),
        ("volumesFrom", json!([{"sourceContainer": "defender"}])),
        (
            "dependsOn",
            json!([{"containerName": "defender", "condition": "START"}]),
        ),
        (
            "dependsOn",
            json!([{"containerName": "a", "condition": "HEALTHY"}]),
        ),
        (
            "linuxParameters",
            json!({"capabilities": {"drop": ["SYS_PTRACE"]}}),
        ),
        (
            "linuxParameters",
            json!({"initProcessEnabled": true, "capabilities": {"add": ["SYS_PTRACE"]}}),
        ),
        ("linuxParameters", Value::Null),
        (
            "logConfiguration",
            json!({"logDriver": "awslogs", "options": {"awslogs-group": "g"}}),
        ),
        ("logConfiguration", json!({"logDriver": "awsfirelens"})),
        ("logConfiguration", json!({})),
        ("healthCheck", Value::Null),
        ("essential", json!(false)),
        ("name", json!("defender")),
        ("name", json!("TwistlockDefender")),
        (
            "secrets",
            json!([{"name": "INSTALL_BUNDLE", "valueFrom": "/x"}]),
        ),
        ("cpu", json!(0)),
        ("Essential", json!(true)),
    ]
}

/// Task-level keys with plausible values.
fn plausible_task_pairs() -> Vec<(&'static str, Value)> {
    vec![
        ("pidMode", json!("task")),
        ("pidMode", json!("")),
        ("networkMode", json!("awsvpc")),
        ("requiresCompatibilities", json!(["FARGATE"])),
        (
            "runtimePlatform",
            json!({"operatingSystemFamily": "WINDOWS_SERVER_2019_CORE"}),
        ),
        ("runtimePlatform", json!({"cpuArchitecture": "ARM64"})),
        ("tags", json!([{"key": "a", "value": "b"}])),
        ("revision", json!(3)),
        ("status", json!("ACTIVE")),
        (
            "proxyConfiguration",
            json!({"containerName": "envoy", "type": "APPMESH"}),
        ),
        ("family", json!("")),
    ]
}

fn pairs_to_map(
    pairs: Vec<(&'static str, Value)>,
    extra: Option<(String, Value)>,
) -> Map<String, Value> {
    let mut m: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    if let Some((k, v)) = extra {
        m.insert(k, v);
    }
    m
}

/// Task-definition-shaped objects mixing plausible and arbitrary values, to reach deep code.
fn task_like() -> impl Strategy<Value = Value> {
    let container = (
        proptest::option::weighted(0.9, select(vec!["a", "b", "c", "web"])),
        proptest::option::weighted(0.9, select(vec!["nginx", "x:1", " "])),
        proptest::sample::subsequence(plausible_container_pairs(), 0..6),
        proptest::option::weighted(
            0.2,
            (select(KEYS.to_vec()).prop_map(str::to_owned), arb_json()),
        ),
    )
        .prop_map(|(name, image, pairs, extra)| {
            let mut m = Map::new();
            if let Some(n) = name {
                m.insert("name".into(), json!(n));
            }
            if let Some(i) = image {
                m.insert("image".into(), json!(i));
            }
            m.extend(pairs_to_map(pairs, extra));
            Value::Object(m)
        });
    (
        vec(container, 0..4),
        proptest::sample::subsequence(plausible_task_pairs(), 0..4),
        proptest::option::weighted(
            0.1,
            (select(KEYS.to_vec()).prop_map(str::to_owned), arb_json()),
        ),
        proptest::option::weighted(0.9, "[a-z]{1,6}"),
        any::<bool>(),
    )
        .prop_map(|(containers, pairs, extra, family, wrap)| {
            let mut m = Map::new();
            if let Some(f) = family {
                m.insert("family".into(), json!(f));
            }
            m.extend(pairs_to_map(pairs, extra));
            m.insert("containerDefinitions".into(), Value::Array(containers));
            if wrap {
                json!({"taskDefinition": Value::Object(m), "tags": [{"key": "k", "value": "v"}]})
            } else {
                Value::Object(m)
            }
        })
}

fn all_opts() -> [ProtectOptions; 3] {
    [
        ProtectOptions::default(),
        ProtectOptions {
            entrypoints: [
                ("a".to_owned(), vec![]),
                ("b".to_owned(), vec!["/b".to_owned()]),
            ]
            .into(),
            ..ProtectOptions::default()
        },
        ProtectOptions {
            mode: Mode::Sidecar,
            ..ProtectOptions::default()
        },
    ]
}

/// When `protect` accepts `text`, its output must be valid and a fixed point.
fn accepted_output_is_sound(text: &str) -> Result<(), TestCaseError> {
    for opts in all_opts() {
        if let Ok(p) = protect(text, &opts) {
            let errors = validate(&p.task_definition);
            // Unknown enum values are kept on purpose (newer AWS values), with a warning.
            for e in &errors {
                prop_assert!(
                    e.contains("is not a")
                        && p.warnings
                            .iter()
                            .any(|w| w.contains("is not one of the values")),
                    "accepted input gave invalid output: {e}\nwarnings: {:?}",
                    p.warnings
                );
            }
            let again = protect(&p.task_definition.to_string(), &opts).map(|q| q.task_definition);
            prop_assert_eq!(
                again.as_ref().ok(),
                Some(&p.task_definition),
                "not idempotent"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        accepted_output_is_sound(&text)?;
    }

    #[test]
    fn arbitrary_bytes_as_str_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        accepted_output_is_sound(&text)?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        accepted_output_is_sound(&value.to_string())?;
    }

    #[test]
    fn task_shaped_json_never_panics(value in task_like()) {
        accepted_output_is_sound(&value.to_string())?;
    }

    #[test]
    fn damaged_fixtures_never_panic(
        file in select(vec!["nginx.json", "java-firelens-xray.json", "twistlock-protected.json", "unicode-quotes.json"]),
        edits in vec((any::<prop::sample::Index>(), 0..4usize, "\\PC{0,3}"), 1..4),
    ) {
        let mut text = std::fs::read_to_string(data_path(file)).expect("fixture");
        for (at, remove, insert) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut end = (i + remove).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(i..end, &insert);
        }
        accepted_output_is_sound(&text)?;
    }
}

#[test]
fn deeply_nested_json_is_refused_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(protect(&deep, &ProtectOptions::default()).is_err());
    let deep_obj = format!(
        "{{\"family\": {}{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    assert!(protect(&deep_obj, &ProtectOptions::default()).is_err());
}
