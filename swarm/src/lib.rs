//! Runs Darter's real processes on loopback: the standalone scheduler
//! (`darter-operator scheduler`) and agent daemons (`darter-agent daemon`),
//! each agent on its own 127.0.0.x address with its own storage and ports.
//! Used by `darter-swarm` and by the fault tests.

use darter_agent::daemon::api::{Client, GetRequest, Status};
use darter_agent::engine::DownloadStats;
use darter_common::ByteRate;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Error)]
pub enum SwarmError {
    #[error("{0} not found next to this program (build the workspace: cargo build --bins)")]
    MissingBinary(PathBuf),
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not start: {detail} (log: {log})")]
    Start {
        what: String,
        detail: String,
        log: PathBuf,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("agent {agent}: {detail}")]
    Agent { agent: usize, detail: String },
}

pub type Result<T, E = SwarmError> = std::result::Result<T, E>;

/// Where the darter binaries are: next to the running program (cargo puts
/// all of a workspace's binaries, and test binaries' parent, in one place).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DARTER_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        return dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    dir
}

fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(SwarmError::MissingBinary(p))
    }
}

/// Starts `cmd` with stderr to `log` and returns it with the first stdout
/// line that starts with `prefix`.
async fn spawn_and_read(
    mut cmd: Command,
    what: &str,
    log: &Path,
    prefix: &str,
) -> Result<(Child, String)> {
    let log_file = std::fs::File::create(log)?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| SwarmError::Spawn {
        what: what.to_string(),
        source,
    })?;
    let fail = |detail: String| SwarmError::Start {
        what: what.to_string(),
        detail,
        log: log.to_path_buf(),
    };
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with(prefix) {
                return Some(l);
            }
        }
        None
    })
    .await
    .map_err(|_| fail("no start line within 30s".into()))?
    .ok_or_else(|| fail("exited before it was ready".into()))?;
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, line))
}

/// The standalone scheduler process.
pub struct SchedulerProc {
    child: Child,
    pub addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl SchedulerProc {
    /// Starts on `listen` (port 0: any) with a config tuned for a local swarm.
    pub async fn start(work: &Path, listen: SocketAddr) -> Result<Self> {
        Self::start_with(work, listen, "").await
    }

    /// As [`SchedulerProc::start`], with `extra` YAML appended to its config.
    pub async fn start_with(work: &Path, listen: SocketAddr, extra: &str) -> Result<Self> {
        let config = work.join("scheduler.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: \"{listen}\"\nannounceInterval: 5s\nretryInterval: 200ms\ngcInterval: 10s\n\
                 scheduling:\n  hostTtl: 30s\n{extra}"
            ),
        )?;
        Self::spawn(config, work.join("scheduler.log")).await
    }

    async fn spawn(config: PathBuf, log: PathBuf) -> Result<Self> {
        let mut cmd = Command::new(binary("darter-operator")?);
        cmd.arg("scheduler").arg("--config").arg(&config);
        cmd.env(
            "DARTER_LOG",
            std::env::var("DARTER_SWARM_LOG").unwrap_or("info".into()),
        );
        let (child, line) = spawn_and_read(cmd, "scheduler", &log, "listening on").await?;
        let addr = line
            .trim_start_matches("listening on")
            .trim()
            .parse()
            .map_err(|e| SwarmError::Start {
                what: "scheduler".into(),
                detail: format!("bad address line {line:?}: {e}"),
                log: log.clone(),
            })?;
        Ok(Self {
            child,
            addr,
            config,
            log,
        })
    }

    /// Kills it (SIGKILL: no goodbye to the agents).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again on the same address, with empty state.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await;
        let text = std::fs::read_to_string(&self.config)?;
        let fixed = text
            .lines()
            .map(|l| {
                if l.starts_with("listen:") {
                    format!("listen: \"{}\"", self.addr)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&self.config, fixed)?;
        let log = self.log.with_extension("restarted.log");
        *self = Self::spawn(self.config.clone(), log).await?;
        Ok(())
    }
}

/// How one agent is set up.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Caps its upload and its download.
    pub bandwidth: Option<ByteRate>,
    /// Leech mode.
    pub disable_shared: bool,
    /// Concurrent piece uploads (default: the agent's default).
    pub upload_slots: Option<usize>,
    /// Extra YAML appended to its config file.
    pub extra_config: String,
}

