//! Deploy > Defenders (`/deploy/defenders`): login, CSRF, generating, and escaping of what the
//! operator pasted. A real Console on 127.0.0.1:0, driven with reqwest like a browser form.

mod db_support;
mod registry_support;
mod web_support;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use defender_console::bundle::InstallBundle;
use defender_console::store::TokenKind;
use reqwest::StatusCode;
use serde_json::Value;
use web_support::{Web, location};

const PAGE: &str = "/deploy/defenders";

fn data(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../taskdef/tests/data")
        .join(file);
    std::fs::read_to_string(path).expect("test data")
}

/// A logged-in browser: session cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn login(web: &Web) -> Self {
        let cookie = web.login().await;
        let csrf = web.csrf(&cookie).await;
        Self { cookie, csrf }
    }

    /// Submits the form with `fields` (the CSRF field added unless `csrf` is `None`).
    async fn submit(
        &self,
        web: &Web,
        csrf: Option<&str>,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        web.http
            .post(web.url(PAGE))
            .header("Cookie", format!("defender_session={}", self.cookie))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    async fn generate(&self, web: &Web, fields: &[(&str, &str)]) -> reqwest::Response {
        self.submit(web, Some(&self.csrf), fields).await
    }
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The raw (still escaped) content of the element whose start tag carries `id="{id}"`.
fn element_text<'a>(html: &'a str, id: &str, end_tag: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no element {id}"));
    let start = at + html[at..].find('>').expect("end of the start tag") + 1;
    let end = start + html[start..].find(end_tag).expect("end tag");
    &html[start..end]
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containerDefinitions"]
        .as_array()
        .expect("containerDefinitions")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name:?}"))
}

#[tokio::test]
async fn the_page_requires_login() {
    let web = Web::start().await;
    let resp = web.get(PAGE).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
    let resp = web
        .http
        .post(web.url(PAGE))
        .form(&[("taskdef", "{}")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
}

#[tokio::test]
async fn get_renders_the_form_with_csrf_and_defaults() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let resp = web.get_with_cookie(PAGE, &browser.cookie).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains(&format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        browser.csrf
    )));
    assert!(html.contains("<form class=\"deploy\" method=\"post\" action=\"/deploy/defenders\">"));
    assert!(html.contains("name=\"taskdef\""));
    assert!(html.contains("Generate protected task"));
    // In the navigation, highlighted.
    assert!(
        html.contains("<a href=\"/deploy/defenders\" class=\"active\">"),
        "{html}"
    );
    // The browser reached the UI at 127.0.0.1, which a Fargate task cannot reach: no
    // loopback address is suggested (a reachable Host header is, see the unit tests).
    let grpc_port = web.console.grpc_addr.port();
    assert!(
        !html.contains(&format!("value=\"127.0.0.1:{grpc_port}\"")),
        "no loopback Console address suggested"
    );
    assert!(html.contains("name=\"allowLoopback\""));
    assert!(html.contains("name=\"resolveImages\""));
    assert!(html.contains(defender_taskdef::DEFAULT_DEFENDER_IMAGE));
    // The next steps.
    assert!(html.contains("defender-console bundle --console-addr"));
    assert!(
        html.contains("aws ecs register-task-definition --cli-input-json file://protected.json")
    );
    assert!(html.contains(&format!(
        "'http://{}/api/v1/defenders/fargate.json?consoleaddr=console.example.com:{grpc_port}&amp;installBundle=true'",
        web.console.http_addr
    )));
    // Nothing generated yet.
    assert!(!html.contains("id=\"protected-json\""));
}

#[tokio::test]
async fn post_without_csrf_is_forbidden() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let fields = [("taskdef", "{}"), ("bundle", "none")];
    let resp = browser.submit(&web, None, &fields).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = browser.submit(&web, Some("csrf_forged"), &fields).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn generating_shows_the_protected_json_and_a_copy_button() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let input = data("nginx.json");
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("consoleaddr", "console.internal:8084"),
                ("defenderImage", "registry.example/defender:1"),
                ("bundle", "none"),
                ("mode", "embedded"),
                ("sidecarName", "defender"),
                ("entrypoints", ""),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = resp.text().await.unwrap();

    let json = element_text(&html, "protected-json", "</textarea>");
    assert!(json.contains("&quot;containerDefinitions&quot;"), "escaped");
    let task: Value = serde_json::from_str(&unescape(json)).expect("the protected JSON");
    assert!(task.get("taskDefinitionArn").is_none());
    let sidecar = container(&task, "defender");
    assert_eq!(sidecar["image"], "registry.example/defender:1");
    assert!(
        sidecar["environment"]
            .to_string()
            .contains("console.internal:8084")
    );
    assert!(html.contains("readonly"));

    // The Copy button and its script, allowed by this response's CSP nonce.
    assert!(html.contains("id=\"copy-protected\""));
    assert!(html.contains(">Copy</button>"));
    assert!(html.contains("navigator.clipboard"));
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("CSP nonce");
    assert!(html.matches(&format!("<script nonce=\"{nonce}\">")).count() >= 2);

    // The input is kept in the form.
    let kept = unescape(element_text(&html, "taskdef", "</textarea>"));
    assert_eq!(kept.trim(), input.trim());
    assert!(html.contains("value=\"console.internal:8084\""));
}

