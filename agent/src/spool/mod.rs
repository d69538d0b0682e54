//! The bounded on-disk spool every event passes through before it is sent to the Console.
//!
//! Each appended record gets the next per-Defender `seq` (strictly increasing from 1, also across
//! restarts and after every segment was deleted). The Console stores events keyed by
//! `(defender_id, seq)`, commits, then acks `up_to_seq`; [`Spool::ack`] deletes the segments
//! wholly at or below it. On reconnect the link replays [`Spool::read_after`] the last ack.
//! When the cap is reached the spool drops (oldest segments first by default) and counts every
//! dropped record exactly: every appended record ends up acked or counted in [`Spool::dropped`].
//!
//! On disk (one directory):
//! - `<first seq, 20 digits>.seg`: segment files of records framed as
//!   `[len u32 LE][crc32 u32 LE][seq u64 LE][payload]` (CRC over seq + payload). Seqs inside a
//!   segment are contiguous; a segment never exceeds `segment_bytes`.
//! - `state`: acked seq, dropped count, seq floors (replaced atomically: tmp, fsync, rename).
//! - `lock`: held with an exclusive file lock while a [`Spool`] is open.
//!
//! At open, each segment is scanned; a torn or corrupt tail is cut back to the good prefix and
//! reported in [`OpenReport`], never turned into an error, so a damaged spool cannot cause a
//! crash loop.

mod record;
mod segment;
mod state;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use record::{Bad, Next};
use segment::SegMeta;
use state::State;

/// Name of the lock file inside the spool directory.
const LOCK_FILE: &str = "lock";
/// Smallest segment size the configuration is clamped to.
pub const MIN_SEGMENT_BYTES: u64 = 4 * 1024;
/// Largest segment size the configuration is clamped to (keeps lengths within `u32`).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Bytes of framing the spool adds to every payload on disk.
pub const RECORD_OVERHEAD: u64 = record::HEADER_LEN;
/// Largest seq the spool assigns or accepts (far beyond any real use; keeps arithmetic exact).
pub const MAX_SEQ: u64 = (1 << 62) - 1;
/// Under [`FsyncPolicy::Never`], how often a changed state (acked seq, drop count) is rewritten.
const NEVER_STATE_FLUSH: Duration = Duration::from_secs(1);

/// Tunables of a [`Spool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Cap on the bytes of all segment files together (default 64 MiB; at least 16 KiB).
    pub max_bytes: u64,
    /// The active segment is rolled before a record would take it past this size (default
    /// 1 MiB; clamped to `4 KiB..=max_bytes/4`). Also the largest record accepted.
    pub segment_bytes: u64,
    /// What to give up when the cap is reached.
    pub drop_policy: DropPolicy,
    /// When appended data is fsynced.
    pub fsync: FsyncPolicy,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 64 * 1024 * 1024,
            segment_bytes: 1024 * 1024,
            drop_policy: DropPolicy::OldestFirst,
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        }
    }
}

impl SpoolConfig {
    /// The configuration actually used: `max_bytes >= 16 KiB`,
    /// `4 KiB <= segment_bytes <= min(max_bytes / 4, 1 GiB)`.
    pub fn effective(self) -> SpoolConfig {
        let max_bytes = self.max_bytes.max(4 * MIN_SEGMENT_BYTES);
        // max_bytes / 4 >= MIN_SEGMENT_BYTES, so the bounds are ordered.
        let segment_bytes = self
            .segment_bytes
            .clamp(MIN_SEGMENT_BYTES, (max_bytes / 4).min(MAX_SEGMENT_BYTES));
        SpoolConfig {
            max_bytes,
            segment_bytes,
            ..self
        }
    }
}

/// Which records the spool gives up when it is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DropPolicy {
    /// Delete the oldest whole segment(s) to make room; their unacked records count as dropped.
    #[default]
    OldestFirst,
    /// Refuse the new record and count it as dropped.
    NewestFirst,
}

/// Error parsing a [`DropPolicy`] from the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown drop policy {0:?} (expected \"oldest\" or \"newest\")")]
pub struct ParseDropPolicyError(String);

impl FromStr for DropPolicy {
    type Err = ParseDropPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "oldest" | "oldest-first" | "oldest_first" | "oldestfirst" => {
                Ok(DropPolicy::OldestFirst)
            }
            "newest" | "newest-first" | "newest_first" | "newestfirst" => {
                Ok(DropPolicy::NewestFirst)
            }
            _ => Err(ParseDropPolicyError(s.to_string())),
        }
    }
}

