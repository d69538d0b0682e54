//! Distributes the runtime policy in force to every open Defender stream: Welcome carries it,
//! and a newly saved version goes out as `PolicyUpdate` at once. The database is the source of
//! truth: a version saved through another Console replica arrives by PostgreSQL `LISTEN`
//! (within a round trip), and a poll every few seconds covers a listener that reconnects.

use std::sync::Arc;
use std::time::Duration;

use defender_proto::v1::Policy;
use tokio::sync::watch;

use crate::store::{PolicyVersion, Store};

/// How often the database is checked for versions saved elsewhere.
const POLL: Duration = Duration::from_secs(5);

/// Which policy a feed distributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// The runtime policy (`runtime_policies`).
    Runtime,
    /// The WAAS policy (`waas_policies`), carried in `Welcome.waas` / `PolicyUpdate.waas`.
    Waas,
}

/// The current policy, watched by every stream.
#[derive(Clone)]
pub struct PolicyFeed {
    tx: Arc<watch::Sender<Option<Policy>>>,
    kind: PolicyKind,
}

fn to_wire(v: &PolicyVersion) -> Policy {
    Policy {
        version: u64::try_from(v.version).unwrap_or(0),
        rules_json: v.rules_json.clone(),
    }
}

impl PolicyFeed {
    /// Starts with the version in force (None: Defenders keep their built-in default).
    pub fn new(initial: Option<&PolicyVersion>) -> Self {
        Self::of_kind(PolicyKind::Runtime, initial)
    }

    /// A feed of `kind` starting with `initial`.
    pub fn of_kind(kind: PolicyKind, initial: Option<&PolicyVersion>) -> Self {
        let (tx, _) = watch::channel(initial.map(to_wire));
        Self {
            tx: Arc::new(tx),
            kind,
        }
    }

    /// Makes `v` the policy in force for every stream, unless a newer one already is.
    pub fn publish(&self, v: &PolicyVersion) {
        let wire = to_wire(v);
        self.tx.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.version >= wire.version) {
                return false;
            }
            *cur = Some(wire);
            true
        });
    }

    /// A receiver that sees every new version.
    pub fn subscribe(&self) -> watch::Receiver<Option<Policy>> {
        self.tx.subscribe()
    }

    /// The policy in force now.
    pub fn current(&self) -> Option<Policy> {
        self.tx.borrow().clone()
    }

    /// Keeps the feed in step with versions saved by other replicas, until `stop` resolves.
    pub async fn follow(self, store: Store, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut listener = match store.policy_listener().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(kind = ?self.kind, "cannot LISTEN for policy changes, polling: {e}");
                None
            }
        };
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(POLL) => {}
                n = notified(listener.as_mut()) => {
                    if let Err(e) = n {
                        tracing::warn!(kind = ?self.kind, "policy LISTEN failed, polling: {e}");
                        listener = None;
                    }
                }
            }
            let current = match self.kind {
                PolicyKind::Runtime => store.current_policy().await,
                PolicyKind::Waas => store.current_waas_policy().await,
            };
            match current {
                Ok(Some(v)) => self.publish(&v),
                Ok(None) => {}
                Err(e) => tracing::warn!(kind = ?self.kind, "reading the policy failed: {e}"),
            }
        }
    }
}

/// Resolves at `listener`'s next notification (or error); never when there is no listener.
async fn notified(listener: Option<&mut sqlx::postgres::PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => l.try_recv().await.map(drop),
        None => std::future::pending().await,
    }
}
