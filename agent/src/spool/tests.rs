use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom};

/// A 4 KiB segment holds this many records of `PAYLOAD` bytes (frame 216 bytes).
const PAYLOAD: usize = 200;
const PER_SEG: u64 = 4096 / (PAYLOAD as u64 + RECORD_OVERHEAD);

fn cfg(max_bytes: u64, segment_bytes: u64, drop_policy: DropPolicy) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        segment_bytes,
        drop_policy,
        fsync: FsyncPolicy::Never,
    }
}

fn small() -> SpoolConfig {
    cfg(1 << 30, 4096, DropPolicy::OldestFirst)
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("event-{seq}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (seq % 26) as u8);
    v.truncate(len);
    v
}

fn open(dir: &Path, c: SpoolConfig) -> (Spool, OpenReport) {
    Spool::open(dir, c).unwrap()
}

fn append(s: &mut Spool) -> u64 {
    append_len(s, PAYLOAD)
}

fn append_len(s: &mut Spool, len: usize) -> u64 {
    s.append_with(|seq| payload(seq, len)).unwrap().unwrap()
}

fn read_all(s: &mut Spool, after: u64) -> Vec<(u64, Vec<u8>)> {
    s.read_after(after, usize::MAX, usize::MAX).unwrap()
}

fn seqs(recs: &[(u64, Vec<u8>)]) -> Vec<u64> {
    recs.iter().map(|(s, _)| *s).collect()
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn disk_bytes(dir: &Path) -> u64 {
    seg_files(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn check_payloads(recs: &[(u64, Vec<u8>)], len: usize) {
    for (seq, p) in recs {
        assert_eq!(p, &payload(*seq, len), "payload of seq {seq}");
    }
}

#[test]
fn seq_starts_at_one_and_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, report) = open(dir.path(), small());
    assert!(report.is_clean());
    assert_eq!((s.next_seq(), s.last_seq(), s.acked_seq()), (1, 0, 0));
    assert_eq!((s.pending(), s.bytes(), s.dropped()), (0, 0, 0));
    assert_eq!(s.first_available_seq(), None);
    let got: Vec<u64> = (0..5).map(|_| append(&mut s)).collect();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    assert_eq!(s.bytes(), 5 * (PAYLOAD as u64 + RECORD_OVERHEAD));
    assert_eq!(s.first_available_seq(), Some(1));
    drop(s);

    let (mut s, report) = open(dir.path(), small());
    assert!(report.is_clean());
    assert_eq!(report.recovered_records, 5);
    assert_eq!((s.next_seq(), s.pending()), (6, 5));
    assert_eq!(append(&mut s), 6);
    assert_eq!(seqs(&read_all(&mut s, 0)), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn seq_continues_after_everything_was_acked_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..3 * PER_SEG {
        append(&mut s);
    }
    assert!(seg_files(dir.path()).len() >= 3);
    s.ack(3 * PER_SEG).unwrap();
    assert!(seg_files(dir.path()).is_empty());
    assert_eq!((s.bytes(), s.pending()), (0, 0));
    assert_eq!(s.first_available_seq(), None);
    drop(s);

    let (mut s, _) = open(dir.path(), small());
    assert_eq!(s.next_seq(), 3 * PER_SEG + 1);
    assert_eq!(s.acked_seq(), 3 * PER_SEG);
    assert_eq!(append(&mut s), 3 * PER_SEG + 1);
}

#[test]
fn a_delete_interrupted_by_a_crash_is_completed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(16 * 1024, 4096, DropPolicy::OldestFirst);
    let (mut s, _) = open(dir.path(), c);
    for _ in 0..PER_SEG + 1 {
        append(&mut s);
    }
    let first = seg_files(dir.path())[0].clone();
    let saved = fs::read(&first).unwrap();
    for _ in 0..200 {
        append(&mut s);
    }
    assert!(!first.exists());
    let (dropped, pending, next) = (s.dropped(), s.pending(), s.next_seq());
    assert_eq!(dropped + pending, PER_SEG + 201);
    drop(s);
    // The state said "dropped" but the crash came before the file was removed.
    fs::write(&first, &saved).unwrap();
    let (mut s, report) = open(dir.path(), c);
    assert!(report.is_clean());
    assert!(!first.exists());
    assert_eq!(
        (s.dropped(), s.pending(), s.next_seq()),
        (dropped, pending, next)
    );
    // Everything acked after drops: seq still continues after a restart.
    s.ack(next - 1).unwrap();
    assert!(seg_files(dir.path()).is_empty());
    drop(s);
    let (s, _) = open(dir.path(), c);
    assert_eq!((s.next_seq(), s.dropped()), (next, dropped));
}

#[test]
fn ensure_next_seq_above_never_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..3 {
        append(&mut s);
    }
    s.ensure_next_seq_above(100).unwrap();
    assert_eq!(s.next_seq(), 101);
    assert_eq!(append(&mut s), 101);
    s.ensure_next_seq_above(50).unwrap(); // below: no-op
    assert_eq!(s.next_seq(), 102);
    assert_eq!(seqs(&read_all(&mut s, 0)), vec![1, 2, 3, 101]);
    assert_eq!(seqs(&read_all(&mut s, 3)), vec![101]);
    assert_eq!(s.pending(), 4);
    drop(s);

    let (mut s, _) = open(dir.path(), small());
    assert_eq!(s.next_seq(), 102);
    assert_eq!(seqs(&read_all(&mut s, 2)), vec![3, 101]);
    s.ack(101).unwrap();
    assert_eq!(s.pending(), 0);
    // With nothing on disk, the floor alone carries the seq over a restart.
    s.ensure_next_seq_above(500).unwrap();
    drop(s);
    let (mut s, _) = open(dir.path(), small());
    assert_eq!(s.next_seq(), 501);
    assert_eq!(append(&mut s), 501);

    // Fresh directory (spool lost): the Console's knowledge sets the floor.
    let dir2 = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir2.path(), small());
    s.ensure_next_seq_above(7).unwrap();
    assert_eq!(append(&mut s), 8);
}

