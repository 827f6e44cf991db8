//! Piece transfer between two agents' storages over real gRPC on loopback.

mod common;

use common::{MIB, origin};
use darter_agent::Error;
use darter_agent::backend::HttpBackend;
use darter_agent::config::{DownloadConfig, OriginConfig};
use darter_agent::engine::{DownloadRequest, Engine, Progress};
use darter_agent::peer::{client::fetch_piece, server::PeerService, upload::Uploads};
use darter_agent::storage::{GcPolicy, Storage};
use darter_common::{ByteRate, RateLimiter, piece_range};
use darter_proto::peer::v1 as pb;
use darter_testkit::OriginOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio_stream::StreamExt;

/// A parent agent's storage holding `url` (1 MiB pieces), fetched from the origin.
async fn parent_holding(dir: &tempfile::TempDir, url: &str) -> (Arc<Storage>, String) {
    let parent = Arc::new(Storage::open(&dir.path().join("a"), GcPolicy::default()).unwrap());
    let engine = Engine::new(
        parent.clone(),
        HttpBackend::new(&OriginConfig::default()).unwrap(),
        DownloadConfig::default(),
    );
    let req = DownloadRequest {
        url: url.to_string(),
        piece_length: Some(MIB as u64),
        ..Default::default()
    };
    let stats = engine.download(&req, &Progress::default()).await.unwrap();
    (parent, stats.task_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_move_between_agents_and_corruption_is_caught() {
    let o = origin(OriginOptions::standard()).await;
    let data = o.put_random("blob", 5 * MIB + 3, 77);
    let dir = tempfile::tempdir().unwrap();
    let (parent, task_id) = parent_holding(&dir, &o.url("blob")).await;

    // Its upload server on loopback.
    let uploads = Arc::new(Uploads::new(ByteRate(1 << 30), 4));
    let svc = PeerService::new(parent.clone(), uploads.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::peer_server::PeerServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = pb::peer_client::PeerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // SyncPieces lists every piece and says the task is complete.
    let mut sync = client
        .sync_pieces(pb::SyncPiecesRequest {
            task_id: task_id.clone(),
            peer_id: "child".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(a) = sync.next().await {
        let a = a.unwrap();
        seen.extend(a.numbers);
        if a.complete {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, (0..6).collect::<Vec<u32>>());

    // The child copies every piece into its own content file.
    let child = Storage::open(&dir.path().join("b"), GcPolicy::default()).unwrap();
    let len = data.len() as u64;
    let file = Arc::new(child.content.open_for_write(&task_id, Some(len)).unwrap());
    for n in 0..6 {
        let r = piece_range(len, MIB as u64, n).unwrap();
        let p = fetch_piece(&mut client, "parent", &task_id, r, file.clone())
            .await
            .unwrap();
        assert_eq!(p.length, r.length);
    }
    let mut got = vec![0u8; data.len()];
    file.read_exact_at(&mut got, 0).unwrap();
    assert!(got == data[..], "child holds the same bytes");
    assert_eq!(uploads.uploaded(), len);

    // A parent whose stored bytes rotted: the child detects it.
    let stored = parent.content.open_for_write(&task_id, None).unwrap();
    stored
        .write_all_at(&[data[2 * MIB + 9] ^ 1], (2 * MIB + 9) as u64)
        .unwrap();
    let r = piece_range(len, MIB as u64, 2).unwrap();
    let e = fetch_piece(&mut client, "parent", &task_id, r, file.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::CorruptPiece { piece: 2, .. }), "{e}");

    // Leech mode refuses uploads.
    uploads.set_disable_shared(true);
    let r = piece_range(len, MIB as u64, 0).unwrap();
    let e = fetch_piece(&mut client, "parent", &task_id, r, file)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PeerRefused { .. }), "{e}");
    assert!(e.to_string().contains("leech"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_data_path_checks_and_refuses() {
    use darter_agent::peer::tcp;
    let o = origin(OriginOptions::standard()).await;
    let data = o.put_random("blob", 3 * MIB + 1, 78);
    let dir = tempfile::tempdir().unwrap();
    let (parent, task_id) = parent_holding(&dir, &o.url("blob")).await;
    let uploads = Arc::new(Uploads::new(ByteRate(1 << 30), 4));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tcp::serve(listener, parent.clone(), uploads.clone(), None));
    let unlimited = RateLimiter::new(ByteRate(1 << 30));
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let len = data.len() as u64;
    let child = Storage::open(&dir.path().join("b"), GcPolicy::default()).unwrap();
    let out = Arc::new(child.content.open_for_write(&task_id, Some(len)).unwrap());
    // Every piece over one reused connection, streamed into the child's file.
    let mut buf = Vec::new();
    for n in 0..4 {
        let r = piece_range(len, MIB as u64, n).unwrap();
        tcp::fetch_piece(
            &mut sock,
            tcp::Fetch {
                parent: "parent",
                task_id: &task_id,
                range: r,
                urgent: false,
            },
            out.clone(),
            &unlimited,
        )
        .await
        .unwrap();
        buf.resize(r.length as usize, 0);
        out.read_exact_at(&mut buf, r.offset).unwrap();
        assert!(buf[..] == data[r.offset as usize..(r.offset + r.length) as usize]);
    }
    // Rotten parent bytes are caught; unknown pieces and leech mode are refused.
    let stored = parent.content.open_for_write(&task_id, None).unwrap();
    stored.write_all_at(&[data[5] ^ 1], 5).unwrap();
    let r0 = piece_range(len, MIB as u64, 0).unwrap();
    let e = tcp::fetch_piece(
        &mut sock,
        tcp::Fetch {
            parent: "parent",
            task_id: &task_id,
            range: r0,
            urgent: false,
        },
        out.clone(),
        &unlimited,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::CorruptPiece { piece: 0, .. }), "{e}");
    let missing = "f".repeat(64);
    let e = tcp::fetch_piece(
        &mut sock,
        tcp::Fetch {
            parent: "parent",
            task_id: &missing,
            range: r0,
            urgent: false,
        },
        out.clone(),
        &unlimited,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not held"), "{e}");
    uploads.set_disable_shared(true);
    let e = tcp::fetch_piece(
        &mut sock,
        tcp::Fetch {
            parent: "parent",
            task_id: &task_id,
            range: r0,
            urgent: false,
        },
        out.clone(),
        &unlimited,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("leech"), "{e}");
}
