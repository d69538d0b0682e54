//! Runtime defense in the Defender: every observed event is evaluated against the App-Embedded
//! policy where it is observed. `alert` adds a runtime audit; `prevent` kills the offending
//! process with SIGKILL at once (before the event is even spooled) and says so in the audit.
//! The last policy received is persisted, so it is enforced while the Console is unreachable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use defender_policy::{
    BinaryIdentity, BinaryTracker, CompiledPolicy, DEFAULT_TRACKED_BINARIES, Effect, EventContext,
    RuntimePolicy, Scope,
};
use defender_proto::v1::{Event, Policy, TaskMetadata, event};

use crate::observe::EventSink;

/// Most parent executables remembered for the shell-from-non-shell check.
const MAX_TRACKED_PIDS: usize = 16_384;

struct Active {
    /// The policy as received (None: the built-in default).
    raw: Option<Policy>,
    compiled: CompiledPolicy,
}

/// Where events are evaluated: the policy in force and what evaluation needs to remember.
pub struct Enforcer {
    active: RwLock<Active>,
    binaries: Mutex<HashMap<String, BinaryTracker>>,
    exes: Mutex<HashMap<u32, Vec<u8>>>,
    family: String,
    cluster: String,
    /// Container name → image, from the task metadata (or the wrapper's own flags).
    images: HashMap<String, String>,
    persist: Option<PathBuf>,
    proc_root: PathBuf,
}

impl Enforcer {
    /// An enforcer for the task described by `metadata`, starting from the policy persisted at
    /// `persist` (if any and valid) or the built-in default policy.
    pub fn new(
        metadata: &TaskMetadata,
        extra_images: &[(String, String)],
        persist: Option<PathBuf>,
    ) -> Arc<Self> {
        let mut images: HashMap<String, String> = metadata
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect();
        images.extend(extra_images.iter().cloned());
        let stored = persist.as_ref().and_then(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let saved: Policy = serde_json::from_str::<SavedPolicy>(&text).ok()?.into();
            let compiled = CompiledPolicy::from_json(&saved.rules_json).ok()?;
            tracing::info!(
                version = saved.version,
                "enforcing the runtime policy saved from the Console"
            );
            Some(Active {
                raw: Some(saved),
                compiled,
            })
        });
        let active = stored.unwrap_or_else(|| Active {
            raw: None,
            compiled: RuntimePolicy::default_policy().compile(),
        });
        Arc::new(Self {
            active: RwLock::new(active),
            binaries: Mutex::new(HashMap::new()),
            exes: Mutex::new(HashMap::new()),
            family: metadata.family.clone(),
            cluster: metadata.cluster.clone(),
            images,
            persist,
            proc_root: PathBuf::from("/proc"),
        })
    }

    /// Version of the policy in force (0: the built-in default).
    pub fn version(&self) -> u64 {
        self.current().map_or(0, |p| p.version)
    }

    /// The Console's policy in force, if any (None: the built-in default).
    pub fn current(&self) -> Option<Policy> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .raw
            .clone()
    }

    /// Puts a policy from the Console in force (newer versions only) and persists it.
    pub fn apply(&self, policy: &Policy) -> Result<bool, String> {
        if policy.version <= self.version() {
            return Ok(false);
        }
        let compiled = CompiledPolicy::from_json(&policy.rules_json).map_err(|e| e.to_string())?;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Active {
            raw: Some(policy.clone()),
            compiled,
        };
        if let Some(path) = &self.persist {
            let saved = SavedPolicy::from(policy);
            let text = serde_json::to_string(&saved).unwrap_or_default();
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
                tracing::warn!("cannot persist the runtime policy: {e}");
            }
        }
        tracing::info!(version = policy.version, "runtime policy in force");
        Ok(true)
    }

    /// Evaluates `event`: kills what `prevent` says to kill, and returns the audits to report.
    /// This is the after-the-fact path (polling); exact capture uses [`Enforcer::judge`].
    pub fn check(&self, event: &Event) -> Vec<(defender_proto::v1::RuntimeAudit, bool)> {
        let verdicts = self.evaluate(event, None);
        // Every process holding a prevented listener: killing one forked worker leaves the
        // port served by the others.
        let holders: Vec<u32> = match &event.kind {
            Some(event::Kind::NetworkListen(l)) => l.pids.clone(),
            _ => Vec::new(),
        };
        let mut killed: Vec<u32> = Vec::new();
        verdicts
            .into_iter()
            .map(|v| {
                let mut audit = v.to_audit(0);
                let mut done = false;
                if v.effect == Effect::Prevent
                    && let Some(pid) = v.kill_pid
                {
                    let mut targets = vec![pid];
                    targets.extend(holders.iter().copied().filter(|p| *p != pid));
                    for pid in targets {
                        // One SIGKILL per pid, never our own.
                        let ok = killed.contains(&pid) || (pid != std::process::id() && kill(pid));
                        if ok && !killed.contains(&pid) {
                            killed.push(pid);
                        }
                        done |= ok;
                    }
                    if !done {
                        audit.message.push_str(" (the process was already gone)");
                    }
                }
                (audit, done)
            })
            .collect()
    }

    /// Judges `event` *before* the syscall it describes completes (exact capture): returns the
    /// audits and whether the syscall must be refused. Kills nothing. `exe_meta` is the file
    /// about to be executed (for a `ProcessStart`: `/proc/<pid>/exe` still shows the old image).
    pub fn judge(
        &self,
        event: &Event,
        exe_meta: Option<&std::fs::Metadata>,
    ) -> (Vec<defender_proto::v1::RuntimeAudit>, bool) {
        let verdicts = self.evaluate(event, exe_meta);
        let prevent = verdicts.iter().any(|v| v.effect == Effect::Prevent);
        let audits = verdicts
            .into_iter()
            .map(|v| {
                let mut a = v.to_audit(0);
                if v.effect == Effect::Prevent {
                    let how = match &event.kind {
                        Some(event::Kind::ProcessStart(_)) => "blocked before exec",
                        Some(event::Kind::NetworkConnection(_)) => "blocked before connect",
                        Some(event::Kind::NetworkListen(_)) => "blocked before listen",
                        Some(event::Kind::DnsQuery(_)) => "blocked before the query was sent",
                        _ => "blocked",
                    };
                    a.message = format!("{}; prevented: {how}", v.description);
                }
                a
            })
            .collect();
        (audits, prevent)
    }

    /// The policy's verdicts about `event`, remembering what later evaluations need (the
    /// executable of each pid, for shell-from-non-shell; binaries per container).
    fn evaluate(
        &self,
        event: &Event,
        exe_meta: Option<&std::fs::Metadata>,
    ) -> Vec<defender_policy::Verdict> {
        let mut binary_changed = false;
        let mut parent_exe = None;
        match &event.kind {
            Some(event::Kind::ProcessStart(p)) => {
                {
                    let mut exes = self.exes.lock().unwrap_or_else(|e| e.into_inner());
                    parent_exe = exes.get(&p.ppid).cloned();
                    if !p.blocked && (exes.len() < MAX_TRACKED_PIDS || exes.contains_key(&p.pid)) {
                        exes.insert(p.pid, p.exe.clone());
                    }
                }
                if parent_exe.is_none() {
                    // A parent never reported with an exec of its own (a forked child, or one
                    // that started before the Defender watched): ask the kernel.
                    parent_exe =
                        std::fs::read_link(self.proc_root.join(p.ppid.to_string()).join("exe"))
                            .ok()
                            .map(|p| p.into_os_string().into_encoded_bytes());
                }
                binary_changed =
                    self.binary_changed(&event.container, p.pid, &p.exe, &p.exe_sha256, exe_meta);
            }
            Some(event::Kind::ProcessExit(x)) => {
                self.exes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&x.pid);
                return Vec::new();
            }
            Some(
                event::Kind::Audit(_)
                | event::Kind::Notice(_)
                | event::Kind::Inventory(_)
                | event::Kind::Compliance(_),
            )
            | None => return Vec::new(),
            _ => {}
        }
        let image = self.images.get(&event.container).map_or("", String::as_str);
        let scope = Scope {
            family: &self.family,
            container: &event.container,
            image,
            cluster: &self.cluster,
        };
        let ctx = EventContext {
            binary_changed,
            parent_exe: parent_exe.as_deref(),
        };
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .compiled
            .evaluate(&scope, event, &ctx)
    }

    fn binary_changed(
        &self,
        container: &str,
        pid: u32,
        exe: &[u8],
        sha256: &str,
        exe_meta: Option<&std::fs::Metadata>,
    ) -> bool {
        let meta = match exe_meta {
            Some(m) => m.clone(),
            None => match std::fs::metadata(self.proc_root.join(pid.to_string()).join("exe")) {
                Ok(m) => m,
                Err(_) => return false,
            },
        };
        let mut identity = BinaryIdentity::from_metadata(&meta);
        identity.sha256 = sha256.to_owned();
        let mut trackers = self.binaries.lock().unwrap_or_else(|e| e.into_inner());
        let tracker = trackers
            .entry(container.to_owned())
            .or_insert_with(|| BinaryTracker::new(DEFAULT_TRACKED_BINARIES));
        tracker.record(exe, &identity)
    }
}

