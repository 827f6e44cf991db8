//! The daemon's local API for `darter get`: JSON lines over a unix socket
//! (mode 0600). A hand-rolled framing on purpose: one request and a few
//! progress lines per connection need no RPC stack, and the socket's file mode
//! is the access control.

use crate::engine::{DownloadRequest, DownloadStats};
use crate::error::{Error, Result};
use darter_common::Digest;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    Get(GetRequest),
    Status,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRequest {
    pub url: String,
    /// Absolute path the daemon writes the result to.
    pub output: Option<PathBuf>,
    pub headers: Vec<(String, String)>,
    pub tag: Option<String>,
    pub application: Option<String>,
    pub filtered_query_params: Option<Vec<String>>,
    pub piece_length: Option<u64>,
    pub digest: Option<String>,
    pub timeout_ms: Option<u64>,
}

impl GetRequest {
    pub fn from_download(req: &DownloadRequest) -> Self {
        Self {
            url: req.url.clone(),
            output: req.output.clone(),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            tag: req.tag.clone(),
            application: req.application.clone(),
            filtered_query_params: req.filtered_query_params.clone(),
            piece_length: req.piece_length,
            digest: req.digest.as_ref().map(ToString::to_string),
            timeout_ms: req.timeout.map(|t| t.as_millis() as u64),
        }
    }

    pub fn into_download(self) -> Result<DownloadRequest> {
        let bad = |reason: String| Error::Config(reason);
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let name: HeaderName = k.parse().map_err(|_| bad(format!("header name {k:?}")))?;
            let value = HeaderValue::from_str(v).map_err(|_| bad(format!("header {k} value")))?;
            headers.append(name, value);
        }
        let digest = self
            .digest
            .map(|d| d.parse::<Digest>())
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        if let Some(out) = &self.output
            && !out.is_absolute()
        {
            return Err(bad(format!("output {} must be absolute", out.display())));
        }
        Ok(DownloadRequest {
            url: self.url,
            output: self.output,
            headers,
            tag: self.tag,
            application: self.application,
            filtered_query_params: self.filtered_query_params,
            piece_length: self.piece_length,
            digest,
            timeout: self.timeout_ms.map(Duration::from_millis),
        })
    }
}

/// What the daemon reports about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub host_id: String,
    /// Cluster of the last successful announce; none while not announced.
    pub cluster: Option<String>,
    pub announces: u64,
    pub scheduler_error: Option<String>,
    pub uploaded_bytes: u64,
    /// Piece requests refused in leech mode.
    #[serde(default)]
    pub refused_requests: u64,
    pub downloaded_bytes: u64,
    pub tasks: usize,
    pub upload_addr: String,
    pub data_addr: String,
    /// Settings in force (config overlaid with the operator's PeerPolicy).
    #[serde(default)]
    pub settings: Option<super::control::Settings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    Progress { done: u64, total: Option<u64> },
    Done(DownloadStats),
    Status(Status),
    Error(String),
}

pub async fn write_line(
    sock: &mut (impl AsyncWriteExt + Unpin),
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    sock.write_all(&line).await
}

/// A connection to a running daemon.
pub struct Client {
    sock: BufReader<UnixStream>,
}

impl Client {
    /// `None` when no daemon listens at `path` (the caller works directly).
    pub async fn connect(path: &Path) -> Option<Self> {
        UnixStream::connect(path).await.ok().map(|s| Self {
            sock: BufReader::new(s),
        })
    }

    async fn send(&mut self, req: &Request) -> Result<()> {
        let mut line = serde_json::to_vec(req).map_err(|e| Error::Config(e.to_string()))?;
        line.push(b'\n');
        self.sock
            .get_mut()
            .write_all(&line)
            .await
            .map_err(|e| Error::io("cannot talk to the darter daemon", e))
    }

    async fn next(&mut self) -> Result<Reply> {
        let mut line = String::new();
        let n = self
            .sock
            .read_line(&mut line)
            .await
            .map_err(|e| Error::io("cannot read from the darter daemon", e))?;
        if n == 0 {
            return Err(Error::io(
                "the darter daemon closed the connection",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| Error::Metadata(format!("bad reply from the daemon: {e}")))
    }

    /// Runs a download in the daemon; `progress` sees (done, total) updates.
    pub async fn get(
        mut self,
        req: GetRequest,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<DownloadStats, String> {
        self.send(&Request::Get(req))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match self.next().await.map_err(|e| e.to_string())? {
                Reply::Progress { done, total } => progress(done, total),
                Reply::Done(stats) => return Ok(stats),
                Reply::Error(e) => return Err(e),
                Reply::Status(_) => return Err("unexpected status reply".into()),
            }
        }
    }

    pub async fn status(mut self) -> Result<Status> {
        self.send(&Request::Status).await?;
        match self.next().await? {
            Reply::Status(s) => Ok(s),
            Reply::Error(e) => Err(Error::Config(e)),
            other => Err(Error::Metadata(format!("unexpected reply {other:?}"))),
        }
    }
}
