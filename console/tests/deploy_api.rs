//! `POST /api/v1/defenders/fargate.json`: a real Console on 127.0.0.1:0, called with reqwest.

mod db_support;
mod registry_support;
mod web_support;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use defender_console::bundle::InstallBundle;
use defender_console::store::TokenKind;
use defender_taskdef::MAX_INPUT_BYTES;
use reqwest::StatusCode;
use serde_json::{Value, json};
use web_support::Web;

const PATH: &str = "/api/v1/defenders/fargate.json";

fn data(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../taskdef/tests/data")
        .join(file);
    std::fs::read_to_string(path).expect("test data")
}

async fn post(
    web: &Web,
    token: &str,
    query: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    web.http
        .post(web.url(&format!("{PATH}{query}")))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The warnings header, parsed (it must be present and a JSON array of strings).
fn warnings(resp: &reqwest::Response) -> Vec<String> {
    let value = resp
        .headers()
        .get("x-defender-warnings")
        .expect("X-Defender-Warnings header")
        .to_str()
        .expect("ASCII header");
    serde_json::from_str(value).expect("a JSON array of strings")
}

/// Asserts 200 and returns the protected task definition and the warnings.
async fn protected(resp: reqwest::Response) -> (Value, Vec<String>) {
    let status = resp.status();
    let warnings = if status == StatusCode::OK {
        warnings(&resp)
    } else {
        Vec::new()
    };
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(
        text.ends_with("}\n"),
        "the file as is, with a trailing newline"
    );
    (serde_json::from_str(&text).expect("JSON body"), warnings)
}

/// Asserts `status` and a JSON error; returns its message.
async fn error(resp: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    assert!(resp.headers().get("x-defender-warnings").is_none());
    let body: Value = resp.json().await.expect("JSON error body");
    body["error"].as_str().expect("error message").to_owned()
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name:?}"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["environment"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

async fn enrollment_tokens(web: &Web) -> i64 {
    defender_console::with_pool!(web.console.store.pool(), |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM enrollment_tokens"
    )
    .fetch_one(p)
    .await
    .unwrap())
}

