//! Streams a piece's bytes into the task's content file at its offset, computing
//! CRC-32C on the way; memory per piece in flight is one write buffer.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

const WRITE_BUFFER: usize = 512 * 1024;

pub struct PieceSink {
    file: Arc<File>,
    /// File offset of the next flush.
    offset: u64,
    buf: Vec<u8>,
    crc: u32,
    written: u64,
}

impl PieceSink {
    pub fn new(file: Arc<File>, offset: u64) -> Self {
        Self {
            file,
            offset,
            buf: Vec::with_capacity(WRITE_BUFFER),
            crc: 0,
            written: 0,
        }
    }

    /// Bytes accepted so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    pub async fn push(&mut self, mut data: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.written += data.len() as u64;
        while !data.is_empty() {
            let room = WRITE_BUFFER - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == WRITE_BUFFER {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let file = self.file.clone();
        let offset = self.offset;
        let len = buf.len() as u64;
        let (res, mut buf) = tokio::task::spawn_blocking(move || {
            let r = file.write_all_at(&buf, offset);
            (r, buf)
        })
        .await
        .map_err(|e| Error::io("piece writer", std::io::Error::other(e)))?;
        res.map_err(|e| Error::io("cannot write piece to content file", e))?;
        self.offset += len;
        buf.clear();
        self.buf = buf;
        Ok(())
    }

    /// Flushes what is left; returns (bytes, CRC-32C).
    pub async fn finish(mut self) -> Result<(u64, u32)> {
        self.flush().await?;
        Ok((self.written, self.crc))
    }
}
