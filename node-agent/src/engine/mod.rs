//! The piece engine: plans a task as pieces, fetches the missing ones
//! concurrently from the origin, verifies and stores them, and exports the result.

mod p2p;
pub mod sink;

use crate::backend::{HttpBackend, Probe, http::classify};
use crate::config::DownloadConfig;
use crate::error::{Error, Result};
use crate::storage::{PieceMeta, PieceSource, Storage, TaskMeta, TaskState, now_secs};
use crate::swarm::{Decision, Link, Swarm};
use backon::{ExponentialBuilder, Retryable};
use darter_common::{
    ByteSize, Digest, DigestHasher, PieceRange, RateLimiter, TaskIdParams, piece_count,
    piece_length_for, piece_range, task_id,
};
use futures::StreamExt;
use reqwest::Response;
use reqwest::header::HeaderMap;
use sink::PieceSink;
use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One download as a caller asks for it.
#[derive(Debug, Clone, Default)]
pub struct DownloadRequest {
    pub url: String,
    /// Where the finished content goes; `None` only fills the cache.
    pub output: Option<PathBuf>,
    /// Sent with every origin request.
    pub headers: HeaderMap,
    pub tag: Option<String>,
    pub application: Option<String>,
    /// Query parameters ignored for task identity; `None` means the defaults.
    pub filtered_query_params: Option<Vec<String>>,
    /// Fixes the piece length (and makes it part of the task id).
    pub piece_length: Option<u64>,
    /// Whole-content digest the result must match.
    pub digest: Option<Digest>,
    /// Limit for the whole download.
    pub timeout: Option<Duration>,
}

