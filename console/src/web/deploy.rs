//! Deploy > Defenders: "Generate protected task" as a page (`/deploy/defenders`, a plain form,
//! no script needed) and as the REST endpoint `POST /api/v1/defenders/fargate.json`. Both call
//! [`defender_taskdef::protect`]; what the Console adds is a fresh install bundle on request (it
//! holds the CA and the token store) and the default port of Console addresses.

use axum::Extension;
use axum::Form;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use defender_taskdef::{
    BundleSource, DEFAULT_DEFENDER_IMAGE, DEFAULT_SIDECAR_NAME, MAX_INPUT_BYTES, Mode,
    ProtectError, ProtectOptions, Protected,
};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::auth::{ApiCaller, CSRF_FIELD, Operator};
use super::layout;
use super::render::display;
use super::security::CspNonce;
use super::{WebState, api_error, internal_error_page};
use crate::fargate::{
    bundle_addr_host, bundle_addrs, certificate_names, family_if_protectable, is_loopback_addr,
    issue_bundle, parse_entrypoints, to_pretty_json, warnings_by_container, with_default_port,
};
use crate::image_resolve::{ImageSource, RegistryCredentials, RegistryOptions, ResolveError};
use crate::store::{StoreError, TokenKind};

/// Path of the Deploy > Defenders page (GET: the form; POST: generate).
pub const PAGE_PATH: &str = "/deploy/defenders";
/// Path of the REST endpoint (name and `consoleaddr`/`defenderImage` follow the well-known API).
pub const API_PATH: &str = "/api/v1/defenders/fargate.json";
/// Response header of the REST endpoint: the warnings, as a JSON array of ASCII-only strings.
pub const WARNINGS_HEADER: &str = "x-defender-warnings";
/// Request body limit of the REST endpoint: the library's input limit plus slack, so that a body
/// just over the limit is still read and refused with the library's message (413).
pub const API_BODY_LIMIT: usize = MAX_INPUT_BYTES + 64 * 1024;
/// Longest [`WARNINGS_HEADER`] value; further warnings are summarised.
const MAX_WARNINGS_HEADER: usize = 8 * 1024;
/// Query parameters of the REST endpoint, for the message about an unknown one.
const API_PARAMS: &str = "console_addr, defender_image, mode, sidecar_name, bundle_secret, install_bundle, entrypoint, resolve_images, insecure_registry, waas (or their camelCase spellings consoleaddr, defenderImage, …)";
/// Request header of the REST endpoint carrying registry credentials for `resolveImages`, as
/// base64 of `user:password` (for Amazon ECR: `AWS:` and `aws ecr get-login-password`).
pub const REGISTRY_AUTH_HEADER: &str = "x-registry-auth";

/// Why generating failed.
enum Failure {
    /// The input or the options: the operator's to fix (400 / shown next to the field).
    Protect(ProtectError),
    /// The token store: the Console's fault (500).
    Internal(StoreError),
    /// Reading image configs (`resolveImages`) failed: the registry's or Docker's answer (502).
    Resolve(ResolveError),
}

/// How to read image configs for containers without entryPoint, when asked to.
pub struct ResolveRequest {
    /// Registry or local Docker engine.
    pub source: ImageSource,
    /// Credentials and plain-HTTP registries.
    pub registry: RegistryOptions,
}

impl From<ProtectError> for Failure {
    fn from(e: ProtectError) -> Self {
        Self::Protect(e)
    }
}

