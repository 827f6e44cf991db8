//! The scheduler: keeps, per task, a DAG of peers and answers each peer with
//! candidate parents, "back to source" or "empty task". Its state is soft
//! (rebuilt from agent announcements) and it runs without Kubernetes.

pub mod clusters;
pub mod dag;
pub mod evaluator;
pub mod policies;
pub mod resource;
pub mod scopes;
pub mod service;

use parking_lot::{Mutex, RwLock};
use rand::seq::IteratorRandom;
use resource::{Host, HostInfo, HostKind, Peer, PeerEvent, PeerState, Task};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// Parents handed to a peer at once.
    pub candidate_parent_limit: usize,
    /// Peers sampled from the task before filtering.
    pub filter_parent_limit: usize,
    /// Rounds without any parent before a peer is sent back to source.
    pub retry_back_to_source_limit: u32,
    /// Peers of one task allowed to fetch from the origin at once.
    pub max_back_to_source_peers: usize,
    /// A host not heard from for this long is dropped with its peers.
    #[serde(with = "humantime_serde")]
    pub host_ttl: Duration,
    /// A peer with no event for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub peer_ttl: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            candidate_parent_limit: 4,
            filter_parent_limit: 15,
            retry_back_to_source_limit: 4,
            max_back_to_source_peers: 200,
            host_ttl: Duration::from_secs(600),
            peer_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("host {0} has not announced itself")]
    UnknownHost(String),
    #[error("task {0} is not known")]
    UnknownTask(String),
    #[error("peer {peer} is not part of task {task}")]
    UnknownPeer { task: String, peer: String },
}

/// A parent offered to a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub peer_id: String,
    pub host_id: String,
    pub ip: IpAddr,
    pub upload_port: u16,
    pub data_port: u16,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Download from these parents, best first.
    Parents(Vec<Candidate>),
    /// Download from the origin.
    BackToSource(String),
    /// The task has no content: nothing to fetch.
    Empty,
    /// No parent right now; ask again shortly.
    Wait,
}

