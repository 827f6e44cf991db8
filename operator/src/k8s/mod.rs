//! The operator's Kubernetes mode (`darter-operator run`): the same scheduler
//! and gRPC service as the standalone mode, with its Clusters read from the
//! `Cluster` objects (agents move on their next announce when scopes change),
//! PeerPolicies pushed to agents over their command streams, and a Peer
//! manager that mirrors announced hosts into `Peer` objects. Only the holder
//! of the leader Lease serves and writes.

pub mod clusters;
pub mod events;
pub mod health;
pub mod leader;
pub mod nodes;
pub mod peers;
pub mod policies;
pub mod reconcile;

/// Field manager of the operator's server-side applies.
pub const MANAGER: &str = "darter-operator";

use crate::scheduler::service::{SchedulerService, serve};
use crate::scheduler::{Scheduler, SchedulerConfig};
use kube::Client;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("lost the leader Lease; stopping so only one replica acts")]
    LostLeadership,
    #[error("TLS: {0}")]
    Tls(#[from] darter_common::TlsError),
}

/// `darter-operator run` settings (flags).
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Scheduler gRPC address agents announce to.
    pub listen: SocketAddr,
    /// Cluster of agents no Cluster object places, while none is the default.
    pub fallback_cluster: String,
    /// Minimum time between two writes of one Peer object.
    pub peer_write_interval: Duration,
    pub scheduling: SchedulerConfig,
    pub retry_interval: Duration,
    pub announce_interval: Duration,
    /// `/healthz`, `/readyz` and `/metrics`.
    pub health_listen: SocketAddr,
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// Mutual TLS on the scheduler port; `None`: plaintext.
    pub tls: Option<darter_common::TlsFiles>,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    cfg: RunConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), OperatorError> {
    // Certificates are checked before anything else starts.
    let mut server = tonic::transport::Server::builder();
    if let Some(files) = &cfg.tls {
        let tls = darter_common::MutualTls::load(files)?;
        server = server.tls_config(tls.grpc_server())?;
    }
    let client = Client::try_default().await?;
    // Fail fast, with the API server's own message, when it is unreachable.
    client.apiserver_version().await?;
    let core = Arc::new(Scheduler::new(cfg.scheduling.clone()));
    // Health first: a replica waiting for the Lease is alive but not ready.
    let health = health::Health::new(core.clone());
    let health_addr = cfg.health_listen;
    let h = health.clone();
    tokio::spawn(async move {
        if let Err(e) = health::serve(health_addr, h).await {
            tracing::error!(addr = %health_addr, error = %e, "health endpoints stopped");
        }
    });
    let identity = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into()),
        std::process::id()
    );
    let election = leader::LeaderElection::new(
        client.clone(),
        &cfg.lease_namespace,
        "darter-operator",
        identity,
        cfg.lease_duration,
    );
    election.acquire().await;
    tracing::info!(identity = %election.identity(), "leading");
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let mut svc = SchedulerService::new(core.clone());
    svc.cluster = cfg.fallback_cluster.clone();
    svc.retry_interval = cfg.retry_interval;
    svc.announce_interval = cfg.announce_interval;
    let events = events::Events::new(client.clone(), election.identity());
    tokio::spawn(
        clusters::ClusterController::new(
            client.clone(),
            core.clone(),
            svc.clusters.clone(),
            svc.cluster.clone(),
            health.clone(),
            events.clone(),
        )
        .run(),
    );
    tokio::spawn(nodes::watch_node_labels(
        client.clone(),
        svc.node_labels.clone(),
    ));
    let agents = Arc::new(crate::agents::Agents::default());
    let pusher = Arc::new(
        crate::agents::push::PolicyPusher::new(
            agents.clone(),
            core.clone(),
            svc.policies.clone(),
            Duration::from_secs(2),
        )
        .with_metrics(health.metrics.push.clone()),
    );
    tokio::spawn(pusher.clone().run());
    tokio::spawn(policies::PolicyController::new(client.clone(), pusher, events).run());
    let peers = peers::PeerManager::new(client.clone(), core, cfg.peer_write_interval, health);
    tokio::spawn(peers.run());
    tokio::select! {
        served = serve(server, listener, svc, agents, Duration::from_secs(30), shutdown) => Ok(served?),
        () = election.keep() => Err(OperatorError::LostLeadership),
    }
}
