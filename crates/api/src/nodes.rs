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

/// `GET /v1/pool`: what any tenant may know of the pool, like Slurm's
/// `sinfo`: per GPU model, its nodes and GPUs and how much is free, and
/// the queue's depth. No node names, no other tenant's jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolView {
    /// One row per GPU model, by name; CPU-only nodes under `model: null`.
    pub models: Vec<PoolModel>,
    /// Jobs waiting in the whole pool.
    pub pending_jobs: u64,
    /// Jobs holding resources in the whole pool.
    pub running_jobs: u64,
    /// The caller's own (the admin: none).
    pub your_pending_jobs: u64,
    pub your_running_jobs: u64,
}

/// One GPU model of the pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolModel {
    pub model: Option<String>,
    /// Nodes taking work.
    pub nodes_ready: u64,
    /// Nodes draining or down (their GPUs take no new work).
    pub nodes_unavailable: u64,
    /// GPUs of the ready nodes.
    pub gpus: u64,
    /// Free GPU capacity on ready nodes, in GPUs (shares count as parts).
    pub gpus_free: f64,
    /// Whole GPUs free on the emptiest ready node: the largest job of one
    /// task that could start now.
    pub most_free_on_one_node: u64,
}

/// `GET /readyz`: whether this server replica can serve, and its part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// `leader`: this replica runs the scheduling loop; `follower`: it
    /// serves reads, another replica runs the loop.
    pub role: String,
    /// The leader lease's epoch (bumped at every takeover).
    pub epoch: i64,
}
