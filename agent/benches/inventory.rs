//! Inventory benchmark: a Debian root with ~500 real dpkg packages (the first 500 stanzas of this
//! machine's `/var/lib/dpkg/status`, or the test fixture repeated when that file is absent) and a
//! site-packages with 200 Python distributions (the real Jinja2 3.1.2 METADATA under 200 names).
//!
//! `cargo bench -p defender --bench inventory`. Prints the inventory's wall and CPU time
//! (median of 20 runs) beside a baseline measured in the same run: reading the same files
//! (status + every METADATA) into memory without parsing or walking.

use std::path::Path;
use std::time::{Duration, Instant};

use defender::inventory::{collect, fsroot::FsRoot};

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

fn main() {
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
}
