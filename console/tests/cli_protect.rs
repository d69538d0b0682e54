//! `defender-console fargate protect`, run as the real binary: JSON on stdout only on success,
//! warnings and errors on stderr, non-zero exit status on any error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use defender_console::bundle::InstallBundle;
use defender_console::store::TokenKind;
use defender_taskdef::{DEFAULT_DEFENDER_IMAGE, MAX_INPUT_BYTES};
use serde_json::Value;

/// Environment variables of `fargate protect`; cleared so the caller's shell cannot leak in.
const ENV_VARS: [&str; 10] = [
    "DEFENDER_WAAS_TARGET",
    "CONSOLE_ADDR",
    "DEFENDER_IMAGE",
    "INSTALL_BUNDLE",
    "INSTALL_BUNDLE_SECRET",
    "DEFENDER_NEW_BUNDLE",
    "CONSOLE_DATA_DIR",
    "DEFENDER_MODE",
    "DEFENDER_SIDECAR_NAME",
    "DEFENDER_ENTRYPOINTS",
];

const XRAY_OVERRIDES: [&str; 4] = [
    "--entrypoint",
    r#"log_router=[]"#,
    "--entrypoint",
    r#"xray=["/xray", "-t", "0.0.0.0:2000", "-b", "0.0.0.0:2000"]"#,
];

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../taskdef/tests/data")
        .join(file)
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_defender-console"));
    cmd.args(["fargate", "protect"]).args(args);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd
}

fn run(args: &[&str]) -> Output {
    command(args)
        .stdin(Stdio::null())
        .output()
        .expect("run defender-console")
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn defender-console");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // Written from another thread: the child may exit before reading all of it.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for defender-console");
    writer.join().expect("stdin writer");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns the protected task definition from stdout.
fn protected(out: &Output) -> Value {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    let text = std::str::from_utf8(&out.stdout).expect("stdout is UTF-8");
    assert!(text.ends_with("}\n"), "pretty JSON with a trailing newline");
    assert!(
        text.contains("\n  \"containerDefinitions\""),
        "pretty-printed"
    );
    serde_json::from_str(text).expect("stdout is JSON")
}

/// Asserts failure with nothing on stdout and returns stderr.
fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on error, got {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr(out)
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name:?} in {task}"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["environment"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn describe_task_definition_output_is_protected() {
    let path = data("nginx.json");
    let out = run(&[
        "--console-addr",
        "console.internal:8084",
        path.to_str().unwrap(),
    ]);
    let task = protected(&out);
    assert!(task.get("taskDefinitionArn").is_none());
    assert!(task.get("revision").is_none());
    assert!(
        task.get("taskDefinition").is_none(),
        "unwrapped from the response"
    );
    assert_eq!(task["family"], "web-nginx");
    let names: Vec<&str> = task["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["nginx", "defender"]);
    let sidecar = container(&task, "defender");
    assert_eq!(sidecar["image"], DEFAULT_DEFENDER_IMAGE);
    assert_eq!(sidecar["essential"], false);
    assert_eq!(
        env_value(sidecar, "DEFENDER_CONSOLE_ADDR"),
        Some("console.internal:8084")
    );
    let nginx = container(&task, "nginx");
    let entry: Vec<&str> = nginx["entryPoint"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(entry.last(), Some(&"/docker-entrypoint.sh"));
    assert!(entry[0].starts_with("/var/lib/defender/"), "{entry:?}");
    assert_eq!(
        nginx["command"],
        serde_json::json!(["nginx", "-g", "daemon off;"])
    );
    // No bundle option: the only warning says so.
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("no install bundle"), "{err}");
}

