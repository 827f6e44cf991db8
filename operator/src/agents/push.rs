//! Pushes each attached agent the settings of the PeerPolicy that governs it:
//! when an agent attaches, when the policies change, and every few seconds
//! (an agent's cluster can change on any announce). Only what differs from
//! what the agent last answered is sent: settings it refused are not retried
//! until the policy changes or the agent reconnects. The scheduler's host records follow
//! at once (leech mode and upload slots are enforced there too).

use super::{Agents, Answer, CommandError};
use crate::scheduler::Scheduler;
use crate::scheduler::policies::PolicyMatcher;
use darter_proto::agent::v1::ApplySettings;
use futures::StreamExt;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Agents answering at once; bounds the fan-out on a 1,000-node cluster.
const CONCURRENT_SENDS: usize = 64;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pusher reports on `/metrics` (Kubernetes mode).
#[derive(Clone, Default)]
pub struct PushMetrics {
    /// Agents with a command stream open.
    pub attached: prometheus_client::metrics::gauge::Gauge,
    /// Settings an agent confirmed.
    pub pushed: prometheus_client::metrics::counter::Counter,
    /// Settings an agent refused or did not confirm in time.
    pub failed: prometheus_client::metrics::counter::Counter,
}

pub struct PolicyPusher {
    agents: Arc<Agents>,
    core: Arc<Scheduler>,
    pub policies: Arc<RwLock<PolicyMatcher>>,
    /// Woken when the policies change.
    pub changed: Notify,
    /// Hosts each policy governs, as of the last round.
    matched: RwLock<BTreeMap<String, u32>>,
    /// Per policy, agents whose stream refused its current settings, and
    /// the first reason.
    refused: RwLock<BTreeMap<String, (usize, String)>>,
    /// One round at a time (the loop and a finalizer may both ask).
    round: tokio::sync::Mutex<()>,
    interval: Duration,
    metrics: PushMetrics,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    pub failed: usize,
}

impl PolicyPusher {
    pub fn new(
        agents: Arc<Agents>,
        core: Arc<Scheduler>,
        policies: Arc<RwLock<PolicyMatcher>>,
        interval: Duration,
    ) -> Self {
        Self {
            agents,
            core,
            policies,
            changed: Notify::new(),
            matched: RwLock::default(),
            refused: RwLock::default(),
            round: tokio::sync::Mutex::new(()),
            interval,
            metrics: PushMetrics::default(),
        }
    }

    pub fn with_metrics(mut self, metrics: PushMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Hosts each policy governs (policies governing none are absent).
    pub fn matched(&self) -> BTreeMap<String, u32> {
        self.matched.read().clone()
    }

    /// Per policy: how many agents refused its settings, and why the first did.
    pub fn refused(&self) -> BTreeMap<String, (usize, String)> {
        self.refused.read().clone()
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.agents.changed.notified() => {}
                () = self.changed.notified() => {}
                () = tokio::time::sleep(self.interval) => {}
            }
            self.push_round().await;
        }
    }

    /// Brings every attached agent to its policy's settings now.
    pub async fn push_round(&self) -> Round {
        let _one = self.round.lock().await;
        let mut matched: BTreeMap<String, u32> = BTreeMap::new();
        let mut due: Vec<(String, ApplySettings)> = Vec::new();
        // Per policy: agents that refused its settings, and the first reason.
        let mut refused: BTreeMap<String, (usize, String)> = BTreeMap::new();
        {
            let m = self.policies.read();
            for host in self.core.hosts() {
                let verdict = m.select(&host.info);
                let want = verdict
                    .as_ref()
                    .map(|v| v.settings.clone())
                    .unwrap_or_default();
                if let Some(v) = &verdict {
                    *matched.entry(v.policy.to_string()).or_default() += 1;
                }
                // The scheduler's record follows the policy before the agent
                // re-announces.
                let mut info = host.info.clone();
                m.enforce(&mut info);
                if info != host.info {
                    self.core.announce_host(info);
                }
                match self.agents.answer(&host.info.id, &want) {
                    Answer::Confirmed => {}
                    Answer::Refused(why) => {
                        refused.entry(want.policy.clone()).or_insert((0, why)).0 += 1;
                    }
                    Answer::Unanswered => due.push((host.info.id.clone(), want)),
                }
            }
        }
        *self.matched.write() = matched;
        let attached: std::collections::HashSet<String> =
            self.agents.attached().into_iter().collect();
        self.metrics.attached.set(attached.len() as i64);
        due.retain(|(h, _)| attached.contains(h));
        let results: Vec<(String, Result<(), CommandError>)> = futures::stream::iter(due)
            .map(|(host, s)| async move {
                let policy = s.policy.clone();
                let r = self.agents.apply(&host, s, SEND_TIMEOUT).await;
                match &r {
                    Ok(()) => tracing::info!(host = %host, policy = %policy, "settings pushed"),
                    Err(e) => {
                        tracing::warn!(host = %host, error = %e, "settings not applied; retrying")
                    }
                }
                (policy, r)
            })
            .buffer_unordered(CONCURRENT_SENDS)
            .collect()
            .await;
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        self.metrics.pushed.inc_by((results.len() - failed) as u64);
        self.metrics.failed.inc_by(failed as u64);
        // A refusal (not a timeout) is the policy's fault: its status says
        // so until the policy changes and its agents confirm.
        for (policy, r) in &results {
            if let Err(e @ CommandError::Refused { .. }) = r {
                refused
                    .entry(policy.clone())
                    .or_insert((0, e.to_string()))
                    .0 += 1;
            }
        }
        refused.remove("");
        *self.refused.write() = refused;
        Round {
            sent: results.len() - failed,
            failed,
        }
    }
}
