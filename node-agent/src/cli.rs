//! The `darter` command line: download a URL (through the local daemon when
//! one runs, else directly), inspect local storage, and run the daemon.

use crate::backend::HttpBackend;
use crate::config::AgentConfig;
use crate::engine::{DownloadRequest, Engine, Progress};
use crate::storage::{GcPolicy, Storage, TaskMeta};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use darter_common::task_id::is_task_id;
use darter_common::{ByteRate, ByteSize, Digest, piece_count};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "darter", version, about = "Darter P2P downloader")]
struct Cli {
    /// Agent config file (YAML); default /etc/darter/agent.yaml when it exists.
    #[arg(long, global = true, env = "DARTER_CONFIG")]
    config: Option<PathBuf>,
    /// Storage directory (overrides storage.dir).
    #[arg(long, global = true, env = "DARTER_STORAGE_DIR")]
    storage_dir: Option<PathBuf>,
    /// Cache size budget (overrides storage.capacity), e.g. 50GiB.
    #[arg(long, global = true)]
    storage_capacity: Option<ByteSize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download URL to a file.
    Get(GetArgs),
    /// Show one task in local storage.
    Stat(TaskRef),
    /// List tasks in local storage.
    Ls,
    /// Remove a task from local storage.
    Rm(TaskRef),
    /// Show the running daemon's state as YAML: cluster, announces, bytes
    /// moved, and the settings in force (config plus the operator's PeerPolicy).
    Status,
    /// Run the node agent: announce to the scheduler, serve pieces to peers,
    /// download through the swarm, and serve `darter get` on a unix socket.
    Daemon(DaemonArgs),
}

#[derive(Args)]
struct DaemonArgs {
    /// Scheduler address host:port (repeatable; overrides scheduler.addresses).
    #[arg(long = "scheduler", value_name = "ADDR")]
    schedulers: Vec<String>,
    /// Address peers reach this agent at (overrides host.ip).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Host name reported to the scheduler (overrides host.hostname).
    #[arg(long)]
    hostname: Option<String>,
    /// Piece sync gRPC port, 0 for any (overrides upload.port).
    #[arg(long)]
    upload_port: Option<u16>,
    /// Piece data port, 0 for any (overrides upload.dataPort).
    #[arg(long)]
    data_port: Option<u16>,
    /// Upload rate limit, e.g. 100MiB/s (overrides upload.rateLimit).
    #[arg(long)]
    upload_rate_limit: Option<ByteRate>,
    /// Download rate limit, e.g. 100MiB/s (overrides download.rateLimit).
    #[arg(long)]
    download_rate_limit: Option<ByteRate>,
    /// Leech mode: never serve pieces (overrides upload.disableShared).
    #[arg(long)]
    disable_shared: bool,
    /// Announce as a seed peer (overrides host.seed).
    #[arg(long)]
    seed: bool,
    /// Unix socket for `darter get` (overrides daemon.socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Serve /healthz and /metrics here, e.g. 0.0.0.0:4002 (overrides
    /// daemon.metricsListen).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// What identifies a task: a task id, or a URL plus what goes into its id.
#[derive(Args)]
struct TaskRef {
    /// URL or 64-hex task id.
    target: String,
    #[command(flatten)]
    id: IdArgs,
}

#[derive(Args, Clone)]
struct IdArgs {
    /// Tag that distinguishes otherwise identical URLs.
    #[arg(long)]
    tag: Option<String>,
    /// Application the download is for.
    #[arg(long)]
    application: Option<String>,
    /// Query parameter ignored for task identity (repeatable; replaces the
    /// default list of cloud signature parameters).
    #[arg(long = "filtered-query-param", value_name = "NAME")]
    filtered_query_params: Vec<String>,
    /// Fixed piece length, e.g. 16MiB (default: size / 500, within 1..64 MiB).
    #[arg(long)]
    piece_length: Option<ByteSize>,
}

#[derive(Args)]
struct GetArgs {
    url: String,
    /// Output file (written atomically).
    #[arg(short = 'O', long)]
    output: PathBuf,
    /// Request header for the origin, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    #[command(flatten)]
    id: IdArgs,
    /// Expected digest of the whole file: sha256:HEX, sha512:HEX or crc32c:VALUE.
    #[arg(long)]
    digest: Option<Digest>,
    /// Download rate limit, e.g. 40MiB/s (overrides download.rateLimit).
    #[arg(long)]
    rate_limit: Option<ByteRate>,
    /// Give up after this long, e.g. 30s or 2h (also bounds the wait for storage
    /// held by another darter process).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Pieces fetched at once (overrides download.concurrentPieces).
    #[arg(long)]
    concurrent_pieces: Option<usize>,
    /// Extra CA certificates (PEM) for HTTPS origins (overrides origin.caBundle).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Download in this process even when a local daemon runs.
    #[arg(long)]
    no_daemon: bool,
}

/// Entry point of the `darter` and `darter-agent` binaries.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DARTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("darter: error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the cause, outermost context first.
            let msg: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("darter: error: {}", dedup_chain(&msg));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error chain, skipping causes that the outer message already quotes.
fn dedup_chain(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.contains(p.as_str()) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(p);
        }
    }
    out
}

