//! The agent's configuration file (YAML). Every field has a default, so an empty
//! file is a valid configuration; command-line flags override what it says.

use darter_common::{ByteRate, ByteSize, TlsFiles};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Where the agent looks for its config when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/darter/agent.yaml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// Where task content and metadata live.
    pub storage: StorageConfig,
    /// When cached tasks are evicted.
    pub gc: GcConfig,
    /// How downloads run.
    pub download: DownloadConfig,
    /// How the origin (back-to-source) is reached.
    pub origin: OriginConfig,
    /// The scheduler the daemon announces to and downloads through.
    pub scheduler: SchedulerConfig,
    /// How this host presents itself to the scheduler.
    pub host: HostConfig,
    /// Serving pieces to other agents.
    pub upload: UploadConfig,
    /// The local daemon's socket for `darter get`.
    pub daemon: DaemonConfig,
    /// Mutual TLS for all gRPC (scheduler and peers) and the piece data path;
    /// unset means plaintext.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SchedulerConfig {
    /// Scheduler gRPC addresses, `host:port`; empty means no P2P (origin only).
    pub addresses: Vec<String>,
    /// Re-announce interval until the scheduler says otherwise.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
    /// Time allowed to reach the scheduler before a download goes to the origin.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            announce_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HostConfig {
    /// Address other agents reach this one at; default: the address this host
    /// uses to reach the scheduler (127.0.0.1 without one).
    pub ip: Option<IpAddr>,
    /// Default: the kernel's host name.
    pub hostname: Option<String>,
    /// Data center, matched by Cluster scopes and preferred in parent choice.
    pub idc: Option<String>,
    /// `|`-separated location, most general first (e.g. `eu|fra|rack-7`).
    pub location: Option<String>,
    /// A seed peer: first to fetch new tasks from the origin.
    pub seed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct UploadConfig {
    /// gRPC port for piece availability (0 picks a free port).
    pub port: u16,
    /// TCP port for piece bytes (0 picks a free port).
    pub data_port: u16,
    /// Total upload rate, shared by all children.
    pub rate_limit: ByteRate,
    /// Children this agent takes per task and announces to the scheduler,
    /// which offers it as a parent to at most this many peers at once.
    pub slots: usize,
    /// Pieces sent at the same time on the data path. Fewer transfers each
    /// run faster, so pieces finish sooner and children can pass them on;
    /// further requests wait their turn briefly, then are sent elsewhere.
    pub concurrent_pieces: usize,
    /// Leech mode: download through P2P but never serve pieces.
    pub disable_shared: bool,
    /// While this agent is still downloading a task, each of its pieces is
    /// served to at most this many children, who pass it on (0: no limit).
    /// Keeps a parent that fetches from the origin from spending its upload
    /// on copies its children could get from each other.
    pub first_copies: u32,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            port: 4000,
            data_port: 4001,
            rate_limit: ByteRate(10 << 30),
            slots: 50,
            concurrent_pieces: 4,
            disable_shared: false,
            first_copies: 1,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DaemonConfig {
    /// Unix socket `darter get` uses to reach the daemon (mode 0600: only the
    /// daemon's user and root may ask it to write files). Default
    /// `{storage.dir}/darter.sock`.
    pub socket: Option<PathBuf>,
    /// Where to serve `/healthz` and `/metrics` (Prometheus), e.g.
    /// `0.0.0.0:4002`; unset: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl AgentConfig {
    /// The daemon's socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.daemon
            .socket
            .clone()
            .unwrap_or_else(|| self.storage.dir.join("darter.sock"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageConfig {
    /// Storage directory: `content/` holds one file per task, `metadata/` the
    /// RocksDB database. Default `/var/lib/darter` for root, else `~/.cache/darter`.
    pub dir: PathBuf,
    /// Upper bound on the bytes the cache may use. When unset, the watermarks
    /// apply to the whole filesystem holding `dir`.
    pub capacity: Option<ByteSize>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: default_storage_dir(),
            capacity: None,
        }
    }
}

fn default_storage_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/darter");
    }
    match std::env::var_os("XDG_CACHE_HOME").or_else(|| std::env::var_os("HOME")) {
        Some(base) if std::env::var_os("XDG_CACHE_HOME").is_some() => {
            PathBuf::from(base).join("darter")
        }
        Some(home) => PathBuf::from(home).join(".cache").join("darter"),
        None => PathBuf::from("/tmp/darter"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GcConfig {
    /// How often the daemon runs GC (the CLI runs it before each download).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A task not used for this long is evicted.
    #[serde(with = "humantime_serde")]
    pub task_ttl: Duration,
    /// Disk use (percent) above which least recently used tasks are evicted.
    pub high_watermark_percent: u8,
    /// Eviction stops when disk use falls to this percent.
    pub low_watermark_percent: u8,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15 * 60),
            task_ttl: Duration::from_secs(6 * 3600),
            high_watermark_percent: 80,
            low_watermark_percent: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DownloadConfig {
    /// Total download rate of the agent, shared by all tasks.
    pub rate_limit: ByteRate,
    /// Pieces of one task fetched at the same time.
    pub concurrent_pieces: usize,
    /// Pieces fetched from the origin at the same time when this agent is the
    /// swarm's source for a task (the scheduler sent it back to source):
    /// fewer than `concurrentPieces`, so each piece finishes sooner and peers
    /// can start passing it on while the rest arrives (2 measured better than
    /// 4 in darter-swarm with a bandwidth-capped origin).
    pub source_concurrent_pieces: usize,
    /// Pieces fetched from peers at the same time (one per parent at most).
    /// A few, so each arrives at full speed and can be passed on early.
    pub peer_concurrent_pieces: usize,
    /// A piece request that receives no bytes for this long is abandoned and retried.
    #[serde(with = "humantime_serde")]
    pub piece_timeout: Duration,
    /// Retries of one piece (with exponential backoff) before the download fails.
    pub piece_retries: usize,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            rate_limit: ByteRate(10 << 30),
            concurrent_pieces: 16,
            source_concurrent_pieces: 2,
            peer_concurrent_pieces: 4,
            piece_timeout: Duration::from_secs(30),
            piece_retries: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OriginConfig {
    /// PEM file of extra CA certificates trusted for HTTPS origins (added to the
    /// built-in web PKI roots).
    pub ca_bundle: Option<PathBuf>,
    /// Time allowed to open a connection to the origin.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            ca_bundle: None,
            connect_timeout: Duration::from_secs(10),
            max_redirects: 10,
        }
    }
}

impl AgentConfig {
    /// Loads `path`; with no path, the default location if it exists, else defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let cfg: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::storage::check_watermarks(
            self.gc.high_watermark_percent,
            self.gc.low_watermark_percent,
        )
        .map_err(ConfigError::Invalid)?;
        if self.download.concurrent_pieces == 0
            || self.download.source_concurrent_pieces == 0
            || self.download.peer_concurrent_pieces == 0
        {
            return Err(ConfigError::Invalid(
                "download.concurrentPieces, sourceConcurrentPieces and peerConcurrentPieces must be at least 1"
                    .into(),
            ));
        }
        if self.upload.rate_limit.0 == 0
            || self.upload.slots == 0
            || self.upload.concurrent_pieces == 0
        {
            return Err(ConfigError::Invalid(
                "upload.rateLimit, upload.slots and upload.concurrentPieces must be positive"
                    .into(),
            ));
        }
        if self.download.rate_limit.0 == 0 {
            return Err(ConfigError::Invalid(
                "download.rateLimit must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_partial_files_use_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "").unwrap();
        let c = AgentConfig::load(Some(&p)).unwrap();
        assert_eq!(c.download.concurrent_pieces, 16);
        std::fs::write(
            &p,
            "download:\n  rateLimit: 40MiB/s\ngc:\n  taskTtl: 1h\nstorage:\n  capacity: 2GiB\n",
        )
        .unwrap();
        let c = AgentConfig::load(Some(&p)).unwrap();
        assert_eq!(c.download.rate_limit.0, 40 << 20);
        assert_eq!(c.gc.task_ttl, Duration::from_secs(3600));
        assert_eq!(c.storage.capacity, Some(ByteSize::gib(2)));
        assert_eq!(c.gc.high_watermark_percent, 80);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "download:\n  rateLimt: 1MiB\n").unwrap();
        let e = AgentConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("rateLimt"), "{e}");
        std::fs::write(&p, "gc:\n  lowWatermarkPercent: 90\n").unwrap();
        let e = AgentConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("watermarks"), "{e}");
        assert!(AgentConfig::load(Some(&dir.path().join("missing.yaml"))).is_err());
    }
}
