//! The OSV record, as published by osv.dev, GitHub's advisory database and the distribution
//! feeds (schema <https://ossf.github.io/osv-schema/>). Only the fields matching and display
//! need are modelled; unknown fields are ignored, so newer schema versions still parse.

use serde::{Deserialize, Serialize};

/// Largest OSV record accepted, in bytes (the largest real records, kernel advisories with
/// thousands of `versions`, are a few MB).
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Why a record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not an OSV record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("OSV record without an id")]
    NoId,
    #[error("OSV record larger than {MAX_RECORD_BYTES} bytes")]
    TooLarge,
}

/// One OSV vulnerability record.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Record {
    pub id: String,
    /// RFC 3339 time of the last change; re-imports keep the newest.
    pub modified: String,
    pub published: String,
    /// Set when the record was withdrawn: it then matches nothing.
    pub withdrawn: Option<String>,
    pub aliases: Vec<String>,
    /// Debian/Ubuntu records name the CVEs they follow here.
    pub upstream: Vec<String>,
    pub related: Vec<String>,
    pub summary: String,
    pub details: String,
    pub severity: Vec<Severity>,
    pub affected: Vec<Affected>,
    pub references: Vec<Reference>,
    pub database_specific: Option<serde_json::Value>,
}

/// `severity[]`: a scoring system and its vector (`CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Severity {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

/// `references[]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

/// One `affected[]` entry: a package in one ecosystem and the versions of it that are affected.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Affected {
    pub package: Package,
    pub ranges: Vec<Range>,
    /// Explicitly affected versions (in addition to the ranges).
    pub versions: Vec<String>,
    pub severity: Vec<Severity>,
    pub ecosystem_specific: Option<serde_json::Value>,
    pub database_specific: Option<serde_json::Value>,
}

/// `affected[].package`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Package {
    /// E.g. `Debian:12`, `Alpine:v3.18`, `PyPI`, `npm`, `crates.io`, `Go`, `Maven`.
    pub ecosystem: String,
    /// Source package for Debian/Ubuntu, `group:artifact` for Maven, module path for Go.
    pub name: String,
    pub purl: Option<String>,
}

/// `affected[].ranges[]`: `ECOSYSTEM`, `SEMVER` or `GIT` (the last is not evaluated: it needs the
/// commit graph; records that use it also list `versions`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    pub events: Vec<Event>,
}

/// One range event; exactly one field is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Event {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl Record {
    /// Parses one record (a JSON object), refusing oversized input and records without an id.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge);
        }
        let r: Record = serde_json::from_slice(bytes)?;
        if r.id.trim().is_empty() {
            return Err(RecordError::NoId);
        }
        Ok(r)
    }

    /// The id and every alias and upstream id, deduplicated, the id first: what a search for
    /// "CVE-2024-…" looks through. The rpm distributions' advisories (AlmaLinux ALSA, Rocky
    /// RLSA, Red Hat RHSA) name the CVEs they fix under `related`; those CVE ids count too.
    pub fn all_ids(&self) -> Vec<String> {
        let mut ids = vec![self.id.clone()];
        let rpm_advisory = self.affected.iter().any(|a| {
            crate::ecosystem::Ecosystem::of(&a.package.ecosystem)
                == crate::ecosystem::Ecosystem::Rpm
        });
        let related = self
            .related
            .iter()
            .filter(|r| rpm_advisory && r.starts_with("CVE-"));
        for a in self.aliases.iter().chain(&self.upstream).chain(related) {
            if !ids.contains(a) {
                ids.push(a.clone());
            }
        }
        ids
    }

    /// A link for the record: its advisory or web reference, else osv.dev's page.
    pub fn link(&self) -> String {
        self.references
            .iter()
            .find(|r| r.kind == "ADVISORY")
            .or_else(|| self.references.iter().find(|r| r.kind == "WEB"))
            .map(|r| r.url.clone())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .unwrap_or_else(|| format!("https://osv.dev/vulnerability/{}", self.id))
    }
}
