//! Detection benchmark: per-family detection rate on the OWASP CRS regression payloads, the
//! false-positive rate on ordinary traffic, and inspection throughput.
//!
//! Run: `cargo bench -p defender-waas --bench detection` (add `-- --misses` to list what is
//! missed and which benign requests were flagged).

#[path = "../tests/corpus/mod.rs"]
mod corpus;

use std::time::Instant;

fn main() {
    let show = std::env::args().any(|a| a == "--misses");
    let engine = defender_waas::Engine::new();
    let t = Instant::now();
    let r = corpus::measure(&engine);
    let elapsed = t.elapsed();
    println!(
        "family      own-family  any-rule  payloads   (OWASP CRS regression tests, expected matches only)"
    );
    let mut total = 0;
    for (fam, (own, any, n)) in &r.per_family {
        total += n;
        println!(
            "{fam:<10} {:>9.1} % {:>7.1} % {n:>9}",
            100.0 * *own as f64 / *n as f64,
            100.0 * *any as f64 / *n as f64
        );
    }
    println!(
        "false positives: {} of {} benign requests = {:.2} %",
        r.false_positives,
        r.benign_total,
        100.0 * r.false_positives as f64 / r.benign_total as f64
    );
    let n = total + r.benign_total;
    println!(
        "inspection: {n} requests in {:.1} ms = {:.1} us/request",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
    if show {
        for m in &r.misses {
            println!("MISS {m}");
        }
        for f in &r.fp_examples {
            println!("FP {f}");
        }
    }
}
