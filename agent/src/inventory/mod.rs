//! Inventory and compliance of application containers: what each image holds (OS, OS packages,
//! language packages, dependencies compiled into binaries) and how the container is configured,
//! sent to the Console as `Inventory` and `ComplianceReport` events, where the packages are
//! matched against vulnerability records (so a newly imported advisory applies to images
//! already running).
//!
//! Runs on a thread of its own at low CPU priority (nice 10), once at start and again whenever
//! a package database or package directory changes (checked every
//! `DEFENDER_INVENTORY_INTERVAL` seconds, default 60). The application never waits for it.
//! Environment: `DEFENDER_INVENTORY=off` disables it; `DEFENDER_INVENTORY_ROOT` reads another
//! root than `/` (tests, and images whose files live elsewhere).

pub mod binaries;
pub mod compliance;
pub mod fsroot;
pub mod java;
pub mod lang;
pub mod os;
pub mod ospkg;
pub mod rpmdb;
pub mod sqlite_file;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use defender_proto::MAX_INVENTORY_BYTES;
use defender_proto::v1::{
    ComplianceReport, ContainerInfo, Event, Inventory, InventoryPackage, TaskMetadata, event,
};
use prost::Message;

use crate::observe::EventSink;
use fsroot::{Budget, FsRoot};

/// Directory entries one inventory may visit in its walks (bounds the cost on huge images).
pub const WALK_BUDGET: usize = 400_000;
/// Default seconds between checks for a changed package database.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;

/// One container to inventory.
#[derive(Clone, Debug)]
pub struct Target {
    pub fs: FsRoot,
    /// `/proc/<pid>` of the container's main process (for the compliance checks).
    pub proc_dir: PathBuf,
    pub container: String,
    pub image: String,
    /// Image digest from the task metadata; empty when unknown.
    pub image_id: String,
    /// The container's health check as the task metadata tells it.
    pub health: compliance::HealthCheck,
}

/// Everything read from one root, before bounding.
pub struct Collected {
    pub inventory: Inventory,
    /// Paths whose modification time tells that the inventory changed.
    pub watch: Vec<PathBuf>,
}

