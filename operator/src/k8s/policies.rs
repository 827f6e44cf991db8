//! The PeerPolicy controller. It keeps the scheduler's policy matcher equal
//! to the PeerPolicy objects (the pusher sends the settings to the agents),
//! writes each policy's status by server-side apply (matched peers,
//! `observedGeneration`, a `Ready` condition), records Events, and holds a
//! finalizer so that a deleted policy's agents are back on their own config
//! before the object goes away.

use super::events::Events;
use super::reconcile::{self, Controller, Objects, Ready, StatusBook};
use crate::agents::push::PolicyPusher;
use crate::scheduler::policies::PolicyMatcher;
use darter_crds::{PeerPolicy, PeerPolicySpec};
use kube::runtime::events::EventType;
use kube::{Api, Client};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub const FINALIZER: &str = "darter.dev/revert-agent-settings";

/// What was last written to one policy's status.
#[derive(Clone, PartialEq)]
struct Shown {
    generation: i64,
    matched: u32,
    error: Option<String>,
    /// Agents that refused the settings, and why the first did.
    refused: Option<(usize, String)>,
}

pub struct PolicyController {
    api: Api<PeerPolicy>,
    pusher: Arc<PolicyPusher>,
    events: Events,
    /// Live (not deleting) policies.
    specs: BTreeMap<String, (i64, PeerPolicySpec)>,
    /// Why a policy is not in force (it failed to compile).
    invalid: HashMap<String, String>,
    status: StatusBook<Shown>,
}

impl PolicyController {
    pub fn new(client: Client, pusher: Arc<PolicyPusher>, events: Events) -> Self {
        Self {
            api: Api::all(client),
            pusher,
            events,
            specs: BTreeMap::new(),
            invalid: HashMap::new(),
            status: StatusBook::default(),
        }
    }

    /// Watches PeerPolicies until the process ends; status every 2 s.
    pub async fn run(self) {
        let api = self.api.clone();
        reconcile::run(api, "PeerPolicy", self, Duration::from_secs(2)).await
    }

    /// Drops the finalizer of a deleted policy whose agents were reverted.
    async fn release(&mut self, p: &PeerPolicy, failed: usize) {
        let note = match failed {
            0 => "settings of the agents it governed are back to their config".to_string(),
            n => {
                format!("{n} agent(s) did not confirm; they get their settings when they reconnect")
            }
        };
        reconcile::release(
            &self.api,
            &self.events,
            p,
            FINALIZER,
            &mut self.status,
            "Reverted",
            &note,
        )
        .await;
    }
}

impl Controller<PeerPolicy> for PolicyController {
    /// Brings the matcher, the finalizers and the agents in line with the
    /// objects.
    async fn reconcile(&mut self, objects: &Objects<PeerPolicy>) {
        let (specs, deleting) =
            reconcile::live_and_deleting(objects, FINALIZER, |p: &PeerPolicy| p.spec.clone());
        let invalid =
            reconcile::invalid_specs(&specs, |n, s| PolicyMatcher::new([(n, s)]).map(drop));
        if specs != self.specs || invalid != self.invalid {
            match PolicyMatcher::new(reconcile::valid_specs(&specs, &invalid)) {
                Ok(m) => {
                    tracing::info!(policies = m.names().count(), "peer policies updated");
                    *self.pusher.policies.write() = m;
                    self.pusher.changed.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "peer policies rejected"),
            }
            for (name, reason) in &invalid {
                if self.invalid.get(name) != Some(reason)
                    && let Some(p) = objects.get(name)
                {
                    self.events
                        .publish(p, EventType::Warning, "Invalid", "Reconcile", reason)
                        .await;
                }
            }
            self.specs = specs;
            self.invalid = invalid;
        }
        reconcile::add_finalizers(&self.api, objects, FINALIZER).await;
        if !deleting.is_empty() {
            // The matcher no longer has them: bring their agents back first.
            let round = self.pusher.push_round().await;
            for name in deleting {
                if let Some(p) = objects.get(&name) {
                    self.release(p, round.failed).await;
                }
            }
        }
        self.tick(objects).await;
    }

    /// Status of every live policy, written when it changed.
    async fn tick(&mut self, objects: &Objects<PeerPolicy>) {
        let matched = self.pusher.matched();
        let refused = self.pusher.refused();
        let names: Vec<(String, i64)> = self
            .specs
            .iter()
            .map(|(n, (g, _))| (n.clone(), *g))
            .collect();
        for (name, generation) in names {
            let now = Shown {
                generation,
                matched: matched.get(&name).copied().unwrap_or(0),
                error: self.invalid.get(&name).cloned(),
                refused: refused.get(&name).cloned(),
            };
            let ok = now.error.is_none() && now.refused.is_none();
            let (reason, message) = match (&now.error, &now.refused) {
                (Some(e), _) => ("Invalid", e.clone()),
                (None, Some((n, first))) => (
                    "AgentsRefused",
                    format!("{n} agent(s) refused the settings: {first}"),
                ),
                (None, None) => (
                    "Applied",
                    format!("governs {} agent(s); settings pushed", now.matched),
                ),
            };
            let fields = json!({"matchedPeers": now.matched});
            let before = self.status.last(&name).cloned();
            let ready = Ready {
                ok,
                reason,
                message: &message,
            };
            let (matched, refused) = (now.matched, now.refused.clone());
            if !self
                .status
                .write(
                    &self.api,
                    "PeerPolicy",
                    &name,
                    generation,
                    now,
                    fields,
                    ready,
                )
                .await
            {
                continue;
            }
            if let Some(p) = objects.get(&name) {
                if ok && before.as_ref().map(|s| s.matched) != Some(matched) {
                    self.events
                        .publish(p, EventType::Normal, "Applied", "PushSettings", &message)
                        .await;
                } else if refused.is_some()
                    && before.as_ref().and_then(|s| s.refused.as_ref()) != refused.as_ref()
                {
                    self.events
                        .publish(p, EventType::Warning, reason, "PushSettings", &message)
                        .await;
                }
            }
        }
    }
}
