//! Defenders, their Connect sessions and heartbeats. Status is derived from these rows (not
//! from one process's memory), so Console replicas sharing the database agree.

use sqlx::FromRow;

use super::{Store, StoreError, now_ms};

/// What enrollment records about a new Defender.
pub struct NewDefender<'a> {
    pub id: &'a str,
    pub metadata: &'a defender_proto::v1::TaskMetadata,
    pub agent_version: &'a str,
    pub mode: &'a str,
    pub enrollment_token: i64,
    pub cert_not_after_ms: i64,
}

/// Health figures a Defender reports in each heartbeat.
#[derive(Clone, Copy, Debug, Default)]
pub struct Health {
    pub queue_depth: u64,
    pub spool_bytes: u64,
    pub dropped_events: u64,
    pub rss_bytes: u64,
    pub cpu_centipercent: u32,
}

/// One Defender with its newest session, as the list, the detail page and the API need it.
#[derive(Clone, Debug, Default, FromRow)]
pub struct DefenderRecord {
    pub id: String,
    pub hostname: String,
    pub cluster: String,
    pub task_arn: String,
    pub family: String,
    pub revision: String,
    pub availability_zone: String,
    pub launch_type: String,
    pub containers_json: String,
    pub agent_version: String,
    pub mode: String,
    pub enrolled_at: i64,
    pub decommissioned_at: Option<i64>,
    pub queue_depth: i64,
    pub spool_bytes: i64,
    pub dropped_events: i64,
    pub rss_bytes: i64,
    pub cpu_centipercent: i64,
    pub session_started_at: Option<i64>,
    pub session_last_heartbeat: Option<i64>,
    pub session_ended_at: Option<i64>,
    pub session_interval_ms: Option<i64>,
    pub console_instance: Option<String>,
    /// Monotonic milliseconds the session's stream had been open at its last heartbeat (NULL
    /// for sessions from before migration 0005).
    pub session_alive_ms: Option<i64>,
    /// `exact`, `polling`, or empty (an older Defender that does not say).
    pub capture_mode: String,
    pub capture_detail: String,
    /// A capture source that is failing (the Defender is partly blind), empty when none.
    pub capture_error: String,
    pub capture_poll_interval_ms: i64,
    pub capture_intercepted: i64,
    pub capture_timed_out: i64,
    /// Processes the Defender reaped that no capture source reported.
    pub capture_missed: i64,
}

/// Whether a Defender may hold a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Enrolled and not decommissioned.
    Active,
    Decommissioned,
    /// No such Defender (never enrolled here, or purged by retention).
    Unknown,
}

/// Identifies the session row a stream writes its heartbeats to.
#[derive(Clone, Copy, Debug)]
pub struct SessionRef(pub i64);

pub(super) const SELECT_DEFENDER: &str = "SELECT d.id, d.hostname, d.cluster, d.task_arn, d.family, d.revision, \
     d.availability_zone, d.launch_type, d.containers_json, d.agent_version, d.mode, d.enrolled_at, \
     d.decommissioned_at, d.queue_depth, d.spool_bytes, d.dropped_events, d.rss_bytes, d.cpu_centipercent, \
     s.started_at AS session_started_at, s.last_heartbeat AS session_last_heartbeat, \
     s.ended_at AS session_ended_at, s.heartbeat_interval_ms AS session_interval_ms, \
     s.console_instance AS console_instance, s.alive_ms AS session_alive_ms, \
     d.capture_mode, d.capture_detail, d.capture_error, d.capture_poll_interval_ms, \
     d.capture_intercepted, d.capture_timed_out, d.capture_missed \
     FROM defenders d LEFT JOIN sessions s ON s.id = \
       (SELECT s2.id FROM sessions s2 WHERE s2.defender_id = d.id ORDER BY s2.started_at DESC, s2.id DESC LIMIT 1)";

