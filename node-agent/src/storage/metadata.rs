//! Task and piece metadata in RocksDB: column family `task` keyed by task id,
//! column family `piece` keyed `{task_id}/{number:010}` so one prefix scan lists
//! a task's pieces in order.

use crate::error::{Error, Result};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

const CF_TASK: &str = "task";
const CF_PIECE: &str = "piece";
/// 64 hex digits of the task id plus the `/` separator.
const PIECE_PREFIX_LEN: usize = 65;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Being downloaded (or interrupted while it was).
    Running,
    /// Every piece is stored and verified.
    Succeeded,
    /// The last attempt failed; stored pieces are still valid.
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    pub id: String,
    /// The URL as first requested (signatures included; informative only).
    pub url: String,
    pub tag: Option<String>,
    pub application: Option<String>,
    pub piece_length: u64,
    /// Unknown until the origin tells, or until a streamed download ends.
    pub content_length: Option<u64>,
    pub state: TaskState,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last download or export; GC evicts by it.
    pub accessed_at: u64,
    pub finished_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceSource {
    Origin,
    Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceMeta {
    pub number: u32,
    pub offset: u64,
    pub length: u64,
    pub crc32c: u32,
    pub source: PieceSource,
    pub finished_at: u64,
}

/// What changed in one task since its first watcher subscribed (every
/// write of its record or pieces wakes the watchers).
#[derive(Debug, Default)]
pub struct TaskChanges {
    /// Piece numbers stored, in order, so a watcher reads only what is new
    /// instead of rescanning the task's pieces.
    pub pieces: Vec<u32>,
}

pub struct Metadata {
    db: DB,
    /// Per watched task, so an upload stream wakes for its own task's pieces
    /// only (never for other tasks' writes) and without polling the database.
    changes: parking_lot::Mutex<HashMap<String, tokio::sync::watch::Sender<TaskChanges>>>,
}

fn piece_key(task_id: &str, number: u32) -> String {
    format!("{task_id}/{number:010}")
}

fn piece_prefix(task_id: &str) -> String {
    format!("{task_id}/")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Metadata(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Metadata(e.to_string()))
}

impl Metadata {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let mut piece_opts = Options::default();
        piece_opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(
            PIECE_PREFIX_LEN,
        ));
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_TASK, Options::default()),
            ColumnFamilyDescriptor::new(CF_PIECE, piece_opts),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            let msg = e.into_string();
            // Another process: "While lock file: .../LOCK: Resource temporarily
            // unavailable"; this process: "lock hold by current process".
            if msg.contains("/LOCK") || msg.contains("lock hold") {
                Error::StorageLocked {
                    dir: dir.to_path_buf(),
                }
            } else {
                Error::Metadata(format!("cannot open {}: {msg}", dir.display()))
            }
        })?;
        Ok(Self {
            db,
            changes: parking_lot::Mutex::default(),
        })
    }

    /// Wakes when `task_id`'s record or pieces change.
    pub fn subscribe(&self, task_id: &str) -> tokio::sync::watch::Receiver<TaskChanges> {
        let mut changes = self.changes.lock();
        // Tasks nobody watches any more stop being tracked.
        changes.retain(|_, s| s.receiver_count() > 0);
        changes
            .entry(task_id.to_string())
            .or_insert_with(|| tokio::sync::watch::Sender::new(TaskChanges::default()))
            .subscribe()
    }

    fn changed(&self, task_id: &str, piece: Option<u32>) {
        if let Some(s) = self.changes.lock().get(task_id) {
            s.send_modify(|c| c.pieces.extend(piece));
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Metadata(format!("column family {name} missing")))
    }

    pub fn task(&self, id: &str) -> Result<Option<TaskMeta>> {
        self.db
            .get_cf(self.cf(CF_TASK)?, id)?
            .map(|b| decode(&b))
            .transpose()
    }

    pub fn put_task(&self, task: &TaskMeta) -> Result<()> {
        self.db.put_cf(self.cf(CF_TASK)?, &task.id, encode(task)?)?;
        self.changed(&task.id, None);
        Ok(())
    }

    pub fn tasks(&self) -> Result<Vec<TaskMeta>> {
        self.db
            .iterator_cf(self.cf(CF_TASK)?, IteratorMode::Start)
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    pub fn put_piece(&self, task_id: &str, piece: &PieceMeta) -> Result<()> {
        self.db.put_cf(
            self.cf(CF_PIECE)?,
            piece_key(task_id, piece.number),
            encode(piece)?,
        )?;
        self.changed(task_id, Some(piece.number));
        Ok(())
    }

    pub fn delete_piece(&self, task_id: &str, number: u32) -> Result<()> {
        Ok(self
            .db
            .delete_cf(self.cf(CF_PIECE)?, piece_key(task_id, number))?)
    }

    /// One piece record (a point lookup, not a scan of the task's pieces).
    pub fn piece(&self, task_id: &str, number: u32) -> Result<Option<PieceMeta>> {
        self.db
            .get_cf(self.cf(CF_PIECE)?, piece_key(task_id, number))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// A task's pieces in piece order.
    pub fn pieces(&self, task_id: &str) -> Result<Vec<PieceMeta>> {
        let prefix = piece_prefix(task_id);
        let mode = IteratorMode::From(prefix.as_bytes(), Direction::Forward);
        let mut out = Vec::new();
        for kv in self.db.iterator_cf(self.cf(CF_PIECE)?, mode) {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    /// Drops every piece record of a task, keeping the task record.
    pub fn clear_pieces(&self, task_id: &str) -> Result<()> {
        let cf = self.cf(CF_PIECE)?;
        // '0' sorts right after '/', so this range is exactly the task's prefix.
        let (from, to) = (piece_prefix(task_id), format!("{task_id}0"));
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, from, to);
        Ok(self.db.write(batch)?)
    }

    pub fn delete_task(&self, task_id: &str) -> Result<()> {
        self.clear_pieces(task_id)?;
        self.db.delete_cf(self.cf(CF_TASK)?, task_id)?;
        self.changed(task_id, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> TaskMeta {
        TaskMeta {
            id: id.into(),
            url: "http://o/x".into(),
            tag: None,
            application: None,
            piece_length: 4,
            content_length: Some(10),
            state: TaskState::Running,
            created_at: 1,
            accessed_at: 1,
            finished_at: None,
        }
    }

    fn piece(n: u32) -> PieceMeta {
        PieceMeta {
            number: n,
            offset: u64::from(n) * 4,
            length: 4,
            crc32c: n,
            source: PieceSource::Origin,
            finished_at: 2,
        }
    }

    #[test]
    fn pieces_are_scoped_by_task_prefix_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = "a".repeat(64);
        let b = format!("{}b", "a".repeat(63)); // shares 63 chars with `a`
        {
            let m = Metadata::open(dir.path()).unwrap();
            m.put_task(&task(&a)).unwrap();
            m.put_task(&task(&b)).unwrap();
            for n in [2, 0, 11] {
                m.put_piece(&a, &piece(n)).unwrap();
            }
            m.put_piece(&b, &piece(1)).unwrap();
            // A second open of the same directory is refused while this one lives.
            assert!(matches!(
                Metadata::open(dir.path()),
                Err(Error::StorageLocked { .. })
            ));
        }
        let m = Metadata::open(dir.path()).unwrap();
        let nums: Vec<u32> = m.pieces(&a).unwrap().iter().map(|p| p.number).collect();
        assert_eq!(nums, vec![0, 2, 11]);
        assert_eq!(m.piece(&a, 11).unwrap(), Some(piece(11)));
        assert_eq!(m.piece(&a, 1).unwrap(), None);
        assert_eq!(m.pieces(&b).unwrap().len(), 1);
        m.delete_task(&a).unwrap();
        assert!(m.pieces(&a).unwrap().is_empty());
        assert!(m.task(&a).unwrap().is_none());
        assert_eq!(m.pieces(&b).unwrap().len(), 1);
        assert_eq!(m.tasks().unwrap().len(), 1);
    }

    #[test]
    fn a_watcher_wakes_for_its_own_task_and_reads_only_new_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        m.put_task(&task(&a)).unwrap();
        let mut rx = m.subscribe(&a);
        rx.borrow_and_update();
        m.put_task(&task(&b)).unwrap();
        m.put_piece(&b, &piece(1)).unwrap();
        assert!(!rx.has_changed().unwrap(), "woken by another task's writes");
        m.put_piece(&a, &piece(3)).unwrap();
        m.put_piece(&a, &piece(0)).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().pieces, [3, 0]);
        drop(rx);
        // Unwatched tasks are dropped from tracking on the next subscribe.
        let _rx = m.subscribe(&b);
        assert_eq!(m.changes.lock().len(), 1);
    }
}