/// Protects `input`; with `new_bundle`, first creates an enrollment token and embeds its install
/// bundle as plain `INSTALL_BUNDLE` (only once the input is known to be protectable, so a
/// refused input creates no token). A Console address without a port gets the gRPC port.
async fn generate(
    state: &WebState,
    input: &str,
    mut opts: ProtectOptions,
    new_bundle: bool,
    requested_by: &str,
    resolve: Option<ResolveRequest>,
) -> Result<Protected, Failure> {
    if let Some(addr) = &opts.console_addr
        && !addr.trim().is_empty()
    {
        opts.console_addr = Some(with_default_port(addr, state.grpc_port));
    }
    let mut extra_warnings = Vec::new();
    if let Some(resolve) = resolve {
        let plan = defender_taskdef::plan_resolution(input, &opts)?;
        let resolution = crate::image_resolve::resolve(
            &plan,
            resolve.source,
            &opts.defender_image,
            &resolve.registry,
        )
        .await
        .map_err(Failure::Resolve)?;
        opts.resolved_images = resolution.images;
        extra_warnings.extend(resolution.warnings);
    }
    let mut issued_token = None;
    if new_bundle {
        let Some(addr) = opts.console_addr.clone() else {
            return Err(ProtectError::InvalidOption {
                option: "Console address",
                reason: "it is needed to create an install bundle: give host:port of the Console's gRPC listener as Defenders reach it".into(),
            }
            .into());
        };
        let addrs = bundle_addrs(&addr)?;
        for addr in &addrs {
            let host = bundle_addr_host(addr)?;
            if !certificate_names(&state.sans, host) {
                extra_warnings.push(format!(
                    "the Console's certificate does not name {host:?}, so Defenders will not trust {addr}: restart the Console with --san {host} (it names {})",
                    state.sans.join(", ")
                ));
            }
        }
        let family = family_if_protectable(input, &opts)?;
        let description = format!("{requested_by}: task definition {family}");
        let bundle = issue_bundle(&state.store, &state.ca_pem, &addrs, &description)
            .await
            .map_err(Failure::Internal)?;
        tracing::info!(family = %family, requested_by, "created an enrollment token for a protected task definition");
        opts.bundle = BundleSource::Env(bundle.encode());
        issued_token = Some(bundle.token);
    }
    match defender_taskdef::protect(input, &opts) {
        Ok(mut protected) => {
            protected.warnings.extend(extra_warnings);
            Ok(protected)
        }
        Err(e) => {
            // Not expected after the dry run, but a token nobody received must not stay valid.
            if let Some(token) = issued_token {
                let revoked = state
                    .store
                    .revoke_token(TokenKind::Enrollment, &token)
                    .await;
                if let Err(store_error) = revoked {
                    tracing::error!(error = %store_error, "revoking an unused enrollment token failed");
                }
            }
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST

/// The query of `POST /api/v1/defenders/fargate.json`.
#[derive(Default)]
struct ApiParams {
    console_addr: Option<String>,
    defender_image: Option<String>,
    mode: Option<String>,
    sidecar_name: Option<String>,
    bundle_secret: Option<String>,
    entrypoints: Vec<String>,
    install_bundle: bool,
    resolve_images: Option<String>,
    insecure_registries: Vec<String>,
    /// `APP_CONTAINER:EXPOSED_PORT`: put the Defender's WAAS proxy in front of that container.
    waas: Option<String>,
}

fn api_params(pairs: Vec<(String, String)>) -> Result<ApiParams, String> {
    let mut p = ApiParams::default();
    let mut install_bundle = None;
    for (key, value) in pairs {
        let slot = match key.as_str() {
            "console_addr" | "consoleaddr" => &mut p.console_addr,
            "defender_image" | "defenderImage" => &mut p.defender_image,
            "mode" => &mut p.mode,
            "sidecar_name" | "sidecarName" => &mut p.sidecar_name,
            "bundle_secret" | "bundleSecret" => &mut p.bundle_secret,
            "install_bundle" | "installBundle" => &mut install_bundle,
            "resolve_images" | "resolveImages" => &mut p.resolve_images,
            "waas" => &mut p.waas,
            "entrypoint" => {
                p.entrypoints.push(value);
                continue;
            }
            "insecure_registry" | "insecureRegistry" => {
                p.insecure_registries.push(value);
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {key:?}; the parameters are {API_PARAMS}"
                ));
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!(
                "query parameter {key:?} is given twice (only entrypoint and insecure_registry repeat)"
            ));
        }
    }
    p.install_bundle = match install_bundle.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "installBundle must be \"true\" or \"false\", not {other:?}"
            ));
        }
    };
    if let Some(source) = &p.resolve_images
        && source.parse::<ImageSource>().is_err()
    {
        return Err(format!(
            "resolveImages must be \"registry\" or \"docker\", not {source:?}"
        ));
    }
    if p.install_bundle && p.bundle_secret.is_some() {
        return Err(
            "installBundle=true (embed a new bundle) and bundleSecret (read the bundle from a secret) exclude each other"
                .into(),
        );
    }
    Ok(p)
}

impl ApiParams {
    fn options(&self) -> Result<ProtectOptions, ProtectError> {
        let defaults = ProtectOptions::default();
        Ok(ProtectOptions {
            console_addr: self.console_addr.clone(),
            defender_image: self
                .defender_image
                .clone()
                .unwrap_or(defaults.defender_image),
            bundle: match &self.bundle_secret {
                Some(arn) => BundleSource::Secret {
                    value_from: arn.clone(),
                },
                None => BundleSource::None,
            },
            mode: match &self.mode {
                Some(mode) => mode.parse()?,
                None => defaults.mode,
            },
            sidecar_name: self.sidecar_name.clone().unwrap_or(defaults.sidecar_name),
            entrypoints: parse_entrypoints(self.entrypoints.iter().map(String::as_str))?,
            waas: self.waas.as_deref().map(str::parse).transpose()?,
            ..ProtectOptions::default()
        })
    }
}

/// `warnings` as the value of [`WARNINGS_HEADER`]: a JSON array with every character outside
/// printable ASCII escaped (`\uXXXX`), at most [`MAX_WARNINGS_HEADER`] bytes.
fn warnings_header(warnings: &[String]) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut value = ascii_json(&kept);
    for (i, warning) in warnings.iter().enumerate() {
        kept.push(warning);
        let longer = ascii_json(&kept);
        if longer.len() > MAX_WARNINGS_HEADER {
            kept.pop();
            let more = format!(
                "... and {} more warnings (see the Console UI or the CLI)",
                warnings.len() - i
            );
            kept.push(&more);
            return ascii_json(&kept);
        }
        value = longer;
    }
    value
}

