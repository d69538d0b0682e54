//! Robustness and reference properties: mutated or arbitrary documents never panic, whatever
//! validates compiles and evaluates, and wildcard and CIDR matching agree with naive models.

use std::net::Ipv4Addr;

use defender_policy::{CompiledPolicy, EventContext, PolicyError, RuntimePolicy, Scope};
use defender_proto::v1::{
    Direction, Event, NetworkConnection, NetworkListen, ProcessStart, Protocol, event::Kind,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value, json};

/// A document using every field, the seed of the mutations.
const SEED: &str = r#"{"rules":[{"name":"web","collection":{"families":["web-*"],"containers":["a?p"],"images":["*"],"clusters":[]},
"processes":{"effect":"prevent","allowed":["node"],"denied":["nc","/tmp/*"],"modified_binary":"alert","crypto_miners":"prevent","shell_from_non_shell":"alert"},
"network":{"effect":"alert","allowed_listening_ports":[8080,"9000-9100"],"denied_listening_ports":[22],"denied_outbound_ports":[25],"denied_outbound_ips":["10.0.0.0/8","::ffff:1.2.3.4"]}},
{"name":"rest"}]}"#;

/// Keys and values that reach deep into the policy's shape.
const KEYS: &[&str] = &[
    "rules",
    "name",
    "collection",
    "families",
    "containers",
    "images",
    "clusters",
    "processes",
    "network",
    "effect",
    "allowed",
    "denied",
    "modified_binary",
    "crypto_miners",
    "shell_from_non_shell",
    "allowed_listening_ports",
    "denied_listening_ports",
    "denied_outbound_ports",
    "denied_outbound_ips",
    "bogus",
];
const STRINGS: &[&str] = &[
    "",
    "alert",
    "prevent",
    "disable",
    "web-*",
    "*",
    "?",
    "nc",
    "/tmp/*",
    "/usr/bin/",
    "[x]",
    "10.0.0.0/8",
    "::/0",
    "1.2.3.4/33",
    "80",
    "1-2",
    "9-1",
    "0",
    "70000",
    " x",
    "a\u{0}b",
];

/// Events touching every check.
fn events() -> Vec<Event> {
    let kinds = vec![
        Kind::ProcessStart(ProcessStart {
            pid: 9,
            ppid: 1,
            exe: b"/usr/bin/nc".to_vec(),
            argv: vec![b"nc".to_vec(), b"-o".to_vec(), b"pool:3333".to_vec()],
            ..Default::default()
        }),
        Kind::ProcessStart(ProcessStart {
            pid: 10,
            exe: b"/bin/sh".to_vec(),
            argv: vec![b"sh".to_vec(), b"\xff\xfe".to_vec()],
            ..Default::default()
        }),
        Kind::NetworkListen(NetworkListen {
            protocol: Protocol::Tcp as i32,
            local_addr: "::".into(),
            local_port: 22,
            pid: 11,
            closed: false,
            ..Default::default()
        }),
        Kind::NetworkConnection(NetworkConnection {
            protocol: Protocol::Tcp as i32,
            direction: Direction::Outbound as i32,
            remote_addr: "::ffff:10.1.1.1".into(),
            remote_port: 25,
            pid: 12,
            ..Default::default()
        }),
    ];
    kinds
        .into_iter()
        .map(|k| Event {
            kind: Some(k),
            ..Default::default()
        })
        .collect()
}

/// Parses; when valid, compiles and evaluates every sample event; never panics.
fn exercise(json: &str) {
    match RuntimePolicy::parse(json) {
        Ok(p) => {
            if p.validate().is_ok() {
                let c = p.compile();
                let scope = Scope {
                    family: "web-api",
                    container: "app",
                    image: "x",
                    cluster: "",
                };
                let ctx = EventContext {
                    binary_changed: true,
                    parent_exe: Some(b"/usr/bin/python3"),
                };
                for e in events() {
                    for v in c.evaluate(&scope, &e, &ctx) {
                        assert_ne!(v.effect, defender_policy::Effect::Disable);
                        assert!(v.kill_pid.is_none_or(|pid| pid > 1));
                    }
                }
                // Valid policies survive a serialization round trip.
                let again = serde_json::to_string(&p).unwrap();
                assert_eq!(RuntimePolicy::parse(&again).unwrap(), p);
            }
        }
        Err(PolicyError::Json { message, .. }) => assert!(!message.is_empty()),
        Err(e) => panic!("unexpected error kind {e:?}"),
    }
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = select(b"{}[]\",:0123456789-/*?ab \\\n\xff".to_vec());
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(Number::from(n))),
        (0u64..70000).prop_map(|n| Value::Number(Number::from(n))),
        select(STRINGS).prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(select(KEYS), inner, 0..6).prop_map(|m| {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// Naive recursive reference for `*` / `?` over ASCII.
fn naive_glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| naive_glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && naive_glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && naive_glob(rest, &s[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_documents_never_panic(edits in vec(edit(), 1..8)) {
        let mut doc = SEED.as_bytes().to_vec();
        for e in edits {
            let n = doc.len();
            match e {
                Edit::Delete(i) if n > 0 => { doc.remove(i % n); }
                Edit::Insert(i, b) => doc.insert(i % (n + 1), b),
                Edit::Replace(i, b) if n > 0 => doc[i % n] = b,
                Edit::Truncate(i) => doc.truncate(i % (n + 1)),
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&doc);
        exercise(&text);
    }

    #[test]
    fn arbitrary_documents_never_panic(rules in vec(value(), 0..4), wrap in any::<bool>()) {
        let doc = if wrap { json!({"rules": rules}) } else { Value::Array(rules) };
        exercise(&doc.to_string());
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        exercise(&text);
    }

    #[test]
    fn collection_globs_agree_with_reference(pattern in "[ab*?]{1,8}", family in "[ab]{0,8}") {
        let doc = json!({"rules": [{"name": "r", "collection": {"families": [pattern]}}]});
        let c = CompiledPolicy::from_json(&doc.to_string()).unwrap();
        let scope = Scope { family: &family, ..Scope::default() };
        prop_assert_eq!(
            c.matching_rule(&scope).is_some(),
            naive_glob(pattern.as_bytes(), family.as_bytes())
        );
    }

    #[test]
    fn cidr_blocks_agree_with_reference(net in any::<u32>(), prefix in 0u8..=32, addr in any::<u32>(), mapped in any::<bool>()) {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
        let block = format!("{}/{prefix}", Ipv4Addr::from(net & mask));
        let doc = json!({"rules": [{"name": "r", "network": {"effect": "alert", "denied_outbound_ips": [block]}}]});
        let c = CompiledPolicy::from_json(&doc.to_string()).unwrap();
        let a = Ipv4Addr::from(addr);
        let remote = if mapped { a.to_ipv6_mapped().to_string() } else { a.to_string() };
        let e = Event {
            kind: Some(Kind::NetworkConnection(NetworkConnection {
                protocol: Protocol::Tcp as i32,
                direction: Direction::Outbound as i32,
                remote_addr: remote,
                remote_port: 443,
                pid: 5,
                ..Default::default()
            })),
            ..Default::default()
        };
        let hit = !c.evaluate(&Scope::default(), &e, &EventContext::default()).is_empty();
        prop_assert_eq!(hit, addr & mask == net & mask);
    }
}
