//! `defender fargate sidecar`: one per task. Holds the task's identity and its one Console
//! stream, spools every event, accepts the app-container wrappers on a Unix socket in the
//! shared volume, answers health checks, and in sidecar mode (pidMode task) observes every
//! process of the task itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use defender_proto::v1::{
    LocalPush, LocalReply, LocalRequest, Mode, Policy, agent_notice, local_request,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

use crate::bundle::InstallBundle;
use crate::cli::{FargateMode, SidecarArgs};
use crate::enforce::{self, Enforcer, EnforcingSink};
use crate::link::{Backoff, Link, LinkConfig, LinkState};
use crate::local::{read_frame, write_frame};
use crate::observe::process::ProcessScope;
use crate::observe::{ObserveConfig, Observer};
use crate::outbox::Outbox;

/// Wrapper connections served at once (a task has at most 10 containers; health checks come and go).
const MAX_CONNECTIONS: usize = 64;

/// Runs the sidecar until SIGTERM; returns the exit status.
pub async fn run(args: SidecarArgs) -> i32 {
    let b64 = match (&args.install_bundle, &args.install_bundle_file) {
        (Some(b64), _) => b64.clone(),
        (None, Some(path)) => match crate::bundle::read_file(path) {
            Ok(b64) => b64,
            Err(e) => {
                tracing::error!(
                    "the sidecar cannot read the install bundle {}: {e}",
                    path.display()
                );
                return 2;
            }
        },
        (None, None) => String::new(),
    };
    let bundle = match InstallBundle::decode(b64.trim()) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("the sidecar cannot protect this task: {e}");
            return 2;
        }
    };
    let outbox = match Outbox::open(&args.data_dir.join("spool"), args.spool.config()) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("the sidecar cannot open its spool: {e}");
            return 2;
        }
    };
    let mode = match args.mode {
        FargateMode::Embedded => Mode::Embedded,
        FargateMode::Sidecar => Mode::Sidecar,
    };
    let metadata = crate::metadata::discover().await;
    outbox.notice(
        agent_notice::Level::Info,
        format!(
            "Defender {} sidecar started ({} mode) for task {}",
            crate::VERSION,
            args.mode,
            if metadata.task_arn.is_empty() {
                &metadata.hostname
            } else {
                &metadata.task_arn
            }
        ),
    );
    let _inventory = (args.mode == FargateMode::Sidecar)
        .then(|| crate::inventory::spawn_sidecar(&metadata, outbox.clone()));
    let enforcer = Enforcer::new(&metadata, &[], Some(args.data_dir.join("policy.json")));
    let (policy_tx, policy_rx) = watch::channel(enforcer.current());
    // Sidecar mode polls (it cannot install a filter in other containers' processes); in
    // embedded mode each wrapper captures and reports its mode (see CaptureState::status).
    let capture_state = crate::capture::CaptureState::new(args.poll_interval);
    capture_state.set_mode(
        false,
        if args.mode == FargateMode::Sidecar {
            "sidecar mode (pidMode task) polls /proc: it cannot install a filter in other containers' processes"
        } else {
            "no app-container wrapper has reported yet"
        },
    );
    let applying = enforce::follow(enforcer.clone(), policy_rx.clone());
    let (waas_tx, waas_rx) = watch::channel(None);
    let _waas = crate::waas::start(
        &args.waas,
        outbox.clone(),
        waas_rx,
        Some(args.data_dir.join("waas-policy.json")),
    )
    .await;
    let link = Link::spawn(LinkConfig {
        bundle,
        data_dir: args.data_dir.clone(),
        mode,
        metadata,
        backoff: Backoff::default(),
        outbox: outbox.clone(),
        policy: Some(policy_tx),
        waas: Some(waas_tx),
        capture: Some(capture_state.clone()),
    });
    let listener = match bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", args.socket.display());
            link.stop();
            return 2;
        }
    };
    tracing::info!(socket = %args.socket.display(), "waiting for app-container wrappers");
    let observer = (args.mode == FargateMode::Sidecar).then(|| {
        Observer::spawn(
            ObserveConfig {
                interval: args.poll_interval,
                scope: ProcessScope::All {
                    exclude: vec![std::process::id()],
                },
                container: String::new(),
                proc_root: crate::observe::proc_root(),
                exact: None,
                state: capture_state.clone(),
            },
            Arc::new(EnforcingSink {
                inner: outbox.clone(),
                enforcer: enforcer.clone(),
            }),
            None,
        )
    });
    let state = link.state();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!("too many local connections; refusing one");
                    continue;
                };
                let (outbox, state, policy) = (outbox.clone(), state.clone(), policy_rx.clone());
                let capture = capture_state.clone();
                tokio::spawn(async move {
                    serve(stream, &outbox, &state, policy, &capture).await;
                    drop(permit);
                });
            }
        }
    }
    tracing::info!("stopping: delivering what is spooled");
    if let Some(o) = observer {
        let _ = tokio::task::spawn_blocking(move || o.stop()).await;
    }
    outbox.drain(args.drain_timeout).await;
    link.stop();
    applying.abort();
    if let Err(e) = outbox.spool().sync_now() {
        tracing::warn!("spool sync at exit failed: {e}");
    }
    let _ = std::fs::remove_file(&args.socket);
    0
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by a previous run (the volume outlives the container) is stale.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // App containers may run as any user: everyone in the task may connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

