//! REST API authentication and parameter checks.

mod db_support;
mod web_support;

use reqwest::StatusCode;
use web_support::Web;

async fn error_of(resp: reqwest::Response) -> String {
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    body["error"].as_str().expect("error message").to_owned()
}

#[tokio::test]
async fn api_requires_a_valid_token() {
    let web = Web::start().await;
    let resp = web.get("/api/v1/defenders").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert!(!error_of(resp).await.is_empty());

    let token = web.api_token().await;
    let forged = format!("{token}x");
    let resp = web.get_with_token("/api/v1/defenders", &forged).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(!error_of(resp).await.is_empty());

    // A valid token under another scheme is no bearer token.
    let resp = web
        .http
        .get(web.url("/api/v1/defenders"))
        .header("Authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = web.get_with_token("/api/v1/defenders", &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: serde_json::Value = resp.json().await.unwrap();
    assert!(list.as_array().is_some());

    // Revoked tokens stop working.
    assert!(
        web.console
            .store
            .revoke_token(defender_console::store::TokenKind::Api, &token)
            .await
            .unwrap()
    );
    let resp = web.get_with_token("/api/v1/defenders", &token).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_validates_its_parameters() {
    let web = Web::start().await;
    let token = web.api_token().await;
    for query in ["?connected=bogus", "?connected=TRUE", "?connected="] {
        let resp = web
            .get_with_token(&format!("/api/v1/defenders{query}"), &token)
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(error_of(resp).await.contains("connected"));
    }
    for query in ["?connected=true", "?connected=false"] {
        let resp = web
            .get_with_token(&format!("/api/v1/defenders{query}"), &token)
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{query}");
    }
    let resp = web
        .get_with_token("/api/v1/defenders/no-such-id", &token)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(!error_of(resp).await.is_empty());
    let resp = web
        .get_with_token("/api/v1/defenders/no-such-id/events", &token)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = web.get_with_token("/api/v1/nothing-here", &token).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(!error_of(resp).await.is_empty());
}

#[tokio::test]
async fn ui_session_works_for_the_api_with_csrf_on_writes() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let resp = web.get_with_cookie("/api/v1/defenders", &cookie).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let post = |csrf: Option<String>| {
        let mut req = web
            .http
            .post(web.url("/api/v1/defenders"))
            .header("Cookie", format!("defender_session={cookie}"));
        if let Some(csrf) = csrf {
            req = req.header("X-CSRF-Token", csrf);
        }
        req.send()
    };
    // A cookie alone is not enough to change anything.
    let resp = post(None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(error_of(resp).await.contains("CSRF"));
    // With the session's token the request passes authentication (the route is GET-only).
    let csrf = web.csrf(&cookie).await;
    let resp = post(Some(csrf)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}