impl fmt::Display for DropPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropPolicy::OldestFirst => "oldest",
            DropPolicy::NewestFirst => "newest",
        })
    }
}

/// When the spool fsyncs what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append (and every state change).
    Always,
    /// At most once per interval, on the append or [`Spool::sync`] call that finds it elapsed
    /// (plus once per segment roll, when the finished segment is fsynced and closed).
    Interval(Duration),
    /// Never (data survives a process crash, not a power loss).
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// Error parsing a [`FsyncPolicy`] from the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fsync policy {0:?} (expected \"always\", \"never\" or an interval like \"1s\", \"250ms\")"
)]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let err = || ParseFsyncPolicyError(s.to_string());
        match t.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
                    (n, 1)
                } else if let Some(n) = t.strip_suffix('s') {
                    (n, 1000)
                } else {
                    return Err(err());
                };
                let n: u64 = num.trim().parse().map_err(|_| err())?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(
                    n.saturating_mul(unit_ms),
                )))
            }
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed (disk full, permissions, …).
    #[error("spool I/O on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A single record larger than a segment; the caller bounds its events.
    #[error("record of {size} bytes (framed) exceeds the segment size of {limit} bytes")]
    RecordTooLarge {
        /// Framed size of the refused record.
        size: u64,
        /// The effective segment size.
        limit: u64,
    },
    /// A seq passed to [`Spool::ack`] or [`Spool::ensure_next_seq_above`] beyond [`MAX_SEQ`].
    #[error("seq {0} is out of range")]
    SeqOutOfRange(u64),
    /// Another process (or another `Spool` in this one) has the directory open.
    #[error("spool directory {0} is in use by another spool")]
    Locked(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A segment whose damaged tail was cut off at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment file.
    pub path: PathBuf,
    /// Bytes removed from its end (the whole file when `records_kept` is 0: it was removed).
    pub bytes_cut: u64,
    /// Intact records left in it.
    pub records_kept: u64,
}

/// What [`Spool::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Intact records found on disk (acked or not) after repair.
    pub recovered_records: u64,
    /// Segments whose damaged tail was cut (or that were removed as wholly unreadable).
    pub truncated: Vec<TruncatedTail>,
    /// Empty segment files (a crash between creating a segment and writing to it), removed.
    pub removed_empty: Vec<PathBuf>,
    /// The state file was unreadable and reset (acked seq and dropped count restart at 0).
    pub state_reset: bool,
}

impl OpenReport {
    /// True when open found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_empty() && self.removed_empty.is_empty() && !self.state_reset
    }
}

/// Read position kept between [`Spool::read_after`] calls.
struct Cursor {
    /// First seq (identity) of the segment being read.
    seg_first: u64,
    /// File offset of the next record.
    pos: u64,
    /// Seq of the record at `pos`.
    expect: u64,
    /// The `after_seq` that continues from here.
    after: u64,
    reader: BufReader<File>,
}

