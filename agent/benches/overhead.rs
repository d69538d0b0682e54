//! Overhead of process observation, each figure next to a baseline measured in the same run
//! (the machine is shared and absolute figures are noisy):
//!
//! 1. One `ProcessWatcher::poll` with ~100 processes in scope (a shell and 100 `sleep`
//!    children): first poll, then mean / p95 of 100 steady-state polls. Baselines: a bare
//!    listing of the numeric entries of `/proc` (readdir only), and a full re-read of every
//!    process on every poll (stat, status, cmdline, exe and cwd links — what a snapshot-style
//!    observer such as sysinfo does).
//! 2. The `defender` binary itself (`defender run -- sh -c '<100 sleeps>'`, install bundle
//!    pointing at a closed port): RSS and CPU of the Defender process over a window
//!    (`OVERHEAD_SECS`, default 60), against the targets ≤ 10 MB RSS and ≤ 0.5 % of one core;
//!    baseline: a `sleep` process sampled over the same window.
//!
//! Run: `cargo bench -p defender --bench overhead` (`OVERHEAD_SECS=10` for a shorter window;
//! `OVERHEAD_SKIP_BINARY=1` to run part 1 only).

use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use defender::observe::process::{ProcessScope, ProcessWatcher};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const CHILDREN: usize = 100;
const POLLS: usize = 100;
const RSS_TARGET_KB: u64 = 10 * 1024;
const CPU_TARGET_PERCENT: f64 = 0.5;
const BUNDLE_JSON: &str = r#"{"console_addr":"127.0.0.1:9","ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","token":"x"}"#;

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; ignore arguments.
    println!("reproduce: cargo bench -p defender --bench overhead");
    println!();
    poll_cost()?;
    if std::env::var_os("OVERHEAD_SKIP_BINARY").is_some() {
        return Ok(());
    }
    println!();
    binary_overhead()
}

/// Shell script that starts `n` sleeps and waits for them.
fn sleeps_script(n: usize, secs: u32) -> String {
    format!("i=0; while [ $i -lt {n} ]; do sleep {secs} & i=$((i+1)); done; wait")
}

