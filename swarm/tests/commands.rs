//! The operator's command stream end to end: the operator's own gRPC server
//! and agent registry (in this process) drive a real agent daemon process
//! over the stream it opens: download a task, list, stat and delete it, and
//! push settings it refuses.

use darter_crds::PeerPolicySpec;
use darter_operator::agents::push::{PolicyPusher, Round};
use darter_operator::agents::{Agents, CommandError};
use darter_operator::scheduler::Scheduler;
use darter_operator::scheduler::policies::PolicyMatcher;
use darter_operator::scheduler::service::{SchedulerService, serve};
use darter_proto::agent::v1::command::Command;
use darter_proto::agent::v1::{DeleteTask, DownloadTask, ListTasks, StatTask};
use darter_proto::common::v1::{TaskSpec, TaskState};
use darter_swarm::{AgentOptions, AgentProc};
use darter_testkit::{Origin, OriginOptions};
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_drives_an_agent_over_its_command_stream() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start("127.0.0.1", OriginOptions::standard())
        .await
        .unwrap();
    let len = 3 << 20;
    let data = origin.put_random("blob", len, 7);
    let sha = hex::encode(sha2::Sha256::digest(&data));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let agents = Arc::new(Agents::default());
    let core = Arc::new(Scheduler::new(Default::default()));
    let svc = SchedulerService::new(core.clone());
    tokio::spawn(serve(
        tonic::transport::Server::builder(),
        listener,
        svc,
        agents.clone(),
        Duration::from_secs(30),
        std::future::pending::<()>(),
    ));
    let agent = AgentProc::start(dir.path(), 0, addr, &AgentOptions::default())
        .await
        .unwrap();
    agent.wait_announced(WAIT).await.unwrap();
    let host = agent.host_id.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agents.attached().contains(&host) {
        assert!(tokio::time::Instant::now() < deadline, "no command stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let spec = TaskSpec {
        url: origin.url("blob"),
        piece_length: Some(1 << 20),
        digest: Some(format!("sha256:{sha}")),
        ..Default::default()
    };
    let done = agents
        .send(
            &host,
            Command::DownloadTask(DownloadTask { task: Some(spec) }),
            WAIT,
        )
        .await
        .unwrap();
    let id = done.tasks[0].id.clone();
    assert_eq!(done.tasks[0].content_length, Some(len as u64));

    let listed = agents
        .send(&host, Command::ListTasks(ListTasks {}), WAIT)
        .await
        .unwrap();
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].pieces, [0, 1, 2]);
    let stat = agents
        .send(
            &host,
            Command::StatTask(StatTask {
                task_id: id.clone(),
            }),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(stat.tasks[0].state, TaskState::Succeeded as i32);

    // A bad command gets a clear refusal, and the stream stays usable.
    let missing = agents
        .send(
            &host,
            Command::StatTask(StatTask {
                task_id: "f".repeat(64),
            }),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, CommandError::Refused { message, .. } if message.contains("not held")),
        "{missing}"
    );
    agents
        .send(&host, Command::DeleteTask(DeleteTask { task_id: id }), WAIT)
        .await
        .unwrap();
    let listed = agents
        .send(&host, Command::ListTasks(ListTasks {}), WAIT)
        .await
        .unwrap();
    assert!(listed.tasks.is_empty(), "{:?}", listed.tasks);

    // Settings the agent refuses (watermarks the CRD would refuse, here from
    // standalone-style YAML) are reported and not sent again until they change.
    let pusher = PolicyPusher::new(
        agents.clone(),
        core,
        Arc::default(),
        Duration::from_secs(3600),
    );
    let policy = |yaml: &str| serde_yaml::from_str::<PeerPolicySpec>(yaml).unwrap();
    let bad = policy("gc: {highPercent: 50, lowPercent: 70}");
    *pusher.policies.write() = PolicyMatcher::new([("gc", &bad)]).unwrap();
    assert_eq!(pusher.push_round().await, Round { sent: 0, failed: 1 });
    let (n, why) = pusher.refused()["gc"].clone();
    assert!(n == 1 && why.contains("low < high"), "{why}");
    assert_eq!(pusher.push_round().await, Round::default(), "sent again");
    assert_eq!(pusher.refused()["gc"].0, 1, "still reported");
    let good = policy("gc: {highPercent: 90, lowPercent: 70}");
    *pusher.policies.write() = PolicyMatcher::new([("gc", &good)]).unwrap();
    assert_eq!(pusher.push_round().await, Round { sent: 1, failed: 0 });
    assert!(pusher.refused().is_empty());
}