/// JSON text of `list` with every character that is not printable ASCII written as `\uXXXX`.
fn ascii_json(list: &[&str]) -> String {
    let json = serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The `resolveImages` request of the API, with credentials from [`REGISTRY_AUTH_HEADER`].
fn api_resolve(params: &ApiParams, headers: &HeaderMap) -> Result<Option<ResolveRequest>, String> {
    let Some(source) = &params.resolve_images else {
        return Ok(None);
    };
    let source = source.parse::<ImageSource>()?;
    let mut credentials = RegistryCredentials::default();
    if let Some(value) = headers.get(REGISTRY_AUTH_HEADER) {
        use base64::Engine as _;
        let decoded = value
            .to_str()
            .ok()
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("X-Registry-Auth must be base64 of user:password")?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or("X-Registry-Auth must be base64 of user:password")?;
        credentials.basic = Some((user.to_owned(), password.to_owned()));
    }
    Ok(Some(ResolveRequest {
        source,
        registry: RegistryOptions {
            credentials,
            insecure: params.insecure_registries.clone(),
            ca_pems: Vec::new(),
        },
    }))
}

fn protect_error_response(e: &ProtectError) -> Response {
    let status = match e {
        ProtectError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    api_error(status, &e.to_string())
}

/// `POST /api/v1/defenders/fargate.json[?consoleaddr=&defenderImage=&mode=&sidecarName=&bundleSecret=&installBundle=true&entrypoint=NAME=JSON_ARRAY…]`:
/// the body is the task definition; the answer is the protected task definition itself (ready
/// for `--cli-input-json`), warnings in [`WARNINGS_HEADER`]. Errors: 400/413 `{"error": …}`.
pub async fn fargate_json(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = match query {
        Ok(Query(pairs)) => match api_params(pairs) {
            Ok(p) => p,
            Err(message) => return api_error(StatusCode::BAD_REQUEST, &message),
        },
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid query: {}", rejection.body_text()),
            );
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body is larger than the {MAX_INPUT_BYTES}-byte (1 MiB) limit; send one task definition"
                ),
            );
        }
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {}", rejection.body_text()),
            );
        }
    };
    let Ok(input) = std::str::from_utf8(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8 text; send the task definition JSON",
        );
    };
    let opts = match params.options() {
        Ok(opts) => opts,
        Err(e) => return protect_error_response(&e),
    };
    let requested_by = match &caller {
        ApiCaller::Token { id } => format!("{API_PATH} (API token #{id})"),
        ApiCaller::Operator { username } => format!("{API_PATH} ({username})"),
    };
    let resolve = match api_resolve(&params, &headers) {
        Ok(r) => r,
        Err(message) => return api_error(StatusCode::BAD_REQUEST, &message),
    };
    let generated = generate(
        &state,
        input,
        opts,
        params.install_bundle,
        &requested_by,
        resolve,
    )
    .await;
    let protected = match generated {
        Ok(p) => p,
        Err(Failure::Protect(e)) => return protect_error_response(&e),
        Err(Failure::Resolve(e)) => return api_error(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(Failure::Internal(e)) => {
            tracing::error!(error = %e, "protecting a task definition failed");
            return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let mut res = (
        [(header::CONTENT_TYPE, "application/json")],
        to_pretty_json(&protected.task_definition),
    )
        .into_response();
    // ASCII-only by construction, so always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&warnings_header(&protected.warnings)) {
        res.headers_mut().insert(WARNINGS_HEADER, value);
    }
    res
}

// ---------------------------------------------------------------------------------------------
// Page

/// Install bundle choices of the form.
const BUNDLE_NEW: &str = "new";
const BUNDLE_SECRET: &str = "secret";
const BUNDLE_NONE: &str = "none";

/// The form's fields (named like the REST parameters). Kept as typed, to be shown again.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct DeployForm {
    taskdef: String,
    consoleaddr: String,
    #[serde(rename = "defenderImage")]
    defender_image: String,
    bundle: String,
    #[serde(rename = "bundleSecret")]
    bundle_secret: String,
    mode: String,
    #[serde(rename = "sidecarName")]
    sidecar_name: String,
    entrypoints: String,
    /// "" (do not look up), "registry" or "docker".
    #[serde(rename = "resolveImages")]
    resolve_images: String,
    #[serde(rename = "registryUsername")]
    registry_username: String,
    /// Never shown again in the page.
    #[serde(rename = "registryPassword")]
    registry_password: String,
    /// Registries reached over plain HTTP, separated by commas or spaces.
    #[serde(rename = "insecureRegistries")]
    insecure_registries: String,
    /// "on" when the operator insists on a loopback Console address.
    #[serde(rename = "allowLoopback")]
    allow_loopback: String,
    /// `APP_CONTAINER:EXPOSED_PORT` for WAAS, empty for none.
    waas: String,
}

impl DeployForm {
    /// The image lookup the form asks for, if any.
    fn resolve_request(&self) -> Result<Option<ResolveRequest>, String> {
        if self.resolve_images.trim().is_empty() {
            return Ok(None);
        }
        let source = self.resolve_images.parse::<ImageSource>()?;
        let user = self.registry_username.trim();
        let credentials = RegistryCredentials {
            basic: (!user.is_empty())
                .then(|| (user.to_owned(), self.registry_password.trim().to_owned())),
            ..RegistryCredentials::default()
        };
        Ok(Some(ResolveRequest {
            source,
            registry: RegistryOptions {
                credentials,
                insecure: self
                    .insecure_registries
                    .split([',', ' ', '\n', '\r'])
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
                ca_pems: Vec::new(),
            },
        }))
    }
}

/// The form field an error belongs next to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    TaskDef,
    ConsoleAddr,
    Image,
    Bundle,
    Mode,
    SidecarName,
    Entrypoints,
    ResolveImages,
    Waas,
}