#[test]
fn read_after_across_segments_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..100 {
        append(&mut s);
    }
    assert!(seg_files(dir.path()).len() >= 100 / PER_SEG as usize);
    let all = read_all(&mut s, 0);
    assert_eq!(seqs(&all), (1..=100).collect::<Vec<_>>());
    check_payloads(&all, PAYLOAD);

    let p = PAYLOAD;
    assert_eq!(
        seqs(&s.read_after(37, 10, usize::MAX).unwrap()),
        (38..=47).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&s.read_after(37, 100, 3 * p).unwrap()),
        vec![38, 39, 40]
    );
    assert_eq!(
        seqs(&s.read_after(37, 100, 3 * p - 1).unwrap()),
        vec![38, 39]
    );
    // At least one record even when it alone exceeds max_bytes.
    assert_eq!(seqs(&s.read_after(37, 100, 1).unwrap()), vec![38]);
    assert_eq!(seqs(&s.read_after(37, 100, 0).unwrap()), vec![38]);
    assert!(s.read_after(37, 0, usize::MAX).unwrap().is_empty());
    assert_eq!(seqs(&read_all(&mut s, 99)), vec![100]);
    assert!(read_all(&mut s, 100).is_empty());
    assert!(read_all(&mut s, 1000).is_empty());
    // A range straddling a segment boundary.
    let b = PER_SEG;
    assert_eq!(
        seqs(&s.read_after(b - 2, 4, usize::MAX).unwrap()),
        vec![b - 1, b, b + 1, b + 2]
    );
}

