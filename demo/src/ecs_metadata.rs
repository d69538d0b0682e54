//! `defender-demo ecs-metadata`: a local stand-in for the ECS task metadata endpoint v4 of one
//! Fargate task, so a Defender outside AWS sees realistic cluster / family / task ARN metadata.
//!
//! Each container of a task gets `ECS_CONTAINER_METADATA_URI_V4=http://HOST:PORT/v4/<id>`, where
//! `<id>` is the container's name or its `DockerId`. Served, with the shapes AWS documents for
//! Fargate (platform 1.4+):
//!
//! - `GET /v4/<id>/task`: the task, with every container;
//! - `GET /v4/<id>`: that container.
//!
//! Identifiers (task id, Docker ids, image digests, container ARNs) are well-formed and stable
//! for the life of the process; they are made up, not taken from Docker.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `ecs-metadata` options.
#[derive(Debug, Args, Clone)]
pub struct MetadataArgs {
    /// Address to serve on (Fargate's endpoint is only reachable from inside the task; in the
    /// compose demo the stand-in shares the task's network namespace, so loopback is enough).
    #[arg(long, env = "ECS_METADATA_LISTEN", default_value = "127.0.0.1:51679")]
    pub listen: String,
    /// Cluster short name.
    #[arg(long, env = "ECS_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// AWS Region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// AWS account id.
    #[arg(long, env = "ECS_ACCOUNT_ID", default_value = "123456789012")]
    pub account: String,
    /// Task definition family.
    #[arg(long, env = "ECS_FAMILY")]
    pub family: String,
    /// Task definition revision.
    #[arg(long, env = "ECS_REVISION", default_value = "1")]
    pub revision: String,
    /// Task id (32 hex digits); a random one by default, like a new task.
    #[arg(long, env = "ECS_TASK_ID")]
    pub task_id: Option<String>,
    /// Availability Zone (default: the Region's `a` zone).
    #[arg(long, env = "ECS_AVAILABILITY_ZONE")]
    pub availability_zone: Option<String>,
    /// Launch type.
    #[arg(long, env = "ECS_LAUNCH_TYPE", default_value = "FARGATE")]
    pub launch_type: String,
    /// Name of the ECS service that started the task, if any.
    #[arg(long, env = "ECS_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// The task's containers, `NAME=IMAGE` (repeatable; in the environment, comma-separated).
    #[arg(long = "container", env = "ECS_CONTAINERS", value_delimiter = ',', required = true, value_parser = parse_container)]
    pub containers: Vec<ContainerSpec>,
    /// The task's private IPv4 address (default: this host's address on its default route).
    #[arg(long, env = "ECS_TASK_IPV4")]
    pub ipv4: Option<Ipv4Addr>,
}

/// One container of the task, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
}

fn parse_container(s: &str) -> Result<ContainerSpec, String> {
    let (name, image) = s
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=IMAGE"))?;
    if name.is_empty() || image.is_empty() || name.contains('/') {
        return Err(format!("{s:?}: expected NAME=IMAGE"));
    }
    Ok(ContainerSpec {
        name: name.to_owned(),
        image: image.to_owned(),
    })
}

/// Everything the responses are made of, fixed when the stand-in starts.
#[derive(Debug, Clone)]
pub struct Task {
    pub region: String,
    pub account: String,
    pub cluster: String,
    pub family: String,
    pub revision: String,
    pub task_id: String,
    pub availability_zone: String,
    pub launch_type: String,
    pub service_name: Option<String>,
    pub containers: Vec<ContainerSpec>,
    pub ipv4: Ipv4Addr,
    /// When the task "started" (unix time).
    pub started: SystemTime,
}

