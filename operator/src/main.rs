//! `darter-operator`. Today: the CRDs (`crds`) and the standalone scheduler
//! (`scheduler`); the controllers and manager arrive with their issues.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "darter-operator", version, about = "Darter operator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the CRDs as YAML (`darter-operator crds | kubectl apply -f -`), or
    /// write one file per CRD into a directory.
    Crds {
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
    /// Run against the Kubernetes API: the scheduler, with Clusters from the
    /// Cluster objects and a Peer object per announced host.
    Run {
        /// Scheduler gRPC address agents announce to.
        #[arg(long, default_value = "0.0.0.0:8002")]
        listen: std::net::SocketAddr,
        /// Cluster of agents no Cluster object places while none is default.
        #[arg(long, default_value = "default")]
        fallback_cluster: String,
        /// Minimum time between writes of one Peer's counters.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        peer_write_interval: std::time::Duration,
        /// Agents re-announce this often.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        announce_interval: std::time::Duration,
        /// Pause between scheduling rounds while a peer waits for a parent.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        retry_interval: std::time::Duration,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080")]
        health_listen: std::net::SocketAddr,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// How long the Lease holds without renewal (failover time).
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        lease_duration: std::time::Duration,
        /// Mutual TLS on the scheduler port: CA that signs agent certificates
        /// (with --tls-cert and --tls-key). Unset: plaintext.
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_ca_cert: Option<PathBuf>,
        /// The operator's certificate chain (PEM).
        #[arg(long, requires = "tls_ca_cert")]
        tls_cert: Option<PathBuf>,
        /// The operator's private key (PEM).
        #[arg(long, requires = "tls_ca_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Run the scheduler without Kubernetes (one cluster, settings from YAML).
    Scheduler {
        /// Standalone config (YAML); defaults when omitted.
        #[arg(long)]
        config: Option<PathBuf>,
        /// gRPC listen address (overrides `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DARTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Run {
            listen,
            fallback_cluster,
            peer_write_interval,
            announce_interval,
            retry_interval,
            health_listen,
            lease_namespace,
            lease_duration,
            tls_ca_cert,
            tls_cert,
            tls_key,
        } => {
            let cfg = darter_operator::k8s::RunConfig {
                listen,
                fallback_cluster,
                peer_write_interval,
                scheduling: Default::default(),
                retry_interval,
                announce_interval,
                health_listen,
                lease_namespace,
                lease_duration,
                tls: match (tls_ca_cert, tls_cert, tls_key) {
                    (Some(ca_cert), Some(cert), Some(key)) => Some(darter_common::TlsFiles {
                        ca_cert,
                        cert,
                        key,
                        server_name: None,
                    }),
                    _ => None,
                },
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start runtime")?;
            rt.block_on(darter_operator::k8s::run(cfg, async {
                let _ = tokio::signal::ctrl_c().await;
            }))?;
        }
        Cmd::Scheduler { config, listen } => {
            let mut cfg = darter_operator::standalone::StandaloneConfig::load(config.as_deref())?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            let rt = tokio::runtime::Runtime::new().context("cannot start runtime")?;
            rt.block_on(darter_operator::standalone::run(cfg, async {
                let _ = tokio::signal::ctrl_c().await;
            }))?;
        }
        Cmd::Crds { write } => {
            let crds = darter_crds::all_crd_yaml().context("cannot render CRDs")?;
            match write {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    for (name, yaml) in crds {
                        let path = dir.join(name);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                None => {
                    for (_, yaml) in crds {
                        print!("---\n{yaml}");
                    }
                }
            }
        }
    }
    Ok(())
}