#[test]
fn consecutive_reads_continue_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..100 {
        append(&mut s);
    }
    let mut after = 0;
    let mut got = Vec::new();
    loop {
        let batch = s.read_after(after, 7, usize::MAX).unwrap();
        let Some(&(last, _)) = batch.last() else {
            break;
        };
        after = last;
        got.extend(batch);
    }
    assert_eq!(seqs(&got), (1..=100).collect::<Vec<_>>());
    check_payloads(&got, PAYLOAD);
    assert_eq!(s.seeks, 1, "consecutive reads must not re-seek");

    // Appends while the cursor sits at the end (also across a segment roll).
    for round in 0..30 {
        let seq = append(&mut s);
        let batch = s.read_after(after, 10, usize::MAX).unwrap();
        assert_eq!(seqs(&batch), vec![seq], "round {round}");
        after = seq;
    }
    // A byte limit that stops before a record leaves it for the next call.
    for _ in 0..5 {
        append(&mut s);
    }
    let batch = s.read_after(after, 10, PAYLOAD + 1).unwrap();
    assert_eq!(seqs(&batch), vec![after + 1]);
    let batch2 = s.read_after(after + 1, 10, usize::MAX).unwrap();
    assert_eq!(seqs(&batch2), (after + 2..=after + 5).collect::<Vec<_>>());
    after += 5;
    assert_eq!(s.seeks, 1);

    // A different position re-seeks and is still right.
    let b = 2 * PER_SEG;
    assert_eq!(
        seqs(&s.read_after(b + 4, 3, usize::MAX).unwrap()),
        vec![b + 5, b + 6, b + 7]
    );
    assert_eq!(s.seeks, 2);
    assert_eq!(
        seqs(&s.read_after(b + 7, 2, usize::MAX).unwrap()),
        vec![b + 8, b + 9]
    );
    assert_eq!(s.seeks, 2);

    // Acking segments before the cursor keeps it; deleting the cursor's segment re-seeks.
    s.ack(PER_SEG).unwrap();
    assert_eq!(
        seqs(&s.read_after(b + 9, 1, usize::MAX).unwrap()),
        vec![b + 10]
    );
    assert_eq!(s.seeks, 2);
    s.ack(3 * PER_SEG).unwrap();
    let rest = read_all(&mut s, b + 10);
    assert_eq!(seqs(&rest), (3 * PER_SEG + 1..=after).collect::<Vec<_>>());
    assert_eq!(s.seeks, 3);
}

#[test]
fn read_after_works_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..50 {
        append(&mut s);
    }
    assert_eq!(s.read_after(0, 10, usize::MAX).unwrap().len(), 10);
    drop(s);
    let (mut s, _) = open(dir.path(), small());
    let recs = read_all(&mut s, 20);
    assert_eq!(seqs(&recs), (21..=50).collect::<Vec<_>>());
    check_payloads(&recs, PAYLOAD);
    append(&mut s);
    assert_eq!(seqs(&read_all(&mut s, 50)), vec![51]);
}

#[test]
fn ack_deletes_only_wholly_acked_segments_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    let n = 2 * PER_SEG + 6;
    for _ in 0..n {
        append(&mut s);
    }
    assert_eq!(seg_files(dir.path()).len(), 3);
    s.ack(PER_SEG - 1).unwrap();
    assert_eq!(seg_files(dir.path()).len(), 3);
    assert_eq!(s.pending(), n - (PER_SEG - 1));
    assert_eq!(s.first_available_seq(), Some(PER_SEG));
    s.ack(PER_SEG).unwrap();
    assert_eq!(seg_files(dir.path()).len(), 2);
    assert_eq!(s.pending(), n - PER_SEG);
    assert_eq!(s.bytes(), disk_bytes(dir.path()));
    // Lower ack ignored.
    s.ack(3).unwrap();
    assert_eq!(s.acked_seq(), PER_SEG);
    s.ack(PER_SEG + 2).unwrap();
    assert_eq!(seg_files(dir.path()).len(), 2);
    assert_eq!(s.first_available_seq(), Some(PER_SEG + 3));
    assert_eq!(seqs(&read_all(&mut s, PER_SEG + 2))[0], PER_SEG + 3);
    drop(s);

    let (mut s, _) = open(dir.path(), small());
    assert_eq!(s.acked_seq(), PER_SEG + 2);
    assert_eq!(s.pending(), n - PER_SEG - 2);
    s.ack(1).unwrap();
    assert_eq!(s.acked_seq(), PER_SEG + 2);
    // Acking the partly filled active segment rolls and deletes it.
    s.ack(n).unwrap();
    assert!(seg_files(dir.path()).is_empty());
    assert_eq!((s.pending(), s.bytes()), (0, 0));
    assert_eq!(append(&mut s), n + 1);
    assert_eq!(
        seg_files(dir.path()),
        vec![dir.path().join(segment::file_name(n + 1))]
    );
    // Absurd values are refused.
    assert!(matches!(
        s.ack(u64::MAX),
        Err(SpoolError::SeqOutOfRange(u64::MAX))
    ));
    assert!(matches!(
        s.ensure_next_seq_above(MAX_SEQ + 1),
        Err(SpoolError::SeqOutOfRange(_))
    ));
    // An ack beyond anything assigned moves next_seq past it.
    s.ack(1000).unwrap();
    assert_eq!(s.next_seq(), 1001);
    assert!(seg_files(dir.path()).is_empty());
    drop(s);
    let (mut s, _) = open(dir.path(), small());
    assert_eq!((s.acked_seq(), s.next_seq()), (1000, 1001));
    assert_eq!(append(&mut s), 1001);
}

