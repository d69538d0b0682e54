//! Spool throughput: appends under each fsync policy and replay with `read_after`, each next to a
//! baseline measured in the same run (plain `write_all` / buffered reads of the same bytes with
//! the same fsync behaviour), because the machine is shared and absolute figures are noisy.
//!
//! Run: `cargo bench -p defender --bench spool` (set `SPOOL_BENCH_DIR` to measure another disk).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use defender::spool::{FsyncPolicy, RECORD_OVERHEAD, Spool, SpoolConfig};

const PAYLOAD: usize = 200;
const APPENDS: u64 = 200_000;
const APPENDS_ALWAYS: u64 = 2_000;
const REPLAY: u64 = 100_000;
const BATCH: usize = 500;
const ROUNDS: usize = 3;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn payload(seq: u64) -> Vec<u8> {
    let mut v = vec![b'x'; PAYLOAD];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

fn config(fsync: FsyncPolicy) -> SpoolConfig {
    SpoolConfig {
        fsync,
        ..SpoolConfig::default()
    }
}

/// Best (shortest) of `ROUNDS` runs of `f`, which gets a fresh directory each time.
fn best(
    base: &Path,
    rounds: usize,
    mut f: impl FnMut(&Path) -> BenchResult<()>,
) -> BenchResult<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let dir = tempfile::tempdir_in(base)?;
        let t = Instant::now();
        f(dir.path())?;
        best = best.min(t.elapsed());
    }
    Ok(best)
}

fn spool_append(dir: &Path, fsync: FsyncPolicy, n: u64) -> BenchResult<()> {
    let (mut spool, _) = Spool::open(dir, config(fsync))?;
    for _ in 0..n {
        spool.append_with(payload)?;
    }
    spool.sync_now()?;
    Ok(())
}

/// The same bytes (header of the same size, no checksum) written to one plain file.
fn baseline_append(dir: &Path, fsync: FsyncPolicy, n: u64) -> BenchResult<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("plain"))?;
    let mut frame = Vec::new();
    let mut last_sync = Instant::now();
    for seq in 1..=n {
        let p = payload(seq);
        frame.clear();
        frame.extend_from_slice(&(p.len() as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&p);
        f.write_all(&frame)?;
        match fsync {
            FsyncPolicy::Always => f.sync_data()?,
            FsyncPolicy::Interval(d) if last_sync.elapsed() >= d => {
                f.sync_data()?;
                last_sync = Instant::now();
            }
            _ => {}
        }
    }
    if fsync != FsyncPolicy::Never {
        f.sync_data()?;
    }
    Ok(())
}

fn line(label: &str, n: u64, spool: Duration, baseline: Duration) {
    let bytes = n as f64 * (PAYLOAD as u64 + RECORD_OVERHEAD) as f64;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mbs = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    println!(
        "{label:<28} {n:>7} rec  spool {:>10.0} ev/s {:>7.1} MB/s | baseline {:>10.0} ev/s {:>7.1} MB/s | spool/baseline {:.2}",
        rate(spool),
        mbs(spool),
        rate(baseline),
        mbs(baseline),
        rate(spool) / rate(baseline),
    );
}

fn bench_append(
    base: &Path,
    label: &str,
    fsync: FsyncPolicy,
    n: u64,
    rounds: usize,
) -> BenchResult<()> {
    let spool = best(base, rounds, |d| spool_append(d, fsync, n))?;
    let baseline = best(base, rounds, |d| baseline_append(d, fsync, n))?;
    line(label, n, spool, baseline);
    Ok(())
}

fn segment_files(dir: &Path) -> BenchResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    Ok(files)
}

fn bench_replay(base: &Path) -> BenchResult<()> {
    let dir = tempfile::tempdir_in(base)?;
    spool_append(dir.path(), FsyncPolicy::Never, REPLAY)?;

    let mut spool_best = Duration::MAX;
    let mut open_best = Duration::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let (mut spool, _) = Spool::open(dir.path(), config(FsyncPolicy::Never))?;
        open_best = open_best.min(t.elapsed());
        let t = Instant::now();
        let (mut after, mut count, mut sum) = (0u64, 0u64, 0usize);
        loop {
            let batch = spool.read_after(after, BATCH, usize::MAX)?;
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            count += batch.len() as u64;
            sum += batch.iter().map(|(_, p)| p.len()).sum::<usize>();
            after = last;
        }
        spool_best = spool_best.min(t.elapsed());
        if count != REPLAY || sum != REPLAY as usize * PAYLOAD {
            return Err(format!("replayed {count} records / {sum} bytes").into());
        }
    }

    // Baseline: read the same segment files record by record (header, then payload into a Vec).
    let files = segment_files(dir.path())?;
    let mut base_best = Duration::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut count = 0u64;
        for path in &files {
            let mut r = BufReader::with_capacity(64 * 1024, File::open(path)?);
            let mut h = [0u8; 16];
            while r.read_exact(&mut h).is_ok() {
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let mut p = vec![0u8; len];
                r.read_exact(&mut p)?;
                std::hint::black_box(&p);
                count += 1;
            }
        }
        base_best = base_best.min(t.elapsed());
        if count != REPLAY {
            return Err(format!("baseline read {count} records").into());
        }
    }
    line(
        &format!("read_after (batches of {BATCH})"),
        REPLAY,
        spool_best,
        base_best,
    );
    println!(
        "{:<28} {REPLAY:>7} rec  open (scan + verify) {:.1} ms",
        "open",
        open_best.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let base = std::env::var_os("SPOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "spool benchmark: {PAYLOAD}-byte payloads ({} bytes framed), directory {}",
        PAYLOAD as u64 + RECORD_OVERHEAD,
        base.display()
    );
    println!("reproduce: cargo bench -p defender --bench spool");
    println!(
        "best of {ROUNDS} runs each (Always: 1 run); baseline = plain write_all / BufReader of the same bytes, same fsync behaviour"
    );
    bench_append(
        &base,
        "append fsync=never",
        FsyncPolicy::Never,
        APPENDS,
        ROUNDS,
    )?;
    bench_append(
        &base,
        "append fsync=interval(1s)",
        FsyncPolicy::Interval(Duration::from_secs(1)),
        APPENDS,
        ROUNDS,
    )?;
    bench_append(
        &base,
        "append fsync=always",
        FsyncPolicy::Always,
        APPENDS_ALWAYS,
        1,
    )?;
    bench_replay(&base)?;
    Ok(())
}
