//! `TaskCache`: what is cached where. One object per task the operator knows;
//! `kubectl get taskcache` lists tasks with their holders. The spec is final;
//! its controller comes with the task-cache issue.

use crate::validation::{TASK_ID_PATTERN, URL_PATTERN};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "darter.dev",
    version = "v1alpha1",
    kind = "TaskCache",
    plural = "taskcaches",
    shortname = "dtc",
    category = "darter",
    status = "TaskCacheStatus",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.contentLength"}"#,
    printcolumn = r#"{"name":"Peers","type":"integer","jsonPath":".status.peerCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TaskCacheSpec {
    /// 64 hex digits (SHA-256 task id).
    #[schemars(regex(pattern = TASK_ID_PATTERN))]
    pub task_id: String,
    #[schemars(regex(pattern = URL_PATTERN))]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskCacheStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    #[serde(default)]
    pub peer_count: u32,
    /// Peers holding the task (finished or not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<TaskHolder>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskHolder {
    pub peer: String,
    pub finished: bool,
    pub pieces: u32,
}
