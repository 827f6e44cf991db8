//! An HTTP(S) origin for tests and benchmarks: serves named blobs with or without
//! Range support and Content-Length, redirects, error statuses, an optional
//! bandwidth cap shared by all connections, and injected faults (connections cut
//! after N bytes, responses that stall). It counts every body byte it sends.
//!
//! Routes: `/blob/NAME`, `/redirect/NAME` (302 to the blob), `/status/CODE`.

use bytes::Bytes;
use darter_common::{ByteRate, RateLimiter};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::tls::TestCert;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Clone, Default)]
pub struct OriginOptions {
    /// Serve byte ranges (206); otherwise Range headers are ignored (200).
    pub ranges: bool,
    /// Send Content-Length; otherwise bodies are chunked with no length.
    pub content_length: bool,
    /// Upload cap shared by all connections.
    pub rate: Option<ByteRate>,
    /// Serve HTTPS with this certificate.
    pub tls: Option<Arc<TestCert>>,
}

impl OriginOptions {
    /// An ordinary origin: ranges and lengths, plain HTTP.
    pub fn standard() -> Self {
        Self {
            ranges: true,
            content_length: true,
            ..Default::default()
        }
    }
}

/// Faults applied to the next requests that carry a body.
#[derive(Default)]
struct Faults {
    /// Cut the connection after this many body bytes, for this many responses.
    cut_after: Option<(u64, usize)>,
    /// Send headers and then nothing, for this many responses.
    stall: usize,
}

struct Shared {
    opts: OriginOptions,
    blobs: Mutex<HashMap<String, Bytes>>,
    faults: Mutex<Faults>,
    /// A header every blob request must carry, else 401.
    required_header: Mutex<Option<(String, String)>>,
    limiter: Option<RateLimiter>,
    bytes_sent: AtomicU64,
    requests: AtomicUsize,
    range_requests: AtomicUsize,
}

pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Starts on `ip` (any loopback address) with an ephemeral port.
    pub async fn start(ip: &str, opts: OriginOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let acceptor = match &opts.tls {
            Some(cert) => {
                let cfg = ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.cert_der.clone()], cert.key_der.clone_key())
                    .map_err(std::io::Error::other)?;
                Some(TlsAcceptor::from(Arc::new(cfg)))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            limiter: opts.rate.map(RateLimiter::new),
            opts,
            blobs: Mutex::default(),
            faults: Mutex::default(),
            required_header: Mutex::default(),
            bytes_sent: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
            range_requests: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(s.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        Some(a) => match a.accept(tcp).await {
                            Ok(tls) => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                .await
                        }
                    };
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://ADDR/blob/NAME`.
    pub fn url(&self, name: &str) -> String {
        self.url_of("blob", name)
    }

    pub fn url_of(&self, route: &str, name: &str) -> String {
        let scheme = if self.shared.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/{route}/{name}", self.addr)
    }

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    pub fn put_random(&self, name: &str, len: usize, seed: u64) -> Bytes {
        let data = Bytes::from(random_bytes(len, seed));
        self.put(name, data.clone());
        data
    }

    pub fn put(&self, name: &str, data: impl Into<Bytes>) {
        if let Ok(mut b) = self.shared.blobs.lock() {
            b.insert(name.to_string(), data.into());
        }
    }

    /// Cuts the next `times` body responses after `bytes` bytes.
    pub fn cut_after(&self, bytes: u64, times: usize) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.cut_after = Some((bytes, times));
        }
    }

    /// The next `times` body responses send headers and then stall.
    pub fn stall(&self, times: usize) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.stall = times;
        }
    }

    /// Blob requests without this header (and value) get 401.
    pub fn require_header(&self, name: &str, value: &str) {
        if let Ok(mut h) = self.shared.required_header.lock() {
            *h = Some((name.to_string(), value.to_string()));
        }
    }

    /// Body bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }

    pub fn range_requests(&self) -> usize {
        self.shared.range_requests.load(Ordering::Relaxed)
    }

    pub fn reset_counters(&self) {
        self.shared.bytes_sent.store(0, Ordering::Relaxed);
        self.shared.requests.store(0, Ordering::Relaxed);
        self.shared.range_requests.store(0, Ordering::Relaxed);
    }
}

fn simple(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from(status.to_string()))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

/// Parses a single `bytes=A-B` / `bytes=A-` range against `len`.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = a.trim().parse().ok()?;
    let last: u64 = if b.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (first <= last).then_some((first, last))
}

