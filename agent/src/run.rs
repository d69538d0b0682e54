//! `defender run`: standalone mode (wrapper and sidecar in one process) for non-Fargate hosts
//! and local demos. The application runs whatever happens to the Console link; its processes
//! and sockets are observed and spooled; the Defender exits with the application's status.

use std::sync::Arc;

use defender_proto::v1::{Mode, agent_notice};

use crate::bundle::InstallBundle;
use crate::capture;
use crate::cli::RunArgs;
use crate::enforce::{self, Enforcer, EnforcingSink};
use crate::link::{Backoff, Link, LinkConfig};
use crate::observe::process::ProcessScope;
use crate::observe::{EventSink, ObserveConfig, Observer};
use crate::outbox::Outbox;
use crate::supervise::EXIT_CANNOT_START;

/// Runs the application under the Defender and returns the exit status to use.
pub async fn run(args: RunArgs) -> i32 {
    // The application starts first: a Console problem must never keep it from running.
    let (supervisor, mut capture, capture_state) =
        match capture::spawn_app(&args.argv, args.capture, args.poll_interval) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return EXIT_CANNOT_START;
            }
        };
    // WAAS starts with the app: clients reach the app through it whatever the Console does.
    let waas_sink = Arc::new(crate::waas::LateSink::default());
    let (waas_tx, waas_rx) = tokio::sync::watch::channel(None);
    let _waas = crate::waas::start(
        &args.waas,
        waas_sink.clone(),
        waas_rx,
        Some(args.data_dir.join("waas-policy.json")),
    )
    .await;
    let b64 = crate::bundle::from_value_or_file(
        args.install_bundle.as_deref(),
        args.install_bundle_file.as_deref(),
    )
    .unwrap_or_else(|e| {
        tracing::error!("cannot read the install bundle file: {e}");
        String::new()
    });
    let protected = match InstallBundle::decode(&b64) {
        Ok(bundle) => match Outbox::open(&args.data_dir.join("spool"), args.spool.config()) {
            Ok(outbox) => Some((bundle, outbox)),
            Err(e) => {
                tracing::error!("Defender disabled, the application runs unprotected: {e}");
                None
            }
        },
        Err(e) => {
            tracing::error!("Defender disabled, the application runs unprotected: {e}");
            None
        }
    };
    if let Some((_, outbox)) = &protected {
        waas_sink.set(outbox.clone());
    }
    let Some((bundle, outbox)) = protected else {
        return supervisor.wait(None).await;
    };
    outbox.notice(
        agent_notice::Level::Info,
        format!("Defender {} started in standalone mode", crate::VERSION),
    );
    let metadata = crate::metadata::discover().await;
    let container = std::env::var("DEFENDER_CONTAINER_NAME")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| metadata.hostname.clone());
    let _inventory =
        crate::inventory::spawn_for(&metadata, &container, "", supervisor.pid(), outbox.clone());
    let enforcer = Enforcer::new(&metadata, &[], Some(args.data_dir.join("policy.json")));
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(enforcer.current());
    let applying = enforce::follow(enforcer.clone(), policy_rx);
    let link = Link::spawn(LinkConfig {
        bundle,
        data_dir: args.data_dir,
        mode: Mode::Standalone,
        metadata,
        backoff: Backoff::default(),
        outbox: outbox.clone(),
        policy: Some(policy_tx),
        waas: Some(waas_tx),
        capture: Some(capture_state.clone()),
    });
    let enforcing: Arc<dyn EventSink> = Arc::new(EnforcingSink {
        inner: outbox.clone() as Arc<dyn EventSink>,
        enforcer: enforcer.clone(),
    });
    let exact = capture.as_mut().and_then(|c| {
        c.attach(&container, enforcer, outbox.clone(), enforcing.clone());
        c.take_feed()
    });
    let (reaped_tx, reaped_rx) = tokio::sync::mpsc::unbounded_channel();
    let observer = Observer::spawn(
        ObserveConfig {
            interval: args.poll_interval,
            scope: ProcessScope::Descendants(supervisor.pid()),
            container,
            proc_root: crate::observe::proc_root(),
            exact,
            state: capture_state,
        },
        enforcing,
        Some(reaped_rx),
    );
    let code = supervisor.wait(Some(reaped_tx)).await;
    let _ = tokio::task::spawn_blocking(move || observer.stop()).await;
    // Deliver what the run produced (the link may be reconnecting: wait, bounded by the drain
    // timeout); whatever is left stays spooled for the next start.
    outbox.drain(args.drain_timeout).await;
    link.stop();
    applying.abort();
    if let Err(e) = outbox.spool().sync_now() {
        tracing::warn!("spool sync at exit failed: {e}");
    }
    code
}
