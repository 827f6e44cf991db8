//! `darter daemon`: the node agent as a long-running process. It announces its
//! host to the scheduler, serves pieces to other agents (gRPC availability +
//! the TCP data path), downloads through the swarm, runs GC, and takes
//! `darter get` requests on a local unix socket.

pub mod api;
pub mod control;
pub mod metrics;

use crate::backend::HttpBackend;
use crate::config::AgentConfig;
use crate::engine::{Engine, Progress};
use crate::error::{Error, Result};
use crate::peer::pool::{PeerPool, PeerTls};
use crate::peer::server::PeerService;
use crate::peer::tcp;
use crate::peer::upload::Uploads;
use crate::storage::{GcPolicy, Storage};
use crate::swarm::announce::{AnnounceState, Announcer};
use crate::swarm::{Identity, Swarm};
use api::{Reply, Request, Status};
use darter_common::{ByteSize, MutualTls};
use darter_proto::agent::v1::control_client::ControlClient;
use darter_proto::peer::v1::peer_server::PeerServer;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

/// Where the daemon listens, once bound.
#[derive(Debug, Clone)]
pub struct Bound {
    pub upload: SocketAddr,
    pub data: SocketAddr,
    pub socket: std::path::PathBuf,
    pub host_id: String,
    /// `/healthz` and `/metrics`, when served.
    pub metrics: Option<SocketAddr>,
}

pub struct Daemon {
    cfg: AgentConfig,
    storage: Arc<Storage>,
    engine: Arc<Engine>,
    uploads: Arc<Uploads>,
    announcer: Option<Arc<Announcer>>,
    identity: Identity,
    bound: Bound,
    /// One download per task at a time; later callers wait, then hit the cache.
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bound in `start`, served by `run`.
    socket: Mutex<Option<UnixListener>>,
    metrics_listener: Mutex<Option<TcpListener>>,
    /// The operator's command stream (daemons with a scheduler only).
    control: Option<ControlClient<Channel>>,
    /// What the config says; PeerPolicy settings are laid over it.
    base_settings: control::Settings,
    /// The PeerPolicy whose settings are in force, if any.
    policy: Mutex<Option<String>>,
}

