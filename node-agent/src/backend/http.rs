//! The HTTP(S) origin client: one connection pool per agent, rustls with optional
//! extra CAs, redirects followed, and error classification a user can act on.

use crate::config::OriginConfig;
use crate::error::{Error, Result};
use darter_common::PieceRange;
use reqwest::header::{CONTENT_RANGE, HeaderMap, RANGE};
use reqwest::{Response, StatusCode};
use std::error::Error as _;

#[derive(Clone)]
pub struct HttpBackend {
    client: reqwest::Client,
}

/// What the origin said about an object.
pub struct Probe {
    /// Total length, when the origin tells it.
    pub content_length: Option<u64>,
    /// Whether byte ranges are served (so pieces can be fetched in parallel).
    pub supports_range: bool,
    /// When the origin ignored the probe's Range and sent the whole object, the
    /// response, so the body is not requested twice.
    pub full_body: Option<Response>,
}

impl HttpBackend {
    pub fn new(cfg: &OriginConfig) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(cfg.max_redirects))
            .tcp_nodelay(true)
            .user_agent(concat!("darter/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| Error::io(format!("cannot read CA bundle {}", path.display()), e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!(
                    "CA bundle {} is not valid PEM: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "CA bundle {} holds no certificate",
                    path.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { client })
    }

    /// Asks for the first byte: a 206 tells the length and that ranges work; a 200
    /// means no range support (its body is kept for a single-stream download).
    pub async fn probe(&self, url: &str, headers: &HeaderMap) -> Result<Probe> {
        let resp = self.send(url, headers, Some("bytes=0-0")).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let total = content_range(&resp).and_then(|(_, _, total)| total);
                Ok(Probe {
                    content_length: total,
                    // "bytes 0-0/*": ranges work but the length is unknown, and a
                    // parallel plan needs the length.
                    supports_range: total.is_some(),
                    full_body: None,
                })
            }
            StatusCode::OK => Ok(Probe {
                content_length: resp.content_length(),
                supports_range: false,
                full_body: Some(resp),
            }),
            StatusCode::RANGE_NOT_SATISFIABLE => {
                // The one object with no byte 0 is the empty one; confirm with a plain GET.
                let resp = self.get(url, headers).await?;
                Ok(Probe {
                    content_length: resp.content_length(),
                    supports_range: false,
                    full_body: Some(resp),
                })
            }
            status => Err(Error::OriginStatus {
                url: url.to_string(),
                status: status.as_u16(),
            }),
        }
    }

    /// The whole object; fails unless the origin answers 200.
    pub async fn get(&self, url: &str, headers: &HeaderMap) -> Result<Response> {
        let resp = self.send(url, headers, None).await?;
        if resp.status() != StatusCode::OK {
            return Err(Error::OriginStatus {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        Ok(resp)
    }

    /// One piece; fails unless the origin answers 206 with exactly that range.
    pub async fn get_range(
        &self,
        url: &str,
        headers: &HeaderMap,
        range: PieceRange,
    ) -> Result<Response> {
        let spec = format!("bytes={}-{}", range.offset, range.last_byte());
        let resp = self.send(url, headers, Some(&spec)).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(if resp.status().is_success() {
                Error::OriginProtocol {
                    url: url.to_string(),
                    detail: format!("asked for {spec}, got {} instead of 206", resp.status()),
                }
            } else {
                Error::OriginStatus {
                    url: url.to_string(),
                    status: resp.status().as_u16(),
                }
            });
        }
        match content_range(&resp) {
            Some((first, last, _)) if first == range.offset && last == range.last_byte() => {
                Ok(resp)
            }
            other => Err(Error::OriginProtocol {
                url: url.to_string(),
                detail: format!("asked for {spec}, got Content-Range {other:?}"),
            }),
        }
    }

    async fn send(&self, url: &str, headers: &HeaderMap, range: Option<&str>) -> Result<Response> {
        let mut req = self.client.get(url).headers(headers.clone());
        if let Some(r) = range {
            req = req.header(RANGE, r);
        }
        req.send().await.map_err(|e| classify(url, &e))
    }
}

/// Parses `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
fn content_range(resp: &Response) -> Option<(u64, u64, Option<u64>)> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
        })
        .unwrap_or_else(|| url.to_string())
}

/// Maps a transport error to the cause a user can act on.
pub fn classify(url: &str, e: &reqwest::Error) -> Error {
    let host = host_of(url);
    let mut chain = Vec::new();
    let mut refused = false;
    let mut src: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        chain.push(s.to_string());
        src = s.source();
    }
    let text = chain.join(": ").to_lowercase();
    let detail = chain.last().cloned().unwrap_or_else(|| e.to_string());
    if e.is_timeout() {
        Error::Timeout(format!("no answer from {host}"))
    } else if e.is_redirect() {
        Error::OriginProtocol {
            url: url.to_string(),
            detail: "too many redirects".into(),
        }
    } else if refused {
        Error::ConnectionRefused { host }
    } else if text.contains("dns error") || text.contains("failed to lookup address") {
        Error::Dns {
            host: host
                .rsplit_once(':')
                .map_or(host.clone(), |(h, _)| h.to_string()),
        }
    } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
        Error::Tls { host, detail }
    } else if e.is_connect() {
        Error::Connect { host, detail }
    } else {
        Error::Transfer {
            url: url.to_string(),
            detail,
        }
    }
}
