//! `/healthz`, `/readyz` and `/metrics` (Prometheus, OpenMetrics text) of the
//! operator. Ready once the Cluster objects have been read, so agents are not
//! placed by an empty scope set after a start.

use crate::scheduler::Scheduler;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The operator's metrics, named `darter_*`.
#[derive(Default)]
pub struct Metrics {
    pub hosts: Gauge,
    pub tasks: Gauge,
    pub peer_writes: Counter,
    pub peer_deletes: Counter,
    pub cluster_updates: Counter,
    pub push: crate::agents::push::PushMetrics,
}

pub struct Health {
    pub ready: AtomicBool,
    pub metrics: Metrics,
    registry: Registry,
    core: Arc<Scheduler>,
}

impl Health {
    pub fn new(core: Arc<Scheduler>) -> Arc<Self> {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("darter");
        for (name, help, gauge) in [
            (
                "scheduler_hosts",
                "Hosts announced to the scheduler",
                &metrics.hosts,
            ),
            (
                "scheduler_tasks",
                "Tasks the scheduler tracks",
                &metrics.tasks,
            ),
            (
                "operator_agents_attached",
                "Agents with a command stream open",
                &metrics.push.attached,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        for (name, help, counter) in [
            (
                "operator_peer_writes",
                "Peer objects written (server-side apply)",
                &metrics.peer_writes,
            ),
            (
                "operator_peer_deletes",
                "Peer objects deleted for hosts that left",
                &metrics.peer_deletes,
            ),
            (
                "operator_cluster_scope_updates",
                "Times the Cluster scopes were reloaded",
                &metrics.cluster_updates,
            ),
            (
                "operator_settings_pushes",
                "PeerPolicy settings an agent confirmed",
                &metrics.push.pushed,
            ),
            (
                "operator_settings_push_failures",
                "PeerPolicy settings an agent refused or did not confirm in time",
                &metrics.push.failed,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        Arc::new(Self {
            ready: AtomicBool::new(false),
            metrics,
            registry,
            core,
        })
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        self.metrics.hosts.set(self.core.host_count() as i64);
        self.metrics.tasks.set(self.core.task_count() as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Cluster objects not read yet\n",
        )
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match h.render() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves the three endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "health and metrics endpoints");
    axum::serve(listener, app).await
}