/// Binds the local socket (mode 0600), refusing to steal a live daemon's.
async fn bind_socket(path: &std::path::Path) -> Result<UnixListener> {
    if UnixStream::connect(path).await.is_ok() {
        return Err(Error::Config(format!(
            "another daemon already listens on {}",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path); // stale socket of a dead daemon
    let listener = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("cannot bind {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot restrict {}", path.display()), e))?;
    Ok(listener)
}

/// The address this host uses to reach `target` (no packet is sent).
fn route_to(target: &str) -> Option<IpAddr> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(target)
        .ok()?
        .next()?;
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(addr).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

fn identity(cfg: &AgentConfig) -> Identity {
    let ip = cfg
        .host
        .ip
        .or_else(|| cfg.scheduler.addresses.first().and_then(|a| route_to(a)))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let hostname = cfg.host.hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    Identity {
        host_id: format!("{ip}-{hostname}"),
        ip,
        hostname,
    }
}

fn scheduler_channel(cfg: &AgentConfig, tls: Option<&MutualTls>) -> Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoints = Vec::new();
    for a in &cfg.scheduler.addresses {
        let mut ep = Endpoint::from_shared(format!("{scheme}://{a}"))
            .map_err(|e| Error::Config(format!("scheduler address {a:?}: {e}")))?
            .connect_timeout(cfg.scheduler.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(t) = tls {
            ep = ep
                .tls_config(t.grpc_client())
                .map_err(|e| Error::Config(format!("scheduler TLS: {e}")))?;
        }
        endpoints.push(ep);
    }
    Ok(match endpoints.len() {
        1 => endpoints.remove(0).connect_lazy(),
        _ => Channel::balance_list(endpoints.into_iter()),
    })
}

async fn bind(ip: IpAddr, port: u16, what: &str) -> Result<TcpListener> {
    TcpListener::bind((ip, port))
        .await
        .map_err(|e| Error::io(format!("cannot listen for {what} on {ip}:{port}"), e))
}

impl Daemon {
    /// Opens storage, binds every listener and starts serving peers; nothing
    /// is announced until [`Daemon::run`].
    pub async fn start(cfg: AgentConfig) -> Result<Arc<Self>> {
        let policy = GcPolicy {
            task_ttl: cfg.gc.task_ttl,
            high_watermark_percent: cfg.gc.high_watermark_percent,
            low_watermark_percent: cfg.gc.low_watermark_percent,
            capacity: cfg.storage.capacity.map(ByteSize::as_u64),
        };
        let storage = Arc::new(Storage::open(&cfg.storage.dir, policy)?);
        let tls = cfg
            .tls
            .as_ref()
            .map(MutualTls::load)
            .transpose()
            .map_err(|e| Error::Config(e.to_string()))?;
        let identity = identity(&cfg);
        let uploads = Arc::new(
            Uploads::new(cfg.upload.rate_limit, cfg.upload.concurrent_pieces)
                .with_first_copies(cfg.upload.first_copies),
        );
        uploads.set_disable_shared(cfg.upload.disable_shared);

        let upload_l = bind(identity.ip, cfg.upload.port, "piece sync").await?;
        let data_l = bind(identity.ip, cfg.upload.data_port, "piece data").await?;
        let upload_addr = upload_l
            .local_addr()
            .map_err(|e| Error::io("listener", e))?;
        let data_addr = data_l.local_addr().map_err(|e| Error::io("listener", e))?;
        let mut server = tonic::transport::Server::builder();
        if let Some(t) = &tls {
            server = server
                .tls_config(t.grpc_server())
                .map_err(|e| Error::Config(format!("upload server TLS: {e}")))?;
        }
        let svc = PeerServer::new(PeerService::new(storage.clone(), uploads.clone()));
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(upload_l);
            if let Err(e) = server.add_service(svc).serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "piece sync server stopped");
            }
        });
        let acceptor = tls
            .as_ref()
            .map(|t| t.rustls_server().map(tokio_rustls::TlsAcceptor::from))
            .transpose()
            .map_err(|e| Error::Config(e.to_string()))?;
        tokio::spawn(tcp::serve(
            data_l,
            storage.clone(),
            uploads.clone(),
            acceptor,
        ));

        let mut engine = Engine::new(
            storage.clone(),
            HttpBackend::new(&cfg.origin)?,
            cfg.download.clone(),
        );
        let mut announcer = None;
        let mut control = None;
        if !cfg.scheduler.addresses.is_empty() {
            let peer_tls = tls
                .as_ref()
                .map(|t| -> Result<PeerTls> {
                    let data = t
                        .rustls_client()
                        .map_err(|e| Error::Config(e.to_string()))?;
                    Ok(PeerTls {
                        grpc: t.grpc_client(),
                        data: tokio_rustls::TlsConnector::from(data),
                        server_name: t.server_name().map(str::to_string),
                    })
                })
                .transpose()?;
            let pool = Arc::new(PeerPool::new(peer_tls, cfg.scheduler.connect_timeout));
            let open_timeout = cfg.scheduler.connect_timeout + Duration::from_secs(30);
            let channel = scheduler_channel(&cfg, tls.as_ref())?;
            control = Some(ControlClient::new(channel.clone()));
            let swarm = Arc::new(Swarm::new(identity.clone(), channel, pool, open_timeout));
            engine = engine.with_swarm(swarm.clone());
            announcer = Some(Arc::new(Announcer {
                swarm,
                storage: storage.clone(),
                uploads: uploads.clone(),
                host: cfg.host.clone(),
                upload_port: upload_addr.port(),
                data_port: data_addr.port(),
                upload_slots: std::sync::atomic::AtomicU32::new(cfg.upload.slots as u32),
                interval: cfg.scheduler.announce_interval,
                downloaded: engine.downloaded(),
                state: Arc::new(Mutex::new(AnnounceState::default())),
            }));
        }
        let socket = bind_socket(&cfg.socket_path()).await?;
        let metrics_listener = match cfg.daemon.metrics_listen {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        let bound = Bound {
            upload: upload_addr,
            data: data_addr,
            socket: cfg.socket_path(),
            host_id: identity.host_id.clone(),
            metrics: metrics_listener.as_ref().and_then(|l| l.local_addr().ok()),
        };
        let base_settings = control::Settings {
            download_rate_limit: cfg.download.rate_limit,
            upload_rate_limit: cfg.upload.rate_limit,
            disable_shared: cfg.upload.disable_shared,
            upload_slots: cfg.upload.slots as u32,
            gc_high_watermark_percent: cfg.gc.high_watermark_percent,
            gc_low_watermark_percent: cfg.gc.low_watermark_percent,
            policy: None,
        };
        Ok(Arc::new(Self {
            control,
            policy: Mutex::new(None),
            base_settings,
            cfg,
            storage,
            engine: Arc::new(engine),
            uploads,
            announcer,
            identity,
            bound,
            running: Mutex::default(),
            socket: Mutex::new(Some(socket)),
            metrics_listener: Mutex::new(metrics_listener),
        }))
    }

    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Announces, runs GC, and serves the local socket until SIGINT/SIGTERM;
    /// then tells the scheduler this host leaves.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let path = &self.bound.socket;
        let listener = self
            .socket
            .lock()
            .take()
            .ok_or_else(|| Error::Config("daemon already running".into()))?;

        if let Some(a) = &self.announcer {
            tokio::spawn(a.clone().run());
        }
        if let Some(c) = &self.control {
            tokio::spawn(self.clone().control_loop(c.clone()));
        }
        if let Some(l) = self.metrics_listener.lock().take() {
            tokio::spawn(metrics::serve(l, self.clone()));
        }
        tokio::spawn(self.clone().gc_loop());
        let me = self.clone();
        let serve = async move {
            loop {
                match listener.accept().await {
                    Ok((sock, _)) => {
                        let me = me.clone();
                        tokio::spawn(async move { me.serve_client(sock).await });
                    }
                    Err(e) => tracing::warn!(error = %e, "socket accept failed"),
                }
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::io("signal handler", e))?;
        tokio::select! {
            _ = serve => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        if let Some(a) = &self.announcer {
            a.leave().await;
        }
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    async fn gc_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.cfg.gc.interval).await;
            let storage = self.storage.clone();
            let busy: Vec<String> = self.running.lock().keys().cloned().collect();
            let r = tokio::task::spawn_blocking(move || {
                let protect: Vec<&str> = busy.iter().map(String::as_str).collect();
                storage.gc(0, &protect)
            })
            .await;
            match r {
                Ok(Ok(report)) if !report.evicted.is_empty() => {
                    tracing::info!(
                        evicted = report.evicted.len(),
                        freed = report.freed_bytes,
                        "GC"
                    )
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "GC failed"),
                _ => {}
            }
        }
    }

    pub fn status(&self) -> Status {
        let st = self
            .announcer
            .as_ref()
            .map(|a| a.state.lock().clone())
            .unwrap_or_default();
        Status {
            host_id: self.identity.host_id.clone(),
            cluster: st.cluster,
            announces: st.announces,
            scheduler_error: st.last_error,
            uploaded_bytes: self.uploads.uploaded(),
            refused_requests: self.uploads.refused(),
            downloaded_bytes: self
                .engine
                .downloaded()
                .load(std::sync::atomic::Ordering::Relaxed),
            tasks: self.storage.metadata.tasks().map_or(0, |t| t.len()),
            upload_addr: self.bound.upload.to_string(),
            data_addr: self.bound.data.to_string(),
            settings: Some(self.settings()),
        }
    }

    async fn serve_client(&self, sock: UnixStream) {
        let mut sock = BufReader::new(sock);
        let mut line = String::new();
        if sock.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::Error(format!("bad request: {e}")),
            Ok(Request::Status) => Reply::Status(self.status()),
            Ok(Request::Get(g)) => match g.into_download() {
                Err(e) => Reply::Error(e.to_string()),
                Ok(req) => self.get(req, sock.get_mut()).await,
            },
        };
        let _ = api::write_line(sock.get_mut(), &reply).await;
    }

    /// One download at a time per task: later callers wait, then hit the cache.
    pub async fn download(
        &self,
        req: &crate::engine::DownloadRequest,
        progress: &Progress,
    ) -> Result<crate::engine::DownloadStats> {
        let id = req.task_id()?;
        let lock = self.running.lock().entry(id.clone()).or_default().clone();
        let result = {
            let _turn = lock.lock().await;
            self.engine.download(req, progress).await
        };
        let mut running = self.running.lock();
        if Arc::strong_count(&lock) <= 2 {
            running.remove(&id);
        }
        result
    }

    async fn get(&self, req: crate::engine::DownloadRequest, sock: &mut UnixStream) -> Reply {
        let progress = Arc::new(Progress::default());
        let download = self.download(&req, &progress);
        tokio::pin!(download);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let result = loop {
            tokio::select! {
                r = &mut download => break r,
                _ = tick.tick() => {
                    let p = Reply::Progress { done: progress.done(), total: progress.total() };
                    // A client that went away does not stop the download:
                    // the cache keeps what it fetched.
                    let _ = api::write_line(sock, &p).await;
                }
            }
        };
        match result {
            Ok(stats) => Reply::Done(stats),
            Err(e) => Reply::Error(e.to_string()),
        }
    }
}
