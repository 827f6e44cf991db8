//! The Peer manager: one `Peer` object per announced host, written by
//! server-side apply when something changed (at most once per
//! `write_interval` per Peer for counters; at once for a new host or a change
//! of spec, or when someone sets the `darter.dev/refresh` annotation to a new
//! value), and deleted when the host leaves or goes silent (scheduler GC).
//! Existing Peers come from a watch-fed store, not a list per round, so a
//! 1,000-node cluster costs the API server writes only.

use crate::scheduler::Scheduler;
use crate::scheduler::resource::{Host, HostKind};
use darter_crds::{Peer, PeerSpec, PeerType};
use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::MANAGER;
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const REFRESH: &str = "darter.dev/refresh";
/// How long a written Peer may be missing from the watch-fed store before it
/// counts as deleted by someone else.
const STORE_LAG: Duration = Duration::from_secs(5);

/// What was last written for one Peer.
struct Written {
    spec: PeerSpec,
    status: serde_json::Value,
    at: Instant,
    refresh: Option<String>,
}

pub struct PeerManager {
    api: Api<Peer>,
    health: Arc<super::health::Health>,
    core: Arc<Scheduler>,
    write_interval: Duration,
    written: HashMap<String, Written>,
}

/// A Kubernetes object name for a host id ("10.0.0.1-node-a", "fd00::1-x").
pub fn peer_name(host_id: &str) -> String {
    let name: String = host_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(253)
        .collect()
}

fn spec_of(h: &Host) -> PeerSpec {
    let i = &h.info;
    PeerSpec {
        host_id: i.id.clone(),
        ip: i.ip.to_string(),
        hostname: i.hostname.clone(),
        cluster: i.cluster.clone(),
        r#type: match i.kind {
            HostKind::Seed => PeerType::Seed,
            HostKind::Normal => PeerType::Normal,
        },
        disable_shared: i.disable_shared,
        policy: i.policy.clone(),
        idc: i.idc.clone(),
        location: i.location.clone(),
    }
}

fn status_of(h: &Host) -> serde_json::Value {
    let s = h.stats.lock().clone();
    json!({
        "diskTotalBytes": s.disk_total_bytes,
        "diskUsedBytes": s.disk_used_bytes,
        "uploadBytes": s.upload_bytes,
        "downloadBytes": s.download_bytes,
        "tasks": s.task_count,
    })
}

impl PeerManager {
    pub fn new(
        client: Client,
        core: Arc<Scheduler>,
        write_interval: Duration,
        health: Arc<super::health::Health>,
    ) -> Self {
        Self {
            api: Api::all(client),
            health,
            core,
            write_interval,
            written: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        let (store, writer) = reflector::store::<Peer>();
        let watch = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
        let feed = reflector(writer, watcher(self.api.clone(), watch))
            .default_backoff()
            .touched_objects();
        tokio::spawn(feed.for_each(|ev| {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "Peer watch failed; retrying");
            }
            futures::future::ready(())
        }));
        if store.wait_until_ready().await.is_err() {
            return;
        }
        loop {
            if let Err(e) = self.sync(&store.state()).await {
                tracing::warn!(error = %e, "Peer sync failed; retrying");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn sync(&mut self, existing: &[Arc<Peer>]) -> Result<(), kube::Error> {
        let refresh: HashMap<String, String> = existing
            .iter()
            .filter_map(|p| {
                p.annotations()
                    .get(REFRESH)
                    .map(|v| (p.name_any(), v.clone()))
            })
            .collect();
        let stored: std::collections::HashSet<String> =
            existing.iter().map(|p| p.name_any()).collect();
        let hosts = self.core.hosts();
        let mut live = std::collections::HashSet::new();
        for h in &hosts {
            let name = peer_name(&h.info.id);
            live.insert(name.clone());
            let spec = spec_of(h);
            let mut status = status_of(h);
            let asked = refresh.get(&name).cloned();
            let (spec_changed, status_due) = match self.written.get(&name) {
                None => (true, true),
                // Deleted by someone else (the store has caught up): write again.
                Some(w) if !stored.contains(name.as_str()) && w.at.elapsed() > STORE_LAG => {
                    (true, true)
                }
                Some(w) => (
                    w.spec != spec || w.refresh != asked,
                    w.status != status && w.at.elapsed() >= self.write_interval,
                ),
            };
            if !spec_changed && !status_due {
                continue;
            }
            let seen = SystemTime::now() - h.announced_at.lock().elapsed();
            status["lastSeen"] = json!(humantime::format_rfc3339_seconds(seen).to_string());
            let pp = PatchParams::apply(MANAGER).force();
            // Counters alone change the status only: one write, not two.
            if spec_changed {
                let mut peer = Peer::new(&name, spec.clone());
                peer.labels_mut()
                    .insert(MANAGED_BY.to_string(), MANAGER.to_string());
                self.api.patch(&name, &pp, &Patch::Apply(&peer)).await?;
            }
            let body = json!({
                "apiVersion": "darter.dev/v1alpha1",
                "kind": "Peer",
                "status": status,
            });
            self.api
                .patch_status(&name, &pp, &Patch::Apply(&body))
                .await?;
            self.health.metrics.peer_writes.inc();
            status.as_object_mut().map(|o| o.remove("lastSeen"));
            self.written.insert(
                name,
                Written {
                    spec,
                    status,
                    at: Instant::now(),
                    refresh: asked,
                },
            );
        }
        for p in existing {
            let name = p.name_any();
            if !live.contains(&name) {
                tracing::info!(peer = %name, "host gone; deleting its Peer");
                match self.api.delete(&name, &DeleteParams::default()).await {
                    // Already gone; the store has not seen it yet.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    r => {
                        r?;
                    }
                }
                self.health.metrics.peer_deletes.inc();
                self.written.remove(&name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::peer_name;

    #[test]
    fn host_ids_become_object_names() {
        assert_eq!(peer_name("10.0.0.1-Node_A"), "10.0.0.1-node-a");
        assert_eq!(peer_name("fd00::1-x"), "fd00--1-x");
    }
}
