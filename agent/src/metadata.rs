//! What the Defender says about where it runs. Outside ECS (local runs) it falls back to the
//! hostname and the `FARGATE_TASK` variable the protected task definition sets.

use defender_proto::v1::TaskMetadata;

/// Metadata from the local environment.
pub fn local() -> TaskMetadata {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    TaskMetadata {
        hostname,
        family: std::env::var("FARGATE_TASK").unwrap_or_default(),
        ..Default::default()
    }
}
