//! What the Defender says about where it runs: the ECS task metadata endpoint v4
//! (`ECS_CONTAINER_METADATA_URI_V4`) in a Fargate task, otherwise the hostname and the
//! `FARGATE_TASK` variable the protected task definition sets.

use std::time::Duration;

use defender_proto::v1::{ContainerInfo, TaskMetadata};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Environment variable ECS sets in every container of a task.
pub const METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// Largest metadata response read.
const MAX_BODY: usize = 1024 * 1024;

/// Why the metadata endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("invalid metadata URI {0:?}")]
    Uri(String),
    #[error("task metadata request failed: {0}")]
    Request(String),
    #[error("task metadata endpoint answered HTTP {0}")]
    Status(u16),
    #[error("task metadata is not the documented v4 JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaskResponse {
    #[serde(default)]
    cluster: String,
    #[serde(rename = "TaskARN", default)]
    task_arn: String,
    #[serde(default)]
    family: String,
    #[serde(default)]
    revision: String,
    #[serde(default)]
    availability_zone: String,
    #[serde(default)]
    launch_type: String,
    #[serde(default)]
    containers: Vec<ContainerResponse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerResponse {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    #[serde(rename = "ImageID", default)]
    image_id: String,
    #[serde(default)]
    docker_id: String,
    /// Present only for a container whose task definition has a `healthCheck`.
    #[serde(default)]
    health: Option<HealthResponse>,
}

#[derive(Deserialize)]
struct HealthResponse {
    #[serde(default)]
    status: String,
}

/// Metadata from the local environment only.
pub fn local() -> TaskMetadata {
    TaskMetadata {
        hostname: hostname(),
        family: std::env::var("FARGATE_TASK").unwrap_or_default(),
        ..Default::default()
    }
}

/// Task metadata from the ECS endpoint when `ECS_CONTAINER_METADATA_URI_V4` is set, falling
/// back to [`local`] (with one log line saying why) when it is absent or fails.
pub async fn discover() -> TaskMetadata {
    let Ok(uri) = std::env::var(METADATA_ENV) else {
        return local();
    };
    match fetch_task(&uri).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("using local metadata: {e}");
            local()
        }
    }
}

/// GETs `{base}/task` and maps it to the protocol's task metadata.
pub async fn fetch_task(base: &str) -> Result<TaskMetadata, MetadataError> {
    let uri: hyper::Uri = format!("{}/task", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| MetadataError::Uri(base.to_owned()))?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| MetadataError::Request("timed out".into()))?
        .map_err(|e| MetadataError::Request(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(MetadataError::Status(resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| MetadataError::Request(e.to_string()))?
        .to_bytes();
    parse_task(&body)
}

/// Maps a v4 `/task` response body.
pub fn parse_task(body: &[u8]) -> Result<TaskMetadata, MetadataError> {
    let t: TaskResponse = serde_json::from_slice(body)?;
    Ok(TaskMetadata {
        hostname: hostname(),
        cluster: short_cluster(&t.cluster),
        task_arn: t.task_arn,
        family: t.family,
        revision: t.revision,
        availability_zone: t.availability_zone,
        launch_type: t.launch_type,
        containers: t
            .containers
            .into_iter()
            .map(|c| ContainerInfo {
                name: c.name,
                image: c.image,
                image_id: c.image_id,
                docker_id: c.docker_id,
                // A defined health check whose status ECS has not set yet still counts.
                health_status: c
                    .health
                    .map(|h| {
                        if h.status.is_empty() {
                            "UNKNOWN".into()
                        } else {
                            h.status
                        }
                    })
                    .unwrap_or_default(),
            })
            .collect(),
    })
}

/// `arn:aws:ecs:us-west-2:111122223333:cluster/default` → `default` (a plain name stays).
fn short_cluster(cluster: &str) -> String {
    cluster
        .rsplit_once(":cluster/")
        .map_or(cluster, |(_, name)| name)
        .to_owned()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Shaped like the Fargate example of AWS's "Task metadata endpoint version 4" page.
    const TASK_JSON: &str = r#"{
  "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
  "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
  "Family": "curltest",
  "Revision": "3",
  "DesiredStatus": "RUNNING",
  "KnownStatus": "RUNNING",
  "Limits": { "CPU": 0.25, "Memory": 512 },
  "PullStartedAt": "2020-10-08T20:47:16.053330955Z",
  "PullStoppedAt": "2020-10-08T20:47:19.592684631Z",
  "AvailabilityZone": "us-west-2a",
  "Containers": [
    {
      "DockerId": "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603",
      "Name": "curl",
      "DockerName": "curl",
      "Image": "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest:latest",
      "ImageID": "sha256:25f3695bedfb454a50f12d127839a68ad3caf91e451c1da073db34c542c4d2cb",
      "Labels": { "com.amazonaws.ecs.cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default" },
      "DesiredStatus": "RUNNING",
      "KnownStatus": "RUNNING",
      "Limits": { "CPU": 10, "Memory": 128 },
      "Type": "NORMAL",
      "Health": { "status": "HEALTHY", "statusSince": "2020-10-08T20:47:30.553Z" },
      "Networks": [ { "NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.0.108"] } ]
    },
    { "DockerId": "e9028f8d5d8e4f258373e7b93ce9a3c3-3033467208", "Name": "defender",
      "Image": "fargate-defender/defender:0.1.0", "ImageID": "sha256:aa", "Type": "NORMAL" }
  ],
  "LaunchType": "FARGATE",
  "ClockDrift": { "ClockErrorBound": 0.446931, "ReferenceTimestamp": "2020-10-08T20:45:03Z", "ClockSynchronizationStatus": "SYNCHRONIZED" },
  "EphemeralStorageMetrics": { "Utilized": 261, "Reserved": 20496 }
}"#;

    async fn serve_once(status: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(req.starts_with("GET /v4/abc/task "), "{req}");
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        format!("http://{addr}/v4/abc")
    }

    #[tokio::test]
    async fn reads_the_documented_task_response() {
        let uri = serve_once("200 OK", TASK_JSON).await;
        let m = fetch_task(&uri).await.unwrap();
        assert_eq!(m.cluster, "default");
        assert_eq!(
            m.task_arn,
            "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3"
        );
        assert_eq!((m.family.as_str(), m.revision.as_str()), ("curltest", "3"));
        assert_eq!(m.availability_zone, "us-west-2a");
        assert_eq!(m.launch_type, "FARGATE");
        assert_eq!(m.containers.len(), 2);
        assert_eq!(m.containers[0].name, "curl");
        assert!(m.containers[0].image.ends_with("curltest:latest"));
        assert!(m.containers[0].image_id.starts_with("sha256:"));
        assert_eq!(m.containers[0].health_status, "HEALTHY");
        assert_eq!(m.containers[1].health_status, "", "no health check defined");
        assert!(!m.hostname.is_empty());
    }

    #[tokio::test]
    async fn errors_are_reported_not_panics() {
        let uri = serve_once("500 Internal Server Error", "{}").await;
        assert!(matches!(
            fetch_task(&uri).await,
            Err(MetadataError::Status(500))
        ));
        let uri = serve_once("200 OK", "not json").await;
        assert!(matches!(
            fetch_task(&uri).await,
            Err(MetadataError::Json(_))
        ));
        assert!(matches!(
            fetch_task("not a uri\n").await,
            Err(MetadataError::Uri(_))
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(matches!(
            fetch_task(&format!("http://127.0.0.1:{port}/v4/x")).await,
            Err(MetadataError::Request(_))
        ));
    }
}
