//! Vulnerabilities and compliance end to end: a real `defender run` inventories a prepared root
//! (a real Debian dpkg status, a real Jinja2 3.1.2 dist-info, a Node package), its inventory
//! travels the real spool and mTLS stream, and the Console matches it against real OSV records
//! imported through the REST API (real HTTP client) and the CLI. A record imported after the
//! image is running shows without restarting anything.

mod common;
mod db_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

fn vuln_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vuln/tests/fixtures/osv")
        .join(name)
}

fn inventory_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inventory")
        .join(name)
}

/// A container root with a real dpkg database, Jinja2 3.1.2 and lodash 4.17.20.
fn prepare_root(root: &Path) {
    let mk = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
    mk("etc");
    mk("var/lib/dpkg");
    mk("usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info");
    mk("app/node_modules/lodash");
    std::fs::copy(
        inventory_fixture("os-release-debian12"),
        root.join("etc/os-release"),
    )
    .unwrap();
    std::fs::copy(
        inventory_fixture("dpkg-status-bookworm"),
        root.join("var/lib/dpkg/status"),
    )
    .unwrap();
    std::fs::copy(
        inventory_fixture("Jinja2-3.1.2.METADATA"),
        root.join("usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info/METADATA"),
    )
    .unwrap();
    std::fs::write(
        root.join("app/node_modules/lodash/package.json"),
        r#"{"name":"lodash","version":"4.17.20"}"#,
    )
    .unwrap();
}

