//! What both upload servers (gRPC and the TCP data path) share: the upload rate
//! limit, the concurrent-upload slots, leech mode and the byte counter. The
//! limit and leech mode can change at run time (settings from the operator).

use darter_common::{ByteRate, RateLimiter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Uploads {
    limiter: Arc<RateLimiter>,
    slots: Arc<Semaphore>,
    /// Leech mode: refuse all uploads.
    disable_shared: AtomicBool,
    /// Piece bytes sent to children.
    uploaded: AtomicU64,
    /// Requests refused in leech mode (a scheduler that respects leech mode
    /// sends none).
    refused: AtomicU64,
    /// While a task is still downloading here, each piece this agent fetched
    /// from the origin goes to at most this many children (0: no limit);
    /// they pass it on.
    first_copies: u32,
    /// Copies served so far of pieces of unfinished tasks.
    served: Mutex<HashMap<String, HashMap<u32, u32>>>,
}

impl Uploads {
    pub fn new(rate: ByteRate, slots: usize) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::new(rate)),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            disable_shared: AtomicBool::new(false),
            uploaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            first_copies: 0,
            served: Mutex::default(),
        }
    }

    /// Sets the per-piece copy limit for unfinished tasks (see `first_copies`).
    pub fn with_first_copies(mut self, n: u32) -> Self {
        self.first_copies = n;
        self
    }

    /// Whether copies of origin pieces are limited at all.
    pub fn limits_copies(&self) -> bool {
        self.first_copies > 0
    }

    /// Whether an origin piece of a task still downloading here is held back
    /// (its first copies already went out). While this agent fetches the
    /// task from the origin, every child wants the newest pieces, and serving
    /// each of them to all children would spend this agent's upload on copies
    /// the children can get from each other: so each origin piece goes to a
    /// few children first, who pass it on. Pieces that came from peers, and
    /// finished tasks, are served freely (the caller checks both).
    pub fn held_back(&self, task_id: &str, number: u32) -> bool {
        self.served
            .lock()
            .get(task_id)
            .and_then(|t| t.get(&number))
            .is_some_and(|n| *n >= self.first_copies)
    }

    /// Counts one copy of a held-back-able piece; `false` when its copies are
    /// used up (another child took the last one meanwhile).
    pub fn count_copy(&self, task_id: &str, number: u32) -> bool {
        let mut served = self.served.lock();
        let n = served
            .entry(task_id.to_string())
            .or_default()
            .entry(number)
            .or_default();
        if *n >= self.first_copies {
            return false;
        }
        *n += 1;
        true
    }

    /// Forgets the copy counts of a task that finished here.
    pub fn forget_task(&self, task_id: &str) {
        self.served.lock().remove(task_id);
    }

    /// The limiter in force now (a rate change applies to the next piece).
    pub fn limiter(&self) -> Arc<RateLimiter> {
        self.limiter.clone()
    }

    pub fn set_rate(&self, rate: ByteRate) {
        self.limiter.set_rate(rate);
    }

    /// A slot for one piece upload, or `None` when all are busy.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A slot for one piece upload, waiting in line (first come, first
    /// served) up to `wait`; `None` when none freed up in time.
    pub async fn slot(&self, wait: std::time::Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    pub fn shared(&self) -> bool {
        !self.disable_shared.load(Ordering::Relaxed)
    }

    /// Whether a request must be refused (leech mode); counts the refusal.
    pub fn refuses(&self) -> bool {
        let leech = !self.shared();
        if leech {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        leech
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn set_disable_shared(&self, leech: bool) {
        self.disable_shared.store(leech, Ordering::Relaxed);
    }

    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    pub fn count(&self, bytes: u64) {
        self.uploaded.fetch_add(bytes, Ordering::Relaxed);
    }
}