/// One agent daemon process on its own loopback address.
pub struct AgentProc {
    child: Child,
    pub index: usize,
    pub ip: IpAddr,
    pub host_id: String,
    /// Its `/healthz` and `/metrics` endpoint.
    pub metrics: Option<SocketAddr>,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// Agent `i`'s address: 127.0.1.x, 127.0.2.x, ... (never 127.0.0.1).
pub fn agent_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (i / 250) as u8,
        1 + (i % 250) as u8,
    ))
}

impl AgentProc {
    pub async fn start(
        work: &Path,
        index: usize,
        scheduler: SocketAddr,
        opts: &AgentOptions,
    ) -> Result<Self> {
        let ip = agent_ip(index);
        let dir = work.join(format!("agent-{index}"));
        std::fs::create_dir_all(&dir)?;
        let mut yaml = format!(
            "storage:\n  dir: {storage}\nscheduler:\n  addresses: [\"{scheduler}\"]\n  announceInterval: 5s\n\
             host:\n  ip: {ip}\n  hostname: agent-{index}\ndaemon:\n  metricsListen: \"{ip}:0\"\n\
             upload:\n  port: 0\n  dataPort: 0\n  disableShared: {leech}\n",
            storage = dir.join("storage").display(),
            leech = opts.disable_shared,
        );
        if let Some(n) = opts.upload_slots {
            yaml.push_str(&format!("  slots: {n}\n"));
        }
        if let Some(bw) = opts.bandwidth {
            yaml.push_str(&format!(
                "  rateLimit: {}\ndownload:\n  rateLimit: {}\n",
                bw.0, bw.0
            ));
        }
        yaml.push_str(&opts.extra_config);
        let config = dir.join("agent.yaml");
        std::fs::write(&config, yaml)?;
        let log = dir.join("agent.log");
        let mut cmd = Command::new(binary("darter-agent")?);
        cmd.arg("--config").arg(&config).arg("daemon");
        cmd.env(
            "DARTER_LOG",
            std::env::var("DARTER_SWARM_LOG").unwrap_or("info".into()),
        );
        let what = format!("agent {index}");
        let (child, line) = spawn_and_read(cmd, &what, &log, "darter daemon:").await?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
                .unwrap_or_default()
        };
        Ok(Self {
            child,
            index,
            ip,
            host_id: field("host"),
            socket: PathBuf::from(field("socket")),
            metrics: field("metrics").parse().ok(),
            dir,
            log,
        })
    }

    fn err(&self, detail: impl std::fmt::Display) -> SwarmError {
        SwarmError::Agent {
            agent: self.index,
            detail: detail.to_string(),
        }
    }

    async fn client(&self) -> Result<Client> {
        Client::connect(&self.socket)
            .await
            .ok_or_else(|| self.err("daemon socket not answering"))
    }

    pub async fn status(&self) -> Result<Status> {
        self.client().await?.status().await.map_err(|e| self.err(e))
    }

    /// Waits until the agent has announced itself to the scheduler.
    /// The body of its `/metrics` (a plain HTTP/1.1 GET on loopback).
    pub async fn metrics_text(&self) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .metrics
            .ok_or_else(|| self.err("no metrics endpoint"))?;
        let mut sock = tokio::net::TcpStream::connect(addr).await?;
        sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .await?;
        let mut resp = String::new();
        sock.read_to_string(&mut resp).await?;
        match resp.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(self.err(format!("metrics answered: {resp}"))),
        }
    }

    pub async fn wait_announced(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let st = self.status().await?;
            if st.cluster.is_some() && st.scheduler_error.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.err(format!(
                    "not announced within {within:?}: {:?}",
                    st.scheduler_error
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Downloads through the daemon.
    pub async fn get(&self, req: GetRequest) -> Result<DownloadStats> {
        self.client()
            .await?
            .get(req, |_, _| {})
            .await
            .map_err(|e| self.err(e))
    }

    /// SIGKILL, as a node crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
