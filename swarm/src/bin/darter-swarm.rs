//! `darter-swarm`: the main job. Starts an origin, the scheduler and N agent
//! daemons on loopback, has every agent fetch one blob at the same moment,
//! then prints per-agent times and bytes by source, and a summary that ends
//! with `swarm: agents=N blob_bytes=F origin_bytes=O last_s=T floor_s=T0 efficiency=T0/T`.

use anyhow::{Context, bail};
use clap::Parser;
use darter_agent::daemon::api::GetRequest;
use darter_common::{ByteRate, ByteSize};
use darter_swarm::{AgentOptions, AgentProc, SchedulerProc};
use darter_testkit::{Origin, OriginOptions};
use sha2::Digest as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "darter-swarm",
    version,
    about = "Run a local Darter swarm on loopback"
)]
struct Args {
    /// Number of agents.
    #[arg(long, default_value_t = 5)]
    agents: usize,
    /// Size of the blob every agent fetches.
    #[arg(long, default_value = "128MiB")]
    blob_size: ByteSize,
    /// Cap on each agent's upload and on its download.
    #[arg(long, default_value = "50MiB/s")]
    agent_bandwidth: ByteRate,
    /// Cap on the origin's upload (all connections together).
    #[arg(long, default_value = "50MiB/s")]
    origin_bandwidth: ByteRate,
    /// Concurrent piece uploads per agent (default: the agent's default).
    #[arg(long)]
    upload_slots: Option<usize>,
    /// Fixed piece length (default: size / 500 within 1..64 MiB).
    #[arg(long)]
    piece_length: Option<ByteSize>,
    /// Working directory (agents' storage, configs, logs); default a temp dir.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the working directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Give up on the downloads after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn mib_s(bytes: u64, secs: f64) -> String {
    format!(
        "{:.1} MiB/s",
        bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DARTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let tmp;
    let work = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    let result = run(&args, &work).await;
    if !args.keep && args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        println!("work dir: {}", work.display());
    }
    result
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("darter-swarm-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

async fn run(args: &Args, work: &std::path::Path) -> anyhow::Result<()> {
    let f = args.blob_size.as_u64();
    let n = args.agents;
    let u_s = args.origin_bandwidth.0;
    let u = args.agent_bandwidth.0;

    let origin = Origin::start(
        "127.0.0.1",
        OriginOptions {
            rate: Some(args.origin_bandwidth),
            ..OriginOptions::standard()
        },
    )
    .await
    .context("cannot start the origin")?;
    let blob = origin.put_random("blob", f as usize, 0x5eed);
    let sha = hex::encode(sha2::Sha256::digest(&blob));
    drop(blob);
    println!(
        "origin:    {} ({} blob, upload cap {})",
        origin.url("blob"),
        ByteSize(f),
        args.origin_bandwidth
    );

    let scheduler = SchedulerProc::start(work, "127.0.0.1:0".parse()?).await?;
    println!("scheduler: {}", scheduler.addr);
    let opts = AgentOptions {
        bandwidth: Some(args.agent_bandwidth),
        upload_slots: args.upload_slots,
        ..Default::default()
    };
    let agents = futures::future::try_join_all(
        (0..n).map(|i| AgentProc::start(work, i, scheduler.addr, &opts)),
    )
    .await?;
    futures::future::try_join_all(
        agents
            .iter()
            .map(|a| a.wait_announced(Duration::from_secs(30))),
    )
    .await?;
    println!(
        "agents:    {n} on {}..{}, each capped at {} up and down",
        agents[0].ip,
        agents[n - 1].ip,
        args.agent_bandwidth
    );
    origin.reset_counters();

    let out_dir = work.join("out");
    std::fs::create_dir_all(&out_dir)?;
    let started = Instant::now();
    let gets = agents.iter().map(|a| {
        let req = GetRequest {
            url: origin.url("blob"),
            output: Some(out_dir.join(format!("agent-{}.bin", a.index))),
            piece_length: args.piece_length.map(ByteSize::as_u64),
            digest: Some(format!("sha256:{sha}")),
            timeout_ms: Some(args.timeout.as_millis() as u64),
            ..Default::default()
        };
        async move {
            let r = a.get(req).await;
            (a, r, started.elapsed())
        }
    });
    let results = futures::future::join_all(gets).await;
    let origin_bytes = origin.bytes_sent();

    println!();
    println!(
        "{:<6} {:<12} {:>8} {:>11} {:>11} {:>8} {:>11} {:>13}",
        "AGENT", "ADDRESS", "TIME s", "ORIGIN", "PEERS", "PARENTS", "UPLOADED", "RATE"
    );
    let mut last = 0f64;
    let mut failed = 0;
    for (a, r, t) in &results {
        let up = a.status().await.map(|s| s.uploaded_bytes).unwrap_or(0);
        match r {
            Ok(s) => {
                let secs = t.as_secs_f64();
                last = last.max(secs);
                println!(
                    "{:<6} {:<12} {:>8.2} {:>11} {:>11} {:>8} {:>11} {:>13}",
                    a.index,
                    a.ip.to_string(),
                    secs,
                    ByteSize(s.origin_bytes).to_string(),
                    ByteSize(s.peer_bytes).to_string(),
                    s.parents_used,
                    ByteSize(up).to_string(),
                    mib_s(f, secs)
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "{:<6} {:<12} FAILED: {e} (log {})",
                    a.index,
                    a.ip.to_string(),
                    a.log.display()
                );
            }
        }
    }
    // The floor: the origin's upload, the slowest download, and the swarm's
    // total upload each bound the time to the last agent.
    let floor = [
        f as f64 / u_s as f64,
        f as f64 / u as f64,
        (n as u64 * f) as f64 / (u_s + n as u64 * u) as f64,
    ]
    .into_iter()
    .fold(0f64, f64::max);
    println!();
    println!(
        "origin bytes / blob size: {:.3}   last agent / floor: {:.2}x   all files sha256 {}",
        origin_bytes as f64 / f as f64,
        last / floor,
        if failed == 0 {
            "verified"
        } else {
            "NOT all verified"
        }
    );
    println!(
        "swarm: agents={n} blob_bytes={f} origin_bytes={origin_bytes} last_s={last:.2} floor_s={floor:.2} efficiency={:.2}",
        floor / last.max(1e-9)
    );
    drop(agents);
    drop(scheduler);
    if failed > 0 {
        bail!("{failed} of {n} agents failed");
    }
    Ok(())
}
