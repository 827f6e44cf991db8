//! The command stream, operator side (`darter.agent.v1.Control`): every agent
//! keeps one `Attach` stream open to the scheduler address and the operator
//! sends it commands (apply these settings, list / stat / delete / download a
//! task), each answered by id. Agents dial out, so they need no inbound port
//! for this and hold no Kubernetes credentials.

pub mod push;

use darter_proto::agent::v1 as pb;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Error)]
pub enum CommandError {
    #[error("agent {0} has no command stream open")]
    NotAttached(String),
    #[error("agent {host} did not answer within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("agent {host} dropped the command stream")]
    Gone { host: String },
    #[error("agent {host} refused: {message}")]
    Refused { host: String, message: String },
}

/// What an agent made of some settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Confirmed,
    /// Refused, with the reason.
    Refused(String),
    /// Not sent yet on this stream (or no answer in time).
    Unanswered,
}

struct Attached {
    /// Distinguishes a reconnect from the stream it replaced.
    conn: u64,
    tx: mpsc::Sender<Result<pb::Command, Status>>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<pb::CommandResult>>>>,
    /// Settings this connection confirmed; a reconnect starts with none, so
    /// a restarted agent is told again.
    applied: Option<pb::ApplySettings>,
    /// Settings this connection refused: not sent again until they change
    /// (or the agent reconnects), so a bad policy is not retried forever.
    refused: Option<(pb::ApplySettings, String)>,
}

/// The agents with a command stream open, by host id.
#[derive(Default)]
pub struct Agents {
    attached: Mutex<HashMap<String, Attached>>,
    next_id: AtomicU64,
    /// Woken when an agent attaches (the pusher sends it its settings).
    pub changed: Notify,
}

impl Agents {
    pub fn attached(&self) -> Vec<String> {
        self.attached.lock().keys().cloned().collect()
    }

    /// Sends one command to `host_id` and waits up to `timeout` for its result.
    pub async fn send(
        &self,
        host_id: &str,
        command: pb::command::Command,
        timeout: Duration,
    ) -> Result<pb::CommandResult, CommandError> {
        let id = format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (done_tx, done_rx) = oneshot::channel();
        let (tx, pending) = {
            let attached = self.attached.lock();
            let a = attached
                .get(host_id)
                .ok_or_else(|| CommandError::NotAttached(host_id.to_string()))?;
            a.pending.lock().insert(id.clone(), done_tx);
            (a.tx.clone(), a.pending.clone())
        };
        let gone = || CommandError::Gone {
            host: host_id.to_string(),
        };
        let cmd = pb::Command {
            id: id.clone(),
            command: Some(command),
        };
        if tx.send(Ok(cmd)).await.is_err() {
            pending.lock().remove(&id);
            return Err(gone());
        }
        let result = match tokio::time::timeout(timeout, done_rx).await {
            Err(_) => Err(CommandError::Timeout {
                host: host_id.to_string(),
                after: timeout,
            }),
            Ok(Err(_)) => Err(gone()),
            Ok(Ok(r)) if r.ok => Ok(r),
            Ok(Ok(r)) => Err(CommandError::Refused {
                host: host_id.to_string(),
                message: r.error,
            }),
        };
        pending.lock().remove(&id);
        result
    }

    /// How `host_id`'s current stream answered `want`.
    pub fn answer(&self, host_id: &str, want: &pb::ApplySettings) -> Answer {
        match self.attached.lock().get(host_id) {
            Some(a) if a.applied.as_ref() == Some(want) => Answer::Confirmed,
            Some(a) => match &a.refused {
                Some((s, why)) if s == want => Answer::Refused(why.clone()),
                _ => Answer::Unanswered,
            },
            None => Answer::Unanswered,
        }
    }

    /// Sends `settings` to `host_id` and remembers its answer (confirmed or
    /// refused).
    pub async fn apply(
        &self,
        host_id: &str,
        settings: pb::ApplySettings,
        timeout: Duration,
    ) -> Result<(), CommandError> {
        let conn = self.attached.lock().get(host_id).map(|a| a.conn);
        let cmd = pb::command::Command::ApplySettings(settings.clone());
        let result = self.send(host_id, cmd, timeout).await;
        if let Some(a) = self.attached.lock().get_mut(host_id)
            && Some(a.conn) == conn
        {
            match &result {
                Ok(_) => a.applied = Some(settings),
                Err(e @ CommandError::Refused { .. }) => {
                    a.refused = Some((settings, e.to_string()))
                }
                Err(_) => {}
            }
        }
        result.map(drop)
    }

    /// Ends every stream (shutdown): agents reconnect to whoever serves next.
    pub fn close_all(&self) {
        self.attached.lock().clear();
    }
}

/// `darter.agent.v1.Control` over [`Agents`].
pub struct ControlService {
    agents: Arc<Agents>,
    conns: AtomicU64,
}

impl ControlService {
    pub fn new(agents: Arc<Agents>) -> Self {
        Self {
            agents,
            conns: AtomicU64::new(0),
        }
    }
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::Command, Status>> + Send>>;

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    type AttachStream = CommandStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut incoming = req.into_inner();
        let first = incoming
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty stream"))??;
        let Some(pb::agent_message::Message::Hello(hello)) = first.message else {
            return Err(Status::invalid_argument("the first message must be hello"));
        };
        if hello.host_id.is_empty() {
            return Err(Status::invalid_argument("hello needs a host_id"));
        }
        let host = hello.host_id;
        let conn = self.conns.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        let pending = Arc::new(Mutex::new(HashMap::new()));
        // A reconnecting agent replaces its old stream (and fails what was
        // waiting on it).
        self.agents.attached.lock().insert(
            host.clone(),
            Attached {
                conn,
                tx,
                pending: pending.clone(),
                applied: None,
                refused: None,
            },
        );
        tracing::info!(host = %host, "agent attached its command stream");
        self.agents.changed.notify_one();
        let agents = self.agents.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = incoming.next().await {
                if let Some(pb::agent_message::Message::Result(r)) = msg.message
                    && let Some(done) = pending.lock().remove(&r.id)
                {
                    let _ = done.send(r);
                }
            }
            let mut attached = agents.attached.lock();
            if attached.get(&host).is_some_and(|a| a.conn == conn) {
                attached.remove(&host);
                tracing::info!(host = %host, "agent command stream closed");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
