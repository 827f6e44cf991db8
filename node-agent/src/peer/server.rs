//! The upload server. Honours the upload rate limit and a concurrent-upload
//! limit, and refuses everything in leech mode (`disableShared`).

use super::CHUNK;
use crate::storage::{Storage, TaskState};
use darter_common::RateLimiter;
use darter_proto::peer::v1 as pb;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct PeerService {
    storage: Arc<Storage>,
    limiter: Arc<RateLimiter>,
    slots: Arc<Semaphore>,
    /// Leech mode: refuse all uploads. Settable at run time (PeerPolicy).
    pub disable_shared: Arc<AtomicBool>,
    /// Body bytes uploaded.
    pub uploaded: Arc<AtomicU64>,
    /// How often a SyncPieces stream looks for newly finished pieces.
    pub sync_interval: Duration,
}

impl PeerService {
    pub fn new(storage: Arc<Storage>, limiter: Arc<RateLimiter>, upload_slots: usize) -> Self {
        Self {
            storage,
            limiter,
            slots: Arc::new(Semaphore::new(upload_slots.max(1))),
            disable_shared: Arc::new(AtomicBool::new(false)),
            uploaded: Arc::new(AtomicU64::new(0)),
            sync_interval: Duration::from_millis(100),
        }
    }

    fn check_shared(&self) -> Result<(), Status> {
        if self.disable_shared.load(Ordering::Relaxed) {
            return Err(Status::permission_denied(
                "this peer does not share (leech mode)",
            ));
        }
        Ok(())
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<pb::PieceChunk, Status>> + Send>>;
type Availability = Pin<Box<dyn Stream<Item = Result<pb::PieceAvailability, Status>> + Send>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type SyncPiecesStream = Availability;
    type DownloadPieceStream = Chunks;

    async fn sync_pieces(
        &self,
        req: Request<pb::SyncPiecesRequest>,
    ) -> Result<Response<Self::SyncPiecesStream>, Status> {
        self.check_shared()?;
        let task_id = req.into_inner().task_id;
        if self
            .storage
            .metadata
            .task(&task_id)
            .map_err(internal)?
            .is_none()
        {
            return Err(Status::not_found(format!("task {task_id} is not here")));
        }
        let (tx, rx) = mpsc::channel(4);
        let storage = self.storage.clone();
        let interval = self.sync_interval;
        tokio::spawn(async move {
            let mut sent = std::collections::HashSet::new();
            loop {
                let Ok(Some(task)) = storage.metadata.task(&task_id) else {
                    let _ = tx.send(Err(Status::not_found("task was removed"))).await;
                    return;
                };
                let Ok(pieces) = storage.metadata.pieces(&task_id) else {
                    return;
                };
                let new: Vec<u32> = pieces
                    .iter()
                    .map(|p| p.number)
                    .filter(|n| sent.insert(*n))
                    .collect();
                let complete = task.state == TaskState::Succeeded;
                if (!new.is_empty() || complete)
                    && tx
                        .send(Ok(pb::PieceAvailability {
                            numbers: new,
                            content_length: task.content_length,
                            piece_length: task.piece_length,
                            complete,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                if complete {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn download_piece(
        &self,
        req: Request<pb::DownloadPieceRequest>,
    ) -> Result<Response<Self::DownloadPieceStream>, Status> {
        self.check_shared()?;
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("no free upload slot"))?;
        let r = req.into_inner();
        let piece = self
            .storage
            .metadata
            .piece(&r.task_id, r.number)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!("piece {} of {} is not here", r.number, r.task_id))
            })?;
        let file = Arc::new(
            self.storage
                .content
                .open_for_read(&r.task_id)
                .map_err(internal)?,
        );
        let (tx, rx) = mpsc::channel(2);
        let limiter = self.limiter.clone();
        let uploaded = self.uploaded.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut off = 0u64;
            while off < piece.length || (piece.length == 0 && off == 0) {
                let n = (piece.length - off).min(CHUNK as u64) as usize;
                let f = file.clone();
                let at = piece.offset + off;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    f.read_exact_at(&mut buf, at).map(|()| buf)
                })
                .await;
                let data = match read {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(internal(e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(internal(e))).await;
                        return;
                    }
                };
                limiter.acquire(data.len()).await;
                uploaded.fetch_add(data.len() as u64, Ordering::Relaxed);
                let first = off == 0;
                let msg = pb::PieceChunk {
                    offset: off,
                    data,
                    piece_length: first.then_some(piece.length),
                    crc32c: first.then_some(piece.crc32c),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                off += n as u64;
                if piece.length == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
