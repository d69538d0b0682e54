//! REST endpoints of vulnerabilities and compliance:
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /api/v1/images` | every image: id, name, digest, OS, Defenders, counts by severity |
//! | `GET /api/v1/images/{id}/vulnerabilities` | findings, most severe first; CSV with `Accept: text/csv` or `?format=csv` |
//! | `GET /api/v1/images/{id}/packages` | the inventory |
//! | `GET /api/v1/vulnerabilities?id=CVE-…` | images and Defenders where a record id or alias is found |
//! | `GET /api/v1/compliance?defender=ID` | latest compliance results, failed first |
//! | `GET`/`POST /api/v1/vulndb` | what is loaded / import OSV records (JSON, array, or zip body) |
//! | `GET`/`PUT /api/v1/policies/compliance` | the compliance policy (checks on/off, severities) |

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::ApiCaller;
use super::render::rfc3339;
use super::{WebState, api_error};
use crate::store::StoreError;
use crate::store::vulns::{CheckSetting, VulnRow};

/// Largest `POST /api/v1/vulndb` body (an ecosystem's `all.zip`; bigger feeds: use the CLI).
pub const VULNDB_BODY_LIMIT: usize = 256 * 1024 * 1024;

fn store_error(e: &StoreError) -> Response {
    tracing::error!(error = %e, "vulnerability query failed");
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the Console could not answer; see its log",
    )
}

/// `GET /api/v1/images`.
pub async fn list_images(State(state): State<WebState>) -> Response {
    match state.store.list_images().await {
        Ok(images) => Json(json!({ "images": images.iter().map(image_json).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => store_error(&e),
    }
}

/// One image as the API shows it.
pub fn image_json(i: &crate::store::vulns::ImageSummary) -> serde_json::Value {
    json!({
        "id": i.id,
        "name": i.name,
        "digest": if i.id.starts_with("sha256:") { i.id.as_str() } else { "" },
        "os": i.os,
        "total_packages": i.total_packages,
        "truncated": i.truncated,
        "notes": i.notes,
        "inventory_ms": i.inventory_ms,
        "last_inventory": rfc3339(i.last_inventory_ms),
        "vulnerabilities": i.vulnerabilities,
        "counts": i.counts,
        "defenders": i.defenders.iter().map(|d| json!({
            "defender_id": d.defender_id, "container": d.container, "hostname": d.hostname,
            "task_arn": d.task_arn, "family": d.family, "revision": d.revision,
            "last_seen": rfc3339(d.last_seen_ms),
        })).collect::<Vec<_>>(),
    })
}

/// One finding as the API shows it.
pub fn vuln_json(v: &VulnRow) -> serde_json::Value {
    json!({
        "id": v.record_id,
        "aliases": v.ids.split(' ').filter(|a| !a.is_empty() && *a != v.record_id).collect::<Vec<_>>(),
        "package": v.package,
        "version": v.version,
        "fixed_version": v.fixed,
        "severity": v.severity,
        "cvss_score": v.cvss_score,
        "cvss_vector": v.cvss_vector,
        "ecosystem": v.ecosystem,
        "kind": v.kind,
        "summary": v.summary,
        "link": v.link,
    })
}

/// `?format=`.
#[derive(Deserialize, Default)]
pub struct FormatQuery {
    format: Option<String>,
}

/// True when the caller asked for CSV.
pub fn wants_csv(headers: &HeaderMap, format: Option<&str>) -> bool {
    format == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))
}

/// One CSV field (RFC 4180 quoting; a leading `= + - @` is prefixed with `'` so spreadsheets
/// do not run it as a formula).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The findings as CSV (header line first).
pub fn vulns_csv(rows: &[VulnRow]) -> String {
    let mut out = String::from(
        "image_id,id,aliases,package,version,fixed_version,severity,cvss_score,cvss_vector,ecosystem,kind,summary\n",
    );
    for v in rows {
        let aliases: Vec<&str> = v
            .ids
            .split(' ')
            .filter(|a| !a.is_empty() && *a != v.record_id)
            .collect();
        let fields = [
            v.image_id.clone(),
            v.record_id.clone(),
            aliases.join(" "),
            v.package.clone(),
            v.version.clone(),
            v.fixed.clone(),
            v.severity.clone(),
            v.cvss_score.map(|s| format!("{s:.1}")).unwrap_or_default(),
            v.cvss_vector.clone(),
            v.ecosystem.clone(),
            v.kind.clone(),
            v.summary.clone(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

fn csv_response(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/images/{id}/vulnerabilities`.
pub async fn image_vulnerabilities(
    State(state): State<WebState>,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
    headers: HeaderMap,
) -> Response {
    match state.store.image(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return api_error(StatusCode::NOT_FOUND, "no image has this id"),
        Err(e) => return store_error(&e),
    }
    match state.store.image_vulns(&id).await {
        Ok(rows) if wants_csv(&headers, q.format.as_deref()) => csv_response("vulnerabilities", vulns_csv(&rows)),
        Ok(rows) => Json(json!({ "image_id": id, "vulnerabilities": rows.iter().map(vuln_json).collect::<Vec<_>>() })).into_response(),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/v1/images/{id}/packages`.
pub async fn image_packages(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    match state.store.image(&id).await {
        Ok(Some(i)) => match state.store.image_packages(&id).await {
            Ok(p) => Json(json!({ "image_id": id, "truncated": i.truncated, "total_packages": i.total_packages, "packages": p })).into_response(),
            Err(e) => store_error(&e),
        },
        Ok(None) => api_error(StatusCode::NOT_FOUND, "no image has this id"),
        Err(e) => store_error(&e),
    }
}

/// `?id=`.
#[derive(Deserialize)]
pub struct IdQuery {
    id: Option<String>,
    format: Option<String>,
}

/// `GET /api/v1/vulnerabilities?id=CVE-…`: where a record (by id or alias) is found.
pub async fn find_vulnerability(
    State(state): State<WebState>,
    Query(q): Query<IdQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = q.id.filter(|i| !i.trim().is_empty() && i.len() <= 200) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "give the advisory id or alias as ?id= (for example ?id=CVE-2024-22195)",
        );
    };
    let rows = match state.store.find_vulnerability(&id).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    if wants_csv(&headers, q.format.as_deref()) {
        return csv_response("vulnerability", vulns_csv(&rows));
    }
    let known = state.store.vuln_id_known(&id).await.unwrap_or(false);
    let mut images = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        if seen.insert(r.image_id.clone())
            && let Ok(Some(i)) = state.store.image(&r.image_id).await
        {
            let findings: Vec<_> = rows
                .iter()
                .filter(|x| x.image_id == r.image_id)
                .map(vuln_json)
                .collect();
            let mut j = image_json(&i);
            j["findings"] = json!(findings);
            images.push(j);
        }
    }
    Json(json!({ "id": id, "known": known, "images": images })).into_response()
}

/// `?defender=`.
#[derive(Deserialize)]
pub struct DefenderQuery {
    defender: Option<String>,
}

/// `GET /api/v1/compliance?defender=ID`.
pub async fn compliance(State(state): State<WebState>, Query(q): Query<DefenderQuery>) -> Response {
    match state.store.compliance(q.defender.as_deref()).await {
        Ok(rows) => Json(json!({ "results": rows.iter().map(|r| json!({
            "defender_id": r.defender_id, "container": r.container, "image_id": r.image_id,
            "check_id": r.check_id, "title": r.title, "severity": r.severity, "passed": r.passed,
            "evidence": r.evidence, "cis": r.cis, "time": rfc3339(r.time_ms),
        })).collect::<Vec<_>>() }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/v1/vulndb`.
pub async fn vulndb_status(State(state): State<WebState>) -> Response {
    match state.store.vulndb_status().await {
        Ok(s) => Json(json!({
            "records": s.records, "newest_modified": s.newest_modified,
            "ecosystems": s.ecosystems.iter().map(|(e, n)| json!({"ecosystem": e, "records": n})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// `POST /api/v1/vulndb`: a body of one OSV record, a JSON array of them, a zip archive of
/// `.json` records (osv.dev's `all.zip`), or `multipart/form-data` whose parts are any of those.
/// Answers 200 with the counts, or 400 with every problem when nothing valid was found.
pub async fn vulndb_import(
    State(state): State<WebState>,
    Extension(_caller): Extension<ApiCaller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body is larger than {VULNDB_BODY_LIMIT} bytes; import big feeds with `defender-console vulndb import`"
                ),
            );
        }
        Err(r) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {}", r.body_text()),
            );
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut l = crate::vulndb::Loaded::default();
        match multipart_boundary(&content_type) {
            Some(boundary) => {
                for part in multipart_parts(&body, &boundary) {
                    l.add_body(part);
                }
            }
            None => l.add_body(&body),
        }
        l
    })
    .await;
    let Ok(loaded) = loaded else {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "import failed");
    };
    if loaded.records.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "no OSV record in the body", "problems": loaded.errors })),
        )
            .into_response();
    }
    let read = loaded.records.len();
    match state.store.import_records(loaded.records).await {
        Ok(s) => Json(json!({
            "read": read, "added": s.added, "updated": s.updated, "unchanged": s.unchanged,
            "images_rematched": s.images_rematched, "problems": loaded.errors,
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim_matches('"').to_string())
    })
}

/// The bodies of the parts of a multipart body (RFC 7578), headers stripped.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for w in starts.windows(2) {
        let part = &body[w[0] + d.len()..w[1]];
        let Some(h) = part.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let mut content = &part[h + 4..];
        if content.ends_with(b"\r\n") {
            content = &content[..content.len() - 2];
        }
        parts.push(content);
    }
    parts
}

/// `GET /api/v1/policies/compliance`.
pub async fn get_compliance_policy(State(state): State<WebState>) -> Response {
    match state.store.compliance_policy().await {
        Ok(p) => Json(json!({ "checks": p.iter().map(|(s, title, default)| json!({
            "check_id": s.check_id, "title": title, "enabled": s.enabled,
            "severity": if s.severity.is_empty() { default.as_str() } else { s.severity.as_str() },
            "default_severity": default,
        })).collect::<Vec<_>>() }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// Body of `PUT /api/v1/policies/compliance`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    checks: Vec<CheckSetting>,
}

/// Checks a setting: known severity names only, sane ids.
pub fn validate_setting(s: &CheckSetting) -> Result<(), String> {
    if s.check_id.is_empty()
        || s.check_id.len() > 100
        || !s
            .check_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{:?} is not a check id", s.check_id));
    }
    if !(s.severity.is_empty()
        || ["critical", "high", "medium", "low"].contains(&s.severity.as_str()))
    {
        return Err(format!(
            "severity of {} must be critical, high, medium or low, not {:?}",
            s.check_id, s.severity
        ));
    }
    Ok(())
}

/// `PUT /api/v1/policies/compliance`: `{"checks": [{"check_id", "enabled", "severity"}]}`.
pub async fn put_compliance_policy(
    State(state): State<WebState>,
    body: Result<Json<PolicyBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let problems: Vec<String> = body
        .checks
        .iter()
        .filter_map(|s| validate_setting(s).err())
        .collect();
    if !problems.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid compliance policy", "problems": problems })),
        )
            .into_response();
    }
    match state.store.set_compliance_policy(&body.checks).await {
        Ok(()) => get_compliance_policy(State(state)).await,
        Err(e) => store_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn multipart() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.json\"\r\n\r\n{\"id\":\"A\"}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"g\"\r\n\r\n[1]\r\n--XyZ--\r\n";
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=XyZ").as_deref(),
            Some("XyZ")
        );
        let parts = multipart_parts(body, "XyZ");
        assert_eq!(parts, vec![&b"{\"id\":\"A\"}"[..], &b"[1]"[..]]);
    }
}
