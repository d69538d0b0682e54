//! OSV `affected` evaluation and an index of records by package, so that matching an image's
//! packages costs one map lookup per package plus the comparisons of its candidates.
//!
//! Semantics (OSV schema, "Evaluation"): a version is affected when it is listed in
//! `versions`, or when, walking a range's events in version order, the last `introduced` at or
//! below it is not followed by a `fixed` at or below it or a `last_affected` below it. `GIT`
//! ranges are skipped (they need the repository; such records also list `versions`).

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::ecosystem::{Ecosystem, PackageKey};
use crate::osv::{Affected, Record};
use crate::severity::{SeverityInfo, severity_of};
use crate::version::{Version, VersionError};

#[derive(Clone, Debug)]
enum EventKind {
    Introduced,
    Fixed,
    LastAffected,
}

/// One range with its versions parsed once.
#[derive(Clone, Debug)]
struct CompiledRange {
    /// Sorted by version; `introduced: "0"` is `None` (below everything).
    events: Vec<(EventKind, Option<Version>, String)>,
}

/// An `affected` entry ready for many evaluations.
#[derive(Clone, Debug)]
pub struct CompiledAffected {
    eco: Ecosystem,
    ranges: Vec<CompiledRange>,
    versions: Vec<String>,
}

impl CompiledAffected {
    /// Parses the versions of `a`'s `ECOSYSTEM`/`SEMVER` ranges; events whose version does not
    /// parse are dropped (and so cannot make a version affected).
    pub fn new(a: &Affected) -> Self {
        let eco = Ecosystem::of(&a.package.ecosystem);
        let mut ranges = Vec::new();
        for r in &a.ranges {
            let range_eco = match r.kind.as_str() {
                "ECOSYSTEM" => eco,
                "SEMVER" => Ecosystem::SemVer,
                _ => continue,
            };
            let mut events = Vec::new();
            for e in &r.events {
                let (kind, v) = if let Some(v) = &e.introduced {
                    (EventKind::Introduced, v)
                } else if let Some(v) = &e.fixed {
                    (EventKind::Fixed, v)
                } else if let Some(v) = &e.last_affected {
                    (EventKind::LastAffected, v)
                } else {
                    continue;
                };
                if matches!(kind, EventKind::Introduced) && v == "0" {
                    events.push((kind, None, v.clone()));
                } else if let Ok(p) = Version::parse(range_eco, v) {
                    events.push((kind, Some(p), v.clone()));
                }
            }
            events.sort_by(|a, b| match (&a.1, &b.1) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(x), Some(y)) => x.cmp_to(y).unwrap_or(Ordering::Equal),
            });
            ranges.push((range_eco, CompiledRange { events }));
        }
        // Ranges typed SEMVER on an ecosystem with its own ordering are evaluated in SemVer.
        let ranges = ranges.into_iter().map(|(_, r)| r).collect();
        Self {
            eco,
            ranges,
            versions: a.versions.clone(),
        }
    }

    /// Whether `version` is affected; `Some(fixed)` when it is, with the lowest fixed version
    /// above it, if any.
    pub fn evaluate(&self, version: &str) -> Result<Option<Option<String>>, VersionError> {
        if self.versions.iter().any(|v| v == version) {
            return Ok(Some(self.fixed_above(version)));
        }
        let mut parsed: Option<Version> = None;
        for r in &self.ranges {
            let Some(first) = r.events.iter().find_map(|e| e.1.as_ref()) else {
                // Only `introduced: 0`: everything is affected.
                if !r.events.is_empty() {
                    return Ok(Some(None));
                }
                continue;
            };
            let v = match &parsed {
                Some(v) => v.clone(),
                None => {
                    let eco = match first {
                        Version::SemVer(_) if self.eco != Ecosystem::Go => Ecosystem::SemVer,
                        _ => self.eco,
                    };
                    let p = Version::parse(eco, version)?;
                    parsed = Some(p.clone());
                    p
                }
            };
            let mut affected = false;
            for (kind, ev, _) in &r.events {
                let cmp = match ev {
                    None => Ordering::Greater,
                    Some(e) => match v.cmp_to(e) {
                        Some(o) => o,
                        None => continue,
                    },
                };
                match kind {
                    EventKind::Introduced if cmp != Ordering::Less => affected = true,
                    EventKind::Fixed if cmp != Ordering::Less => affected = false,
                    EventKind::LastAffected if cmp == Ordering::Greater => affected = false,
                    _ => {}
                }
            }
            if affected {
                let fixed = r
                    .events
                    .iter()
                    .filter(|(k, _, _)| matches!(k, EventKind::Fixed))
                    .find(|(_, e, _)| e.as_ref().and_then(|e| v.cmp_to(e)) == Some(Ordering::Less))
                    .map(|(_, _, s)| s.clone());
                return Ok(Some(fixed));
            }
        }
        Ok(None)
    }

    fn fixed_above(&self, version: &str) -> Option<String> {
        let v = Version::parse(self.eco, version).ok()?;
        self.ranges
            .iter()
            .flat_map(|r| &r.events)
            .filter(|(k, _, _)| matches!(k, EventKind::Fixed))
            .find(|(_, e, _)| e.as_ref().and_then(|e| v.cmp_to(e)) == Some(Ordering::Less))
            .map(|(_, _, s)| s.clone())
    }
}

