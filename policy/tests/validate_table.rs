//! Parsing and validation: round trips, strictness, and one row per validation error.

use defender_policy::{
    Effect, MAX_LIST_ENTRIES, MAX_RULES, PolicyError, PortRange, Rule, RuntimePolicy,
    ValidationError,
};
use serde_json::{Value, json};

/// A full policy exercising every field.
const GOOD: &str = r#"{
  "rules": [
    {
      "name": "web: no tools, no ssh",
      "collection": { "families": ["web-*"], "containers": ["app"], "images": ["*/web:*"], "clusters": ["prod"] },
      "processes": {
        "effect": "prevent",
        "allowed": ["node", "/usr/local/bin/*"],
        "denied": ["nc", "ncat", "/tmp/*"],
        "modified_binary": "alert",
        "crypto_miners": "prevent",
        "shell_from_non_shell": "alert"
      },
      "network": {
        "effect": "alert",
        "allowed_listening_ports": [8080, "9000-9100"],
        "denied_listening_ports": [22],
        "denied_outbound_ports": [25, "6660-6669"],
        "denied_outbound_ips": ["169.254.169.254", "10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112"]
      }
    },
    { "name": "everything else" }
  ]
}"#;

#[test]
fn good_policy_round_trips() {
    let p = RuntimePolicy::parse(GOOD).unwrap();
    p.validate().unwrap();
    assert_eq!(p.rules.len(), 2);
    let r = &p.rules[0];
    assert_eq!(r.processes.effect, Effect::Prevent);
    assert_eq!(
        r.network.allowed_listening_ports[1],
        PortRange::new(9000, 9100)
    );
    let json = serde_json::to_string_pretty(&p).unwrap();
    let again = RuntimePolicy::parse(&json).unwrap();
    assert_eq!(again, p);
    // Serialized keys are snake_case and every field is written out.
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["rules"][0]["network"]["denied_outbound_ports"],
        json!([25, "6660-6669"])
    );
    assert_eq!(
        v["rules"][1]["processes"]["shell_from_non_shell"],
        json!("disable")
    );
}

#[test]
fn camel_case_keys_of_earlier_versions_still_parse() {
    // Stored versions and Defenders' cached policies were written with camelCase keys.
    let old = r#"{"rules": [{"name": "old",
        "processes": {"modifiedBinary": "alert", "cryptoMiners": "prevent", "shellFromNonShell": "alert"},
        "network": {"allowedListeningPorts": [8080], "deniedListeningPorts": [22],
                    "deniedOutboundPorts": [25], "deniedOutboundIps": ["10.0.0.0/8"]}}]}"#;
    let p = RuntimePolicy::parse(old).unwrap();
    let r = &p.rules[0];
    assert_eq!(r.processes.crypto_miners, Effect::Prevent);
    assert_eq!(
        r.network.denied_listening_ports,
        vec![PortRange::single(22)]
    );
    assert_eq!(r.network.denied_outbound_ips, vec!["10.0.0.0/8".to_owned()]);
    // Written back in snake_case only.
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"denied_outbound_ips\"") && !json.contains("deniedOutboundIps"));
}

#[test]
fn default_policy_is_valid_and_round_trips() {
    let p = RuntimePolicy::default_policy();
    p.validate().unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(RuntimePolicy::parse(&json).unwrap(), p);
}