/// Reads the OS, OS packages, language packages and binaries under `fs`.
pub fn collect(fs: &FsRoot) -> Collected {
    let started = Instant::now();
    let mut notes = Vec::new();
    let os = os::read(fs);
    let mut packages = ospkg::read(fs, &mut notes);
    let mut budget = Budget {
        entries: WALK_BUDGET,
    };
    packages.extend(lang::python(fs, &mut budget));
    packages.extend(lang::node(fs, &mut budget));
    packages.extend(java::read(fs, &mut budget));
    packages.extend(binaries::read(fs, &mut budget));
    if budget.entries == 0 {
        notes.push(format!(
            "walk budget of {WALK_BUDGET} directory entries spent: language packages may be missing"
        ));
    }
    let mut watch: Vec<PathBuf> = [
        "var/lib/dpkg/status",
        "var/lib/dpkg/status.d",
        "lib/apk/db/installed",
        "var/lib/rpm",
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for p in &packages {
        if let Some(dir) = Path::new(p.path.trim_start_matches('/'))
            .parent()
            .and_then(Path::parent)
        {
            watch.push(dir.to_path_buf());
        }
    }
    watch.sort();
    watch.dedup();
    Collected {
        inventory: Inventory {
            os,
            total_packages: u32::try_from(packages.len()).unwrap_or(u32::MAX),
            packages,
            notes,
            duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
            ..Default::default()
        },
        watch,
    }
}

/// `inventory:` + hex SHA-256 of the sorted package list: the image key when no digest is known.
pub fn content_id(packages: &[InventoryPackage]) -> String {
    let mut lines: Vec<String> = packages
        .iter()
        .map(|p| format!("{}\0{}\0{}\0{}\n", p.kind, p.name, p.version, p.path))
        .collect();
    lines.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for l in &lines {
        ctx.update(l.as_bytes());
    }
    let hex: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("inventory:{hex}")
}

/// Cuts `inv` to [`MAX_INVENTORY_BYTES`] encoded: OS packages are kept before language ones;
/// what is cut is counted in `total_packages` and marked by `truncated`.
pub fn bound(inv: &mut Inventory) {
    inv.notes.truncate(32);
    for n in &mut inv.notes {
        n.truncate(512);
    }
    if inv.encoded_len() <= MAX_INVENTORY_BYTES {
        return;
    }
    let os_kind = |k: &str| matches!(k, "deb" | "apk" | "rpm");
    inv.packages.sort_by_key(|p| !os_kind(&p.kind));
    for p in &mut inv.packages {
        p.path.truncate(256);
        p.name.truncate(256);
        p.version.truncate(128);
    }
    let mut keep = inv.packages.len();
    while keep > 0 && inv.encoded_len() > MAX_INVENTORY_BYTES {
        keep = keep * 9 / 10;
        inv.packages.truncate(keep);
    }
    inv.truncated = true;
}

/// The two events of one inventory run of `t`.
pub fn run_once(t: &Target) -> (Inventory, ComplianceReport, Vec<PathBuf>) {
    let Collected {
        mut inventory,
        watch,
    } = collect(&t.fs);
    inventory.image = t.image.clone();
    inventory.image_id = if t.image_id.is_empty() {
        content_id(&inventory.packages)
    } else {
        t.image_id.clone()
    };
    bound(&mut inventory);
    let report = ComplianceReport {
        image_id: inventory.image_id.clone(),
        results: compliance::evaluate(&compliance::Subject {
            fs: &t.fs,
            proc_dir: t.proc_dir.clone(),
            health: t.health.clone(),
        }),
    };
    (inventory, report, watch)
}

fn fingerprint(fs: &FsRoot, watch: &[PathBuf]) -> BTreeMap<PathBuf, (i64, i64, u64)> {
    watch
        .iter()
        .filter_map(|p| {
            fs.lstat(p)
                .ok()
                .map(|m| (p.clone(), (m.mtime(), m.mtime_nsec(), m.len())))
        })
        .collect()
}

fn push(sink: &dyn EventSink, container: &str, kind: event::Kind) {
    sink.push_event(Event {
        seq: 0,
        time_ms: crate::unix_ms(),
        container: container.to_string(),
        kind: Some(kind),
    });
}

/// The inventory thread; stops when dropped (without waiting for a run in progress).
pub struct Inventorier {
    _stop: mpsc::Sender<()>,
}

fn interval() -> Duration {
    let secs = std::env::var("DEFENDER_INVENTORY_INTERVAL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    Duration::from_secs(secs.max(1))
}

fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Starts the thread: `targets` is asked for the containers to inventory on every check.
fn spawn(
    mut targets: impl FnMut() -> Vec<Target> + Send + 'static,
    sink: Arc<dyn EventSink>,
) -> Option<Inventorier> {
    if std::env::var("DEFENDER_INVENTORY").is_ok_and(|v| v == "off") {
        return None;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let every = interval();
    std::thread::Builder::new()
        .name("inventory".into())
        .spawn(move || {
            lower_priority();
            let mut seen: BTreeMap<PathBuf, BTreeMap<PathBuf, (i64, i64, u64)>> = BTreeMap::new();
            let mut watches: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
            loop {
                for t in targets() {
                    let key = t.fs.root.clone();
                    let fp = watches.get(&key).map(|w| fingerprint(&t.fs, w));
                    if fp.is_some() && fp == seen.get(&key).cloned() {
                        continue;
                    }
                    let (inv, report, watch) = run_once(&t);
                    tracing::info!(container = %t.container, image_id = %inv.image_id, packages = inv.total_packages,
                        truncated = inv.truncated, ms = inv.duration_ms, "inventory taken");
                    push(sink.as_ref(), &t.container, event::Kind::Inventory(inv));
                    push(sink.as_ref(), &t.container, event::Kind::Compliance(report));
                    seen.insert(key.clone(), fingerprint(&t.fs, &watch));
                    watches.insert(key, watch);
                }
                if !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout)) {
                    return;
                }
            }
        })
        .ok()?;
    Some(Inventorier { _stop: stop })
}

/// Inventories the Defender's own container (`defender run` and the app-container wrapper):
/// the root is `/` (or `DEFENDER_INVENTORY_ROOT`), the image and its digest come from the task
/// metadata entry named `container`, else `image`.
pub fn spawn_for(
    metadata: &TaskMetadata,
    container: &str,
    image: &str,
    app_pid: u32,
    sink: Arc<dyn EventSink>,
) -> Option<Inventorier> {
    let root = std::env::var("DEFENDER_INVENTORY_ROOT")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "/".into());
    let meta = metadata.containers.iter().find(|c| c.name == container);
    let target = Target {
        fs: FsRoot::new(root),
        proc_dir: PathBuf::from(format!("/proc/{app_pid}")),
        container: container.to_string(),
        image: meta
            .map(|c| c.image.clone())
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| image.to_string()),
        image_id: meta.map(|c| c.image_id.clone()).unwrap_or_default(),
        health: compliance::HealthCheck::of(meta),
    };
    spawn(move || vec![target.clone()], sink)
}

