//! The live Connect streams of this Console process, one per Defender identity.
//!
//! One identity, one stream: when a Defender opens a new stream while an older one is still
//! open (a restarted task that kept its identity, a half-dead TCP connection, or a stolen
//! certificate), the newest wins and the older is closed with `ABORTED` "superseded by a newer
//! stream" ([`superseded`]). Decommissioning closes a Defender's stream at once with
//! `PERMISSION_DENIED` ([`decommissioned`]) through [`StreamRegistry::close`].
//!
//! The registry only knows this process's streams. Streams held by another Console replica (or
//! decommissions made by `defender-console defender decommission` on the database directly)
//! are caught through the database: a new session ends every older open session of the same
//! Defender, and a stream whose own session was ended by someone else finds out at its next
//! heartbeat (see `run_stream` in `stream.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tonic::Status;

/// Message of the status that closes an older stream of the same identity.
pub const SUPERSEDED_MESSAGE: &str = "superseded by a newer stream";
/// Message of the status that closes a decommissioned Defender's stream.
pub const DECOMMISSIONED_MESSAGE: &str = "this Defender is decommissioned";

/// `ABORTED` "superseded by a newer stream".
pub fn superseded() -> Status {
    Status::aborted(SUPERSEDED_MESSAGE)
}

/// `PERMISSION_DENIED` "this Defender is decommissioned".
pub fn decommissioned() -> Status {
    Status::permission_denied(DECOMMISSIONED_MESSAGE)
}

struct Entry {
    stream: u64,
    close: oneshot::Sender<Status>,
}

/// Stripes of the "opening" locks: streams of different Defenders rarely wait for each other.
const OPENING_STRIPES: usize = 64;

/// Live streams by Defender id.
pub struct StreamRegistry {
    streams: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
    /// Serialise "register and open the session" of new streams of one Defender (striped by
    /// id), so the stream the registry keeps is also the one whose session is newest in the
    /// database.
    opening: Vec<tokio::sync::Mutex<()>>,
}

impl Default for StreamRegistry {
    fn default() -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            opening: (0..OPENING_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

/// Held by a stream while it runs; unregisters it when dropped (unless a newer one replaced it).
pub struct StreamGuard {
    registry: Arc<StreamRegistry>,
    defender_id: String,
    stream: u64,
}

impl StreamRegistry {
    /// Registers a new stream of `defender_id`, closing an older one with [`superseded`].
    /// The receiver yields the status this stream must close with when it is closed from
    /// outside (superseded or decommissioned).
    pub fn register(
        self: &Arc<Self>,
        defender_id: &str,
    ) -> (StreamGuard, oneshot::Receiver<Status>) {
        let stream = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let older = self
            .lock()
            .insert(defender_id.to_owned(), Entry { stream, close: tx });
        if let Some(older) = older {
            let _ = older.close.send(superseded());
        }
        let guard = StreamGuard {
            registry: self.clone(),
            defender_id: defender_id.to_owned(),
            stream,
        };
        (guard, rx)
    }

    /// Held while a new stream of `defender_id` registers and opens its session.
    pub(super) async fn opening(&self, defender_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        defender_id.hash(&mut h);
        self.opening[(h.finish() as usize) % OPENING_STRIPES]
            .lock()
            .await
    }

    /// Closes the live stream of `defender_id` with `status`; returns whether there was one.
    pub fn close(&self, defender_id: &str, status: Status) -> bool {
        match self.lock().remove(defender_id) {
            Some(entry) => entry.close.send(status).is_ok(),
            None => false,
        }
    }

    /// Number of live streams.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no stream is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids of the Defenders with a live stream.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        if map
            .get(&self.defender_id)
            .is_some_and(|e| e.stream == self.stream)
        {
            map.remove(&self.defender_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_stream_wins_and_older_is_told() {
        let reg = Arc::new(StreamRegistry::default());
        let (g1, mut rx1) = reg.register("d1");
        let (g2, mut rx2) = reg.register("d1");
        let status = rx1.try_recv().expect("older stream closed");
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(status.message(), SUPERSEDED_MESSAGE);
        assert!(rx2.try_recv().is_err());
        // The older one going away does not unregister the newer one.
        drop(g1);
        assert_eq!(reg.len(), 1);
        assert!(reg.close("d1", decommissioned()));
        assert_eq!(
            rx2.try_recv().unwrap().code(),
            tonic::Code::PermissionDenied
        );
        drop(g2);
        assert!(reg.is_empty());
        assert!(!reg.close("d1", decommissioned()));
    }
}