async fn handle(s: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (route, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match route {
        "status" => {
            let code = name.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            return Ok(simple(code.unwrap_or(StatusCode::BAD_REQUEST)));
        }
        "redirect" => {
            let mut r = simple(StatusCode::FOUND);
            if let Ok(v) = format!("/blob/{name}").parse() {
                r.headers_mut().insert(LOCATION, v);
            }
            return Ok(r);
        }
        "blob" => {}
        _ => return Ok(simple(StatusCode::NOT_FOUND)),
    }
    let required = s.required_header.lock().ok().and_then(|h| h.clone());
    if let Some((name, value)) = required
        && req
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            != Some(value.as_str())
    {
        return Ok(simple(StatusCode::UNAUTHORIZED));
    }
    let Some(blob) = s.blobs.lock().ok().and_then(|b| b.get(name).cloned()) else {
        return Ok(simple(StatusCode::NOT_FOUND));
    };
    let len = blob.len() as u64;
    let range_hdr = req.headers().get(RANGE).and_then(|v| v.to_str().ok());
    let (status, first, last) = match (s.opts.ranges, range_hdr) {
        (true, Some(v)) => {
            s.range_requests.fetch_add(1, Ordering::Relaxed);
            match parse_range(v, len) {
                Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
                None => {
                    let mut r = simple(StatusCode::RANGE_NOT_SATISFIABLE);
                    if let Ok(v) = format!("bytes */{len}").parse() {
                        r.headers_mut().insert(CONTENT_RANGE, v);
                    }
                    return Ok(r);
                }
            }
        }
        _ => (StatusCode::OK, 0, len),
    };
    let body = blob.slice(first as usize..last as usize);
    let (cut, stall) = match s.faults.lock() {
        Ok(mut f) => {
            let cut = match f.cut_after {
                Some((bytes, n)) if n > 0 => {
                    f.cut_after = if n > 1 { Some((bytes, n - 1)) } else { None };
                    Some(bytes)
                }
                _ => None,
            };
            let stall = f.stall > 0;
            if stall {
                f.stall -= 1;
            }
            (cut, stall)
        }
        Err(_) => (None, false),
    };
    let mut resp = Response::new(stream_body(s.clone(), body.clone(), cut, stall));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if s.opts.ranges {
        h.insert(
            "accept-ranges",
            hyper::header::HeaderValue::from_static("bytes"),
        );
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = format!("bytes {first}-{}/{len}", last - 1).parse()
    {
        h.insert(CONTENT_RANGE, v);
    }
    if s.opts.content_length
        && let Ok(v) = body.len().to_string().parse()
    {
        h.insert(CONTENT_LENGTH, v);
    }
    Ok(resp)
}

/// The body in 64 KiB frames, paced by the origin's cap; a cut ends it with an
/// error (hyper then drops the connection), a stall never ends.
fn stream_body(s: Arc<Shared>, body: Bytes, cut: Option<u64>, stall: bool) -> Body {
    const FRAME: usize = 64 * 1024;
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(FRAME)
        .map(|i| body.slice(i..(i + FRAME).min(body.len())))
        .collect();
    let stream = futures::stream::iter(chunks)
        .scan(0u64, move |sent, chunk| {
            let s = s.clone();
            let already = *sent;
            *sent += chunk.len() as u64;
            async move {
                if stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let chunk = match cut {
                    Some(limit) if already >= limit => {
                        return Some(Err(std::io::Error::other("injected cut")));
                    }
                    Some(limit) if already + chunk.len() as u64 > limit => {
                        chunk.slice(..(limit - already) as usize)
                    }
                    _ => chunk,
                };
                if let Some(l) = &s.limiter {
                    l.acquire(chunk.len()).await;
                }
                s.bytes_sent
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Some(Ok(Frame::data(chunk)))
            }
        })
        .boxed();
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(parse_range("bytes=0-0", 10), Some((0, 0)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(
            parse_range("bytes=4-100", 10),
            Some((4, 9)),
            "clamped to the end"
        );
        assert_eq!(
            parse_range("bytes=0-0", 0),
            None,
            "nothing to serve in an empty blob"
        );
        assert_eq!(parse_range("bytes=5-4", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
    }

    #[test]
    fn random_bytes_are_deterministic() {
        assert_eq!(random_bytes(1000, 7), random_bytes(1000, 7));
        assert_ne!(random_bytes(1000, 7), random_bytes(1000, 8));
        assert_eq!(random_bytes(13, 1).len(), 13);
    }
}