impl Store {
    /// Records a newly enrolled Defender.
    pub async fn insert_defender(&self, d: &NewDefender<'_>) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let m = &bounded(d.metadata);
            let mut agent_version = d.agent_version.to_owned();
            crate::limits::bound_version(&mut agent_version);
            sqlx::query(
            "INSERT INTO defenders (id, hostname, cluster, task_arn, family, revision, availability_zone, \
             launch_type, containers_json, agent_version, mode, enrolled_at, enrollment_token, cert_not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(d.id)
        .bind(&m.hostname)
        .bind(&m.cluster)
        .bind(&m.task_arn)
        .bind(&m.family)
        .bind(&m.revision)
        .bind(&m.availability_zone)
        .bind(&m.launch_type)
        .bind(containers_json(m))
        .bind(&agent_version)
        .bind(d.mode)
        .bind(now_ms())
        .bind(d.enrollment_token)
        .bind(d.cert_not_after_ms)
        .execute(pool)
        .await?;
            Ok(())
        })
    }

    /// Whether the Defender exists and may connect (not decommissioned).
    pub async fn defender_may_connect(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.defender_standing(id).await? == Standing::Active)
    }

    /// Whether the Defender is unknown, decommissioned, or may connect.
    pub async fn defender_standing(&self, id: &str) -> Result<Standing, StoreError> {
        with_pool!(&self.pool, |pool| {
            let row: Option<Option<i64>> =
                sqlx::query_scalar("SELECT decommissioned_at FROM defenders WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Ok(match row {
                None => Standing::Unknown,
                Some(Some(_)) => Standing::Decommissioned,
                Some(None) => Standing::Active,
            })
        })
    }

    /// Refuses the Defender from now on (its certificate stays valid but is no longer
    /// accepted, and its keys can never enroll again) and ends its open sessions, so a stream
    /// held by any Console replica finds out at its next heartbeat. Returns false when it was
    /// already decommissioned or is unknown.
    pub async fn decommission_defender(&self, id: &str) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let now = now_ms();
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
            "UPDATE defenders SET decommissioned_at = $1 WHERE id = $2 AND decommissioned_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
            sqlx::query(
                "UPDATE sessions SET ended_at = $1 WHERE defender_id = $2 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Opens a session for a new Connect stream, refreshing the metadata from its Hello.
    pub async fn start_session(
        &self,
        id: &str,
        hello: &defender_proto::v1::Hello,
        mode: &str,
        console_instance: &str,
        interval_ms: i64,
    ) -> Result<SessionRef, StoreError> {
        with_pool!(&self.pool, |pool| {
            let now = now_ms();
            let mut tx = pool.begin().await?;
            let mut agent_version = hello.agent_version.clone();
            crate::limits::bound_version(&mut agent_version);
            if let Some(m) = hello.metadata.as_ref().map(bounded) {
                let m = &m;
                sqlx::query(
                "UPDATE defenders SET hostname = $1, cluster = $2, task_arn = $3, family = $4, revision = $5, \
                 availability_zone = $6, launch_type = $7, containers_json = $8, agent_version = $9, mode = $10 \
                 WHERE id = $11",
            )
            .bind(&m.hostname)
            .bind(&m.cluster)
            .bind(&m.task_arn)
            .bind(&m.family)
            .bind(&m.revision)
            .bind(&m.availability_zone)
            .bind(&m.launch_type)
            .bind(containers_json(m))
            .bind(&agent_version)
            .bind(mode)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            }
            // A Defender holds one stream: an older open session of it has ended by now.
            sqlx::query(
                "UPDATE sessions SET ended_at = $1 WHERE defender_id = $2 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let session_id: i64 = sqlx::query_scalar(
            "INSERT INTO sessions (defender_id, console_instance, started_at, last_heartbeat, heartbeat_interval_ms) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(id)
        .bind(console_instance)
        .bind(now)
        .bind(now)
        .bind(interval_ms)
        .fetch_one(&mut *tx)
        .await?;
            tx.commit().await?;
            Ok(SessionRef(session_id))
        })
    }

    /// Records a heartbeat: the session is alive, and the Defender's health figures. Returns
    /// false when the session was ended by someone else (a newer stream of the same Defender,
    /// possibly on another replica, or a decommission): the stream must then close.
    pub async fn heartbeat(
        &self,
        id: &str,
        session: SessionRef,
        health: &Health,
    ) -> Result<bool, StoreError> {
        self.heartbeat_alive(id, session, health, None).await
    }

    /// [`Store::heartbeat`] with how long the stream has been open, in monotonic milliseconds
    /// (`Instant` since the stream started): "Connected for" is derived from it, so a step of
    /// the wall clock does not change it. Returns false when the session was ended by someone
    /// else (a newer stream of this Defender, perhaps on another replica, or a decommission).
    pub async fn heartbeat_alive(
        &self,
        id: &str,
        session: SessionRef,
        health: &Health,
        alive_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let beat = super::heartbeats::Beat {
            defender_id: id.to_owned(),
            session,
            health: *health,
            alive_ms,
        };
        Ok(self.record_heartbeats(&[beat]).await?[0])
    }

    /// Marks a session's stream as closed.
    pub async fn end_session(&self, session: SessionRef) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            sqlx::query("UPDATE sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL")
                .bind(now_ms())
                .bind(session.0)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Every Defender seen since `seen_since_ms` (older disconnected ones leave the list), newest first.
    pub async fn list_defenders(
        &self,
        seen_since_ms: i64,
    ) -> Result<Vec<DefenderRecord>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let sql = format!(
                "{SELECT_DEFENDER} WHERE d.decommissioned_at IS NULL \
             AND COALESCE(s.ended_at, s.last_heartbeat, d.enrolled_at) >= $1 \
             ORDER BY COALESCE(s.started_at, d.enrolled_at) DESC, d.id"
            );
            Ok(
                sqlx::query_as::<_, DefenderRecord>(sqlx::AssertSqlSafe(sql))
                    .bind(seen_since_ms)
                    .fetch_all(pool)
                    .await?,
            )
        })
    }

    /// One Defender by id, whatever its age.
    pub async fn get_defender(&self, id: &str) -> Result<Option<DefenderRecord>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let sql = format!("{SELECT_DEFENDER} WHERE d.id = $1");
            Ok(
                sqlx::query_as::<_, DefenderRecord>(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }
}

/// A copy of `m` with every field within [`crate::limits`].
fn bounded(m: &defender_proto::v1::TaskMetadata) -> defender_proto::v1::TaskMetadata {
    let mut m = m.clone();
    crate::limits::bound_metadata(&mut m);
    m
}

fn containers_json(m: &defender_proto::v1::TaskMetadata) -> String {
    let list: Vec<serde_json::Value> = m
        .containers
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "image": c.image, "image_id": c.image_id, "docker_id": c.docker_id}))
        .collect();
    serde_json::Value::Array(list).to_string()
}
