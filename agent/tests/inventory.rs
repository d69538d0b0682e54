//! Inventory against real artefacts: a binary built with `cargo auditable` (a prepared fixture,
//! and the same crate built in the test when cargo-auditable is installed; see
//! fixtures/auditable-hello.*), a Go binary built here when `go` is installed, a real Debian
//! dpkg status (also as distroless's status.d), a real SQLite rpmdb written by rpm (and one
//! written in the test when rpm is installed, checked against `rpm -qa`), and the size bound.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use defender::inventory::fsroot::{Budget, FsRoot};
use defender::inventory::{binaries, bound, collect};
use defender_proto::MAX_INVENTORY_BYTES;
use defender_proto::v1::{Inventory, InventoryPackage};
use prost::Message;

fn fixture(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn install(root: &Path, rel: &str, from: &Path) {
    let dst = root.join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(from, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn names(p: &[InventoryPackage], kind: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = p
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn cargo_auditable_binary_lists_its_crates() {
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "usr/local/bin/auditable-hello",
        &fixture("tests/fixtures/auditable-hello"),
    );
    let found = binaries::read(&FsRoot::new(root.path()), &mut Budget { entries: 10_000 });
    assert_eq!(
        names(&found, "cargo"),
        vec![("semver".to_string(), "1.0.28".to_string())]
    );
    assert_eq!(found[0].path, "/usr/local/bin/auditable-hello");
}

#[test]
fn go_binary_build_info() {
    let Ok(out) = std::process::Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
    else {
        println!(
            "SKIPPED: `go` is not installed; the Go build-info reader is covered by unit tests only"
        );
        return;
    };
    let goversion = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("go.mod"),
        "module example.com/hello\n\ngo 1.19\n",
    )
    .unwrap();
    std::fs::write(
        src.path().join("main.go"),
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n",
    )
    .unwrap();
    let status = std::process::Command::new("go")
        .args(["build", "-o", "hello", "."])
        .current_dir(src.path())
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", src.path().join("cache"))
        .env("GOPATH", src.path().join("gopath"))
        .env("GOTOOLCHAIN", "local")
        .status()
        .unwrap();
    assert!(status.success());
    let root = tempfile::tempdir().unwrap();
    install(root.path(), "app/hello", &src.path().join("hello"));
    let found = binaries::read(&FsRoot::new(root.path()), &mut Budget { entries: 10_000 });
    let go = names(&found, "go");
    assert!(
        go.contains(&(
            "stdlib".to_string(),
            goversion.trim_start_matches("go").to_string()
        )),
        "{go:?} lacks stdlib {goversion}"
    );
}

#[test]
fn real_dpkg_status_and_distroless_status_d() {
    let status = std::fs::read_to_string(fixture(
        "../console/tests/fixtures/inventory/dpkg-status-bookworm",
    ))
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::copy(
        fixture("../console/tests/fixtures/inventory/os-release-debian12"),
        r.join("etc/os-release"),
    )
    .unwrap();
    // Distroless: one file per package in status.d.
    std::fs::create_dir_all(r.join("var/lib/dpkg/status.d")).unwrap();
    for stanza in status.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let name = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Package: "))
            .unwrap();
        std::fs::write(
            r.join("var/lib/dpkg/status.d").join(name),
            format!("{stanza}\n"),
        )
        .unwrap();
        std::fs::write(
            r.join("var/lib/dpkg/status.d")
                .join(format!("{name}.md5sums")),
            "x",
        )
        .unwrap();
    }
    let inv = collect(&FsRoot::new(r)).inventory;
    let os = inv.os.clone().unwrap();
    assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
    assert_eq!(inv.packages.iter().filter(|p| p.kind == "deb").count(), 20);
    let zlib = inv.packages.iter().find(|p| p.name == "zlib1g").unwrap();
    assert_eq!(
        (
            zlib.source_name.as_str(),
            zlib.version.as_str(),
            zlib.arch.as_str()
        ),
        ("zlib", "1:1.2.13.dfsg-1", "amd64")
    );
    let bash = inv.packages.iter().find(|p| p.name == "bash").unwrap();
    assert_eq!(
        (bash.source_name.as_str(), bash.source_version.as_str()),
        ("", "5.2.15-2"),
        "binNMU: source version differs"
    );
}

#[test]
fn inventory_is_bounded_with_a_truncation_mark() {
    let mut inv = Inventory {
        image_id: "x".into(),
        ..Default::default()
    };
    for i in 0..20_000 {
        inv.packages.push(InventoryPackage {
            kind: if i % 2 == 0 {
                "python".into()
            } else {
                "deb".into()
            },
            name: format!("package-with-a-longish-name-{i}"),
            version: format!("1.{i}.0-1+deb12u1"),
            path: "/usr/lib/python3/dist-packages/some/long/path/METADATA".into(),
            ..Default::default()
        });
    }
    inv.total_packages = 20_000;
    bound(&mut inv);
    assert!(inv.encoded_len() <= MAX_INVENTORY_BYTES);
    assert!(inv.truncated);
    assert_eq!(inv.total_packages, 20_000);
    assert!(inv.packages.len() > 1000);
    // OS packages are kept first: all 10,000 deb packages do not fit, so no python one is left.
    assert!(inv.packages.iter().all(|p| p.kind == "deb"));
}

#[test]
fn java_archive_maven_coordinates() {
    // Debian's liblog4j2-java 2.19.0-2 ships this JAR as /usr/share/java/log4j-api.jar.
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "usr/share/java/log4j-api.jar",
        &fixture("tests/fixtures/log4j-api-2.19.0.jar"),
    );
    let found =
        defender::inventory::java::read(&FsRoot::new(root.path()), &mut Budget { entries: 10_000 });
    assert_eq!(
        names(&found, "java"),
        vec![(
            "org.apache.logging.log4j:log4j-api".to_string(),
            "2.19.0".to_string()
        )]
    );
    assert_eq!(found[0].path, "/usr/share/java/log4j-api.jar");
}

