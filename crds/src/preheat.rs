//! `PreheatJob`: fetch URLs (or an image's layers) into the cache of the
//! selected peers ahead of use. The spec is final; its controller comes with
//! the preheat issue.

use crate::validation::{SIZE_PATTERN, URL_PATTERN};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "darter.dev",
    version = "v1alpha1",
    kind = "PreheatJob",
    plural = "preheatjobs",
    shortname = "dph",
    category = "darter",
    namespaced,
    status = "PreheatJobStatus",
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Done","type":"integer","jsonPath":".status.succeededPeers"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failedPeers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("size(self.urls) > 0 || has(self.image)").message("set urls or image"))]
#[serde(rename_all = "camelCase")]
pub struct PreheatJobSpec {
    /// Files to preheat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(regex(pattern = URL_PATTERN), length(max = 4096)))]
    pub urls: Vec<String>,
    /// An image reference (`registry/repo:tag`); its layers are preheated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Which peers fetch.
    #[serde(default)]
    pub scope: PreheatScope,
    /// Clusters to preheat in; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered_query_params: Option<Vec<String>>,
    /// Headers sent to the origin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Fixed piece length, e.g. `16MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SIZE_PATTERN))]
    pub piece_length: Option<String>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PreheatScope {
    /// One seed peer per cluster (the others fetch from it later).
    #[default]
    SinglePeer,
    /// Every seed peer.
    AllSeedPeers,
    /// Every peer.
    AllPeers,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PreheatPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreheatJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: PreheatPhase,
    #[serde(default)]
    pub succeeded_peers: u32,
    #[serde(default)]
    pub failed_peers: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
