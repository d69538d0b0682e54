//! `defender fargate healthcheck`: exit 0 when the sidecar is enrolled and its Console stream
//! is up, non-zero otherwise. This is what the protected task definition's healthCheck runs.

use std::path::Path;
use std::time::Duration;

use defender_proto::v1::{HealthQuery, LocalReply, LocalRequest, local_request};
use tokio::net::UnixStream;

use crate::local::{read_frame, write_frame};

/// Asks the sidecar at `socket`; prints one line and returns the exit status.
pub async fn run(socket: &Path) -> i32 {
    let ask = async {
        let mut s = UnixStream::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        let q = LocalRequest {
            msg: Some(local_request::Msg::Health(HealthQuery {})),
        };
        write_frame(&mut s, &q).await.map_err(|e| e.to_string())?;
        read_frame::<_, LocalReply>(&mut s)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the sidecar closed the connection".to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok(r)) if r.connected => {
            println!(
                "healthy: connected to the Console as Defender {}",
                r.defender_id
            );
            0
        }
        Ok(Ok(r)) => {
            println!("unhealthy: not connected to the Console: {}", r.detail);
            1
        }
        Ok(Err(e)) => {
            println!("unhealthy: no sidecar at {}: {e}", socket.display());
            1
        }
        Err(_) => {
            println!("unhealthy: the sidecar did not answer within 5 s");
            1
        }
    }
}