async fn get_json(url: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(vulns: &Value) -> Vec<String> {
    let mut v: Vec<String> = vulns["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["id"].as_str().unwrap(),
                f["package"].as_str().unwrap(),
                f["version"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_is_matched_and_new_records_apply_to_running_images() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    prepare_root(root.path());
    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let token = api_token(&console).await;
    let base = format!("http://{}", console.http_addr);
    let http = reqwest::Client::new();

    // Import the Jinja2 record through the API, as one JSON record.
    let r = http
        .post(format!("{base}/api/v1/vulndb"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(std::fs::read(vuln_fixture("GHSA-h5c8-rqwp-cp95.json")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(
        (j["added"].as_u64(), j["read"].as_u64()),
        (Some(1), Some(1))
    );

    // Bad input: a clear 400, and what is stored stays.
    let r = http
        .post(format!("{base}/api/v1/vulndb"))
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let j: Value = r.json().await.unwrap();
    assert!(
        j["problems"][0].as_str().unwrap().contains("not JSON"),
        "{j}"
    );
    let (_, status) = get_json(&format!("{base}/api/v1/vulndb"), &token).await;
    assert_eq!(status["records"], 1);

    // A protected task: the application sleeps while the Defender inventories its root.
    let bundle = bundle_b64(data.path(), &console).await;
    let mut child = Command::new(defender_bin())
        .arg("run")
        .arg("--data-dir")
        .arg(agent.path())
        .args(["--", "sleep", "30"])
        .env("INSTALL_BUNDLE", &bundle)
        .env("DEFENDER_CONTAINER_NAME", "web")
        .env("DEFENDER_INVENTORY_ROOT", root.path())
        .env("DB_PASSWORD", "hunter2-must-not-leak")
        .env("DEFENDER_INVENTORY_INTERVAL", "1")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let image = eventually("the image's inventory", WAIT, || async {
        let (_, j) = get_json(&format!("{base}/api/v1/images"), &token).await;
        j["images"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    let image_id = image["id"].as_str().unwrap().to_string();
    assert!(
        image_id.starts_with("inventory:"),
        "no digest outside ECS: a content hash ({image_id})"
    );
    assert_eq!(image["os"], "Debian GNU/Linux 12 (bookworm)");
    // 20 dpkg packages + Jinja2 + lodash.
    assert_eq!(image["total_packages"], 22);
    assert_eq!(image["truncated"], false);
    assert_eq!(image["counts"]["medium"], 1);
    assert_eq!(image["vulnerabilities"], 1);
    let defender_id = image["defenders"][0]["defender_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(image["defenders"][0]["container"], "web");

    let enc = image_id.replace(':', "%3A");
    let (code, vulns) = get_json(
        &format!("{base}/api/v1/images/{enc}/vulnerabilities"),
        &token,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(ids(&vulns), vec!["GHSA-h5c8-rqwp-cp95 Jinja2 3.1.2"]);
    let f = &vulns["vulnerabilities"][0];
    assert_eq!(f["fixed_version"], "3.1.3");
    assert_eq!(f["severity"], "medium");
    assert_eq!(f["cvss_score"], 5.4);
    assert_eq!(
        f["cvss_vector"],
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"
    );
    assert_eq!(f["aliases"], serde_json::json!(["CVE-2024-22195"]));
    assert_eq!(f["ecosystem"], "PyPI");

    // The packages, with dpkg source packages.
    let (_, pkgs) = get_json(&format!("{base}/api/v1/images/{enc}/packages"), &token).await;
    let libssl = pkgs["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libssl3")
        .expect("libssl3 listed");
    assert_eq!(
        (
            libssl["kind"].as_str(),
            libssl["source_name"].as_str(),
            libssl["version"].as_str()
        ),
        (Some("deb"), Some("openssl"), Some("3.0.19-1~deb12u2"))
    );

    // A new record, imported with the CLI from a zip archive (osv.dev's all.zip shape), shows
    // on the running image without restarting anything.
    let zip_path = data.path().join("npm-all.zip");
    {
        let f = std::fs::File::create(&zip_path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file(
            "GHSA-35jh-r3h4-6jhm.json",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        std::io::Write::write_all(
            &mut z,
            &std::fs::read(vuln_fixture("GHSA-35jh-r3h4-6jhm.json")).unwrap(),
        )
        .unwrap();
        z.finish().unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_defender-console"))
        .args(["vulndb", "import", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .arg(&zip_path)
        .arg(vuln_fixture("DSA-3029-1.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("read 2 records: 2 added, 0 updated, 0 unchanged; 1 images re-matched"),
        "{stdout}"
    );
    let (_, vulns) = get_json(
        &format!("{base}/api/v1/images/{enc}/vulnerabilities"),
        &token,
    )
    .await;
    assert_eq!(
        ids(&vulns),
        vec![
            "GHSA-35jh-r3h4-6jhm lodash 4.17.20",
            "GHSA-h5c8-rqwp-cp95 Jinja2 3.1.2"
        ]
    );
    let lodash = vulns["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["package"] == "lodash")
        .unwrap();
    assert_eq!(
        (
            lodash["severity"].as_str(),
            lodash["cvss_score"].as_f64(),
            lodash["fixed_version"].as_str()
        ),
        (Some("high"), Some(7.2), Some("4.17.21"))
    );

    // Re-importing the same records changes nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_defender-console"))
        .args(["vulndb", "import", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .arg(vuln_fixture("GHSA-h5c8-rqwp-cp95.json"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 added, 0 updated, 1 unchanged"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_defender-console"))
        .args(["vulndb", "status", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("records: 3")
            && status.contains("npm: 1")
            && status.contains("PyPI: 1")
            && status.contains("Debian:7: 1"),
        "{status}"
    );
    assert!(
        status.contains("newest modified: 2024-01-11T15:20:48Z"),
        "{status}"
    );

    // Where is CVE-2021-23337 running?
    let (_, found) = get_json(
        &format!("{base}/api/v1/vulnerabilities?id=cve-2021-23337"),
        &token,
    )
    .await;
    assert_eq!(found["known"], true);
    assert_eq!(found["images"].as_array().unwrap().len(), 1);
    assert_eq!(found["images"][0]["id"], image_id.as_str());
    assert_eq!(
        found["images"][0]["defenders"][0]["defender_id"],
        defender_id.as_str()
    );
    assert_eq!(found["images"][0]["findings"][0]["package"], "lodash");
    let (_, none) = get_json(
        &format!("{base}/api/v1/vulnerabilities?id=CVE-2014-3616"),
        &token,
    )
    .await;
    assert_eq!(
        (
            none["known"].as_bool(),
            none["images"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0))
    );

    // CSV export.
    let csv = http
        .get(format!("{base}/api/v1/images/{enc}/vulnerabilities"))
        .bearer_auth(&token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0]
            .starts_with("image_id,id,aliases,package,version,fixed_version,severity,cvss_score")
    );
    assert!(lines.iter().any(|l| {
        l.contains("GHSA-35jh-r3h4-6jhm,CVE-2021-23337,lodash,4.17.20,4.17.21,high,7.2,")
    }));

    // Compliance: evaluated in the running container; secret values never leave it.
    let results = eventually("compliance results", WAIT, || async {
        let (_, j) = get_json(
            &format!("{base}/api/v1/compliance?defender={defender_id}"),
            &token,
        )
        .await;
        j["results"].as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    let check = |id: &str| {
        results
            .iter()
            .find(|r| r["check_id"] == id)
            .unwrap_or_else(|| panic!("{id} reported"))
            .clone()
    };
    let secrets = check("defender-103");
    assert_eq!(secrets["passed"], false);
    assert!(
        secrets["evidence"]
            .as_str()
            .unwrap()
            .contains("DB_PASSWORD")
    );
    assert!(
        !serde_json::to_string(&results).unwrap().contains("hunter2"),
        "a secret's value reached the Console"
    );
    let as_root = unsafe { libc::geteuid() } == 0;
    assert_eq!(check("defender-101")["passed"], !as_root);
    assert_eq!(check("defender-101")["cis"], "4.1");
    // Failed checks come first.
    let first_pass = results
        .iter()
        .position(|r| r["passed"] == true)
        .unwrap_or(results.len());
    assert!(results[first_pass..].iter().all(|r| r["passed"] == true));

    // The compliance policy: disabling a check removes it, a severity override shows at once.
    let r = http
        .put(format!("{base}/api/v1/policies/compliance"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"checks": [
            {"check_id": "defender-103", "enabled": false, "severity": ""},
            {"check_id": "defender-106", "enabled": true, "severity": "critical"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, j) = get_json(
        &format!("{base}/api/v1/compliance?defender={defender_id}"),
        &token,
    )
    .await;
    let results = j["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["check_id"] != "defender-103"));
    assert_eq!(
        results
            .iter()
            .find(|r| r["check_id"] == "defender-106")
            .unwrap()["severity"],
        "critical"
    );
    let r = http
        .put(format!("{base}/api/v1/policies/compliance"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"checks": [{"check_id": "defender-106", "enabled": true, "severity": "urgent"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // An image the Console does not know.
    let (code, _) = get_json(
        &format!("{base}/api/v1/images/sha256%3Anope/vulnerabilities"),
        &token,
    )
    .await;
    assert_eq!(code, 404);
    // Without a token: refused.
    let r = http
        .get(format!("{base}/api/v1/images"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A package installed at run time: the Defender notices and sends a new inventory (keyed by
    // its new content hash, as no digest is known outside ECS).
    std::fs::create_dir_all(root.path().join("app/node_modules/minimist")).unwrap();
    std::fs::write(
        root.path().join("app/node_modules/minimist/package.json"),
        r#"{"name":"minimist","version":"1.2.5"}"#,
    )
    .unwrap();
    let newer = eventually("a second inventory after the change", WAIT, || async {
        let (_, j) = get_json(&format!("{base}/api/v1/images?sort=last"), &token).await;
        j["images"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["total_packages"] == 23).cloned())
    })
    .await;
    assert_ne!(newer["id"], image_id.as_str());
    assert_eq!(
        newer["vulnerabilities"], 2,
        "the new inventory is matched at arrival"
    );

    child.kill().await.unwrap();
}

/// An ECS task metadata endpoint (v4 `/task`) on 127.0.0.1, answering every request with
/// `body`: the application container `app` (no health check) and the Defender sidecar.
async fn serve_task_metadata(body: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/v4/task-meta")
}

/// Sidecar mode end to end, with real processes: the Defender sidecar and an "application
/// container" share a pid namespace (`pidMode: task`), the application runs chrooted in its
/// own mount namespace on a prepared AlmaLinux 9 root with a real SQLite rpmdb, and the
/// sidecar inventories it through `/proc/<pid>/root`. The image (keyed by the digest the task
/// metadata gives) reaches the Console and matches real AlmaLinux advisories; the compliance
/// results say the container has no health check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_inventories_the_app_container_through_its_proc_root() {
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: namespaces and chroot need root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let task = tempfile::tempdir().unwrap();
    let app_root = tempfile::tempdir().unwrap();
    let r = app_root.path();
    let agent_fixture = |p: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../agent/tests/fixtures")
            .join(p)
    };
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/rpm")).unwrap();
    std::fs::copy(
        agent_fixture("rpmdb/os-release-almalinux9"),
        r.join("etc/os-release"),
    )
    .unwrap();
    std::fs::copy(
        agent_fixture("rpmdb/rpmdb.sqlite"),
        r.join("var/lib/rpm/rpmdb.sqlite"),
    )
    .unwrap();

    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let token = api_token(&console).await;
    let base = format!("http://{}", console.http_addr);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_defender-console"))
        .args(["vulndb", "import", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .arg(vuln_fixture("ALSA-2022-7314.json"))
        .arg(vuln_fixture("ALSA-2023-0946.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let digest = "sha256:3f1c6c2ab47c1a2c5e3e0c9f0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    let metadata = serve_task_metadata(format!(
        r#"{{"Cluster": "prod", "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef",
            "Family": "alma-task", "Revision": "7", "LaunchType": "FARGATE",
            "Containers": [
              {{"Name": "app", "Image": "registry.example/alma-app:1", "ImageID": "{digest}", "DockerId": "a1"}},
              {{"Name": "defender", "Image": "registry.example/fargate-defender:0.1", "ImageID": "sha256:dd",
                "DockerId": "d1", "Health": {{"status": "HEALTHY"}}}}
            ]}}"#
    ))
    .await;

    // One pid namespace for the task; the app in a mount namespace of its own, chrooted. The
    // sidecar starts once the app's root is the prepared one (bounded wait), as in a task
    // whose containers are created before they run.
    let bundle = bundle_b64(data.path(), &console).await;
    let script = r#"
        unshare --mount perl -e 'chroot($ARGV[0]) or die "chroot: $!"; chdir("/"); sleep 300' "$APP_ROOT" &
        app=$!
        i=0
        while [ "$(readlink /proc/$app/root)" != "$APP_ROOT" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        "$DEFENDER" fargate sidecar --mode sidecar --data-dir "$TASK/data" --socket "$TASK/defender.sock" &
        wait
    "#;
    let mut task_ns = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            script,
        ])
        .env("APP_ROOT", r)
        .env("DEFENDER", defender_bin())
        .env("TASK", task.path())
        .env("INSTALL_BUNDLE", &bundle)
        .env("ECS_CONTAINER_METADATA_URI_V4", &metadata)
        .env("DEFENDER_INVENTORY_INTERVAL", "1")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let image = eventually("the app container's image", WAIT, || async {
        let (_, j) = get_json(&format!("{base}/api/v1/images"), &token).await;
        j["images"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(image["id"], digest, "keyed by the task metadata's digest");
    assert_eq!(image["name"], "registry.example/alma-app:1");
    assert_eq!(image["os"], "AlmaLinux 9.0 (Emerald Puma)");
    assert_eq!(image["total_packages"], 3);
    assert_eq!(image["defenders"][0]["container"], "app");
    let (_, images) = get_json(&format!("{base}/api/v1/images"), &token).await;
    assert_eq!(
        images["images"].as_array().unwrap().len(),
        1,
        "only the app container: the sidecar's own mount namespace is skipped"
    );
    let defender_id = image["defenders"][0]["defender_id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = defenders(&console, &token, "").await;
    assert_eq!(list[0]["mode"], "sidecar");

    let enc = digest.replace(':', "%3A");
    let (_, vulns) = get_json(
        &format!("{base}/api/v1/images/{enc}/vulnerabilities"),
        &token,
    )
    .await;
    assert_eq!(
        ids(&vulns),
        vec![
            "ALSA-2022:7314 zlib 1.2.11-31.el9",
            "ALSA-2023:0946 openssl-libs 1:3.0.1-46.el9_0",
        ]
    );
    let zlib = vulns["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["package"] == "zlib")
        .unwrap();
    assert_eq!(
        (
            zlib["fixed_version"].as_str(),
            zlib["severity"].as_str(),
            zlib["ecosystem"].as_str()
        ),
        (Some("1.2.11-32.el9_0"), Some("medium"), Some("AlmaLinux:9"))
    );
    let (_, pkgs) = get_json(&format!("{base}/api/v1/images/{enc}/packages"), &token).await;
    let ossl = pkgs["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "openssl-libs")
        .unwrap();
    assert_eq!(
        (
            ossl["kind"].as_str(),
            ossl["source_name"].as_str(),
            ossl["arch"].as_str()
        ),
        (Some("rpm"), Some("openssl"), Some("x86_64"))
    );
    // Where is CVE-2022-37434 running? (AlmaLinux names its CVEs under `related`.)
    let (_, found) = get_json(
        &format!("{base}/api/v1/vulnerabilities?id=CVE-2022-37434"),
        &token,
    )
    .await;
    assert_eq!(found["images"][0]["id"], digest);

    // Compliance of the app container, from the task metadata: no health check.
    let results = eventually("compliance results", WAIT, || async {
        let (_, j) = get_json(
            &format!("{base}/api/v1/compliance?defender={defender_id}"),
            &token,
        )
        .await;
        j["results"].as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    let health = results
        .iter()
        .find(|r| r["check_id"] == "defender-102")
        .expect("defender-102 reported");
    assert_eq!(health["passed"], false);
    assert_eq!(health["cis"], "4.6");
    assert!(
        health["evidence"]
            .as_str()
            .unwrap()
            .contains("no healthCheck"),
        "{health}"
    );

    task_ns.kill().await.unwrap();
}
