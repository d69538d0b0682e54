//! Loading OSV records: single JSON files (one record, or an array of records), directories of
//! them (searched recursively), and the `all.zip` files osv.dev publishes per ecosystem. Shared by
//! `defender-console vulndb import` and `POST /api/v1/vulndb`.
//!
//! A file that is not an OSV record is reported with its path and skipped; the valid records
//! are still imported, and nothing already stored is lost.

use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use defender_vuln::Record;
use defender_vuln::osv::MAX_RECORD_BYTES;

/// Largest zip archive entry count read (osv.dev's largest `all.zip`, Debian's, has < 100k).
pub const MAX_ZIP_ENTRIES: usize = 2_000_000;

/// Records read, and the problems met (one line each: where, and why).
#[derive(Default)]
pub struct Loaded {
    pub records: Vec<(Record, String)>,
    pub errors: Vec<String>,
}

impl Loaded {
    fn add_json(&mut self, origin: &str, bytes: &[u8]) {
        if bytes.len() > MAX_RECORD_BYTES {
            self.errors
                .push(format!("{origin}: larger than {MAX_RECORD_BYTES} bytes"));
            return;
        }
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(format!("{origin}: not JSON: {e}"));
                return;
            }
        };
        let items = match value {
            serde_json::Value::Array(a) => a,
            v => vec![v],
        };
        for (i, item) in items.into_iter().enumerate() {
            let json = item.to_string();
            match Record::parse(json.as_bytes()) {
                Ok(r) => self.records.push((r, json)),
                Err(e) => self.errors.push(format!(
                    "{origin}{}: {e}",
                    if i > 0 {
                        format!("[{i}]")
                    } else {
                        String::new()
                    }
                )),
            }
        }
    }

    /// Reads the `.json` entries of a zip archive.
    pub fn add_zip<R: Read + Seek>(&mut self, origin: &str, reader: R) {
        let mut zip = match zip::ZipArchive::new(reader) {
            Ok(z) => z,
            Err(e) => {
                self.errors
                    .push(format!("{origin}: not a zip archive: {e}"));
                return;
            }
        };
        if zip.len() > MAX_ZIP_ENTRIES {
            self.errors
                .push(format!("{origin}: more than {MAX_ZIP_ENTRIES} entries"));
            return;
        }
        for i in 0..zip.len() {
            let mut entry = match zip.by_index(i) {
                Ok(e) => e,
                Err(e) => {
                    self.errors.push(format!("{origin}: entry {i}: {e}"));
                    continue;
                }
            };
            let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
            if !entry.is_file() || !name.ends_with(".json") {
                continue;
            }
            let mut buf = Vec::new();
            let limit = MAX_RECORD_BYTES as u64 + 1;
            if let Err(e) = (&mut entry).take(limit).read_to_end(&mut buf) {
                self.errors.push(format!("{origin}:{name}: {e}"));
                continue;
            }
            self.add_json(&format!("{origin}:{name}"), &buf);
        }
    }

    /// Reads a request body: a zip archive (by its magic) or JSON.
    pub fn add_body(&mut self, bytes: &[u8]) {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            self.add_zip("body", Cursor::new(bytes));
        } else {
            self.add_json("body", bytes);
        }
    }

    /// Reads a file or (recursively) a directory.
    pub fn add_path(&mut self, path: &Path) {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.errors.push(format!("{}: {e}", path.display()));
                return;
            }
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    self.errors.push(format!("{}: {e}", path.display()));
                    return;
                }
            };
            entries.sort();
            for p in entries {
                let is_dir = p.is_dir();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if is_dir || ext == "json" || ext == "zip" {
                    self.add_path(&p);
                }
            }
            return;
        }
        let origin = path.display().to_string();
        let mut head = [0u8; 4];
        let is_zip = std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && &head == b"PK\x03\x04";
        if is_zip {
            match std::fs::File::open(path) {
                Ok(f) => self.add_zip(&origin, std::io::BufReader::new(f)),
                Err(e) => self.errors.push(format!("{origin}: {e}")),
            }
        } else if meta.len() > MAX_RECORD_BYTES as u64 {
            self.errors.push(format!(
                "{origin}: larger than {MAX_RECORD_BYTES} bytes and not a zip archive"
            ));
        } else {
            match std::fs::read(path) {
                Ok(b) => self.add_json(&origin, &b),
                Err(e) => self.errors.push(format!("{origin}: {e}")),
            }
        }
    }
}

/// `defender-console vulndb …`: prints what was done on stdout and problems on stderr; false
/// when any input could not be read (the valid records are imported all the same).
pub async fn run_command(command: crate::cli::VulndbCommand) -> anyhow::Result<bool> {
    use crate::cli::VulndbCommand;
    match command {
        VulndbCommand::Import(args) => {
            let (store, _) = crate::server::open_data_dir(
                &args.data.data_dir,
                args.data.database_url.as_deref(),
            )
            .await?;
            let paths = args.paths.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let mut l = Loaded::default();
                for p in &paths {
                    l.add_path(p);
                }
                l
            })
            .await?;
            for e in &loaded.errors {
                eprintln!("error: {e}");
            }
            let read = loaded.records.len();
            let stats = store.import_records(loaded.records).await?;
            println!(
                "read {read} records: {} added, {} updated, {} unchanged; {} images re-matched",
                stats.added, stats.updated, stats.unchanged, stats.images_rematched
            );
            Ok(loaded.errors.is_empty())
        }
        VulndbCommand::Status(args) => {
            let (store, _) =
                crate::server::open_data_dir(&args.data_dir, args.database_url.as_deref()).await?;
            let s = store.vulndb_status().await?;
            println!("records: {}", s.records);
            println!(
                "newest modified: {}",
                if s.newest_modified.is_empty() {
                    "-"
                } else {
                    &s.newest_modified
                }
            );
            for (eco, n) in &s.ecosystems {
                println!("  {eco}: {n}");
            }
            Ok(true)
        }
    }
}