impl Task {
    /// The task these options describe.
    pub fn from_args(args: &MetadataArgs) -> Result<Self, String> {
        let task_id = match &args.task_id {
            Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                id.to_ascii_lowercase()
            }
            Some(id) => return Err(format!("task id {id:?}: expected 32 hex digits")),
            None => random_task_id(),
        };
        let mut seen = std::collections::HashSet::new();
        for c in &args.containers {
            if !seen.insert(&c.name) {
                return Err(format!("container {:?} given twice", c.name));
            }
        }
        Ok(Task {
            region: args.region.clone(),
            account: args.account.clone(),
            cluster: args.cluster.clone(),
            family: args.family.clone(),
            revision: args.revision.clone(),
            task_id,
            availability_zone: args
                .availability_zone
                .clone()
                .unwrap_or_else(|| format!("{}a", args.region)),
            launch_type: args.launch_type.clone(),
            service_name: args.service_name.clone(),
            containers: args.containers.clone(),
            ipv4: args
                .ipv4
                .or_else(default_route_ipv4)
                .unwrap_or(Ipv4Addr::LOCALHOST),
            started: SystemTime::now(),
        })
    }

    pub fn cluster_arn(&self) -> String {
        format!(
            "arn:aws:ecs:{}:{}:cluster/{}",
            self.region, self.account, self.cluster
        )
    }

    pub fn task_arn(&self) -> String {
        format!(
            "arn:aws:ecs:{}:{}:task/{}/{}",
            self.region, self.account, self.cluster, self.task_id
        )
    }

    /// Fargate Docker ids are the task id, a dash and a 10-digit number.
    pub fn docker_id(&self, container: &str) -> String {
        let key = format!("{}/{container}", self.task_id);
        format!(
            "{}-{:010}",
            self.task_id,
            fnv1a(key.as_bytes(), 0) % 10_000_000_000
        )
    }

    /// The container `id` names (its name or Docker id).
    pub fn container(&self, id: &str) -> Option<&ContainerSpec> {
        self.containers
            .iter()
            .find(|c| c.name == id || self.docker_id(&c.name) == id)
    }

    /// `GET ${ECS_CONTAINER_METADATA_URI_V4}/task`.
    pub fn task_json(&self) -> Value {
        let mut task = json!({
            "Cluster": self.cluster_arn(),
            "TaskARN": self.task_arn(),
            "Family": self.family,
            "Revision": self.revision,
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": { "CPU": 0.25, "Memory": 512 },
            "PullStartedAt": self.time(-6.0),
            "PullStoppedAt": self.time(-2.5),
            "AvailabilityZone": self.availability_zone,
            "LaunchType": self.launch_type,
            "Containers": self.containers.iter().map(|c| self.container_json(c)).collect::<Vec<_>>(),
            "ClockDrift": {
                "ClockErrorBound": 0.5,
                "ReferenceTimestamp": self.time(0.0),
                "ClockSynchronizationStatus": "SYNCHRONIZED"
            },
            "EphemeralStorageMetrics": { "Utilized": 261, "Reserved": 20496 }
        });
        if let (Some(service), Some(obj)) = (&self.service_name, task.as_object_mut()) {
            obj.insert("ServiceName".into(), json!(service));
        }
        task
    }

    /// `GET ${ECS_CONTAINER_METADATA_URI_V4}`: one container.
    pub fn container_json(&self, c: &ContainerSpec) -> Value {
        let ip = self.ipv4.octets();
        json!({
            "DockerId": self.docker_id(&c.name),
            "Name": c.name,
            "DockerName": c.name,
            "Image": c.image,
            "ImageID": format!("sha256:{}", hex64(c.image.as_bytes())),
            "Labels": {
                "com.amazonaws.ecs.cluster": self.cluster_arn(),
                "com.amazonaws.ecs.container-name": c.name,
                "com.amazonaws.ecs.task-arn": self.task_arn(),
                "com.amazonaws.ecs.task-definition-family": self.family,
                "com.amazonaws.ecs.task-definition-version": self.revision
            },
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": { "CPU": 2 },
            "CreatedAt": self.time(-1.5),
            "StartedAt": self.time(-1.0),
            "Type": "NORMAL",
            "ContainerARN": format!(
                "arn:aws:ecs:{}:{}:container/{}/{}/{}",
                self.region, self.account, self.cluster, self.task_id,
                uuid_like(format!("{}/{}", self.task_id, c.name).as_bytes())
            ),
            "LogDriver": "awslogs",
            "LogOptions": {
                "awslogs-group": format!("/ecs/{}", self.family),
                "awslogs-region": self.region,
                "awslogs-stream": format!("ecs/{}/{}", c.name, self.task_id)
            },
            "Networks": [{
                "NetworkMode": "awsvpc",
                "IPv4Addresses": [self.ipv4.to_string()],
                "AttachmentIndex": 0,
                "MACAddress": format!("0a:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", ip[0] ^ 0x5a, ip[0], ip[1], ip[2], ip[3]),
                "IPv4SubnetCIDRBlock": format!("{}.{}.0.0/16", ip[0], ip[1]),
                "DomainNameServers": [format!("{}.{}.0.2", ip[0], ip[1])],
                "DomainNameSearchList": [format!("{}.compute.internal", self.region)],
                "PrivateDNSName": format!("ip-{}-{}-{}-{}.{}.compute.internal", ip[0], ip[1], ip[2], ip[3], self.region),
                "SubnetGatewayIpv4Address": format!("{}.{}.0.1/16", ip[0], ip[1])
            }],
            "Snapshotter": "overlayfs"
        })
    }

    /// RFC 3339 time `offset_s` seconds after the task's start.
    fn time(&self, offset_s: f64) -> String {
        let t = if offset_s < 0.0 {
            self.started - Duration::from_secs_f64(-offset_s)
        } else {
            self.started + Duration::from_secs_f64(offset_s)
        };
        OffsetDateTime::from(t)
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
    }
}

