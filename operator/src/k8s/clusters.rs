//! The Cluster controller. It keeps the scheduler's cluster scopes equal to
//! the Cluster objects (agents move on their next announce), writes each
//! Cluster's status by server-side apply (live peers, seed peers and tasks,
//! `observedGeneration`, a `Ready` condition), records Events, and holds a
//! finalizer so a deleted Cluster's agents are re-placed in the remaining
//! clusters before the object goes away.

use super::events::Events;
use super::health::Health;
use super::reconcile::{self, Controller, Objects, Ready, StatusBook};
use crate::scheduler::Scheduler;
use crate::scheduler::clusters::ClusterMatcher;
use crate::scheduler::resource::HostKind;
use darter_crds::{Cluster, ClusterSpec};
use kube::runtime::events::EventType;
use kube::{Api, Client};
use parking_lot::RwLock;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub const FINALIZER: &str = "darter.dev/replace-agents";

/// What was last written to one Cluster's status.
#[derive(Clone, PartialEq)]
struct Shown {
    generation: i64,
    peers: u32,
    seeds: u32,
    tasks: u32,
    error: Option<String>,
}

pub struct ClusterController {
    api: Api<Cluster>,
    core: Arc<Scheduler>,
    matcher: Arc<RwLock<ClusterMatcher>>,
    /// Cluster of hosts when there are no Cluster objects.
    fallback: String,
    health: Arc<Health>,
    events: Events,
    /// Live clusters' (generation, spec) in force.
    specs: BTreeMap<String, (i64, ClusterSpec)>,
    invalid: HashMap<String, String>,
    status: StatusBook<Shown>,
}

impl ClusterController {
    pub fn new(
        client: Client,
        core: Arc<Scheduler>,
        matcher: Arc<RwLock<ClusterMatcher>>,
        fallback: String,
        health: Arc<Health>,
        events: Events,
    ) -> Self {
        Self {
            api: Api::all(client),
            core,
            matcher,
            fallback,
            health,
            events,
            specs: BTreeMap::new(),
            invalid: HashMap::new(),
            status: StatusBook::default(),
        }
    }

    /// Watches Clusters until the process ends; status every 2 s.
    pub async fn run(self) {
        let api = self.api.clone();
        reconcile::run(api, "Cluster", self, std::time::Duration::from_secs(2)).await
    }

    /// Re-places a deleted Cluster's agents now (the matcher no longer has
    /// it), then drops the finalizer.
    async fn release(&mut self, c: &Cluster, name: &str) {
        let (mut moved, mut unplaced) = (0, 0);
        tracing::info!(cluster = %name, "Cluster deleted; re-placing its agents");
        {
            let m = self.matcher.read();
            for h in self.core.hosts() {
                if h.info.cluster != name {
                    continue;
                }
                let mut info = h.info.clone();
                if m.assign(&mut info, &self.fallback) {
                    self.core.announce_host(info);
                    moved += 1;
                } else {
                    unplaced += 1;
                }
            }
        }
        let note = match unplaced {
            0 => format!("{moved} agent(s) moved to the remaining clusters"),
            n => format!(
                "{moved} agent(s) moved; {n} match no remaining cluster and there is no default: their announces are refused"
            ),
        };
        reconcile::release(
            &self.api,
            &self.events,
            c,
            FINALIZER,
            &mut self.status,
            "AgentsReplaced",
            &note,
        )
        .await;
    }
}

impl Controller<Cluster> for ClusterController {
    async fn reconcile(&mut self, objects: &Objects<Cluster>) {
        let (specs, deleting) =
            reconcile::live_and_deleting(objects, FINALIZER, |c: &Cluster| c.spec.clone());
        let invalid =
            reconcile::invalid_specs(&specs, |n, s| ClusterMatcher::new([(n, s)]).map(drop));
        if specs != self.specs || invalid != self.invalid || !deleting.is_empty() {
            match ClusterMatcher::new(reconcile::valid_specs(&specs, &invalid)) {
                Ok(m) => {
                    *self.matcher.write() = m;
                    self.health.metrics.cluster_updates.inc();
                    tracing::info!(clusters = specs.len(), "cluster scopes updated");
                }
                Err(e) => tracing::error!(error = %e, "Cluster scopes rejected"),
            }
            for (name, (generation, _)) in &specs {
                let Some(c) = objects.get(name) else {
                    continue;
                };
                match invalid.get(name) {
                    Some(reason) if self.invalid.get(name) != Some(reason) => {
                        self.events
                            .publish(c, EventType::Warning, "InvalidScopes", "Reconcile", reason)
                            .await;
                    }
                    None if self.specs.get(name).map(|(g, _)| g) != Some(generation) => {
                        self.events
                            .publish(
                                c,
                                EventType::Normal,
                                "ScopesApplied",
                                "Reconcile",
                                "scopes in use by the scheduler; agents move on their next announce",
                            )
                            .await;
                    }
                    _ => {}
                }
            }
            self.specs = specs;
            self.invalid = invalid;
        }
        // Ready once the objects are read: before that an empty scope set
        // would send every agent to the fallback cluster.
        self.health.ready.store(true, Ordering::Relaxed);
        reconcile::add_finalizers(&self.api, objects, FINALIZER).await;
        for name in deleting {
            if let Some(c) = objects.get(&name) {
                self.release(c, &name).await;
            }
        }
        self.tick(objects).await;
    }

    /// Live counts per Cluster, written when they changed.
    async fn tick(&mut self, _objects: &Objects<Cluster>) {
        let mut counts: HashMap<String, (u32, u32)> = HashMap::new();
        for h in self.core.hosts() {
            let c = counts.entry(h.info.cluster.clone()).or_default();
            c.0 += 1;
            if h.info.kind == HostKind::Seed {
                c.1 += 1;
            }
        }
        let tasks = self.core.tasks_by_cluster();
        let names: Vec<(String, i64)> = self
            .specs
            .iter()
            .map(|(n, (g, _))| (n.clone(), *g))
            .collect();
        for (name, generation) in names {
            let (peers, seeds) = counts.get(&name).copied().unwrap_or_default();
            let now = Shown {
                generation,
                peers,
                seeds,
                tasks: tasks.get(&name).copied().unwrap_or(0),
                error: self.invalid.get(&name).cloned(),
            };
            let (ok, reason, message) = match &now.error {
                None => (
                    true,
                    "ScopesLoaded",
                    "scopes are in use by the scheduler".to_string(),
                ),
                Some(e) => (false, "InvalidScopes", e.clone()),
            };
            let fields = json!({"peers": now.peers, "seedPeers": now.seeds, "tasks": now.tasks});
            let ready = Ready {
                ok,
                reason,
                message: &message,
            };
            self.status
                .write(&self.api, "Cluster", &name, generation, now, fields, ready)
                .await;
        }
    }
}