#[test]
fn containers_without_entry_point_are_refused_then_protected_with_overrides() {
    let path = data("java-firelens-xray.json");
    let path = path.to_str().unwrap();

    let err = failed(&run(&[path]));
    assert!(err.contains("\"log_router\""), "{err}");
    assert!(err.contains("\"xray\""), "{err}");
    assert!(err.contains("--entrypoint"), "{err}");
    assert!(
        err.contains("java-firelens-xray.json"),
        "names the input: {err}"
    );

    // An override without a command would drop the image's CMD: refused, never silently.
    let mut args: Vec<&str> = XRAY_OVERRIDES.to_vec();
    args.push(path);
    let err = failed(&run(&args));
    assert!(
        err.contains("\"log_router\"") && err.contains("CMD") && err.contains("--resolve-images"),
        "{err}"
    );

    // With the image's CMD stated as log_router's command, the overrides are enough.
    let dir = tempfile::tempdir().unwrap();
    let mut described: Value =
        serde_json::from_str(&std::fs::read_to_string(data("java-firelens-xray.json")).unwrap())
            .unwrap();
    for c in described["taskDefinition"]["containerDefinitions"]
        .as_array_mut()
        .unwrap()
    {
        if c["name"] == "log_router" {
            c["command"] = serde_json::json!(["/entrypoint.sh"]);
        }
    }
    let with_cmd = dir.path().join("with-cmd.json");
    std::fs::write(&with_cmd, described.to_string()).unwrap();
    let path = with_cmd.to_str().unwrap();
    let mut args: Vec<&str> = XRAY_OVERRIDES.to_vec();
    args.push(path);
    let out = run(&args);
    let task = protected(&out);
    let xray = container(&task, "xray");
    assert_eq!(
        xray["entryPoint"],
        serde_json::json!([
            "/var/lib/defender/defender",
            "fargate",
            "entrypoint",
            "--",
            "/xray",
            "-t",
            "0.0.0.0:2000",
            "-b",
            "0.0.0.0:2000"
        ])
    );
    assert_eq!(
        xray["command"],
        serde_json::json!(["-o", "-n", "us-east-1"])
    );
    assert_eq!(
        container(&task, "log_router")["command"],
        serde_json::json!(["/entrypoint.sh"])
    );
    // The library's warnings reach stderr, not stdout.
    let err = stderr(&out);
    assert!(
        err.contains("warning: container \"defender\": the Defender sidecar has no install bundle"),
        "{err}"
    );

    // The same overrides from the environment, one per line.
    let out = command(&[path])
        .env(
            "DEFENDER_ENTRYPOINTS",
            format!("{}\n{}\n", XRAY_OVERRIDES[1], XRAY_OVERRIDES[3]),
        )
        .output()
        .unwrap();
    assert_eq!(protected(&out), task);

    // Sidecar mode needs no overrides.
    let out = run(&["--mode", "sidecar", "--sidecar-name", "tw", path]);
    let task = protected(&out);
    assert_eq!(task["pidMode"], "task");
    assert!(container(&task, "xray").get("entryPoint").is_none());
    assert_eq!(
        env_value(container(&task, "tw"), "DEFENDER_MODE"),
        Some("sidecar")
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let input = std::fs::read(data("nginx.json")).unwrap();
    let from_stdin = protected(&run_with_stdin(&["-"], &input));
    let from_file = protected(&run(&[data("nginx.json").to_str().unwrap()]));
    assert_eq!(from_stdin, from_file);
    assert_eq!(container(&from_stdin, "defender")["essential"], false);
}

#[test]
fn bad_input_prints_nothing_on_stdout() {
    let err = failed(&run_with_stdin(&["-"], b"{\"family\": \"x\", oops}"));
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(err.contains("stdin"), "{err}");

    let err = failed(&run_with_stdin(&["-"], b"family: x\n"));
    assert!(err.contains("not valid JSON"), "{err}");

    let err = failed(&run(&["/no/such/task-definition.json"]));
    assert!(err.contains("/no/such/task-definition.json"), "{err}");

    let err = failed(&run_with_stdin(&["-"], b"\xff\xfe{}"));
    assert!(err.contains("UTF-8"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let mut text = String::from("{\"family\":\"");
    text.push_str(&"x".repeat(MAX_INPUT_BYTES));
    text.push_str("\"}");
    std::fs::write(&big, text).unwrap();
    let err = failed(&run(&[big.to_str().unwrap()]));
    assert!(err.contains("1 MiB"), "{err}");

    let err = failed(&run(&[
        "--entrypoint",
        "nginx=/docker-entrypoint.sh",
        data("nginx.json").to_str().unwrap(),
    ]));
    assert!(err.contains("JSON array"), "{err}");

    let err = failed(&run(&[
        "--bundle-secret",
        "arn:aws:s3:::bucket/bundle",
        data("nginx.json").to_str().unwrap(),
    ]));
    assert!(err.contains("install bundle secret"), "{err}");
}

#[test]
fn bundle_options_reach_the_sidecar_and_exclude_each_other() {
    let nginx = data("nginx.json");
    let nginx = nginx.to_str().unwrap();

    let task = protected(&run(&["--install-bundle", "QkFTRTY0", nginx]));
    assert_eq!(
        env_value(container(&task, "defender"), "INSTALL_BUNDLE"),
        Some("QkFTRTY0")
    );

    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:defender/bundle-AbCdEf";
    let task = protected(&run(&["--bundle-secret", arn, nginx]));
    assert_eq!(
        container(&task, "defender")["secrets"],
        serde_json::json!([{"name": "INSTALL_BUNDLE", "valueFrom": arn}])
    );

    let out = run(&[
        "--install-bundle",
        "QkFTRTY0",
        "--bundle-secret",
        arn,
        nginx,
    ]);
    let err = failed(&out);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("cannot be used with"), "{err}");

    // From the environment too.
    let out = command(&["--bundle-secret", arn, nginx])
        .env("INSTALL_BUNDLE", "QkFTRTY0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", failed(&out));

    let out = run(&["--new-bundle", nginx]);
    let err = failed(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--console-addr"), "{err}");
}

#[tokio::test]
async fn new_bundle_creates_a_token_the_console_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let nginx = data("nginx.json");
    let nginx = nginx.to_str().unwrap();

    // No Console in that directory yet: refused, rather than a bundle of a brand-new CA.
    let err = failed(&run(&[
        "--new-bundle",
        "--console-addr",
        "console.internal:8084",
        "--data-dir",
        data_dir,
        nginx,
    ]));
    assert!(err.contains("ca.pem"), "{err}");

    let (store, ca) = defender_console::server::open_data_dir(dir.path(), None)
        .await
        .unwrap();

    let err = failed(&run(&[
        "--new-bundle",
        "--console-addr",
        "console.internal",
        "--data-dir",
        data_dir,
        nginx,
    ]));
    assert!(err.contains("host:port"), "{err}");

    let out = run(&[
        "--new-bundle",
        "--console-addr",
        "console.internal:8084",
        "--data-dir",
        data_dir,
        nginx,
    ]);
    let task = protected(&out);
    let b64 = env_value(container(&task, "defender"), "INSTALL_BUNDLE").expect("INSTALL_BUNDLE");
    let bundle: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(bundle.console_addr, "console.internal:8084");
    assert!(
        bundle.console_addrs.is_empty(),
        "one address: the old shape"
    );
    assert_eq!(bundle.ca_pem, ca.cert_pem());
    assert!(
        store
            .check_token(TokenKind::Enrollment, &bundle.token)
            .await
            .unwrap()
            .is_some()
    );

    // Console replicas: every address goes into the bundle, the first also as console_addr.
    let err = failed(&run(&[
        "--new-bundle",
        "--console-addr",
        "a.internal:8084,b.internal",
        "--data-dir",
        data_dir,
        nginx,
    ]));
    assert!(err.contains("\"b.internal\" has no port"), "{err}");
    let out = run(&[
        "--new-bundle",
        "--console-addr",
        "a.internal:8084,b.internal:8084",
        "--data-dir",
        data_dir,
        nginx,
    ]);
    let task = protected(&out);
    let defender = container(&task, "defender");
    assert_eq!(
        env_value(defender, "DEFENDER_CONSOLE_ADDR"),
        Some("a.internal:8084,b.internal:8084")
    );
    let b64 = env_value(defender, "INSTALL_BUNDLE").expect("INSTALL_BUNDLE");
    let bundle: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(bundle.console_addr, "a.internal:8084");
    assert_eq!(bundle.console_addrs, ["a.internal:8084", "b.internal:8084"]);
}

#[test]
fn waas_moves_the_exposed_port_to_the_sidecar_and_says_what_to_change() {
    let file = data("nginx.json");
    let out = run(&["--waas", "nginx:80", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let containers = task["containerDefinitions"].as_array().unwrap();
    let app = containers.iter().find(|c| c["name"] == "nginx").unwrap();
    let side = containers.iter().find(|c| c["name"] == "defender").unwrap();
    assert!(app.get("portMappings").is_none(), "{app}");
    assert_eq!(side["portMappings"][0]["containerPort"], 80);
    assert_eq!(side["portMappings"][0]["name"], "nginx-80-tcp");
    let env = side["environment"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "DEFENDER_WAAS" && e["value"] == "0.0.0.0:80=127.0.0.1:10080"),
        "{env:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("change containerName from \"nginx\" to \"defender\""),
        "{stderr}"
    );
    assert!(stderr.contains("must now listen on port 10080"), "{stderr}");
    // A port the container does not map is refused, with nothing on stdout.
    let out = run(&["--waas", "nginx:8080", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("maps no containerPort 8080"));
}