/// Serves the task's metadata until SIGTERM or SIGINT.
pub async fn run(args: MetadataArgs) -> anyhow::Result<()> {
    let task = Task::from_args(&args).map_err(anyhow::Error::msg)?;
    if std::process::id() == 1 {
        // Like Fargate's pause container, the stand-in may be PID 1 of the task's namespace:
        // orphans are re-parented to it, so it reaps them.
        std::thread::spawn(reap_orphans);
    }
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!(
        "[ecs-metadata] task {} ({}:{}, {}), containers: {}; serving http://{}/v4/<container>[/task]",
        task.task_arn(),
        task.family,
        task.revision,
        task.availability_zone,
        task.containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        listener.local_addr()?
    );
    axum::serve(listener, router(Arc::new(task)))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}

/// The endpoint's routes.
pub fn router(task: Arc<Task>) -> Router {
    Router::new()
        .route("/v4/{id}", get(container))
        .route("/v4/{id}/task", get(task_metadata))
        .with_state(task)
}

async fn task_metadata(State(task): State<Arc<Task>>, Path(id): Path<String>) -> Response {
    match task.container(&id) {
        Some(_) => axum::Json(task.task_json()).into_response(),
        None => unknown(&id),
    }
}

async fn container(State(task): State<Arc<Task>>, Path(id): Path<String>) -> Response {
    match task.container(&id) {
        Some(c) => axum::Json(task.container_json(c)).into_response(),
        None => unknown(&id),
    }
}

fn unknown(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("unknown container {id:?}: not in this task\n"),
    )
        .into_response()
}

fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a c_int; -1 means any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid <= 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// This host's address on its default route (no packet is sent: connecting a UDP socket only
/// picks a route).
fn default_route_ipv4() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

