//! Hosts, tasks and peers as the scheduler sees them, with state machines that
//! take duplicate and out-of-order events without breaking: an event that does
//! not apply to the current state is ignored, never an error.

use super::dag::Dag;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    Normal,
    Seed,
}

/// What an agent announces about its host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// `"{ip}-{hostname}"`.
    pub id: String,
    pub ip: IpAddr,
    pub hostname: String,
    /// Port of the agent's piece upload server.
    pub upload_port: u16,
    /// Port of the TCP piece data path.
    pub data_port: u16,
    pub kind: HostKind,
    pub idc: Option<String>,
    /// `|`-separated, most general first (e.g. `cn|hz|a`).
    pub location: Option<String>,
    /// Concurrent uploads it accepts.
    pub upload_slots: u32,
    /// Leech: downloads but never uploads.
    pub disable_shared: bool,
    /// The Cluster it was matched to; parents come from the same cluster.
    pub cluster: String,
    /// The PeerPolicy governing it, if any.
    pub policy: Option<String>,
    /// Parent selection limits of its Cluster; `None`: the scheduler's own.
    pub parent_limits: Option<ParentLimits>,
    /// Labels of its Kubernetes Node (empty outside Kubernetes), matched by
    /// seed peer and PeerPolicy selectors.
    pub node_labels: std::collections::BTreeMap<String, String>,
}

/// A Cluster's parent selection knobs, carried by each host placed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentLimits {
    /// Parents handed to a peer at once.
    pub candidates: usize,
    /// Peers sampled from a task before filtering.
    pub sample: usize,
}

#[cfg(test)]
impl HostInfo {
    /// A normal host for tests: id `"{ip}-{hostname}"`, no IDC, location or
    /// cluster yet.
    pub fn test(ip: &str, hostname: &str) -> Self {
        Self {
            id: format!("{ip}-{hostname}"),
            ip: ip.parse().expect("test IP"),
            hostname: hostname.into(),
            upload_port: 1,
            data_port: 2,
            kind: HostKind::Normal,
            idc: None,
            location: None,
            upload_slots: 1,
            disable_shared: false,
            cluster: String::new(),
            policy: None,
            parent_limits: None,
            node_labels: Default::default(),
        }
    }
}

/// Counters a host reports with each announce (shown on its Peer object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStats {
    pub disk_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub upload_bytes: u64,
    pub download_bytes: u64,
    pub task_count: u32,
}

#[derive(Debug)]
pub struct Host {
    pub info: HostInfo,
    pub stats: parking_lot::Mutex<HostStats>,
    /// Uploads the scheduler has assigned to this host and not seen end.
    pub uploads: AtomicU32,
    pub upload_ok: AtomicU64,
    pub upload_failed: AtomicU64,
    pub announced_at: parking_lot::Mutex<Instant>,
}

impl Host {
    pub fn new(info: HostInfo) -> Self {
        Self {
            info,
            stats: parking_lot::Mutex::default(),
            uploads: AtomicU32::new(0),
            upload_ok: AtomicU64::new(0),
            upload_failed: AtomicU64::new(0),
            announced_at: parking_lot::Mutex::new(Instant::now()),
        }
    }

    pub fn free_upload_slots(&self) -> u32 {
        self.info
            .upload_slots
            .saturating_sub(self.uploads.load(Ordering::Relaxed))
    }