#[test]
fn cap_oldest_first_keeps_the_newest_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(16 * 1024, 4096, DropPolicy::OldestFirst);
    let (mut s, _) = open(dir.path(), c);
    let n = 1000;
    for i in 1..=n {
        assert_eq!(append(&mut s), i);
        assert!(s.bytes() <= c.max_bytes, "bytes {} at {i}", s.bytes());
        assert_eq!(s.dropped() + s.pending(), i);
    }
    assert!(s.dropped() > 0);
    assert_eq!(s.bytes(), disk_bytes(dir.path()));
    let recs = read_all(&mut s, 0);
    let got = seqs(&recs);
    assert_eq!(got.len() as u64, s.pending());
    assert_eq!(*got.last().unwrap(), n);
    assert_eq!(Some(got[0]), s.first_available_seq());
    assert_eq!(got, (got[0]..=n).collect::<Vec<_>>(), "contiguous newest");
    check_payloads(&recs, PAYLOAD);
    let dropped = s.dropped();
    drop(s);

    let (mut s, _) = open(dir.path(), c);
    assert_eq!(s.dropped(), dropped);
    assert_eq!(s.dropped() + s.pending(), n);
    // Acked records in a dropped segment are not counted again.
    let first = s.first_available_seq().unwrap();
    s.ack(first + 2).unwrap();
    let acked_on_disk = 3;
    for _ in 0..4 * PER_SEG {
        append(&mut s);
    }
    assert_eq!(s.dropped() + s.pending() + acked_on_disk, n + 4 * PER_SEG);
}

#[test]
fn cap_newest_first_keeps_the_oldest_and_counts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(16 * 1024, 4096, DropPolicy::NewestFirst);
    let (mut s, _) = open(dir.path(), c);
    let mut kept = 0;
    let mut refused = 0;
    for _ in 0..500 {
        match s.append_with(|seq| payload(seq, PAYLOAD)).unwrap() {
            Some(seq) => {
                kept += 1;
                assert_eq!(seq, kept);
            }
            None => refused += 1,
        }
        assert!(s.bytes() <= c.max_bytes);
    }
    assert_eq!(kept, c.max_bytes / (PAYLOAD as u64 + RECORD_OVERHEAD));
    assert_eq!(s.dropped(), refused);
    assert_eq!(seqs(&read_all(&mut s, 0)), (1..=kept).collect::<Vec<_>>());
    drop(s);

    let (mut s, _) = open(dir.path(), c);
    assert_eq!(s.dropped(), refused);
    assert_eq!(s.append_with(|seq| payload(seq, PAYLOAD)).unwrap(), None);
    assert_eq!(s.dropped(), refused + 1);
    // Room after an ack; refusals did not consume seqs.
    s.ack(PER_SEG).unwrap();
    assert_eq!(append(&mut s), kept + 1);
}

#[test]
fn record_larger_than_a_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    let too_big = s.append_with(|seq| payload(seq, 4096 - RECORD_OVERHEAD as usize + 1));
    assert!(matches!(
        too_big,
        Err(SpoolError::RecordTooLarge {
            size: 4097,
            limit: 4096
        })
    ));
    assert_eq!(s.next_seq(), 1);
    assert_eq!(append_len(&mut s, 4096 - RECORD_OVERHEAD as usize), 1);
    assert_eq!(append_len(&mut s, 0), 2);
    let recs = read_all(&mut s, 0);
    assert_eq!(recs[0].1.len(), 4096 - RECORD_OVERHEAD as usize);
    assert!(recs[1].1.is_empty());
    assert_eq!(seg_files(dir.path()).len(), 2);
}