/// (name, version, arch, source name, source version) of the rpm packages, sorted.
fn rpm_rows(p: &[InventoryPackage]) -> Vec<String> {
    let mut v: Vec<String> = p
        .iter()
        .filter(|p| p.kind == "rpm")
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p.name, p.version, p.arch, p.source_name, p.source_version
            )
        })
        .collect();
    v.sort();
    v
}

fn rpm_root(db: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    install(root.path(), "var/lib/rpm/rpmdb.sqlite", db);
    install(
        root.path(),
        "etc/os-release",
        &fixture("tests/fixtures/rpmdb/os-release-almalinux9"),
    );
    root
}

#[test]
fn sqlite_rpmdb_lists_packages_with_epochs_and_source_rpms() {
    let root = rpm_root(&fixture("tests/fixtures/rpmdb/rpmdb.sqlite"));
    let inv = collect(&FsRoot::new(root.path())).inventory;
    assert_eq!(inv.notes, Vec::<String>::new());
    assert_eq!(inv.os.unwrap().id, "almalinux");
    assert_eq!(
        rpm_rows(&inv.packages),
        vec![
            "openssl-libs 1:3.0.1-46.el9_0 x86_64 openssl ",
            "tzdata 2022a-1.el9 noarch  ",
            "zlib 1.2.11-31.el9 x86_64  ",
        ],
        "tzdata's header spans overflow pages"
    );
}

