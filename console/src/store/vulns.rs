//! Vulnerabilities and compliance in the database: the OSV records (`vuln_records`, with their
//! package keys and ids for lookups), images and their inventories, the findings of matching the
//! two (`image_vulns`), and compliance results and policy.
//!
//! Inventory and compliance events arrive through the ordinary event path (spooled, acked after
//! commit, deduplicated by `(defender_id, seq)`); [`Store::sync_inventory`] applies those committed
//! since the last call (cursor: their `events` rowid, as the audit index does) and re-matches
//! each image whose inventory arrived. Every read here runs it first, so a page never lags
//! behind ingest. Importing records re-matches every image, so a new advisory shows on images
//! already running without restarting anything.

use std::collections::{BTreeMap, BTreeSet};

use defender_proto::v1::event::Kind;
use defender_proto::v1::{ComplianceReport, Event, Inventory};
use defender_vuln::ecosystem::{OsRelease, inventory_ecosystem, normalize_name};
use defender_vuln::{Index, PackageKey, Record};
use prost::Message;
use sqlx::QueryBuilder;

use super::{Store, StoreError, now_ms};

/// Events applied per sync round.
const SYNC_CHUNK: i64 = 200;

/// Serialises [`Store::sync_inventory`] and re-matching within the process.
static SYNC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportStats {
    pub added: u64,
    pub updated: u64,
    /// Records already held at the same or a newer `modified`.
    pub unchanged: u64,
    /// Images re-matched afterwards.
    pub images_rematched: u64,
}

/// `vulndb status`: records per ecosystem and the newest `modified`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VulnDbStatus {
    pub records: i64,
    pub newest_modified: String,
    /// `(ecosystem as the records spell it, records naming it)`, most records first.
    pub ecosystems: Vec<(String, i64)>,
}

/// One image with its Defenders and counts of findings by severity.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageSummary {
    pub id: String,
    pub name: String,
    pub os: String,
    pub total_packages: i64,
    pub truncated: bool,
    pub notes: Vec<String>,
    pub inventory_ms: i64,
    pub last_inventory_ms: i64,
    /// Findings by severity name (`critical`, `high`, `medium`, `low`, `negligible`, `unknown`).
    pub counts: BTreeMap<String, i64>,
    pub vulnerabilities: i64,
    pub defenders: Vec<ImageDefender>,
}

/// A Defender running an image.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct ImageDefender {
    pub defender_id: String,
    pub container: String,
    pub last_seen_ms: i64,
    pub hostname: String,
    pub task_arn: String,
    pub family: String,
    pub revision: String,
}

/// One finding.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct VulnRow {
    pub image_id: String,
    pub record_id: String,
    pub package: String,
    pub version: String,
    pub kind: String,
    pub ecosystem: String,
    pub fixed: String,
    pub severity: String,
    pub cvss_score: Option<f64>,
    pub cvss_vector: String,
    pub summary: String,
    pub link: String,
    /// Id, aliases and upstream ids, space-separated.
    pub ids: String,
}

/// One inventoried package.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct PackageRow {
    pub kind: String,
    pub name: String,
    pub version: String,
    pub source_name: String,
    pub source_version: String,
    pub arch: String,
    pub path: String,
}

/// One compliance result, with the policy applied.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub struct ComplianceRow {
    pub defender_id: String,
    pub container: String,
    pub image_id: String,
    pub check_id: String,
    pub title: String,
    /// The policy's severity when it sets one, else the Defender's default.
    pub severity: String,
    pub passed: bool,
    pub evidence: String,
    pub cis: String,
    pub time_ms: i64,
}

/// A check's setting in Defend > Compliance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct CheckSetting {
    pub check_id: String,
    pub enabled: bool,
    /// Empty: the check's default severity.
    pub severity: String,
}

/// Rank of a severity name for sorting (critical highest).
pub fn severity_rank(s: &str) -> i64 {
    match s {
        "critical" => 5,
        "high" => 4,
        "medium" => 3,
        "low" => 2,
        "negligible" => 1,
        _ => 0,
    }
}