impl Field {
    fn id(self) -> &'static str {
        match self {
            Field::TaskDef => "taskdef",
            Field::ConsoleAddr => "consoleaddr",
            Field::Image => "defenderImage",
            Field::Bundle => "bundle",
            Field::Mode => "mode",
            Field::SidecarName => "sidecarName",
            Field::Entrypoints => "entrypoints",
            Field::ResolveImages => "resolveImages",
            Field::Waas => "waas",
        }
    }

    fn of(e: &ProtectError) -> Self {
        match e {
            ProtectError::InvalidEntrypointOverride { .. }
            | ProtectError::UnknownOverride { .. } => Field::Entrypoints,
            ProtectError::InvalidOption { option, .. } => match *option {
                "Defender image" => Field::Image,
                "sidecar name" => Field::SidecarName,
                "Console address" => Field::ConsoleAddr,
                "install bundle" | "install bundle secret" => Field::Bundle,
                "WAAS" => Field::Waas,
                _ => Field::TaskDef,
            },
            ProtectError::UnknownMode(_) => Field::Mode,
            ProtectError::SidecarNameClash { .. } => Field::SidecarName,
            _ => Field::TaskDef,
        }
    }
}

/// A refusal, placed next to its field.
struct FieldError {
    field: Field,
    message: String,
    /// Whether to explain this form's entrypoint override syntax (the library's messages show
    /// the command line's).
    entrypoint_hint: bool,
}

impl FieldError {
    fn of(e: &ProtectError) -> Self {
        Self {
            field: Field::of(e),
            message: e.to_string(),
            entrypoint_hint: matches!(
                e,
                ProtectError::MissingEntryPoint { .. }
                    | ProtectError::InvalidEntrypointOverride { .. }
                    | ProtectError::UnknownOverride { .. }
            ),
        }
    }
}

enum Outcome {
    Blank,
    Done {
        protected: Protected,
        new_bundle: bool,
    },
    Failed(FieldError),
}

/// The options the form asks for, and whether to create a new install bundle.
fn form_options(form: &DeployForm) -> Result<(ProtectOptions, bool), ProtectError> {
    let non_empty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let (bundle, new_bundle) = match form.bundle.as_str() {
        BUNDLE_NEW => (BundleSource::None, true),
        BUNDLE_SECRET => (
            BundleSource::Secret {
                value_from: form.bundle_secret.trim().to_owned(),
            },
            false,
        ),
        BUNDLE_NONE | "" => (BundleSource::None, false),
        other => {
            return Err(ProtectError::InvalidOption {
                option: "install bundle",
                reason: format!("unknown choice {other:?}"),
            });
        }
    };
    let mode = match form.mode.trim() {
        "" => Mode::Embedded,
        mode => mode.parse()?,
    };
    let opts = ProtectOptions {
        console_addr: non_empty(&form.consoleaddr),
        defender_image: non_empty(&form.defender_image)
            .unwrap_or_else(|| DEFAULT_DEFENDER_IMAGE.to_owned()),
        bundle,
        mode,
        sidecar_name: non_empty(&form.sidecar_name)
            .unwrap_or_else(|| DEFAULT_SIDECAR_NAME.to_owned()),
        entrypoints: parse_entrypoints([form.entrypoints.as_str()])?,
        waas: non_empty(&form.waas).map(|w| w.parse()).transpose()?,
        ..ProtectOptions::default()
    };
    Ok((opts, new_bundle))
}

/// The Console address to suggest: the host the browser reached the UI at, with the gRPC port
/// (empty when the `Host` header is missing or odd).
fn suggested_console_addr(headers: &HeaderMap, grpc_port: u16) -> String {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, _)) => format!("[{ip}]"),
            None => return String::new(),
        },
        None => host.split(':').next().unwrap_or_default().to_owned(),
    };
    let addr = format!("{name}:{grpc_port}");
    if bundle_addr_host(&addr).is_ok() {
        addr
    } else {
        String::new()
    }
}

/// The URL this Console's UI was reached at, for the `curl` example (a placeholder when the
/// `Host` header is missing or odd).
fn console_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        });
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    match host {
        Some(host) => format!("{}://{host}", if https { "https" } else { "http" }),
        None => "http://CONSOLE-HOST:8083".to_owned(),
    }
}

/// `GET /deploy/defenders`: the empty form with the defaults.
pub async fn page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    headers: HeaderMap,
) -> Response {
    let suggested = suggested_console_addr(&headers, state.grpc_port);
    let form = DeployForm {
        // A loopback address is what the browser used, not what a Fargate task can reach.
        consoleaddr: if is_loopback_addr(&suggested) {
            String::new()
        } else {
            suggested
        },
        defender_image: DEFAULT_DEFENDER_IMAGE.to_owned(),
        bundle: BUNDLE_NEW.to_owned(),
        mode: Mode::Embedded.as_str().to_owned(),
        sidecar_name: DEFAULT_SIDECAR_NAME.to_owned(),
        ..DeployForm::default()
    };
    let page = Page {
        nonce: &nonce,
        op: &op,
        state: &state,
        console_url: console_url(&headers),
    };
    page.render(&form, &Outcome::Blank, StatusCode::OK)
}