async fn serve(
    stream: UnixStream,
    outbox: &Outbox,
    state: &watch::Receiver<LinkState>,
    mut policy: watch::Receiver<Option<Policy>>,
    capture: &crate::capture::CaptureState,
) {
    let (mut reader, mut writer) = stream.into_split();
    let first: LocalRequest = match read_frame(&mut reader).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("dropping a local connection: {e}");
            return;
        }
    };
    let container = match first.msg {
        Some(local_request::Msg::Health(_)) => {
            let _ = write_frame(&mut writer, &health_reply(state)).await;
            return;
        }
        Some(local_request::Msg::Hello(h)) => {
            tracing::info!(container = %h.container, image = %h.image, app_pid = h.app_pid, "app container attached");
            h.container
        }
        _ => {
            tracing::warn!("dropping a local connection that did not start with Hello");
            return;
        }
    };
    // The wrapper enforces the policy: it gets the one in force now and every later one. A
    // task of its own writes them, so reading frames is never interrupted half-way.
    let pusher = tokio::spawn(async move {
        loop {
            let current = policy.borrow_and_update().clone();
            if push_policy(&mut writer, current).await.is_err() || policy.changed().await.is_err() {
                return;
            }
        }
    });
    loop {
        match read_frame::<_, LocalRequest>(&mut reader).await {
            Ok(Some(LocalRequest {
                msg: Some(local_request::Msg::Event(mut e)),
            })) => {
                if e.container.is_empty() {
                    e.container.clone_from(&container);
                }
                outbox.push(e);
            }
            Ok(Some(LocalRequest {
                msg: Some(local_request::Msg::Capture(status)),
            })) => capture.set_wrapper(&container, status),
            Ok(Some(_)) => {
                tracing::warn!(%container, "unexpected local message; closing");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%container, "dropping a local connection: {e}");
                break;
            }
        }
    }
    pusher.abort();
}

fn health_reply(state: &watch::Receiver<LinkState>) -> LocalReply {
    match &*state.borrow() {
        LinkState::Connected { defender_id } => LocalReply {
            enrolled: true,
            connected: true,
            defender_id: defender_id.clone(),
            detail: String::new(),
        },
        LinkState::Starting => LocalReply {
            detail: "starting".into(),
            ..Default::default()
        },
        LinkState::Disconnected { reason } => LocalReply {
            detail: reason.clone(),
            ..Default::default()
        },
    }
}

async fn push_policy(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    policy: Option<Policy>,
) -> Result<(), crate::local::FrameError> {
    match policy {
        Some(p) => write_frame(writer, &LocalPush { policy: Some(p) }).await,
        None => Ok(()),
    }
}
