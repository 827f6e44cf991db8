//! A download through the swarm: pieces come from the parents the scheduler
//! offers (rarest first among them, a few at a time per parent, each checked
//! against the parent's CRC-32C). A parent that fails or sends bad bytes is
//! dropped and reported, and the scheduler offers others; the origin fills in
//! when the scheduler says so, when the swarm stalls, or when the scheduler is
//! gone and no parent is left.

use super::{DownloadRequest, DownloadStats, Engine, Progress, Start, TaskCtx};
use crate::error::{Error, Refusal, Result};
use crate::peer::pool::PeerPool;
use crate::peer::tcp::Fetch;
use crate::storage::PieceMeta;
use crate::swarm::{Decision, Event, Link, ParentAddr, Swarm};
use darter_common::{piece_count, piece_range};
use darter_proto::peer::v1 as peer_pb;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// Pieces in flight from one parent: one, so each piece arrives at full
/// speed and this peer can pass it on soon, and one slow parent holds back
/// little (measured with darter-swarm against 2 and 3).
const PER_PARENT: usize = 1;
/// Assumed throughput of a parent not measured yet (so new parents get tried).
const UNMEASURED: f64 = (256 << 20) as f64;
/// Parents kept at once (the scheduler offers a few per round).
const MAX_PARENTS: usize = 8;
/// Pause before asking a parent with no free upload slot again.
const BUSY_PAUSE: Duration = Duration::from_millis(200);
/// With nothing in flight and nothing fetchable for this long, ask the
/// scheduler for other parents.
const STALL: Duration = Duration::from_secs(2);
/// While a peer has fewer parents than this, it asks for more this often.
/// Peers that registered at the same moment as their first parents only got
/// the few that could serve then; and a peer high in the task's DAG (offered
/// only the peers above it) gets more once the DAG has changed. It keeps the
/// parents it was offered before, so over time the swarm becomes a mesh and
/// every peer's upload is used; each offer still respects the DAG.
const WANT_PARENTS: usize = MAX_PARENTS;
const REFRESH: Duration = Duration::from_millis(1000);
/// How long a parent's "piece is being spread" holds before asking it again.
const DEFER: Duration = Duration::from_millis(500);

/// Aborts a background task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Parent {
    addr: ParentAddr,
    have: HashSet<u32>,
    complete: bool,
    inflight: usize,
    busy_until: Option<Instant>,
    /// Smoothed bytes per second of this parent's pieces, as this peer sees them.
    rate: Option<f64>,
    /// Pieces it holds but asked us to get elsewhere for now, until when.
    deferred: Vec<(Instant, u32)>,
    _sync: Task,
}

impl Parent {
    /// Expected time for one more piece from this parent, in relative units.
    fn cost(&self) -> f64 {
        (self.inflight + 1) as f64 / self.rate.unwrap_or(UNMEASURED)
    }
}

pub(super) struct P2p<'e, 'a> {
    engine: &'e Engine,
    swarm: Arc<Swarm>,
    start: Option<Start<'a>>,
    id: &'a str,
    req: &'a DownloadRequest,
    progress: &'a Progress,
    peer_id: String,
    link: Option<Link>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    parents: HashMap<String, Parent>,
    blocked: HashSet<String>,
    used: HashSet<String>,
    layout: Option<(u64, u64)>,
    missing: BTreeSet<u32>,
    inflight: HashSet<u32>,
    back_to_source: Option<String>,
    relink: Option<Task>,
    stats: DownloadStats,
    /// Orders equally good pieces differently on every peer, so peers that
    /// share a parent ask it for different pieces.
    salt: u64,
}

