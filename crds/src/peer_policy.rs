//! `PeerPolicy`: run-time settings for the agents it selects (rate limits,
//! leech mode, upload slots, GC watermarks), pushed over the command stream.
//! When several match, the most specific wins (see `PeerSelector`).

use crate::cluster::ClusterScopes;
use crate::validation::RATE_PATTERN;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "darter.dev",
    version = "v1alpha1",
    kind = "PeerPolicy",
    plural = "peerpolicies",
    shortname = "dpp",
    category = "darter",
    status = "PeerPolicyStatus",
    printcolumn = r#"{"name":"Leech","type":"boolean","jsonPath":".spec.disableShared"}"#,
    printcolumn = r#"{"name":"Upload","type":"string","jsonPath":".spec.uploadRateLimit"}"#,
    printcolumn = r#"{"name":"Download","type":"string","jsonPath":".spec.downloadRateLimit"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.matchedPeers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PeerPolicySpec {
    /// Which agents this policy applies to; empty selects every agent.
    #[serde(default)]
    pub selector: PeerSelector,
    /// Tie-break between equally specific policies: higher wins.
    #[serde(default)]
    pub priority: i32,
    /// Upload rate of each selected agent, e.g. `100MiB/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RATE_PATTERN))]
    pub upload_rate_limit: Option<String>,
    /// Download rate of each selected agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RATE_PATTERN))]
    pub download_rate_limit: Option<String>,
    /// Leech mode: download through P2P, never serve pieces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_shared: Option<bool>,
    /// Children per host the scheduler may assign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50000))]
    pub upload_slots: Option<u32>,
    /// Disk-use watermarks for GC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcWatermarks>,
}

/// Selects agents: every criterion given must match (an agent matches a list
/// when it matches any entry). Specificity, used to pick the winning policy,
/// weighs the criteria given: hostnames 16, nodeSelector 12, cidrs 8, idc 4,
/// location 2, clusters 1.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerSelector {
    /// Hostname regexes, CIDRs, IDC and location prefix, as in Cluster scopes.
    #[serde(flatten)]
    pub scopes: ClusterScopes,
    /// Clusters (by name) whose agents are selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub clusters: Vec<String>,
    /// Labels the agent's Node must carry (all of them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.lowPercent < self.highPercent").message("lowPercent must be below highPercent"))]
pub struct GcWatermarks {
    /// Start evicting above this disk use.
    #[schemars(range(min = 1, max = 100))]
    pub high_percent: u8,
    /// Stop evicting at this disk use.
    #[schemars(range(min = 0, max = 99))]
    pub low_percent: u8,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Agents this policy is the winning one for.
    #[serde(default)]
    pub matched_peers: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
