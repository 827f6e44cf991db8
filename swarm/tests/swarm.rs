//! The swarm as users run it: real scheduler and agent daemon processes on
//! loopback addresses, a real HTTP origin, downloads through the daemons'
//! sockets, and the faults of issue 3 (a parent killed mid-transfer, a parent
//! serving corrupt bytes, the scheduler restarted mid-swarm, no scheduler,
//! mutual TLS).

use darter_agent::daemon::api::GetRequest;
use darter_agent::engine::DownloadStats;
use darter_common::ByteRate;
use darter_swarm::{AgentOptions, AgentProc, SchedulerProc, bin_dir};
use darter_testkit::tls::TestCa;
use darter_testkit::{Origin, OriginOptions};
use sha2::Digest;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MIB: usize = 1 << 20;

struct Net {
    dir: tempfile::TempDir,
    origin: Origin,
    scheduler: SchedulerProc,
    agents: Vec<AgentProc>,
}

impl Net {
    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn put(&self, name: &str, len: usize) -> String {
        let data = self.origin.put_random(name, len, len as u64 ^ 0xfeed);
        hex::encode(sha2::Sha256::digest(&data))
    }

    /// A whole-blob request checked against its sha256, 1 MiB pieces.
    fn req(&self, name: &str, sha: &str, agent: usize) -> GetRequest {
        GetRequest {
            url: self.origin.url(name),
            output: Some(self.work().join(format!("out-{name}-{agent}"))),
            piece_length: Some(MIB as u64),
            digest: Some(format!("sha256:{sha}")),
            timeout_ms: Some(120_000),
            ..Default::default()
        }
    }

    async fn get_all(&self, name: &str, sha: &str, which: &[usize]) -> Vec<DownloadStats> {
        let gets = which
            .iter()
            .map(|&i| self.agents[i].get(self.req(name, sha, i)));
        futures::future::join_all(gets)
            .await
            .into_iter()
            .enumerate()
            .map(|(k, r)| r.unwrap_or_else(|e| panic!("agent {}: {e}", which[k])))
            .collect()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.agents[i].log).unwrap_or_default()
    }
}

async fn net(n: usize, opts: impl Fn(usize) -> AgentOptions, origin_rate: Option<ByteRate>) -> Net {
    net_with(n, opts, origin_rate, "").await
}

async fn net_with(
    n: usize,
    opts: impl Fn(usize) -> AgentOptions,
    origin_rate: Option<ByteRate>,
    scheduler_extra: &str,
) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(
        "127.0.0.1",
        OriginOptions {
            rate: origin_rate,
            ..OriginOptions::standard()
        },
    )
    .await
    .unwrap();
    let scheduler =
        SchedulerProc::start_with(dir.path(), "127.0.0.1:0".parse().unwrap(), scheduler_extra)
            .await
            .unwrap();
    let mut agents = Vec::new();
    for i in 0..n {
        let a = AgentProc::start(dir.path(), i, scheduler.addr, &opts(i))
            .await
            .unwrap();
        agents.push(a);
    }
    for a in &agents {
        a.wait_announced(Duration::from_secs(20)).await.unwrap();
    }
    Net {
        dir,
        origin,
        scheduler,
        agents,
    }
}

