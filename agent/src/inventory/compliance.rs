//! Configuration checks of one application container, evaluated where it runs: the app
//! process's uid, capabilities and environment (`/proc/<pid>/…`) and the container's file
//! system. Each result carries an id, title, default severity, evidence and the CIS Docker
//! Benchmark (v1.6) recommendation where one exists. Secret values are never read into a
//! result: only the variable names.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use defender_proto::v1::ComplianceResult;

use super::fsroot::FsRoot;

/// Directories searched for setuid/world-writable files (a typical `PATH`).
pub const PATH_DIRS: &[&str] = &[
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
];

/// Capabilities Fargate grants by default (Docker's default set) plus SYS_PTRACE, which
/// Fargate allows adding: bit numbers from linux/capability.h.
const ALLOWED_CAPS: &[(u32, &str)] = &[
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (3, "FOWNER"),
    (4, "FSETID"),
    (5, "KILL"),
    (6, "SETGID"),
    (7, "SETUID"),
    (8, "SETPCAP"),
    (10, "NET_BIND_SERVICE"),
    (13, "NET_RAW"),
    (18, "SYS_CHROOT"),
    (19, "SYS_PTRACE"),
    (27, "MKNOD"),
    (29, "AUDIT_WRITE"),
    (31, "SETFCAP"),
];

const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What the ECS task metadata says about a container's health check.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HealthCheck {
    /// The metadata does not name the container (outside ECS, or an unmatched name).
    #[default]
    Unknown,
    /// The container is listed without `Health`: its task definition has no health check.
    Missing,
    /// A health check is defined; its current status.
    Defined(String),
}

impl HealthCheck {
    /// From the metadata entry of the container, if any.
    pub fn of(container: Option<&defender_proto::v1::ContainerInfo>) -> Self {
        match container {
            None => Self::Unknown,
            Some(c) if c.health_status.is_empty() => Self::Missing,
            Some(c) => Self::Defined(c.health_status.clone()),
        }
    }
}

/// What the checks look at.
pub struct Subject<'a> {
    pub fs: &'a FsRoot,
    /// `/proc/<pid>` of the application's main process.
    pub proc_dir: PathBuf,
    pub health: HealthCheck,
}

fn result(
    id: &str,
    title: &str,
    severity: &str,
    cis: &str,
    failed: bool,
    evidence: String,
) -> ComplianceResult {
    ComplianceResult {
        check_id: id.into(),
        title: title.into(),
        severity: severity.into(),
        passed: !failed,
        evidence,
        cis: cis.into(),
    }
}

/// `Uid:`/`Gid:` effective ids and `CapBnd:` of a /proc status file.
fn status_fields(text: &str) -> (Option<u32>, Option<u32>, Option<u64>) {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    let second = |v: &str| v.split_whitespace().nth(1).and_then(|x| x.parse().ok());
    (
        field("Uid:").and_then(second),
        field("Gid:").and_then(second),
        field("CapBnd:").and_then(|v| u64::from_str_radix(v, 16).ok()),
    )
}

