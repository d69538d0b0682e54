//! `defender run`: the application runs whatever happens to the Console link; the Defender
//! exits with the application's status.

use defender_proto::v1::Mode;

use crate::bundle::InstallBundle;
use crate::cli::RunArgs;
use crate::link::{Backoff, Link, LinkConfig};
use crate::{metadata, supervise};

/// Runs the application under the Defender and returns the exit status to use.
pub async fn run(args: RunArgs) -> i32 {
    // The application starts first: a Console problem must never keep it from running.
    let app = tokio::spawn(async move { supervise::run_child(&args.argv).await });
    let link = match InstallBundle::decode(args.install_bundle.as_deref().unwrap_or("")) {
        Ok(bundle) => Some(Link::spawn(LinkConfig {
            bundle,
            data_dir: args.data_dir,
            mode: Mode::Standalone,
            metadata: metadata::local(),
            backoff: Backoff::default(),
        })),
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
