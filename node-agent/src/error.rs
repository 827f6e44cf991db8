//! Errors of the node agent's engine, each worded so a user can act on it.

use darter_common::{ByteSize, Digest};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("origin answered {status} for {url}")]
    OriginStatus { url: String, status: u16 },
    #[error("connection refused by {host}")]
    ConnectionRefused { host: String },
    #[error("DNS lookup failed for {host}")]
    Dns { host: String },
    #[error("TLS handshake with {host} failed: {detail}")]
    Tls { host: String, detail: String },
    #[error("cannot reach {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("origin broke off the transfer of {url}: {detail}")]
    Transfer { url: String, detail: String },
    #[error("origin protocol error for {url}: {detail}")]
    OriginProtocol { url: String, detail: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("no space left for {needed} in {dir} ({available} available after GC)")]
    NoSpace {
        needed: ByteSize,
        available: ByteSize,
        dir: PathBuf,
    },
    #[error("storage {dir} is in use by another darter process")]
    StorageLocked { dir: PathBuf },
    #[error("storage metadata error: {0}")]
    Metadata(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {0} is not in local storage")]
    TaskNotFound(String),
    #[error("piece {piece} from peer {parent} is corrupt: {detail}")]
    CorruptPiece {
        parent: String,
        piece: u32,
        detail: String,
    },
    #[error("peer {parent} refused piece {piece}: {reason}")]
    PeerRefused {
        parent: String,
        piece: u32,
        reason: Refusal,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why a parent did not send a piece; the downloader acts on the kind.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// It does not share at all: drop it.
    #[error("leech mode")]
    Leech,
    /// All its upload slots are taken: ask again shortly.
    #[error("no free upload slot")]
    Busy,
    /// It holds the piece back while spreading it: get it elsewhere for now.
    #[error("piece is being spread; ask another parent")]
    Spreading,
    /// It does not hold the piece (any more).
    #[error("piece not held")]
    NotHeld,
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is the filesystem saying it is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::NoSpace { .. })
            || matches!(self, Self::Io { source, .. }
                if source.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()))
    }

    /// Whether trying the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::OriginStatus { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::ConnectionRefused { .. }
            | Self::Connect { .. }
            | Self::Timeout(_)
            | Self::Transfer { .. } => true,
            _ => false,
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Self::Metadata(e.into_string())
    }
}