/// The key and version a package is matched with: Debian/Ubuntu and Alpine advisories name
/// source packages, so those use the source name (and dpkg's source version when it differs).
pub fn match_key(
    os: &OsRelease,
    kind: &str,
    name: &str,
    version: &str,
    source_name: &str,
    source_version: &str,
) -> Option<(PackageKey, String)> {
    let eco = inventory_ecosystem(kind, os)?;
    let (n, v) = match kind {
        "deb" | "apk" if !source_name.is_empty() => (
            source_name,
            if source_version.is_empty() {
                version
            } else {
                source_version
            },
        ),
        _ => (name, version),
    };
    Some((
        PackageKey {
            ecosystem: defender_vuln::ecosystem::ecosystem_key(&eco),
            name: normalize_name(&eco, n),
        },
        v.to_string(),
    ))
}

#[derive(sqlx::FromRow)]
struct EventRow {
    rowid: i64,
    defender_id: String,
    container: String,
    time_ms: i64,
    body: Vec<u8>,
}

impl Store {
    /// Stores `records` (each with its JSON as read), replacing held records that are not newer,
    /// then re-matches every image.
    pub async fn import_records(
        &self,
        records: Vec<(Record, String)>,
    ) -> Result<ImportStats, StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut stats = ImportStats::default();
            let now = now_ms();
            for chunk in records.chunks(500) {
                let mut tx = pool.begin().await?;
                for (r, json) in chunk {
                    let held: Option<String> =
                        sqlx::query_scalar("SELECT modified FROM vuln_records WHERE id = $1")
                            .bind(&r.id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    match &held {
                        Some(m)
                            if m.as_str() > r.modified.as_str()
                                || (m == &r.modified && !r.modified.is_empty()) =>
                        {
                            stats.unchanged += 1;
                            continue;
                        }
                        Some(_) => stats.updated += 1,
                        None => stats.added += 1,
                    }
                    let withdrawn = r.withdrawn.as_deref().is_some_and(|w| !w.is_empty());
                    sqlx::query(
                    "INSERT INTO vuln_records (id, modified, summary, withdrawn, body, imported_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id) DO UPDATE SET modified = excluded.modified, summary = excluded.summary, \
                     withdrawn = excluded.withdrawn, body = excluded.body, imported_at = excluded.imported_at",
                )
                .bind(&r.id)
                .bind(&r.modified)
                .bind(&r.summary)
                .bind(withdrawn)
                .bind(json)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                    sqlx::query("DELETE FROM vuln_affected WHERE record_id = $1")
                        .bind(&r.id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM vuln_ids WHERE record_id = $1")
                        .bind(&r.id)
                        .execute(&mut *tx)
                        .await?;
                    let keys: BTreeSet<(String, String, String)> = r
                        .affected
                        .iter()
                        .map(|a| {
                            let k = PackageKey::of_record(&a.package.ecosystem, &a.package.name);
                            (k.ecosystem, k.name, a.package.ecosystem.clone())
                        })
                        .collect();
                    for (eco, name, raw) in keys {
                        sqlx::query("INSERT INTO vuln_affected (ecosystem, name, record_id, raw_ecosystem) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                        .bind(eco)
                        .bind(name)
                        .bind(&r.id)
                        .bind(raw)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for alias in r.all_ids() {
                        sqlx::query("INSERT INTO vuln_ids (alias, record_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(alias.to_ascii_uppercase())
                        .bind(&r.id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
            }
            if stats.added + stats.updated > 0 {
                self.sync_inventory().await?;
                let _one = SYNC.lock().await;
                let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM images")
                    .fetch_all(pool)
                    .await?;
                for id in &ids {
                    self.rematch_image(id).await?;
                }
                stats.images_rematched = ids.len() as u64;
            }
            Ok(stats)
        })
    }

    /// Records held, per ecosystem, and the newest `modified`.
    pub async fn vulndb_status(&self) -> Result<VulnDbStatus, StoreError> {
        with_pool!(&self.pool, |pool| {
            let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vuln_records")
                .fetch_one(pool)
                .await?;
            let newest: Option<String> =
                sqlx::query_scalar("SELECT MAX(modified) FROM vuln_records")
                    .fetch_one(pool)
                    .await?;
            let ecosystems: Vec<(String, i64)> = sqlx::query_as(
            "SELECT raw_ecosystem, COUNT(DISTINCT record_id) AS n FROM vuln_affected GROUP BY raw_ecosystem ORDER BY n DESC, raw_ecosystem",
        )
        .fetch_all(pool)
        .await?;
            Ok(VulnDbStatus {
                records,
                newest_modified: newest.unwrap_or_default(),
                ecosystems,
            })
        })
    }

    /// Applies the inventory and compliance events committed since the last call.
    pub async fn sync_inventory(&self) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let _one = SYNC.lock().await;
            loop {
                let last: i64 =
                    sqlx::query_scalar("SELECT last_rowid FROM inventory_cursor WHERE id = 1")
                        .fetch_one(pool)
                        .await?;
                let rows: Vec<EventRow> = sqlx::query_as(
                    "SELECT rowid, defender_id, container, time_ms, body FROM events \
                 WHERE kind IN ('inventory', 'compliance') AND rowid > $1 ORDER BY rowid LIMIT $2",
                )
                .bind(last)
                .bind(SYNC_CHUNK)
                .fetch_all(pool)
                .await?;
                let Some(max) = rows.last().map(|r| r.rowid) else {
                    return Ok(());
                };
                let mut rematch = BTreeSet::new();
                for row in &rows {
                    let Ok(event) = Event::decode(row.body.as_slice()) else {
                        continue;
                    };
                    match event.kind {
                        Some(Kind::Inventory(inv)) => {
                            if let Some(id) = self
                                .apply_inventory(&row.defender_id, &row.container, row.time_ms, inv)
                                .await?
                            {
                                rematch.insert(id);
                            }
                        }
                        Some(Kind::Compliance(c)) => {
                            self.apply_compliance(&row.defender_id, &row.container, row.time_ms, c)
                                .await?
                        }
                        _ => {}
                    }
                }
                for id in &rematch {
                    self.rematch_image(id).await?;
                }
                sqlx::query("UPDATE inventory_cursor SET last_rowid = $1 WHERE id = 1")
                    .bind(max)
                    .execute(pool)
                    .await?;
            }
        })
    }

    async fn apply_inventory(
        &self,
        defender_id: &str,
        container: &str,
        time_ms: i64,
        inv: Inventory,
    ) -> Result<Option<String>, StoreError> {
        with_pool!(&self.pool, |pool| {
            if inv.image_id.is_empty() || inv.image_id.len() > 200 {
                return Ok(None);
            }
            let held: Option<i64> =
                sqlx::query_scalar("SELECT last_inventory_ms FROM images WHERE id = $1")
                    .bind(&inv.image_id)
                    .fetch_optional(pool)
                    .await?;
            let mut tx = pool.begin().await?;
            sqlx::query(
            "INSERT INTO image_defenders (image_id, defender_id, container, last_seen_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (image_id, defender_id, container) DO UPDATE SET last_seen_ms = CASE WHEN excluded.last_seen_ms > image_defenders.last_seen_ms \
             THEN excluded.last_seen_ms ELSE image_defenders.last_seen_ms END",
        )
        .bind(&inv.image_id)
        .bind(defender_id)
        .bind(container)
        .bind(time_ms)
        .execute(&mut *tx)
        .await?;
            if held.is_some_and(|t| t > time_ms) {
                // An older inventory of an image held from a newer one: only the Defender link counts.
                tx.commit().await?;
                return Ok(None);
            }
            let os = inv.os.clone().unwrap_or_default();
            sqlx::query(
            "INSERT INTO images (id, name, os_id, os_version_id, os_pretty_name, total_packages, truncated, notes, inventory_ms, last_inventory_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO UPDATE SET \
             name = CASE WHEN excluded.name = '' THEN images.name ELSE excluded.name END, os_id = excluded.os_id, \
             os_version_id = excluded.os_version_id, os_pretty_name = excluded.os_pretty_name, total_packages = excluded.total_packages, \
             truncated = excluded.truncated, notes = excluded.notes, inventory_ms = excluded.inventory_ms, last_inventory_ms = excluded.last_inventory_ms",
        )
        .bind(&inv.image_id)
        .bind(&inv.image)
        .bind(&os.id)
        .bind(&os.version_id)
        .bind(&os.pretty_name)
        .bind(i64::from(inv.total_packages))
        .bind(inv.truncated)
        .bind(inv.notes.join("\n"))
        .bind(i64::from(inv.duration_ms))
        .bind(time_ms)
        .execute(&mut *tx)
        .await?;
            sqlx::query("DELETE FROM image_packages WHERE image_id = $1")
                .bind(&inv.image_id)
                .execute(&mut *tx)
                .await?;
            for chunk in inv.packages.chunks(100) {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO image_packages (image_id, kind, name, version, source_name, source_version, arch, path) ",
                );
                qb.push_values(chunk, |mut b, p| {
                    b.push_bind(&inv.image_id)
                        .push_bind(&p.kind)
                        .push_bind(&p.name)
                        .push_bind(&p.version)
                        .push_bind(&p.source_name)
                        .push_bind(&p.source_version)
                        .push_bind(&p.arch)
                        .push_bind(&p.path);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Some(inv.image_id))
        })
    }

    async fn apply_compliance(
        &self,
        defender_id: &str,
        container: &str,
        time_ms: i64,
        c: ComplianceReport,
    ) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM compliance_results WHERE defender_id = $1 AND container = $2 AND time_ms <= $3")
            .bind(defender_id)
            .bind(container)
            .bind(time_ms)
            .execute(&mut *tx)
            .await?;
            for r in c.results.iter().take(200) {
                sqlx::query(
                "INSERT INTO compliance_results (defender_id, container, image_id, check_id, title, severity, passed, evidence, cis, time_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            )
            .bind(defender_id)
            .bind(container)
            .bind(&c.image_id)
            .bind(&r.check_id)
            .bind(&r.title)
            .bind(&r.severity)
            .bind(r.passed)
            .bind(&r.evidence)
            .bind(&r.cis)
            .bind(time_ms)
            .execute(&mut *tx)
            .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Recomputes the findings of one image from its packages and the records naming them.
    async fn rematch_image(&self, image_id: &str) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let os: Option<(String, String)> =
                sqlx::query_as("SELECT os_id, os_version_id FROM images WHERE id = $1")
                    .bind(image_id)
                    .fetch_optional(pool)
                    .await?;
            let Some((os_id, version_id)) = os else {
                return Ok(());
            };
            let os = OsRelease {
                id: os_id,
                version_id,
            };
            let packages: Vec<PackageRow> = sqlx::query_as(
            "SELECT kind, name, version, source_name, source_version, arch, path FROM image_packages WHERE image_id = $1",
        )
        .bind(image_id)
        .fetch_all(pool)
        .await?;
            let keyed: Vec<(&PackageRow, PackageKey, String)> = packages
                .iter()
                .filter_map(|p| {
                    match_key(
                        &os,
                        &p.kind,
                        &p.name,
                        &p.version,
                        &p.source_name,
                        &p.source_version,
                    )
                    .map(|(k, v)| (p, k, v))
                })
                .collect();
            let keys: BTreeSet<&PackageKey> = keyed.iter().map(|(_, k, _)| k).collect();
            let mut record_ids: BTreeSet<String> = BTreeSet::new();
            for k in keys {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT record_id FROM vuln_affected WHERE ecosystem = $1 AND name = $2",
                )
                .bind(&k.ecosystem)
                .bind(&k.name)
                .fetch_all(pool)
                .await?;
                record_ids.extend(ids);
            }
            let mut records = Vec::new();
            for id in &record_ids {
                let body: Option<String> = sqlx::query_scalar(
                    "SELECT body FROM vuln_records WHERE id = $1 AND NOT withdrawn",
                )
                .bind(id)
                .fetch_optional(pool)
                .await?;
                if let Some(r) = body.and_then(|b| Record::parse(b.as_bytes()).ok()) {
                    records.push(r);
                }
            }
            let index = Index::new(records);
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM image_vulns WHERE image_id = $1")
                .bind(image_id)
                .execute(&mut *tx)
                .await?;
            for (p, key, version) in &keyed {
                for f in index.find(key, version) {
                    let sev = f.severity.rating.as_str();
                    sqlx::query(
                    "INSERT INTO image_vulns (image_id, record_id, package, version, kind, ecosystem, fixed, severity, severity_rank, \
                     cvss_score, cvss_vector, summary, link, ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
                )
                .bind(image_id)
                .bind(&f.record_id)
                .bind(&p.name)
                .bind(&p.version)
                .bind(&p.kind)
                .bind(&f.ecosystem)
                .bind(f.fixed.as_deref().unwrap_or(""))
                .bind(sev)
                .bind(severity_rank(sev))
                .bind(f.severity.cvss_score)
                .bind(f.severity.cvss_vector.as_deref().unwrap_or(""))
                .bind(&f.summary)
                .bind(&f.link)
                .bind(f.ids.join(" "))
                .execute(&mut *tx)
                .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every image, newest inventory first, with counts and Defenders.
    pub async fn list_images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_inventory().await?;
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM images ORDER BY last_inventory_ms DESC, id")
                    .fetch_all(pool)
                    .await?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(i) = self.image_summary(&id).await? {
                    out.push(i);
                }
            }
            Ok(out)
        })
    }

    /// One image's summary, `None` when unknown.
    pub async fn image(&self, id: &str) -> Result<Option<ImageSummary>, StoreError> {
        self.sync_inventory().await?;
        self.image_summary(id).await
    }

    async fn image_summary(&self, id: &str) -> Result<Option<ImageSummary>, StoreError> {
        with_pool!(&self.pool, |pool| {
            #[derive(sqlx::FromRow)]
            struct Row {
                id: String,
                name: String,
                os_pretty_name: String,
                os_id: String,
                os_version_id: String,
                total_packages: i64,
                truncated: bool,
                notes: String,
                inventory_ms: i64,
                last_inventory_ms: i64,
            }
            let Some(r): Option<Row> = sqlx::query_as(
            "SELECT id, name, os_pretty_name, os_id, os_version_id, total_packages, truncated, notes, inventory_ms, last_inventory_ms FROM images WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(None);
        };
            let counts: Vec<(String, i64)> = sqlx::query_as(
                "SELECT severity, COUNT(*) FROM image_vulns WHERE image_id = $1 GROUP BY severity",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            let mut map: BTreeMap<String, i64> = defender_vuln::Rating::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), 0))
                .collect();
            let mut total = 0;
            for (s, n) in counts {
                total += n;
                *map.entry(s).or_default() += n;
            }
            let defenders: Vec<ImageDefender> = sqlx::query_as(
            "SELECT i.defender_id, i.container, i.last_seen_ms, COALESCE(d.hostname, '') AS hostname, COALESCE(d.task_arn, '') AS task_arn, \
             COALESCE(d.family, '') AS family, COALESCE(d.revision, '') AS revision \
             FROM image_defenders i LEFT JOIN defenders d ON d.id = i.defender_id WHERE i.image_id = $1 ORDER BY i.last_seen_ms DESC",
        )
        .bind(id)
        .fetch_all(pool)
        .await?;
            let os = if r.os_pretty_name.is_empty() {
                format!("{} {}", r.os_id, r.os_version_id)
                    .trim()
                    .to_string()
            } else {
                r.os_pretty_name
            };
            Ok(Some(ImageSummary {
                id: r.id,
                name: r.name,
                os,
                total_packages: r.total_packages,
                truncated: r.truncated,
                notes: r
                    .notes
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
                inventory_ms: r.inventory_ms,
                last_inventory_ms: r.last_inventory_ms,
                counts: map,
                vulnerabilities: total,
                defenders,
            }))
        })
    }

