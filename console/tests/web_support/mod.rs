//! Shared harness of the `web_*` tests: a real Console on 127.0.0.1 port 0, an HTTP client that
//! does not follow redirects, login helpers, and Defenders written straight into the store.
#![allow(dead_code)]

use std::time::Duration;

use defender_console::server::{self, RunningConsole, ServeConfig};
use defender_console::store::{Health, NewDefender, SessionRef, TokenKind, now_ms};
use defender_proto::v1::{ContainerInfo, Hello, Mode, TaskMetadata};
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use tokio::net::TcpListener;

use crate::db_support;

pub const ADMIN_PASSWORD: &str = "web-test-admin-password";
/// Heartbeat interval of the sessions the tests open: long, so "connected" cannot lapse mid-test.
pub const INTERVAL_MS: i64 = 120_000;

pub struct Web {
    pub console: RunningConsole,
    pub base: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Web {
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServeConfig {
            data_dir: dir.path().to_owned(),
            database_url: db_support::database_url(dir.path()),
            sans: vec![],
            heartbeat_interval: Duration::from_secs(10),
            defender_retention: Duration::from_secs(3600),
            client_cert_validity: Duration::from_secs(3600),
            admin_password: Some(ADMIN_PASSWORD.to_owned()),
        };
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let console = server::start(cfg, grpc, http).await.unwrap();
        let base = format!("http://{}", console.http_addr);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            console,
            base,
            http,
            _dir: dir,
        }
    }

    /// The Console's data directory (for the CLI commands that work on it).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Response {
        self.http
            .get(self.url(path))
            .header("Cookie", format!("defender_session={cookie}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_login(&self, username: &str, password: &str) -> Response {
        self.http
            .post(self.url("/login"))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap()
    }

    /// Logs in as admin; returns the session cookie's value.
    pub async fn login(&self) -> String {
        let resp = self.post_login("admin", ADMIN_PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        session_cookie(&resp).expect("login sets the session cookie")
    }

    /// The CSRF token of a session, as its pages carry it.
    pub async fn csrf(&self, cookie: &str) -> String {
        let page = self.get_with_cookie("/manage/defenders", cookie).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let marker = "name=\"csrf-token\" content=\"";
        let start = html.find(marker).expect("page carries the CSRF token") + marker.len();
        let end = start + html[start..].find('"').unwrap();
        html[start..end].to_owned()
    }

    pub async fn api_token(&self) -> String {
        self.console
            .store
            .create_token(TokenKind::Api, "web test", None)
            .await
            .unwrap()
    }

    /// Enrolls a Defender directly in the store and opens a heartbeating session for it.
    pub async fn connected_defender(&self, id: &str, metadata: &TaskMetadata) -> SessionRef {
        let store = &self.console.store;
        let token = store
            .create_token(TokenKind::Enrollment, "web test", None)
            .await
            .unwrap();
        let token_id = store
            .check_token(TokenKind::Enrollment, &token)
            .await
            .unwrap()
            .unwrap();
        store
            .insert_defender(&NewDefender {
                id,
                metadata,
                agent_version: "9.8.7-test",
                mode: "standalone",
                enrollment_token: token_id,
                cert_not_after_ms: now_ms() + 3_600_000,
            })
            .await
            .unwrap();
        let hello = Hello {
            metadata: Some(metadata.clone()),
            agent_version: "9.8.7-test".into(),
            mode: Mode::Standalone as i32,
            last_acked_seq: 0,
            capture: None,
        };
        let session = store
            .start_session(id, &hello, "standalone", "web-test-console", INTERVAL_MS)
            .await
            .unwrap();
        store.heartbeat(id, session, &health()).await.unwrap();
        session
    }
}

/// The health every test Defender reports.
pub fn health() -> Health {
    Health {
        queue_depth: 3,
        spool_bytes: 4096,
        dropped_events: 17,
        rss_bytes: 12 << 20,
        cpu_centipercent: 250,
    }
}

/// Task metadata with attacker-controlled text in every field an operator reads.
pub fn hostile_metadata(hostname: &str, family: &str) -> TaskMetadata {
    TaskMetadata {
        hostname: hostname.into(),
        cluster: "arn:aws:ecs:eu-west-1:123456789012:cluster/prod\"><img src=x onerror=alert(2)>"
            .into(),
        task_arn: "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef".into(),
        family: family.into(),
        revision: "42".into(),
        availability_zone: "eu-west-1a".into(),
        launch_type: "FARGATE".into(),
        containers: vec![ContainerInfo {
            name: "web<b>".into(),
            image: "registry.example/app:1.0".into(),
            image_id: "sha256:abc".into(),
            docker_id: "d0c".into(),
            ..Default::default()
        }],
    }
}

pub fn session_cookie(resp: &Response) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("defender_session="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        .filter(|v| !v.is_empty())
}

pub fn location(resp: &Response) -> Option<String> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Finds the object with `id` in an API list.
pub fn find<'a>(list: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    list.as_array()
        .expect("API returns an array")
        .iter()
        .find(|d| d["id"] == id)
}
