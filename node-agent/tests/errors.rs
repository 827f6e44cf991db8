//! Errors a user can act on: each one line naming the cause, non-zero exit, and
//! no output file (or temp file) left behind.

mod common;

use common::{Env, MIB, origin, same_bytes};
use darter_testkit::OriginOptions;
use darter_testkit::tls::TestCert;
use std::sync::Arc;

async fn fails_cleanly(env: &Env, url: &str, extra: &[&str], needle: &str) {
    env.get(url, "out.bin", extra).await.fails_with(needle);
    assert!(
        env.stray_files().is_empty(),
        "left behind: {:?}",
        env.stray_files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_statuses() {
    let o = origin(OriginOptions::standard()).await;
    let env = Env::new();
    fails_cleanly(&env, &o.url("missing"), &[], "404").await;
    fails_cleanly(&env, &o.url_of("status", "403"), &[], "403").await;
    // 5xx is retried, then reported.
    fails_cleanly(&env, &o.url_of("status", "503"), &[], "503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_origins() {
    let env = Env::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    fails_cleanly(
        &env,
        &format!("http://127.0.0.1:{port}/x"),
        &[],
        "connection refused",
    )
    .await;
    fails_cleanly(&env, "http://no-such-host.invalid/x", &[], "DNS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls() {
    let env = Env::new();
    fails_cleanly(&env, "not a url", &[], "bad URL").await;
    fails_cleanly(&env, "ftp://127.0.0.1/x", &[], "scheme").await;
    fails_cleanly(&env, "http://127.0.0.1/x", &["--digest", "md5:00"], "md5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_output_is_refused_before_downloading() {
    let o = origin(OriginOptions::standard()).await;
    o.put_random("a", MIB, 23);
    let env = Env::new();
    env.get(&o.url("a"), "no/such/dir/a.bin", &[])
        .await
        .fails_with("does not exist");
    assert_eq!(o.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_untrusted_then_trusted_with_ca_bundle() {
    let cert = Arc::new(TestCert::localhost().unwrap());
    let o = origin(OriginOptions {
        tls: Some(cert.clone()),
        ..OriginOptions::standard()
    })
    .await;
    let data = o.put_random("a", 2 * MIB + 1, 20);
    let env = Env::new();
    fails_cleanly(&env, &o.url("a"), &[], "TLS").await;
    let ca = env.dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.cert_pem).unwrap();
    env.get(&o.url("a"), "a.bin", &["--ca-bundle", ca.to_str().unwrap()])
        .await
        .ok();
    same_bytes(&env.out("a.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_origin_times_out() {
    let o = origin(OriginOptions::standard()).await;
    o.put_random("a", MIB, 21);
    o.stall(100);
    let env = Env::new();
    fails_cleanly(&env, &o.url("a"), &["--timeout", "2s"], "timed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_space() {
    let o = origin(OriginOptions::standard()).await;
    o.put_random("a", 4 * MIB, 22);
    let env = Env::new();
    fails_cleanly(
        &env,
        &o.url("a"),
        &["--storage-capacity", "1MiB"],
        "no space",
    )
    .await;
}

/// A real full filesystem: storage on an 8 MiB tmpfs (needs root to mount;
/// skipped elsewhere). GC makes room first; what cannot fit fails clearly.
/// The outputs live on another filesystem, so they are copies, not links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_filesystem_triggers_gc_then_no_space() {
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let env = Env::new();
    let storage = env.storage();
    std::fs::create_dir_all(&storage).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&storage)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount tmpfs (not root?); skipping");
        return;
    }
    let _guard = Mount(storage.clone());
    let o = origin(OriginOptions::standard()).await;
    let a = o.put_random("a", 3 * MIB, 40);
    let b = o.put_random("b", 4 * MIB, 41);
    env.get(&o.url("a"), "a.bin", &[]).await.ok();
    env.get(&o.url("b"), "b.bin", &[]).await.ok();
    same_bytes(&env.out("a.bin"), &a);
    same_bytes(&env.out("b.bin"), &b);
    let ls = env.run(&["ls"]).await.stdout;
    assert!(
        !ls.contains(&o.url("a")),
        "a was evicted to make room: {ls}"
    );
    for f in ["a.bin", "b.bin"] {
        std::fs::remove_file(env.out(f)).unwrap();
    }
    o.put_random("huge", 12 * MIB, 42);
    fails_cleanly(&env, &o.url("huge"), &[], "no space").await;
}