#[derive(Default)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    hosts: RwLock<HashMap<String, Arc<Host>>>,
    tasks: RwLock<HashMap<String, Arc<Mutex<Task>>>>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            cfg,
            ..Default::default()
        }
    }

    /// Adds or refreshes a host (agents re-announce on an interval).
    pub fn announce_host(&self, info: HostInfo) {
        let mut hosts = self.hosts.write();
        match hosts.get(&info.id) {
            Some(h) if h.info == info => *h.announced_at.lock() = Instant::now(),
            _ => {
                // Settings changed (or new host): keep live counters.
                let h = Host::new(info.clone());
                if let Some(old) = hosts.get(&info.id) {
                    h.uploads
                        .store(old.uploads.load(Ordering::Relaxed), Ordering::Relaxed);
                    *h.stats.lock() = old.stats.lock().clone();
                }
                hosts.insert(info.id.clone(), Arc::new(h));
            }
        }
    }

    /// Removes a host and every peer on it.
    pub fn leave_host(&self, host_id: &str) {
        let tasks: Vec<_> = self.tasks.read().values().cloned().collect();
        for t in tasks {
            let mut t = t.lock();
            let ids: Vec<String> = t
                .peers
                .values()
                .filter(|p| p.host_id == host_id)
                .map(|p| p.id.clone())
                .collect();
            for id in ids {
                self.drop_peer(&mut t, &id);
            }
        }
        self.hosts.write().remove(host_id);
    }

    /// Records the counters a host announced.
    pub fn set_host_stats(&self, host_id: &str, stats: resource::HostStats) {
        if let Some(h) = self.host(host_id) {
            *h.stats.lock() = stats;
        }
    }

    /// Every known host.
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        self.hosts.read().values().cloned().collect()
    }

    pub fn host(&self, host_id: &str) -> Option<Arc<Host>> {
        self.hosts.read().get(host_id).cloned()
    }

    pub fn host_count(&self) -> usize {
        self.hosts.read().len()
    }

    /// The seed host that should fetch `task_id` first: rendezvous hashing over
    /// seed hosts, so each task maps to one seed and few move when seeds change.
    pub fn seed_host_for(&self, task_id: &str) -> Option<String> {
        self.hosts
            .read()
            .values()
            .filter(|h| h.info.kind == HostKind::Seed)
            .max_by_key(|h| rendezvous(task_id, &h.info.id))
            .map(|h| h.info.id.clone())
    }

    fn task(&self, task_id: &str) -> Result<Arc<Mutex<Task>>, SchedulerError> {
        self.tasks
            .read()
            .get(task_id)
            .cloned()
            .ok_or_else(|| SchedulerError::UnknownTask(task_id.to_string()))
    }

    /// Registers a peer of a task (idempotent) and schedules it.
    pub fn register_peer(
        &self,
        task_id: &str,
        peer_id: &str,
        host_id: &str,
        content_length: Option<u64>,
        piece_count: Option<u32>,
    ) -> Result<Decision, SchedulerError> {
        if self.host(host_id).is_none() {
            return Err(SchedulerError::UnknownHost(host_id.to_string()));
        }
        let task = self
            .tasks
            .write()
            .entry(task_id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Task::new(task_id.to_string()))))
            .clone();
        let mut t = task.lock();
        if content_length.is_some() {
            t.content_length = content_length;
        }
        if piece_count.is_some() {
            t.piece_count = piece_count;
        }
        if !t.peers.contains_key(peer_id) {
            t.peers.insert(
                peer_id.to_string(),
                Peer::new(peer_id.to_string(), host_id.to_string()),
            );
            t.dag.add_vertex(peer_id);
        }
        t.updated_at = Instant::now();
        Ok(self.schedule_locked(&mut t, peer_id))
    }

    /// Schedules again, e.g. after a parent failed or was slow (`block` it).
    pub fn reschedule(
        &self,
        task_id: &str,
        peer_id: &str,
        block: &[String],
    ) -> Result<Decision, SchedulerError> {
        let task = self.task(task_id)?;
        let mut t = task.lock();
        let peer = t
            .peers
            .get_mut(peer_id)
            .ok_or_else(|| SchedulerError::UnknownPeer {
                task: task_id.to_string(),
                peer: peer_id.to_string(),
            })?;
        peer.blocked.extend(block.iter().cloned());
        Ok(self.schedule_locked(&mut t, peer_id))
    }

    /// Parents in addition to the ones a downloading peer has (it asked for
    /// more, not because one failed). Existing edges stay; no round is
    /// counted, so this never sends a peer back to source.
    pub fn more_parents(
        &self,
        task_id: &str,
        peer_id: &str,
    ) -> Result<Vec<Candidate>, SchedulerError> {
        self.with_peer(task_id, peer_id, |s, t| {
            s.prune_edges_to_peers_ahead(t, peer_id);
            let have: std::collections::HashSet<String> =
                t.dag.parents_of(peer_id).cloned().collect();
            let fresh: Vec<Candidate> = s
                .find_parents(t, peer_id)
                .into_iter()
                .filter(|c| !have.contains(&c.peer_id))
                .collect();
            for c in &fresh {
                // find_parents checked can_add_edge under this same lock.
                if t.dag.add_edge(&c.peer_id, peer_id).is_ok()
                    && let Some(h) = s.host(&c.host_id)
                {
                    h.uploads.fetch_add(1, Ordering::Relaxed);
                }
            }
            fresh
        })
    }

    fn schedule_locked(&self, t: &mut Task, peer_id: &str) -> Decision {
        if t.content_length == Some(0) {
            return Decision::Empty;
        }
        let Some(peer) = t.peers.get(peer_id) else {
            return Decision::Wait;
        };
        if matches!(peer.state, PeerState::BackToSource | PeerState::Succeeded) {
            // Already decided (duplicate register): say the same again.
            return match peer.state {
                PeerState::BackToSource => Decision::BackToSource("already back to source".into()),
                _ => Decision::Parents(Vec::new()),
            };
        }
        self.prune_edges_to_peers_ahead(t, peer_id);
        let candidates = self.find_parents(t, peer_id);
        if !candidates.is_empty() {
            self.unlink_parents(t, peer_id);
            for c in &candidates {
                // find_parents checked can_add_edge under this same lock.
                if t.dag.add_edge(&c.peer_id, peer_id).is_ok()
                    && let Some(h) = self.host(&c.host_id)
                {
                    h.uploads.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(p) = t.peers.get_mut(peer_id) {
                p.empty_rounds = 0;
                p.fire(PeerEvent::Download);
            }
            return Decision::Parents(candidates);
        }
        // Holders that could ever serve this peer: leeches, its own host and
        // other clusters do not count.
        let child_host = t.peers.get(peer_id).map(|p| p.host_id.clone());
        let holders = {
            let hosts = self.hosts.read();
            let cluster = child_host
                .as_ref()
                .and_then(|h| hosts.get(h))
                .map(|h| h.info.cluster.clone());
            t.peers.values().any(|p| {
                p.id != peer_id
                    && p.state.can_upload()
                    && Some(&p.host_id) != child_host.as_ref()
                    && hosts.get(&p.host_id).is_some_and(|h| {
                        !h.info.disable_shared && Some(&h.info.cluster) == cluster.as_ref()
                    })
            })
        };
        let rounds = t.peers.get_mut(peer_id).map_or(0, |p| {
            p.empty_rounds += 1;
            p.empty_rounds
        });
        let reason = if !holders {
            Some("no peer holds or is fetching the task".to_string())
        } else if rounds > self.cfg.retry_back_to_source_limit {
            Some(format!("no usable parent after {} rounds", rounds - 1))
        } else {
            None
        };
        match reason {
            Some(r) if t.back_to_source_peers.len() < self.cfg.max_back_to_source_peers => {
                t.back_to_source_peers.insert(peer_id.to_string());
                if let Some(p) = t.peers.get_mut(peer_id) {
                    p.fire(PeerEvent::DownloadBackToSource);
                }
                Decision::BackToSource(r)
            }
            _ => Decision::Wait,
        }
    }

    /// Sample, filter, score, keep the best few.
    fn find_parents(&self, t: &Task, child_id: &str) -> Vec<Candidate> {
        let Some(child) = t.peers.get(child_id) else {
            return Vec::new();
        };
        let hosts = self.hosts.read();
        let Some(child_host) = hosts.get(&child.host_id) else {
            return Vec::new();
        };
        // The child's Cluster may set its own limits.
        let (candidates, sample_size) = child_host.info.parent_limits.map_or(
            (
                self.cfg.candidate_parent_limit,
                self.cfg.filter_parent_limit,
            ),
            |l| (l.candidates, l.sample),
        );
        let sample = t
            .peers
            .values()
            .filter(|p| p.id != child_id)
            .choose_multiple(&mut rand::rng(), sample_size);
        let mut out: Vec<Candidate> = sample
            .into_iter()
            .filter_map(|p| {
                let host = hosts.get(&p.host_id)?;
                let usable = !child.blocked.contains(&p.id)
                    && p.host_id != child.host_id
                    && host.info.cluster == child_host.info.cluster
                    && !host.info.disable_shared
                    && p.state.can_upload()
                    // A running normal peer with no parent receives nothing to pass on.
                    && (p.state != PeerState::Running || t.dag.parents_of(&p.id).next().is_some())
                    && !p.costs.last_is_outlier()
                    && host.free_upload_slots() > 0
                    && t.dag.can_add_edge(&p.id, child_id);
                usable.then(|| Candidate {
                    peer_id: p.id.clone(),
                    host_id: p.host_id.clone(),
                    ip: host.info.ip,
                    upload_port: host.info.upload_port,
                    data_port: host.info.data_port,
                    score: evaluator::score(p, host, child_host, t.piece_count),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.peer_id.cmp(&b.peer_id))
        });
        out.truncate(candidates);
        out
    }

    /// Drops the edges from `peer` to children that now hold more pieces than
    /// it does. Pieces flow from peers ahead to peers behind, so such an edge
    /// carries little; kept, it would stop `peer` from ever being given those
    /// peers as parents (a peer high in the DAG would be left with the origin
    /// fetcher alone). The graph stays acyclic: only checked edges are added.
    fn prune_edges_to_peers_ahead(&self, t: &mut Task, peer: &str) {
        let mine = t.peers.get(peer).map_or(0, |p| p.finished_pieces.len());
        let ahead: Vec<String> = t
            .dag
            .children_of(peer)
            .filter(|c| {
                t.peers
                    .get(c.as_str())
                    .is_some_and(|p| p.finished_pieces.len() > mine)
            })
            .cloned()
            .collect();
        for c in ahead {
            if t.dag.remove_edge(peer, &c) {
                self.release_slot(t, peer);
            }
        }
    }

    /// Removes the edges into `child`, freeing the parents' upload slots.
    fn unlink_parents(&self, t: &mut Task, child: &str) {
        let parents: Vec<String> = t.dag.parents_of(child).cloned().collect();
        for p in &parents {
            self.release_slot(t, p);
        }
        t.dag.clear_parents(child);
    }

    fn release_slot(&self, t: &Task, parent_peer: &str) {
        if let Some(host) = t.peers.get(parent_peer).and_then(|p| self.host(&p.host_id)) {
            let _ = host
                .uploads
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(1))
                });
        }
    }

    fn drop_peer(&self, t: &mut Task, peer_id: &str) {
        self.unlink_parents(t, peer_id);
        let children: Vec<String> = t.dag.children_of(peer_id).cloned().collect();
        for _ in &children {
            self.release_slot(t, peer_id);
        }
        t.remove_peer(peer_id);
    }

    fn with_peer<R>(
        &self,
        task_id: &str,
        peer_id: &str,
        f: impl FnOnce(&Self, &mut Task) -> R,
    ) -> Result<R, SchedulerError> {
        let task = self.task(task_id)?;
        let mut t = task.lock();
        if !t.peers.contains_key(peer_id) {
            return Err(SchedulerError::UnknownPeer {
                task: task_id.to_string(),
                peer: peer_id.to_string(),
            });
        }
        t.updated_at = Instant::now();
        Ok(f(self, &mut t))
    }

    /// A piece landed at `peer`, from `parent` (None: the origin) in `cost`.
    pub fn piece_finished(
        &self,
        task_id: &str,
        peer_id: &str,
        piece: u32,
        parent: Option<&str>,
        cost: Duration,
    ) -> Result<(), SchedulerError> {
        self.with_peer(task_id, peer_id, |s, t| {
            if let Some(parent_host) = parent
                .and_then(|pp| t.peers.get(pp))
                .and_then(|pp| s.host(&pp.host_id))
            {
                parent_host.upload_ok.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(p) = t.peers.get_mut(peer_id) {
                p.finished_pieces.insert(piece);
                p.costs.push(cost);
                p.updated_at = Instant::now();
            }
        })
    }

    /// A piece from `parent` failed at `peer`: that parent is blocked for it.
    pub fn piece_failed(
        &self,
        task_id: &str,
        peer_id: &str,
        parent: &str,
    ) -> Result<(), SchedulerError> {
        self.with_peer(task_id, peer_id, |s, t| {
            if let Some(h) = t.peers.get(parent).and_then(|pp| s.host(&pp.host_id)) {
                h.upload_failed.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(p) = t.peers.get_mut(peer_id) {
                p.blocked.insert(parent.to_string());
            }
        })
    }

    pub fn peer_succeeded(
        &self,
        task_id: &str,
        peer_id: &str,
        content_length: u64,
        piece_count: u32,
    ) -> Result<(), SchedulerError> {
        self.with_peer(task_id, peer_id, |s, t| {
            t.content_length = Some(content_length);
            t.piece_count = Some(piece_count);
            s.unlink_parents(t, peer_id);
            if let Some(p) = t.peers.get_mut(peer_id) {
                p.finished_pieces.extend(0..piece_count);
                p.fire(PeerEvent::Succeed);
            }
            t.back_to_source_peers.remove(peer_id);
        })
    }

    pub fn peer_failed(&self, task_id: &str, peer_id: &str) -> Result<(), SchedulerError> {
        self.with_peer(task_id, peer_id, |s, t| {
            s.unlink_parents(t, peer_id);
            t.back_to_source_peers.remove(peer_id);
            if let Some(p) = t.peers.get_mut(peer_id) {
                p.fire(PeerEvent::Fail);
            }
        })
    }

    pub fn peer_left(&self, task_id: &str, peer_id: &str) -> Result<(), SchedulerError> {
        self.with_peer(task_id, peer_id, |s, t| s.drop_peer(t, peer_id))
    }

    /// Peers of a task and their states (for status and tests).
    pub fn task_peers(&self, task_id: &str) -> Result<Vec<(String, PeerState)>, SchedulerError> {
        let task = self.task(task_id)?;
        let t = task.lock();
        Ok(t.peers.values().map(|p| (p.id.clone(), p.state)).collect())
    }

    /// The task's length and its peers: (peer, host, succeeded, finished pieces).
    #[allow(clippy::type_complexity)]
    pub fn task_holders(
        &self,
        task_id: &str,
    ) -> Result<(Option<u64>, Vec<(String, String, bool, u32)>), SchedulerError> {
        let task = self.task(task_id)?;
        let t = task.lock();
        let holders = t
            .peers
            .values()
            .filter(|p| p.state != PeerState::Left)
            .map(|p| {
                (
                    p.id.clone(),
                    p.host_id.clone(),
                    p.state == PeerState::Succeeded,
                    p.finished_pieces.len() as u32,
                )
            })
            .collect();
        Ok((t.content_length, holders))
    }

    /// Drops silent hosts, stale peers and tasks left with no peers.
    pub fn gc(&self) {
        let now = Instant::now();
        let silent: Vec<String> = self
            .hosts
            .read()
            .values()
            .filter(|h| now.duration_since(*h.announced_at.lock()) > self.cfg.host_ttl)
            .map(|h| h.info.id.clone())
            .collect();
        for h in silent {
            tracing::info!(host = %h, "host silent past its TTL; dropping it");
            self.leave_host(&h);
        }
        let tasks: Vec<_> = self.tasks.read().values().cloned().collect();
        for task in tasks {
            let mut t = task.lock();
            let stale: Vec<String> = t
                .peers
                .values()
                .filter(|p| {
                    p.state == PeerState::Left
                        || now.duration_since(p.updated_at) > self.cfg.peer_ttl
                })
                .map(|p| p.id.clone())
                .collect();
            for id in stale {
                self.drop_peer(&mut t, &id);
            }
        }
        self.tasks.write().retain(|_, t| !t.lock().peers.is_empty());
    }

    pub fn task_count(&self) -> usize {
        self.tasks.read().len()
    }

    /// Tasks with at least one peer in each cluster (live peers, as the
    /// scheduler knows them).
    pub fn tasks_by_cluster(&self) -> std::collections::HashMap<String, u32> {
        let cluster_of: std::collections::HashMap<String, String> = self
            .hosts
            .read()
            .values()
            .map(|h| (h.info.id.clone(), h.info.cluster.clone()))
            .collect();
        let mut out = std::collections::HashMap::new();
        for t in self.tasks.read().values() {
            let t = t.lock();
            let clusters: std::collections::HashSet<&String> = t
                .peers
                .values()
                .filter_map(|p| cluster_of.get(&p.host_id))
                .collect();
            for c in clusters {
                *out.entry(c.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Whether every task's graph is acyclic (for tests and debug checks).
    pub fn all_acyclic(&self) -> bool {
        self.tasks
            .read()
            .values()
            .all(|t| t.lock().dag.is_acyclic())
    }
}

/// Rendezvous (highest random weight) hash of a task on a host.
/// SHA-256 based, so every scheduler replica and restart agrees.
fn rendezvous(task_id: &str, host_id: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::new()
        .chain_update(task_id)
        .chain_update([0u8])
        .chain_update(host_id)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests;
