//! The plain TCP data path for piece bytes, measured faster than gRPC streaming
//! (`examples/transfer_bench.rs`, docs/performance.md): length-prefixed frames,
//! `sendfile(2)` straight from the content file on plain connections, so the
//! parent copies no bytes in user space; over TLS (mTLS configured) the same
//! frames go through rustls.
//!
//! Request: 64 ASCII bytes of task id, the piece number (u32 BE) and a flags
//! byte (bit 0 "urgent": the child has nothing else to fetch, so a piece held
//! back for spreading is served anyway).
//! Response: status (u8: 0 ok, 1 not found, 2 refused, 3 busy, 4 piece being
//! spread: ask another parent or later), then for ok the
//! piece length (u64 BE) and CRC-32C (u32 BE) and the bytes. Connections are reused.

use super::upload::Uploads;
use super::{corrupt, finish_piece};
use crate::engine::sink::PieceSink;
use crate::error::{Error, Refusal, Result};
use crate::storage::{PieceMeta, Storage};
use darter_common::{PieceRange, RateLimiter};
use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

const OK: u8 = 0;
const NOT_FOUND: u8 = 1;
const REFUSED: u8 = 2;
const BUSY: u8 = 3;
const SPREADING: u8 = 4;
const REQUEST_LEN: usize = 69;
const URGENT: u8 = 1;
/// How long a request waits for an upload slot before the child is told to
/// try elsewhere.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One piece asked of one parent.
#[derive(Debug, Clone, Copy)]
pub struct Fetch<'a> {
    pub parent: &'a str,
    pub task_id: &'a str,
    pub range: PieceRange,
    /// The child has nothing else to fetch: do not hold the piece back.
    pub urgent: bool,
}
const SEND_CHUNK: u64 = 1 << 20;
const READ_BUFFER: usize = 256 * 1024;