#[tokio::test]
async fn requires_an_api_token_or_a_session_with_csrf() {
    let web = Web::start().await;
    let resp = web
        .http
        .post(web.url(PATH))
        .body(data("nginx.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post(&web, "dfa_not_a_token", "", data("nginx.json")).await;
    assert!(!error(resp, StatusCode::UNAUTHORIZED).await.is_empty());

    // A browser session needs the CSRF header for a POST.
    let cookie = web.login().await;
    let with_session = |csrf: Option<String>| {
        let mut req = web
            .http
            .post(web.url(PATH))
            .header("Cookie", format!("defender_session={cookie}"))
            .body(data("nginx.json"));
        if let Some(csrf) = csrf {
            req = req.header("X-CSRF-Token", csrf);
        }
        req.send()
    };
    let resp = with_session(None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = with_session(Some(web.csrf(&cookie).await)).await.unwrap();
    let (task, _) = protected(resp).await;
    assert_eq!(container(&task, "defender")["essential"], false);
}

#[tokio::test]
async fn returns_the_protected_task_definition_itself() {
    let web = Web::start().await;
    let token = web.api_token().await;

    let resp = post(
        &web,
        &token,
        "?consoleaddr=console.internal:8084",
        data("nginx.json"),
    )
    .await;
    let (task, warnings) = protected(resp).await;
    // No bundle option: the one warning says the Defender could not enroll as is.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("no install bundle"), "{warnings:?}");
    assert!(task.get("taskDefinitionArn").is_none());
    assert!(task.get("requiresAttributes").is_none());
    assert_eq!(task["family"], "web-nginx");
    assert_eq!(
        task["tags"],
        json!([{"key": "team", "value": "frontend"}, {"key": "cost-center", "value": "cc-1234"}])
    );
    let sidecar = container(&task, "defender");
    assert_eq!(
        env_value(sidecar, "DEFENDER_CONSOLE_ADDR"),
        Some("console.internal:8084")
    );
    assert_eq!(env_value(sidecar, "INSTALL_BUNDLE"), None);
    let entry = container(&task, "nginx")["entryPoint"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(entry.last(), Some(&json!("/docker-entrypoint.sh")));
    assert_eq!(entry.first(), Some(&json!("/var/lib/defender/defender")));

    // Options in the query: image, sidecar name, mode, secret.
    let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/defender/bundle";
    let query = format!(
        "?defenderImage=registry.example/defender:9&sidecarName=tw&mode=sidecar&bundleSecret={}",
        arn.replace(':', "%3A").replace('/', "%2F")
    );
    let (task, _) = protected(post(&web, &token, &query, data("nginx.json")).await).await;
    assert_eq!(task["pidMode"], "task");
    let sidecar = container(&task, "tw");
    assert_eq!(sidecar["image"], "registry.example/defender:9");
    assert_eq!(
        sidecar["secrets"],
        json!([{"name": "INSTALL_BUNDLE", "valueFrom": arn}])
    );
    assert_eq!(
        container(&task, "nginx")["entryPoint"],
        json!(["/docker-entrypoint.sh"]),
        "sidecar mode leaves entrypoints alone"
    );
}

#[tokio::test]
async fn warnings_travel_in_a_header_and_unicode_survives() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let input = data("unicode-quotes.json");
    let original: Value = serde_json::from_str(&input).unwrap();

    let resp = post(&web, &token, "", input).await;
    let (task, warnings) = protected(resp).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("networkMode is \"bridge\"")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("FARGATE")),
        "{warnings:?}"
    );
    assert_eq!(
        container(&task, "greeter")["command"],
        original["taskDefinition"]["containerDefinitions"][0]["command"]
    );
}

#[tokio::test]
async fn install_bundle_true_embeds_a_fresh_bundle_the_console_accepts() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let grpc_port = web.console.grpc_addr.port();

    // No port: the gRPC listener's is used; localhost is in the certificate, so no warning.
    let resp = post(
        &web,
        &token,
        "?installBundle=true&consoleaddr=localhost",
        data("nginx.json"),
    )
    .await;
    let (task, warnings) = protected(resp).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let sidecar = container(&task, "defender");
    let b64 = env_value(sidecar, "INSTALL_BUNDLE").expect("INSTALL_BUNDLE in the sidecar");
    let bundle: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(bundle.console_addr, format!("localhost:{grpc_port}"));
    assert_eq!(
        env_value(sidecar, "DEFENDER_CONSOLE_ADDR"),
        Some(bundle.console_addr.as_str())
    );
    assert!(bundle.ca_pem.contains("BEGIN CERTIFICATE"));
    let store = &web.console.store;
    assert!(
        store
            .check_token(TokenKind::Enrollment, &bundle.token)
            .await
            .unwrap()
            .is_some()
    );
    let description: String = defender_console::with_pool!(store.pool(), |p| sqlx::query_scalar(
        "SELECT description FROM enrollment_tokens ORDER BY id DESC LIMIT 1"
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert!(description.contains("web-nginx"), "{description}");

    // A name the Console's certificate lacks: it works, with a warning saying what to do.
    let resp = post(
        &web,
        &token,
        "?installBundle=true&consoleaddr=console.internal:9443",
        data("nginx.json"),
    )
    .await;
    let (task, warnings) = protected(resp).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("--san console.internal")),
        "{warnings:?}"
    );
    let b64 = env_value(container(&task, "defender"), "INSTALL_BUNDLE").unwrap();
    let second: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(second.console_addr, "console.internal:9443");
    assert_ne!(second.token, bundle.token, "a new token every time");
    assert_eq!(enrollment_tokens(&web).await, 2);

    // Console replicas: a comma-separated list, the gRPC port added where missing; a warning
    // for the name the certificate lacks only.
    let resp = post(
        &web,
        &token,
        "?installBundle=true&consoleaddr=localhost,console.internal:9443",
        data("nginx.json"),
    )
    .await;
    let (task, warnings) = protected(resp).await;
    let missing: Vec<_> = warnings.iter().filter(|w| w.contains("--san")).collect();
    assert_eq!(missing.len(), 1, "{warnings:?}");
    assert!(
        missing[0].contains("--san console.internal"),
        "{warnings:?}"
    );
    let b64 = env_value(container(&task, "defender"), "INSTALL_BUNDLE").unwrap();
    let replicas: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(replicas.console_addr, format!("localhost:{grpc_port}"));
    assert_eq!(
        replicas.console_addrs,
        [
            format!("localhost:{grpc_port}"),
            "console.internal:9443".into()
        ]
    );
    assert_eq!(enrollment_tokens(&web).await, 3);
    // A bad entry is named, and costs no token.
    let msg = error(
        post(
            &web,
            &token,
            "?installBundle=true&consoleaddr=localhost,bad%20host:1",
            data("nginx.json"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("\"bad host:1\""), "{msg}");
    assert_eq!(enrollment_tokens(&web).await, 3);

    // Refusals create no token.
    let resp = post(&web, &token, "?installBundle=true", data("nginx.json")).await;
    assert!(
        error(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("Console address")
    );
    let resp = post(
        &web,
        &token,
        "?installBundle=true&consoleaddr=localhost",
        data("java-firelens-xray.json"),
    )
    .await;
    assert!(
        error(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("entryPoint")
    );
    let resp = post(
        &web,
        &token,
        "?installBundle=true&consoleaddr=localhost&bundleSecret=%2Fdefender%2Fbundle",
        data("nginx.json"),
    )
    .await;
    assert!(
        error(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("exclude each other")
    );
    assert_eq!(enrollment_tokens(&web).await, 3);
}

#[tokio::test]
async fn bad_input_is_a_400_with_the_reason() {
    let web = Web::start().await;
    let token = web.api_token().await;

    let msg = error(
        post(&web, &token, "", data("java-firelens-xray.json")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("\"log_router\", \"xray\""), "{msg}");
    assert!(msg.contains("--entrypoint"), "{msg}");

    // The same definition with its entrypoints stated (repeatable parameter): an override
    // without a command would drop the image's CMD, so it is refused ...
    let query = format!(
        "?entrypoint={}&entrypoint={}",
        urlencode(r#"log_router=[]"#),
        urlencode(r#"xray=["/xray"]"#)
    );
    let msg = error(
        post(&web, &token, &query, data("java-firelens-xray.json")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        msg.contains("\"log_router\"") && msg.contains("CMD"),
        "{msg}"
    );
    // ... and accepted once log_router states its CMD as command.
    let mut described: Value = serde_json::from_str(&data("java-firelens-xray.json")).unwrap();
    for c in described["taskDefinition"]["containerDefinitions"]
        .as_array_mut()
        .unwrap()
    {
        if c["name"] == "log_router" {
            c["command"] = json!(["/entrypoint.sh"]);
        }
    }
    let (task, warnings) = protected(post(&web, &token, &query, described.to_string()).await).await;
    assert_eq!(
        container(&task, "xray")["entryPoint"],
        json!([
            "/var/lib/defender/defender",
            "fargate",
            "entrypoint",
            "--",
            "/xray"
        ])
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("the Defender sidecar has no install bundle")),
        "{warnings:?}"
    );

    let msg = error(
        post(&web, &token, "", "{\"family\": oops").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("not valid JSON (line 1"), "{msg}");
    let msg = error(post(&web, &token, "", "").await, StatusCode::BAD_REQUEST).await;
    assert!(!msg.is_empty());
    let msg = error(
        post(&web, &token, "", vec![0xffu8, 0xfe]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("UTF-8"), "{msg}");

    for (query, needle) in [
        (
            "?consoleAddr=x:1",
            "unknown query parameter \"consoleAddr\"",
        ),
        ("?mode=both", "unknown mode"),
        ("?mode=sidecar&mode=embedded", "twice"),
        ("?installBundle=1", "installBundle"),
        ("?entrypoint=nginx%3D%2Fentry", "JSON array"),
        ("?sidecarName=nginx", "already exists"),
        (
            "?bundleSecret=arn%3Aaws%3As3%3A%3A%3Ab",
            "install bundle secret",
        ),
    ] {
        let msg = error(
            post(&web, &token, query, data("nginx.json")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(msg.contains(needle), "{query}: {msg}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_a_413() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let mut big = String::from("{\"family\":\"");
    big.push_str(&"x".repeat(MAX_INPUT_BYTES));
    big.push_str("\"}");
    let msg = error(
        post(&web, &token, "", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(msg.contains("1 MiB"), "{msg}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn resolve_images_reads_the_registry_with_credentials_from_a_header() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let (port, _log) = registry_support::start_registry().await;
    let reg = format!("127.0.0.1:{port}");
    let body = json!({"family": "api", "containerDefinitions": [
        {"name": "api", "image": format!("{reg}/private/api:2")}]})
    .to_string();
    let query = format!("?resolveImages=registry&insecureRegistry={reg}");
    let send = |auth: Option<String>| {
        let mut req = web
            .http
            .post(web.url(&format!("{PATH}{query}")))
            .bearer_auth(&token)
            .body(body.clone());
        if let Some(auth) = auth {
            req = req.header("X-Registry-Auth", auth);
        }
        req.send()
    };
    // Anonymous: the registry refuses the private repository (a 502 naming the image).
    let msg = error(send(None).await.unwrap(), StatusCode::BAD_GATEWAY).await;
    assert!(msg.contains("private/api:2"), "{msg}");
    // With credentials: the image's CMD becomes the command (no ENTRYPOINT in the image).
    let auth = STANDARD.encode(format!(
        "{}:{}",
        registry_support::USER,
        registry_support::PASSWORD
    ));
    let (task, warnings) = protected(send(Some(auth)).await.unwrap()).await;
    let api = container(&task, "api");
    assert_eq!(api["command"], json!(["/api", "serve"]));
    assert_eq!(
        api["entryPoint"],
        json!(["/var/lib/defender/defender", "fargate", "entrypoint", "--"])
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("container \"api\": ENTRYPOINT [] and CMD")),
        "{warnings:?}"
    );
    // A bad header or source is a 400.
    let msg = error(
        send(Some("not base64!".into())).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("X-Registry-Auth"), "{msg}");
    let msg = error(
        post(&web, &token, "?resolveImages=ftp", body.clone()).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("resolveImages"), "{msg}");
}

#[tokio::test]
async fn waas_puts_the_sidecar_on_the_exposed_port_and_says_what_to_change() {
    let web = Web::start().await;
    let token = web.api_token().await;

    let (task, warnings) =
        protected(post(&web, &token, "?waas=nginx:80", data("nginx.json")).await).await;
    let app = container(&task, "nginx");
    assert!(app.get("portMappings").is_none(), "{app}");
    let sidecar = container(&task, "defender");
    assert_eq!(sidecar["portMappings"][0]["containerPort"], 80);
    assert_eq!(
        env_value(sidecar, "DEFENDER_WAAS"),
        Some("0.0.0.0:80=127.0.0.1:10080")
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("change containerName from \"nginx\" to \"defender\"")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("must now listen on port 10080")),
        "{warnings:?}"
    );

    // A port the container does not map, and a malformed value, are refused with the reason.
    let msg = error(
        post(&web, &token, "?waas=nginx:8080", data("nginx.json")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("maps no containerPort 8080"), "{msg}");
    let msg = error(
        post(&web, &token, "?waas=nginx", data("nginx.json")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("APP_CONTAINER:EXPOSED_PORT"), "{msg}");
    // Without the parameter nothing moves.
    let (task, _) = protected(post(&web, &token, "", data("nginx.json")).await).await;
    assert_eq!(
        container(&task, "nginx")["portMappings"][0]["containerPort"],
        80
    );
    assert_eq!(
        env_value(container(&task, "defender"), "DEFENDER_WAAS"),
        None
    );
}
