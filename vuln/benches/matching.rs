//! Matching benchmark: 1,000 packages against 120,000 OSV records shaped like the real ones in
//! tests/fixtures/osv (Debian, PyPI and npm ecosystems, `introduced`/`fixed` ranges, aliases,
//! CVSS vectors), generated from those records with new ids, names and versions.
//!
//! `cargo bench -p defender-vuln --bench matching`. Prints the index build time, the matching
//! time, and a baseline measured in the same run: the same lookups by a linear scan over every
//! `affected` entry (names compared only, no version evaluation; timed on 20 packages and
//! scaled) — what matching would cost without the index.

use std::hint::black_box;
use std::time::Instant;

use defender_vuln::{Index, PackageKey, Record};

const RECORDS: usize = 120_000;
const PACKAGES: usize = 1_000;
const NAMES: usize = 30_000;

fn fixture(name: &str) -> Record {
    let path = format!("{}/tests/fixtures/osv/{name}", env!("CARGO_MANIFEST_DIR"));
    Record::parse(&std::fs::read(path).expect("fixture")).expect("valid OSV")
}

fn main() {
    let templates = [
        (fixture("GHSA-h5c8-rqwp-cp95.json"), "PyPI"),
        (fixture("GHSA-35jh-r3h4-6jhm.json"), "npm"),
        (fixture("DSA-3029-1.json"), "Debian:12"),
    ];
    let version = |eco: &str, major: usize, minor: usize| match eco {
        "Debian:12" => format!("{major}.{minor}.1-2+deb12u{}", minor % 7),
        _ => format!("{major}.{minor}.0"),
    };
    let t = Instant::now();
    let mut records = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let (tpl, eco) = &templates[i % templates.len()];
        let mut r = tpl.clone();
        r.id = format!("BENCH-{i}");
        r.aliases = vec![format!("CVE-2099-{i}")];
        for a in &mut r.affected {
            a.package.ecosystem = (*eco).to_string();
            a.package.name = format!("pkg-{}", (i * 7919) % NAMES);
            for range in &mut a.ranges {
                for e in &mut range.events {
                    if e.fixed.is_some() {
                        e.fixed = Some(version(eco, 1 + i % 5, i % 40));
                    }
                }
            }
        }
        records.push(r);
    }
    let generated = t.elapsed();

    let t = Instant::now();
    let index = Index::new(records.clone());
    let built = t.elapsed();

    let packages: Vec<(PackageKey, String)> = (0..PACKAGES)
        .map(|i| {
            let eco = ["PyPI", "npm", "Debian:12"][i % 3];
            (
                PackageKey::of_record(eco, &format!("pkg-{}", (i * 31) % NAMES)),
                version(eco, 1 + i % 5, (i * 3) % 40),
            )
        })
        .collect();

    let t = Instant::now();
    let mut findings = 0;
    for (k, v) in &packages {
        findings += black_box(index.find(k, v)).len();
    }
    let matched = t.elapsed();

    // The scan is slow: time it on the first SCANNED packages and scale to PACKAGES.
    const SCANNED: usize = 20;
    let t = Instant::now();
    let mut candidates = 0usize;
    for (k, _) in packages.iter().take(SCANNED) {
        for r in &records {
            for a in &r.affected {
                if a.package.name == k.name && a.package.ecosystem == k.ecosystem {
                    candidates += 1;
                }
            }
        }
    }
    black_box(candidates);
    let scan = t.elapsed() * (PACKAGES / SCANNED) as u32;

    println!(
        "records: {RECORDS} (generated in {:.0} ms), packages: {PACKAGES}",
        generated.as_secs_f64() * 1e3
    );
    println!(
        "index build:             {:>9.1} ms",
        built.as_secs_f64() * 1e3
    );
    println!(
        "match {PACKAGES} packages:      {:>9.2} ms  ({findings} findings)",
        matched.as_secs_f64() * 1e3
    );
    println!(
        "baseline linear scan:    {:>9.1} ms  (names only, no version evaluation; {SCANNED} packages timed, scaled to {PACKAGES}; {candidates} hits)",
        scan.as_secs_f64() * 1e3
    );
    println!(
        "ratio scan / match:      {:>9.0} x",
        scan.as_secs_f64() / matched.as_secs_f64().max(1e-9)
    );
}
