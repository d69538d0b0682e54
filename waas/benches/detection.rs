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
    // The proxy's common case: a small GET with browser-like headers.
    let small = defender_waas::HttpRequest {
        method: "GET".into(),
        target: "/api/items?id=42&q=hello".into(),
        headers: vec![
            ("host".into(), "shop.example.com".into()),
            (
                "user-agent".into(),
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0".into(),
            ),
            ("accept".into(), "*/*".into()),
        ],
        body: Vec::new(),
        body_complete: true,
    };
    let p = defender_waas::WaasPolicy::default();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(defender_waas::evaluate(&engine, &p, &small));
    }
    println!(
        "small GET (path, 2 query parameters, User-Agent): {:.1} us/request",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
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
