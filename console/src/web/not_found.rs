//! The answer to an unknown URL: a page that says what was asked for and where to go (with the
//! navigation when the browser is logged in), or `{"error": "not found"}` under `/api/`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};

use super::layout::{self, NAV};
use super::security::CspNonce;
use super::{WebState, api_error, auth};

/// Longest part of the unknown path shown back, in characters.
const SHOWN_PATH_CHARS: usize = 200;

/// The router's fallback.
pub async fn fallback(
    State(state): State<WebState>,
    nonce: Option<Extension<CspNonce>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if uri.path().starts_with("/api/") {
        return api_error(StatusCode::NOT_FOUND, "not found");
    }
    let Some(Extension(nonce)) = nonce else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    // A database error only costs the navigation: the page is still a 404.
    let operator = auth::operator_from(&state.store, &headers)
        .await
        .ok()
        .flatten();
    let page = match &operator {
        Some(op) => layout::page(&nonce, op, "", "Page not found", body(uri.path(), true)),
        None => layout::bare_page(
            &nonce,
            "Page not found",
            html! { main.not-found { (body(uri.path(), false)) } },
        ),
    };
    (StatusCode::NOT_FOUND, Html(page.into_string())).into_response()
}

fn body(path: &str, logged_in: bool) -> Markup {
    let shown: String = path.chars().take(SHOWN_PATH_CHARS).collect();
    let cut = shown.len() < path.len();
    html! {
        h1 { "Page not found" }
        p { "There is no page at " code.wrap { (shown) @if cut { "…" } } "." }
        p { "The pages of the Console:" }
        ul {
            @for item in NAV {
                li { a href=(item.href) { (item.section) " › " (item.label) } }
            }
        }
        @if !logged_in {
            p.muted { a href="/login" { "Log in" } " to open them." }
        }
    }
}