#[tokio::test]
async fn a_new_install_bundle_is_embedded_and_enrolls() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let input = data("nginx.json");
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("consoleaddr", "localhost"),
                ("bundle", "new"),
                ("mode", "sidecar"),
            ],
        )
        .await;
    // A loopback Console address is refused next to its field, and no token is made ...
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    let error = unescape(element_text(&html, "consoleaddr-error", "</div>"));
    assert!(
        error.contains("cannot reach it") && error.contains("Use this address anyway"),
        "{error}"
    );
    assert!(!html.contains("id=\"protected-json\""));
    // Among several replica addresses too, naming the one at fault.
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("consoleaddr", "console.internal:8084, 127.0.0.1:8084"),
                ("bundle", "new"),
                ("mode", "sidecar"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    let error = unescape(element_text(&html, "consoleaddr-error", "</div>"));
    assert!(
        error.contains("\"127.0.0.1:8084\" names this machine"),
        "{error}"
    );
    // ... unless the operator insists.
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("consoleaddr", "localhost"),
                ("allowLoopback", "on"),
                ("bundle", "new"),
                ("mode", "sidecar"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains("new install bundle"));
    let task: Value = serde_json::from_str(&unescape(element_text(
        &html,
        "protected-json",
        "</textarea>",
    )))
    .unwrap();
    assert_eq!(task["pidMode"], "task");
    let env = container(&task, "defender")["environment"]
        .as_array()
        .unwrap()
        .clone();
    let b64 = env
        .iter()
        .find(|e| e["name"] == "INSTALL_BUNDLE")
        .and_then(|e| e["value"].as_str())
        .expect("INSTALL_BUNDLE");
    let bundle: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    assert_eq!(
        bundle.console_addr,
        format!("localhost:{}", web.console.grpc_addr.port())
    );
    assert!(
        web.console
            .store
            .check_token(TokenKind::Enrollment, &bundle.token)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn errors_are_shown_inline_and_the_input_is_kept_escaped() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let hostile = "<script>alert('pwned')</script>";
    let input = format!(
        r#"{{"family": "evil</textarea><b>", "containerDefinitions": [
            {{"name": "web", "image": "nginx", "command": ["sh", "-c", "echo {hostile}"]}}]}}"#
    );
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("consoleaddr", "console.internal:8084"),
                ("bundle", "none"),
                ("mode", "embedded"),
                ("entrypoints", ""),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(!html.contains(hostile), "pasted markup never appears raw");
    assert!(!html.contains("evil</textarea><b>"));
    assert!(html.contains("&lt;script&gt;alert"));

    // The refusal sits next to the task definition, which is kept as typed.
    let error = unescape(element_text(&html, "taskdef-error", "</div>"));
    assert!(
        error.contains("container \"web\" has no \"entryPoint\""),
        "{error}"
    );
    assert!(
        error.contains("Entrypoint overrides"),
        "explains this form's syntax: {error}"
    );
    assert!(html.contains("aria-describedby=\"taskdef-error\""));
    let kept = unescape(element_text(&html, "taskdef", "</textarea>"));
    assert_eq!(kept, input);
    assert!(!html.contains("id=\"protected-json\""), "nothing generated");

    // An override in the wrong syntax: the error moves next to the overrides field.
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("bundle", "none"),
                ("entrypoints", "web=/docker-entrypoint.sh <i>"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(!html.contains("<i>"));
    let error = unescape(element_text(&html, "entrypoints-error", "</div>"));
    assert!(error.contains("JSON array"), "{error}");
    assert_eq!(
        unescape(element_text(&html, "entrypoints", "</textarea>")),
        "web=/docker-entrypoint.sh <i>"
    );

    // Stated correctly, the same definition is protected.
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("bundle", "none"),
                ("entrypoints", "web=[\"/docker-entrypoint.sh\"]\r\n"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(!html.contains(hostile));
    let task: Value = serde_json::from_str(&unescape(element_text(
        &html,
        "protected-json",
        "</textarea>",
    )))
    .unwrap();
    assert_eq!(
        container(&task, "web")["command"][2],
        format!("echo {hostile}")
    );

    // A new bundle without a Console address: the error is next to that field.
    let resp = browser
        .generate(
            &web,
            &[
                ("taskdef", &input),
                ("bundle", "new"),
                ("consoleaddr", ""),
                ("entrypoints", "web=[]"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    let error = unescape(element_text(&html, "consoleaddr-error", "</div>"));
    assert!(error.contains("install bundle"), "{error}");
}

#[tokio::test]
async fn warnings_sit_next_to_their_container_and_images_resolve_from_the_registry() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let (port, _log) = registry_support::start_registry().await;
    let reg = format!("127.0.0.1:{port}");
    let input = serde_json::json!({
        "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "1024", "memory": "2048",
        "containerDefinitions": [
            {"name": "web", "image": format!("{reg}/library/nginx:1.27")},
            {"name": "hardened", "image": "app:1", "entryPoint": ["/app"],
             "linuxParameters": {"capabilities": {"drop": ["ALL"]}}}
        ]
    })
    .to_string();
    let base = [
        ("taskdef", input.as_str()),
        ("consoleaddr", "console.internal:8084"),
        ("bundle", "none"),
        ("mode", "embedded"),
    ];

    // Without a lookup, the refusal names the container and the way out.
    let resp = browser.generate(&web, &base).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    let error = unescape(element_text(&html, "taskdef-error", "</div>"));
    assert!(
        error.contains("\"web\"") && error.contains("--resolve-images"),
        "{error}"
    );

    // A registry that is not reachable over plain HTTP gives its error next to the option.
    let mut fields = base.to_vec();
    fields.push(("resolveImages", "registry"));
    let resp = browser.generate(&web, &fields).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let html = resp.text().await.unwrap();
    let error = unescape(element_text(&html, "resolveImages-error", "</div>"));
    assert!(error.contains("nginx:1.27"), "{error}");

    fields.push(("insecureRegistries", reg.as_str()));
    fields.push(("registryUsername", registry_support::USER));
    fields.push(("registryPassword", registry_support::PASSWORD));
    let resp = browser.generate(&web, &fields).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains(registry_support::PASSWORD),
        "the password is never echoed"
    );
    let task: Value = serde_json::from_str(&unescape(element_text(
        &html,
        "protected-json",
        "</textarea>",
    )))
    .unwrap();
    assert_eq!(
        container(&task, "web")["command"],
        serde_json::json!(["nginx", "-g", "daemon off;"])
    );
    // Each container's warnings in its own block, the task's apart.
    assert!(html.contains("id=\"warnings\""));
    let block = |name: &str| {
        let marker = format!("data-container=\"{name}\"");
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("no block for {name}"));
        let end = at + html[at..].find("</ul>").expect("list end");
        unescape(&html[at..end])
    };
    let web_block = block("web");
    assert!(
        web_block.contains("ENTRYPOINT [\"/docker-entrypoint.sh\"]"),
        "{web_block}"
    );
    assert!(!web_block.contains("drops ALL"), "{web_block}");
    let hardened = block("hardened");
    assert!(hardened.contains("drops ALL capabilities"), "{hardened}");
    let defender = block("defender");
    assert!(defender.contains("no install bundle"), "{defender}");
}

#[tokio::test]
async fn the_waas_field_puts_the_sidecar_on_the_exposed_port() {
    let web = Web::start().await;
    let browser = Browser::login(&web).await;
    let input = data("nginx.json");
    let resp = generate_waas(&web, &browser, &input, "nginx:80").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let task: Value = serde_json::from_str(&unescape(element_text(
        &html,
        "protected-json",
        "</textarea>",
    )))
    .expect("the protected JSON");
    let sidecar = container(&task, "defender");
    assert_eq!(sidecar["portMappings"][0]["containerPort"], 80);
    assert!(
        sidecar["environment"]
            .to_string()
            .contains("0.0.0.0:80=127.0.0.1:10080"),
        "{sidecar}"
    );
    assert!(container(&task, "nginx").get("portMappings").is_none());
    // What to change in the target group is on the page; the field keeps its value.
    assert!(
        unescape(&html).contains("change containerName from \"nginx\" to \"defender\""),
        "{html}"
    );
    assert!(html.contains("value=\"nginx:80\""));

    // A port the container does not map is refused next to the WAAS field.
    let resp = generate_waas(&web, &browser, &input, "nginx:8080").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    let error = unescape(element_text(&html, "waas-error", "</div>"));
    assert!(error.contains("maps no containerPort 8080"), "{error}");
    assert!(html.contains("aria-describedby=\"waas-error\""));
    assert!(!html.contains("id=\"protected-json\""));
}

async fn generate_waas(web: &Web, browser: &Browser, input: &str, waas: &str) -> reqwest::Response {
    browser
        .generate(
            web,
            &[
                ("taskdef", input),
                ("consoleaddr", "console.internal:8084"),
                ("bundle", "none"),
                ("mode", "embedded"),
                ("waas", waas),
            ],
        )
        .await
}
