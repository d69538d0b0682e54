//! `defender run`: the application runs whatever happens to the Console link; the Defender
//! exits with the application's status.

use defender_proto::v1::{Mode, agent_notice};

use crate::bundle::InstallBundle;
use crate::cli::RunArgs;
use crate::link::{Backoff, Link, LinkConfig};
use crate::outbox::Outbox;
use crate::{metadata, supervise};

/// Runs the application under the Defender and returns the exit status to use.
pub async fn run(args: RunArgs) -> i32 {
    // The application starts first: a Console problem must never keep it from running.
    let app = tokio::spawn(async move { supervise::run_child(&args.argv).await });
    let link = match InstallBundle::decode(args.install_bundle.as_deref().unwrap_or("")) {
        Ok(bundle) => match Outbox::open(&args.data_dir.join("spool"), args.spool.config()) {
            Ok(outbox) => {
                outbox.notice(
                    agent_notice::Level::Info,
                    format!("Defender {} started in standalone mode", crate::VERSION),
                );
                Some(Link::spawn(LinkConfig {
                    bundle,
                    data_dir: args.data_dir,
                    mode: Mode::Standalone,
                    metadata: metadata::local(),
                    backoff: Backoff::default(),
                    outbox,
                }))
            }
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
    let code = app.await.unwrap_or(1);
    if let Some(link) = link {
        link.stop();
    }
    code
}
