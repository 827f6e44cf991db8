//! What the operator's controllers share: a watch that keeps every object of
//! a kind in memory (resumed with backoff when it breaks, e.g. across an API
//! server restart) and calls the controller on each change and on a tick;
//! finalizer bookkeeping; and `Ready` condition transition times.

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// The objects of one kind, by name.
pub type Objects<K> = BTreeMap<String, K>;

pub trait Controller<K>: Send {
    /// The objects changed (or were read for the first time).
    fn reconcile(&mut self, objects: &Objects<K>) -> impl Future<Output = ()> + Send;
    /// Periodic work between changes (status counters).
    fn tick(&mut self, objects: &Objects<K>) -> impl Future<Output = ()> + Send;
}

/// Runs `ctl` over every object of `api`'s kind until the watch ends.
pub async fn run<K, C>(api: Api<K>, kind: &'static str, mut ctl: C, every: Duration)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Controller<K>,
{
    let stream =
        kube::runtime::WatchStreamExt::default_backoff(watcher(api, watcher::Config::default()));
    futures::pin_mut!(stream);
    let mut tick = tokio::time::interval(every);
    let mut objects: Objects<K> = BTreeMap::new();
    let mut init: Option<Objects<K>> = None;
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                None => return,
                Some(Ok(watcher::Event::Init)) => init = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(o))) => {
                    if let Some(i) = init.as_mut() {
                        i.insert(o.name_any(), o);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    objects = init.take().unwrap_or_default();
                    ctl.reconcile(&objects).await;
                }
                Some(Ok(watcher::Event::Apply(o))) => {
                    objects.insert(o.name_any(), o);
                    ctl.reconcile(&objects).await;
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    objects.remove(&o.name_any());
                    ctl.reconcile(&objects).await;
                }
                Some(Err(e)) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            },
            _ = tick.tick() => ctl.tick(&objects).await,
        }
    }
}

/// Splits objects into live ones (name -> (generation, spec)) and deleting
/// ones that still carry `finalizer`.
pub fn live_and_deleting<K: Resource, S>(
    objects: &Objects<K>,
    finalizer: &str,
    spec: impl Fn(&K) -> S,
) -> (BTreeMap<String, (i64, S)>, Vec<String>) {
    let mut live = BTreeMap::new();
    let mut deleting = Vec::new();
    for (name, o) in objects {
        if o.meta().deletion_timestamp.is_some() {
            if o.finalizers().iter().any(|f| f == finalizer) {
                deleting.push(name.clone());
            }
        } else {
            live.insert(name.clone(), (o.meta().generation.unwrap_or(0), spec(o)));
        }
    }
    (live, deleting)
}

async fn set_finalizers<K>(api: &Api<K>, o: &K, finalizers: Vec<String>) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    // The resourceVersion makes the merge patch a compare-and-swap, so a
    // finalizer another controller added meanwhile is not lost.
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": o.resource_version()}});
    api.patch(
        &o.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(drop)
}

/// Adds `finalizer` to every live object lacking it.
pub async fn add_finalizers<K>(api: &Api<K>, objects: &Objects<K>, finalizer: &str)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    for o in objects.values() {
        if o.meta().deletion_timestamp.is_some() || o.finalizers().iter().any(|f| f == finalizer) {
            continue;
        }
        let mut finalizers = o.finalizers().to_vec();
        finalizers.push(finalizer.to_string());
        if let Err(e) = set_finalizers(api, o, finalizers).await {
            tracing::warn!(object = %o.name_any(), error = %e, "cannot add the finalizer; retrying on the next change");
        }
    }
}

/// Drops `finalizer`: the API server then deletes the object.
pub async fn remove_finalizer<K>(api: &Api<K>, o: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let rest = o
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    set_finalizers(api, o, rest).await
}

/// Status bookkeeping per object: what was last written (to skip identical
/// writes) and when its `Ready` condition last changed (a rewrite with the
/// same readiness keeps its `lastTransitionTime`).
pub struct StatusBook<T> {
    shown: HashMap<String, T>,
    transitions: HashMap<String, (bool, String)>,
}

impl<T> Default for StatusBook<T> {
    fn default() -> Self {
        Self {
            shown: HashMap::new(),
            transitions: HashMap::new(),
        }
    }
}

