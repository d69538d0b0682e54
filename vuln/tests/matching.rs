//! Matching real OSV records (tests/fixtures/osv, see SOURCES.md there) against versions.

use defender_vuln::ecosystem::{OsRelease, inventory_ecosystem};
use defender_vuln::osv::{Affected, Event, Package, Range};
use defender_vuln::severity::Rating;
use defender_vuln::{Index, PackageKey, Record, affected_by};

fn fixture(name: &str) -> Record {
    let path = format!("{}/tests/fixtures/osv/{name}", env!("CARGO_MANIFEST_DIR"));
    Record::parse(&std::fs::read(path).expect("fixture")).expect("valid OSV")
}

fn index() -> Index {
    Index::new(vec![
        fixture("GHSA-h5c8-rqwp-cp95.json"),
        fixture("GHSA-35jh-r3h4-6jhm.json"),
        fixture("DSA-3029-1.json"),
    ])
}

#[test]
fn pypi_record_matches_below_the_fix_with_its_cvss() {
    let ix = index();
    // Distribution names are normalised: "Jinja2" is "jinja2".
    let key = PackageKey::of_record("PyPI", "Jinja2");
    let found = ix.find(&key, "3.1.2");
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(f.record_id, "GHSA-h5c8-rqwp-cp95");
    assert_eq!(f.ids, vec!["GHSA-h5c8-rqwp-cp95", "CVE-2024-22195"]);
    assert_eq!(f.fixed.as_deref(), Some("3.1.3"));
    assert_eq!(f.severity.rating, Rating::Medium);
    assert_eq!(f.severity.cvss_score, Some(5.4));
    assert_eq!(
        f.severity.cvss_vector.as_deref(),
        Some("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N")
    );
    assert!(ix.find(&key, "3.1.3").is_empty());
    assert!(ix.find(&key, "3.1.4").is_empty());
    // A pre-release of the fix is still affected (PEP 440: 3.1.3rc1 < 3.1.3).
    assert_eq!(ix.find(&key, "3.1.3rc1").len(), 1);
}

#[test]
fn npm_record_with_two_packages() {
    let ix = index();
    for name in ["lodash", "lodash-es"] {
        let found = ix.find(&PackageKey::of_record("npm", name), "4.17.20");
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(found[0].severity.cvss_score, Some(7.2));
        assert_eq!(found[0].severity.rating, Rating::High);
    }
    assert!(
        ix.find(&PackageKey::of_record("npm", "lodash"), "4.17.21")
            .is_empty()
    );
    assert!(
        ix.find(&PackageKey::of_record("PyPI", "lodash"), "4.17.20")
            .is_empty()
    );
}

#[test]
fn debian_record_matches_its_release_and_source_name_only() {
    let ix = index();
    let wheezy = OsRelease {
        id: "debian".into(),
        version_id: "7".into(),
    };
    let eco = inventory_ecosystem("deb", &wheezy).unwrap();
    let key = PackageKey::of_record(&eco, "nginx");
    let hit = ix.find(&key, "1.2.1-2.2+wheezy2");
    assert_eq!(hit.len(), 1);
    assert_eq!(hit[0].fixed.as_deref(), Some("1.2.1-2.2+wheezy3"));
    // No CVSS vector and no stated severity in the record.
    assert_eq!(hit[0].severity.rating, Rating::Unknown);
    assert!(ix.find(&key, "1.2.1-2.2+wheezy3").is_empty());
    assert!(
        ix.find(&key, "1.2.1-2.2+wheezy3~bpo1").len() == 1,
        "~ sorts before the fix"
    );
    // Another Debian release is another ecosystem.
    let bookworm = OsRelease {
        id: "debian".into(),
        version_id: "12".into(),
    };
    let other = PackageKey::of_record(&inventory_ecosystem("deb", &bookworm).unwrap(), "nginx");
    assert!(ix.find(&other, "1.2.1-2.2+wheezy2").is_empty());
}

