//! Helpers for driving the `darter` binary against a test origin.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub const MIB: usize = 1 << 20;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "darter failed: {}", self.stderr);
        self
    }
    /// The value of a `key:` line of `darter stat` output.
    pub fn field(&self, key: &str) -> String {
        let prefix = format!("{key}:");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {key:?} in {}", self.stdout))
            .trim()
            .to_string()
    }

    /// Asserts failure with a one-line error containing `needle`.
    pub fn fails_with(&self, needle: &str) {
        assert_ne!(self.code, 0, "darter should have failed: {}", self.stderr);
        let lines: Vec<&str> = self
            .stderr
            .lines()
            // Our errors, or clap's for a flag value it refused.
            .filter(|l| l.starts_with("darter: error:") || l.starts_with("error:"))
            .collect();
        assert_eq!(lines.len(), 1, "one error line expected: {}", self.stderr);
        assert!(
            lines[0].to_lowercase().contains(&needle.to_lowercase()),
            "error {:?} should mention {needle:?}",
            lines[0]
        );
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_darter")
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin());
        c.arg("--storage-dir").arg(self.storage()).args(args);
        c.env_remove("DARTER_CONFIG").env("DARTER_LOG", "warn");
        c.kill_on_drop(true);
        c
    }
    pub async fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().await.expect("spawn darter");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    pub async fn get(&self, url: &str, out: &str, extra: &[&str]) -> Run {
        let o = self.out(out);
        let o = o.to_str().expect("utf-8 path");
        let mut args = vec!["get", url, "-O", o];
        args.extend_from_slice(extra);
        self.run(&args).await
    }
    /// Files in the output directory other than storage: nothing half-written.
    pub fn stray_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "storage")
            .collect()
    }
}

/// A test origin on 127.0.0.1.
pub async fn origin(opts: darter_testkit::OriginOptions) -> darter_testkit::Origin {
    darter_testkit::Origin::start("127.0.0.1", opts)
        .await
        .expect("origin")
}

pub fn same_bytes(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).expect("read output");
    assert_eq!(got.len(), want.len(), "length of {}", path.display());
    assert!(got == want, "content of {} differs", path.display());
}
