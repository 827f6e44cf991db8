//! `/healthz` and `/metrics` (Prometheus, OpenMetrics text) of the agent
//! daemon, served when `daemon.metricsListen` is set (the chart's DaemonSet
//! probes `/healthz`). Values are read from the daemon at each scrape, so
//! nothing on the data path updates a metric.

use super::Daemon;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// One scrape's values.
#[derive(Debug, Default)]
struct Snapshot {
    uploaded: u64,
    downloaded: u64,
    refused: u64,
    announces: u64,
    tasks: i64,
    disk_used: i64,
    disk_total: i64,
    upload_rate: i64,
    download_rate: i64,
    leech: i64,
    scheduler_reachable: i64,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        counter(
            &mut e,
            "upload_bytes",
            "Piece bytes sent to other agents",
            self.uploaded,
        )?;
        counter(
            &mut e,
            "download_bytes",
            "Piece bytes fetched from the origin and peers",
            self.downloaded,
        )?;
        counter(
            &mut e,
            "upload_refused_requests",
            "Piece requests refused in leech mode",
            self.refused,
        )?;
        counter(
            &mut e,
            "announces",
            "Successful announces to the scheduler",
            self.announces,
        )?;
        gauge(&mut e, "tasks", "Tasks in local storage", self.tasks)?;
        gauge(
            &mut e,
            "disk_used_bytes",
            "Storage in use (against the capacity or filesystem)",
            self.disk_used,
        )?;
        gauge(
            &mut e,
            "disk_total_bytes",
            "Storage capacity (or filesystem size)",
            self.disk_total,
        )?;
        gauge(
            &mut e,
            "upload_rate_limit_bytes_per_second",
            "Upload rate limit in force",
            self.upload_rate,
        )?;
        gauge(
            &mut e,
            "download_rate_limit_bytes_per_second",
            "Download rate limit in force",
            self.download_rate,
        )?;
        gauge(
            &mut e,
            "leech",
            "1 while the agent serves no pieces (leech mode)",
            self.leech,
        )?;
        gauge(
            &mut e,
            "scheduler_reachable",
            "1 when the last announce succeeded",
            self.scheduler_reachable,
        )?;
        Ok(())
    }
}

fn snapshot(d: &Daemon) -> Snapshot {
    let st = d.status();
    let usage = d.storage.usage().ok();
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut s = Snapshot {
        uploaded: st.uploaded_bytes,
        downloaded: st.downloaded_bytes,
        refused: st.refused_requests,
        announces: st.announces,
        tasks: clamp(st.tasks as u64),
        disk_used: usage.map_or(0, |u| clamp(u.used)),
        disk_total: usage.map_or(0, |u| clamp(u.total)),
        scheduler_reachable: i64::from(st.announces > 0 && st.scheduler_error.is_none()),
        ..Default::default()
    };
    if let Some(set) = st.settings {
        s.upload_rate = clamp(set.upload_rate_limit.0);
        s.download_rate = clamp(set.download_rate_limit.0);
        s.leech = i64::from(set.disable_shared);
    }
    s
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    // Storage reads (RocksDB, statvfs) stay off the async workers.
    let snap = tokio::task::spawn_blocking(move || snapshot(&d)).await;
    let mut registry = Registry::with_prefix("darter_agent");
    match snap {
        Ok(s) => registry.register_collector(Box::new(s)),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves both endpoints on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, daemon: Arc<Daemon>) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(daemon);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

/// Binds `addr` (reported in errors by address).
pub async fn bind(addr: SocketAddr) -> crate::error::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::error::Error::io(format!("cannot listen for metrics on {addr}"), e))
}