/// Writes 20 records of 100 bytes into one segment and returns the spool dir and segment path.
fn one_segment() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..20 {
        append_len(&mut s, 100);
    }
    drop(s);
    let files = seg_files(dir.path());
    assert_eq!(files.len(), 1);
    (dir, files[0].clone())
}

/// Reopens after damage; checks the report, the kept records, appends and a clean second open.
fn check_repair(dir: &Path, expect: TruncatedTail, next_seq: u64) {
    let (mut s, report) = open(dir, small());
    assert_eq!(report.truncated, vec![expect.clone()]);
    assert_eq!(report.recovered_records, expect.records_kept);
    assert!(report.removed_empty.is_empty());
    assert_eq!(s.next_seq(), next_seq);
    let recs = read_all(&mut s, 0);
    assert_eq!(seqs(&recs), (1..=expect.records_kept).collect::<Vec<_>>());
    check_payloads(&recs, 100);
    assert_eq!(append_len(&mut s, 100), next_seq);
    assert_eq!(s.bytes(), disk_bytes(dir));
    drop(s);
    let (mut s, report) = open(dir, small());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(seqs(&read_all(&mut s, expect.records_kept)), vec![next_seq]);
}

#[test]
fn open_cuts_a_truncated_tail() {
    let (dir, seg) = one_segment();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let expect = TruncatedTail {
        path: seg,
        bytes_cut: 116 - 3,
        records_kept: 19,
    };
    check_repair(dir.path(), expect, 20);
}

#[test]
fn open_cuts_a_record_with_a_flipped_byte() {
    let (dir, seg) = one_segment();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.len() - 50;
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    let expect = TruncatedTail {
        path: seg,
        bytes_cut: 116,
        records_kept: 19,
    };
    check_repair(dir.path(), expect, 20);
}

#[test]
fn open_cuts_appended_garbage() {
    let (dir, seg) = one_segment();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xAB; 50]).unwrap();
    drop(f);
    let expect = TruncatedTail {
        path: seg,
        bytes_cut: 50,
        records_kept: 20,
    };
    check_repair(dir.path(), expect, 21);
}

#[test]
fn open_cuts_a_record_with_an_absurd_length() {
    let (dir, seg) = one_segment();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    let mut frame = Vec::new();
    record::encode(&mut frame, 21, &payload(21, 100));
    frame[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    f.write_all(&frame).unwrap();
    drop(f);
    let expect = TruncatedTail {
        path: seg,
        bytes_cut: 116,
        records_kept: 20,
    };
    check_repair(dir.path(), expect, 21);
}

#[test]
fn open_removes_an_empty_segment_file() {
    let (dir, _) = one_segment();
    // A crash right after creating the next segment.
    let empty = dir.path().join(segment::file_name(21));
    File::create(&empty).unwrap();
    let (mut s, report) = open(dir.path(), small());
    assert_eq!(report.removed_empty, vec![empty.clone()]);
    assert!(report.truncated.is_empty());
    assert_eq!(report.recovered_records, 20);
    assert!(!empty.exists());
    let seq = append_len(&mut s, 100);
    assert!(seq >= 21);
    drop(s);
    let (mut s, report) = open(dir.path(), small());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(read_all(&mut s, 0).len(), 21);
}

#[test]
fn open_removes_a_wholly_unreadable_segment() {
    let (dir, seg) = one_segment();
    let junk = dir.path().join(segment::file_name(300));
    fs::write(&junk, vec![0x5A; 1000]).unwrap();
    let (mut s, report) = open(dir.path(), small());
    assert_eq!(
        report.truncated,
        vec![TruncatedTail {
            path: junk.clone(),
            bytes_cut: 1000,
            records_kept: 0
        }]
    );
    assert!(!junk.exists());
    assert!(seg.exists());
    assert_eq!(read_all(&mut s, 0).len(), 20);
    // The name's seq is never reused.
    assert_eq!(append_len(&mut s, 100), 301);
    drop(s);
    let (_, report) = open(dir.path(), small());
    assert!(report.is_clean());
}

#[test]
fn open_repairs_a_damaged_middle_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..3 * PER_SEG {
        append(&mut s);
    }
    drop(s);
    let files = seg_files(dir.path());
    assert_eq!(files.len(), 3);
    let frame = PAYLOAD as u64 + RECORD_OVERHEAD;
    // Damage the 6th record of the middle segment.
    let mut bytes = fs::read(&files[1]).unwrap();
    bytes[(5 * frame + 20) as usize] ^= 0xFF;
    fs::write(&files[1], &bytes).unwrap();
    let (mut s, report) = open(dir.path(), small());
    assert_eq!(
        report.truncated,
        vec![TruncatedTail {
            path: files[1].clone(),
            bytes_cut: (PER_SEG - 5) * frame,
            records_kept: 5
        }]
    );
    let got = seqs(&read_all(&mut s, 0));
    let mut want: Vec<u64> = (1..=PER_SEG + 5).collect();
    want.extend(2 * PER_SEG + 1..=3 * PER_SEG);
    assert_eq!(got, want);
    assert_eq!(s.pending(), want.len() as u64);
    // Reading across the gap from inside it.
    assert_eq!(
        seqs(&s.read_after(PER_SEG + 7, 1, usize::MAX).unwrap()),
        vec![2 * PER_SEG + 1]
    );
    assert_eq!(append(&mut s), 3 * PER_SEG + 1);
}

