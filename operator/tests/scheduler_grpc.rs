//! The scheduler service over real gRPC on loopback: hosts announce, a cold
//! start of several peers costs one origin fetch, and stat shows the holders.

use darter_operator::scheduler::service::SchedulerService;
use darter_operator::scheduler::{Scheduler, SchedulerConfig};
use darter_proto::scheduler::v1 as pb;
use pb::download_request::Event;
use pb::download_response::Decision;
use pb::scheduler_client::SchedulerClient;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

async fn start() -> SchedulerClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut svc = SchedulerService::new(Arc::new(Scheduler::new(SchedulerConfig::default())));
    svc.retry_interval = Duration::from_millis(20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::scheduler_server::SchedulerServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    SchedulerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn host(n: u8) -> pb::Host {
    pb::Host {
        id: format!("127.0.0.{n}-node{n}"),
        ip: format!("127.0.0.{n}"),
        hostname: format!("node{n}"),
        upload_port: 4000,
        r#type: pb::HostType::Normal as i32,
        upload_slots: 100,
        ..Default::default()
    }
}

fn register(n: u8) -> pb::DownloadRequest {
    pb::DownloadRequest {
        event: Some(Event::Register(pb::Register {
            host_id: host(n).id,
            peer_id: format!("peer{n}"),
            task_id: "t".repeat(64),
            content_length: Some(40 << 20),
            piece_count: Some(10),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_then_holders() {
    let mut client = start().await;
    for n in 1..=4 {
        let r = client
            .announce_host(pb::AnnounceHostRequest {
                host: Some(host(n)),
            })
            .await
            .unwrap();
        assert_eq!(r.into_inner().cluster, "default");
    }
    let mut senders = Vec::new();
    let mut back_to_source = 0;
    for n in 1..=4u8 {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(register(n)).await.unwrap();
        let mut resp = client
            .download(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        match resp.next().await.unwrap().unwrap().decision.unwrap() {
            Decision::BackToSource(_) => back_to_source += 1,
            Decision::Parents(p) => assert!(!p.parents.is_empty()),
            Decision::EmptyTask(_) => panic!("not empty"),
        }
        senders.push((tx, resp));
    }
    assert_eq!(back_to_source, 1, "one origin fetch for four peers");

    // Everyone finishes; stat shows four finished holders.
    for (tx, _) in &senders {
        tx.send(pb::DownloadRequest {
            event: Some(Event::Finished(pb::DownloadFinished {
                content_length: 40 << 20,
                piece_count: 10,
            })),
        })
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = client
            .stat_task(pb::StatTaskRequest {
                task_id: "t".repeat(64),
            })
            .await
            .unwrap()
            .into_inner();
        if s.holders.iter().filter(|h| h.finished).count() == 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Unknown hosts and malformed streams are refused clearly.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(register(9)).await.unwrap();
    let err = client
        .download(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
}