impl<T: PartialEq> StatusBook<T> {
    pub fn last(&self, name: &str) -> Option<&T> {
        self.shown.get(name)
    }

    pub fn unchanged(&self, name: &str, now: &T) -> bool {
        self.shown.get(name) == Some(now)
    }

    pub fn record(&mut self, name: &str, now: T) {
        self.shown.insert(name.to_string(), now);
    }

    pub fn since(&mut self, name: &str, ready: bool) -> String {
        match self.transitions.get(name) {
            Some((r, t)) if *r == ready => t.clone(),
            _ => {
                let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                self.transitions
                    .insert(name.to_string(), (ready, t.clone()));
                t
            }
        }
    }

    pub fn forget(&mut self, name: &str) {
        self.shown.remove(name);
        self.transitions.remove(name);
    }

    /// Writes `name`'s status (`fields` plus `observedGeneration` and the
    /// `Ready` condition) by server-side apply, unless `now` is what was last
    /// written; `true` when it wrote.
    #[allow(clippy::too_many_arguments)]
    pub async fn write<K>(
        &mut self,
        api: &Api<K>,
        kind: &str,
        name: &str,
        generation: i64,
        now: T,
        fields: serde_json::Value,
        ready: Ready<'_>,
    ) -> bool
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        if self.unchanged(name, &now) {
            return false;
        }
        let since = self.since(name, ready.ok);
        let body = ready_status(
            kind,
            generation,
            fields,
            ready.ok,
            ready.reason,
            ready.message,
            &since,
        );
        let wrote = apply_status(api, name, &body).await;
        if wrote {
            self.record(name, now);
        }
        wrote
    }
}

/// Live specs that fail to compile alone, with the reason: one bad object
/// must not take the others out of force.
pub fn invalid_specs<S, E: std::fmt::Display>(
    live: &BTreeMap<String, (i64, S)>,
    compile: impl Fn(&str, &S) -> Result<(), E>,
) -> HashMap<String, String> {
    live.iter()
        .filter_map(|(n, (_, s))| compile(n, s).err().map(|e| (n.clone(), e.to_string())))
        .collect()
}

/// The live specs not in `invalid`.
pub fn valid_specs<'a, S>(
    live: &'a BTreeMap<String, (i64, S)>,
    invalid: &'a HashMap<String, String>,
) -> impl Iterator<Item = (&'a str, &'a S)> {
    live.iter()
        .filter(|(n, _)| !invalid.contains_key(*n))
        .map(|(n, (_, s))| (n.as_str(), s))
}

/// Records the clean-up as an Event, drops the finalizer of the object and
/// forgets its status bookkeeping.
pub async fn release<K, T: PartialEq>(
    api: &Api<K>,
    events: &super::events::Events,
    o: &K,
    finalizer: &str,
    book: &mut StatusBook<T>,
    reason: &str,
    note: &str,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    events
        .publish(o, EventType::Normal, reason, "Finalize", note)
        .await;
    let name = o.name_any();
    match remove_finalizer(api, o, finalizer).await {
        Ok(()) => {
            tracing::info!(object = %name, "finalizer released");
            book.forget(&name);
        }
        Err(e) => tracing::warn!(object = %name, error = %e, "cannot drop the finalizer"),
    }
}

/// An object's `Ready` condition.
pub struct Ready<'a> {
    pub ok: bool,
    pub reason: &'a str,
    pub message: &'a str,
}

/// A status body for server-side apply with one `Ready` condition;
/// `fields` are the kind's own status fields.
fn ready_status(
    kind: &str,
    generation: i64,
    mut fields: serde_json::Value,
    ready: bool,
    reason: &str,
    message: &str,
    since: &str,
) -> serde_json::Value {
    fields["observedGeneration"] = json!(generation);
    fields["conditions"] = json!([{
        "type": "Ready",
        "status": if ready { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }]);
    json!({"apiVersion": "darter.dev/v1alpha1", "kind": kind, "status": fields})
}

/// Writes `body` as the object's status by server-side apply.
async fn apply_status<K>(api: &Api<K>, name: &str, body: &serde_json::Value) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let pp = PatchParams::apply(super::MANAGER).force();
    match api.patch_status(name, &pp, &Patch::Apply(body)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(object = %name, error = %e, "cannot write status");
            false
        }
    }
}
