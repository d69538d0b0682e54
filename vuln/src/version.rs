//! Version ordering per ecosystem. Well-kept crates where they exist — `debversion`
//! (deb-version(7)), `pep440_rs` (PEP 440), `semver` (SemVer 2.0 for npm, crates.io and Go),
//! `rpm-version` (rpm's `rpmvercmp` with epochs, [`rpm_cmp`]) — and this module's own
//! comparators where none does: apk-tools ordering ([`apk_cmp`]) and Maven's
//! ComparableVersion ([`maven_cmp`]). Each is table-tested below with the cases their
//! reference implementations document.

use std::cmp::Ordering;
use std::str::FromStr;

use crate::ecosystem::Ecosystem;

/// A version this crate cannot order in its ecosystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{version:?} is not a valid {ecosystem:?} version")]
pub struct VersionError {
    pub ecosystem: Ecosystem,
    pub version: String,
}

/// A parsed version, ready for many comparisons (parsing once is what makes matching fast).
#[derive(Clone, Debug)]
pub enum Version {
    Debian(debversion::Version),
    PyPI(pep440_rs::Version),
    SemVer(semver::Version),
    /// apk, rpm and Maven versions are compared from their text.
    Text(Ecosystem, String),
}

impl Version {
    /// Parses `v` in `eco`'s syntax.
    pub fn parse(eco: Ecosystem, v: &str) -> Result<Self, VersionError> {
        let bad = || VersionError {
            ecosystem: eco,
            version: v.to_string(),
        };
        let v = v.trim();
        if v.is_empty() {
            return Err(bad());
        }
        Ok(match eco {
            Ecosystem::Debian => Self::Debian(debversion::Version::from_str(v).map_err(|_| bad())?),
            Ecosystem::PyPI => Self::PyPI(pep440_rs::Version::from_str(v).map_err(|_| bad())?),
            Ecosystem::SemVer => {
                Self::SemVer(parse_semver(v.trim_start_matches(['v', '='])).ok_or_else(bad)?)
            }
            Ecosystem::Go => {
                let v = v.strip_prefix("go").unwrap_or(v);
                Self::SemVer(parse_semver(v.strip_prefix('v').unwrap_or(v)).ok_or_else(bad)?)
            }
            Ecosystem::Alpine | Ecosystem::Rpm | Ecosystem::Maven | Ecosystem::Other => {
                Self::Text(eco, v.to_string())
            }
        })
    }

    /// Orders two versions of the same ecosystem; `None` when they are of different kinds.
    pub fn cmp_to(&self, other: &Self) -> Option<Ordering> {
        Some(match (self, other) {
            (Self::Debian(a), Self::Debian(b)) => a.cmp(b),
            (Self::PyPI(a), Self::PyPI(b)) => a.cmp(b),
            (Self::SemVer(a), Self::SemVer(b)) => a.cmp_precedence(b),
            (Self::Text(e, a), Self::Text(f, b)) if e == f => match e {
                Ecosystem::Alpine => apk_cmp(a, b),
                Ecosystem::Rpm => rpm_cmp(a, b),
                Ecosystem::Maven => maven_cmp(a, b),
                _ => {
                    if a == b {
                        Ordering::Equal
                    } else {
                        return None;
                    }
                }
            },
            _ => return None,
        })
    }
}

/// Compares two version strings of one ecosystem.
pub fn compare(eco: Ecosystem, a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (x, y) = (Version::parse(eco, a)?, Version::parse(eco, b)?);
    x.cmp_to(&y).ok_or(VersionError {
        ecosystem: eco,
        version: b.to_string(),
    })
}

/// SemVer, leniently: `1.2` and `1` are padded to three components (Go toolchains, some npm
/// records), as osv.dev does.
fn parse_semver(v: &str) -> Option<semver::Version> {
    if let Ok(p) = semver::Version::parse(v) {
        return Some(p);
    }
    let split = v.find(['-', '+']).unwrap_or(v.len());
    let (core, tail) = v.split_at(split);
    let n = core.split('.').count();
    if n >= 3 || core.is_empty() {
        return None;
    }
    let padded = format!("{core}{}{tail}", ".0".repeat(3 - n));
    semver::Version::parse(&padded).ok()
}