fn kill(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// The policy as persisted in the data directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPolicy {
    version: u64,
    rules_json: String,
}

impl From<&Policy> for SavedPolicy {
    fn from(p: &Policy) -> Self {
        Self {
            version: p.version,
            rules_json: p.rules_json.clone(),
        }
    }
}

impl From<SavedPolicy> for Policy {
    fn from(s: SavedPolicy) -> Self {
        Policy {
            version: s.version,
            rules_json: s.rules_json,
        }
    }
}

/// An [`EventSink`] that evaluates each event before handing it on, followed by its audits.
pub struct EnforcingSink {
    pub inner: Arc<dyn EventSink>,
    pub enforcer: Arc<Enforcer>,
}

impl EventSink for EnforcingSink {
    fn push_event(&self, event: Event) -> Option<u64> {
        // Evaluate (and kill) first: a prevented process must not get to run while we spool.
        let audits = self.enforcer.check(&event);
        deliver(
            self.inner.as_ref(),
            event,
            audits.into_iter().map(|(a, _)| a).collect(),
        )
    }
}

/// Hands `event` to `sink`, followed by its audits (pointing at its seq when the sink assigns
/// one here). Returns the event's seq.
pub fn deliver(
    sink: &dyn EventSink,
    event: Event,
    audits: Vec<defender_proto::v1::RuntimeAudit>,
) -> Option<u64> {
    let (time_ms, container) = (event.time_ms, event.container.clone());
    let seq = sink.push_event(event);
    for mut audit in audits {
        audit.subject_seq = seq.unwrap_or(0);
        sink.push_event(Event {
            seq: 0,
            time_ms,
            container: container.clone(),
            kind: Some(event::Kind::Audit(audit)),
        });
    }
    seq
}

/// Applies every policy the Console sends (through `updates`) to `enforcer`.
pub fn follow(
    enforcer: Arc<Enforcer>,
    mut updates: tokio::sync::watch::Receiver<Option<Policy>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let next = updates.borrow_and_update().clone();
            if let Some(p) = next
                && let Err(e) = enforcer.apply(&p)
            {
                tracing::error!(
                    version = p.version,
                    "refusing an invalid runtime policy: {e}"
                );
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    })
}