fn load_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    let mut cfg = AgentConfig::load(cli.config.as_deref())?;
    if let Some(d) = &cli.storage_dir {
        cfg.storage.dir = d.clone();
    }
    if let Some(c) = cli.storage_capacity {
        cfg.storage.capacity = Some(c);
    }
    if let Cmd::Daemon(d) = &cli.cmd {
        if !d.schedulers.is_empty() {
            cfg.scheduler.addresses = d.schedulers.clone();
        }
        if d.ip.is_some() {
            cfg.host.ip = d.ip;
        }
        if d.hostname.is_some() {
            cfg.host.hostname = d.hostname.clone();
        }
        if let Some(p) = d.upload_port {
            cfg.upload.port = p;
        }
        if let Some(p) = d.data_port {
            cfg.upload.data_port = p;
        }
        if let Some(r) = d.upload_rate_limit {
            cfg.upload.rate_limit = r;
        }
        if let Some(r) = d.download_rate_limit {
            cfg.download.rate_limit = r;
        }
        cfg.upload.disable_shared |= d.disable_shared;
        cfg.host.seed |= d.seed;
        if d.socket.is_some() {
            cfg.daemon.socket = d.socket.clone();
        }
        if d.metrics_listen.is_some() {
            cfg.daemon.metrics_listen = d.metrics_listen;
        }
    }
    if let Cmd::Get(g) = &cli.cmd {
        if let Some(r) = g.rate_limit {
            cfg.download.rate_limit = r;
        }
        if let Some(c) = g.concurrent_pieces {
            cfg.download.concurrent_pieces = c;
        }
        if let Some(ca) = &g.ca_bundle {
            cfg.origin.ca_bundle = Some(ca.clone());
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Opens storage; while another darter process holds it, waits (saying so once)
/// up to `wait`, so parallel `darter get`s on one node take turns instead of failing.
async fn open_storage(cfg: &AgentConfig, wait: Duration) -> anyhow::Result<Storage> {
    let policy = GcPolicy {
        task_ttl: cfg.gc.task_ttl,
        high_watermark_percent: cfg.gc.high_watermark_percent,
        low_watermark_percent: cfg.gc.low_watermark_percent,
        capacity: cfg.storage.capacity.map(ByteSize::as_u64),
    };
    // None: wait as long as it takes (no --timeout).
    let deadline = tokio::time::Instant::now().checked_add(wait);
    let mut told = false;
    loop {
        match Storage::open(&cfg.storage.dir, policy.clone()) {
            Err(crate::Error::StorageLocked { .. })
                if deadline.is_none_or(|d| tokio::time::Instant::now() < d) =>
            {
                if !told {
                    eprintln!(
                        "darter: waiting for another darter process using {}",
                        cfg.storage.dir.display()
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// How long commands other than `get --timeout` wait for the storage lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load_config(&cli)?;
    match &cli.cmd {
        Cmd::Get(args) => get(&cfg, args).await,
        Cmd::Daemon(_) => {
            let daemon = crate::daemon::Daemon::start(cfg).await?;
            let b = daemon.bound();
            // One line for scripts (ports may have been picked by the kernel).
            let metrics = b
                .metrics
                .map(|m| format!(" metrics={m}"))
                .unwrap_or_default();
            println!(
                "darter daemon: host={} upload={} data={} socket={}{metrics}",
                b.host_id,
                b.upload,
                b.data,
                b.socket.display()
            );
            daemon.run().await?;
            Ok(())
        }
        Cmd::Stat(t) => {
            let storage = open_storage(&cfg, LOCK_WAIT).await?;
            let task = find_task(&storage, t)?;
            print_task(&storage, &task)
        }
        Cmd::Ls => {
            let storage = open_storage(&cfg, LOCK_WAIT).await?;
            let mut tasks = storage.metadata.tasks()?;
            tasks.sort_by_key(|t| std::cmp::Reverse(t.accessed_at));
            println!(
                "{:<64}  {:<9}  {:>9}  {:>11}  URL",
                "TASK ID", "STATE", "SIZE", "PIECES"
            );
            for t in tasks {
                let done = storage.metadata.pieces(&t.id)?.len();
                println!(
                    "{:<64}  {:<9}  {:>9}  {:>11}  {}",
                    t.id,
                    t.state.as_str(),
                    t.content_length
                        .map_or("?".into(), |l| ByteSize(l).to_string()),
                    format!("{done}/{}", total_pieces(&t)),
                    t.url
                );
            }
            Ok(())
        }
        Cmd::Status => {
            let path = cfg.socket_path();
            let client = crate::daemon::api::Client::connect(&path)
                .await
                .with_context(|| format!("no darter daemon listens on {}", path.display()))?;
            print!("{}", serde_yaml::to_string(&client.status().await?)?);
            Ok(())
        }
        Cmd::Rm(t) => {
            let storage = open_storage(&cfg, LOCK_WAIT).await?;
            let task = find_task(&storage, t)?;
            storage.remove_task(&task.id)?;
            println!("removed {}", task.id);
            Ok(())
        }
    }
}

fn total_pieces(t: &TaskMeta) -> String {
    t.content_length
        .map_or("?".into(), |l| piece_count(l, t.piece_length).to_string())
}

fn find_task(storage: &Storage, t: &TaskRef) -> anyhow::Result<TaskMeta> {
    let id = if is_task_id(&t.target) {
        t.target.clone()
    } else {
        request_for(&t.target, &t.id).task_id()?
    };
    Ok(storage
        .metadata
        .task(&id)?
        .ok_or(crate::Error::TaskNotFound(id))?)
}

fn print_task(storage: &Storage, t: &TaskMeta) -> anyhow::Result<()> {
    let done: u64 = storage
        .metadata
        .pieces(&t.id)?
        .iter()
        .map(|p| p.length)
        .sum();
    println!("task:         {}", t.id);
    println!("url:          {}", t.url);
    println!("state:        {}", t.state.as_str());
    println!(
        "size:         {}",
        t.content_length
            .map_or("unknown".into(), |l| format!("{} ({l} bytes)", ByteSize(l)))
    );
    println!("piece length: {}", ByteSize(t.piece_length));
    println!(
        "pieces:       {}/{} ({} stored)",
        storage.metadata.pieces(&t.id)?.len(),
        total_pieces(t),
        ByteSize(done)
    );
    if let Some(tag) = &t.tag {
        println!("tag:          {tag}");
    }
    if let Some(app) = &t.application {
        println!("application:  {app}");
    }
    println!("created:      {}", fmt_time(t.created_at));
    println!("accessed:     {}", fmt_time(t.accessed_at));
    println!("content:      {}", storage.content.path(&t.id).display());
    Ok(())
}

fn fmt_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn request_for(url: &str, id: &IdArgs) -> DownloadRequest {
    DownloadRequest {
        url: url.to_string(),
        tag: id.tag.clone(),
        application: id.application.clone(),
        filtered_query_params: (!id.filtered_query_params.is_empty())
            .then(|| id.filtered_query_params.clone()),
        piece_length: id.piece_length.map(ByteSize::as_u64),
        ..Default::default()
    }
}

fn parse_headers(raw: &[String]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for h in raw {
        let Some((name, value)) = h.split_once(':') else {
            bail!("header {h:?} must look like \"Name: value\"");
        };
        let name: HeaderName = name
            .trim()
            .parse()
            .with_context(|| format!("invalid header name in {h:?}"))?;
        if name == reqwest::header::RANGE {
            bail!("the Range header is not supported by darter get (it fetches whole objects)");
        }
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("invalid header value in {h:?}"))?;
        map.append(name, value);
    }
    Ok(map)
}

async fn get(cfg: &AgentConfig, args: &GetArgs) -> anyhow::Result<()> {
    let mut req = request_for(&args.url, &args.id);
    req.task_id()?; // a bad URL is reported before anything is opened
    if args.output.is_dir() {
        bail!("output {} is a directory", args.output.display());
    }
    // Checked up front so a long download does not end in an unwritable place.
    let parent = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        bail!("output directory {} does not exist", parent.display());
    }
    req.output = Some(args.output.clone());
    req.headers = parse_headers(&args.headers)?;
    req.digest = args.digest.clone();
    req.timeout = args.timeout;

    if !args.no_daemon
        && let Some(client) = crate::daemon::api::Client::connect(&cfg.socket_path()).await
    {
        return get_via_daemon(client, req, args).await;
    }
    let storage = Arc::new(open_storage(cfg, args.timeout.unwrap_or(Duration::MAX)).await?);
    let engine = Engine::new(
        storage,
        HttpBackend::new(&cfg.origin)?,
        cfg.download.clone(),
    );
    let progress = Arc::new(Progress::default());
    let bar = (!args.quiet).then(|| progress_bar(progress.clone()));
    let result = engine.download(&req, &progress).await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let stats = result?;
    if !args.quiet {
        print_summary(args, &stats, "");
    }
    Ok(())
}

/// The download runs in the daemon (which holds storage and the swarm); this
/// process shows its progress.
async fn get_via_daemon(
    client: crate::daemon::api::Client,
    mut req: DownloadRequest,
    args: &GetArgs,
) -> anyhow::Result<()> {
    // The daemon has its own working directory.
    let out = std::path::absolute(&args.output)
        .with_context(|| format!("cannot resolve {}", args.output.display()))?;
    req.output = Some(out);
    let progress = Arc::new(Progress::default());
    let bar = (!args.quiet).then(|| progress_bar(progress.clone()));
    let p = progress.clone();
    let result = client
        .get(
            crate::daemon::api::GetRequest::from_download(&req),
            |done, total| p.set(done, total),
        )
        .await;
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let stats = result.map_err(|e| anyhow::anyhow!(e))?;
    if !args.quiet {
        print_summary(args, &stats, " via daemon");
    }
    Ok(())
}

fn print_summary(args: &GetArgs, stats: &crate::engine::DownloadStats, via: &str) {
    let secs = stats.elapsed.as_secs_f64().max(1e-6);
    eprintln!(
        "darter: saved {} ({}) in {:.2}s, {}/s{via}; task {}; {} pieces of {}: {} from origin ({}), {} from {} peers ({}), {} reused{}",
        args.output.display(),
        ByteSize(stats.content_length),
        secs,
        ByteSize((stats.content_length as f64 / secs) as u64),
        stats.task_id,
        stats.pieces,
        ByteSize(stats.piece_length),
        stats.origin_pieces,
        ByteSize(stats.origin_bytes),
        stats.peer_pieces,
        stats.parents_used,
        ByteSize(stats.peer_bytes),
        stats.reused_pieces,
        if stats.cache_hit { " (cache hit)" } else { "" },
    );
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(p: Arc<Progress>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            if let Some(t) = p.total() {
                b.set_length(t);
            }
            b.set_position(p.done());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (bar, ticker)
}