/// `POST /deploy/defenders` (CSRF-checked by the router): generates and shows the result, or
/// the refusal next to the field it concerns, with everything typed kept.
pub async fn generate_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    headers: HeaderMap,
    form: Result<Form<DeployForm>, FormRejection>,
) -> Response {
    let page = Page {
        nonce: &nonce,
        op: &op,
        state: &state,
        console_url: console_url(&headers),
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let failed = Outcome::Failed(FieldError {
                field: Field::TaskDef,
                message: format!("the form could not be read: {}", rejection.body_text()),
                entrypoint_hint: false,
            });
            return page.render(&DeployForm::default(), &failed, StatusCode::BAD_REQUEST);
        }
    };
    let requested_by = format!("Deploy > Defenders ({})", op.username);
    let loopback = form
        .consoleaddr
        .split(',')
        .map(str::trim)
        .find(|a| is_loopback_addr(a));
    if let Some(loopback) = loopback
        && form.allow_loopback != "on"
    {
        let failed = Outcome::Failed(FieldError {
            field: Field::ConsoleAddr,
            message: format!(
                "{loopback:?} names this machine: a Fargate task runs elsewhere and cannot reach it, so its Defender would never connect. Give the address (DNS name or IP) the task reaches the Console's gRPC port at, e.g. an internal load balancer; or check \"Use this address anyway\" (for a local test)"
            ),
            entrypoint_hint: false,
        });
        return page.render(&form, &failed, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let resolve = match form.resolve_request() {
        Ok(r) => r,
        Err(message) => {
            let failed = Outcome::Failed(FieldError {
                field: Field::ResolveImages,
                message,
                entrypoint_hint: false,
            });
            return page.render(&form, &failed, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let result = match form_options(&form) {
        Ok((opts, new_bundle)) => generate(
            &state,
            &form.taskdef,
            opts,
            new_bundle,
            &requested_by,
            resolve,
        )
        .await
        .map(|protected| (protected, new_bundle)),
        Err(e) => Err(Failure::Protect(e)),
    };
    match result {
        Ok((protected, new_bundle)) => {
            let done = Outcome::Done {
                protected,
                new_bundle,
            };
            page.render(&form, &done, StatusCode::OK)
        }
        Err(Failure::Protect(e)) => {
            let failed = Outcome::Failed(FieldError::of(&e));
            page.render(&form, &failed, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(Failure::Resolve(e)) => {
            let failed = Outcome::Failed(FieldError {
                field: Field::ResolveImages,
                message: e.to_string(),
                entrypoint_hint: false,
            });
            page.render(&form, &failed, StatusCode::BAD_GATEWAY)
        }
        Err(Failure::Internal(e)) => internal_error_page(&e),
    }
}

/// What every rendering of the page needs besides the form.
struct Page<'a> {
    nonce: &'a CspNonce,
    op: &'a Operator,
    state: &'a WebState,
    console_url: String,
}

impl Page<'_> {
    fn render(&self, form: &DeployForm, outcome: &Outcome, status: StatusCode) -> Response {
        let body = html! {
            h1 { "Defenders" }
            p.muted {
                "Deploy Defenders to AWS Fargate. Paste a task definition and press " strong { "Generate protected task" } ": out comes a task "
                "definition that ECS registers as is, with a Defender sidecar added and every container "
                "started under the Defender."
            }
            @if let Outcome::Done { protected, new_bundle } = outcome {
                (result_section(protected, *new_bundle))
            }
            (form_markup(self.op, self.state, form, outcome))
            (next_steps(form, self.state, &self.console_url))
            @if matches!(outcome, Outcome::Done { .. }) {
                script nonce=(self.nonce.0) { (PreEscaped(COPY_JS)) }
            }
        };
        let page = layout::page(self.nonce, self.op, PAGE_PATH, "Defenders", body);
        (status, Html(page.into_string())).into_response()
    }
}

/// The error next to `field`, if the outcome is one about it.
fn field_error(outcome: &Outcome, field: Field) -> Markup {
    html! {
        @if let Outcome::Failed(e) = outcome {
            @if e.field == field {
                div.field-error id={ (field.id()) "-error" } role="alert" {
                    p.error { (display(&e.message)) }
                    @if e.entrypoint_hint {
                        p.hint {
                            "In this form, write each override on its own line under "
                            strong { "Entrypoint overrides" } ", e.g. "
                            code { "web=[\"/docker-entrypoint.sh\"]" } " (or " code { "web=[]" }
                            " if the image has no ENTRYPOINT), or choose "
                            strong { "Image ENTRYPOINT and CMD" } ": from the registry or Docker to read them from the image, "
                            "or choose the Sidecar mode."
                        }
                    }
                }
            }
        }
    }
}

/// `aria-invalid` and `aria-describedby` values of a field's input.
fn aria(outcome: &Outcome, field: Field) -> (Option<&'static str>, Option<String>) {
    match outcome {
        Outcome::Failed(e) if e.field == field => {
            (Some("true"), Some(format!("{}-error", field.id())))
        }
        _ => (None, None),
    }
}

fn form_markup(op: &Operator, state: &WebState, form: &DeployForm, outcome: &Outcome) -> Markup {
    let example_addr = format!("console.example.com:{}", state.grpc_port);
    let (taskdef_invalid, taskdef_described) = aria(outcome, Field::TaskDef);
    let (addr_invalid, addr_described) = aria(outcome, Field::ConsoleAddr);
    let (image_invalid, image_described) = aria(outcome, Field::Image);
    let (secret_invalid, secret_described) = aria(outcome, Field::Bundle);
    let (sidecar_invalid, sidecar_described) = aria(outcome, Field::SidecarName);
    let (ep_invalid, ep_described) = aria(outcome, Field::Entrypoints);
    let (waas_invalid, waas_described) = aria(outcome, Field::Waas);
    html! {
        form.deploy method="post" action=(PAGE_PATH) {
            input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
            div.field {
                label for="taskdef" { "Task definition (JSON)" }
                span.hint {
                    "The JSON tab of the ECS console, the output of "
                    code { "aws ecs describe-task-definition" }
                    ", or a register-task-definition input; up to 1 MiB."
                }
                (field_error(outcome, Field::TaskDef))
                textarea #taskdef .code name="taskdef" rows="16" spellcheck="false"
                    autocomplete="off" required
                    aria-invalid=[taskdef_invalid] aria-describedby=[taskdef_described] {
                    (form.taskdef)
                }
            }
            div.options {
                div.field {
                    label for="consoleaddr" { "Console address" }
                    span.hint {
                        "host:port of this Console's gRPC listener as the task reaches it (several "
                        "Console replicas: comma-separated, or one load balancer name); "
                        "goes into a new install bundle and the sidecar's DEFENDER_CONSOLE_ADDR."
                    }
                    (field_error(outcome, Field::ConsoleAddr))
                    input #consoleaddr type="text" name="consoleaddr" value=(form.consoleaddr)
                        placeholder=(example_addr) spellcheck="false"
                        aria-invalid=[addr_invalid] aria-describedby=[addr_described];
                    label.choice {
                        input #allowLoopback type="checkbox" name="allowLoopback" value="on"
                            checked[form.allow_loopback == "on"];
                        span { "Use this address anyway, even if it is localhost / 127.0.0.1 (a Fargate task cannot reach it)" }
                    }
                }
                div.field {
                    label for="defenderImage" { "Defender image" }
                    span.hint { "The image of the Defender sidecar, from a registry the task can pull from." }
                    (field_error(outcome, Field::Image))
                    input #defenderImage type="text" name="defenderImage" value=(form.defender_image)
                        placeholder=(DEFAULT_DEFENDER_IMAGE) spellcheck="false"
                        aria-invalid=[image_invalid] aria-describedby=[image_described];
                }
                fieldset.field #bundle {
                    legend { "Install bundle" }
                    (field_error(outcome, Field::Bundle))
                    label.choice {
                        input type="radio" name="bundle" value=(BUNDLE_NEW) checked[form.bundle == BUNDLE_NEW];
                        span { "Create a new install bundle (plain INSTALL_BUNDLE environment variable)" }
                    }
                    label.choice {
                        input type="radio" name="bundle" value=(BUNDLE_SECRET) checked[form.bundle == BUNDLE_SECRET];
                        span { "Read it from Secrets Manager or SSM Parameter Store (needs the task's executionRoleArn):" }
                    }
                    input #bundleSecret type="text" name="bundleSecret" value=(form.bundle_secret)
                        aria-label="Secret or parameter ARN holding the install bundle"
                        placeholder="arn:aws:secretsmanager:eu-west-1:123456789012:secret:defender/install-bundle"
                        spellcheck="false"
                        aria-invalid=[secret_invalid] aria-describedby=[secret_described];
                    label.choice {
                        input type="radio" name="bundle" value=(BUNDLE_NONE) checked[form.bundle == BUNDLE_NONE];
                        span { "None: I'll add INSTALL_BUNDLE myself" }
                    }
                }
                fieldset.field #mode {
                    legend { "Mode" }
                    (field_error(outcome, Field::Mode))
                    label.choice {
                        input type="radio" name="mode" value="embedded" checked[form.mode == "embedded"];
                        span { strong { "Embedded" } ": every container starts under the Defender (full protection)." }
                    }
                    label.choice {
                        input type="radio" name="mode" value="sidecar" checked[form.mode == "sidecar"];
                        span { strong { "Sidecar" } ": containers stay unchanged; the sidecar watches the task's processes (pidMode task)." }
                    }
                }
                div.field {
                    label for="sidecarName" { "Sidecar container name" }
                    (field_error(outcome, Field::SidecarName))
                    input #sidecarName type="text" name="sidecarName" value=(form.sidecar_name)
                        placeholder=(DEFAULT_SIDECAR_NAME) spellcheck="false"
                        aria-invalid=[sidecar_invalid] aria-describedby=[sidecar_described];
                }
                div.field {
                    label for="entrypoints" { "Entrypoint overrides" }
                    span.hint {
                        "Embedded mode needs each container's entryPoint. For a container without one, "
                        "state its image's ENTRYPOINT, one per line: "
                        code { "web=[\"/docker-entrypoint.sh\"]" } " (" code { "web=[]" }
                        " if none; " code { "docker image inspect --format '{{json .Config.Entrypoint}}' IMAGE" }
                        " shows it)."
                    }
                    (field_error(outcome, Field::Entrypoints))
                    textarea #entrypoints .code name="entrypoints" rows="3" spellcheck="false"
                        autocomplete="off"
                        aria-invalid=[ep_invalid] aria-describedby=[ep_described] {
                        (form.entrypoints)
                    }
                }
                div.field {
                    label for="waas" { "WAAS (web application firewall)" }
                    span.hint {
                        "To put the Defender's WAAS proxy in front of a web container, name it and the port "
                        "the load balancer reaches: " code { "web:8080" } ". The sidecar takes that port "
                        "and forwards to the app on an internal one; the warnings say what to change in "
                        "the target group. Empty: no WAAS."
                    }
                    (field_error(outcome, Field::Waas))
                    input #waas type="text" name="waas" value=(form.waas)
                        placeholder="APP_CONTAINER:EXPOSED_PORT" spellcheck="false"
                        aria-invalid=[waas_invalid] aria-describedby=[waas_described];
                }
                fieldset.field #resolveImages {
                    legend { "Image ENTRYPOINT and CMD" }
                    span.hint {
                        "For containers without entryPoint (or with an override but no command), read them "
                        "from the image so each container runs exactly as the image would."
                    }
                    (field_error(outcome, Field::ResolveImages))
                    label.choice {
                        input type="radio" name="resolveImages" value="" checked[form.resolve_images.is_empty()];
                        span { "Don't look up (state them as overrides)" }
                    }
                    label.choice {
                        input type="radio" name="resolveImages" value="registry" checked[form.resolve_images == "registry"];
                        span { "From the image registry (linux/amd64, or the task's runtimePlatform)" }
                    }
                    label.choice {
                        input type="radio" name="resolveImages" value="docker" checked[form.resolve_images == "docker"];
                        span { "From this host's Docker engine (docker image inspect)" }
                    }
                    label for="registryUsername" { "Registry user name (Amazon ECR: AWS)" }
                    input #registryUsername type="text" name="registryUsername" value=(form.registry_username)
                        autocomplete="off" spellcheck="false";
                    label for="registryPassword" { "Registry password (ECR: aws ecr get-login-password); not stored" }
                    input #registryPassword type="password" name="registryPassword" value=""
                        autocomplete="off";
                    label for="insecureRegistries" { "Registries over plain HTTP (host:port, comma-separated)" }
                    input #insecureRegistries type="text" name="insecureRegistries" value=(form.insecure_registries)
                        placeholder="localhost:5000" spellcheck="false";
                }
            }
            button.primary type="submit" { "Generate protected task" }
        }
    }
}

fn result_section(protected: &Protected, new_bundle: bool) -> Markup {
    let json = to_pretty_json(&protected.task_definition);
    html! {
        section.result #result {
            h2 { "Protected task definition" }
            p {
                "Save it as " code { "protected.json" } " and register it as is: "
                code { "aws ecs register-task-definition --cli-input-json file://protected.json" }
            }
            @if new_bundle {
                p.notice {
                    "It holds a new install bundle (with a new enrollment token) in the sidecar's plain "
                    code { "INSTALL_BUNDLE" } " variable: whoever can read this task definition can enroll "
                    "Defenders with it. For production, keep the bundle in Secrets Manager and choose that option. "
                    "Its token expires in 90 days (running Defenders renew their certificates without it); "
                    "list or revoke it in " a href="/manage/tokens" { "Manage › Tokens" } "."
                }
            }
            @if !protected.warnings.is_empty() {
                @let (general, by_container) = warnings_by_container(&protected.task_definition, &protected.warnings);
                div.warnings #warnings {
                    strong { "Warnings" }
                    @if !general.is_empty() {
                        ul.task-warnings {
                            @for warning in &general {
                                li { (display(warning)) }
                            }
                        }
                    }
                    @for (container, warnings) in &by_container {
                        div.container-warnings data-container=(container) {
                            "Container " code { (container) } ":"
                            ul {
                                @for warning in warnings {
                                    li { (display(warning)) }
                                }
                            }
                        }
                    }
                }
            }
            div.copy-row {
                button #copy-protected type="button" data-copy-target="protected-json" { "Copy" }
                span #copy-status .muted role="status" aria-live="polite" {}
            }
            textarea #protected-json .code .output readonly rows="24" spellcheck="false"
                aria-label="Protected task definition (JSON)" {
                (json)
            }
        }
    }
}

