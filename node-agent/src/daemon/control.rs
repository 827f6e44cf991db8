//! The operator's command stream, agent side: the daemon opens one long-lived
//! `Control.Attach` stream to the scheduler address (so it needs no inbound
//! port and no Kubernetes credentials), says who it is, and answers each
//! command by id: apply PeerPolicy settings, list / stat / delete tasks,
//! download a task. A broken stream is reopened every second; settings
//! applied last stay in force while the operator is away.

use super::Daemon;
use crate::engine::DownloadRequest;
use crate::error::{Error, Result};
use crate::storage::{TaskMeta, TaskState, check_watermarks};
use darter_common::ByteRate;
use darter_proto::agent::v1 as pb;
use darter_proto::agent::v1::control_client::ControlClient;
use darter_proto::common::v1 as common_pb;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// The settings in force on this agent: its config, overlaid with the last
/// `ApplySettings` from the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub download_rate_limit: ByteRate,
    pub upload_rate_limit: ByteRate,
    pub disable_shared: bool,
    pub upload_slots: u32,
    pub gc_high_watermark_percent: u8,
    pub gc_low_watermark_percent: u8,
    /// The PeerPolicy the overlay came from; none means the config alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Settings {
    /// `base` with `s` laid over it; refused (nothing applied) when the
    /// result is not valid.
    pub fn overlay(base: &Settings, s: &pb::ApplySettings) -> Result<Settings> {
        let pct = |v: Option<u32>, dflt: u8, what: &str| -> Result<u8> {
            v.map_or(Ok(dflt), |p| {
                u8::try_from(p)
                    .map_err(|_| Error::Config(format!("{what} {p} is not a percentage")))
            })
        };
        let out = Settings {
            download_rate_limit: s
                .download_rate_limit
                .map_or(base.download_rate_limit, ByteRate),
            upload_rate_limit: s.upload_rate_limit.map_or(base.upload_rate_limit, ByteRate),
            disable_shared: s.disable_shared.unwrap_or(base.disable_shared),
            upload_slots: s.upload_slots.unwrap_or(base.upload_slots),
            gc_high_watermark_percent: pct(
                s.gc_high_watermark_percent,
                base.gc_high_watermark_percent,
                "gc high watermark",
            )?,
            gc_low_watermark_percent: pct(
                s.gc_low_watermark_percent,
                base.gc_low_watermark_percent,
                "gc low watermark",
            )?,
            policy: Some(s.policy.clone()).filter(|p| !p.is_empty()),
        };
        check_watermarks(out.gc_high_watermark_percent, out.gc_low_watermark_percent)
            .map_err(Error::Config)?;
        if out.download_rate_limit.0 == 0 || out.upload_rate_limit.0 == 0 {
            return Err(Error::Config("rate limits must be above zero".into()));
        }
        if out.upload_slots == 0 {
            return Err(Error::Config("upload slots must be above zero".into()));
        }
        Ok(out)
    }
}

fn task_info(t: &TaskMeta, pieces: Vec<u32>) -> common_pb::TaskInfo {
    common_pb::TaskInfo {
        id: t.id.clone(),
        spec: Some(common_pb::TaskSpec {
            url: t.url.clone(),
            tag: t.tag.clone(),
            application: t.application.clone(),
            piece_length: Some(t.piece_length),
            ..Default::default()
        }),
        state: match t.state {
            TaskState::Running => common_pb::TaskState::Running,
            TaskState::Succeeded => common_pb::TaskState::Succeeded,
            TaskState::Failed => common_pb::TaskState::Failed,
        } as i32,
        content_length: t.content_length,
        piece_length: t.piece_length,
        pieces,
    }
}

/// A task the operator asks for, as the local API's request (one parser for
/// headers and digests).
fn download_request(spec: common_pb::TaskSpec) -> Result<DownloadRequest> {
    super::api::GetRequest {
        url: spec.url,
        headers: spec.request_headers.into_iter().collect(),
        tag: spec.tag,
        application: spec.application,
        filtered_query_params: Some(spec.filtered_query_params).filter(|f| !f.is_empty()),
        piece_length: spec.piece_length,
        digest: spec.digest,
        ..Default::default()
    }
    .into_download()
}