fn affected(eco: &str, events: Vec<Event>, versions: &[&str]) -> Affected {
    Affected {
        package: Package {
            ecosystem: eco.into(),
            name: "p".into(),
            purl: None,
        },
        ranges: vec![Range {
            kind: "ECOSYSTEM".into(),
            events,
        }],
        versions: versions.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ev(kind: &str, v: &str) -> Event {
    let mut e = Event::default();
    match kind {
        "introduced" => e.introduced = Some(v.into()),
        "fixed" => e.fixed = Some(v.into()),
        "last_affected" => e.last_affected = Some(v.into()),
        _ => e.limit = Some(v.into()),
    }
    e
}

#[test]
fn range_semantics() {
    // Two affected windows: [1.0, 1.2) and [2.0, 2.1]; versions list adds 0.5.
    let a = affected(
        "crates.io",
        vec![
            ev("introduced", "1.0.0"),
            ev("fixed", "1.2.0"),
            ev("introduced", "2.0.0"),
            ev("last_affected", "2.1.0"),
        ],
        &["0.5.0"],
    );
    let cases = [
        ("0.4.0", None),
        ("0.5.0", Some(Some("1.2.0"))),
        ("1.0.0", Some(Some("1.2.0"))),
        ("1.1.9", Some(Some("1.2.0"))),
        ("1.2.0", None),
        ("1.9.9", None),
        ("2.0.0", Some(None)),
        ("2.1.0", Some(None)),
        ("2.1.1", None),
        ("2.0.0-rc.1", None), // pre-release of 2.0.0 is below the introduction
    ];
    for (v, want) in cases {
        let got = affected_by(&a, v).unwrap();
        assert_eq!(got, want.map(|f| f.map(String::from)), "{v}");
    }
    // Events given out of order are sorted before evaluation.
    let b = affected(
        "PyPI",
        vec![ev("fixed", "2.0"), ev("introduced", "1.0")],
        &[],
    );
    assert_eq!(affected_by(&b, "1.5").unwrap(), Some(Some("2.0".into())));
    assert_eq!(affected_by(&b, "0.9").unwrap(), None);
    // A version the ecosystem cannot parse is an error, not a silent match.
    assert!(affected_by(&b, "not-a-version!").is_err());
}

#[test]
fn withdrawn_records_match_nothing() {
    let mut r = fixture("GHSA-h5c8-rqwp-cp95.json");
    r.withdrawn = Some("2024-02-01T00:00:00Z".into());
    let ix = Index::new(vec![r]);
    assert!(
        ix.find(&PackageKey::of_record("PyPI", "jinja2"), "3.1.2")
            .is_empty()
    );
}

/// Real AlmaLinux 9 advisories (binary package names, rpm versions with epochs, the rating in
/// the summary) against the packages of the rpmdb fixture (agent/tests/fixtures/rpmdb).
#[test]
fn almalinux_records_match_rpm_versions_with_epochs() {
    let ix = Index::new(vec![
        fixture("ALSA-2022-7314.json"),
        fixture("ALSA-2023-0946.json"),
    ]);
    let os = OsRelease {
        id: "almalinux".into(),
        version_id: "9.0".into(),
    };
    let eco = inventory_ecosystem("rpm", &os).unwrap();
    assert_eq!(eco, "AlmaLinux:9");
    let zlib = ix.find(&PackageKey::of_record(&eco, "zlib"), "1.2.11-31.el9");
    assert_eq!(zlib.len(), 1);
    assert_eq!(zlib[0].record_id, "ALSA-2022:7314");
    assert_eq!(zlib[0].ids, vec!["ALSA-2022:7314", "CVE-2022-37434"]);
    assert_eq!(zlib[0].fixed.as_deref(), Some("1.2.11-32.el9_0"));
    assert_eq!(zlib[0].severity.rating, Rating::Medium, "Moderate:");
    assert_eq!(zlib[0].severity.cvss_score, None);
    assert!(
        ix.find(&PackageKey::of_record(&eco, "zlib"), "1.2.11-32.el9_0")
            .is_empty()
    );
    let ossl = PackageKey::of_record(&eco, "openssl-libs");
    assert_eq!(ix.find(&ossl, "1:3.0.1-46.el9_0").len(), 1);
    assert!(ix.find(&ossl, "1:3.0.1-47.el9_1").is_empty());
    // Without the epoch a higher version-release is still older than 1:….
    assert_eq!(ix.find(&ossl, "3.0.7-1.el9").len(), 1);
    assert!(ix.find(&ossl, "1:3.0.7-1.el9").is_empty());
    // Another release's ecosystem does not meet.
    assert!(
        ix.find(
            &PackageKey::of_record("AlmaLinux:8", "zlib"),
            "1.2.11-31.el9"
        )
        .is_empty()
    );
    // Amazon Linux: inventoried, but osv.dev carries no feed for it.
    let amzn = OsRelease {
        id: "amzn".into(),
        version_id: "2023".into(),
    };
    assert_eq!(inventory_ecosystem("rpm", &amzn), None);
}
