//! `Cluster`: a P2P domain. Agents join the cluster whose scopes match them
//! best; the cluster's scheduling settings and seed peers apply to them.

use crate::validation::{CIDR_LIST_RULE, LOCATION_PATTERN, REGEX_LIST_RULE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "darter.dev",
    version = "v1alpha1",
    kind = "Cluster",
    plural = "clusters",
    shortname = "dcl",
    category = "darter",
    status = "ClusterStatus",
    printcolumn = r#"{"name":"Default","type":"boolean","jsonPath":".spec.isDefault"}"#,
    printcolumn = r#"{"name":"Peers","type":"integer","jsonPath":".status.peers"}"#,
    printcolumn = r#"{"name":"Seeds","type":"integer","jsonPath":".status.seedPeers"}"#,
    printcolumn = r#"{"name":"Tasks","type":"integer","jsonPath":".status.tasks"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Which agents belong here (scored: CIDR, hostname, IDC, location, default).
    #[serde(default)]
    pub scopes: ClusterScopes,
    /// Agents that match no other cluster join the default one.
    #[serde(default)]
    pub is_default: bool,
    /// Parent selection knobs for this cluster's scheduler.
    #[serde(default)]
    pub scheduling: SchedulingSettings,
    /// Agents that act as this cluster's seed peers (first download of each
    /// task), whatever they announce: by node name (the agent's hostname) or
    /// by Node labels.
    #[serde(default)]
    pub seed_peers: SeedPeerSelector,
    /// Jobs (preheat, task-cache queries) accepted per second.
    #[serde(default = "default_job_rate_limit")]
    #[schemars(range(min = 1, max = 10000))]
    pub job_rate_limit: u32,
}

fn default_job_rate_limit() -> u32 {
    10
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScopes {
    /// Regular expressions matched against agent hostnames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new(REGEX_LIST_RULE).message("must hold valid regular expressions"))]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub hostnames: Vec<String>,
    /// Networks (e.g. 10.0.0.0/8) containing agent IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new(CIDR_LIST_RULE).message("must hold CIDRs such as 10.0.0.0/8"))]
    #[schemars(length(max = 64), inner(length(max = 43)))]
    pub cidrs: Vec<String>,
    /// Data center name agents report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idc: Option<String>,
    /// Location as `|`-separated elements, matched by prefix (e.g. `cn|hz|a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LOCATION_PATTERN))]
    pub location: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSettings {
    /// Parents handed to a peer at once.
    #[schemars(range(min = 1, max = 20))]
    pub candidate_parent_limit: u32,
    /// Peers sampled from the task's DAG before filtering.
    #[schemars(range(min = 10, max = 1000))]
    pub filter_parent_limit: u32,
    /// Concurrent uploads of a normal peer.
    #[schemars(range(min = 1, max = 2000))]
    pub normal_upload_slots: u32,
    /// Concurrent uploads of a seed peer.
    #[schemars(range(min = 1, max = 50000))]
    pub seed_upload_slots: u32,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        Self {
            candidate_parent_limit: 4,
            filter_parent_limit: 15,
            normal_upload_slots: 200,
            seed_upload_slots: 2000,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedPeerSelector {
    /// Nodes by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,
    /// Nodes whose labels include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub peers: u32,
    #[serde(default)]
    pub seed_peers: u32,
    #[serde(default)]
    pub tasks: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
