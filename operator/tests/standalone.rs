//! `darter-operator scheduler` as a process: reads its YAML, listens, answers.

use darter_proto::scheduler::v1 as pb;
use std::io::BufRead;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_scheduler_serves_from_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("scheduler.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\ncluster: lab\nannounceInterval: 7s\nscheduling:\n  candidateParentLimit: 2\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_darter-operator"))
        .args(["scheduler", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_string();
    let mut client = pb::scheduler_client::SchedulerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let r = client
        .announce_host(pb::AnnounceHostRequest {
            host: Some(pb::Host {
                id: "127.0.0.1-a".into(),
                ip: "127.0.0.1".into(),
                hostname: "a".into(),
                upload_port: 4000,
                upload_slots: 10,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.cluster.as_str(), r.announce_interval_seconds),
        ("lab", 7)
    );
    let bad = client
        .announce_host(pb::AnnounceHostRequest {
            host: Some(pb::Host {
                id: "x".into(),
                ip: "not-an-ip".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    child.kill().unwrap();
    let _ = child.wait();

    // A bad config is refused with the field named.
    std::fs::write(&cfg, "scheduling:\n  candidateParentLimt: 2\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_darter-operator"))
        .args(["scheduler", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("candidateParentLimt"));
}