fn capped(rate: u64) -> impl Fn(usize) -> AgentOptions {
    move |_| AgentOptions {
        bandwidth: Some(ByteRate(rate)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_costs_the_origin_one_copy_and_leeches_never_serve() {
    let leech = 3;
    let n = net(
        4,
        |i| AgentOptions {
            bandwidth: Some(ByteRate(40 * MIB as u64)),
            disable_shared: i == leech,
            ..Default::default()
        },
        Some(ByteRate(40 * MIB as u64)),
    )
    .await;
    let len = 24 * MIB + 7;
    let sha = n.put("blob", len);
    n.origin.reset_counters();
    // The leech joins a moment later: a leech that registers first is sent to
    // the origin and, serving nobody, cannot spare the next peer a second copy.
    let leech_get = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        n.get_all("blob", &sha, &[leech]).await
    };
    let (mut stats, late) = tokio::join!(n.get_all("blob", &sha, &[0, 1, 2]), leech_get);
    stats.extend(late);
    assert_eq!(stats[3].origin_bytes, 0, "the leech fetched from peers");
    let origin = n.origin.bytes_sent();
    assert!(
        origin as f64 <= 1.05 * len as f64,
        "origin sent {origin} bytes for a {len}-byte blob"
    );
    let peer: u64 = stats.iter().map(|s| s.peer_bytes).sum();
    assert!(peer >= 2 * len as u64, "peers moved only {peer} bytes");
    for (i, a) in n.agents.iter().enumerate() {
        let st = a.status().await.unwrap();
        if i == leech {
            assert_eq!(st.uploaded_bytes, 0, "the leech uploaded");
        }
        let out = std::fs::read(n.work().join(format!("out-blob-{i}"))).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&out)), sha);
    }

    // `darter get` on that node goes through its daemon (a cache hit now).
    let out = n.work().join("cli-out");
    let cli = std::process::Command::new(bin_dir().join("darter"))
        .arg("--config")
        .arg(n.agents[1].dir.join("agent.yaml"))
        .args(["get", &n.origin.url("blob"), "--piece-length", "1MiB", "-O"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(cli.status.success(), "{stderr}");
    assert!(
        stderr.contains("via daemon") && stderr.contains("cache hit"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), len as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_killed_mid_transfer_does_not_stop_the_others() {
    let rate = 12 * MIB as u64;
    let mut n = net(5, capped(rate), Some(ByteRate(rate))).await;
    let len = 24 * MIB;
    let sha = n.put("blob", len);
    // Agent 0 starts first, so it is everyone's first parent; it dies while
    // it is still fetching and serving.
    let _first = spawn_gets(&n, "blob", &sha, &[0]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rest = spawn_gets(&n, "blob", &sha, &[1, 2, 3, 4]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    n.agents[0].kill().await;
    let mut stats = Vec::new();
    for (i, g) in rest.into_iter().enumerate() {
        stats.push(
            g.await
                .unwrap()
                .unwrap_or_else(|e| panic!("agent {}: {e}", i + 1)),
        );
    }
    assert_eq!(stats.len(), 4);
    for i in 1..5 {
        let out = std::fs::read(n.work().join(format!("out-blob-{i}"))).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&out)), sha, "agent {i}");
    }
    let dropped = (1..5).any(|i| n.log(i).contains("dropping parent"));
    assert!(dropped, "no agent noticed its parent die");
}

/// The content file of `task` in agent `i`'s storage.
fn content_file(n: &Net, i: usize, task: &str) -> PathBuf {
    n.agents[i]
        .dir
        .join("storage/content")
        .join(&task[..3])
        .join(task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_serving_corrupt_bytes_is_caught_and_avoided() {
    let n = net(2, |_| AgentOptions::default(), None).await;
    let len = 8 * MIB;
    let sha = n.put("blob", len);
    let s0 = n.get_all("blob", &sha, &[0]).await.remove(0);
    // Every piece agent 0 holds rots on disk (its records keep the old CRCs).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(content_file(&n, 0, &s0.task_id))
        .unwrap();
    for p in 0..8u64 {
        f.write_all_at(b"rot", p * MIB as u64 + 100).unwrap();
    }
    n.origin.reset_counters();
    // Agent 1's only parent is agent 0: it must notice, drop it and get the
    // pieces elsewhere (here the origin); the digest check proves the bytes.
    let s1 = n.get_all("blob", &sha, &[1]).await.remove(0);
    assert!(s1.origin_bytes > 0, "{s1:?}");
    assert_eq!(
        std::fs::read(n.work().join("out-blob-1")).unwrap().len(),
        len
    );
    let log = n.log(1);
    assert!(
        log.contains("is corrupt") && log.contains("dropping parent"),
        "{log}"
    );
}

/// Starts downloads on `which` agents as background tasks (so the test can
/// act on the swarm meanwhile).
fn spawn_gets(
    n: &Net,
    name: &str,
    sha: &str,
    which: &[usize],
) -> Vec<tokio::task::JoinHandle<Result<DownloadStats, String>>> {
    which
        .iter()
        .map(|&i| {
            let socket = n.agents[i].socket.clone();
            let req = n.req(name, sha, i);
            tokio::spawn(async move {
                let c = darter_agent::daemon::api::Client::connect(&socket)
                    .await
                    .ok_or("no daemon")?;
                c.get(req, |_, _| {}).await
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_restarted_mid_swarm() {
    let rate = 12 * MIB as u64;
    let mut n = net(4, capped(rate), Some(ByteRate(rate))).await;
    let len = 24 * MIB;
    let sha = n.put("blob", len);
    let gets = spawn_gets(&n, "blob", &sha, &[0, 1, 2, 3]);
    tokio::time::sleep(Duration::from_millis(900)).await;
    // SIGKILL and a fresh process on the same address, with no state.
    n.scheduler.restart().await.unwrap();
    for (i, g) in gets.into_iter().enumerate() {
        g.await
            .unwrap()
            .unwrap_or_else(|e| panic!("agent {i}: {e}"));
        let out = std::fs::read(n.work().join(format!("out-blob-{i}"))).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&out)), sha, "agent {i}");
    }
    // The agents found the new scheduler, and the swarm works through it.
    for a in &n.agents {
        a.wait_announced(Duration::from_secs(10)).await.unwrap();
    }
    let relinked = (0..4).any(|i| n.log(i).contains("registered with the scheduler again"));
    let sha2 = n.put("second", 16 * MIB);
    n.origin.reset_counters();
    n.get_all("second", &sha2, &[0, 1, 2, 3]).await;
    let origin = n.origin.bytes_sent();
    assert!(
        origin as f64 <= 1.05 * (16 * MIB) as f64,
        "origin sent {origin} after the restart (relinked mid-download: {relinked})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scheduler_downloads_still_finish_from_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start("127.0.0.1", OriginOptions::standard())
        .await
        .unwrap();
    let data = origin.put_random("blob", 5 * MIB + 1, 3);
    // Nothing listens on port 9 of 127.0.0.1.
    let a = AgentProc::start(
        dir.path(),
        0,
        "127.0.0.1:9".parse().unwrap(),
        &AgentOptions::default(),
    )
    .await
    .unwrap();
    let st = a.status().await.unwrap();
    assert!(st.cluster.is_none());
    let s = a
        .get(GetRequest {
            url: origin.url("blob"),
            output: Some(dir.path().join("out")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.origin_bytes, data.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), data[..]);
    let st = a.status().await.unwrap();
    assert!(st.scheduler_error.is_some(), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_between_scheduler_and_agents() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new().unwrap();
    let [ca_crt, crt, key] = ca.write(certs.path(), "scheduler", &["127.0.0.1"]).unwrap();
    let tls_yaml = |ca: &Path, crt: &Path, key: &Path| {
        format!(
            "tls:\n  caCert: {}\n  cert: {}\n  key: {}\n",
            ca.display(),
            crt.display(),
            key.display()
        )
    };
    let sched_tls = tls_yaml(&ca_crt, &crt, &key);
    let agent_tls: Vec<String> = (0..3)
        .map(|i| {
            let ip = darter_swarm::agent_ip(i).to_string();
            let [c, crt, key] = ca
                .write(certs.path(), &format!("agent-{i}"), &[&ip])
                .unwrap();
            tls_yaml(&c, &crt, &key)
        })
        .collect();
    let n = net_with(
        3,
        |i| AgentOptions {
            extra_config: agent_tls[i].clone(),
            ..Default::default()
        },
        None,
        &sched_tls,
    )
    .await;
    let len = 6 * MIB;
    let sha = n.put("blob", len);
    n.get_all("blob", &sha, &[0]).await;
    n.origin.reset_counters();
    let s = n.get_all("blob", &sha, &[1, 2]).await;
    assert_eq!(n.origin.bytes_sent(), 0);
    assert_eq!(s[0].peer_bytes + s[1].peer_bytes, 2 * len as u64);

    // An agent without a certificate is refused by the scheduler.
    let outsider = AgentProc::start(n.work(), 7, n.scheduler.addr, &AgentOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = outsider.status().await.unwrap();
    assert!(
        st.cluster.is_none() && st.scheduler_error.is_some(),
        "{st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_split_agents_by_scope_and_keep_traffic_inside() {
    let scopes = "clusters:\n\
        - name: a\n  spec: {scopes: {hostnames: ['^agent-[01]$']}}\n\
        - name: b\n  spec: {isDefault: true, scopes: {cidrs: ['127.0.1.3/32', '127.0.1.4/32']}}\n";
    let n = net_with(4, |_| AgentOptions::default(), None, scopes).await;
    let mut clusters = Vec::new();
    for a in &n.agents {
        clusters.push(a.status().await.unwrap().cluster.unwrap_or_default());
    }
    assert_eq!(clusters, ["a", "a", "b", "b"]);

    let len = 4 * MIB;
    let sha = n.put("blob", len);
    n.get_all("blob", &sha, &[0, 1]).await;
    assert!(
        n.origin.bytes_sent() <= len as u64 + 2,
        "cluster a: one origin copy"
    );
    // Cluster b cannot use cluster a's copies: its first agent goes to the
    // origin, its second fetches from the first.
    n.origin.reset_counters();
    let s2 = n.get_all("blob", &sha, &[2]).await.remove(0);
    assert_eq!(s2.origin_bytes, len as u64, "{s2:?}");
    let s3 = n.get_all("blob", &sha, &[3]).await.remove(0);
    assert_eq!(s3.peer_bytes, len as u64, "{s3:?}");
    assert_eq!(s3.origin_bytes, 0);
}

/// Polls `agent`'s status until `ok` holds (settings arrive over the command
/// stream a moment after the agent announces).
async fn wait_status(
    a: &AgentProc,
    within: Duration,
    ok: impl Fn(&darter_agent::daemon::api::Status) -> bool,
) -> darter_agent::daemon::api::Status {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let st = a.status().await.unwrap();
        if ok(&st) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent status never matched: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_policies_reach_agents_at_run_time_and_a_leech_is_never_offered() {
    let policies = "peerPolicies:\n\
        - name: gpu-leech\n  spec: {selector: {hostnames: ['^agent-0$']}, disableShared: true, uploadRateLimit: 3MiB/s}\n\
        - name: everyone\n  spec: {downloadRateLimit: 900MiB/s, gc: {highPercent: 90, lowPercent: 70}}\n";
    let n = net_with(3, |_| AgentOptions::default(), None, policies).await;
    // The agents start on their own config; the policies come down the
    // command stream and apply without a restart.
    let s0 = wait_status(&n.agents[0], Duration::from_secs(15), |s| {
        s.settings
            .as_ref()
            .is_some_and(|s| s.policy.as_deref() == Some("gpu-leech"))
    })
    .await
    .settings
    .unwrap();
    assert!(s0.disable_shared);
    assert_eq!(s0.upload_rate_limit, ByteRate(3 * MIB as u64));
    let s1 = wait_status(&n.agents[1], Duration::from_secs(15), |s| {
        s.settings
            .as_ref()
            .is_some_and(|s| s.policy.as_deref() == Some("everyone"))
    })
    .await
    .settings
    .unwrap();
    assert!(!s1.disable_shared);
    assert_eq!(s1.download_rate_limit, ByteRate(900 * MIB as u64));
    assert_eq!(
        (s1.gc_high_watermark_percent, s1.gc_low_watermark_percent),
        (90, 70)
    );

    // The leech holds the whole blob before the others ask for it...
    let len = 8 * MIB;
    let sha = n.put("blob", len);
    let first = n.get_all("blob", &sha, &[0]).await.remove(0);
    assert_eq!(first.origin_bytes, len as u64);
    n.origin.reset_counters();
    let stats = n.get_all("blob", &sha, &[1, 2]).await;
    // ...yet the scheduler never offers it: it neither served nor refused a
    // single request, and its copy saved the origin nothing.
    let st0 = n.agents[0].status().await.unwrap();
    assert_eq!(
        (st0.uploaded_bytes, st0.refused_requests),
        (0, 0),
        "{st0:?}"
    );
    assert!(n.origin.bytes_sent() >= len as u64, "{stats:?}");
    // The agent's /metrics says the same.
    let m = n.agents[0].metrics_text().await.unwrap();
    for line in [
        "darter_agent_leech 1",
        "darter_agent_upload_rate_limit_bytes_per_second 3145728",
        "darter_agent_upload_bytes_total 0",
        "darter_agent_upload_refused_requests_total 0",
        "darter_agent_tasks 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
}
