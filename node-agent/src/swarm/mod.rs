//! The agent's side of the swarm: its identity, its link to the scheduler
//! (one stream per download) and its pool of connections to other agents.

pub mod announce;

use crate::engine::DownloadRequest;
use crate::error::{Error, Result};
use crate::peer::pool::PeerPool;
use crate::storage::PieceMeta;
use darter_proto::common::v1 as common_pb;
use darter_proto::scheduler::v1 as pb;
use pb::download_response::Decision as PbDecision;
use pb::scheduler_client::SchedulerClient;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

/// A parent the scheduler offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentAddr {
    pub peer_id: String,
    pub host_id: String,
    /// Upload server (piece availability).
    pub grpc: SocketAddr,
    /// Data path (piece bytes).
    pub data: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Parents(Vec<ParentAddr>),
    BackToSource(String),
    Empty,
}

/// What a P2P download reacts to, in one queue.
pub enum Event {
    /// A scheduler decision after the first.
    Decision(Decision),
    /// The scheduler stream ended (scheduler restarted or unreachable).
    SchedulerGone(String),
    /// A new stream to the scheduler after it was gone, with its first decision.
    Relinked(Link, Decision),
    /// A parent holds these pieces (and, once known, the task's layout).
    Available {
        parent: String,
        numbers: Vec<u32>,
        content_length: Option<u64>,
        piece_length: u64,
        complete: bool,
    },
    /// A parent's availability stream ended.
    SyncEnded { parent: String, reason: String },
    /// A piece fetch from a parent ended.
    Piece {
        parent: String,
        number: u32,
        result: Result<PieceMeta>,
        cost: Duration,
    },
}

/// One download's stream to the scheduler: the agent's reports go out here.
pub struct Link {
    tx: mpsc::UnboundedSender<pb::DownloadRequest>,
    pub peer_id: String,
}

impl Link {
    fn send(&self, event: pb::download_request::Event) {
        // A closed stream is reported to the download as SchedulerGone.
        let _ = self.tx.send(pb::DownloadRequest { event: Some(event) });
    }

    pub fn piece_finished(&self, number: u32, parent: Option<&str>, cost: Duration) {
        self.send(pb::download_request::Event::PieceFinished(
            pb::PieceFinished {
                number,
                parent_peer_id: parent.map(str::to_string),
                cost_micros: cost.as_micros() as u64,
            },
        ));
    }

    pub fn piece_failed(&self, number: u32, parent: &str, reason: &str) {
        self.send(pb::download_request::Event::PieceFailed(pb::PieceFailed {
            number,
            parent_peer_id: parent.to_string(),
            reason: reason.to_string(),
        }));
    }

    pub fn reschedule(&self, blocked: Vec<String>, reason: &str) {
        self.send(pb::download_request::Event::Reschedule(pb::Reschedule {
            blocked_parent_ids: blocked,
            reason: reason.to_string(),
            more_parents: false,
        }));
    }

    /// Asks for parents in addition to the current ones (not a failure).
    pub fn more_parents(&self) {
        self.send(pb::download_request::Event::Reschedule(pb::Reschedule {
            blocked_parent_ids: Vec::new(),
            reason: "more parents wanted".into(),
            more_parents: true,
        }));
    }

    pub fn finished(&self, content_length: u64, piece_count: u32) {
        self.send(pb::download_request::Event::Finished(
            pb::DownloadFinished {
                content_length,
                piece_count,
            },
        ));
    }

    pub fn failed(&self, reason: &str) {
        self.send(pb::download_request::Event::Failed(pb::DownloadFailed {
            reason: reason.to_string(),
        }));
    }
}

/// What identifies this host to the scheduler.
#[derive(Debug, Clone)]
pub struct Identity {
    /// "{ip}-{hostname}".
    pub host_id: String,
    pub ip: IpAddr,
    pub hostname: String,
}

pub struct Swarm {
    pub identity: Identity,
    scheduler: SchedulerClient<Channel>,
    pub pool: Arc<PeerPool>,
    /// Bound on reaching the scheduler and hearing its first decision.
    pub open_timeout: Duration,
}

