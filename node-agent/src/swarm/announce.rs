//! Announcing this host to the scheduler: on start, then on the interval the
//! scheduler asks for, and every second while it cannot be reached (so agents
//! re-register quickly after a scheduler restart).

use super::Swarm;
use crate::config::HostConfig;
use crate::peer::upload::Uploads;
use crate::storage::Storage;
use darter_proto::scheduler::v1 as pb;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Where the announcer stands, for status queries.
#[derive(Debug, Clone, Default)]
pub struct AnnounceState {
    /// Cluster named by the last successful announce.
    pub cluster: Option<String>,
    pub announces: u64,
    pub last_error: Option<String>,
}

pub struct Announcer {
    pub swarm: Arc<Swarm>,
    pub storage: Arc<Storage>,
    pub uploads: Arc<Uploads>,
    pub host: HostConfig,
    pub upload_port: u16,
    pub data_port: u16,
    /// Children the scheduler may assign (a PeerPolicy can change it).
    pub upload_slots: AtomicU32,
    /// Until the scheduler names its own.
    pub interval: Duration,
    /// Bytes downloaded by this agent (origin and peers).
    pub downloaded: Arc<AtomicU64>,
    pub state: Arc<Mutex<AnnounceState>>,
}

impl Announcer {
    fn host(&self) -> pb::Host {
        let usage = self.storage.usage().ok();
        let tasks = self.storage.metadata.tasks().map_or(0, |t| t.len());
        let id = &self.swarm.identity;
        pb::Host {
            id: id.host_id.clone(),
            ip: id.ip.to_string(),
            hostname: id.hostname.clone(),
            upload_port: u32::from(self.upload_port),
            data_port: u32::from(self.data_port),
            r#type: if self.host.seed {
                pb::HostType::Seed
            } else {
                pb::HostType::Normal
            } as i32,
            idc: self.host.idc.clone().unwrap_or_default(),
            location: self.host.location.clone().unwrap_or_default(),
            upload_slots: self.upload_slots(),
            disable_shared: !self.uploads.shared(),
            disk_total_bytes: usage.as_ref().map_or(0, |u| u.total),
            disk_used_bytes: usage.as_ref().map_or(0, |u| u.used),
            upload_bytes_total: self.uploads.uploaded(),
            download_bytes_total: self.downloaded.load(Ordering::Relaxed),
            task_count: tasks as u32,
        }
    }

    pub fn upload_slots(&self) -> u32 {
        self.upload_slots.load(Ordering::Relaxed)
    }

    pub fn set_upload_slots(&self, slots: u32) {
        self.upload_slots.store(slots, Ordering::Relaxed);
    }

    /// One announce now (also used when settings change, e.g. leech mode).
    pub async fn announce_once(&self) -> Result<Duration, tonic::Status> {
        let resp = self
            .swarm
            .scheduler()
            .announce_host(pb::AnnounceHostRequest {
                host: Some(self.host()),
            })
            .await?
            .into_inner();
        let mut st = self.state.lock();
        if st.cluster.as_deref() != Some(resp.cluster.as_str()) {
            tracing::info!(cluster = %resp.cluster, host = %self.swarm.identity.host_id, "announced to the scheduler");
        }
        st.cluster = Some(resp.cluster);
        st.announces += 1;
        st.last_error = None;
        Ok(match resp.announce_interval_seconds {
            0 => self.interval,
            s => Duration::from_secs(u64::from(s)),
        })
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            let wait = match self.announce_once().await {
                Ok(next) => next,
                Err(s) => {
                    let mut st = self.state.lock();
                    if st.last_error.is_none() {
                        tracing::warn!(error = %s.message(), "cannot announce to the scheduler; retrying every second");
                    }
                    st.last_error = Some(s.message().to_string());
                    Duration::from_secs(1)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Tells the scheduler this host is going away (best effort).
    pub async fn leave(&self) {
        let req = pb::LeaveHostRequest {
            host_id: self.swarm.identity.host_id.clone(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.swarm.scheduler().leave_host(req),
        )
        .await;
    }
}
