//! Inventory benchmark: a Debian root with ~500 real dpkg packages (the first 500 stanzas of this
//! machine's `/var/lib/dpkg/status`, or the test fixture repeated when that file is absent) and a
//! site-packages with 200 Python distributions (the real Jinja2 3.1.2 METADATA under 200 names).
//!
//! `cargo bench -p defender --bench inventory`. Prints the inventory's wall and CPU time
//! (median of 20 runs) beside a baseline measured in the same run: reading the same files
//! (status + every METADATA) into memory without parsing or walking; and the growth of the
//! process's peak RSS (`VmHWM`, reset through `/proc/self/clear_refs`) during one inventory.
//!
//! First an rpm root: a SQLite rpmdb of 500 package headers (the fixture's three real headers,
//! agent/tests/fixtures/rpmdb, repeated; written with Python's `sqlite3` module, so this part
//! is skipped without `python3`), read by the Defender's own SQLite table reader, beside a
//! plain read of the same file.

use std::path::Path;
use std::time::{Duration, Instant};

use defender::inventory::{collect, fsroot::FsRoot, rpmdb};

const DEBS: usize = 500;
const DISTS: usize = 200;
const RUNS: usize = 20;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Peak-RSS growth (KiB) while `f` runs: the peak is reset to the current RSS first.
fn peak_growth(f: impl FnOnce()) -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    f();
    status_kib("VmHWM:").saturating_sub(before)
}

fn rpm_bench() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("var/lib/rpm/rpmdb.sqlite");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let script = r#"
import sqlite3, sys
src = sqlite3.connect("file:" + sys.argv[1] + "?immutable=1", uri=True)
blobs = [b for (b,) in src.execute("SELECT blob FROM Packages ORDER BY hnum")]
out = sqlite3.connect(sys.argv[2])
out.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
out.executemany("INSERT INTO Packages (blob) VALUES (?)", [(blobs[i % len(blobs)],) for i in range(500)])
out.commit()
"#;
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(manifest.join("tests/fixtures/rpmdb/rpmdb.sqlite"))
        .arg(&db)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("rpmdb: skipped (no python3 to write the database)");
        return;
    }
    let fs = FsRoot::new(dir.path());
    let growth = peak_growth(|| {
        std::hint::black_box(rpmdb::read(&fs, &mut Vec::new()));
    });
    let base_growth = peak_growth(|| {
        std::hint::black_box(std::fs::read(&db).map(|b| b.len()).unwrap_or(0));
    });
    let (mut read, mut base) = (Vec::new(), Vec::new());
    let mut n = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut notes = Vec::new();
        n = rpmdb::read(&fs, &mut notes).len();
        read.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(std::fs::read(&db).map(|b| b.len()).unwrap_or(0));
        base.push(t.elapsed());
    }
    let (r, b) = (median(read), median(base));
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!("rpmdb.sqlite: {n} packages, {} KiB", size / 1024);
    println!(
        "rpmdb read (median of {RUNS}):   {:>8.2} ms wall; peak RSS growth {growth} KiB",
        r.as_secs_f64() * 1e3
    );
    println!(
        "baseline: read the file whole: {:>8.2} ms wall; peak RSS growth {base_growth} KiB",
        b.as_secs_f64() * 1e3
    );
    println!(
        "ratio rpmdb read / baseline:   {:>8.1} x",
        r.as_secs_f64() / b.as_secs_f64().max(1e-9)
    );
}

/// Each part runs in a process of its own (this program again, with `INVENTORY_BENCH_PART`),
/// so that one part's RSS growth is not hidden in memory the other left to the allocator.
fn main() {
    match std::env::var("INVENTORY_BENCH_PART").as_deref() {
        Ok("rpm") => rpm_bench(),
        Ok("deb") => deb_bench(),
        _ => {
            for part in ["deb", "rpm"] {
                let ok = std::process::Command::new(std::env::current_exe().unwrap())
                    .env("INVENTORY_BENCH_PART", part)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "the {part} part failed");
            }
        }
    }
}

fn deb_bench() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = manifest.join("../console/tests/fixtures/inventory");
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
    std::fs::copy(
        fixtures.join("os-release-debian12"),
        r.join("etc/os-release"),
    )
    .unwrap();
    let source = std::fs::read_to_string("/var/lib/dpkg/status").unwrap_or_else(|_| {
        std::fs::read_to_string(fixtures.join("dpkg-status-bookworm")).unwrap()
    });
    let stanzas: Vec<&str> = source
        .split("\n\n")
        .filter(|s| s.contains("Package:"))
        .collect();
    let status: Vec<String> = (0..DEBS)
        .map(|i| stanzas[i % stanzas.len()].to_string())
        .collect();
    std::fs::write(r.join("var/lib/dpkg/status"), status.join("\n\n") + "\n").unwrap();
    let meta = std::fs::read_to_string(fixtures.join("Jinja2-3.1.2.METADATA")).unwrap();
    let site = r.join("usr/local/lib/python3.11/site-packages");
    let mut files = vec![r.join("var/lib/dpkg/status")];
    for i in 0..DISTS {
        let d = site.join(format!("dist{i}-1.{i}.0.dist-info"));
        std::fs::create_dir_all(&d).unwrap();
        let m = meta
            .replacen("Name: Jinja2", &format!("Name: dist{i}"), 1)
            .replacen("Version: 3.1.2", &format!("Version: 1.{i}.0"), 1);
        std::fs::write(d.join("METADATA"), m).unwrap();
        std::fs::write(d.join("RECORD"), "x").unwrap();
        files.push(d.join("METADATA"));
    }
    let fs = FsRoot::new(r);
    // Before any other run: later runs reuse memory the allocator kept.
    let growth = peak_growth(|| {
        std::hint::black_box(collect(&fs));
    });

    let (mut wall, mut cpu, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let mut packages = 0;
    for _ in 0..RUNS {
        let (t, c) = (Instant::now(), cpu_time());
        let inv = collect(&fs).inventory;
        wall.push(t.elapsed());
        cpu.push(cpu_time() - c);
        packages = inv.packages.len();
        let t = Instant::now();
        let mut bytes = 0;
        for f in &files {
            bytes += std::fs::read(f).map(|b| b.len()).unwrap_or(0);
        }
        std::hint::black_box(bytes);
        base.push(t.elapsed());
    }
    let (w, c, b) = (median(wall), median(cpu), median(base));
    println!(
        "root: {} dpkg packages, {DISTS} Python distributions; inventory found {packages} packages",
        status.len()
    );
    println!(
        "inventory (median of {RUNS}):  {:>8.2} ms wall, {:>8.2} ms CPU",
        w.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3
    );
    println!(
        "baseline: read the same files: {:>8.2} ms wall",
        b.as_secs_f64() * 1e3
    );
    println!(
        "ratio inventory / baseline:    {:>8.1} x",
        w.as_secs_f64() / b.as_secs_f64().max(1e-9)
    );
    println!("peak RSS growth during the first inventory: {growth} KiB");
}
