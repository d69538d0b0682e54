//! Where every event goes first: the on-disk spool, shared by the producers (observers,
//! policy, notices) and the link that sends and replays it. Appending never waits for the
//! Console, and memory stays bounded because nothing is queued outside the spool.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use defender_proto::v1::{AgentNotice, Event, agent_notice, event};
use prost::Message;
use tokio::sync::Notify;

use crate::spool::{OpenReport, Spool, SpoolConfig, SpoolError};
use crate::unix_ms;

/// The spool plus a wake-up for the sender.
pub struct Outbox {
    spool: Mutex<Spool>,
    appended: Notify,
}

/// Figures for heartbeats and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub last_seq: u64,
    pub acked_seq: u64,
    pub pending: u64,
    pub bytes: u64,
    pub dropped: u64,
}

impl Outbox {
    /// Opens the spool in `dir`; damage found in it is reported as a notice event.
    pub fn open(dir: &Path, cfg: SpoolConfig) -> Result<Arc<Self>, SpoolError> {
        let (spool, report) = Spool::open(dir, cfg)?;
        let outbox = Arc::new(Self {
            spool: Mutex::new(spool),
            appended: Notify::new(),
        });
        outbox.report_damage(&report);
        Ok(outbox)
    }

    fn report_damage(&self, report: &OpenReport) {
        for t in &report.truncated {
            let msg = format!(
                "spool damage repaired: {} had a damaged tail; cut {} bytes, kept {} intact records",
                t.path.display(),
                t.bytes_cut,
                t.records_kept
            );
            tracing::warn!("{msg}");
            self.notice(agent_notice::Level::Warning, msg);
        }
        if report.state_reset {
            let msg = "spool state file was unreadable and was reset".to_owned();
            tracing::warn!("{msg}");
            self.notice(agent_notice::Level::Warning, msg);
        }
    }

    /// Locks the spool; a panic while it was held cannot leave it torn (every write is framed).
    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event (its seq is assigned here) and wakes the sender. Returns the seq, or
    /// None when the spool refused it (counted as dropped).
    pub fn push(&self, mut event: Event) -> Option<u64> {
        let result = self.spool().append_with(|seq| {
            event.seq = seq;
            event.encode_to_vec()
        });
        match result {
            Ok(seq) => {
                self.appended.notify_one();
                seq
            }
            Err(e) => {
                tracing::error!("cannot spool event: {e}");
                None
            }
        }
    }

    /// Appends an agent notice.
    pub fn notice(&self, level: agent_notice::Level, message: String) -> Option<u64> {
        self.push(Event {
            seq: 0,
            time_ms: unix_ms(),
            container: String::new(),
            kind: Some(event::Kind::Notice(AgentNotice {
                level: level as i32,
                message,
                dropped: 0,
            })),
        })
    }

    /// Resolves after the next append (or at once if one happened since the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Waits (bounded) until the Console acked everything spooled; what is left stays spooled
    /// for the next start.
    pub async fn drain(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let s = self.stats();
                if s.acked_seq >= s.last_seq {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Current figures.
    pub fn stats(&self) -> OutboxStats {
        let s = self.spool();
        OutboxStats {
            last_seq: s.last_seq(),
            acked_seq: s.acked_seq(),
            pending: s.pending(),
            bytes: s.bytes(),
            dropped: s.dropped(),
        }
    }
}
