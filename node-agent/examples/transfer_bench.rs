//! Piece data path benchmark (not a test): one 64 MiB piece from a parent's
//! storage to a child on loopback, gRPC streaming vs plain TCP + sendfile.
//! Prints both and the ratio. Run: cargo run --release -p darter-agent --example transfer_bench

use darter_agent::peer::{client, server::PeerService, tcp, upload::Uploads};
use darter_agent::storage::{GcPolicy, PieceMeta, PieceSource, Storage, TaskMeta, TaskState};
use darter_common::{ByteRate, RateLimiter, piece_range};
use darter_proto::peer::v1 as pb;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

const PIECE: u64 = 64 << 20;
const ROUNDS: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let storage = Arc::new(Storage::open(&dir.join("parent"), GcPolicy::default())?);
    let id = "b".repeat(64);
    let data: Vec<u8> = (0..PIECE).map(|i| ((i * 2654435761) >> 13) as u8).collect();
    let f = storage.content.open_for_write(&id, Some(PIECE))?;
    f.write_all_at(&data, 0)?;
    storage.metadata.put_task(&TaskMeta {
        id: id.clone(),
        url: "bench://piece".into(),
        tag: None,
        application: None,
        piece_length: PIECE,
        content_length: Some(PIECE),
        state: TaskState::Succeeded,
        created_at: 0,
        accessed_at: 0,
        finished_at: Some(0),
    })?;
    storage.metadata.put_piece(
        &id,
        &PieceMeta {
            number: 0,
            offset: 0,
            length: PIECE,
            crc32c: crc32c::crc32c(&data),
            source: PieceSource::Origin,
            finished_at: 0,
        },
    )?;
    let limiter = Arc::new(RateLimiter::new(ByteRate(1 << 40)));
    let range = piece_range(PIECE, PIECE, 0).ok_or_else(|| anyhow::anyhow!("range"))?;

    // gRPC
    let grpc_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc_l.local_addr()?;
    let uploads = Arc::new(Uploads::new(ByteRate(1 << 40), 8));
    let svc = PeerService::new(storage.clone(), uploads.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::peer_server::PeerServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_l)),
    );
    let mut grpc = pb::peer_client::PeerClient::connect(format!("http://{grpc_addr}")).await?;
    let child = Storage::open(&dir.join("child"), GcPolicy::default())?;
    let out = Arc::new(child.content.open_for_write(&id, Some(PIECE))?);
    client::fetch_piece(&mut grpc, "p", &id, range, out.clone()).await?; // warm up
    let t = Instant::now();
    for _ in 0..ROUNDS {
        client::fetch_piece(&mut grpc, "p", &id, range, out.clone()).await?;
    }
    let grpc_s = t.elapsed().as_secs_f64() / ROUNDS as f64;

    // Plain TCP + sendfile
    let tcp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_addr = tcp_l.local_addr()?;
    tokio::spawn(tcp::serve(tcp_l, storage.clone(), uploads, None));
    let mut sock = tokio::net::TcpStream::connect(tcp_addr).await?;
    sock.set_nodelay(true)?;
    tcp::fetch_piece(
        &mut sock,
        tcp::Fetch {
            parent: "p",
            task_id: &id,
            range,
            urgent: false,
        },
        out.clone(),
        &limiter,
    )
    .await?; // warm up
    let t = Instant::now();
    for _ in 0..ROUNDS {
        tcp::fetch_piece(
            &mut sock,
            tcp::Fetch {
                parent: "p",
                task_id: &id,
                range,
                urgent: false,
            },
            out.clone(),
            &limiter,
        )
        .await?;
    }
    let tcp_s = t.elapsed().as_secs_f64() / ROUNDS as f64;

    let mib = (PIECE >> 20) as f64;
    println!(
        "64 MiB piece on loopback, mean of {ROUNDS} (CRC-32C checked, written to the child's content file)"
    );
    println!(
        "grpc-stream   {:7.1} ms  {:7.0} MiB/s",
        grpc_s * 1e3,
        mib / grpc_s
    );
    println!(
        "tcp-sendfile  {:7.1} ms  {:7.0} MiB/s",
        tcp_s * 1e3,
        mib / tcp_s
    );
    println!(
        "transfer-bench: tcp_over_grpc_throughput={:.2}",
        grpc_s / tcp_s
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("darter-transfer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