#[test]
fn damage_found_while_reading_is_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), small());
    for _ in 0..2 * PER_SEG + 3 {
        append(&mut s);
    }
    // Damage record 4 of the first segment behind the spool's back.
    let files = seg_files(dir.path());
    let frame = PAYLOAD as u64 + RECORD_OVERHEAD;
    let mut f = OpenOptions::new().write(true).open(&files[0]).unwrap();
    f.seek(SeekFrom::Start(3 * frame + 30)).unwrap();
    f.write_all(b"XXXX").unwrap();
    drop(f);
    let got = seqs(&read_all(&mut s, 0));
    let mut want: Vec<u64> = (1..=3).collect();
    want.extend(PER_SEG + 1..=2 * PER_SEG + 3);
    assert_eq!(got, want);
    assert_eq!(s.dropped(), PER_SEG - 3);
    assert_eq!(s.dropped_after_read(), 0);
    assert_eq!(s.dropped() + s.pending(), 2 * PER_SEG + 3);
    assert_eq!(s.bytes(), disk_bytes(dir.path()));

    // Damage in the active segment: it is sealed, appends go on in a new one.
    let files = seg_files(dir.path());
    let last = files.last().unwrap();
    let mut f = OpenOptions::new().write(true).open(last).unwrap();
    f.seek(SeekFrom::Start(frame + 30)).unwrap();
    f.write_all(b"XXXX").unwrap();
    drop(f);
    assert_eq!(seqs(&read_all(&mut s, 2 * PER_SEG)), vec![2 * PER_SEG + 1]);
    assert_eq!(s.dropped(), PER_SEG - 3 + 2);
    assert_eq!(s.dropped_after_read(), 2);
    let seq = append(&mut s);
    assert_eq!(seq, 2 * PER_SEG + 4);
    assert_eq!(seqs(&read_all(&mut s, 2 * PER_SEG + 1)), vec![seq]);
    drop(s);
    let (s, report) = open(dir.path(), small());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(s.dropped(), PER_SEG - 1);
    assert_eq!(s.next_seq(), seq + 1);
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), small());
    assert!(matches!(
        Spool::open(dir.path(), small()),
        Err(SpoolError::Locked(_))
    ));
    drop(s);
    assert!(Spool::open(dir.path(), small()).is_ok());
}

#[test]
fn spool_can_move_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<Spool>();
    is_send::<SpoolError>();
}

#[test]
fn config_is_clamped() {
    let d = SpoolConfig::default().effective();
    assert_eq!((d.max_bytes, d.segment_bytes), (64 << 20, 1 << 20));
    assert_eq!(d.drop_policy, DropPolicy::OldestFirst);
    assert_eq!(d.fsync, FsyncPolicy::Interval(Duration::from_secs(1)));
    let c = cfg(1000, 10, DropPolicy::OldestFirst).effective();
    assert_eq!((c.max_bytes, c.segment_bytes), (16 * 1024, 4096));
    let c = cfg(8 << 20, 10 << 20, DropPolicy::OldestFirst).effective();
    assert_eq!(c.segment_bytes, 2 << 20);
}