/// Parses `json`, expecting a JSON error; returns (path, message, line, column, display).
fn json_error(json: &str) -> (String, String, usize, usize, String) {
    match RuntimePolicy::parse(json) {
        Err(e @ PolicyError::Json { .. }) => {
            let shown = e.to_string();
            let PolicyError::Json {
                path,
                message,
                line,
                column,
            } = e
            else {
                unreachable!()
            };
            (path, message, line, column, shown)
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[test]
fn unknown_field_is_rejected_with_path_and_position() {
    let json = "{\"rules\": [\n  {\"name\": \"a\",\n   \"processes\": {\"denyed\": [\"nc\"]}}\n]}";
    let (path, message, line, column, shown) = json_error(json);
    assert_eq!(path, "rules[0].processes.denyed");
    assert!(message.contains("unknown field `denyed`"), "{message}");
    assert!(
        message.contains("`denied`"),
        "lists the expected fields: {message}"
    );
    assert_eq!(line, 3);
    assert!(column > 0);
    assert!(
        shown.starts_with("rules[0].processes.denyed: unknown field"),
        "{shown}"
    );
    assert!(
        shown.ends_with(&format!("(line 3, column {column})")),
        "{shown}"
    );
}

#[test]
fn parse_errors_name_their_place() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"rules": [{"name": "a", "processes": {"effect": "block"}}]}"#,
            "rules[0].processes.effect",
            "unknown variant `block`",
        ),
        (
            r#"{"rules": [{"name": "a", "network": {"denied_listening_ports": ["ssh"]}}]}"#,
            "rules[0].network.denied_listening_ports[0]",
            "is not a port number or a range",
        ),
        (
            r#"{"rules": [{"name": "a", "network": {"denied_outbound_ports": [-1]}}]}"#,
            "rules[0].network.denied_outbound_ports[0]",
            "out of range",
        ),
        (
            r#"{"rules": [{"collection": {}}]}"#,
            "rules[0]",
            "missing field `name`",
        ),
        (r#"{}"#, "", "missing field `rules`"),
        (
            r#"{"rules": [], "extra": 1}"#,
            "extra",
            "unknown field `extra`",
        ),
        (
            r#"{"rules": [{"name": 5}]}"#,
            "rules[0].name",
            "invalid type",
        ),
        (r#"{"rules": []} trailing"#, "", "trailing characters"),
        (r#"{"rules": [}"#, "rules[0]", "expected value"),
    ];
    for (json, want_path, want_msg) in cases {
        let (path, message, _, _, _) = json_error(json);
        assert_eq!(&path, want_path, "{json}");
        assert!(message.contains(want_msg), "{json}: {message}");
    }
}

#[test]
fn oversized_document_is_refused_before_parsing() {
    let big = format!(
        "{{\"rules\": [], \"x\": \"{}\"}}",
        "a".repeat(defender_policy::MAX_POLICY_BYTES)
    );
    assert!(matches!(
        RuntimePolicy::parse(&big),
        Err(PolicyError::TooLarge { .. })
    ));
}

/// A policy of one rule named "r" with `patch` merged into it.
fn one_rule(patch: Value) -> RuntimePolicy {
    let mut rule = json!({"name": "r"});
    for (k, v) in patch.as_object().unwrap() {
        rule[k] = v.clone();
    }
    RuntimePolicy::parse(&json!({"rules": [rule]}).to_string()).unwrap()
}

/// Validation errors of `p` (which must be invalid).
fn errors(p: &RuntimePolicy) -> Vec<ValidationError> {
    p.validate().expect_err("policy should be invalid")
}

#[test]
fn each_validation_error_has_its_path_and_message() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"name": ""}), "rules[0].name", "rule name is empty"),
        (
            json!({"name": "   "}),
            "rules[0].name",
            "rule name is empty",
        ),
        (
            json!({"name": "x".repeat(101)}),
            "rules[0].name",
            "101 characters long; the limit is 100",
        ),
        (
            json!({"name": "a\nb"}),
            "rules[0].name",
            "control character",
        ),
        (json!({"name": " a"}), "rules[0].name", "whitespace"),
        (
            json!({"collection": {"families": ["web-*", ""]}}),
            "rules[0].collection.families[1]",
            "pattern is empty",
        ),
        (
            json!({"collection": {"images": ["nginx:[12]"]}}),
            "rules[0].collection.images[0]",
            "character classes",
        ),
        (
            json!({"collection": {"clusters": ["prod "]}}),
            "rules[0].collection.clusters[0]",
            "whitespace",
        ),
        (
            json!({"collection": {"containers": ["a\\*"]}}),
            "rules[0].collection.containers[0]",
            "backslash",
        ),
        (
            json!({"processes": {"denied": ["nc", "/usr/bin/"]}}),
            "rules[0].processes.denied[1]",
            "write \"/usr/bin/*\"",
        ),
        (
            json!({"processes": {"allowed": ["x\u{7}"]}}),
            "rules[0].processes.allowed[0]",
            "control character",
        ),
        (
            json!({"processes": {"allowed": ["node", "nc"], "denied": ["nc"]}}),
            "rules[0].processes.denied[0]",
            "also in rules[0].processes.allowed[1]",
        ),
        (
            json!({"processes": {"shell_from_non_shell": "prevent"}}),
            "rules[0].processes.shell_from_non_shell",
            "\"prevent\" is not supported here",
        ),
        (
            json!({"network": {"denied_listening_ports": [70000]}}),
            "rules[0].network.denied_listening_ports[0]",
            "port 70000 is out of range 1-65535",
        ),
        (
            json!({"network": {"allowed_listening_ports": [0]}}),
            "rules[0].network.allowed_listening_ports[0]",
            "port 0 is out of range",
        ),
        (
            json!({"network": {"denied_outbound_ports": [25, "9000-8000"]}}),
            "rules[0].network.denied_outbound_ports[1]",
            "range 9000-8000 is reversed; write 8000-9000",
        ),
        (
            json!({"network": {"denied_outbound_ports": ["1-65536"]}}),
            "rules[0].network.denied_outbound_ports[0]",
            "port 65536 is out of range",
        ),
        (
            json!({"network": {"allowed_listening_ports": ["8000-8100"], "denied_listening_ports": [22, 8080]}}),
            "rules[0].network.denied_listening_ports[1]",
            "port 8080 overlaps rules[0].network.allowed_listening_ports[0] (8000-8100)",
        ),
        (
            json!({"network": {"denied_outbound_ips": ["10.0.0.0/8", "10.0.0.300"]}}),
            "rules[0].network.denied_outbound_ips[1]",
            "is not valid: expected an IP address or CIDR",
        ),
        (
            json!({"network": {"denied_outbound_ips": ["10.1.0.0/8"]}}),
            "rules[0].network.denied_outbound_ips[0]",
            "did you mean 10.0.0.0/8?",
        ),
        (
            json!({"network": {"denied_outbound_ips": ["2001:db8::/129"]}}),
            "rules[0].network.denied_outbound_ips[0]",
            "prefix length /129 is longer than 128 bits",
        ),
        (
            json!({"network": {"denied_outbound_ips": ["10.0.0.0/x"]}}),
            "rules[0].network.denied_outbound_ips[0]",
            "invalid prefix length",
        ),
    ];
    for (patch, want_path, want_msg) in cases {
        let errs = errors(&one_rule(patch.clone()));
        assert_eq!(errs.len(), 1, "{patch}: {errs:?}");
        assert_eq!(errs[0].path, want_path, "{patch}");
        assert!(
            errs[0].message.contains(want_msg),
            "{patch}: {}",
            errs[0].message
        );
        assert_eq!(
            errs[0].to_string(),
            format!("{}: {}", errs[0].path, errs[0].message)
        );
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let p = RuntimePolicy::parse(
        &json!({"rules": [
            {"name": "a", "network": {"denied_outbound_ips": ["nope"], "denied_listening_ports": [0]}},
            {"name": "b", "processes": {"denied": [""]}},
            {"name": "a"},
            {"name": ""}
        ]})
        .to_string(),
    )
    .unwrap();
    let errs = errors(&p);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "rules[0].network.denied_listening_ports[0]",
            "rules[0].network.denied_outbound_ips[0]",
            "rules[1].processes.denied[0]",
            "rules[2].name",
            "rules[3].name",
        ]
    );
    assert!(
        errs[3]
            .message
            .contains("duplicate rule name \"a\" (also rules[0].name)"),
        "{}",
        errs[3].message
    );
}

