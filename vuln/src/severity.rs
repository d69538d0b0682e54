//! Severity of a finding: the CVSS base score computed from the record's vector with the
//! `cvss` crate (CVSS v2.0, v3.0, v3.1, v4.0; FIRST's specifications), else the severity the
//! ecosystem states (GitHub's `database_specific.severity`, Debian's urgency, Ubuntu's
//! priority). The vector is kept so users can see how the score came about.

use std::str::FromStr;

use serde::Serialize;

use crate::osv::{Affected, Record, Severity};

/// The qualitative rating, ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Unknown,
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

impl Rating {
    /// Lowercase name, as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Negligible => "negligible",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Parses a rating name in any of the spellings feeds use (`MODERATE`, `important`, …).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Self::Critical,
            "high" | "important" => Self::High,
            "medium" | "moderate" => Self::Medium,
            "low" => Self::Low,
            "negligible" | "unimportant" | "none" => Self::Negligible,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// Every rating, most severe first (for counts and filters).
    pub const ALL: [Rating; 6] = [
        Rating::Critical,
        Rating::High,
        Rating::Medium,
        Rating::Low,
        Rating::Negligible,
        Rating::Unknown,
    ];

    /// The rating of a CVSS base score (v3/v4 scale: 0.1–3.9 low, 4.0–6.9 medium, 7.0–8.9 high,
    /// 9.0–10.0 critical).
    pub fn of_score(score: f64) -> Self {
        match score {
            s if s >= 9.0 => Self::Critical,
            s if s >= 7.0 => Self::High,
            s if s >= 4.0 => Self::Medium,
            s if s > 0.0 => Self::Low,
            _ => Self::Negligible,
        }
    }
}

/// What a finding shows about severity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeverityInfo {
    pub rating: Rating,
    /// CVSS base score, 0.0–10.0, when a vector was given and valid.
    pub cvss_score: Option<f64>,
    /// The vector the score came from (`CVSS:3.1/AV:N/…`).
    pub cvss_vector: Option<String>,
}

/// Base score of a CVSS vector (v2 vectors have no prefix; v3.x and v4.0 do).
pub fn cvss_base_score(vector: &str) -> Option<f64> {
    cvss::Cvss::from_str(vector.trim()).ok().map(|c| c.score())
}

fn best_cvss(list: &[Severity]) -> Option<(f64, String)> {
    // Prefer the newest CVSS version given: v4, then v3, then v2.
    for kind in ["CVSS_V4", "CVSS_V3", "CVSS_V2"] {
        for s in list.iter().filter(|s| s.kind == kind) {
            if let Some(score) = cvss_base_score(&s.score) {
                return Some((score, s.score.clone()));
            }
        }
    }
    None
}

fn text_rating(v: &Option<serde_json::Value>, keys: &[&str]) -> Option<Rating> {
    let obj = v.as_ref()?.as_object()?;
    keys.iter()
        .find_map(|k| obj.get(*k)?.as_str().and_then(Rating::parse))
}

/// Red Hat's rating as its rebuilds' advisories state it, in the summary
/// (`"Moderate: zlib security update"`): AlmaLinux and Rocky Linux records carry no CVSS.
fn summary_rating(record: &Record, affected: &Affected) -> Option<Rating> {
    if crate::ecosystem::Ecosystem::of(&affected.package.ecosystem)
        != crate::ecosystem::Ecosystem::Rpm
    {
        return None;
    }
    let (word, _) = record.summary.split_once(':')?;
    match word.trim() {
        "Critical" | "Important" | "Moderate" | "Low" => Rating::parse(word),
        _ => None,
    }
}

/// The severity of `affected` within `record`.
pub fn severity_of(record: &Record, affected: &Affected) -> SeverityInfo {
    if let Some((score, vector)) =
        best_cvss(&affected.severity).or_else(|| best_cvss(&record.severity))
    {
        return SeverityInfo {
            rating: Rating::of_score(score),
            cvss_score: Some((score * 10.0).round() / 10.0),
            cvss_vector: Some(vector),
        };
    }
    let stated = text_rating(&affected.ecosystem_specific, &["severity", "urgency"])
        .or_else(|| text_rating(&affected.database_specific, &["severity"]))
        .or_else(|| text_rating(&record.database_specific, &["severity"]))
        .or_else(|| {
            record
                .severity
                .iter()
                .chain(&affected.severity)
                .find(|s| s.kind == "Ubuntu")
                .and_then(|s| Rating::parse(&s.score))
        })
        .or_else(|| summary_rating(record, affected));
    SeverityInfo {
        rating: stated.unwrap_or(Rating::Unknown),
        cvss_score: None,
        cvss_vector: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvss_scores_match_first_calculators() {
        // Reference values from FIRST's calculators.
        let cases = [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N", 5.4),
            ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H", 5.5),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                9.3,
            ),
        ];
        for (v, want) in cases {
            let got = cvss_base_score(v).unwrap_or(-1.0);
            assert!((got - want).abs() < 0.05, "{v}: {got} != {want}");
        }
        assert_eq!(cvss_base_score("CVSS:3.1/AV:X"), None);
    }

    #[test]
    fn ratings() {
        assert_eq!(Rating::of_score(9.8), Rating::Critical);
        assert_eq!(Rating::of_score(7.0), Rating::High);
        assert_eq!(Rating::of_score(5.4), Rating::Medium);
        assert_eq!(Rating::of_score(0.1), Rating::Low);
        assert_eq!(Rating::parse("MODERATE"), Some(Rating::Medium));
        assert_eq!(Rating::parse("unimportant"), Some(Rating::Negligible));
        assert!(Rating::Critical > Rating::High && Rating::Low > Rating::Unknown);
    }
}
