//! `darter get` against Debian's nginx on loopback (a real origin with sendfile
//! and its own Range implementation). Skips only when nginx is absent and
//! DARTER_REQUIRE_NGINX is unset; CI sets it.

mod common;

use common::{Env, MIB, same_bytes};
use std::path::Path;
use std::process::Command;

struct Nginx {
    port: u16,
    pid_file: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn start_nginx(root: &Path, work: &Path) -> Option<Nginx> {
    let have = Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()?;
    if !have.status.success() {
        assert!(
            std::env::var_os("DARTER_REQUIRE_NGINX").is_none(),
            "nginx is required (DARTER_REQUIRE_NGINX set) but not installed"
        );
        eprintln!("nginx not installed; skipping");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib/nginx.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source {script}; start_nginx \"$1\" \"$2\"; echo $NGINX_PORT"
        ))
        .arg("bash")
        .arg(root)
        .arg(work)
        .output()
        .expect("run nginx helper");
    assert!(
        out.status.success(),
        "nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("port");
    Some(Nginx {
        port,
        pid_file: work.join("nginx.pid"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_from_nginx() {
    let env = Env::new();
    let root = env.dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let files = [
        (
            "big.bin",
            darter_testkit::origin::random_bytes(64 * MIB + 17, 31),
        ),
        (
            "edge.bin",
            darter_testkit::origin::random_bytes(4 * MIB + 1, 32),
        ),
        ("empty.bin", Vec::new()),
    ];
    for (name, data) in &files {
        std::fs::write(root.join(name), data).unwrap();
    }
    let work = env.dir.path().join("nginx");
    let Some(nginx) = start_nginx(&root, &work) else {
        return;
    };
    let out_dir = env.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (name, data) in &files {
        let url = format!("http://127.0.0.1:{}/{name}", nginx.port);
        let out = format!("out/{name}");
        env.get(&url, &out, &[]).await.ok();
        same_bytes(&env.out(&out), data);
    }
    // nginx's 404 reaches the user as such.
    let url = format!("http://127.0.0.1:{}/missing", nginx.port);
    env.get(&url, "out/missing", &[]).await.fails_with("404");
}
