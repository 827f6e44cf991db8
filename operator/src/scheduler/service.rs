//! The scheduler's gRPC face (`darter.scheduler.v1.Scheduler`) over the core.
//! The same service runs standalone (no API server) and inside the operator.

use super::clusters::ClusterMatcher;
use super::policies::PolicyMatcher;
use super::resource::{HostInfo, HostKind};
use super::{Decision, Scheduler, SchedulerError};
use darter_proto::scheduler::v1 as pb;
use pb::download_request::Event;
use pb::download_response::Decision as PbDecision;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

pub struct SchedulerService {
    core: Arc<Scheduler>,
    /// Told to agents: re-announce this often.
    pub announce_interval: Duration,
    /// Pause between scheduling rounds while a peer waits for a parent.
    pub retry_interval: Duration,
    /// Cluster of hosts no scope places (and of all hosts when there are no
    /// Cluster definitions).
    pub cluster: String,
    /// Cluster scopes; replaced when the Cluster definitions change, hosts
    /// move on their next announce.
    pub clusters: Arc<parking_lot::RwLock<ClusterMatcher>>,
    /// PeerPolicies: the scheduler enforces leech mode and upload slots of
    /// the winning one whatever the agent announces.
    pub policies: Arc<parking_lot::RwLock<PolicyMatcher>>,
    /// Node labels by node name (Kubernetes mode), for seed peer selectors.
    pub node_labels: NodeLabels,
}

/// Labels of each Kubernetes Node, by name (= the agent's hostname).
pub type NodeLabels = Arc<
    parking_lot::RwLock<
        std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    >,
>;

impl SchedulerService {
    pub fn new(core: Arc<Scheduler>) -> Self {
        Self {
            core,
            announce_interval: Duration::from_secs(30),
            retry_interval: Duration::from_millis(500),
            cluster: "default".into(),
            clusters: Arc::default(),
            policies: Arc::default(),
            node_labels: Arc::default(),
        }
    }
}

fn status(e: SchedulerError) -> Status {
    match e {
        SchedulerError::UnknownHost(_) => Status::failed_precondition(e.to_string()),
        SchedulerError::UnknownTask(_) | SchedulerError::UnknownPeer { .. } => {
            Status::not_found(e.to_string())
        }
    }
}

fn host_info(h: pb::Host) -> Result<HostInfo, Status> {
    let ip = h.ip.parse().map_err(|_| {
        Status::invalid_argument(format!("host ip {:?} is not an IP address", h.ip))
    })?;
    if h.id.is_empty() {
        return Err(Status::invalid_argument("host id is empty"));
    }
    let kind = match pb::HostType::try_from(h.r#type) {
        Ok(pb::HostType::Seed) => HostKind::Seed,
        _ => HostKind::Normal,
    };
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(HostInfo {
        id: h.id,
        ip,
        hostname: h.hostname,
        upload_port: u16::try_from(h.upload_port)
            .map_err(|_| Status::invalid_argument("upload_port out of range"))?,
        data_port: u16::try_from(h.data_port)
            .map_err(|_| Status::invalid_argument("data_port out of range"))?,
        kind,
        idc: opt(h.idc),
        location: opt(h.location),
        upload_slots: h.upload_slots,
        disable_shared: h.disable_shared,
        cluster: String::new(),
        policy: None,
        parent_limits: None,
        node_labels: Default::default(),
    })
}

