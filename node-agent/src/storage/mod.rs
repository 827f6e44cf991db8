//! Local storage of tasks: content files plus RocksDB metadata, with GC.

pub mod content;
pub mod gc;
pub mod metadata;

pub use content::Content;
pub use gc::{DiskUsage, GcPolicy, GcReport, check_watermarks};
pub use metadata::{Metadata, PieceMeta, PieceSource, TaskMeta, TaskState};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Storage {
    dir: PathBuf,
    pub metadata: Metadata,
    pub content: Content,
    /// Watermarks can change at run time (settings from the operator).
    gc: parking_lot::RwLock<GcPolicy>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Storage {
    /// Opens (creating) `dir/metadata` and `dir/content`. Only one process may
    /// hold a storage directory at a time.
    pub fn open(dir: &Path, gc: GcPolicy) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let metadata = Metadata::open(&dir.join("metadata"))?;
        let content = Content::open(dir.join("content"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metadata,
            content,
            gc: parking_lot::RwLock::new(gc),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes a task's content and metadata.
    pub fn remove_task(&self, task_id: &str) -> Result<()> {
        self.content.remove(task_id)?;
        self.metadata.delete_task(task_id)
    }

    /// The stored pieces of `task` whose bytes still match their CRC-32C; records
    /// of pieces that no longer match (or cannot be read) are dropped so the piece
    /// is fetched again.
    pub fn verified_pieces(&self, task: &TaskMeta) -> Result<Vec<PieceMeta>> {
        let pieces = self.metadata.pieces(&task.id)?;
        if pieces.is_empty() {
            return Ok(pieces);
        }
        let file = match self.content.open_for_read(&task.id) {
            Ok(f) => f,
            Err(_) => {
                self.metadata.clear_pieces(&task.id)?;
                return Ok(Vec::new());
            }
        };
        let mut good = Vec::with_capacity(pieces.len());
        for p in pieces {
            match content::crc32c_of_range(&file, p.offset, p.length) {
                Ok(crc) if crc == p.crc32c => good.push(p),
                outcome => {
                    tracing::warn!(task = %task.id, piece = p.number, ?outcome,
                        expected = p.crc32c, "stored piece failed its CRC check; will fetch again");
                    self.metadata.delete_piece(&task.id, p.number)?;
                }
            }
        }
        Ok(good)
    }
}
