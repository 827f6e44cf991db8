//! Node labels for Cluster seed peer selectors: a metadata-only watch of the
//! Node objects (labels, no status: cheap on a 1,000-node cluster), kept by
//! node name, which is the hostname the agent DaemonSet announces.

use crate::scheduler::service::NodeLabels;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

pub async fn watch_node_labels(client: Client, labels: NodeLabels) {
    // Metadata-only requests: labels without each Node's status.
    let api: Api<PartialObjectMeta<Node>> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut init = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => init = Some(std::collections::HashMap::new()),
            Ok(watcher::Event::InitApply(n)) => {
                if let Some(i) = init.as_mut() {
                    i.insert(n.name_any(), n.labels().clone());
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(i) = init.take() {
                    *labels.write() = i;
                }
            }
            Ok(watcher::Event::Apply(n)) => {
                labels.write().insert(n.name_any(), n.labels().clone());
            }
            Ok(watcher::Event::Delete(n)) => {
                labels.write().remove(&n.name_any());
            }
            Err(e) => tracing::warn!(error = %e, "Node watch failed; retrying"),
        }
    }
}