#[test]
fn rpmdb_damage_and_old_forms_are_notes_not_guesses() {
    let db = std::fs::read(fixture("tests/fixtures/rpmdb/rpmdb.sqlite")).unwrap();
    // Truncated at every 4 KiB page boundary and cut mid-page: an error note, never a panic.
    for cut in (0..db.len()).step_by(4096).chain([100, 5000, 70_000]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpmdb.sqlite");
        std::fs::write(&path, &db[..cut]).unwrap();
        let root = rpm_root(&path);
        let inv = collect(&FsRoot::new(root.path())).inventory;
        assert!(
            !inv.notes.is_empty() || rpm_rows(&inv.packages).len() == 3,
            "cut at {cut}: silently short"
        );
    }
    // Overwritten pages: still no panic.
    let mut garbled = db.clone();
    for i in (4096..garbled.len()).step_by(97) {
        garbled[i] = garbled[i].wrapping_mul(31).wrapping_add(7);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rpmdb.sqlite"), &garbled).unwrap();
    let root = rpm_root(&dir.path().join("rpmdb.sqlite"));
    let _ = collect(&FsRoot::new(root.path()));

    for (file, says) in [("Packages", "BerkeleyDB"), ("Packages.db", "NDB")] {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
        std::fs::write(root.path().join("var/lib/rpm").join(file), b"\0\0\0\0").unwrap();
        let inv = collect(&FsRoot::new(root.path())).inventory;
        assert!(
            inv.notes
                .iter()
                .any(|n| n.contains(says) && n.contains("unsupported")),
            "{:?}",
            inv.notes
        );
        assert!(rpm_rows(&inv.packages).is_empty());
    }
}

/// With Debian's rpm installed (deploy/install-deps.sh installs it), a database written now by
/// the fixture script reads the same as `rpm -qa` says.
#[test]
fn sqlite_rpmdb_reader_agrees_with_rpm_itself() {
    if std::process::Command::new("rpmbuild")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: rpm/rpmbuild not installed; the committed rpmdb fixture is still read");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("bash")
        .arg(fixture("tests/fixtures/rpmdb/make-rpmdb.sh"))
        .arg(out.path())
        .env("HOME", out.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let db = out.path().join("rpmdb.sqlite");
    let q = std::process::Command::new("rpm")
        .arg("--dbpath")
        .arg(out.path())
        .args([
            "-qa",
            "--qf",
            "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH} %{SOURCERPM}\\n",
        ])
        .env("HOME", out.path())
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let mut expected: Vec<String> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (src_name, src_vr) = f[3]
                .strip_suffix(".src.rpm")
                .and_then(|s| s.rsplit_once('-'))
                .and_then(|(rest, rel)| {
                    rest.rsplit_once('-')
                        .map(|(n, v)| (n, format!("{v}-{rel}")))
                })
                .unwrap();
            let vr = f[1].rsplit_once(':').map_or(f[1], |(_, vr)| vr);
            format!(
                "{} {} {} {} {}",
                f[0],
                f[1],
                f[2],
                if src_name == f[0] { "" } else { src_name },
                if src_vr == vr { "" } else { src_vr.as_str() }
            )
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 3, "{expected:?}");
    let root = rpm_root(&db);
    let inv = collect(&FsRoot::new(root.path())).inventory;
    assert_eq!(rpm_rows(&inv.packages), expected);
}

/// With cargo-auditable installed (deploy/install-deps.sh installs it), the fixture's crate is
/// built now, and the fresh binary's dependency section is read.
#[test]
fn cargo_auditable_binary_built_in_the_test() {
    let has = std::process::Command::new("cargo")
        .args(["auditable", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        println!(
            "SKIPPED: cargo-auditable is not installed; the prepared fixture binary is read instead"
        );
        return;
    }
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("src")).unwrap();
    std::fs::copy(
        fixture("tests/fixtures/auditable-hello.Cargo.toml"),
        src.path().join("Cargo.toml"),
    )
    .unwrap();
    std::fs::copy(
        fixture("tests/fixtures/auditable-hello.main.rs"),
        src.path().join("src/main.rs"),
    )
    .unwrap();
    let out = std::process::Command::new("cargo")
        .args(["auditable", "build", "--release", "--quiet"])
        .current_dir(src.path())
        .env("CARGO_TARGET_DIR", src.path().join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = tempfile::tempdir().unwrap();
    install(
        root.path(),
        "app/auditable-hello",
        &src.path().join("target/release/auditable-hello"),
    );
    let found = binaries::read(&FsRoot::new(root.path()), &mut Budget { entries: 10_000 });
    assert_eq!(
        names(&found, "cargo"),
        vec![("semver".to_string(), "1.0.28".to_string())]
    );
}