/// Streams a parent's piece availability into the download's queue.
async fn sync(
    pool: Arc<PeerPool>,
    parent: ParentAddr,
    task_id: String,
    peer_id: String,
    tx: mpsc::UnboundedSender<Event>,
) {
    let ended = |reason: String| Event::SyncEnded {
        parent: parent.peer_id.clone(),
        reason,
    };
    let ch = match pool.channel(parent.grpc) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(ended(e.to_string()));
            return;
        }
    };
    let mut client = peer_pb::peer_client::PeerClient::new(ch);
    let req = peer_pb::SyncPiecesRequest { task_id, peer_id };
    let mut stream = match client.sync_pieces(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            let _ = tx.send(ended(s.message().to_string()));
            return;
        }
    };
    let reason = loop {
        match stream.next().await {
            Some(Ok(a)) => {
                let ev = Event::Available {
                    parent: parent.peer_id.clone(),
                    numbers: a.numbers,
                    content_length: a.content_length,
                    piece_length: a.piece_length,
                    complete: a.complete,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
            Some(Err(s)) => break s.message().to_string(),
            None => break "stream ended".to_string(),
        }
    };
    let _ = tx.send(ended(reason));
}

/// Whether a failed fetch says the parent is bad (rather than busy or behind).
fn parent_at_fault(e: &Error) -> bool {
    match e {
        Error::PeerRefused { reason, .. } => *reason == Refusal::Leech,
        _ => true,
    }
}

impl<'e, 'a> P2p<'e, 'a> {
    pub(super) fn new(
        engine: &'e Engine,
        swarm: Arc<Swarm>,
        start: Start<'a>,
        link: Link,
        tx: mpsc::UnboundedSender<Event>,
        rx: mpsc::UnboundedReceiver<Event>,
    ) -> Self {
        Self {
            engine,
            swarm,
            id: start.id,
            req: start.req,
            progress: start.progress,
            start: Some(start),
            peer_id: link.peer_id.clone(),
            link: Some(link),
            tx,
            rx,
            parents: HashMap::new(),
            blocked: HashSet::new(),
            used: HashSet::new(),
            layout: None,
            missing: BTreeSet::new(),
            inflight: HashSet::new(),
            back_to_source: None,
            relink: None,
            stats: DownloadStats::default(),
            salt: rand::random(),
        }
    }

    pub(super) async fn run(mut self, parents: Vec<ParentAddr>) -> Result<DownloadStats> {
        self.add_parents(parents);
        let r = self.download().await;
        if let Some(link) = &self.link {
            match &r {
                Ok(s) => link.finished(s.content_length, s.pieces),
                Err(e) => link.failed(&e.to_string()),
            }
        }
        r
    }

    async fn download(&mut self) -> Result<DownloadStats> {
        // The parents tell the layout (a parent still probing its origin
        // tells it once it knows).
        let idle = self.engine.cfg.piece_timeout;
        while self.layout.is_none() && self.back_to_source.is_none() {
            match tokio::time::timeout(idle, self.rx.recv()).await {
                Ok(Some(ev)) => self.handle(ev)?,
                _ => self.back_to_source = Some("no parent told the task's length".into()),
            }
        }
        let start = self
            .start
            .take()
            .ok_or_else(|| Error::Metadata("download started twice".into()))?;
        let Some((len, piece_length)) = self.layout else {
            let reason = self.back_to_source.clone().unwrap_or_default();
            tracing::info!(task = self.id, %reason, "downloading from the origin");
            self.parents.clear();
            return self
                .engine
                .download_from_origin(start, self.link.as_ref())
                .await;
        };

        let prep = self.engine.prepare(start, Some(len), piece_length).await?;
        self.stats = prep.stats();
        self.missing = (0..piece_count(len, piece_length))
            .filter(|n| !prep.have.contains(n))
            .collect();
        let mut quiet_since = Instant::now();
        let mut refreshed = Instant::now();
        loop {
            if self.back_to_source.is_none() {
                self.dispatch(&prep.file, len, piece_length);
                if self.parents.len() < WANT_PARENTS
                    && refreshed.elapsed() >= REFRESH
                    && let Some(link) = &self.link
                {
                    link.more_parents();
                    refreshed = Instant::now();
                }
            }
            if self.inflight.is_empty()
                && (self.missing.is_empty() || self.back_to_source.is_some())
            {
                break;
            }
            let wait = if self.parents.len() < WANT_PARENTS {
                REFRESH
            } else {
                STALL
            };
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    if matches!(ev, Event::Piece { .. } | Event::Available { .. }) {
                        quiet_since = Instant::now();
                    }
                    self.handle(ev)?;
                }
                Ok(None) => break,
                Err(_) if self.inflight.is_empty() && quiet_since.elapsed() >= STALL => {
                    self.stalled(quiet_since.elapsed())
                }
                Err(_) => {}
            }
        }
        self.parents.clear();
        self.stats.parents_used = self.used.len() as u32;
        if !self.missing.is_empty() {
            let reason = self.back_to_source.clone().unwrap_or_default();
            tracing::info!(task = self.id, %reason, missing = self.missing.len(), "fetching the rest from the origin");
            let probe = self.engine.probe(self.req).await?;
            if probe.content_length != Some(len) {
                return Err(Error::OriginProtocol {
                    url: self.req.url.clone(),
                    detail: format!(
                        "origin length {:?} differs from the peers' {len}",
                        probe.content_length
                    ),
                });
            }
            let have: HashSet<u32> = (0..piece_count(len, piece_length))
                .filter(|n| !self.missing.contains(n))
                .collect();
            let ctx = TaskCtx {
                id: self.id,
                req: self.req,
                file: prep.file.clone(),
                piece_length,
                progress: self.progress,
                link: self.link.as_ref(),
            };
            self.engine
                .fill_from_origin(&ctx, probe, Some(len), &have, &mut self.stats)
                .await?;
        }
        let stats = std::mem::take(&mut self.stats);
        self.engine.complete(prep.task, self.req, len, stats).await
    }

    /// Nothing moved for a while: ask for other parents, and go to the origin
    /// when that has not helped for a piece timeout or nobody can help.
    fn stalled(&mut self, quiet: Duration) {
        let no_help = self.parents.is_empty() && self.link.is_none() && self.relink.is_none();
        if quiet >= self.engine.cfg.piece_timeout || no_help {
            self.back_to_source = Some(format!(
                "no piece arrived for {}",
                humantime::format_duration(Duration::from_secs(quiet.as_secs()))
            ));
        } else if let Some(link) = &self.link {
            link.reschedule(Vec::new(), "parents hold none of the missing pieces");
        }
    }

    fn add_parents(&mut self, parents: Vec<ParentAddr>) {
        tracing::debug!(task = self.id, offered = ?parents.iter().map(|p| p.host_id.as_str()).collect::<Vec<_>>(), "parents offered");
        for p in parents {
            if self.parents.len() >= MAX_PARENTS
                || self.blocked.contains(&p.peer_id)
                || self.parents.contains_key(&p.peer_id)
            {
                continue;
            }
            let sync = tokio::spawn(sync(
                self.swarm.pool.clone(),
                p.clone(),
                self.id.to_string(),
                self.peer_id.clone(),
                self.tx.clone(),
            ));
            self.parents.insert(
                p.peer_id.clone(),
                Parent {
                    addr: p,
                    have: HashSet::new(),
                    complete: false,
                    inflight: 0,
                    busy_until: None,
                    rate: None,
                    deferred: Vec::new(),
                    _sync: Task(sync),
                },
            );
        }
    }

    /// Drops a parent for this task and tells the scheduler why.
    fn block(&mut self, parent: &str, number: Option<u32>, reason: &str) {
        let Some(p) = self.parents.remove(parent) else {
            return;
        };
        tracing::warn!(task = self.id, parent, reason, "dropping parent");
        self.blocked.insert(parent.to_string());
        self.swarm.pool.forget(p.addr.data);
        if let Some(link) = &self.link {
            match number {
                Some(n) => link.piece_failed(n, parent, reason),
                None => link.reschedule(vec![parent.to_string()], reason),
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Decision(Decision::Parents(ps)) => self.add_parents(ps),
            Event::Decision(Decision::BackToSource(reason)) => {
                self.back_to_source.get_or_insert(reason);
            }
            Event::Decision(Decision::Empty) => {}
            Event::SchedulerGone(reason) => {
                tracing::warn!(task = self.id, %reason, "scheduler stream ended; reconnecting");
                self.link = None;
                self.start_relink();
            }
            Event::Relinked(link, d) => {
                tracing::info!(task = self.id, "registered with the scheduler again");
                self.link = Some(link);
                self.relink = None;
                self.handle(Event::Decision(d))?;
            }
            Event::Available {
                parent,
                numbers,
                content_length,
                piece_length,
                complete,
            } => {
                if let Some(p) = self.parents.get_mut(&parent) {
                    p.have.extend(numbers);
                    p.complete |= complete;
                    if self.layout.is_none()
                        && let Some(len) = content_length
                    {
                        self.layout = Some((len, piece_length));
                    }
                }
            }
            Event::SyncEnded { parent, reason } => {
                let complete = self.parents.get(&parent).is_some_and(|p| p.complete);
                if !complete {
                    self.block(&parent, None, &format!("piece sync ended: {reason}"));
                }
            }
            Event::Piece {
                parent,
                number,
                result,
                cost,
            } => {
                self.inflight.remove(&number);
                if let Some(p) = self.parents.get_mut(&parent) {
                    p.inflight = p.inflight.saturating_sub(1);
                }
                match result {
                    Ok(piece) => {
                        if let Some(p) = self.parents.get_mut(&parent) {
                            let r = piece.length as f64 / cost.as_secs_f64().max(1e-6);
                            p.rate = Some(p.rate.map_or(r, |old| 0.7 * old + 0.3 * r));
                        }
                        self.landed(&parent, piece, cost)?
                    }
                    Err(e) if e.is_disk_full() => return Err(e),
                    Err(e) if parent_at_fault(&e) => {
                        self.block(&parent, Some(number), &e.to_string());
                    }
                    Err(e) => {
                        tracing::debug!(task = self.id, parent, piece = number, error = %e, "piece not served");
                        if let (Some(p), Error::PeerRefused { reason, .. }) =
                            (self.parents.get_mut(&parent), &e)
                        {
                            match reason {
                                Refusal::NotHeld => {
                                    p.have.remove(&number);
                                }
                                Refusal::Spreading => {
                                    p.have.remove(&number);
                                    p.deferred.push((Instant::now() + DEFER, number));
                                }
                                _ => p.busy_until = Some(Instant::now() + BUSY_PAUSE),
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn landed(&mut self, parent: &str, piece: PieceMeta, cost: Duration) -> Result<()> {
        tracing::debug!(
            task = self.id,
            parent,
            piece = piece.number,
            ms = cost.as_millis() as u64,
            "piece from parent"
        );
        self.engine.storage.metadata.put_piece(self.id, &piece)?;
        self.missing.remove(&piece.number);
        self.used.insert(parent.to_string());
        self.stats.peer_pieces += 1;
        self.stats.peer_bytes += piece.length;
        self.progress.add(piece.length);
        self.engine
            .downloaded
            .fetch_add(piece.length, Ordering::Relaxed);
        if let Some(link) = &self.link {
            link.piece_finished(piece.number, Some(parent), cost);
        }
        Ok(())
    }

    /// Registers again with the (restarted) scheduler, every second, until it
    /// answers or the download ends.
    fn start_relink(&mut self) {
        if self.relink.is_some() {
            return;
        }
        let swarm = self.swarm.clone();
        let storage = self.engine.storage.clone();
        let (id, req, peer_id) = (self.id.to_string(), self.req.clone(), self.peer_id.clone());
        let length = self.layout.map(|l| l.0);
        let tx = self.tx.clone();
        self.relink = Some(Task(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let held = storage
                    .metadata
                    .pieces(&id)
                    .map(|ps| ps.iter().map(|p| p.number).collect())
                    .unwrap_or_default();
                if let Ok((link, d)) = swarm
                    .open(&id, &req, &peer_id, held, length, tx.clone())
                    .await
                {
                    let _ = tx.send(Event::Relinked(link, d));
                    return;
                }
            }
        })));
    }

    /// Starts fetches until the piece budget is used or nothing more can go.
    fn dispatch(&mut self, file: &Arc<File>, len: u64, piece_length: u64) {
        let now = Instant::now();
        for p in self.parents.values_mut() {
            p.deferred.retain(|&(until, n)| {
                if until <= now {
                    p.have.insert(n);
                }
                until > now
            });
        }
        while self.inflight.len() < self.engine.cfg.peer_concurrent_pieces {
            let Some((number, parent)) = self.pick() else {
                break;
            };
            self.start_fetch(number, parent, false, file, len, piece_length);
        }
        // Idle: every parent holding a missing piece is busy or holds it
        // back for spreading. Ask one of them anyway, as urgent (served
        // without queueing): a peer high in the DAG may have no other source.
        if self.inflight.is_empty() {
            let urgent = self.missing.iter().find_map(|n| {
                self.parents
                    .iter()
                    .filter(|(_, p)| p.have.contains(n) || p.deferred.iter().any(|d| d.1 == *n))
                    .min_by(|a, b| a.1.cost().total_cmp(&b.1.cost()))
                    .map(|(id, _)| (*n, id.clone()))
            });
            if let Some((number, parent)) = urgent {
                if let Some(p) = self.parents.get_mut(&parent) {
                    p.deferred.retain(|&(_, n)| n != number);
                }
                self.start_fetch(number, parent, true, file, len, piece_length);
            }
        }
    }

    fn start_fetch(
        &mut self,
        number: u32,
        parent: String,
        urgent: bool,
        file: &Arc<File>,
        len: u64,
        piece_length: u64,
    ) {
        let Some(range) = piece_range(len, piece_length, number) else {
            self.missing.remove(&number);
            return;
        };
        let Some(p) = self.parents.get_mut(&parent) else {
            return;
        };
        p.inflight += 1;
        self.inflight.insert(number);
        let addr = p.addr.data;
        let (pool, limiter, tx, file) = (
            self.swarm.pool.clone(),
            self.engine.limiter.clone(),
            self.tx.clone(),
            file.clone(),
        );
        let task_id = self.id.to_string();
        // Idle bound plus time for the bytes at a 1 MiB/s floor.
        let limit = self.engine.cfg.piece_timeout + Duration::from_secs(range.length >> 20);
        tokio::spawn(async move {
            let t = Instant::now();
            let req = Fetch {
                parent: &parent,
                task_id: &task_id,
                range,
                urgent,
            };
            let result = tokio::time::timeout(limit, pool.fetch_piece(addr, req, file, &limiter))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout(format!(
                        "piece {number} from {parent} took over {}",
                        humantime::format_duration(limit)
                    )))
                });
            let _ = tx.send(Event::Piece {
                parent,
                number,
                result,
                cost: t.elapsed(),
            });
        });
    }

    /// The next piece and where from: the piece whose best free holder
    /// promises it soonest (a parent's measured rate over its load, which
    /// steers peers away from a saturated parent towards siblings with spare
    /// upload), then the rarest among this peer's parents, then an order of
    /// its own (so siblings ask a shared parent for different pieces).
    fn pick(&self) -> Option<(u32, String)> {
        let now = Instant::now();
        let free = |p: &Parent| p.inflight < PER_PARENT && p.busy_until.is_none_or(|t| t <= now);
        if !self.parents.values().any(free) {
            return None;
        }
        let mut best: Option<(f64, usize, u64, u32, &str)> = None;
        for &n in self.missing.iter().filter(|n| !self.inflight.contains(n)) {
            let mut holders = 0;
            let mut choice: Option<(f64, &str)> = None;
            for (id, p) in self.parents.iter().filter(|(_, p)| p.have.contains(&n)) {
                holders += 1;
                if free(p) && choice.is_none_or(|c| p.cost() < c.0) {
                    choice = Some((p.cost(), id.as_str()));
                }
            }
            let Some((cost, parent)) = choice else {
                continue;
            };
            let order = (u64::from(n) ^ self.salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let better = best.is_none_or(|b| {
                cost.total_cmp(&b.0)
                    .then(holders.cmp(&b.1))
                    .then(order.cmp(&b.2))
                    .is_lt()
            });
            if better {
                best = Some((cost, holders, order, n, parent));
            }
        }
        best.map(|(_, _, _, n, parent)| (n, parent.to_string()))
    }
}