/// Kills a process tree (children first found through /proc) when dropped.
struct Tree {
    child: Child,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let root = self.child.id();
        for pid in descendants(root) {
            // SAFETY: kill(2) of processes this benchmark started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // SAFETY: as above; the child leads its own process group.
        unsafe { libc::kill(-(root as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_tree(cmd: &mut Command) -> BenchResult<Tree> {
    let child = cmd.process_group(0).stdin(Stdio::null()).spawn()?;
    Ok(Tree { child })
}

/// (pid, ppid, comm) of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, comm));
    }
    out
}

/// Every process below `root` (not including it).
fn descendants(root: u32) -> Vec<u32> {
    let procs = processes();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid, _) in &procs {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if seen.insert(*c) {
                out.push(*c);
                stack.push(*c);
            }
        }
    }
    out
}

/// Waits (polling, with a deadline) until `n` processes named `sleep` run below `root`.
fn wait_for_sleeps(root: u32, n: usize) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let below: HashSet<u32> = descendants(root).into_iter().collect();
        let sleeping = processes()
            .iter()
            .filter(|(pid, _, comm)| below.contains(pid) && comm == "sleep")
            .count();
        if sleeping >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {sleeping} of {n} sleep processes started").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Summary {
    mean: Duration,
    p95: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let n = samples.len().max(1);
    let total: Duration = samples.iter().sum();
    let p95 = samples
        .get((n * 95).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    Summary {
        mean: total / n as u32,
        p95,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn list_numeric(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let b = std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str());
                    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(0)
}

/// What a snapshot-style observer does every poll: read every process's details again.
fn full_reread(dir: &Path) -> usize {
    let mut read = 0;
    let Ok(d) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in d.flatten() {
        let name = e.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let p = dir.join(&name);
        let ok = std::fs::read(p.join("stat")).is_ok();
        let _ = std::fs::read(p.join("status"));
        let _ = std::fs::read(p.join("cmdline"));
        let _ = std::fs::read_link(p.join("exe"));
        let _ = std::fs::read_link(p.join("cwd"));
        read += usize::from(ok);
    }
    read
}

fn poll_cost() -> BenchResult<()> {
    println!("== 1. ProcessWatcher::poll with {CHILDREN} processes in scope");
    let tree = spawn_tree(Command::new("sh").args(["-c", &sleeps_script(CHILDREN, 1000)]))?;
    let root = tree.child.id();
    wait_for_sleeps(root, CHILDREN)?;

    let proc_root = PathBuf::from("/proc");
    let mut w = ProcessWatcher::new(
        proc_root.clone(),
        ProcessScope::Descendants(root),
        "bench".into(),
    );
    let first_events = w.poll(&[], 0);
    let first = w.last_poll_stats();
    if first.in_scope < CHILDREN + 1 {
        return Err(format!("watcher saw {} processes in scope", first.in_scope).into());
    }

    let mut polls = Vec::with_capacity(POLLS);
    let mut listings = Vec::with_capacity(POLLS);
    let mut rereads = Vec::with_capacity(POLLS);
    let mut listed = 0;
    let mut stat_reads = 0;
    // Interleaved, so drift in machine load hits all three alike.
    for _ in 0..POLLS {
        let t = Instant::now();
        std::hint::black_box(list_numeric(&proc_root));
        listings.push(t.elapsed());

        let events = w.poll(&[], 0);
        let s = w.last_poll_stats();
        if !events.is_empty() {
            return Err(format!("steady state produced {} events", events.len()).into());
        }
        polls.push(s.duration);
        listed = s.listed;
        stat_reads = s.stat_reads;

        let t = Instant::now();
        std::hint::black_box(full_reread(&proc_root));
        rereads.push(t.elapsed());
    }
    let poll = summarize(polls);
    let list = summarize(listings);
    let reread = summarize(rereads);
    println!(
        "first poll:        {:8.3} ms  ({} events, {} processes listed, {} in scope, {} details read, {} exe hashes)",
        ms(first.duration),
        first_events.len(),
        first.listed,
        first.in_scope,
        first.details_read,
        first.hashes_computed_total
    );
    println!(
        "steady poll:       mean {:7.3} ms  p95 {:7.3} ms  ({listed} listed, {stat_reads} stat reads, {POLLS} polls)",
        ms(poll.mean),
        ms(poll.p95)
    );
    println!(
        "baseline readdir:  mean {:7.3} ms  p95 {:7.3} ms  -> poll / readdir = {:.1}x",
        ms(list.mean),
        ms(list.p95),
        poll.mean.as_secs_f64() / list.mean.as_secs_f64().max(1e-9)
    );
    println!(
        "full re-read:      mean {:7.3} ms  p95 {:7.3} ms  -> full re-read / poll = {:.1}x",
        ms(reread.mean),
        ms(reread.p95),
        reread.mean.as_secs_f64() / poll.mean.as_secs_f64().max(1e-9)
    );
    println!("target: steady poll well under 5 ms for ~100 processes");
    drop(tree);
    Ok(())
}

/// `<target>/release/defender` beside this benchmark (`<target>/release/deps/overhead-…`),
/// built first when missing.
fn defender_binary() -> BenchResult<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?
        .to_path_buf();
    let bin = profile_dir.join("defender");
    if bin.exists() {
        return Ok(bin);
    }
    let target = profile_dir
        .parent()
        .ok_or("cannot locate the target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("building {} ...", bin.display());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "defender", "--bin", "defender"])
        .env("CARGO_TARGET_DIR", target)
        .status()?;
    if !status.success() || !bin.exists() {
        return Err(format!("building the defender binary failed: {status}").into());
    }
    Ok(bin)
}

/// (VmRSS in KiB, utime + stime in clock ticks) of `pid`.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

/// CPU ticks (utime + stime) per thread name of `pid`, from `/proc/<pid>/task/*/stat`.
fn thread_ticks(pid: u32) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = [11, 12]
            .iter()
            .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
            .sum::<u64>();
        *out.entry(stat[open + 1..close].to_string()).or_default() += ticks;
    }
    out
}

#[derive(Default)]
struct Usage {
    rss_sum: u64,
    rss_max: u64,
    samples: u64,
    first_ticks: Option<u64>,
    last_ticks: u64,
}