/// Whether `version` of `affected.package` is affected (see the module docs); `Some(fixed)`
/// when it is.
pub fn affected_by(
    affected: &Affected,
    version: &str,
) -> Result<Option<Option<String>>, VersionError> {
    CompiledAffected::new(affected).evaluate(version)
}

/// One vulnerability found in one package.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub record_id: String,
    /// Record id, aliases and upstream ids.
    pub ids: Vec<String>,
    pub summary: String,
    pub link: String,
    /// The record's ecosystem string (`Debian:12`).
    pub ecosystem: String,
    /// The name the record uses (a Debian source package, say).
    pub record_package: String,
    pub fixed: Option<String>,
    pub severity: SeverityInfo,
}

/// Records indexed by [`PackageKey`]; withdrawn records are left out.
#[derive(Default)]
pub struct Index {
    records: Vec<Record>,
    by_key: HashMap<PackageKey, Vec<(usize, usize, CompiledAffected)>>,
}

impl Index {
    /// Indexes `records`. Cost: one parse of every range event.
    pub fn new(records: Vec<Record>) -> Self {
        let mut ix = Self::default();
        for r in records {
            ix.add(r);
        }
        ix
    }

    /// Adds one record.
    pub fn add(&mut self, r: Record) {
        if r.withdrawn.as_deref().is_some_and(|w| !w.is_empty()) {
            return;
        }
        let n = self.records.len();
        for (i, a) in r.affected.iter().enumerate() {
            let key = PackageKey::of_record(&a.package.ecosystem, &a.package.name);
            self.by_key
                .entry(key)
                .or_default()
                .push((n, i, CompiledAffected::new(a)));
        }
        self.records.push(r);
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The findings for one package at `version` under `key`. Versions that do not parse in
    /// the ecosystem match nothing (only exact `versions` entries could, and those are tried).
    pub fn find(&self, key: &PackageKey, version: &str) -> Vec<Finding> {
        let mut out: Vec<Finding> = Vec::new();
        let Some(candidates) = self.by_key.get(key) else {
            return out;
        };
        for (ri, ai, compiled) in candidates {
            let Ok(Some(fixed)) = compiled.evaluate(version) else {
                continue;
            };
            let r = &self.records[*ri];
            if out.iter().any(|f| f.record_id == r.id) {
                continue;
            }
            let a = &r.affected[*ai];
            out.push(Finding {
                record_id: r.id.clone(),
                ids: r.all_ids(),
                summary: r.summary.clone(),
                link: r.link(),
                ecosystem: a.package.ecosystem.clone(),
                record_package: a.package.name.clone(),
                fixed,
                severity: severity_of(r, a),
            });
        }
        out
    }
}