/// Names of environment variables that look like secrets and carry a value.
pub fn secret_names(environ: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in environ.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = (&entry[..eq], &entry[eq + 1..]);
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let looks_secret = ["PASSWORD", "PASSWD", "SECRET", "TOKEN"]
            .iter()
            .any(|w| name.contains(w))
            || name.ends_with("_KEY")
            || name == "INSTALL_BUNDLE";
        if looks_secret && !value.is_empty() {
            out.push(String::from_utf8_lossy(&entry[..eq]).to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

fn scan_path_dirs(fs: &FsRoot, mut want: impl FnMut(&std::fs::Metadata) -> bool) -> Vec<String> {
    let mut hits = Vec::new();
    for dir in PATH_DIRS {
        let dir = Path::new(dir);
        if !fs.is_dir(dir) {
            continue;
        }
        for name in fs.list(dir, 20_000) {
            let rel = dir.join(&name);
            if let Ok(m) = fs.lstat(&rel)
                && !m.file_type().is_symlink()
                && want(&m)
            {
                hits.push(format!("/{}", rel.display()));
            }
        }
    }
    hits
}

fn listing(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

/// Evaluates every check.
pub fn evaluate(s: &Subject<'_>) -> Vec<ComplianceResult> {
    let status = std::fs::read_to_string(s.proc_dir.join("status")).unwrap_or_default();
    let (uid, gid, capbnd) = status_fields(&status);
    let mut out = Vec::new();

    out.push(match uid {
        Some(0) => result(
            "defender-101",
            "Container runs as root (uid 0)",
            "high",
            "4.1",
            true,
            "the application runs with effective uid 0".into(),
        ),
        Some(u) => result(
            "defender-101",
            "Container runs as root (uid 0)",
            "high",
            "4.1",
            false,
            format!("effective uid {u}"),
        ),
        None => result(
            "defender-101",
            "Container runs as root (uid 0)",
            "high",
            "4.1",
            false,
            "uid unknown (process gone)".into(),
        ),
    });

    out.push(result(
        "defender-102",
        "No health check",
        "low",
        "4.6",
        s.health == HealthCheck::Missing,
        match &s.health {
            HealthCheck::Unknown => {
                "no ECS task metadata names this container: health check unknown".into()
            }
            HealthCheck::Missing => {
                "the task definition gives this container no healthCheck (ECS task metadata has no Health)".into()
            }
            HealthCheck::Defined(status) => format!("health check defined, status {status}"),
        },
    ));

    let environ = std::fs::read(s.proc_dir.join("environ")).unwrap_or_default();
    let secrets = secret_names(&environ);
    out.push(result(
        "defender-103",
        "Secrets in plain environment variables",
        "high",
        "",
        !secrets.is_empty(),
        if secrets.is_empty() {
            "no variable named like a password, secret, token or key carries a value".into()
        } else {
            format!("variables with values (names only): {}", listing(&secrets))
        },
    ));

    let ro = rootfs_read_only(&s.fs.root);
    out.push(result(
        "defender-104",
        "Root file system is writable",
        "medium",
        "5.12",
        ro == Some(false),
        match ro {
            Some(true) => "mounted read-only".into(),
            Some(false) => "mounted read-write (set readonlyRootFilesystem)".into(),
            None => "mount flags unknown".into(),
        },
    ));

    let present = |paths: &[&str]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| s.fs.lstat(Path::new(p)).is_ok())
            .map(|p| format!("/{p}"))
            .collect()
    };
    let ssh = present(&["usr/sbin/sshd", "usr/sbin/dropbear", "usr/bin/dropbear"]);
    out.push(result(
        "defender-105",
        "SSH server in the image",
        "high",
        "5.6",
        !ssh.is_empty(),
        if ssh.is_empty() {
            "no sshd or dropbear".into()
        } else {
            listing(&ssh)
        },
    ));
    let pm = present(&[
        "usr/bin/apt-get",
        "usr/bin/apt",
        "usr/bin/dpkg",
        "sbin/apk",
        "usr/bin/yum",
        "usr/bin/dnf",
        "usr/bin/microdnf",
        "usr/bin/rpm",
        "usr/bin/zypper",
    ]);
    out.push(result(
        "defender-106",
        "Package manager in the image",
        "low",
        "4.3",
        !pm.is_empty(),
        if pm.is_empty() {
            "no OS package manager".into()
        } else {
            listing(&pm)
        },
    ));

    let suid = scan_path_dirs(s.fs, |m| {
        m.is_file() && m.permissions().mode() & 0o6000 != 0
    });
    out.push(result(
        "defender-107",
        "setuid/setgid files on PATH",
        "medium",
        "4.8",
        !suid.is_empty(),
        if suid.is_empty() {
            "none".into()
        } else {
            listing(&suid)
        },
    ));
    let ww = scan_path_dirs(s.fs, |m| {
        m.permissions().mode() & 0o002 != 0 && !(m.is_dir() && m.permissions().mode() & 0o1000 != 0)
    });
    out.push(result(
        "defender-108",
        "World-writable files on PATH",
        "medium",
        "",
        !ww.is_empty(),
        if ww.is_empty() {
            "none".into()
        } else {
            listing(&ww)
        },
    ));

    let shadow = s.fs.lstat(Path::new("etc/shadow")).ok();
    let readable = match (&shadow, uid) {
        (None, _) => false,
        (Some(_), Some(0)) => true,
        (Some(m), Some(u)) => {
            let mode = m.mode();
            (m.uid() == u && mode & 0o400 != 0)
                || (Some(m.gid()) == gid && mode & 0o040 != 0)
                || mode & 0o004 != 0
        }
        (Some(m), None) => m.mode() & 0o004 != 0,
    };
    out.push(result(
        "defender-109",
        "/etc/shadow readable by the application",
        "high",
        "",
        readable,
        match &shadow {
            None => "no /etc/shadow".into(),
            Some(m) => format!(
                "mode {:o}, owner {}:{}, application uid {}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                uid.map_or("unknown".into(), |u| u.to_string())
            ),
        },
    ));

    let extra: Vec<String> = match capbnd {
        Some(bits) => (0..64u32)
            .filter(|b| bits & (1u64 << b) != 0 && !ALLOWED_CAPS.iter().any(|(n, _)| n == b))
            .map(|b| {
                CAP_NAMES
                    .get(b as usize)
                    .map_or(format!("CAP_{b}"), |n| format!("CAP_{n}"))
            })
            .collect(),
        None => Vec::new(),
    };
    out.push(result(
        "defender-110",
        "Capabilities beyond the Fargate default",
        "high",
        "5.3",
        !extra.is_empty(),
        if extra.is_empty() {
            "bounding set within the Fargate default plus SYS_PTRACE".into()
        } else {
            format!("bounding set also has {}", listing(&extra))
        },
    ));
    out
}

/// Whether the file system at `root` is mounted read-only (`statvfs`'s `ST_RDONLY`).
fn rootfs_read_only(root: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is NUL-terminated and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_flag & libc::ST_RDONLY != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_only_with_values() {
        let env = b"PATH=/bin\0DB_PASSWORD=hunter2\0API_TOKEN=\0AWS_SECRET_ACCESS_KEY=x\0SIGNING_KEY=y\0KEYBOARD=us\0";
        assert_eq!(
            secret_names(env),
            vec!["AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "SIGNING_KEY"]
        );
    }

    #[test]
    fn status_parsing() {
        let st = "Name:\tx\nUid:\t1000\t1001\t1001\t1001\nGid:\t50\t51\t51\t51\nCapBnd:\t00000000a80425fb\n";
        assert_eq!(status_fields(st), (Some(1001), Some(51), Some(0xa80425fb)));
    }

    #[test]
    fn checks_run_on_a_prepared_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/sbin/sshd"), b"x").unwrap();
        std::fs::write(root.join("usr/bin/su"), b"x").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/su"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::write(root.join("etc/shadow"), b"root:*:1::::::\n").unwrap();
        std::fs::set_permissions(
            root.join("etc/shadow"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let fs = FsRoot::new(root);
        let results = evaluate(&Subject {
            fs: &fs,
            proc_dir: PathBuf::from("/proc/self"),
            health: HealthCheck::Missing,
        });
        let by = |id: &str| results.iter().find(|r| r.check_id == id).unwrap().clone();
        assert!(!by("defender-105").passed);
        assert!(by("defender-105").evidence.contains("/usr/sbin/sshd"));
        assert!(!by("defender-107").passed);
        assert!(by("defender-107").evidence.contains("/usr/bin/su"));
        assert!(!by("defender-109").passed, "world-readable shadow");
        assert!(by("defender-106").passed);
        assert_eq!(by("defender-101").cis, "4.1");
        assert!(!by("defender-102").passed, "no health check");
        assert_eq!(by("defender-102").cis, "4.6");
        for (h, passed) in [
            (HealthCheck::Unknown, true),
            (HealthCheck::Defined("HEALTHY".into()), true),
        ] {
            let r = evaluate(&Subject {
                fs: &fs,
                proc_dir: PathBuf::from("/proc/self"),
                health: h,
            });
            let c = r.iter().find(|r| r.check_id == "defender-102").unwrap();
            assert_eq!(c.passed, passed, "{}", c.evidence);
        }
    }
}
