//! Darter's custom resources, group `darter.dev`, version `v1alpha1`.
//!
//! `generated/` holds the CRD YAML made from these types; the operator's tests
//! fail when it is stale (`darter-operator crds --write crds/generated`).

pub mod cluster;
pub mod peer;
pub mod peer_policy;
pub mod preheat;
pub mod task_cache;
pub mod validation;

pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use peer::{Peer, PeerSpec, PeerStatus, PeerType};
pub use peer_policy::{PeerPolicy, PeerPolicySpec, PeerPolicyStatus, PeerSelector};
pub use preheat::{PreheatJob, PreheatJobSpec, PreheatScope};
pub use task_cache::{TaskCache, TaskCacheSpec};

use kube::CustomResourceExt;

/// Every CRD of the group, as (file name, YAML).
pub fn all_crd_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    let crds = [
        Cluster::crd(),
        PeerPolicy::crd(),
        Peer::crd(),
        PreheatJob::crd(),
        TaskCache::crd(),
    ];
    crds.iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            serde_yaml::to_string(crd).map(|y| (format!("{name}.yaml"), y))
        })
        .collect()
}
