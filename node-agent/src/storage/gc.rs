//! Eviction: tasks unused past their TTL, then least recently used tasks while
//! disk use is above the high watermark, down to the low watermark.

use super::{Storage, TaskMeta, now_secs};
use crate::error::{Error, Result};
use darter_common::ByteSize;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GcPolicy {
    pub task_ttl: Duration,
    pub high_watermark_percent: u8,
    pub low_watermark_percent: u8,
    /// Byte budget of the cache; `None` measures the whole filesystem instead.
    pub capacity: Option<u64>,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            task_ttl: Duration::from_secs(6 * 3600),
            high_watermark_percent: 80,
            low_watermark_percent: 60,
            capacity: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub used: u64,
    pub total: u64,
    pub available: u64,
}

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// (task id, reason) of each evicted task.
    pub evicted: Vec<(String, &'static str)>,
    pub freed_bytes: u64,
}

/// The one rule for GC watermarks (config, operator settings, run time):
/// `low < high <= 100`.
pub fn check_watermarks(high: u8, low: u8) -> std::result::Result<(), String> {
    if high > 100 || low >= high {
        return Err(format!(
            "gc watermarks must satisfy low < high <= 100 (low {low}, high {high})"
        ));
    }
    Ok(())
}

impl Storage {
    pub fn gc_policy(&self) -> GcPolicy {
        self.gc.read().clone()
    }

    /// New disk-use watermarks for the next GC round; refused unless
    /// `low < high <= 100`.
    pub fn set_watermarks(&self, high: u8, low: u8) -> Result<()> {
        check_watermarks(high, low).map_err(Error::Config)?;
        let mut gc = self.gc.write();
        gc.high_watermark_percent = high;
        gc.low_watermark_percent = low;
        Ok(())
    }

    pub fn usage(&self) -> Result<DiskUsage> {
        if let Some(capacity) = self.gc.read().capacity {
            let mut used = 0;
            for t in self.metadata.tasks()? {
                used += self.content.allocated(&t.id);
            }
            return Ok(DiskUsage {
                used,
                total: capacity,
                available: capacity.saturating_sub(used),
            });
        }
        let st = rustix::fs::statvfs(self.content.dir()).map_err(|e| {
            Error::io(
                format!("cannot stat filesystem of {}", self.content.dir().display()),
                e.into(),
            )
        })?;
        let total = st.f_blocks * st.f_frsize;
        Ok(DiskUsage {
            used: total.saturating_sub(st.f_bfree * st.f_frsize),
            total,
            available: st.f_bavail * st.f_frsize,
        })
    }

    fn evict(&self, task: &TaskMeta, reason: &'static str, report: &mut GcReport) -> Result<()> {
        let freed = self.content.allocated(&task.id);
        self.remove_task(&task.id)?;
        tracing::info!(task = %task.id, url = %task.url, reason, freed, "evicted task");
        report.evicted.push((task.id.clone(), reason));
        report.freed_bytes += freed;
        Ok(())
    }

    /// Runs GC, making room for `need` more bytes and never touching `protect`.
    pub fn gc(&self, need: u64, protect: &[&str]) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut tasks: Vec<TaskMeta> = self
            .metadata
            .tasks()?
            .into_iter()
            .filter(|t| !protect.contains(&t.id.as_str()))
            .collect();
        let now = now_secs();
        let policy = self.gc_policy();
        let ttl = policy.task_ttl.as_secs();
        let (expired, mut live): (Vec<_>, Vec<_>) = tasks
            .drain(..)
            .partition(|t| now.saturating_sub(t.accessed_at) > ttl);
        for t in &expired {
            self.evict(t, "ttl", &mut report)?;
        }
        let pct = |total: u64, p: u8| (u128::from(total) * u128::from(p) / 100) as u64;
        let usage = self.usage()?;
        if usage.used.saturating_add(need) > pct(usage.total, policy.high_watermark_percent) {
            live.sort_by_key(|t| t.accessed_at);
            let low = pct(usage.total, policy.low_watermark_percent);
            // Measured once; each eviction takes off what it freed.
            let mut used = usage.used;
            for t in &live {
                if used.saturating_add(need) <= low {
                    break;
                }
                let before = report.freed_bytes;
                self.evict(t, "watermark", &mut report)?;
                used = used.saturating_sub(report.freed_bytes - before);
            }
        }
        Ok(report)
    }

    /// Makes room for `need` bytes (GC first), or fails with a clear no-space error.
    pub fn reserve(&self, need: u64, protect: &[&str]) -> Result<GcReport> {
        let report = self.gc(need, protect)?;
        let usage = self.usage()?;
        if need > usage.available {
            return Err(Error::NoSpace {
                needed: ByteSize(need),
                available: ByteSize(usage.available),
                dir: self.dir().to_path_buf(),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TaskState;

    fn add_task(s: &Storage, id: &str, len: u64, accessed_at: u64) {
        s.content.open_for_write(id, Some(len)).unwrap();
        s.metadata
            .put_task(&TaskMeta {
                id: id.into(),
                url: format!("http://o/{id}"),
                tag: None,
                application: None,
                piece_length: len,
                content_length: Some(len),
                state: TaskState::Succeeded,
                created_at: accessed_at,
                accessed_at,
                finished_at: Some(accessed_at),
            })
            .unwrap();
    }

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn ttl_then_lru_down_to_low_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let policy = GcPolicy {
            task_ttl: Duration::from_secs(3600),
            high_watermark_percent: 80,
            low_watermark_percent: 50,
            capacity: Some(10 << 20),
        };
        let s = Storage::open(dir.path(), policy).unwrap();
        let now = now_secs();
        add_task(&s, &id('a'), 2 << 20, now - 7200); // expired
        add_task(&s, &id('b'), 2 << 20, now - 30); // oldest live
        add_task(&s, &id('c'), 2 << 20, now - 20);
        add_task(&s, &id('d'), 2 << 20, now - 10);
        assert_eq!(s.usage().unwrap().used, 8 << 20);

        // Nothing needed: only the expired task goes (6 MiB <= 8 MiB high).
        let r = s.gc(0, &[]).unwrap();
        assert_eq!(r.evicted, vec![(id('a'), "ttl")]);

        // 3 MiB more: 9 > 8 high, so evict LRU until used+3 <= 5 low: b and c go.
        let r = s.reserve(3 << 20, &[]).unwrap();
        assert_eq!(
            r.evicted,
            vec![(id('b'), "watermark"), (id('c'), "watermark")]
        );
        assert!(s.metadata.task(&id('d')).unwrap().is_some());
        assert!(!s.content.path(&id('b')).exists());
    }

    #[test]
    fn protected_tasks_stay_and_impossible_requests_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let policy = GcPolicy {
            capacity: Some(4 << 20),
            ..GcPolicy::default()
        };
        let s = Storage::open(dir.path(), policy).unwrap();
        add_task(&s, &id('a'), 3 << 20, now_secs());
        let e = s.reserve(2 << 20, &[&id('a')]).unwrap_err();
        assert!(matches!(e, Error::NoSpace { .. }), "{e}");
        assert!(e.to_string().contains("no space"), "{e}");
        assert!(s.metadata.task(&id('a')).unwrap().is_some());
        // Without protection the old task makes way.
        s.reserve(2 << 20, &[]).unwrap();
        assert!(s.metadata.task(&id('a')).unwrap().is_none());
    }
}