#[test]
fn policies_parse() {
    assert_eq!("oldest".parse(), Ok(DropPolicy::OldestFirst));
    assert_eq!("Newest".parse(), Ok(DropPolicy::NewestFirst));
    assert!("middle".parse::<DropPolicy>().is_err());
    assert_eq!(DropPolicy::NewestFirst.to_string(), "newest");
    assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
    assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
    assert_eq!(
        "250ms".parse(),
        Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
    );
    assert_eq!(
        "2s".parse(),
        Ok(FsyncPolicy::Interval(Duration::from_secs(2)))
    );
    assert!("soon".parse::<FsyncPolicy>().is_err());
    let round: FsyncPolicy = FsyncPolicy::Interval(Duration::from_secs(1))
        .to_string()
        .parse()
        .unwrap();
    assert_eq!(round, FsyncPolicy::Interval(Duration::from_secs(1)));
}

#[test]
fn fsyncing_policies_work() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::ZERO),
        FsyncPolicy::Interval(Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let c = SpoolConfig { fsync, ..small() };
        let (mut s, _) = open(dir.path(), c);
        for _ in 0..2 * PER_SEG {
            append(&mut s);
        }
        s.sync().unwrap();
        s.ack(PER_SEG).unwrap();
        s.sync_now().unwrap();
        drop(s);
        let (mut s, report) = open(dir.path(), c);
        assert!(report.is_clean());
        assert_eq!(s.acked_seq(), PER_SEG);
        assert_eq!(read_all(&mut s, PER_SEG).len() as u64, PER_SEG);
    }
}

/// A small deterministic RNG (xorshift64*) so the property tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What `read_after` must return from a model holding every unacked record.
fn model_read(
    model: &BTreeMap<u64, Vec<u8>>,
    after: u64,
    max_records: usize,
    max_bytes: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    if max_records == 0 {
        return out;
    }
    for (seq, p) in model.range(after + 1..) {
        if !out.is_empty() && bytes + p.len() > max_bytes {
            break;
        }
        bytes += p.len();
        out.push((*seq, p.clone()));
        if out.len() >= max_records || bytes >= max_bytes {
            break;
        }
    }
    out
}

#[test]
fn random_operations_match_a_model() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let c = small();
        let (mut s, _) = open(dir.path(), c);
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let (mut next, mut acked) = (1u64, 0u64);
        let mut reader_at = 0u64;
        for step in 0..600 {
            let ctx = format!("seed {seed} step {step}");
            let op = rng.below(100);
            if op < 50 {
                let len = rng.below(300) as usize;
                let seq = s.append_with(|seq| payload(seq, len)).unwrap();
                assert_eq!(seq, Some(next), "{ctx}");
                model.insert(next, payload(next, len));
                next += 1;
            } else if op < 62 {
                let lo = acked.saturating_sub(5);
                let up = lo + rng.below(next + 3 - lo);
                s.ack(up).unwrap();
                if up > acked {
                    acked = up;
                    model = model.split_off(&(acked + 1));
                    next = next.max(acked + 1);
                }
            } else if op < 90 {
                let after = if rng.chance(70) {
                    reader_at.max(acked)
                } else {
                    acked + rng.below(next + 1 - acked)
                };
                let max_records = 1 + rng.below(40) as usize;
                let max_bytes = rng.below(6000) as usize;
                let got = s.read_after(after, max_records, max_bytes).unwrap();
                assert_eq!(
                    got,
                    model_read(&model, after, max_records, max_bytes),
                    "{ctx} after {after}"
                );
                reader_at = got.last().map_or(after, |(seq, _)| *seq);
            } else if op < 94 {
                drop(s);
                let (s2, report) = open(dir.path(), c);
                assert!(report.is_clean(), "{ctx}: {report:?}");
                s = s2;
                reader_at = acked;
            } else if op < 96 {
                let floor = (next + rng.below(20)).saturating_sub(5);
                s.ensure_next_seq_above(floor).unwrap();
                next = next.max(floor + 1);
            } else {
                s.sync().unwrap();
            }
            assert_eq!(s.next_seq(), next, "{ctx}");
            assert_eq!(s.acked_seq(), acked, "{ctx}");
            assert_eq!(s.pending(), model.len() as u64, "{ctx}");
            assert_eq!(
                s.first_available_seq(),
                model.keys().next().copied(),
                "{ctx}"
            );
            assert_eq!(s.dropped(), 0, "{ctx}");
            if step % 50 == 0 {
                assert_eq!(s.bytes(), disk_bytes(dir.path()), "{ctx}");
            }
        }
    }
}