fn cmp_numeric(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// `[epoch:]version[-release]` of rpm, ordered as rpm orders them (`rpmvercmp` on epoch,
/// version, then release: `~` before everything, `^` after the base but before any other
/// addition, numeric segments newer than alphabetic ones), by the `rpm-version` crate of the
/// rpm-rs project. When one side has no release, only epoch and version are compared, as rpm
/// does for a dependency range without a release (`openssl >= 1:3.0.7`).
pub fn rpm_cmp(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = rpm_version::Evr::parse_values(a);
    let (eb, vb, rb) = rpm_version::Evr::parse_values(b);
    let (ra, rb) = if ra.is_empty() || rb.is_empty() {
        ("", "")
    } else {
        (ra, rb)
    };
    rpm_version::Evr::new(ea, va, ra).cmp(&rpm_version::Evr::new(eb, vb, rb))
}

/// apk-tools version ordering (`apk version -t`): dotted numbers, an optional letter,
/// suffixes (`_alpha` < `_beta` < `_pre` < `_rc` < none < `_cvs` < `_svn` < `_git` < `_hg` <
/// `_p`, each with an optional number), then `-rN`.
pub fn apk_cmp(a: &str, b: &str) -> Ordering {
    struct Apk<'a> {
        nums: Vec<&'a str>,
        letter: Option<char>,
        suffixes: Vec<(i32, u64)>,
        rev: u64,
    }
    fn suffix_rank(s: &str) -> i32 {
        match s {
            "alpha" => -4,
            "beta" => -3,
            "pre" => -2,
            "rc" => -1,
            "cvs" => 1,
            "svn" => 2,
            "git" => 3,
            "hg" => 4,
            "p" => 5,
            _ => 6,
        }
    }
    fn parse(s: &str) -> Apk<'_> {
        let (body, rev) = match s.rsplit_once("-r") {
            Some((b, r)) if !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()) => {
                (b, r.parse().unwrap_or(0))
            }
            _ => (s, 0),
        };
        let mut parts = body.split('_');
        let head = parts.next().unwrap_or("");
        let mut nums = Vec::new();
        let mut letter = None;
        for (i, n) in head.split('.').enumerate() {
            let digits = n.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            if digits.len() < n.len() && i + 1 == head.split('.').count() {
                letter = n[digits.len()..].chars().next();
            }
            nums.push(digits);
        }
        let suffixes = parts
            .map(|p| {
                let name = p.trim_end_matches(|c: char| c.is_ascii_digit());
                (suffix_rank(name), p[name.len()..].parse().unwrap_or(0))
            })
            .collect();
        Apk {
            nums,
            letter,
            suffixes,
            rev,
        }
    }
    let (x, y) = (parse(a), parse(b));
    for i in 0..x.nums.len().max(y.nums.len()) {
        match (x.nums.get(i), y.nums.get(i)) {
            (Some(p), Some(q)) => {
                // Gentoo/apk: after the first component, a leading zero means a fraction.
                let o = if i > 0 && (p.starts_with('0') || q.starts_with('0')) {
                    p.trim_end_matches('0').cmp(q.trim_end_matches('0'))
                } else {
                    cmp_numeric(p, q)
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (None, None) => break,
        }
    }
    let o = x.letter.cmp(&y.letter);
    if o != Ordering::Equal {
        return o;
    }
    for i in 0..x.suffixes.len().max(y.suffixes.len()) {
        let p = x.suffixes.get(i).copied().unwrap_or((0, 0));
        let q = y.suffixes.get(i).copied().unwrap_or((0, 0));
        let o = p.cmp(&q);
        if o != Ordering::Equal {
            return o;
        }
    }
    x.rev.cmp(&y.rev)
}

/// Maven's ComparableVersion, for the cases advisories use: numeric items compare as numbers,
/// trailing zero items are insignificant (`1.0` = `1`), qualifiers order `alpha` < `beta` <
/// `milestone` < `rc`/`cr` < `snapshot` < release (``, `ga`, `final`, `release`) < `sp` <
/// anything else (alphabetically); a qualifier sorts before a number at the same place.
pub fn maven_cmp(a: &str, b: &str) -> Ordering {
    #[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Debug)]
    enum Item {
        Qualifier(i32, String),
        Number(u128),
    }
    fn qualifier(q: &str) -> Item {
        let q = q.to_ascii_lowercase();
        let rank = match q.as_str() {
            "alpha" | "a" => 0,
            "beta" | "b" => 1,
            "milestone" | "m" => 2,
            "rc" | "cr" => 3,
            "snapshot" => 4,
            "" | "ga" | "final" | "release" => 5,
            "sp" => 6,
            _ => 7,
        };
        Item::Qualifier(rank, if rank == 7 { q } else { String::new() })
    }
    fn items(s: &str) -> Vec<Item> {
        // Groups end at '-' and at a digit/letter transition; each group loses its trailing
        // zeros and release qualifiers (Maven's "null" items), so 1.0-alpha-1 is [1, alpha, 1].
        let mut groups: Vec<Vec<Item>> = vec![Vec::new()];
        let mut token = String::new();
        let mut digit = false;
        let flush = |token: &mut String, groups: &mut Vec<Vec<Item>>| {
            if !token.is_empty() {
                let item = match token.parse::<u128>() {
                    Ok(n) => Item::Number(n),
                    Err(_) => qualifier(token),
                };
                if let Some(g) = groups.last_mut() {
                    g.push(item);
                }
                token.clear();
            }
        };
        for c in s.chars() {
            if c == '-' || c == '.' || c == '_' {
                flush(&mut token, &mut groups);
                if c == '-' {
                    groups.push(Vec::new());
                }
            } else {
                if !token.is_empty() && c.is_ascii_digit() != digit {
                    flush(&mut token, &mut groups);
                    groups.push(Vec::new());
                }
                digit = c.is_ascii_digit();
                token.push(c);
            }
        }
        flush(&mut token, &mut groups);
        let mut v = Vec::new();
        for mut g in groups {
            while matches!(
                g.last(),
                Some(Item::Number(0)) | Some(Item::Qualifier(5, _))
            ) {
                g.pop();
            }
            v.extend(g);
        }
        v
    }
    let (x, y) = (items(a), items(b));
    for i in 0..x.len().max(y.len()) {
        let p = x.get(i).cloned();
        let q = y.get(i).cloned();
        let o = match (p, q) {
            (Some(p), Some(q)) => p.cmp(&q),
            (Some(Item::Number(_)), None) => Ordering::Greater,
            (Some(Item::Qualifier(r, _)), None) => r.cmp(&5),
            (None, Some(Item::Number(_))) => Ordering::Less,
            (None, Some(Item::Qualifier(r, _))) => 5.cmp(&r),
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn table(eco: Ecosystem, rows: &[(&str, &str, Ordering)]) {
        for (a, b, want) in rows {
            assert_eq!(compare(eco, a, b).unwrap(), *want, "{eco:?}: {a} vs {b}");
            assert_eq!(
                compare(eco, b, a).unwrap(),
                want.reverse(),
                "{eco:?}: {b} vs {a}"
            );
        }
    }

    #[test]
    fn debian() {
        table(
            Ecosystem::Debian,
            &[
                ("1:1.2.13.dfsg-1", "1.2.13.dfsg-9", Greater), // epoch wins
                ("1.0~rc1-1", "1.0-1", Less),                  // ~ sorts before the release
                ("1.0~~", "1.0~", Less),
                ("3.0.11-1~deb12u2", "3.0.11-1", Less),
                ("2.36-9+deb12u3", "2.36-9+deb12u10", Less),
                ("1.2.3+really1.2.2-1", "1.2.3-1", Greater), // +really still sorts after
                ("2.36-9", "2.36-9+deb12u1", Less),
                ("7.88.1-10+deb12u5", "7.88.1-10+deb12u5", Equal),
                ("1.0-1", "1.0-1+b1", Less), // binNMU
            ],
        );
        assert!(compare(Ecosystem::Debian, "", "1").is_err());
    }

    #[test]
    fn pep440() {
        table(
            Ecosystem::PyPI,
            &[
                ("3.1.2", "3.1.3", Less),
                ("1.0.dev1", "1.0a1", Less),
                ("1.0a1", "1.0b1", Less),
                ("1.0rc1", "1.0", Less),
                ("1.0", "1.0.post1", Less),
                ("1.0.post1.dev1", "1.0.post1", Less),
                ("1.0", "1.0.0", Equal),
                ("1!0.1", "2.0", Greater), // epoch
                ("2.31.0", "2.32.0", Less),
            ],
        );
        assert!(compare(Ecosystem::PyPI, "not a version", "1").is_err());
    }

    #[test]
    fn semver_npm_crates_go() {
        table(
            Ecosystem::SemVer,
            &[
                ("4.17.20", "4.17.21", Less),
                ("1.0.0-alpha", "1.0.0-alpha.1", Less),
                ("1.0.0-beta.11", "1.0.0-rc.1", Less),
                ("1.0.0-rc.1", "1.0.0", Less),
                ("1.0.0+build.5", "1.0.0", Equal), // build metadata ignored
                ("v2.0.0", "2.0.0", Equal),
            ],
        );
        table(
            Ecosystem::Go,
            &[
                ("v0.0.0-20210921155107-089bfa567519", "v0.1.0", Less), // pseudo-version
                ("v2.0.0+incompatible", "v2.0.1", Less),
                ("go1.21.5", "1.21.6", Less),
                ("1.21", "1.21.0", Equal),
                ("v1.10.0", "v1.9.9", Greater),
            ],
        );
    }

    #[test]
    fn apk() {
        table(
            Ecosystem::Alpine,
            &[
                ("1.36.1-r0", "1.36.1-r5", Less),
                ("1.36.1-r15", "1.36.1-r5", Greater),
                ("3.0.8-r0", "3.0.10-r0", Less),
                ("1.2_rc1-r0", "1.2-r0", Less),
                ("1.2_alpha1", "1.2_beta1", Less),
                ("1.2-r0", "1.2_p1-r0", Less),
                ("1.2", "1.2a", Less),
                ("1.2.1", "1.2", Greater),
                ("1.01", "1.1", Less), // leading zero: a fraction
                ("2.4.1_git20230101-r0", "2.4.1-r0", Greater),
                ("1.2.3-r0", "1.2.3-r0", Equal),
            ],
        );
    }

    #[test]
    fn rpm() {
        table(
            Ecosystem::Rpm,
            &[
                ("1.0-1.el9", "1.0-2.el9", Less),
                ("1:1.0-1", "2.0-1", Greater),
                ("1.0~rc1-1", "1.0-1", Less),
                ("1.0^git1-1", "1.0-1", Greater),
                ("1.0^git1-1", "1.0.1-1", Less),
                ("1.10-1", "1.9-1", Greater),
                ("1.0a-1", "1.0-1", Greater),
                ("1.0a", "1.0.1", Less), // alpha segment older than numeric
                ("3.0.7-24.el9", "3.0.7-25.el9", Less),
                ("2.0-1", "2.0", Equal), // no release on one side
                ("0:3.0.7-24.el9", "3.0.7-24.el9", Equal),
                // rpm's own tests (tests/rpmvercmp.at).
                ("1.0", "1.0", Equal),
                ("1.0", "2.0", Less),
                ("2.0.1", "2.0.1a", Less),
                ("5.5p1", "5.5p10", Less),
                ("5.5p10", "5.5p1", Greater),
                ("10xyz", "10.1xyz", Less),
                ("xyz10", "xyz10.1", Less),
                ("xyz.4", "8", Less),
                ("2_0", "2.0", Equal),
                ("a+", "a_", Equal),
                ("1.0~rc1", "1.0~rc1", Equal),
                ("1.0~rc1", "1.0~rc2", Less),
                ("1.0~rc1~git123", "1.0~rc1", Less),
                ("1.0^", "1.0", Greater),
                ("1.0^git1", "1.0^git2", Less),
                ("1.0^git1", "1.01", Less),
                ("1.0^20160101", "1.0.1", Less),
                ("1.0~rc1^git1", "1.0~rc1", Greater),
                ("1.0^git1~pre", "1.0^git1", Less),
                // Epochs dominate, and a missing epoch is 0.
                ("1:3.0.1-46.el9_0", "3.0.1-48.el9", Greater),
                ("1:3.0.1-46.el9_0", "1:3.0.1-47.el9_1", Less),
                ("1.2.11-31.el9", "1.2.11-32.el9_0", Less),
            ],
        );
    }

    #[test]
    fn maven() {
        table(
            Ecosystem::Maven,
            &[
                ("2.14.1", "2.15.0", Less),
                ("2.17.0", "2.17.1", Less),
                ("1.0", "1", Equal),
                ("1.0-alpha-1", "1.0", Less),
                ("1.0-rc1", "1.0", Less),
                ("1.0-SNAPSHOT", "1.0", Less),
                ("1.0.Final", "1.0", Equal),
                ("1.0-sp1", "1.0", Greater),
                ("1.0-beta", "1.0-alpha", Greater),
                ("2.0", "10.0", Less),
            ],
        );
    }
}
