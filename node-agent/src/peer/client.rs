//! Fetching one piece from a parent into the task's content file.

use super::{corrupt, finish_piece};
use crate::engine::sink::PieceSink;
use crate::error::{Error, Refusal, Result};
use crate::storage::PieceMeta;
use darter_common::PieceRange;
use darter_proto::peer::v1 as pb;
use std::fs::File;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Downloads piece `range` of `task_id` from `parent`, writing it at its offset
/// in `file`. The bytes must match the parent's length and CRC-32C; a mismatch
/// is `CorruptPiece`, so the caller can mark the parent bad and go elsewhere.
pub async fn fetch_piece(
    client: &mut pb::peer_client::PeerClient<Channel>,
    parent: &str,
    task_id: &str,
    range: PieceRange,
    file: Arc<File>,
) -> Result<PieceMeta> {
    let refused = |s: tonic::Status| Error::PeerRefused {
        parent: parent.to_string(),
        piece: range.number,
        reason: match s.code() {
            tonic::Code::PermissionDenied => Refusal::Leech,
            tonic::Code::ResourceExhausted => Refusal::Busy,
            tonic::Code::NotFound => Refusal::NotHeld,
            _ => Refusal::Other(s.message().to_string()),
        },
    };
    let mut chunks = client
        .download_piece(pb::DownloadPieceRequest {
            task_id: task_id.to_string(),
            number: range.number,
            peer_id: String::new(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let corrupt = |detail: String| corrupt(parent, range, detail);
    let mut sink = PieceSink::new(file, range.offset);
    let mut expected_crc = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(refused)?;
        if let Some(len) = chunk.piece_length
            && len != range.length
        {
            return Err(corrupt(format!("length {len}, expected {}", range.length)));
        }
        if chunk.crc32c.is_some() {
            expected_crc = chunk.crc32c;
        }
        if chunk.offset != sink.len() || sink.len() + chunk.data.len() as u64 > range.length {
            return Err(corrupt(format!(
                "chunk at {} out of order or too long",
                chunk.offset
            )));
        }
        sink.push(&chunk.data).await?;
    }
    finish_piece(sink, parent, range, expected_crc).await
}