    /// Findings of one image, most severe first.
    pub async fn image_vulns(&self, id: &str) -> Result<Vec<VulnRow>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_inventory().await?;
            Ok(sqlx::query_as(
            "SELECT image_id, record_id, package, version, kind, ecosystem, fixed, severity, cvss_score, cvss_vector, summary, link, ids \
             FROM image_vulns WHERE image_id = $1 ORDER BY severity_rank DESC, cvss_score DESC, record_id, package",
        )
        .bind(id)
        .fetch_all(pool)
        .await?)
        })
    }

    /// Packages of one image.
    pub async fn image_packages(&self, id: &str) -> Result<Vec<PackageRow>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_inventory().await?;
            Ok(sqlx::query_as(
            "SELECT kind, name, version, source_name, source_version, arch, path FROM image_packages WHERE image_id = $1 ORDER BY kind, name, version",
        )
        .bind(id)
        .fetch_all(pool)
        .await?)
        })
    }

    /// Findings of a record id or alias (`CVE-…`, `GHSA-…`, `DSA-…`) across all images.
    pub async fn find_vulnerability(&self, id: &str) -> Result<Vec<VulnRow>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_inventory().await?;
            Ok(sqlx::query_as(
            "SELECT v.image_id, v.record_id, v.package, v.version, v.kind, v.ecosystem, v.fixed, v.severity, v.cvss_score, v.cvss_vector, \
             v.summary, v.link, v.ids FROM image_vulns v WHERE v.record_id IN (SELECT record_id FROM vuln_ids WHERE alias = $1) \
             ORDER BY v.image_id, v.record_id, v.package",
        )
        .bind(id.trim().to_ascii_uppercase())
        .fetch_all(pool)
        .await?)
        })
    }

    /// Whether any record has this id or alias.
    pub async fn vuln_id_known(&self, id: &str) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM vuln_ids WHERE alias = $1")
                .bind(id.trim().to_ascii_uppercase())
                .fetch_one(pool)
                .await?;
            Ok(n > 0)
        })
    }

    /// Latest compliance results (all Defenders, or one), the policy applied: disabled checks
    /// left out, severities overridden; failed checks first.
    pub async fn compliance(
        &self,
        defender_id: Option<&str>,
    ) -> Result<Vec<ComplianceRow>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_inventory().await?;
            let rows: Vec<ComplianceRow> = sqlx::query_as(
            "SELECT c.defender_id, c.container, c.image_id, c.check_id, c.title, \
             CASE WHEN COALESCE(p.severity, '') = '' THEN c.severity ELSE p.severity END AS severity, \
             c.passed, c.evidence, c.cis, c.time_ms FROM compliance_results c LEFT JOIN compliance_policy p ON p.check_id = c.check_id \
             WHERE COALESCE(p.enabled, TRUE) AND ($1 IS NULL OR c.defender_id = $2)",
        )
        .bind(defender_id)
        .bind(defender_id)
        .fetch_all(pool)
        .await?;
            let mut rows = rows;
            rows.sort_by(|a, b| {
                a.passed
                    .cmp(&b.passed)
                    .then(severity_rank(&b.severity).cmp(&severity_rank(&a.severity)))
                    .then(a.image_id.cmp(&b.image_id))
                    .then(a.defender_id.cmp(&b.defender_id))
                    .then(a.check_id.cmp(&b.check_id))
            });
            Ok(rows)
        })
    }

    /// Every check the Defenders reported (id, title, default severity) with its setting.
    pub async fn compliance_policy(
        &self,
    ) -> Result<Vec<(CheckSetting, String, String)>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let checks: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT check_id, MAX(title), MAX(severity) FROM compliance_results GROUP BY check_id ORDER BY check_id",
        )
        .fetch_all(pool)
        .await?;
            let settings: Vec<CheckSetting> =
                sqlx::query_as("SELECT check_id, enabled, severity FROM compliance_policy")
                    .fetch_all(pool)
                    .await?;
            let mut out: Vec<(CheckSetting, String, String)> = checks
                .into_iter()
                .map(|(id, title, sev)| {
                    let s = settings
                        .iter()
                        .find(|s| s.check_id == id)
                        .cloned()
                        .unwrap_or(CheckSetting {
                            check_id: id,
                            enabled: true,
                            severity: String::new(),
                        });
                    (s, title, sev)
                })
                .collect();
            for s in settings {
                if !out.iter().any(|(o, _, _)| o.check_id == s.check_id) {
                    out.push((s, String::new(), String::new()));
                }
            }
            Ok(out)
        })
    }

    /// Saves check settings (replacing the ones named).
    pub async fn set_compliance_policy(&self, settings: &[CheckSetting]) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            for s in settings {
                sqlx::query(
                "INSERT INTO compliance_policy (check_id, enabled, severity) VALUES ($1, $2, $3) \
                 ON CONFLICT (check_id) DO UPDATE SET enabled = excluded.enabled, severity = excluded.severity",
            )
            .bind(&s.check_id)
            .bind(s.enabled)
            .bind(&s.severity)
            .execute(&mut *tx)
            .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Images a Defender runs (for the links on its page).
    pub async fn images_of_defender(&self, defender_id: &str) -> Result<Vec<String>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_inventory().await?;
            Ok(sqlx::query_scalar(
            "SELECT DISTINCT image_id FROM image_defenders WHERE defender_id = $1 ORDER BY image_id",
        )
        .bind(defender_id)
        .fetch_all(pool)
        .await?)
        })
    }
}
