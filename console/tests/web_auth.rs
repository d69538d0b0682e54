//! Operator login, sessions, logout and CSRF on the UI.

mod db_support;
mod web_support;

use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;
use web_support::{ADMIN_PASSWORD, Web, location, session_cookie};

#[tokio::test]
async fn ui_pages_redirect_to_login_without_a_session() {
    let web = Web::start().await;
    for path in [
        "/manage/defenders",
        "/manage/defenders/rows",
        "/manage/defenders/some-id",
    ] {
        let resp = web.get(path).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&resp).as_deref(), Some("/login"), "{path}");
        // A cookie the Console never issued is no session either.
        let resp = web.get_with_cookie(path, "dfs_forged").await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "{path} with forged cookie"
        );
        assert_eq!(location(&resp).as_deref(), Some("/login"));
    }
    let form = web.get("/login").await;
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    assert!(html.contains("name=\"username\"") && html.contains("name=\"password\""));
}

#[tokio::test]
async fn wrong_credentials_get_401_and_no_cookie() {
    let web = Web::start().await;
    let wrong_password = format!("{ADMIN_PASSWORD}-not");
    for (user, password) in [
        ("admin", wrong_password.as_str()),
        ("nobody", ADMIN_PASSWORD),
        ("", ""),
    ] {
        let resp = web.post_login(user, password).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{user:?}");
        assert!(session_cookie(&resp).is_none());
        let html = resp.text().await.unwrap();
        assert!(html.contains("Invalid username or password"));
    }
}

#[tokio::test]
async fn login_cookie_opens_the_ui_and_logout_closes_it() {
    let web = Web::start().await;
    let resp = web.post_login("admin", ADMIN_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp).as_deref(), Some("/manage/defenders"));
    let set_cookie = resp
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            set_cookie.contains(attr),
            "cookie lacks {attr}: {set_cookie}"
        );
    }
    let cookie = session_cookie(&resp).unwrap();

    let page = web.get_with_cookie("/manage/defenders", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Defenders"));
    assert!(html.contains("action=\"/logout\""));
    // Already logged in: the login page sends the operator home.
    let again = web.get_with_cookie("/login", &cookie).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&again).as_deref(), Some("/manage/defenders"));

    let csrf = web.csrf(&cookie).await;
    let logout = |form: Vec<(&'static str, String)>| {
        web.http
            .post(web.url("/logout"))
            .header("Cookie", format!("defender_session={cookie}"))
            .form(&form)
            .send()
    };
    // Without the CSRF token, or with another one: refused, and the session lives on.
    let resp = logout(vec![]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = logout(vec![("csrf", format!("{csrf}x"))]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let still = web.get_with_cookie("/manage/defenders", &cookie).await;
    assert_eq!(still.status(), StatusCode::OK);

    let resp = logout(vec![("csrf", csrf.clone())]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
    let cleared = resp.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cleared.starts_with("defender_session=;") && cleared.contains("Max-Age=0"));

    let after = web.get_with_cookie("/manage/defenders", &cookie).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&after).as_deref(), Some("/login"));
}

#[tokio::test]
async fn sessions_are_independent() {
    let web = Web::start().await;
    let first = web.login().await;
    let second = web.login().await;
    assert_ne!(first, second);
    let csrf_first = web.csrf(&first).await;
    let csrf_second = web.csrf(&second).await;
    assert_ne!(csrf_first, csrf_second);
    // One session's CSRF token does not work for another.
    let resp = web
        .http
        .post(web.url("/logout"))
        .header("Cookie", format!("defender_session={second}"))
        .form(&[("csrf", csrf_first.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The header form of the token works for scripts.
    let resp = web
        .http
        .post(web.url("/logout"))
        .header("Cookie", format!("defender_session={first}"))
        .header("X-CSRF-Token", &csrf_first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        web.get_with_cookie("/manage/defenders", &first)
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        web.get_with_cookie("/manage/defenders", &second)
            .await
            .status(),
        StatusCode::OK
    );
}