/// The bounded on-disk spool (see the module docs).
pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    _lock: File,
    /// Segments, oldest first; the last one is the active one while `writer` is `Some`.
    segs: VecDeque<SegMeta>,
    writer: Option<File>,
    next_seq: u64,
    state: State,
    state_dirty: bool,
    last_state_flush: Instant,
    bytes: u64,
    records: u64,
    data_unsynced: bool,
    dir_unsynced: bool,
    last_sync: Instant,
    cursor: Option<Cursor>,
    /// Highest seq handed out by `read_after` in this process.
    read_hwm: u64,
    dropped_after_read: u64,
    frame: Vec<u8>,
    #[cfg(test)]
    seeks: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, repairing damaged segment tails.
    pub fn open(dir: &Path, cfg: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        let cfg = cfg.effective();
        let durable = cfg.fsync != FsyncPolicy::Never;
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        // Events hold command lines and paths of the application: the owner's only. (A directory
        // owned by another user cannot be chmod-ed; its files are still created 0600.)
        if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), "could not make the spool directory 0700: {e}");
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
        }
        let state_path = state::path(dir);
        let loaded = state::load(dir).map_err(io_at(&state_path))?;
        let st = loaded.state;
        let mut report = OpenReport {
            state_reset: loaded.reset,
            ..OpenReport::default()
        };

        let gone_through = st.acked.max(st.deleted_through);
        let mut segs = VecDeque::new();
        let mut max_seen = 0u64;
        let mut removed_any = false;
        for (first, path) in segment::list(dir).map_err(io_at(dir))? {
            let file_len = fs::metadata(&path).map_err(io_at(&path))?.len();
            let prev_last = max_seen;
            max_seen = max_seen.max(first);
            if file_len == 0 {
                remove_file(&path)?;
                removed_any = true;
                report.removed_empty.push(path);
                continue;
            }
            let scan = if first <= prev_last {
                // Overlaps the previous segment: cannot be ours, treat as unreadable.
                None
            } else {
                Some(segment::scan(&path, first, file_len).map_err(io_at(&path))?)
            };
            let Some(scan) = scan.filter(|s| s.records > 0) else {
                tracing::warn!(path = %path.display(), bytes = file_len, "spool: removing unreadable segment");
                remove_file(&path)?;
                removed_any = true;
                report.truncated.push(TruncatedTail {
                    path,
                    bytes_cut: file_len,
                    records_kept: 0,
                });
                continue;
            };
            let last = first + scan.records - 1;
            max_seen = max_seen.max(last);
            if scan.good_len < file_len {
                tracing::warn!(
                    path = %path.display(),
                    cut = file_len - scan.good_len,
                    kept = scan.records,
                    damage = %scan.damage.map_or("trailing bytes".to_string(), |d| d.to_string()),
                    "spool: cutting damaged segment tail"
                );
                truncate_file(&path, scan.good_len, durable)?;
                report.truncated.push(TruncatedTail {
                    path: path.clone(),
                    bytes_cut: file_len - scan.good_len,
                    records_kept: scan.records,
                });
            }
            if last <= gone_through {
                // Leftover of a delete interrupted by a crash (state was persisted first).
                remove_file(&path)?;
                removed_any = true;
                continue;
            }
            segs.push_back(SegMeta {
                first,
                last,
                len: scan.good_len,
            });
        }
        if removed_any && durable {
            state::sync_dir(dir).map_err(io_at(dir))?;
        }

        let next_seq = max_seen
            .max(st.acked)
            .max(st.deleted_through)
            .max(st.seq_floor)
            + 1;
        let bytes = segs.iter().map(|s| s.len).sum();
        let records = segs.iter().map(SegMeta::count).sum();
        report.recovered_records = records;
        let now = Instant::now();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            cfg,
            _lock: lock,
            segs,
            writer: None,
            next_seq,
            state: st,
            state_dirty: loaded.reset,
            last_state_flush: now,
            bytes,
            records,
            data_unsynced: false,
            dir_unsynced: false,
            last_sync: now,
            cursor: None,
            read_hwm: 0,
            dropped_after_read: 0,
            frame: Vec::new(),
            #[cfg(test)]
            seeks: 0,
        };
        if spool.cfg.drop_policy == DropPolicy::OldestFirst && spool.bytes > spool.cfg.max_bytes {
            // The cap shrank since the last run.
            spool.drop_oldest_to_fit(0)?;
        }
        if spool.state_dirty {
            spool.flush_state()?;
        }
        Ok((spool, report))
    }

    /// Assigns the next seq, calls `encode(seq)` for the payload and appends it. `Ok(None)` when
    /// [`DropPolicy::NewestFirst`] refused it for lack of room (counted in [`Spool::dropped`];
    /// the seq is not consumed).
    pub fn append_with(
        &mut self,
        encode: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<Option<u64>, SpoolError> {
        let seq = self.next_seq;
        let payload = encode(seq);
        let size = record::frame_len(payload.len());
        if size > self.cfg.segment_bytes {
            return Err(SpoolError::RecordTooLarge {
                size,
                limit: self.cfg.segment_bytes,
            });
        }
        if self.writer.is_some()
            && self
                .segs
                .back()
                .is_some_and(|s| s.len + size > self.cfg.segment_bytes)
        {
            self.seal()?;
        }
        if self.bytes + size > self.cfg.max_bytes {
            match self.cfg.drop_policy {
                DropPolicy::NewestFirst => {
                    self.state.dropped += 1;
                    self.state_dirty = true;
                    self.tick(false)?;
                    return Ok(None);
                }
                DropPolicy::OldestFirst => self.drop_oldest_to_fit(size)?,
            }
        }
        self.write_record(seq, &payload)?;
        self.tick(false)?;
        Ok(Some(seq))
    }

    /// Writes one framed record to the active segment (creating it if needed).
    fn write_record(&mut self, seq: u64, payload: &[u8]) -> Result<(), SpoolError> {
        let mut frame = std::mem::take(&mut self.frame);
        record::encode(&mut frame, seq, payload);
        let result = self.write_frame(seq, &frame);
        self.frame = frame;
        result
    }

    fn write_frame(&mut self, seq: u64, frame: &[u8]) -> Result<(), SpoolError> {
        let size = frame.len() as u64;
        let created = self.writer.is_none();
        if created {
            let path = self.seg_path(seq);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_at(&path))?;
            // Only a file placed by someone else could already hold bytes: start it empty.
            if f.metadata().map_err(io_at(&path))?.len() != 0 {
                f.set_len(0).map_err(io_at(&path))?;
            }
            self.writer = Some(f);
            self.segs.push_back(SegMeta {
                first: seq,
                last: seq - 1,
                len: 0,
            });
            self.dir_unsynced = true;
        }
        let Some(back) = self.segs.back().copied() else {
            return Err(writer_lost(&self.dir));
        };
        debug_assert_eq!(back.last + 1, seq, "seqs within a segment are contiguous");
        let Some(w) = self.writer.as_mut() else {
            return Err(writer_lost(&self.dir));
        };
        if let Err(e) = w.write_all(frame) {
            // Cut whatever part of the record reached the file and retire this writer; the seq
            // is not consumed and the next append starts a new segment.
            let _ = w.set_len(back.len);
            if self.data_unsynced && self.cfg.fsync != FsyncPolicy::Never {
                let _ = w.sync_data();
            }
            self.writer = None;
            self.data_unsynced = false;
            self.cursor = None;
            let path = self.seg_path(back.first);
            if created {
                self.segs.pop_back();
                let _ = fs::remove_file(&path);
            }
            return Err(io_at(&path)(e));
        }
        if let Some(b) = self.segs.back_mut() {
            b.last = seq;
            b.len += size;
        }
        self.bytes += size;
        self.records += 1;
        self.next_seq = seq + 1;
        self.data_unsynced = true;
        Ok(())
    }

    /// Closes the active segment (fsyncing it unless the policy is `Never`); the next append
    /// starts a new one.
    fn seal(&mut self) -> Result<(), SpoolError> {
        if let Some(w) = self.writer.take()
            && self.data_unsynced
        {
            if self.cfg.fsync != FsyncPolicy::Never {
                let first = self.segs.back().map_or(0, |s| s.first);
                w.sync_data().map_err(seg_io(&self.dir, first))?;
            }
            self.data_unsynced = false;
        }
        Ok(())
    }

    /// Deletes the oldest segments until `size` more bytes fit under the cap, counting their
    /// unacked records as dropped.
    fn drop_oldest_to_fit(&mut self, size: u64) -> Result<(), SpoolError> {
        let mut remaining = self.bytes;
        let mut k = 0;
        while remaining + size > self.cfg.max_bytes && k < self.segs.len() {
            remaining -= self.segs[k].len;
            k += 1;
        }
        if k == self.segs.len() {
            // Only possible when the cap shrank below the active segment: start afresh.
            self.seal()?;
        }
        let acked = self.state.acked;
        let (mut lost, mut lost_read) = (0, 0);
        for s in self.segs.iter().take(k) {
            lost += s.unacked(acked);
            lost_read += s.count_in(acked.saturating_add(1), self.read_hwm);
        }
        if k > 0 {
            tracing::warn!(
                segments = k,
                records = lost,
                "spool: full, dropping the oldest records"
            );
            self.state.dropped += lost;
            self.dropped_after_read += lost_read;
            self.state.deleted_through = self.state.deleted_through.max(self.segs[k - 1].last);
        }
        self.delete_front(k)
    }

    /// Persists the state (which must already say why), then removes the `k` oldest segments.
    fn delete_front(&mut self, k: usize) -> Result<(), SpoolError> {
        if k == 0 {
            return Ok(());
        }
        if k >= self.segs.len() {
            self.seal()?;
        }
        // State first: a crash before the removals is completed at the next open.
        self.flush_state()?;
        let mut last_removed_first = 0;
        for _ in 0..k {
            let Some(seg) = self.segs.pop_front() else {
                break;
            };
            self.bytes -= seg.len;
            self.records -= seg.count();
            last_removed_first = seg.first;
            let path = self.seg_path(seg.first);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                // The state already covers it: the next open removes it.
                tracing::warn!(path = %path.display(), error = %e, "spool: cannot remove segment");
            }
        }
        if self.cfg.fsync != FsyncPolicy::Never {
            self.dir_unsynced = true;
        }
        if self
            .cursor
            .as_ref()
            .is_some_and(|c| c.seg_first <= last_removed_first)
        {
            self.cursor = None;
        }
        Ok(())
    }

    /// Records with seq > `after_seq`, in order, at most `max_records` of them and (beyond the
    /// first) at most `max_bytes` of payload. Consecutive calls (passing the last seq returned)
    /// continue from a kept cursor without re-seeking.
    pub fn read_after(
        &mut self,
        after_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        if max_records == 0 {
            return Ok(out);
        }
        let cursor = match self.cursor.take() {
            Some(c) if c.after == after_seq && self.seg_index(c.seg_first).is_some() => Some(c),
            _ => self.seek(after_seq)?,
        };
        let Some(mut cur) = cursor else {
            return Ok(out);
        };
        let mut payload_bytes = 0usize;
        while let Some(idx) = self.seg_index(cur.seg_first) {
            let seg = self.segs[idx];
            if cur.pos >= seg.len {
                if idx + 1 < self.segs.len() {
                    let next = self.segs[idx + 1];
                    cur = self.open_cursor(next, cur.after)?;
                    continue;
                }
                break;
            }
            let bad = match record::read_header(&mut cur.reader, seg.len - cur.pos, cur.expect)
                .map_err(seg_io(&self.dir, seg.first))?
            {
                Next::End => break,
                Next::Bad(bad) => bad,
                Next::Frame(h) => {
                    if !out.is_empty() && payload_bytes + h.len as usize > max_bytes {
                        // Leave the record for the next call.
                        cur.reader
                            .seek_relative(-(record::HEADER_LEN as i64))
                            .map_err(seg_io(&self.dir, seg.first))?;
                        break;
                    }
                    match record::read_payload(&mut cur.reader, &h)
                        .map_err(seg_io(&self.dir, seg.first))?
                    {
                        Ok(payload) => {
                            payload_bytes += payload.len();
                            out.push((h.seq, payload));
                            cur.pos += h.frame_len();
                            cur.expect += 1;
                            cur.after = h.seq;
                            if out.len() >= max_records || payload_bytes >= max_bytes {
                                break;
                            }
                            continue;
                        }
                        Err(bad) => bad,
                    }
                }
            };
            // Damage appeared after open (disk fault, outside interference): repair and go on.
            let after = cur.after;
            self.repair(idx, cur.pos, cur.expect, bad)?;
            match self.seek(after)? {
                Some(c) => cur = c,
                None => {
                    self.note_read(&out);
                    return Ok(out);
                }
            }
        }
        self.note_read(&out);
        self.cursor = Some(cur);
        Ok(out)
    }

    /// Remembers the highest seq handed out (for [`Spool::dropped_after_read`]).
    fn note_read(&mut self, out: &[(u64, Vec<u8>)]) {
        if let Some((seq, _)) = out.last() {
            self.read_hwm = self.read_hwm.max(*seq);
        }
    }

    /// A cursor positioned at the first record with seq > `after`, if any is on disk.
    fn seek(&mut self, after: u64) -> Result<Option<Cursor>, SpoolError> {
        #[cfg(test)]
        {
            self.seeks += 1;
        }
        loop {
            let idx = self.segs.partition_point(|s| s.last <= after);
            let Some(&seg) = self.segs.get(idx) else {
                return Ok(None);
            };
            let mut cur = self.open_cursor(seg, after)?;
            if seg.first > after {
                return Ok(Some(cur));
            }
            // Skip the records at or below `after` (seqs in a segment are contiguous).
            let mut damage = None;
            while cur.expect <= after {
                match record::read_header(&mut cur.reader, seg.len - cur.pos, cur.expect)
                    .map_err(seg_io(&self.dir, seg.first))?
                {
                    Next::Frame(h) => {
                        record::skip_payload(&mut cur.reader, &h)
                            .map_err(seg_io(&self.dir, seg.first))?;
                        cur.pos += h.frame_len();
                        cur.expect += 1;
                    }
                    Next::Bad(bad) => {
                        damage = Some(bad);
                        break;
                    }
                    Next::End => {
                        damage = Some(Bad::Torn);
                        break;
                    }
                }
            }
            match damage {
                None => return Ok(Some(cur)),
                Some(bad) => self.repair(idx, cur.pos, cur.expect, bad)?,
            }
        }
    }

    fn open_cursor(&self, seg: SegMeta, after: u64) -> Result<Cursor, SpoolError> {
        let path = self.seg_path(seg.first);
        let f = File::open(&path).map_err(io_at(&path))?;
        Ok(Cursor {
            seg_first: seg.first,
            pos: 0,
            expect: seg.first,
            after,
            reader: BufReader::with_capacity(segment::READ_BUF, f),
        })
    }

    /// Cuts segment `idx` at `pos` (where the record with seq `expect` should have been) after
    /// damage was found while reading; the lost unacked records count as dropped.
    fn repair(&mut self, idx: usize, pos: u64, expect: u64, bad: Bad) -> Result<(), SpoolError> {
        let seg = self.segs[idx];
        if idx + 1 == self.segs.len() {
            self.seal()?;
        }
        let lost = seg.count_in(expect, seg.last);
        let lost_unacked = seg.count_in(expect.max(self.state.acked.saturating_add(1)), seg.last);
        let path = self.seg_path(seg.first);
        tracing::warn!(
            path = %path.display(),
            offset = pos,
            damage = %bad,
            records_lost = lost,
            "spool: damaged record found while reading, cutting the segment"
        );
        self.state.dropped += lost_unacked;
        self.dropped_after_read += seg.count_in(
            expect.max(self.state.acked.saturating_add(1)),
            seg.last.min(self.read_hwm),
        );
        self.state.seq_floor = self.state.seq_floor.max(seg.last);
        self.flush_state()?;
        self.cursor = None;
        self.bytes -= seg.len - pos;
        self.records -= lost;
        if pos == 0 {
            self.segs.remove(idx);
            remove_file(&path)?;
        } else {
            truncate_file(&path, pos, self.cfg.fsync != FsyncPolicy::Never)?;
            self.segs[idx].last = expect - 1;
            self.segs[idx].len = pos;
        }
        Ok(())
    }

    /// Records that the Console committed everything up to `up_to_seq`: deletes the segments
    /// wholly at or below it. A value at or below the current ack is ignored.
    pub fn ack(&mut self, up_to_seq: u64) -> Result<(), SpoolError> {
        if up_to_seq <= self.state.acked {
            return Ok(());
        }
        if up_to_seq > MAX_SEQ {
            return Err(SpoolError::SeqOutOfRange(up_to_seq));
        }
        self.state.acked = up_to_seq;
        self.state_dirty = true;
        let beyond = up_to_seq >= self.next_seq;
        if beyond {
            // The Console knows seqs this spool never assigned: never reuse them.
            self.seal()?;
            self.next_seq = up_to_seq + 1;
        }
        if self.writer.is_some() && self.segs.back().is_some_and(|s| s.last <= up_to_seq) {
            self.seal()?;
        }
        let k = self.segs.partition_point(|s| s.last <= up_to_seq);
        if k > 0 {
            self.delete_front(k)?;
        }
        if beyond && self.state_dirty {
            self.flush_state()?;
        }
        // Without deletions a lost ack only means a replay the Console ignores, so the state
        // follows the fsync policy.
        self.tick(false)
    }

    /// Makes sure no seq at or below `seq` is ever assigned (the Console already stores it, e.g.
    /// because the spool directory was lost). Persisted at once.
    pub fn ensure_next_seq_above(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq < self.next_seq {
            return Ok(());
        }
        if seq > MAX_SEQ {
            return Err(SpoolError::SeqOutOfRange(seq));
        }
        self.seal()?; // seqs within a segment stay contiguous
        self.next_seq = seq + 1;
        self.state.seq_floor = self.state.seq_floor.max(seq);
        self.flush_state()
    }

    /// Fsyncs now if the policy wants it (`Always`: anything pending; `Interval`: when the
    /// interval has elapsed). Call it periodically so idle data gets synced too.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.tick(false)
    }

    /// Fsyncs (unless the policy is `Never`) and persists the state now, whatever the interval.
    /// For a clean shutdown.
    pub fn sync_now(&mut self) -> Result<(), SpoolError> {
        self.tick(true)
    }

    /// Does the syncing the policy asks for now (`force`: regardless of the interval).
    fn tick(&mut self, force: bool) -> Result<(), SpoolError> {
        let due = match self.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => force || self.last_sync.elapsed() >= d,
            FsyncPolicy::Never => {
                if self.state_dirty
                    && (force || self.last_state_flush.elapsed() >= NEVER_STATE_FLUSH)
                {
                    self.flush_state()?;
                }
                return Ok(());
            }
        };
        if !due {
            return Ok(());
        }
        if self.data_unsynced {
            if let (Some(w), Some(back)) = (self.writer.as_ref(), self.segs.back()) {
                w.sync_data().map_err(seg_io(&self.dir, back.first))?;
            }
            self.data_unsynced = false;
        }
        if self.dir_unsynced {
            state::sync_dir(&self.dir).map_err(io_at(&self.dir))?;
            self.dir_unsynced = false;
        }
        if self.state_dirty {
            self.flush_state()?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Writes the state file now (fsynced unless the policy is `Never`).
    fn flush_state(&mut self) -> Result<(), SpoolError> {
        let durable = self.cfg.fsync != FsyncPolicy::Never;
        state::store(&self.dir, &self.state, durable).map_err(io_at(&state::path(&self.dir)))?;
        self.state_dirty = false;
        self.last_state_flush = Instant::now();
        Ok(())
    }

    fn seg_path(&self, first: u64) -> PathBuf {
        self.dir.join(segment::file_name(first))
    }

    fn seg_index(&self, first: u64) -> Option<usize> {
        self.segs.binary_search_by_key(&first, |s| s.first).ok()
    }

    /// The seq the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The highest seq the Console acknowledged.
    pub fn acked_seq(&self) -> u64 {
        self.state.acked
    }

    /// The last seq assigned (`next_seq - 1`; 0 before the first record).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Records on disk that are not acknowledged yet.
    pub fn pending(&self) -> u64 {
        let acked_on_disk = self
            .segs
            .front()
            .map_or(0, |s| s.count_in(0, self.state.acked));
        self.records - acked_on_disk
    }

    /// Bytes of all segment files (at most `max_bytes` of the effective config, except after a
    /// restart with a smaller cap under `NewestFirst` until acks free room).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records dropped since the spool directory was created (persisted across restarts).
    pub fn dropped(&self) -> u64 {
        self.state.dropped
    }

    /// Of the records dropped by this process, those that `read_after` had already handed out
    /// (they may have reached the Console before the drop; useful for end-to-end accounting).
    pub fn dropped_after_read(&self) -> u64 {
        self.dropped_after_read
    }

    /// The lowest unacknowledged seq still on disk (what a replay after the ack starts with).
    pub fn first_available_seq(&self) -> Option<u64> {
        let first = self.segs.front()?;
        if first.last > self.state.acked {
            Some(first.first.max(self.state.acked + 1))
        } else {
            // Wholly acked segments are deleted at once, so only the next one can hold it.
            self.segs.get(1).map(|s| s.first)
        }
    }

    /// The effective configuration (after clamping).
    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.tick(true) {
            tracing::warn!(error = %e, "spool: final sync failed");
        }
    }
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("next_seq", &self.next_seq)
            .field("acked", &self.state.acked)
            .field("pending", &self.pending())
            .field("bytes", &self.bytes)
            .field("dropped", &self.state.dropped)
            .field("segments", &self.segs.len())
            .finish()
    }
}

/// Maps an I/O error on segment `first` of `dir`; builds the path only when there is an error.
fn seg_io(dir: &Path, first: u64) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: dir.join(segment::file_name(first)),
        source,
    }
}

fn writer_lost(dir: &Path) -> SpoolError {
    SpoolError::Io {
        path: dir.to_path_buf(),
        source: io::Error::other("spool active segment writer missing"),
    }
}

fn remove_file(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn truncate_file(path: &Path, len: u64, durable: bool) -> Result<(), SpoolError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_at(path))?;
    f.set_len(len).map_err(io_at(path))?;
    if durable {
        f.sync_all().map_err(io_at(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