    /// Upload success ratio; 1 for a host with no history.
    pub fn upload_success_ratio(&self) -> f64 {
        let ok = self.upload_ok.load(Ordering::Relaxed) as f64;
        let failed = self.upload_failed.load(Ordering::Relaxed) as f64;
        if ok + failed == 0.0 {
            1.0
        } else {
            ok / (ok + failed)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Registered, not yet told where to download from.
    Pending,
    /// Downloading from parents.
    Running,
    /// Downloading from the origin.
    BackToSource,
    Succeeded,
    Failed,
    /// Gone; kept only until GC.
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    Download,
    DownloadBackToSource,
    Succeed,
    Fail,
    Leave,
}

impl PeerState {
    /// The state after `event`; events that do not apply leave it unchanged.
    pub fn on(self, event: PeerEvent) -> Self {
        use PeerEvent as E;
        use PeerState as S;
        match (self, event) {
            (S::Left, _) => S::Left,
            (_, E::Leave) => S::Left,
            (S::Pending | S::Running | S::Failed, E::Download) => S::Running,
            (S::Pending | S::Running | S::Failed, E::DownloadBackToSource) => S::BackToSource,
            (S::Pending | S::Running | S::BackToSource, E::Succeed) => S::Succeeded,
            (S::Pending | S::Running | S::BackToSource, E::Fail) => S::Failed,
            (s, _) => s,
        }
    }

    /// Whether a peer in this state can serve pieces.
    pub fn can_upload(self) -> bool {
        matches!(self, Self::Running | Self::BackToSource | Self::Succeeded)
    }
}

/// Recent piece download costs of a peer, for outlier detection.
#[derive(Debug, Default, Clone)]
pub struct PieceCosts {
    costs: Vec<f64>,
}

const COST_WINDOW: usize = 100;

impl PieceCosts {
    pub fn push(&mut self, cost: Duration) {
        if self.costs.len() == COST_WINDOW {
            self.costs.remove(0);
        }
        self.costs.push(cost.as_secs_f64());
    }

    /// Dragonfly's rule: with fewer than 30 samples the last is an outlier above
    /// 20x the mean of the others; with 30+, above mean + 3 sigma.
    pub fn last_is_outlier(&self) -> bool {
        let Some((last, rest)) = self.costs.split_last() else {
            return false;
        };
        if rest.is_empty() {
            return false;
        }
        let n = rest.len() as f64;
        let mean = rest.iter().sum::<f64>() / n;
        if self.costs.len() < 30 {
            return *last > mean * 20.0;
        }
        let var = rest.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n;
        *last > mean + 3.0 * var.sqrt()
    }
}

#[derive(Debug)]
pub struct Peer {
    pub id: String,
    pub host_id: String,
    pub state: PeerState,
    pub finished_pieces: HashSet<u32>,
    pub costs: PieceCosts,
    /// Parents this peer must not be given again (failed or slow for it).
    pub blocked: HashSet<String>,
    /// Scheduling rounds that found no parent.
    pub empty_rounds: u32,
    pub updated_at: Instant,
}

impl Peer {
    pub fn new(id: String, host_id: String) -> Self {
        Self {
            id,
            host_id,
            state: PeerState::Pending,
            finished_pieces: HashSet::new(),
            costs: PieceCosts::default(),
            blocked: HashSet::new(),
            empty_rounds: 0,
            updated_at: Instant::now(),
        }
    }

    pub fn fire(&mut self, event: PeerEvent) {
        self.state = self.state.on(event);
        self.updated_at = Instant::now();
    }
}

#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub content_length: Option<u64>,
    pub piece_count: Option<u32>,
    pub peers: HashMap<String, Peer>,
    pub dag: Dag,
    pub back_to_source_peers: HashSet<String>,
    pub updated_at: Instant,
}

impl Task {
    pub fn new(id: String) -> Self {
        Self {
            id,
            content_length: None,
            piece_count: None,
            peers: HashMap::new(),
            dag: Dag::default(),
            back_to_source_peers: HashSet::new(),
            updated_at: Instant::now(),
        }
    }

    /// Whether some peer finished the whole task.
    pub fn has_succeeded_peer(&self) -> bool {
        self.peers.values().any(|p| p.state == PeerState::Succeeded)
    }

    pub fn remove_peer(&mut self, peer_id: &str) -> Option<Peer> {
        self.dag.remove_vertex(peer_id);
        self.back_to_source_peers.remove(peer_id);
        self.peers.remove(peer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_and_late_events_are_harmless() {
        use PeerEvent as E;
        use PeerState as S;
        let s = S::Pending.on(E::Download).on(E::Download);
        assert_eq!(s, S::Running);
        let s = s.on(E::Succeed).on(E::Succeed).on(E::Fail).on(E::Download);
        assert_eq!(
            s,
            S::Succeeded,
            "a late failure or download does not undo success"
        );
        assert_eq!(
            S::Failed.on(E::Download),
            S::Running,
            "a failed peer may retry"
        );
        assert_eq!(S::Running.on(E::Leave).on(E::Download), S::Left);
        assert!(S::BackToSource.can_upload() && !S::Pending.can_upload());
    }

    #[test]
    fn piece_cost_outliers() {
        let mut c = PieceCosts::default();
        for _ in 0..10 {
            c.push(Duration::from_millis(10));
        }
        assert!(!c.last_is_outlier());
        c.push(Duration::from_millis(250));
        assert!(c.last_is_outlier(), "25x the mean");
        let mut c = PieceCosts::default();
        for i in 0..40 {
            c.push(Duration::from_millis(10 + (i % 3)));
        }
        c.push(Duration::from_millis(20));
        assert!(
            c.last_is_outlier(),
            "far past 3 sigma of a tight distribution"
        );
    }
}
