//! `darter get` against a real HTTP origin on loopback: ranges, no-Range and
//! no-length origins, redirects, boundaries, faults and resume.

mod common;

use common::{Env, MIB, origin, same_bytes};
use darter_testkit::OriginOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ranges_then_cache_hit() {
    let o = origin(OriginOptions::standard()).await;
    let data = o.put_random("a", 13 * MIB + 12345, 1);
    let env = Env::new();
    let r = env
        .get(&o.url("a"), "a.bin", &["--piece-length", "1MiB"])
        .await;
    r.ok();
    same_bytes(&env.out("a.bin"), &data);
    assert!(r.stderr.contains("14 pieces"), "{}", r.stderr);
    assert_eq!(
        o.bytes_sent(),
        data.len() as u64 + 1,
        "one copy plus the 1-byte probe"
    );
    assert_eq!(o.range_requests(), 15, "probe plus one range per piece");

    // Second download: served from storage, the origin is not asked at all.
    o.reset_counters();
    let r = env
        .get(&o.url("a"), "again.bin", &["--piece-length", "1MiB"])
        .await;
    r.ok();
    assert!(r.stderr.contains("cache hit"), "{}", r.stderr);
    assert_eq!(o.requests(), 0);
    same_bytes(&env.out("again.bin"), &data);

    let ls = env.run(&["ls"]).await;
    ls.ok();
    assert!(
        ls.stdout.contains("Succeeded") && ls.stdout.contains("14/14"),
        "{}",
        ls.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_without_range_support_is_read_once() {
    let o = origin(OriginOptions {
        ranges: false,
        content_length: true,
        ..Default::default()
    })
    .await;
    let data = o.put_random("a", 9 * MIB + 7, 2);
    let env = Env::new();
    env.get(&o.url("a"), "a.bin", &["--piece-length", "1MiB"])
        .await
        .ok();
    same_bytes(&env.out("a.bin"), &data);
    assert_eq!(o.requests(), 1, "the probe's response is the download");
    assert_eq!(o.bytes_sent(), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_without_content_length() {
    for ranges in [false, true] {
        let o = origin(OriginOptions {
            ranges,
            content_length: false,
            ..Default::default()
        })
        .await;
        let data = o.put_random("a", 5 * MIB + 3, 3);
        let env = Env::new();
        env.get(&o.url("a"), "a.bin", &[]).await.ok();
        same_bytes(&env.out("a.bin"), &data);
        let stat = env.run(&["stat", &o.url("a")]).await;
        stat.ok();
        assert!(
            stat.stdout.contains(&format!("({} bytes)", data.len())),
            "{}",
            stat.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed() {
    let o = origin(OriginOptions::standard()).await;
    let data = o.put_random("r", 3 * MIB, 4);
    let env = Env::new();
    env.get(
        &o.url_of("redirect", "r"),
        "r.bin",
        &["--piece-length", "1MiB"],
    )
    .await
    .ok();
    same_bytes(&env.out("r.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_and_piece_boundaries() {
    for ranges in [true, false] {
        let o = origin(OriginOptions {
            ranges,
            content_length: true,
            ..Default::default()
        })
        .await;
        let env = Env::new();
        for (i, len) in [
            0,
            1,
            MIB - 1,
            MIB,
            MIB + 1,
            2 * MIB - 1,
            2 * MIB,
            2 * MIB + 1,
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("f{len}");
            let data = o.put_random(&name, len, 10 + i as u64);
            let out = format!("{name}.bin");
            let r = env
                .get(&o.url(&name), &out, &["--piece-length", "1MiB"])
                .await;
            r.ok();
            same_bytes(&env.out(&out), &data);
            let pieces = len.div_ceil(MIB);
            assert!(
                r.stderr.contains(&format!("{pieces} pieces")),
                "len {len}: {}",
                r.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_piece_is_retried() {
    for ranges in [true, false] {
        let o = origin(OriginOptions {
            ranges,
            content_length: true,
            ..Default::default()
        })
        .await;
        let data = o.put_random("a", 6 * MIB, 5);
        // The probe is the first body response when ranges are on; cut the next
        // two after 300 KiB, i.e. in the middle of a piece.
        o.cut_after(300 * 1024, if ranges { 3 } else { 2 });
        let env = Env::new();
        env.get(&o.url("a"), "a.bin", &["--piece-length", "1MiB"])
            .await
            .ok();
        same_bytes(&env.out("a.bin"), &data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_passed_to_the_origin() {
    let o = origin(OriginOptions::standard()).await;
    o.require_header("authorization", "Bearer s3cret");
    let data = o.put_random("a", MIB, 6);
    let env = Env::new();
    env.get(&o.url("a"), "a.bin", &[]).await.fails_with("401");
    env.get(
        &o.url("a"),
        "a.bin",
        &["-H", "Authorization: Bearer s3cret"],
    )
    .await
    .ok();
    same_bytes(&env.out("a.bin"), &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sigkill_fetches_only_missing_pieces() {
    let o = origin(OriginOptions {
        rate: Some(darter_common::ByteRate(8 * MIB as u64)),
        ..OriginOptions::standard()
    })
    .await;
    let len = 24 * MIB;
    let data = o.put_random("big", len, 7);
    let env = Env::new();
    let out = env.out("big.bin");
    let mut child = env
        .command(&[
            "get",
            &o.url("big"),
            "-O",
            out.to_str().unwrap(),
            "--piece-length",
            "1MiB",
            // Two in flight, so whole pieces are stored by the time a third of
            // the bytes has arrived (with 16 in flight every piece can still
            // be half done at that point).
            "--concurrent-pieces",
            "2",
        ])
        .spawn()
        .unwrap();
    // Kill once about a third has arrived.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while o.bytes_sent() < 8 * MIB as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "origin never reached 8 MiB"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    child.wait().await.unwrap();
    assert!(!out.exists(), "no output after a kill");

    let stat = env
        .run(&["stat", &o.url("big"), "--piece-length", "1MiB"])
        .await;
    stat.ok();
    let line = stat.field("pieces");
    let stored: usize = line
        .split_whitespace()
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(stored > 0 && stored < 24, "{line}");

    o.reset_counters();
    let r = env
        .get(&o.url("big"), "big.bin", &["--piece-length", "1MiB"])
        .await;
    r.ok();
    same_bytes(&out, &data);
    assert_eq!(
        o.bytes_sent(),
        ((24 - stored) * MIB + 1) as u64,
        "only the missing pieces (plus the probe byte) come from the origin"
    );
    assert!(
        r.stderr.contains(&format!("{stored} reused")),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_stored_piece_is_fetched_again() {
    use std::os::unix::fs::FileExt;
    let o = origin(OriginOptions::standard()).await;
    let data = o.put_random("a", 4 * MIB, 8);
    let env = Env::new();
    env.get(&o.url("a"), "a.bin", &["--piece-length", "1MiB"])
        .await
        .ok();
    let stat = env
        .run(&["stat", &o.url("a"), "--piece-length", "1MiB"])
        .await;
    let content = stat.field("content");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&content)
        .unwrap();
    f.write_all_at(&[data[MIB + 5] ^ 0xff], (MIB + 5) as u64)
        .unwrap();
    drop(f);

    o.reset_counters();
    let r = env
        .get(&o.url("a"), "fixed.bin", &["--piece-length", "1MiB"])
        .await;
    r.ok();
    same_bytes(&env.out("fixed.bin"), &data);
    assert_eq!(
        o.bytes_sent(),
        MIB as u64 + 1,
        "exactly the bad piece (and the probe)"
    );
    assert!(r.stderr.contains("3 reused"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_is_checked() {
    use sha2::Digest as _;
    let o = origin(OriginOptions::standard()).await;
    let data = o.put_random("a", 3 * MIB + 1, 9);
    let env = Env::new();
    let good = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
    env.get(&o.url("a"), "a.bin", &["--digest", &good])
        .await
        .ok();
    same_bytes(&env.out("a.bin"), &data);
    let crc = format!("crc32c:{}", crc32c::crc32c(&data));
    env.get(&o.url("a"), "c.bin", &["--digest", &crc])
        .await
        .ok();

    let bad = format!("sha256:{}", "0".repeat(64));
    let env = Env::new();
    env.get(&o.url("a"), "a.bin", &["--digest", &bad])
        .await
        .fails_with("digest mismatch");
    assert!(env.stray_files().is_empty(), "{:?}", env.stray_files());
    let ls = env.run(&["ls"]).await;
    assert!(
        !ls.stdout.contains("Succeeded"),
        "bad content is not kept: {}",
        ls.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_and_stat_by_url_and_id() {
    let o = origin(OriginOptions::standard()).await;
    o.put_random("a", MIB, 10);
    let env = Env::new();
    env.get(&o.url("a"), "a.bin", &["--tag", "v1"]).await.ok();
    env.run(&["stat", &o.url("a")])
        .await
        .fails_with("not in local storage");
    let stat = env.run(&["stat", &o.url("a"), "--tag", "v1"]).await;
    stat.ok();
    let id = stat.field("task");
    env.run(&["stat", &id]).await.ok();
    env.run(&["rm", &id]).await.ok();
    env.run(&["stat", &id])
        .await
        .fails_with("not in local storage");
    assert!(env.out("a.bin").exists(), "rm leaves exported files alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_evicts_least_recently_used_to_make_room() {
    let o = origin(OriginOptions::standard()).await;
    let env = Env::new();
    for name in ["a", "b", "c"] {
        o.put_random(name, 4 * MIB, 11);
        env.get(
            &o.url(name),
            &format!("{name}.bin"),
            &["--storage-capacity", "10MiB"],
        )
        .await
        .ok();
    }
    let ls = env.run(&["ls"]).await.stdout;
    assert!(ls.contains(&o.url("c")), "{ls}");
    assert!(
        !ls.contains(&o.url("a")),
        "a should have been evicted: {ls}"
    );
    // A download that cannot fit at all fails clearly, leaving nothing behind.
    o.put_random("huge", 12 * MIB, 12);
    env.get(&o.url("huge"), "huge.bin", &["--storage-capacity", "10MiB"])
        .await
        .fails_with("no space");
    assert!(!env.out("huge.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_gets_on_one_storage_take_turns() {
    let o = origin(OriginOptions {
        rate: Some(darter_common::ByteRate(16 * MIB as u64)),
        ..OriginOptions::standard()
    })
    .await;
    let a = o.put_random("a", 8 * MIB, 50);
    let b = o.put_random("b", 2 * MIB, 51);
    let env = Env::new();
    let (url_a, url_b) = (o.url("a"), o.url("b"));
    let (ra, rb) = tokio::join!(env.get(&url_a, "a.bin", &[]), env.get(&url_b, "b.bin", &[]));
    ra.ok();
    rb.ok();
    same_bytes(&env.out("a.bin"), &a);
    same_bytes(&env.out("b.bin"), &b);
    assert!(
        format!("{}{}", ra.stderr, rb.stderr).contains("waiting for another darter process"),
        "one of them waited: {} / {}",
        ra.stderr,
        rb.stderr
    );
    // A bounded wait gives up with a clear message while the lock is held.
    o.reset_counters();
    let mut holder = env
        .command(&[
            "get",
            &o.url("a"),
            "-O",
            env.out("c.bin").to_str().unwrap(),
            "--tag",
            "slow",
        ])
        .spawn()
        .unwrap();
    // Storage is opened before the origin is asked, so bytes flowing means held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while o.bytes_sent() == 0 {
        assert!(std::time::Instant::now() < deadline, "holder never started");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    env.get(&o.url("b"), "d.bin", &["--timeout", "200ms"])
        .await
        .fails_with("in use by another darter process");
    holder.wait().await.unwrap();
}