fn next_steps(form: &DeployForm, state: &WebState, console_url: &str) -> Markup {
    let addr = if form.consoleaddr.trim().is_empty() {
        format!("console.example.com:{}", state.grpc_port)
    } else {
        with_default_port(&form.consoleaddr, state.grpc_port)
    };
    html! {
        section.steps {
            h2 { "Install bundle in a secret" }
            p {
                "The Defender enrolls with an install bundle (Console address, CA certificate, enrollment token). "
                "To keep it out of the task definition, create it on the Console host, store it in AWS Secrets "
                "Manager and choose the secret option above (the task's execution role needs "
                code { "secretsmanager:GetSecretValue" } " on it):"
            }
            pre {
                "defender-console bundle --console-addr " (addr) " > bundle.b64\n"
                "aws secretsmanager create-secret --name defender/install-bundle --secret-string file://bundle.b64"
            }
            h2 { "Register the protected task definition" }
            pre {
                "aws ecs register-task-definition --cli-input-json file://protected.json\n"
                "aws ecs update-service --cluster CLUSTER --service SERVICE --task-definition FAMILY"
            }
            p.muted {
                "The Defenders appear under Manage › Defenders once the new tasks run."
            }
            h2 { "From the command line or the API" }
            pre {
                "defender-console fargate protect --console-addr " (addr) " --new-bundle task.json > protected.json\n\n"
                "TOKEN=$(defender-console token create)\n"
                "curl -sSf -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n"
                "  --data-binary @task.json \\\n"
                "  '" (console_url) (API_PATH) "?consoleaddr=" (addr) "&installBundle=true' > protected.json"
            }
        }
    }
}