fn random_task_id() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // No /dev/urandom: the time and pid are unique enough for a demo task id.
        let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
        bytes[..8].copy_from_slice(&fnv1a(seed.as_bytes(), 1).to_be_bytes());
        bytes[8..].copy_from_slice(&fnv1a(seed.as_bytes(), 2).to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// FNV-1a, with a seed mixed in: stable made-up identifiers without a hashing dependency.
fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// 64 hex digits derived from `data` (the shape of a sha256 image digest).
fn hex64(data: &[u8]) -> String {
    (0..4).map(|i| format!("{:016x}", fnv1a(data, i))).collect()
}

/// A UUID-shaped string derived from `data`.
fn uuid_like(data: &[u8]) -> String {
    let h = hex64(data);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MetadataArgs,
    }

    fn task() -> Task {
        let cli = Cli::try_parse_from([
            "x",
            "--cluster",
            "demo",
            "--region",
            "eu-west-1",
            "--family",
            "web",
            "--revision",
            "7",
            "--task-id",
            "0123456789ABCDEF0123456789abcdef",
            "--service-name",
            "web-svc",
            "--container",
            "app=fargate-defender/demo:latest,defender=fargate-defender/defender:latest",
            "--ipv4",
            "172.18.0.5",
        ])
        .unwrap();
        Task::from_args(&cli.args).unwrap()
    }

    fn is_rfc3339(v: &Value) -> bool {
        v.as_str()
            .is_some_and(|s| OffsetDateTime::parse(s, &Rfc3339).is_ok())
    }

    #[test]
    fn task_has_the_documented_fargate_shape() {
        let t = task();
        let j = t.task_json();
        assert_eq!(
            j["Cluster"],
            "arn:aws:ecs:eu-west-1:123456789012:cluster/demo"
        );
        assert_eq!(
            j["TaskARN"],
            "arn:aws:ecs:eu-west-1:123456789012:task/demo/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(j["Family"], "web");
        assert_eq!(j["Revision"], "7", "Revision is a string in v4");
        assert_eq!(j["AvailabilityZone"], "eu-west-1a");
        assert_eq!(j["LaunchType"], "FARGATE");
        assert_eq!(j["ServiceName"], "web-svc");
        assert_eq!(j["DesiredStatus"], "RUNNING");
        assert!(j["Limits"]["CPU"].is_number() && j["Limits"]["Memory"].is_number());
        assert!(is_rfc3339(&j["PullStartedAt"]) && is_rfc3339(&j["PullStoppedAt"]));
        let containers = j["Containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["Name"], "app");
        assert_eq!(containers[1]["Image"], "fargate-defender/defender:latest");
        assert!(j.get("VPCID").is_none(), "VPCID appears on EC2 only");
    }

    #[test]
    fn container_has_the_documented_fargate_shape() {
        let t = task();
        let c = t.container_json(&t.containers[0]);
        let docker_id = c["DockerId"].as_str().unwrap();
        let (task_part, n) = docker_id.split_once('-').unwrap();
        assert_eq!(task_part, t.task_id);
        assert!(n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit()));
        let image_id = c["ImageID"].as_str().unwrap();
        let digest = image_id.strip_prefix("sha256:").unwrap();
        assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(c["Name"], "app");
        assert_eq!(c["DockerName"], "app");
        assert_eq!(c["Image"], "fargate-defender/demo:latest");
        assert_eq!(c["Labels"]["com.amazonaws.ecs.task-arn"], t.task_arn());
        assert_eq!(
            c["Labels"]["com.amazonaws.ecs.task-definition-family"],
            "web"
        );
        assert_eq!(
            c["Labels"]["com.amazonaws.ecs.task-definition-version"],
            "7"
        );
        assert_eq!(c["Labels"]["com.amazonaws.ecs.container-name"], "app");
        assert_eq!(c["Type"], "NORMAL");
        assert!(is_rfc3339(&c["CreatedAt"]) && is_rfc3339(&c["StartedAt"]));
        let arn = c["ContainerARN"].as_str().unwrap();
        assert!(arn.starts_with("arn:aws:ecs:eu-west-1:123456789012:container/demo/"));
        let net = &c["Networks"][0];
        assert_eq!(net["NetworkMode"], "awsvpc");
        assert_eq!(net["IPv4Addresses"][0], "172.18.0.5");
        assert_eq!(net["IPv4SubnetCIDRBlock"], "172.18.0.0/16");
        assert_eq!(
            net["PrivateDNSName"],
            "ip-172-18-0-5.eu-west-1.compute.internal"
        );
        // Distinct containers, distinct ids; the same container, the same id.
        let other = t.container_json(&t.containers[1]);
        assert_ne!(c["DockerId"], other["DockerId"]);
        assert_ne!(c["ImageID"], other["ImageID"]);
        assert_eq!(
            c["DockerId"],
            t.container_json(&t.containers[0])["DockerId"]
        );
    }

    #[test]
    fn containers_are_found_by_name_or_docker_id() {
        let t = task();
        assert_eq!(t.container("defender").unwrap().name, "defender");
        let id = t.docker_id("app");
        assert_eq!(t.container(&id).unwrap().name, "app");
        assert!(t.container("nope").is_none());
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(parse_container("app").is_err());
        assert!(parse_container("=img").is_err());
        let mut args = Cli::try_parse_from(["x", "--family", "f", "--container", "a=b"])
            .unwrap()
            .args;
        assert!(Task::from_args(&args).is_ok());
        args.task_id = Some("xyz".into());
        assert!(Task::from_args(&args).is_err());
        args.task_id = None;
        args.containers.push(args.containers[0].clone());
        assert!(Task::from_args(&args).is_err());
        assert!(
            Cli::try_parse_from(["x", "--family", "f"]).is_err(),
            "containers are required"
        );
    }

    #[test]
    fn random_task_ids_look_like_fargate_ones() {
        let a = random_task_id();
        assert!(a.len() == 32 && a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_task_id());
    }

    #[tokio::test]
    async fn serves_task_and_container() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            tokio::spawn(async move { axum::serve(listener, router(Arc::new(task()))).await });
        let get = |p: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            (
                crate::http::parse_status(head.as_bytes()).unwrap(),
                body.to_owned(),
            )
        };
        let (status, body) = get("/v4/defender/task").await;
        assert_eq!(status, 200);
        let j: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["Family"], "web");
        let (status, body) = get("/v4/app").await;
        assert_eq!(status, 200);
        let j: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["Name"], "app");
        assert_eq!(get("/v4/nope/task").await.0, 404);
        assert_eq!(get("/v3/app").await.0, 404);
        server.abort();
    }
}