impl Usage {
    fn add(&mut self, (rss, ticks): (u64, u64)) {
        self.rss_sum += rss;
        self.rss_max = self.rss_max.max(rss);
        self.samples += 1;
        self.first_ticks.get_or_insert(ticks);
        self.last_ticks = ticks;
    }

    fn report(&self, name: &str, wall: Duration, targets: bool) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ticks = self.last_ticks - self.first_ticks.unwrap_or(self.last_ticks);
        let cpu = ticks as f64 / hz / wall.as_secs_f64().max(1e-9) * 100.0;
        let avg = self.rss_sum / self.samples.max(1);
        let verdict = |ok: bool| if ok { "ok" } else { "OVER TARGET" };
        let (rss_t, cpu_t) = if targets {
            (
                format!(
                    "  [target ≤ {} MB: {}]",
                    RSS_TARGET_KB / 1024,
                    verdict(self.rss_max <= RSS_TARGET_KB)
                ),
                format!(
                    "  [target ≤ {CPU_TARGET_PERCENT} %: {}]",
                    verdict(cpu <= CPU_TARGET_PERCENT)
                ),
            )
        } else {
            (String::new(), String::new())
        };
        println!(
            "{name:<10} RSS avg {:6.2} MB  max {:6.2} MB{rss_t}\n{:<10} CPU {cpu:6.3} % of one core ({ticks} ticks over {:.1} s, {} samples){cpu_t}",
            avg as f64 / 1024.0,
            self.rss_max as f64 / 1024.0,
            "",
            wall.as_secs_f64(),
            self.samples
        );
    }
}

fn binary_overhead() -> BenchResult<()> {
    let secs: u64 = std::env::var("OVERHEAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("== 2. `defender run` with {CHILDREN} sleeps, sampled for {secs} s");
    let bin = defender_binary()?;
    let data = tempfile::tempdir()?;
    let bundle = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        BUNDLE_JSON.as_bytes(),
    );
    let script = sleeps_script(CHILDREN, 1000);
    println!(
        "command: INSTALL_BUNDLE=<bundle for 127.0.0.1:9> {} run --data-dir {} -- sh -c '{script}'",
        bin.display(),
        data.path().display()
    );
    let defender = spawn_tree(
        Command::new(&bin)
            .args(["run", "--data-dir"])
            .arg(data.path())
            .args(["--", "sh", "-c", &script])
            .env("INSTALL_BUNDLE", bundle)
            .env("RUST_LOG", "warn")
            // The one-time inventory (its own benchmark: `--bench inventory`) would swamp the
            // steady observation cost this measures.
            .env("DEFENDER_INVENTORY", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let baseline = spawn_tree(Command::new("sleep").arg("1000"))?;
    let pid = defender.child.id();
    wait_for_sleeps(pid, CHILDREN)?;
    // Let start-up work (first poll, hashing, enrollment attempts) pass before the window.
    std::thread::sleep(Duration::from_secs(2));

    let mut d_usage = Usage::default();
    let mut b_usage = Usage::default();
    let threads_before = thread_ticks(pid);
    let start = Instant::now();
    let window = Duration::from_secs(secs);
    loop {
        d_usage.add(sample(pid).ok_or("the defender process ended")?);
        b_usage.add(sample(baseline.child.id()).ok_or("the baseline sleep ended")?);
        if start.elapsed() >= window {
            break;
        }
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(start.elapsed())));
    }
    let wall = start.elapsed();
    let threads_after = thread_ticks(pid);
    d_usage.report("defender", wall, true);
    let mut by_thread: Vec<(String, u64)> = threads_after
        .into_iter()
        .map(|(name, t)| {
            let before = threads_before.get(&name).copied().unwrap_or(0);
            (name, t.saturating_sub(before))
        })
        .filter(|(_, t)| *t > 0)
        .collect();
    by_thread.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let by_thread: Vec<String> = by_thread
        .iter()
        .map(|(name, t)| format!("{name} {t}"))
        .collect();
    println!(
        "{:<10} ticks by thread (live threads only): {}",
        "",
        by_thread.join(", ")
    );
    b_usage.report("sleep", wall, false);
    drop(defender);
    drop(baseline);
    Ok(())
}
