//! The spool's small state file: acked seq, dropped count and the seq floors that keep seqs
//! increasing after segments are deleted. Written atomically (tmp file, fsync, rename).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the state file inside the spool directory.
pub(crate) const STATE_FILE: &str = "state";
/// Name of the temporary file the state is written to before the rename.
const STATE_TMP: &str = "state.tmp";
/// Identifies (and versions) the state file format.
const MAGIC: &[u8; 8] = b"DFSPST01";
/// Encoded size: magic, four u64 fields, crc32.
const ENCODED_LEN: usize = 8 + 4 * 8 + 4;

/// Persistent spool state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// Highest seq the Console acknowledged.
    pub acked: u64,
    /// Records dropped since the spool directory was created.
    pub dropped: u64,
    /// Highest seq of a segment deleted to make room: segments wholly at or below it that are
    /// still on disk at open are the leftovers of an interrupted delete and are removed.
    pub deleted_through: u64,
    /// Seqs at or below this are never assigned again (Console-known seqs, repaired records).
    pub seq_floor: u64,
}

/// A loaded state plus whether the file was unreadable and had to be reset.
pub(crate) struct Loaded {
    pub state: State,
    pub reset: bool,
}

/// Path of the state file in `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

fn encode(s: &State) -> [u8; ENCODED_LEN] {
    let mut b = [0u8; ENCODED_LEN];
    b[0..8].copy_from_slice(MAGIC);
    for (i, v) in [s.acked, s.dropped, s.deleted_through, s.seq_floor]
        .into_iter()
        .enumerate()
    {
        b[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[..ENCODED_LEN - 4]);
    b[ENCODED_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<State> {
    if b.len() != ENCODED_LEN || &b[0..8] != MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[ENCODED_LEN - 4..]);
    if crc32fast::hash(&b[..ENCODED_LEN - 4]) != u32::from_le_bytes(crc) {
        return None;
    }
    let field = |i: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[8 + i * 8..16 + i * 8]);
        u64::from_le_bytes(v)
    };
    Some(State {
        acked: field(0),
        dropped: field(1),
        deleted_through: field(2),
        seq_floor: field(3),
    })
}

/// Loads the state of `dir`: a missing file is a fresh spool; an unreadable one is reset to
/// defaults and flagged (the rename makes that practically impossible short of disk damage).
pub(crate) fn load(dir: &Path) -> io::Result<Loaded> {
    match fs::read(path(dir)) {
        Ok(bytes) => Ok(match decode(&bytes) {
            Some(state) => Loaded {
                state,
                reset: false,
            },
            None => Loaded {
                state: State::default(),
                reset: true,
            },
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Loaded {
            state: State::default(),
            reset: false,
        }),
        Err(e) => Err(e),
    }
}

/// Atomically replaces the state file; with `durable`, fsyncs the file before the rename and the
/// directory after it.
pub(crate) fn store(dir: &Path, s: &State, durable: bool) -> io::Result<()> {
    let tmp = dir.join(STATE_TMP);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&encode(s))?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path(dir))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so that file creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(dir.path()).unwrap();
        assert_eq!(l.state, State::default());
        assert!(!l.reset);
        let s = State {
            acked: 5,
            dropped: 6,
            deleted_through: 7,
            seq_floor: 8,
        };
        store(dir.path(), &s, true).unwrap();
        let l = load(dir.path()).unwrap();
        assert_eq!(l.state, s);
        assert!(!l.reset);
        let mut bytes = fs::read(path(dir.path())).unwrap();
        bytes[10] ^= 1;
        fs::write(path(dir.path()), &bytes).unwrap();
        let l = load(dir.path()).unwrap();
        assert_eq!(l.state, State::default());
        assert!(l.reset);
    }
}
