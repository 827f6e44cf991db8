//! Agent <-> agent piece transfer (`darter.peer.v1`): the upload server that
//! serves stored pieces (also of unfinished tasks) and the client that fetches
//! one piece from a parent and checks it against the parent's CRC-32C.

pub mod client;
pub mod pool;
pub mod server;
pub mod tcp;
pub mod upload;

/// Bytes per chunk message on the wire.
pub const CHUNK: usize = 1 << 20;

use crate::engine::sink::PieceSink;
use crate::error::{Error, Result};
use crate::storage::{PieceMeta, PieceSource, now_secs};
use darter_common::PieceRange;

/// A piece from `parent` that failed its checks.
fn corrupt(parent: &str, range: PieceRange, detail: String) -> Error {
    Error::CorruptPiece {
        parent: parent.to_string(),
        piece: range.number,
        detail,
    }
}

/// Closes a piece received from `parent` on either data path: it must hold all
/// `range.length` bytes and match the CRC-32C the parent stated.
async fn finish_piece(
    sink: PieceSink,
    parent: &str,
    range: PieceRange,
    stated_crc: Option<u32>,
) -> Result<PieceMeta> {
    let (n, crc) = sink.finish().await?;
    if n != range.length {
        return Err(corrupt(
            parent,
            range,
            format!("ended after {n} of {} bytes", range.length),
        ));
    }
    match stated_crc {
        Some(want) if want == crc => Ok(PieceMeta {
            number: range.number,
            offset: range.offset,
            length: range.length,
            crc32c: crc,
            source: PieceSource::Peer,
            finished_at: now_secs(),
        }),
        Some(want) => Err(corrupt(
            parent,
            range,
            format!("CRC-32C {crc:08x}, parent said {want:08x}"),
        )),
        None => Err(corrupt(parent, range, "parent sent no CRC-32C".into())),
    }
}
