//! The scheduler without Kubernetes: one cluster whose settings come from a
//! YAML file, for local use, the swarm and benchmarks.

use crate::scheduler::service::{SchedulerService, serve};
use crate::scheduler::{Scheduler, SchedulerConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StandaloneError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cluster scopes: {0}")]
    Scopes(#[from] crate::scheduler::clusters::ScopeError),
    #[error("invalid peer policy: {0}")]
    Policy(#[from] crate::scheduler::policies::PolicyError),
    #[error("TLS: {0}")]
    Tls(#[from] darter_common::TlsError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// One entry of `clusters`: a Cluster's name and spec, as in the CRD.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedCluster {
    pub name: String,
    pub spec: darter_crds::ClusterSpec,
}

/// One entry of `peerPolicies`: a PeerPolicy's name and spec, as in the CRD.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedPolicy {
    pub name: String,
    pub spec: darter_crds::PeerPolicySpec,
}

/// `darter-operator scheduler --config FILE`. Every field is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StandaloneConfig {
    /// gRPC listen address (port 0 picks a free one; the chosen address is printed).
    pub listen: SocketAddr,
    /// Cluster of agents that no entry of `clusters` places (all agents when
    /// `clusters` is empty).
    pub cluster: String,
    /// Clusters with scopes, as in the Cluster CRD: agents join the one whose
    /// scopes match them best, and get parents only from their own cluster.
    pub clusters: Vec<NamedCluster>,
    /// PeerPolicies, as in the CRD: settings pushed to the agents they select
    /// over the command stream (the most specific wins).
    pub peer_policies: Vec<NamedPolicy>,
    /// Agents re-announce this often.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
    /// Pause between scheduling rounds while a peer waits for a parent.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// How often silent hosts and stale peers are collected.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// Parent selection and GC knobs.
    pub scheduling: SchedulerConfig,
    /// Mutual TLS: agents must present a certificate from this CA. Unset
    /// means plaintext.
    pub tls: Option<darter_common::TlsFiles>,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8002)),
            cluster: "default".into(),
            clusters: Vec::new(),
            peer_policies: Vec::new(),
            announce_interval: Duration::from_secs(30),
            retry_interval: Duration::from_millis(500),
            gc_interval: Duration::from_secs(60),
            scheduling: SchedulerConfig::default(),
            tls: None,
        }
    }
}

impl StandaloneConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, StandaloneError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StandaloneError::Read {
            path: shown.clone(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(&text).map_err(|source| StandaloneError::Parse {
            path: shown,
            source,
        })
    }
}

/// Binds, prints `listening on ADDR`, then serves until `shutdown` resolves.
pub async fn run(
    cfg: StandaloneConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StandaloneError> {
    // Certificates are checked before anything listens.
    let mut server = tonic::transport::Server::builder();
    if let Some(files) = &cfg.tls {
        let tls = darter_common::MutualTls::load(files)?;
        server = server.tls_config(tls.grpc_server())?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StandaloneError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let core = Arc::new(Scheduler::new(cfg.scheduling.clone()));
    let mut svc = SchedulerService::new(core.clone());
    svc.announce_interval = cfg.announce_interval;
    svc.retry_interval = cfg.retry_interval;
    svc.cluster = cfg.cluster.clone();
    *svc.clusters.write() = crate::scheduler::clusters::ClusterMatcher::new(
        cfg.clusters.iter().map(|c| (c.name.as_str(), &c.spec)),
    )?;
    *svc.policies.write() = crate::scheduler::policies::PolicyMatcher::new(
        cfg.peer_policies.iter().map(|p| (p.name.as_str(), &p.spec)),
    )?;
    let agents = Arc::new(crate::agents::Agents::default());
    let pusher = Arc::new(crate::agents::push::PolicyPusher::new(
        agents.clone(),
        core,
        svc.policies.clone(),
        Duration::from_secs(2),
    ));
    tokio::spawn(pusher.run());
    Ok(serve(server, listener, svc, agents, cfg.gc_interval, shutdown).await?)
}