impl DownloadRequest {
    pub fn task_id(&self) -> Result<String> {
        let url = url::Url::parse(&self.url).map_err(|e| Error::BadUrl {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::BadUrl {
                url: self.url.clone(),
                reason: format!(
                    "scheme {:?} is not supported (use http or https)",
                    url.scheme()
                ),
            });
        }
        task_id(
            &self.url,
            &TaskIdParams {
                tag: self.tag.as_deref(),
                application: self.application.as_deref(),
                filtered_query_params: self.filtered_query_params.as_deref(),
                piece_length: self.piece_length,
            },
        )
        .map_err(|e| Error::BadUrl {
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }
}

/// Live byte counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// Total bytes, when known.
    pub fn total(&self) -> Option<u64> {
        match self.total.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
    /// Both counters at once (progress reported by a daemon).
    pub fn set(&self, done: u64, total: Option<u64>) {
        self.set_total(total);
        self.done.store(done, Ordering::Relaxed);
    }
    fn set_total(&self, total: Option<u64>) {
        self.total
            .store(total.map_or(0, |t| t + 1), Ordering::Relaxed);
    }
    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    fn sub(&self, n: u64) {
        self.done.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What a download did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DownloadStats {
    pub task_id: String,
    pub content_length: u64,
    pub piece_length: u64,
    pub pieces: u32,
    /// Pieces already in local storage (verified) and not fetched again.
    pub reused_pieces: u32,
    pub origin_pieces: u32,
    pub origin_bytes: u64,
    pub peer_pieces: u32,
    pub peer_bytes: u64,
    /// Distinct parents that supplied pieces.
    pub parents_used: u32,
    /// Served entirely from local storage.
    pub cache_hit: bool,
    pub elapsed: Duration,
}

pub struct Engine {
    storage: Arc<Storage>,
    backend: HttpBackend,
    limiter: Arc<RateLimiter>,
    cfg: DownloadConfig,
    /// Set in daemon mode: downloads go through the scheduler and peers.
    swarm: Option<Arc<Swarm>>,
    /// Piece bytes fetched by this engine, from the origin and from peers.
    downloaded: Arc<AtomicU64>,
}

/// Outcome of trying local storage first.
enum Cached {
    Hit(DownloadStats),
    /// Not servable as is; these stored pieces verified and can be reused.
    Miss(Vec<PieceMeta>),
}

/// Everything a piece fetch needs to know about its task.
struct TaskCtx<'a> {
    id: &'a str,
    req: &'a DownloadRequest,
    file: Arc<File>,
    piece_length: u64,
    progress: &'a Progress,
    /// The scheduler stream to report finished pieces to.
    link: Option<&'a Link>,
}

impl TaskCtx<'_> {
    fn report(&self, number: u32) {
        if let Some(l) = self.link {
            l.piece_finished(number, None, Duration::ZERO);
        }
    }
}

/// A download as it reaches the engine, before its source is chosen.
struct Start<'a> {
    id: &'a str,
    req: &'a DownloadRequest,
    existing: Option<TaskMeta>,
    /// Pieces a cache attempt already verified.
    verified: Option<Vec<PieceMeta>>,
    progress: &'a Progress,
}

/// A task ready to receive pieces.
struct Prepared {
    task: TaskMeta,
    file: Arc<File>,
    /// Pieces already held (verified).
    have: HashSet<u32>,
    reused: u32,
}

impl Prepared {
    fn stats(&self) -> DownloadStats {
        DownloadStats {
            task_id: self.task.id.clone(),
            piece_length: self.task.piece_length,
            reused_pieces: self.reused,
            ..Default::default()
        }
    }
}

impl Engine {
    pub fn new(storage: Arc<Storage>, backend: HttpBackend, cfg: DownloadConfig) -> Self {
        let limiter = Arc::new(RateLimiter::new(cfg.rate_limit));
        Self {
            storage,
            backend,
            limiter,
            cfg,
            swarm: None,
            downloaded: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn download_rate(&self) -> darter_common::ByteRate {
        self.limiter.rate()
    }

    /// Changes the download rate limit for the pieces fetched from now on.
    pub fn set_download_rate(&self, rate: darter_common::ByteRate) {
        self.limiter.set_rate(rate);
    }

    /// Downloads through the scheduler and peers, the origin as the fallback.
    pub fn with_swarm(mut self, swarm: Arc<Swarm>) -> Self {
        self.swarm = Some(swarm);
        self
    }

    /// Piece bytes fetched so far (origin and peers).
    pub fn downloaded(&self) -> Arc<AtomicU64> {
        self.downloaded.clone()
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    #[tracing::instrument(skip_all, fields(url = %req.url))]
    pub async fn download(
        &self,
        req: &DownloadRequest,
        progress: &Progress,
    ) -> Result<DownloadStats> {
        let id = req.task_id()?;
        let started = Instant::now();
        let work = self.run(&id, req, progress);
        let result = match req.timeout {
            Some(t) => tokio::time::timeout(t, work).await.unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "download did not finish within {}",
                    humantime::format_duration(t)
                )))
            }),
            None => work.await,
        };
        match result {
            Ok(mut stats) => {
                stats.elapsed = started.elapsed();
                tracing::info!(task = %id, bytes = stats.content_length,
                    origin_bytes = stats.origin_bytes, reused = stats.reused_pieces,
                    elapsed = ?stats.elapsed, "download finished");
                Ok(stats)
            }
            Err(e) => {
                self.record_failure(&id, &e);
                Err(e)
            }
        }
    }

    /// A failed task keeps its verified pieces for the next attempt; one that
    /// stored nothing leaves no trace.
    fn record_failure(&self, id: &str, e: &Error) {
        let outcome = (|| -> Result<()> {
            let Some(mut task) = self.storage.metadata.task(id)? else {
                return Ok(());
            };
            if matches!(e, Error::DigestMismatch { .. })
                || self.storage.metadata.pieces(id)?.is_empty()
            {
                return self.storage.remove_task(id);
            }
            task.state = TaskState::Failed;
            self.storage.metadata.put_task(&task)
        })();
        if let Err(err) = outcome {
            tracing::warn!(task = id, error = %err, "cannot record failed task");
        }
    }

    async fn run(
        &self,
        id: &str,
        req: &DownloadRequest,
        progress: &Progress,
    ) -> Result<DownloadStats> {
        let mut existing = self.storage.metadata.task(id)?;
        // Pieces already verified by a cache attempt, so they are not read twice.
        let mut verified = None;
        if let Some(task) = existing
            .as_ref()
            .filter(|t| t.state == TaskState::Succeeded)
        {
            match self.serve_cached(task, req, progress).await? {
                Cached::Hit(stats) => return Ok(stats),
                Cached::Miss(pieces) => verified = Some(pieces),
            }
            // A digest mismatch removed the task.
            existing = self.storage.metadata.task(id)?;
        }
        let start = Start {
            id,
            req,
            existing,
            verified,
            progress,
        };
        let Some(swarm) = &self.swarm else {
            return self.download_from_origin(start, None).await;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let peer_id = swarm.new_peer_id();
        let held = start
            .verified
            .as_ref()
            .map(|v| v.iter().map(|p| p.number).collect())
            .unwrap_or_default();
        let length = start.existing.as_ref().and_then(|t| t.content_length);
        let (link, first) = match swarm
            .open(id, req, &peer_id, held, length, tx.clone())
            .await
        {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(task = id, error = %e, "scheduler unreachable; downloading from the origin");
                return self.download_from_origin(start, None).await;
            }
        };
        match first {
            Decision::Parents(parents) if !parents.is_empty() => {
                let p2p = p2p::P2p::new(self, swarm.clone(), start, link, tx, rx);
                p2p.run(parents).await
            }
            other => {
                tracing::info!(task = id, decision = ?other, "downloading from the origin");
                let r = self.download_from_origin(start, Some(&link)).await;
                match &r {
                    Ok(s) => link.finished(s.content_length, s.pieces),
                    Err(e) => link.failed(&e.to_string()),
                }
                r
            }
        }
    }

    /// The whole download from the origin (no scheduler, or it said so).
    async fn download_from_origin(
        &self,
        start: Start<'_>,
        link: Option<&Link>,
    ) -> Result<DownloadStats> {
        let probe = self.probe(start.req).await?;
        let length = probe.content_length;
        let piece_length = piece_length_for(length, start.req.piece_length);
        let (id, req, progress) = (start.id, start.req, start.progress);
        let prep = self.prepare(start, length, piece_length).await?;
        let mut stats = prep.stats();
        let ctx = TaskCtx {
            id,
            req,
            file: prep.file.clone(),
            piece_length,
            progress,
            link,
        };
        let total = self
            .fill_from_origin(&ctx, probe, length, &prep.have, &mut stats)
            .await?;
        drop(ctx);
        self.complete(prep.task, req, total, stats).await
    }

    async fn probe(&self, req: &DownloadRequest) -> Result<Probe> {
        (|| self.backend.probe(&req.url, &req.headers))
            .retry(self.backoff())
            .when(Error::is_retryable)
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "origin probe failed"))
            .await
    }

    /// Records the task as running with its layout, reserves its space, opens
    /// its content file and finds the pieces already held (resumed downloads).
    async fn prepare(
        &self,
        start: Start<'_>,
        length: Option<u64>,
        piece_length: u64,
    ) -> Result<Prepared> {
        let id = start.id;
        let resumable = |t: &TaskMeta| {
            length.is_some() && t.content_length == length && t.piece_length == piece_length
        };
        let (mut task, resumed) = match start.existing {
            Some(t) if resumable(&t) => (t, true),
            other => {
                if other.is_some() {
                    tracing::info!(task = id, "object changed size or layout; starting over");
                    self.storage.remove_task(id)?;
                }
                let req = start.req;
                let fresh = TaskMeta {
                    id: id.to_string(),
                    url: req.url.clone(),
                    tag: req.tag.clone(),
                    application: req.application.clone(),
                    piece_length,
                    content_length: length,
                    state: TaskState::Running,
                    created_at: now_secs(),
                    accessed_at: now_secs(),
                    finished_at: None,
                };
                (fresh, false)
            }
        };
        task.state = TaskState::Running;
        task.accessed_at = now_secs();
        self.storage.metadata.put_task(&task)?;

        let need = length.map_or(0, |l| l.saturating_sub(self.storage.content.allocated(id)));
        self.storage.reserve(need, &[id])?;
        let file = self
            .storage
            .content
            .open_for_write(id, length)
            .map_err(|e| self.no_space(e, need))?;
        let have = match start.verified {
            Some(pieces) if resumed => pieces,
            _ => self.verified_pieces(&task).await?,
        };
        start.progress.set_total(length);
        start.progress.add(have.iter().map(|p| p.length).sum());
        Ok(Prepared {
            reused: have.len() as u32,
            have: have.iter().map(|p| p.number).collect(),
            task,
            file: Arc::new(file),
        })
    }

    /// Fetches what `have` lacks from the origin: parallel ranges when it
    /// supports them, else one stream. Returns the content length.
    async fn fill_from_origin(
        &self,
        ctx: &TaskCtx<'_>,
        probe: Probe,
        length: Option<u64>,
        have: &HashSet<u32>,
        stats: &mut DownloadStats,
    ) -> Result<u64> {
        match (probe, length) {
            (
                Probe {
                    supports_range: true,
                    ..
                },
                Some(len),
            ) => {
                self.fetch_ranges(ctx, len, have, stats).await?;
                Ok(len)
            }
            (probe, _) => {
                self.fetch_stream(ctx, probe.full_body, length, have, stats)
                    .await
            }
        }
    }

    /// Checks that every piece is there (and the digest, when asked), marks the
    /// task done and exports it.
    async fn complete(
        &self,
        mut task: TaskMeta,
        req: &DownloadRequest,
        total: u64,
        mut stats: DownloadStats,
    ) -> Result<DownloadStats> {
        let id = task.id.clone();
        let pieces = self.storage.metadata.pieces(&id)?;
        let expected = piece_count(total, task.piece_length);
        if pieces.len() as u32 != expected {
            return Err(Error::Metadata(format!(
                "task {id} has {} of {expected} pieces after download",
                pieces.len()
            )));
        }
        if let Some(want) = &req.digest {
            let got = self.content_digest(&id, total, want).await?;
            if &got != want {
                return Err(Error::DigestMismatch {
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
        task.content_length = Some(total);
        task.state = TaskState::Succeeded;
        task.finished_at = Some(now_secs());
        self.storage.metadata.put_task(&task)?;
        stats.content_length = total;
        stats.pieces = expected;
        self.export(&id, req).await?;
        Ok(stats)
    }

    /// Serves a finished task from local storage when every piece still verifies
    /// (and the digest matches, when one is asked for).
    async fn serve_cached(
        &self,
        task: &TaskMeta,
        req: &DownloadRequest,
        progress: &Progress,
    ) -> Result<Cached> {
        let pieces = self.verified_pieces(task).await?;
        let Some(len) = task.content_length else {
            return Ok(Cached::Miss(pieces));
        };
        if pieces.len() as u32 != piece_count(len, task.piece_length) {
            return Ok(Cached::Miss(pieces));
        }
        if let Some(want) = &req.digest
            && &self.content_digest(&task.id, len, want).await? != want
        {
            tracing::warn!(task = %task.id, "cached content does not match the requested digest; fetching again");
            self.storage.remove_task(&task.id)?;
            return Ok(Cached::Miss(Vec::new()));
        }
        let mut t = task.clone();
        t.accessed_at = now_secs();
        self.storage.metadata.put_task(&t)?;
        progress.set_total(Some(len));
        progress.add(len);
        self.export(&task.id, req).await?;
        Ok(Cached::Hit(DownloadStats {
            task_id: task.id.clone(),
            content_length: len,
            piece_length: task.piece_length,
            pieces: pieces.len() as u32,
            reused_pieces: pieces.len() as u32,
            cache_hit: true,
            ..Default::default()
        }))
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.cfg.piece_retries)
            .with_jitter()
    }

    fn no_space(&self, e: Error, need: u64) -> Error {
        if !e.is_disk_full() {
            return e;
        }
        let available = self.storage.usage().map(|u| u.available).unwrap_or(0);
        Error::NoSpace {
            needed: ByteSize(need),
            available: ByteSize(available),
            dir: self.storage.dir().to_path_buf(),
        }
    }

    async fn verified_pieces(&self, task: &TaskMeta) -> Result<Vec<PieceMeta>> {
        let storage = self.storage.clone();
        let task = task.clone();
        tokio::task::spawn_blocking(move || storage.verified_pieces(&task))
            .await
            .map_err(|e| Error::io("piece verification", std::io::Error::other(e)))?
    }

    async fn content_digest(&self, id: &str, len: u64, want: &Digest) -> Result<Digest> {
        let file = self.storage.content.open_for_read(id)?;
        let algorithm = want.algorithm;
        tokio::task::spawn_blocking(move || {
            let mut h = DigestHasher::new(algorithm);
            crate::storage::content::for_each_block(&file, 0, len, |b| h.update(b))
                .map(|()| h.finish())
                .map_err(|e| Error::io("cannot read content for its digest", e))
        })
        .await
        .map_err(|e| Error::io("digest", std::io::Error::other(e)))?
    }

    async fn export(&self, id: &str, req: &DownloadRequest) -> Result<()> {
        let Some(output) = req.output.clone() else {
            return Ok(());
        };
        let storage = self.storage.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || storage.content.export(&id, &output))
            .await
            .map_err(|e| Error::io("export", std::io::Error::other(e)))?
    }

    /// Parallel Range requests for every missing piece, at most
    /// `concurrent_pieces` at a time; each piece is recorded as soon as it lands.
    async fn fetch_ranges(
        &self,
        ctx: &TaskCtx<'_>,
        len: u64,
        have: &HashSet<u32>,
        stats: &mut DownloadStats,
    ) -> Result<()> {
        let missing: Vec<PieceRange> = (0..piece_count(len, ctx.piece_length))
            .filter(|n| !have.contains(n))
            .filter_map(|n| piece_range(len, ctx.piece_length, n))
            .collect();
        let mut results = futures::stream::iter(missing)
            .map(|r| {
                (move || self.fetch_piece(ctx, r))
                    .retry(self.backoff())
                    .when(Error::is_retryable)
                    .notify(move |e, d| {
                        tracing::warn!(piece = r.number, error = %e, retry_in = ?d, "piece failed")
                    })
            })
            .buffer_unordered(if ctx.link.is_some() {
                self.cfg.source_concurrent_pieces
            } else {
                self.cfg.concurrent_pieces
            });
        while let Some(piece) = results.next().await {
            let piece = piece?;
            self.storage.metadata.put_piece(ctx.id, &piece)?;
            ctx.report(piece.number);
            self.downloaded.fetch_add(piece.length, Ordering::Relaxed);
            stats.origin_pieces += 1;
            stats.origin_bytes += piece.length;
        }
        Ok(())
    }

    async fn fetch_piece(&self, ctx: &TaskCtx<'_>, r: PieceRange) -> Result<PieceMeta> {
        let timeout = self.cfg.piece_timeout;
        let url = &ctx.req.url;
        let resp = tokio::time::timeout(timeout, self.backend.get_range(url, &ctx.req.headers, r))
            .await
            .map_err(|_| {
                Error::Timeout(format!("origin did not answer for piece {}", r.number))
            })??;
        let mut sink = PieceSink::new(ctx.file.clone(), r.offset);
        if let Err(e) = self.drain(ctx, resp, &mut sink, r.length).await {
            ctx.progress.sub(sink.len());
            return Err(e);
        }
        let (n, crc) = sink
            .finish()
            .await
            .map_err(|e| self.no_space(e, r.length))?;
        if n != r.length {
            ctx.progress.sub(n);
            return Err(Error::Transfer {
                url: url.clone(),
                detail: format!("piece {} ended after {n} of {} bytes", r.number, r.length),
            });
        }
        Ok(PieceMeta {
            number: r.number,
            offset: r.offset,
            length: r.length,
            crc32c: crc,
            source: PieceSource::Origin,
            finished_at: now_secs(),
        })
    }

    /// Copies a ranged body into `sink`, with the idle timeout and rate limit.
    async fn drain(
        &self,
        ctx: &TaskCtx<'_>,
        resp: Response,
        sink: &mut PieceSink,
        limit: u64,
    ) -> Result<()> {
        let mut body = resp.bytes_stream();
        while let Some(chunk) = self.next_chunk(ctx, &mut body).await? {
            if sink.len() + chunk.len() as u64 > limit {
                return Err(Error::OriginProtocol {
                    url: ctx.req.url.clone(),
                    detail: "origin sent more bytes than the range asked for".into(),
                });
            }
            self.limiter.acquire(chunk.len()).await;
            sink.push(&chunk)
                .await
                .map_err(|e| self.no_space(e, limit))?;
            ctx.progress.add(chunk.len() as u64);
        }
        Ok(())
    }

    async fn next_chunk(
        &self,
        ctx: &TaskCtx<'_>,
        body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    ) -> Result<Option<bytes::Bytes>> {
        match tokio::time::timeout(self.cfg.piece_timeout, body.next()).await {
            Err(_) => Err(Error::Timeout(format!(
                "origin sent nothing for {}",
                humantime::format_duration(self.cfg.piece_timeout)
            ))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(c))) => Ok(Some(c)),
            Ok(Some(Err(e))) => Err(match classify(&ctx.req.url, &e) {
                // A broken body is a transfer failure, whatever the transport says.
                Error::Connect { detail, .. } => Error::Transfer {
                    url: ctx.req.url.clone(),
                    detail,
                },
                other => other,
            }),
        }
    }

    /// One sequential GET, cut into pieces as bytes arrive: for origins without
    /// Range support or without a length. Retried from the start; pieces already
    /// stored are read past, not written again. Returns the content length.
    async fn fetch_stream(
        &self,
        ctx: &TaskCtx<'_>,
        first: Option<Response>,
        length: Option<u64>,
        have: &HashSet<u32>,
        stats: &mut DownloadStats,
    ) -> Result<u64> {
        let first = std::sync::Mutex::new(first);
        let stats_cell = std::sync::Mutex::new(std::mem::take(stats));
        let total = (|| async {
            let taken = first.lock().ok().and_then(|mut f| f.take());
            let resp = match taken {
                Some(r) => r,
                None => self.backend.get(&ctx.req.url, &ctx.req.headers).await?,
            };
            self.stream_once(ctx, resp, length, have, &stats_cell).await
        })
        .retry(self.backoff())
        .when(Error::is_retryable)
        .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "origin stream failed"))
        .await;
        *stats = stats_cell.into_inner().unwrap_or_default();
        total
    }

    async fn stream_once(
        &self,
        ctx: &TaskCtx<'_>,
        resp: Response,
        length: Option<u64>,
        have: &HashSet<u32>,
        stats: &std::sync::Mutex<DownloadStats>,
    ) -> Result<u64> {
        let url = &ctx.req.url;
        if let (Some(want), Some(got)) = (length, resp.content_length())
            && want != got
        {
            return Err(Error::OriginProtocol {
                url: url.clone(),
                detail: format!("object changed size during download ({want} -> {got} bytes)"),
            });
        }
        let plen = ctx.piece_length;
        let mut number = 0u32;
        let mut offset = 0u64;
        let mut filled = 0u64;
        let new_sink =
            |n: u32, off: u64| (!have.contains(&n)).then(|| PieceSink::new(ctx.file.clone(), off));
        let mut sink = new_sink(0, 0);
        let mut body = resp.bytes_stream();
        let mut uncommitted = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = self.next_chunk(ctx, &mut body).await? {
                self.limiter.acquire(chunk.len()).await;
                let mut data = &chunk[..];
                while !data.is_empty() {
                    let n = ((plen - filled) as usize).min(data.len());
                    if let Some(s) = sink.as_mut() {
                        s.push(&data[..n])
                            .await
                            .map_err(|e| self.no_space(e, plen))?;
                        ctx.progress.add(n as u64);
                        uncommitted += n as u64;
                    }
                    filled += n as u64;
                    data = &data[n..];
                    if filled == plen {
                        self.commit(ctx, number, offset, sink.take(), stats).await?;
                        uncommitted = 0;
                        number += 1;
                        offset += plen;
                        filled = 0;
                        sink = new_sink(number, offset);
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            ctx.progress.sub(uncommitted);
            return Err(e);
        }
        let total = offset + filled;
        if let Some(want) = length
            && total != want
        {
            ctx.progress.sub(uncommitted);
            return Err(Error::Transfer {
                url: url.clone(),
                detail: format!("connection closed after {total} of {want} bytes"),
            });
        }
        if filled > 0 {
            self.commit(ctx, number, offset, sink, stats).await?;
        }
        Ok(total)
    }

    async fn commit(
        &self,
        ctx: &TaskCtx<'_>,
        number: u32,
        offset: u64,
        sink: Option<PieceSink>,
        stats: &std::sync::Mutex<DownloadStats>,
    ) -> Result<()> {
        let Some(sink) = sink else { return Ok(()) };
        let (length, crc32c) = sink.finish().await?;
        self.storage.metadata.put_piece(
            ctx.id,
            &PieceMeta {
                number,
                offset,
                length,
                crc32c,
                source: PieceSource::Origin,
                finished_at: now_secs(),
            },
        )?;
        ctx.report(number);
        self.downloaded.fetch_add(length, Ordering::Relaxed);
        if let Ok(mut s) = stats.lock() {
            s.origin_pieces += 1;
            s.origin_bytes += length;
        }
        Ok(())
    }
}