fn to_pb(d: &Decision) -> Option<pb::DownloadResponse> {
    let decision = match d {
        Decision::Parents(cs) => PbDecision::Parents(pb::Parents {
            parents: cs
                .iter()
                .map(|c| pb::Parent {
                    peer_id: c.peer_id.clone(),
                    host_id: c.host_id.clone(),
                    ip: c.ip.to_string(),
                    upload_port: u32::from(c.upload_port),
                    data_port: u32::from(c.data_port),
                })
                .collect(),
        }),
        Decision::BackToSource(reason) => PbDecision::BackToSource(pb::BackToSource {
            reason: reason.clone(),
        }),
        Decision::Empty => PbDecision::EmptyTask(pb::EmptyTask {}),
        Decision::Wait => return None,
    };
    Some(pb::DownloadResponse {
        decision: Some(decision),
    })
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadResponse, Status>> + Send>>;

/// Drives one download stream.
struct Session {
    core: Arc<Scheduler>,
    tx: mpsc::Sender<Result<pb::DownloadResponse, Status>>,
    retry_interval: Duration,
    task_id: String,
    peer_id: String,
}

impl Session {
    /// Sends a decision; a `Wait` is retried until it resolves or the peer goes.
    async fn decide(&self, mut d: Result<Decision, SchedulerError>) -> bool {
        loop {
            match d {
                Err(e) => {
                    let _ = self.tx.send(Err(status(e))).await;
                    return false;
                }
                Ok(Decision::Wait) => {
                    tokio::time::sleep(self.retry_interval).await;
                    if self.tx.is_closed() {
                        return false;
                    }
                    d = self.core.reschedule(&self.task_id, &self.peer_id, &[]);
                }
                Ok(ref decision) => {
                    return match to_pb(decision) {
                        Some(msg) => self.tx.send(Ok(msg)).await.is_ok(),
                        None => true,
                    };
                }
            }
        }
    }

    async fn run(self, mut events: Streaming<pb::DownloadRequest>) {
        let mut done = false;
        while let Some(msg) = events.next().await {
            let Ok(msg) = msg else { break };
            let r = match msg.event {
                Some(Event::PieceFinished(p)) => self.core.piece_finished(
                    &self.task_id,
                    &self.peer_id,
                    p.number,
                    p.parent_peer_id.as_deref(),
                    Duration::from_micros(p.cost_micros),
                ),
                Some(Event::PieceFailed(p)) => {
                    let r = self
                        .core
                        .piece_failed(&self.task_id, &self.peer_id, &p.parent_peer_id);
                    if r.is_ok() {
                        let d = self.core.reschedule(&self.task_id, &self.peer_id, &[]);
                        if !self.decide(d).await {
                            break;
                        }
                    }
                    r
                }
                Some(Event::Reschedule(r)) if r.more_parents => {
                    match self.core.more_parents(&self.task_id, &self.peer_id) {
                        Ok(fresh) if fresh.is_empty() => Ok(()),
                        Ok(fresh) => {
                            if !self.decide(Ok(Decision::Parents(fresh))).await {
                                break;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Some(Event::Reschedule(r)) => {
                    let d =
                        self.core
                            .reschedule(&self.task_id, &self.peer_id, &r.blocked_parent_ids);
                    if !self.decide(d).await {
                        break;
                    }
                    Ok(())
                }
                Some(Event::Finished(f)) => {
                    done = true;
                    self.core.peer_succeeded(
                        &self.task_id,
                        &self.peer_id,
                        f.content_length,
                        f.piece_count,
                    )
                }
                Some(Event::Failed(f)) => {
                    done = true;
                    tracing::info!(task = %self.task_id, peer = %self.peer_id, reason = %f.reason, "download failed");
                    self.core.peer_failed(&self.task_id, &self.peer_id)
                }
                Some(Event::Register(_)) | None => Err(SchedulerError::UnknownPeer {
                    task: self.task_id.clone(),
                    peer: "register may only be the first message".into(),
                }),
            };
            if let Err(e) = r {
                let _ = self.tx.send(Err(status(e))).await;
                break;
            }
        }
        if !done {
            // The stream broke mid-download: what the peer holds stays usable
            // only if it comes back, so it stops being offered as a parent now.
            let _ = self.core.peer_left(&self.task_id, &self.peer_id);
        }
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    async fn announce_host(
        &self,
        req: Request<pb::AnnounceHostRequest>,
    ) -> Result<Response<pb::AnnounceHostResponse>, Status> {
        let host = req
            .into_inner()
            .host
            .ok_or_else(|| Status::invalid_argument("host is missing"))?;
        let stats = super::resource::HostStats {
            disk_total_bytes: host.disk_total_bytes,
            disk_used_bytes: host.disk_used_bytes,
            upload_bytes: host.upload_bytes_total,
            download_bytes: host.download_bytes_total,
            task_count: host.task_count,
        };
        let mut info = host_info(host)?;
        if let Some(l) = self.node_labels.read().get(&info.hostname) {
            info.node_labels = l.clone();
        }
        if !self.clusters.read().assign(&mut info, &self.cluster) {
            return Err(Status::failed_precondition(format!(
                "host {} ({}) matches no cluster and there is no default cluster",
                info.hostname, info.ip
            )));
        }
        self.policies.read().enforce(&mut info);
        let cluster = info.cluster.clone();
        let id = info.id.clone();
        self.core.announce_host(info);
        self.core.set_host_stats(&id, stats);
        Ok(Response::new(pb::AnnounceHostResponse {
            cluster,
            announce_interval_seconds: self.announce_interval.as_secs() as u32,
        }))
    }

    async fn leave_host(
        &self,
        req: Request<pb::LeaveHostRequest>,
    ) -> Result<Response<pb::LeaveHostResponse>, Status> {
        self.core.leave_host(&req.into_inner().host_id);
        Ok(Response::new(pb::LeaveHostResponse {}))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        req: Request<Streaming<pb::DownloadRequest>>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let mut events = req.into_inner();
        let first = events
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty stream"))??;
        let Some(Event::Register(reg)) = first.event else {
            return Err(Status::invalid_argument(
                "the first message must be register",
            ));
        };
        if reg.task_id.is_empty() || reg.peer_id.is_empty() {
            return Err(Status::invalid_argument(
                "register needs task_id and peer_id",
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        let session = Session {
            core: self.core.clone(),
            tx,
            retry_interval: self.retry_interval,
            task_id: reg.task_id.clone(),
            peer_id: reg.peer_id.clone(),
        };
        let decision = self.core.register_peer(
            &reg.task_id,
            &reg.peer_id,
            &reg.host_id,
            reg.content_length,
            reg.piece_count,
        );
        if let Err(e) = &decision {
            return Err(status(e.clone()));
        }
        for n in &reg.held_pieces {
            let _ = self
                .core
                .piece_finished(&reg.task_id, &reg.peer_id, *n, None, Duration::ZERO);
        }
        tokio::spawn(async move {
            if session.decide(decision).await {
                session.run(events).await;
            } else {
                let _ = session.core.peer_left(&session.task_id, &session.peer_id);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stat_task(
        &self,
        req: Request<pb::StatTaskRequest>,
    ) -> Result<Response<pb::StatTaskResponse>, Status> {
        let task_id = req.into_inner().task_id;
        let (content_length, holders) = self.core.task_holders(&task_id).map_err(status)?;
        Ok(Response::new(pb::StatTaskResponse {
            task_id,
            content_length,
            holders: holders
                .into_iter()
                .map(|(peer_id, host_id, finished, n)| pb::TaskHolder {
                    peer_id,
                    host_id,
                    finished,
                    finished_pieces: n,
                })
                .collect(),
        }))
    }
}

/// Serves `svc` and the agents' command streams on `listener` with `server`
/// (TLS or not), printing `listening on ADDR` for scripts and collecting
/// garbage every `gc_interval`, until `shutdown` resolves. Both the
/// standalone and the Kubernetes mode run the scheduler through this.
pub async fn serve(
    server: tonic::transport::Server,
    listener: tokio::net::TcpListener,
    svc: SchedulerService,
    agents: Arc<crate::agents::Agents>,
    gc_interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let core = svc.core.clone();
    let gc = tokio::spawn(async move {
        let mut tick = tokio::time::interval(gc_interval);
        loop {
            tick.tick().await;
            core.gc();
        }
    });
    if let Ok(addr) = listener.local_addr() {
        println!("listening on {addr}");
        tracing::info!(%addr, "scheduler serving");
    }
    let control = crate::agents::ControlService::new(agents.clone());
    // Command streams never end by themselves: close them so a graceful
    // shutdown does not wait for them.
    let shutdown = async move {
        shutdown.await;
        agents.close_all();
    };
    let mut server = server;
    let served = server
        .add_service(pb::scheduler_server::SchedulerServer::new(svc))
        .add_service(darter_proto::agent::v1::control_server::ControlServer::new(
            control,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    gc.abort();
    served
}
