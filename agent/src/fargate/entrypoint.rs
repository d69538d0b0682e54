//! `defender fargate entrypoint -- ARGV…`: what each app container's entryPoint becomes. Runs
//! the application as its child (child subreaper, signals forwarded, its exit status), observes
//! that container's processes and sockets, and sends the events to the task's sidecar. The
//! application starts and runs whether or not the sidecar is reachable.

use std::sync::Arc;
use std::time::Duration;

use defender_proto::v1::LocalHello;

use super::socket_sink::SocketSink;
use crate::cli::EntrypointArgs;
use crate::enforce::{Enforcer, EnforcingSink};
use crate::observe::process::ProcessScope;
use crate::observe::{ObserveConfig, Observer};
use crate::supervise::EXIT_CANNOT_START;

/// How long the wrapper waits, after the application ended, to hand its last events over.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the application under the wrapper; returns the exit status to use.
pub async fn run(args: EntrypointArgs) -> i32 {
    let (supervisor, mut capture, capture_state) =
        match crate::capture::spawn_app(&args.argv, args.capture, args.poll_interval) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return EXIT_CANNOT_START;
            }
        };
    // Evaluation happens here, where the processes are (the sidecar cannot see or kill them
    // in its own pid namespace); the policy comes from the sidecar.
    let metadata = crate::metadata::discover().await;
    let enforcer = Enforcer::new(
        &metadata,
        &[(args.container.clone(), args.image.clone())],
        None,
    );
    let sink = SocketSink::spawn(
        args.socket.clone(),
        LocalHello {
            container: args.container.clone(),
            image: args.image.clone(),
            app_pid: supervisor.pid(),
        },
        enforcer.clone(),
        Some(capture_state.clone()),
    );
    let enforcing: Arc<dyn crate::observe::EventSink> = Arc::new(EnforcingSink {
        inner: sink.clone(),
        enforcer: enforcer.clone(),
    });
    let exact = capture.as_mut().and_then(|c| {
        c.attach(&args.container, enforcer, sink.clone(), enforcing.clone());
        c.take_feed()
    });
    let _inventory = crate::inventory::spawn_for(
        &metadata,
        &args.container,
        &args.image,
        supervisor.pid(),
        sink.clone(),
    );
    let (reaped_tx, reaped_rx) = tokio::sync::mpsc::unbounded_channel();
    let observer = Observer::spawn(
        ObserveConfig {
            interval: args.poll_interval,
            scope: ProcessScope::Descendants(supervisor.pid()),
            container: args.container.clone(),
            proc_root: crate::observe::proc_root(),
            exact,
            state: capture_state,
        },
        enforcing,
        Some(reaped_rx),
    );
    let code = supervisor.wait(Some(reaped_tx)).await;
    let _ = tokio::task::spawn_blocking(move || observer.stop()).await;
    sink.flush(FLUSH_TIMEOUT).await;
    code
}
