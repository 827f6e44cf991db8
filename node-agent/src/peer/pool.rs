//! One connection pool per agent, shared by all tasks: a gRPC channel per
//! parent (piece availability) and idle data-path connections per parent
//! (piece bytes), reused across pieces and tasks.

use super::tcp::{self, Conn, Fetch};
use crate::error::{Error, Result};
use crate::storage::PieceMeta;
use darter_common::RateLimiter;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Idle data connections kept per parent.
const MAX_IDLE: usize = 8;

/// Client-side TLS for peer traffic (mTLS when certificates are configured).
#[derive(Clone)]
pub struct PeerTls {
    pub grpc: ClientTlsConfig,
    pub data: tokio_rustls::TlsConnector,
    /// Checked in parents' certificates instead of their IP when set.
    pub server_name: Option<String>,
}

pub struct PeerPool {
    channels: Mutex<HashMap<SocketAddr, Channel>>,
    idle: Mutex<HashMap<SocketAddr, Vec<Box<dyn Conn>>>>,
    tls: Option<PeerTls>,
    connect_timeout: Duration,
}

impl PeerPool {
    pub fn new(tls: Option<PeerTls>, connect_timeout: Duration) -> Self {
        Self {
            channels: Mutex::default(),
            idle: Mutex::default(),
            tls,
            connect_timeout,
        }
    }

    /// The gRPC channel to a parent's upload server (connected on first use).
    pub fn channel(&self, addr: SocketAddr) -> Result<Channel> {
        if let Some(c) = self.channels.lock().get(&addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Error::Config(format!("peer address {addr}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.grpc.clone())
                .map_err(|e| Error::Config(format!("peer TLS: {e}")))?;
        }
        let ch = ep.connect_lazy();
        self.channels.lock().insert(addr, ch.clone());
        Ok(ch)
    }

    /// Forgets a parent's channel and connections (it failed or left).
    pub fn forget(&self, addr: SocketAddr) {
        self.channels.lock().remove(&addr);
        self.idle.lock().remove(&addr);
    }

    async fn connect(&self, addr: SocketAddr, parent: &str) -> Result<Box<dyn Conn>> {
        let io = |e: std::io::Error| Error::io(format!("cannot connect to peer {parent}"), e);
        let sock = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(format!("connecting to peer {parent} at {addr}")))?
            .map_err(io)?;
        let _ = sock.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(sock)),
            Some(tls) => {
                use tokio_rustls::rustls::pki_types::ServerName;
                let name = match &tls.server_name {
                    Some(n) => ServerName::try_from(n.clone()).map_err(|e| Error::Tls {
                        host: addr.to_string(),
                        detail: format!("server name {n:?}: {e}"),
                    })?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                let s = tls.data.connect(name, sock).await.map_err(|e| Error::Tls {
                    host: addr.to_string(),
                    detail: e.to_string(),
                })?;
                Ok(Box::new(s))
            }
        }
    }

    /// Fetches one piece from the parent's data port, reusing an idle
    /// connection when there is one. The connection goes back to the pool only
    /// after a clean exchange.
    pub async fn fetch_piece(
        &self,
        addr: SocketAddr,
        fetch: Fetch<'_>,
        file: Arc<File>,
        limiter: &RateLimiter,
    ) -> Result<PieceMeta> {
        let reused = self.idle.lock().get_mut(&addr).and_then(Vec::pop);
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect(addr, fetch.parent).await?,
        };
        let r = tcp::fetch_piece(&mut *conn, fetch, file, limiter).await;
        if matches!(r, Ok(_) | Err(Error::PeerRefused { .. })) {
            let mut idle = self.idle.lock();
            let v = idle.entry(addr).or_default();
            if v.len() < MAX_IDLE {
                v.push(conn);
            }
        }
        r
    }
}
