//! A plain TCP data path for piece bytes, measured against gRPC streaming
//! (`examples/transfer_bench.rs`): length-prefixed frames and `sendfile(2)`
//! straight from the content file, so the parent copies no bytes in user space.
//!
//! Request: 64 ASCII bytes of task id, then the piece number (u32 BE).
//! Response: status (u8: 0 ok, 1 not found, 2 refused), then for ok the piece
//! length (u64 BE) and CRC-32C (u32 BE) and the bytes. Connections are reused.

use super::{corrupt, finish_piece};
use crate::engine::sink::PieceSink;
use crate::error::{Error, Result};
use crate::storage::{PieceMeta, Storage};
use darter_common::{PieceRange, RateLimiter};
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

const OK: u8 = 0;
const NOT_FOUND: u8 = 1;
const REFUSED: u8 = 2;
const SENDFILE_CHUNK: u64 = 1 << 20;
const READ_BUFFER: usize = 256 * 1024;

/// Serves pieces from `storage` until the listener fails.
pub async fn serve(
    listener: TcpListener,
    storage: Arc<Storage>,
    limiter: Arc<RateLimiter>,
    disable_shared: Arc<AtomicBool>,
) {
    while let Ok((sock, _)) = listener.accept().await {
        let _ = sock.set_nodelay(true);
        let (storage, limiter, leech) = (storage.clone(), limiter.clone(), disable_shared.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_conn(sock, &storage, &limiter, &leech).await {
                tracing::debug!(error = %e, "piece connection ended");
            }
        });
    }
}

async fn serve_conn(
    mut sock: TcpStream,
    storage: &Storage,
    limiter: &RateLimiter,
    leech: &AtomicBool,
) -> std::io::Result<()> {
    loop {
        let mut req = [0u8; 68];
        if sock.read_exact(&mut req).await.is_err() {
            return Ok(()); // the client closed the connection
        }
        let task_id = String::from_utf8_lossy(&req[..64]).into_owned();
        let number = u32::from_be_bytes([req[64], req[65], req[66], req[67]]);
        if leech.load(Ordering::Relaxed) {
            sock.write_all(&[REFUSED]).await?;
            continue;
        }
        let piece = storage.metadata.piece(&task_id, number).ok().flatten();
        let file = storage.content.open_for_read(&task_id).ok();
        let (Some(piece), Some(file)) = (piece, file) else {
            sock.write_all(&[NOT_FOUND]).await?;
            continue;
        };
        let mut head = [0u8; 13];
        head[0] = OK;
        head[1..9].copy_from_slice(&piece.length.to_be_bytes());
        head[9..13].copy_from_slice(&piece.crc32c.to_be_bytes());
        sock.write_all(&head).await?;
        let mut off = piece.offset;
        let end = piece.offset + piece.length;
        while off < end {
            let n = (end - off).min(SENDFILE_CHUNK);
            limiter.acquire(n as usize).await;
            let mut left = n;
            while left > 0 {
                sock.writable().await?;
                match sock.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(sock.as_fd(), &file, Some(&mut off), left as usize)
                        .map_err(std::io::Error::from)
                }) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(sent) => left -= sent as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Fetches one piece over an open connection, streaming it to its offset in
/// `file` (one read buffer, not the whole piece, in memory) and checking its
/// length and CRC-32C like the gRPC path.
pub async fn fetch_piece(
    sock: &mut TcpStream,
    parent: &str,
    task_id: &str,
    range: PieceRange,
    file: Arc<File>,
) -> Result<PieceMeta> {
    let io = |e: std::io::Error| Error::io(format!("piece transfer from {parent}"), e);
    let mut req = Vec::with_capacity(68);
    req.extend_from_slice(task_id.as_bytes());
    req.extend_from_slice(&range.number.to_be_bytes());
    sock.write_all(&req).await.map_err(io)?;
    let status = sock.read_u8().await.map_err(io)?;
    if status != OK {
        return Err(Error::PeerRefused {
            parent: parent.to_string(),
            piece: range.number,
            detail: if status == REFUSED {
                "leech mode"
            } else {
                "piece not held"
            }
            .into(),
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
        sink.push(&buf[..n]).await?;
    }
    finish_piece(sink, parent, range, Some(stated_crc)).await
}