#[test]
fn random_operations_under_the_cap_account_for_every_record() {
    for policy in [DropPolicy::OldestFirst, DropPolicy::NewestFirst] {
        for seed in 1..=8u64 {
            let dir = tempfile::tempdir().unwrap();
            let c = cfg(16 * 1024, 4096, policy);
            let (mut s, _) = open(dir.path(), c);
            let mut rng = Rng(seed ^ 0xDEAD_BEEF_CAFE_F00D);
            // The Console: what it stored, how far its stream has read, what it has yet to ack.
            let mut stored: BTreeSet<u64> = BTreeSet::new();
            let mut reader_at = 0u64;
            let mut unacked_high = 0u64;
            let mut produced = 0u64;
            let mut dropped_after_read = 0u64;
            for step in 0..3000 {
                let ctx = format!("{policy} seed {seed} step {step}");
                // Phases where the Console keeps up and phases where it falls behind.
                let read_pct = if (step / 300) % 2 == 0 { 4 } else { 25 };
                let op = rng.below(100);
                if op < 70 {
                    let len = 50 + rng.below(250) as usize;
                    produced += 1;
                    if let Some(seq) = s.append_with(|seq| payload(seq, len)).unwrap() {
                        assert_eq!(seq, s.last_seq(), "{ctx}");
                    }
                } else if op < 70 + read_pct {
                    let n = 1 + rng.below(30) as usize;
                    let batch = s.read_after(reader_at, n, 4096).unwrap();
                    for (seq, p) in &batch {
                        assert!(*seq > reader_at, "{ctx}");
                        assert!(p.starts_with(format!("event-{seq}:").as_bytes()), "{ctx}");
                        stored.insert(*seq);
                    }
                    if let Some((seq, _)) = batch.last() {
                        reader_at = *seq;
                        unacked_high = unacked_high.max(*seq);
                    }
                } else if op < 95 {
                    if rng.chance(50) {
                        s.ack(unacked_high).unwrap();
                    }
                } else if op < 97 {
                    // Reconnect: replay from the last ack.
                    reader_at = s.acked_seq();
                } else {
                    // Restart: the Console acks what it stored before the stream drops.
                    s.ack(unacked_high).unwrap();
                    dropped_after_read += s.dropped_after_read();
                    drop(s);
                    let (s2, report) = open(dir.path(), c);
                    assert!(report.is_clean(), "{ctx}");
                    s = s2;
                    reader_at = s.acked_seq();
                }
                assert!(s.bytes() <= c.max_bytes, "{ctx}: bytes {}", s.bytes());
            }
            // Drain.
            loop {
                let batch = s.read_after(reader_at, 100, usize::MAX).unwrap();
                let Some(&(last, _)) = batch.last() else {
                    break;
                };
                stored.extend(batch.iter().map(|(seq, _)| *seq));
                reader_at = last;
            }
            s.ack(reader_at).unwrap();
            dropped_after_read += s.dropped_after_read();
            assert_eq!(s.pending(), 0);
            assert!(
                s.dropped() > 0,
                "{policy} seed {seed}: the cap was never hit"
            );
            assert_eq!(
                stored.len() as u64 + s.dropped() - dropped_after_read,
                produced,
                "{policy} seed {seed}"
            );
            if policy == DropPolicy::NewestFirst {
                assert_eq!(dropped_after_read, 0);
                // No seq is consumed by a refusal: everything stored is contiguous.
                assert_eq!(stored.len() as u64, s.last_seq());
            }
        }
    }
}