impl Daemon {
    /// A stored task with the numbers of the pieces held.
    fn task_info(&self, t: &TaskMeta) -> Result<common_pb::TaskInfo> {
        let pieces = self.storage.metadata.pieces(&t.id)?;
        Ok(task_info(t, pieces.iter().map(|p| p.number).collect()))
    }

    /// The settings in force, read from the parts that enforce them (rate
    /// limiters, upload gate, announcer, storage), so there is no copy to
    /// keep in step.
    pub fn settings(&self) -> Settings {
        let gc = self.storage.gc_policy();
        Settings {
            download_rate_limit: self.engine.download_rate(),
            upload_rate_limit: self.uploads.limiter().rate(),
            disable_shared: !self.uploads.shared(),
            upload_slots: self
                .announcer
                .as_ref()
                .map_or(self.base_settings.upload_slots, |a| a.upload_slots()),
            gc_high_watermark_percent: gc.high_watermark_percent,
            gc_low_watermark_percent: gc.low_watermark_percent,
            policy: self.policy.lock().clone(),
        }
    }

    /// Runs one command; the error becomes the result's message.
    async fn execute(&self, cmd: pb::command::Command) -> Result<Vec<common_pb::TaskInfo>> {
        use pb::command::Command as C;
        match cmd {
            C::ApplySettings(s) => {
                self.apply_settings(&s).await?;
                Ok(Vec::new())
            }
            C::ListTasks(_) => self
                .storage
                .metadata
                .tasks()?
                .iter()
                .map(|t| self.task_info(t))
                .collect(),
            C::StatTask(s) => {
                let t = self
                    .storage
                    .metadata
                    .task(&s.task_id)?
                    .ok_or_else(|| Error::Config(format!("task {} is not held", s.task_id)))?;
                Ok(vec![self.task_info(&t)?])
            }
            C::DeleteTask(d) => {
                if self.running.lock().contains_key(&d.task_id) {
                    return Err(Error::Config(format!(
                        "task {} is downloading here; not deleted",
                        d.task_id
                    )));
                }
                self.storage.remove_task(&d.task_id)?;
                Ok(Vec::new())
            }
            C::DownloadTask(d) => {
                let spec = d
                    .task
                    .ok_or_else(|| Error::Config("download_task without a task".into()))?;
                let req = download_request(spec)?;
                let stats = self.download(&req, &Default::default()).await?;
                match self.storage.metadata.task(&stats.task_id)? {
                    Some(t) => Ok(vec![self.task_info(&t)?]),
                    None => Ok(Vec::new()),
                }
            }
        }
    }

    /// Puts `s` (over this agent's config) into force without a restart.
    pub async fn apply_settings(&self, s: &pb::ApplySettings) -> Result<()> {
        let next = Settings::overlay(&self.base_settings, s)?;
        let before = self.settings();
        if next == before {
            return Ok(());
        }
        self.storage.set_watermarks(
            next.gc_high_watermark_percent,
            next.gc_low_watermark_percent,
        )?;
        self.engine.set_download_rate(next.download_rate_limit);
        self.uploads.set_rate(next.upload_rate_limit);
        self.uploads.set_disable_shared(next.disable_shared);
        if let Some(a) = &self.announcer {
            a.set_upload_slots(next.upload_slots);
        }
        *self.policy.lock() = next.policy.clone();
        tracing::info!(
            policy = next.policy.as_deref().unwrap_or("-"),
            upload = %next.upload_rate_limit,
            download = %next.download_rate_limit,
            leech = next.disable_shared,
            slots = next.upload_slots,
            "settings applied"
        );
        // The scheduler learns leech mode and slots from announces: tell it now.
        if let Some(a) = &self.announcer
            && (next.disable_shared != before.disable_shared
                || next.upload_slots != before.upload_slots)
            && let Err(e) = a.announce_once().await
        {
            tracing::warn!(error = %e.message(), "announce after settings change failed");
        }
        Ok(())
    }