/// A scheduler answer as the engine uses it (parents with unusable
/// addresses are skipped).
fn decision(msg: pb::DownloadResponse) -> Option<Decision> {
    Some(match msg.decision? {
        PbDecision::Parents(p) => Decision::Parents(
            p.parents
                .into_iter()
                .filter_map(|p| {
                    let ip: IpAddr = p.ip.parse().ok()?;
                    Some(ParentAddr {
                        grpc: SocketAddr::new(ip, u16::try_from(p.upload_port).ok()?),
                        data: SocketAddr::new(ip, u16::try_from(p.data_port).ok()?),
                        peer_id: p.peer_id,
                        host_id: p.host_id,
                    })
                })
                .collect(),
        ),
        PbDecision::BackToSource(b) => Decision::BackToSource(b.reason),
        PbDecision::EmptyTask(_) => Decision::Empty,
    })
}

impl Swarm {
    pub fn new(
        identity: Identity,
        scheduler: Channel,
        pool: Arc<PeerPool>,
        open_timeout: Duration,
    ) -> Self {
        Self {
            identity,
            scheduler: SchedulerClient::new(scheduler),
            pool,
            open_timeout,
        }
    }

    pub fn scheduler(&self) -> SchedulerClient<Channel> {
        self.scheduler.clone()
    }

    /// A fresh peer id for one download: "{host_id}-{random}".
    pub fn new_peer_id(&self) -> String {
        format!("{}-{:016x}", self.identity.host_id, rand::random::<u64>())
    }

    /// Opens a download stream: registers (with the pieces already held) and
    /// waits for the first decision. Later decisions, and the stream's end,
    /// arrive on `events`.
    pub async fn open(
        &self,
        task_id: &str,
        req: &DownloadRequest,
        peer_id: &str,
        held: Vec<u32>,
        content_length: Option<u64>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<(Link, Decision)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let register = pb::Register {
            host_id: self.identity.host_id.clone(),
            peer_id: peer_id.to_string(),
            task_id: task_id.to_string(),
            // Origin request headers stay on the agent: they may hold credentials.
            task: Some(common_pb::TaskSpec {
                url: req.url.clone(),
                tag: req.tag.clone(),
                application: req.application.clone(),
                filtered_query_params: req.filtered_query_params.clone().unwrap_or_default(),
                piece_length: req.piece_length,
                request_headers: Default::default(),
                digest: req.digest.as_ref().map(ToString::to_string),
            }),
            content_length,
            piece_count: None,
            held_pieces: held,
        };
        let _ = tx.send(pb::DownloadRequest {
            event: Some(pb::download_request::Event::Register(register)),
        });
        let mut client = self.scheduler.clone();
        let unreachable = |detail: String| Error::Connect {
            host: "scheduler".into(),
            detail,
        };
        let first = async {
            let mut stream = client
                .download(UnboundedReceiverStream::new(rx))
                .await
                .map_err(|s| unreachable(s.message().to_string()))?
                .into_inner();
            loop {
                match stream.next().await {
                    Some(Ok(msg)) => {
                        if let Some(d) = decision(msg) {
                            return Ok((stream, d));
                        }
                    }
                    Some(Err(s)) => return Err(unreachable(s.message().to_string())),
                    None => return Err(unreachable("stream closed before a decision".into())),
                }
            }
        };
        let (mut stream, first) = tokio::time::timeout(self.open_timeout, first)
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "the scheduler gave no decision within {}",
                    humantime::format_duration(self.open_timeout)
                ))
            })??;
        tokio::spawn(async move {
            let reason = loop {
                match stream.next().await {
                    Some(Ok(msg)) => {
                        if let Some(d) = decision(msg)
                            && events.send(Event::Decision(d)).is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(s)) => break s.message().to_string(),
                    None => break "stream closed".to_string(),
                }
            };
            let _ = events.send(Event::SchedulerGone(reason));
        });
        Ok((
            Link {
                tx,
                peer_id: peer_id.to_string(),
            },
            first,
        ))
    }
}
