//! The PeerPolicy controller. It keeps the scheduler's policy matcher equal
//! to the PeerPolicy objects (the pusher sends the settings to the agents),
//! writes each policy's status by server-side apply (matched peers,
//! `observedGeneration`, a `Ready` condition), records Events, and holds a
//! finalizer so that a deleted policy's agents are back on their own config
//! before the object goes away.

use super::events::Events;
use crate::agents::push::PolicyPusher;
use crate::scheduler::policies::PolicyMatcher;
use darter_crds::{PeerPolicy, PeerPolicySpec};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const FINALIZER: &str = "darter.dev/revert-agent-settings";
const MANAGER: &str = "darter-operator";

/// What was last written to one policy's status.
#[derive(Clone, PartialEq)]
struct Shown {
    generation: i64,
    matched: u32,
    error: Option<String>,
}

pub struct PolicyController {
    api: Api<PeerPolicy>,
    pusher: Arc<PolicyPusher>,
    events: Events,
    /// Live (not deleting) policies.
    specs: BTreeMap<String, (i64, PeerPolicySpec)>,
    /// Why a policy is not in force (it failed to compile).
    invalid: HashMap<String, String>,
    shown: HashMap<String, Shown>,
    /// When each policy's Ready condition last changed.
    since: HashMap<String, (bool, String)>,
    /// Objects seen, for status writes.
    objects: BTreeMap<String, PeerPolicy>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl PolicyController {
    pub fn new(client: Client, pusher: Arc<PolicyPusher>, events: Events) -> Self {
        Self {
            api: Api::all(client),
            pusher,
            events,
            specs: BTreeMap::new(),
            invalid: HashMap::new(),
            shown: HashMap::new(),
            since: HashMap::new(),
            objects: BTreeMap::new(),
        }
    }

    /// Watches PeerPolicies until the process ends (a broken watch resumes
    /// with backoff), and refreshes status every few seconds.
    pub async fn run(mut self) {
        let stream = kube::runtime::WatchStreamExt::default_backoff(watcher(
            self.api.clone(),
            watcher::Config::default(),
        ));
        futures::pin_mut!(stream);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut init: Option<Vec<PeerPolicy>> = None;
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    None => return,
                    Some(Ok(watcher::Event::Init)) => init = Some(Vec::new()),
                    Some(Ok(watcher::Event::InitApply(p))) => {
                        if let Some(i) = init.as_mut() {
                            i.push(p);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let all = init.take().unwrap_or_default();
                        self.objects = all.into_iter().map(|p| (p.name_any(), p)).collect();
                        self.reconcile().await;
                    }
                    Some(Ok(watcher::Event::Apply(p))) => {
                        self.objects.insert(p.name_any(), p);
                        self.reconcile().await;
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        self.objects.remove(&p.name_any());
                        self.reconcile().await;
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "PeerPolicy watch failed; retrying"),
                },
                _ = tick.tick() => self.write_status().await,
            }
        }
    }

    /// Brings the matcher, the finalizers and the agents in line with the
    /// objects.
    async fn reconcile(&mut self) {
        let mut specs = BTreeMap::new();
        let mut deleting = Vec::new();
        for (name, p) in &self.objects {
            if p.metadata.deletion_timestamp.is_some() {
                if p.finalizers().iter().any(|f| f == FINALIZER) {
                    deleting.push(name.clone());
                }
                continue;
            }
            specs.insert(
                name.clone(),
                (p.metadata.generation.unwrap_or(0), p.spec.clone()),
            );
        }
        // Each policy compiled alone first, so one bad object does not take
        // the others out of force.
        let mut invalid = HashMap::new();
        for (name, (_, spec)) in &specs {
            if let Err(e) = PolicyMatcher::new([(name.as_str(), spec)]) {
                invalid.insert(name.clone(), e.to_string());
            }
        }
        let changed = specs != self.specs || invalid != self.invalid;
        if changed {
            let good = specs
                .iter()
                .filter(|(n, _)| !invalid.contains_key(*n))
                .map(|(n, (_, s))| (n.as_str(), s));
            match PolicyMatcher::new(good) {
                Ok(m) => {
                    tracing::info!(policies = m.names().count(), "peer policies updated");
                    *self.pusher.policies.write() = m;
                    self.pusher.changed.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "peer policies rejected"),
            }
            for (name, reason) in &invalid {
                if self.invalid.get(name) != Some(reason)
                    && let Some(p) = self.objects.get(name)
                {
                    self.events
                        .publish(p, EventType::Warning, "Invalid", "Reconcile", reason)
                        .await;
                }
            }
            self.specs = specs;
            self.invalid = invalid;
        }
        self.add_finalizers().await;
        if !deleting.is_empty() {
            // The matcher no longer has them: bring their agents back first.
            let round = self.pusher.push_round().await;
            for name in deleting {
                self.release(&name, round.failed).await;
            }
        }
        self.write_status().await;
    }

    async fn add_finalizers(&self) {
        for (name, p) in &self.objects {
            if p.metadata.deletion_timestamp.is_some()
                || p.finalizers().iter().any(|f| f == FINALIZER)
            {
                continue;
            }
            let mut finalizers = p.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.resource_version()}});
            if let Err(e) = self
                .api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(policy = %name, error = %e, "cannot add the finalizer; retrying on the next change");
            }
        }
    }

    /// Drops the finalizer of a deleted policy whose agents were reverted.
    async fn release(&mut self, name: &str, failed: usize) {
        let Some(p) = self.objects.get(name) else {
            return;
        };
        let note = match failed {
            0 => "settings of the agents it governed are back to their config".to_string(),
            n => {
                format!("{n} agent(s) did not confirm; they get their settings when they reconnect")
            }
        };
        self.events
            .publish(p, EventType::Normal, "Reverted", "Finalize", &note)
            .await;
        let finalizers: Vec<String> = p
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.resource_version()}});
        match self
            .api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(policy = %name, "peer policy released");
                self.shown.remove(name);
                self.since.remove(name);
            }
            Err(e) => tracing::warn!(policy = %name, error = %e, "cannot drop the finalizer"),
        }
    }

    /// Status of every live policy, written when it changed.
    async fn write_status(&mut self) {
        let matched = self.pusher.matched();
        let names: Vec<String> = self.specs.keys().cloned().collect();
        for name in names {
            let Some((generation, _)) = self.specs.get(&name).cloned() else {
                continue;
            };
            let now = Shown {
                generation,
                matched: matched.get(&name).copied().unwrap_or(0),
                error: self.invalid.get(&name).cloned(),
            };
            if self.shown.get(&name) == Some(&now) {
                continue;
            }
            let ready = now.error.is_none();
            let since = match self.since.get(&name) {
                Some((r, t)) if *r == ready => t.clone(),
                _ => now_rfc3339(),
            };
            let (reason, message) = match &now.error {
                None => (
                    "Applied",
                    format!("governs {} agent(s); settings pushed", now.matched),
                ),
                Some(e) => ("Invalid", e.clone()),
            };
            let body = json!({
                "apiVersion": "darter.dev/v1alpha1",
                "kind": "PeerPolicy",
                "status": {
                    "observedGeneration": generation,
                    "matchedPeers": now.matched,
                    "conditions": [{
                        "type": "Ready",
                        "status": if ready { "True" } else { "False" },
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": since,
                        "observedGeneration": generation,
                    }],
                },
            });
            let pp = PatchParams::apply(MANAGER).force();
            match self
                .api
                .patch_status(&name, &pp, &Patch::Apply(&body))
                .await
            {
                Ok(_) => {
                    let before = self.shown.get(&name).map(|s| s.matched);
                    if ready
                        && before != Some(now.matched)
                        && let Some(p) = self.objects.get(&name)
                    {
                        self.events
                            .publish(p, EventType::Normal, "Applied", "PushSettings", &message)
                            .await;
                    }
                    self.shown.insert(name.clone(), now);
                    self.since.insert(name, (ready, since));
                }
                Err(e) => tracing::warn!(policy = %name, error = %e, "cannot write status"),
            }
        }
    }
}
