//! The gRPC upload server: piece availability (`SyncPieces`, pushed as pieces
//! land) and piece bytes (`DownloadPiece`, the fallback data path). Honours the
//! shared upload limits and refuses everything in leech mode.

use super::CHUNK;
use super::upload::Uploads;
use crate::storage::{Storage, TaskState};
use darter_proto::peer::v1 as pb;
use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct PeerService {
    storage: Arc<Storage>,
    uploads: Arc<Uploads>,
    /// How long SyncPieces waits for a task this agent registered but has not
    /// started storing yet (a parent still asking its origin for the length).
    pub task_wait: Duration,
}

impl PeerService {
    pub fn new(storage: Arc<Storage>, uploads: Arc<Uploads>) -> Self {
        Self {
            storage,
            uploads,
            task_wait: Duration::from_secs(30),
        }
    }

    fn check_shared(&self) -> Result<(), Status> {
        if self.uploads.refuses() {
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

/// Streams a task's pieces to `tx`: all held now, then each new one as storage
/// reports a change, until the task is complete, removed, or the child leaves.
async fn push_pieces(
    storage: Arc<Storage>,
    task_id: String,
    wait: Duration,
    tx: mpsc::Sender<Result<pb::PieceAvailability, Status>>,
) {
    let mut changes = storage.metadata.subscribe(&task_id);
    // Pieces stored before this index are covered by the first full read.
    let mut logged = changes.borrow_and_update().pieces.len();
    let mut sent = HashSet::new();
    let appear_by = tokio::time::Instant::now() + wait;
    let mut seen_task = false;
    loop {
        // Marked seen before reading, so a write racing this read wakes us
        // again; the log says which pieces are new.
        let fresh: Vec<u32> = {
            let c = changes.borrow_and_update();
            let fresh = c.pieces.get(logged..).unwrap_or_default().to_vec();
            logged = c.pieces.len();
            fresh
        };
        match storage.metadata.task(&task_id) {
            Ok(Some(task)) => {
                let numbers = if seen_task {
                    fresh
                } else {
                    // First sight of the task: everything held so far.
                    seen_task = true;
                    let Ok(pieces) = storage.metadata.pieces(&task_id) else {
                        return;
                    };
                    pieces.iter().map(|p| p.number).chain(fresh).collect()
                };
                let new: Vec<u32> = numbers.into_iter().filter(|n| sent.insert(*n)).collect();
                let complete = task.state == TaskState::Succeeded;
                let msg = pb::PieceAvailability {
                    numbers: new,
                    content_length: task.content_length,
                    piece_length: task.piece_length,
                    complete,
                };
                if (!msg.numbers.is_empty() || complete || sent.is_empty())
                    && tx.send(Ok(msg)).await.is_err()
                {
                    return;
                }
                if complete {
                    return;
                }
            }
            Ok(None) if seen_task || tokio::time::Instant::now() >= appear_by => {
                let _ = tx
                    .send(Err(Status::not_found(format!(
                        "task {task_id} is not here"
                    ))))
                    .await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Err(internal(e))).await;
                return;
            }
        }
        // A missed wake-up costs at most a second, never a stuck child.
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tx.closed() => return,
        }
    }
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
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(push_pieces(
            self.storage.clone(),
            task_id,
            self.task_wait,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn download_piece(
        &self,
        req: Request<pb::DownloadPieceRequest>,
    ) -> Result<Response<Self::DownloadPieceStream>, Status> {
        self.check_shared()?;
        let permit = self
            .uploads
            .try_slot()
            .ok_or_else(|| Status::resource_exhausted("no free upload slot"))?;
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
        let uploads = self.uploads.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limiter = uploads.limiter();
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
                uploads.count(data.len() as u64);
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