/// Constant script (no data in it) of the Copy button: the clipboard API where the page is a
/// secure context, else select the text and `execCommand("copy")`, else leave it selected.
const COPY_JS: &str = r#"
(function () {
  "use strict";
  var button = document.getElementById("copy-protected");
  if (!button) { return; }
  var target = document.getElementById(button.getAttribute("data-copy-target"));
  var status = document.getElementById("copy-status");
  function say(text) { if (status) { status.textContent = text; } }
  function fallback() {
    target.focus();
    target.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    say(ok ? "Copied." : "Selected: press Ctrl+C (Cmd+C) to copy.");
  }
  button.addEventListener("click", function () {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(target.value).then(function () { say("Copied."); }, fallback);
    } else {
      fallback();
    }
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn api_params_are_strict() {
        let p = api_params(pairs(&[
            ("consoleaddr", "c:1"),
            ("entrypoint", "a=[]"),
            ("entrypoint", "b=[\"x\"]"),
            ("installBundle", "true"),
            ("mode", "sidecar"),
        ]))
        .unwrap();
        assert!(p.install_bundle);
        assert_eq!(p.entrypoints.len(), 2);
        let opts = p.options().unwrap();
        assert_eq!(opts.mode, Mode::Sidecar);
        assert_eq!(opts.entrypoints["b"], ["x"]);
        assert_eq!(opts.defender_image, DEFAULT_DEFENDER_IMAGE);

        for (bad, needle) in [
            (
                &[("consoleAddr", "c:1")][..],
                "unknown query parameter \"consoleAddr\"",
            ),
            (&[("mode", "sidecar"), ("mode", "embedded")], "twice"),
            (&[("installBundle", "yes")], "installBundle"),
            (
                &[("installBundle", "true"), ("bundleSecret", "/b")],
                "exclude each other",
            ),
        ] {
            let err = api_params(pairs(bad)).err().unwrap_or_default();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        let bad_mode = api_params(pairs(&[("mode", "both")])).unwrap().options();
        assert!(matches!(bad_mode, Err(ProtectError::UnknownMode(_))));
    }

    #[test]
    fn warnings_header_is_ascii_json_and_bounded() {
        let warnings = vec!["caf\u{e9} \"q\"\n\u{7f}".to_owned(), "\u{1f600}".to_owned()];
        let value = warnings_header(&warnings);
        assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "{value}");
        assert!(HeaderValue::from_str(&value).is_ok());
        let back: Vec<String> = serde_json::from_str(&value).unwrap();
        assert_eq!(back, warnings);
        assert_eq!(warnings_header(&[]), "[]");

        let many: Vec<String> = (0..100)
            .map(|i| format!("{i}{}", "w".repeat(200)))
            .collect();
        let value = warnings_header(&many);
        assert!(value.len() <= MAX_WARNINGS_HEADER + 100, "{}", value.len());
        let back: Vec<String> = serde_json::from_str(&value).unwrap();
        assert!(back.last().unwrap().contains("more warnings"));
        assert!(back.len() < many.len());
    }

    #[test]
    fn errors_are_placed_next_to_their_field() {
        let form = DeployForm {
            mode: "both".into(),
            ..DeployForm::default()
        };
        let err = form_options(&form).err().unwrap();
        assert!(Field::of(&err) == Field::Mode);
        let form = DeployForm {
            entrypoints: "web=/x".into(),
            ..DeployForm::default()
        };
        let err = form_options(&form).err().unwrap();
        assert!(Field::of(&err) == Field::Entrypoints);
        assert!(FieldError::of(&err).entrypoint_hint);
        let form = DeployForm {
            bundle: BUNDLE_SECRET.into(),
            bundle_secret: " arn:aws:s3:::b ".into(),
            ..DeployForm::default()
        };
        let (opts, new_bundle) = form_options(&form).unwrap();
        assert!(!new_bundle);
        let err = defender_taskdef::protect("{}", &opts).err().unwrap();
        assert!(Field::of(&err) == Field::Bundle, "{err}");
    }

    #[test]
    fn suggested_address_uses_the_host_and_the_grpc_port() {
        let with_host = |host: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(host));
            suggested_console_addr(&h, 8084)
        };
        assert_eq!(
            with_host("console.example.com:8083"),
            "console.example.com:8084"
        );
        assert_eq!(with_host("127.0.0.1"), "127.0.0.1:8084");
        assert_eq!(with_host("[::1]:8083"), "[::1]:8084");
        assert_eq!(with_host("bad host<"), "");
        assert_eq!(suggested_console_addr(&HeaderMap::new(), 8084), "");

        let mut h = HeaderMap::new();
        assert_eq!(console_url(&h), "http://CONSOLE-HOST:8083");
        h.insert(
            header::HOST,
            HeaderValue::from_static("console.example.com"),
        );
        assert_eq!(console_url(&h), "http://console.example.com");
        h.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert_eq!(console_url(&h), "https://console.example.com");
        h.insert(header::HOST, HeaderValue::from_static("a'b"));
        assert_eq!(console_url(&h), "http://CONSOLE-HOST:8083");
    }
}