/// The task metadata's container whose `DockerId` is a component of the process's cgroup path
/// (`/proc/<pid>/cgroup`; on Fargate `…/ecs/<task id>/<task id>-<n>`, and `<task id>-<n>` is
/// the container's `DockerId`), else the only application container when there is one.
pub fn container_of<'a>(cgroup: &str, apps: &'a [ContainerInfo]) -> Option<&'a ContainerInfo> {
    let by_id = apps.iter().find(|c| {
        !c.docker_id.is_empty()
            && cgroup.lines().any(|l| {
                l.rsplit(':')
                    .next()
                    .is_some_and(|path| path.split('/').any(|part| part == c.docker_id))
            })
    });
    by_id.or(if apps.len() == 1 { apps.first() } else { None })
}

/// Sidecar mode (pidMode task): every other container is read through `/proc/<pid>/root` of
/// one of its processes; containers are told apart by their mount namespace, and named (image,
/// digest, health check) by matching their cgroup to the task metadata's `DockerId`s, or as
/// the only application container the metadata lists.
pub fn spawn_sidecar(metadata: &TaskMetadata, sink: Arc<dyn EventSink>) -> Option<Inventorier> {
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let apps: Vec<_> = metadata
        .containers
        .iter()
        .filter(|c| !c.image.contains("defender"))
        .cloned()
        .collect();
    spawn(
        move || {
            let mut by_ns: BTreeMap<PathBuf, u32> = BTreeMap::new();
            let me = std::process::id();
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
                    continue;
                };
                if Some(&ns) == own_ns.as_ref() {
                    continue;
                }
                let slot = by_ns.entry(ns).or_insert(pid);
                *slot = (*slot).min(pid);
            }
            by_ns
                .into_values()
                .map(|pid| {
                    let cgroup =
                        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                    let meta = container_of(&cgroup, &apps);
                    Target {
                        fs: FsRoot::new(format!("/proc/{pid}/root")),
                        proc_dir: PathBuf::from(format!("/proc/{pid}")),
                        container: meta.map(|c| c.name.clone()).unwrap_or_default(),
                        image: meta.map(|c| c.image.clone()).unwrap_or_default(),
                        image_id: meta.map(|c| c.image_id.clone()).unwrap_or_default(),
                        health: compliance::HealthCheck::of(meta),
                    }
                })
                .collect()
        },
        sink,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names_containers_by_cgroup() {
        let c = |name: &str, id: &str| ContainerInfo {
            name: name.into(),
            docker_id: id.into(),
            ..Default::default()
        };
        let apps = vec![
            c("web", "0123456789abcdef-30"),
            c("worker", "0123456789abcdef-3033467208"),
        ];
        let v1 = "11:memory:/ecs/0123456789abcdef/0123456789abcdef-3033467208\n1:name=systemd:/ecs/0123456789abcdef/0123456789abcdef-3033467208\n";
        assert_eq!(container_of(v1, &apps).unwrap().name, "worker");
        let v2 = "0::/ecs/0123456789abcdef/0123456789abcdef-30\n";
        assert_eq!(container_of(v2, &apps).unwrap().name, "web");
        assert!(
            container_of("0::/user.slice\n", &apps).is_none(),
            "two apps, no match"
        );
        assert_eq!(
            container_of("0::/user.slice\n", &apps[..1]).unwrap().name,
            "web",
            "the only application container"
        );
    }
}
