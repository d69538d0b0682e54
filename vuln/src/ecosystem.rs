//! Which OSV ecosystem a package belongs to, on both sides: the `affected[].package` of a
//! record, and a package as a Defender inventories it (kind + the image's `/etc/os-release`).
//! Both sides are reduced to the same [`PackageKey`], so matching is a map lookup.

/// The version-ordering family of an OSV ecosystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ecosystem {
    /// Debian and Ubuntu: `deb-version(7)` ordering.
    Debian,
    /// Alpine, Wolfi, Chainguard: apk-tools ordering.
    Alpine,
    /// Red Hat, AlmaLinux, Rocky Linux, Azure Linux, SUSE, openSUSE, Mageia, openEuler: rpm's
    /// `rpmvercmp` with epoch.
    Rpm,
    /// PEP 440.
    PyPI,
    /// SemVer 2.0 (npm, crates.io).
    SemVer,
    /// Go module versions (`v1.2.3`, pseudo-versions, `+incompatible`), and `go1.21.5` toolchains.
    Go,
    /// Maven's ComparableVersion.
    Maven,
    /// An ecosystem this crate cannot order; only exact `versions` entries match.
    Other,
}

impl Ecosystem {
    /// The family of an OSV ecosystem string (`Debian:12`, `PyPI`, …).
    pub fn of(osv_ecosystem: &str) -> Self {
        let base = osv_ecosystem.split(':').next().unwrap_or("").trim();
        match base {
            "Debian" | "Ubuntu" => Self::Debian,
            "Alpine" | "Wolfi" | "Chainguard" => Self::Alpine,
            "Red Hat" | "AlmaLinux" | "Rocky Linux" | "Azure Linux" | "SUSE" | "openSUSE"
            | "Mageia" | "openEuler" => Self::Rpm,
            "PyPI" => Self::PyPI,
            "npm" | "crates.io" => Self::SemVer,
            "Go" => Self::Go,
            "Maven" => Self::Maven,
            _ => Self::Other,
        }
    }
}

/// Ecosystem and package name, normalised so that a record's `affected[].package` and an
/// inventoried package meet: `("Debian:12", "openssl")`, `("Ubuntu:22.04", "openssl")`,
/// `("Alpine:v3.18", "busybox")`, `("PyPI", "jinja2")`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageKey {
    pub ecosystem: String,
    pub name: String,
}

/// The release part of a distribution ecosystem reduced to what an image's os-release gives:
/// `Ubuntu:22.04:LTS` → `Ubuntu:22.04`, `Red Hat:enterprise_linux:9::appstream` → `Red Hat:9`.
pub fn ecosystem_key(osv_ecosystem: &str) -> String {
    let mut parts = osv_ecosystem.split(':');
    let base = parts.next().unwrap_or("").trim();
    let rest: Vec<&str> = parts.collect();
    match base {
        "Ubuntu" => {
            let pro = rest.first() == Some(&"Pro");
            let release = rest
                .iter()
                .find(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()));
            match (pro, release) {
                (false, Some(r)) => format!("Ubuntu:{r}"),
                (true, Some(r)) => format!("Ubuntu:Pro:{r}"),
                _ => osv_ecosystem.to_string(),
            }
        }
        "Red Hat" => {
            let major = rest
                .iter()
                .find(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(|p| p.split('.').next().unwrap_or(p));
            match major {
                Some(m) => format!("Red Hat:{m}"),
                None => "Red Hat".to_string(),
            }
        }
        _ => osv_ecosystem.to_string(),
    }
}

/// A package name normalised for its ecosystem (PyPI: PEP 503 — lowercase, runs of `-_.` → `-`).
pub fn normalize_name(osv_ecosystem: &str, name: &str) -> String {
    if Ecosystem::of(osv_ecosystem) == Ecosystem::PyPI {
        let mut out = String::with_capacity(name.len());
        let mut sep = false;
        for c in name.trim().chars() {
            if matches!(c, '-' | '_' | '.') {
                sep = true;
            } else {
                if sep && !out.is_empty() {
                    out.push('-');
                }
                sep = false;
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    } else {
        name.trim().to_string()
    }
}

impl PackageKey {
    /// The key of a record's `affected[].package`.
    pub fn of_record(osv_ecosystem: &str, name: &str) -> Self {
        Self {
            ecosystem: ecosystem_key(osv_ecosystem),
            name: normalize_name(osv_ecosystem, name),
        }
    }
}

/// The OS an image runs, from `/etc/os-release` (`ID`, `VERSION_ID`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
}

/// The OSV ecosystem of an OS package kind (`deb`, `apk`, `rpm`) on `os`, or of a language
/// package kind (`python`, `npm`, `java`, `go`, `cargo`); `None` when OSV has no feed for it
/// (an unknown distribution, or Amazon Linux and Fedora, whose advisories osv.dev does not
/// carry: their packages are listed but match no record).
pub fn inventory_ecosystem(kind: &str, os: &OsRelease) -> Option<String> {
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    let major_minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    let id = os.id.as_str();
    let v = os.version_id.as_str();
    Some(match kind {
        "deb" => match id {
            "debian" if !v.is_empty() => format!("Debian:{}", major(v)),
            "ubuntu" if !v.is_empty() => format!("Ubuntu:{v}"),
            _ => return None,
        },
        "apk" => match id {
            "alpine" if !v.is_empty() => format!("Alpine:v{}", major_minor(v)),
            "wolfi" => "Wolfi".into(),
            "chainguard" => "Chainguard".into(),
            _ => return None,
        },
        "rpm" => match id {
            "almalinux" => format!("AlmaLinux:{}", major(v)),
            "rocky" => format!("Rocky Linux:{}", major(v)),
            // UBI images say `rhel` too.
            "rhel" => format!("Red Hat:{}", major(v)),
            "azurelinux" => format!("Azure Linux:{}", major(v)),
            "mageia" => format!("Mageia:{}", major(v)),
            "opensuse-leap" => format!("openSUSE:Leap {v}"),
            _ => return None,
        },
        "python" => "PyPI".into(),
        "npm" => "npm".into(),
        "java" => "Maven".into(),
        "go" => "Go".into(),
        "cargo" => "crates.io".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_inventory_keys_meet() {
        let os = |id: &str, v: &str| OsRelease {
            id: id.into(),
            version_id: v.into(),
        };
        assert_eq!(
            inventory_ecosystem("deb", &os("debian", "12")).unwrap(),
            ecosystem_key("Debian:12")
        );
        assert_eq!(
            inventory_ecosystem("deb", &os("ubuntu", "22.04")).unwrap(),
            ecosystem_key("Ubuntu:22.04:LTS")
        );
        assert_eq!(
            inventory_ecosystem("apk", &os("alpine", "3.18.4")).unwrap(),
            ecosystem_key("Alpine:v3.18")
        );
        assert_eq!(
            inventory_ecosystem("rpm", &os("rhel", "9.3")).unwrap(),
            ecosystem_key("Red Hat:enterprise_linux:9::appstream")
        );
        assert_ne!(
            ecosystem_key("Ubuntu:Pro:22.04:LTS"),
            ecosystem_key("Ubuntu:22.04:LTS")
        );
        assert_eq!(inventory_ecosystem("deb", &os("arch", "")), None);
        assert_eq!(normalize_name("PyPI", "Jinja2"), "jinja2");
        assert_eq!(
            normalize_name("PyPI", "zope.interface__x"),
            "zope-interface-x"
        );
        assert_eq!(normalize_name("npm", "@Babel/core"), "@Babel/core");
    }
}