#[test]
fn caps_on_rules_and_list_entries() {
    let rules: Vec<Rule> = (0..=MAX_RULES)
        .map(|i| Rule {
            name: format!("r{i}"),
            collection: Default::default(),
            processes: Default::default(),
            network: Default::default(),
            dns: Default::default(),
        })
        .collect();
    let errs = errors(&RuntimePolicy { rules });
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "rules");
    assert!(
        errs[0].message.contains("257 rules; the limit is 256"),
        "{}",
        errs[0].message
    );

    let denied: Vec<String> = (0..=MAX_LIST_ENTRIES).map(|i| format!("p{i}")).collect();
    let errs = errors(&one_rule(json!({"processes": {"denied": denied}})));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "rules[0].processes.denied");
    assert!(errs[0].message.contains("1025 entries; the limit is 1024"));

    let ports: Vec<u32> = (1..=MAX_LIST_ENTRIES as u32 + 1).collect();
    let errs = errors(&one_rule(
        json!({"network": {"denied_outbound_ports": ports}}),
    ));
    assert_eq!(errs[0].path, "rules[0].network.denied_outbound_ports");
}

#[test]
fn from_json_refuses_an_invalid_policy_with_every_error() {
    let json =
        json!({"rules": [{"name": "", "network": {"denied_outbound_ips": ["x"]}}]}).to_string();
    match defender_policy::CompiledPolicy::from_json(&json) {
        Err(PolicyError::Invalid(errs)) => {
            assert_eq!(errs.len(), 2);
            let e = PolicyError::Invalid(errs).to_string();
            assert!(e.starts_with("policy is invalid: rules[0].name: rule name is empty; rules[0].network.denied_outbound_ips[0]"), "{e}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(defender_policy::CompiledPolicy::from_json(GOOD).is_ok());
}
