//! Nodes as the admin sees them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::states::NodeState;

/// A node as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Node {
    pub id: i64,
    pub name: String,
    /// Where its tasks reach each other (a gang's `MASTER_ADDR`).
    pub addr: String,
    pub gpu_model: Option<String>,
    pub gpus: i64,
    pub gpu_memory_mib: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub rack: String,
    pub labels: BTreeMap<String, String>,
    pub state: NodeState,
    pub registered_ms: i64,
    pub last_heartbeat_ms: i64,
}

/// A node with what is allocated on it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    pub gpu_milli_allocated: u64,
    pub cpu_milli_allocated: u64,
    /// Jobs with a live task on it.
    pub jobs: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// A node's state after a drain or undrain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStateView {
    pub node: String,
    pub state: NodeState,
}