    /// Keeps the command stream open while the daemon runs.
    pub(super) async fn control_loop(self: Arc<Self>, client: ControlClient<Channel>) {
        let mut warned = false;
        loop {
            match self.clone().attach(client.clone()).await {
                Ok(()) => tracing::info!("operator closed the command stream; reopening"),
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "command stream unavailable; retrying every second");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn attach(self: Arc<Self>, mut client: ControlClient<Channel>) -> Result<()> {
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
        let hello = pb::Hello {
            host_id: self.identity.host_id.clone(),
            hostname: self.identity.hostname.clone(),
            ip: self.identity.ip.to_string(),
            node_labels: Default::default(),
        };
        let _ = tx
            .send(pb::AgentMessage {
                message: Some(pb::agent_message::Message::Hello(hello)),
            })
            .await;
        let unreachable = |detail: String| Error::Connect {
            host: "operator".into(),
            detail,
        };
        let mut commands = client
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| unreachable(s.message().to_string()))?
            .into_inner();
        tracing::info!("command stream open");
        while let Some(cmd) = commands.next().await {
            let cmd = cmd.map_err(|s| unreachable(s.message().to_string()))?;
            let (me, tx) = (self.clone(), tx.clone());
            // Commands run side by side: a download must not hold up a policy.
            tokio::spawn(async move {
                let result = match cmd.command {
                    None => Err(Error::Config("empty command".into())),
                    Some(c) => me.execute(c).await,
                };
                let (ok, error, tasks) = match result {
                    Ok(tasks) => (true, String::new(), tasks),
                    Err(e) => (false, e.to_string(), Vec::new()),
                };
                let reply = pb::CommandResult {
                    id: cmd.id,
                    ok,
                    error,
                    tasks,
                };
                let _ = tx
                    .send(pb::AgentMessage {
                        message: Some(pb::agent_message::Message::Result(reply)),
                    })
                    .await;
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings {
            download_rate_limit: ByteRate(100),
            upload_rate_limit: ByteRate(200),
            disable_shared: false,
            upload_slots: 10,
            gc_high_watermark_percent: 80,
            gc_low_watermark_percent: 60,
            policy: None,
        }
    }

    #[test]
    fn unset_fields_keep_the_config_and_a_new_overlay_replaces_the_old() {
        let leech = pb::ApplySettings {
            disable_shared: Some(true),
            upload_rate_limit: Some(5),
            policy: "leeches".into(),
            ..Default::default()
        };
        let s = Settings::overlay(&base(), &leech).unwrap();
        assert!(s.disable_shared);
        assert_eq!(s.upload_rate_limit, ByteRate(5));
        assert_eq!(s.download_rate_limit, ByteRate(100));
        assert_eq!(s.policy.as_deref(), Some("leeches"));
        // No policy any more: back to the config.
        let none = Settings::overlay(&base(), &pb::ApplySettings::default()).unwrap();
        assert_eq!(none, base());
    }

    #[test]
    fn invalid_settings_are_refused_whole() {
        let bad = pb::ApplySettings {
            gc_high_watermark_percent: Some(50),
            gc_low_watermark_percent: Some(70),
            ..Default::default()
        };
        let e = Settings::overlay(&base(), &bad).unwrap_err().to_string();
        assert!(e.contains("low < high"), "{e}");
        let zero = pb::ApplySettings {
            upload_slots: Some(0),
            ..Default::default()
        };
        assert!(Settings::overlay(&base(), &zero).is_err());
        let big = pb::ApplySettings {
            gc_high_watermark_percent: Some(300),
            ..Default::default()
        };
        assert!(Settings::overlay(&base(), &big).is_err());
    }
}