/// Any connection a piece can travel over (plain or TLS).
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// How a server connection sends a byte range of a content file.
pub trait SendRange: Conn {
    fn send_range(
        &mut self,
        file: &File,
        off: u64,
        len: u64,
        limiter: &RateLimiter,
    ) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl SendRange for TcpStream {
    /// `sendfile(2)`: the bytes go from the page cache to the socket.
    async fn send_range(
        &mut self,
        file: &File,
        mut off: u64,
        len: u64,
        limiter: &RateLimiter,
    ) -> std::io::Result<()> {
        let end = off + len;
        while off < end {
            let n = (end - off).min(SEND_CHUNK);
            limiter.acquire(n as usize).await;
            let mut left = n;
            while left > 0 {
                self.writable().await?;
                match self.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(self.as_fd(), file, Some(&mut off), left as usize)
                        .map_err(std::io::Error::from)
                }) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(sent) => left -= sent as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

impl SendRange for TlsStream<TcpStream> {
    /// Through rustls: read and write in user space.
    async fn send_range(
        &mut self,
        file: &File,
        off: u64,
        len: u64,
        limiter: &RateLimiter,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; SEND_CHUNK as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(SEND_CHUNK) as usize;
            // A page-cache read of at most 1 MiB; not worth a blocking-pool hop.
            file.read_exact_at(&mut buf[..n], off + done)?;
            limiter.acquire(n).await;
            self.write_all(&buf[..n]).await?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Serves pieces from `storage` until the listener fails; with `tls`, every
/// connection must complete a (mutual) TLS handshake first.
pub async fn serve(
    listener: TcpListener,
    storage: Arc<Storage>,
    uploads: Arc<Uploads>,
    tls: Option<TlsAcceptor>,
) {
    while let Ok((sock, from)) = listener.accept().await {
        let _ = sock.set_nodelay(true);
        let (storage, uploads, tls) = (storage.clone(), uploads.clone(), tls.clone());
        tokio::spawn(async move {
            let r = match tls {
                None => serve_conn(sock, &storage, &uploads).await,
                Some(acceptor) => match acceptor.accept(sock).await {
                    Ok(s) => serve_conn(s, &storage, &uploads).await,
                    Err(e) => {
                        tracing::warn!(%from, error = %e, "TLS handshake on the data port failed");
                        return;
                    }
                },
            };
            if let Err(e) = r {
                tracing::debug!(%from, error = %e, "piece connection ended");
            }
        });
    }
}

async fn serve_conn<S: SendRange>(
    mut sock: S,
    storage: &Storage,
    uploads: &Uploads,
) -> std::io::Result<()> {
    loop {
        let mut req = [0u8; REQUEST_LEN];
        if sock.read_exact(&mut req).await.is_err() {
            return Ok(()); // the client closed the connection
        }
        let task_id = String::from_utf8_lossy(&req[..64]).into_owned();
        let number = u32::from_be_bytes([req[64], req[65], req[66], req[67]]);
        let urgent = req[68] & URGENT != 0;
        if uploads.refuses() {
            sock.write_all(&[REFUSED]).await?;
            continue;
        }
        let piece = storage.metadata.piece(&task_id, number).ok().flatten();
        let file = storage.content.open_for_read(&task_id).ok();
        let (Some(piece), Some(file)) = (piece, file) else {
            sock.write_all(&[NOT_FOUND]).await?;
            continue;
        };
        // Only an origin piece of a task still downloading here can be held
        // back; the task record is read just for those, and before queueing
        // for a slot, so a child is not made to wait only to hear "spreading".
        let from_origin = piece.source == crate::storage::PieceSource::Origin;
        let finished = || {
            storage
                .metadata
                .task(&task_id)
                .ok()
                .flatten()
                .is_some_and(|t| t.state == crate::storage::TaskState::Succeeded)
        };
        let limited = !urgent && from_origin && uploads.limits_copies() && {
            let done = finished();
            if done {
                uploads.forget_task(&task_id);
            }
            !done
        };
        if limited && uploads.held_back(&task_id, number) {
            sock.write_all(&[SPREADING]).await?;
            continue;
        }
        // An urgent child has nothing else to fetch: it does not queue.
        let slot = if urgent {
            None
        } else {
            match uploads.slot(SLOT_WAIT).await {
                Some(s) => Some(s),
                None => {
                    sock.write_all(&[BUSY]).await?;
                    continue;
                }
            }
        };
        if limited && !uploads.count_copy(&task_id, number) {
            sock.write_all(&[SPREADING]).await?;
            continue;
        }
        let mut head = [0u8; 13];
        head[0] = OK;
        head[1..9].copy_from_slice(&piece.length.to_be_bytes());
        head[9..13].copy_from_slice(&piece.crc32c.to_be_bytes());
        sock.write_all(&head).await?;
        let limiter = uploads.limiter();
        sock.send_range(&file, piece.offset, piece.length, &limiter)
            .await?;
        sock.flush().await?;
        drop(slot);
        uploads.count(piece.length);
    }
}

/// Fetches one piece over an open connection, streaming it to its offset in
/// `file` (one read buffer, not the whole piece, in memory) at most at the
/// `limiter`'s rate, and checking its length and CRC-32C like the gRPC path.
/// After an error the connection must not be reused.
pub async fn fetch_piece<S: Conn + ?Sized>(
    sock: &mut S,
    fetch: Fetch<'_>,
    file: Arc<File>,
    limiter: &RateLimiter,
) -> Result<PieceMeta> {
    let Fetch {
        parent,
        task_id,
        range,
        urgent,
    } = fetch;
    let io = |e: std::io::Error| Error::io(format!("piece transfer from {parent}"), e);
    if task_id.len() != 64 {
        return Err(Error::TaskNotFound(task_id.to_string()));
    }
    let mut req = Vec::with_capacity(REQUEST_LEN);
    req.extend_from_slice(task_id.as_bytes());
    req.extend_from_slice(&range.number.to_be_bytes());
    req.push(if urgent { URGENT } else { 0 });
    sock.write_all(&req).await.map_err(io)?;
    sock.flush().await.map_err(io)?;
    let status = sock.read_u8().await.map_err(io)?;
    if status != OK {
        return Err(Error::PeerRefused {
            parent: parent.to_string(),
            piece: range.number,
            reason: match status {
                REFUSED => Refusal::Leech,
                BUSY => Refusal::Busy,
                SPREADING => Refusal::Spreading,
                _ => Refusal::NotHeld,
            },
        });
    }
    let len = sock.read_u64().await.map_err(io)?;
    let stated_crc = sock.read_u32().await.map_err(io)?;
    if len != range.length {
        return Err(corrupt(
            parent,
            range,
            format!("length {len}, expected {}", range.length),
        ));
    }
    let mut sink = PieceSink::new(file, range.offset);
    let mut buf = vec![0u8; READ_BUFFER];
    while sink.len() < len {
        let want = (len - sink.len()).min(READ_BUFFER as u64) as usize;
        let n = sock.read(&mut buf[..want]).await.map_err(io)?;
        if n == 0 {
            break; // short piece: finish_piece reports it
        }
        limiter.acquire(n).await;
        sink.push(&buf[..n]).await?;
    }
    finish_piece(sink, parent, range, Some(stated_crc)).await
}
