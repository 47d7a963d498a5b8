//! The agent protocol. An agent registers its node, then reports every few
//! seconds (the heartbeat): every task it runs and the exits since. The
//! answer is its [`Orders`]. Task output goes up in [`LogPushed`]-answered
//! chunks at byte offsets (idempotent). Every call carries
//! [`crate::PROTOCOL_HEADER`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nodes::Node;

/// One GPU of a registering node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 15))]
    pub index: i64,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 16777216))]
    pub memory_mib: Option<i64>,
}

/// `POST /v1/agents/register`: a node's inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeRegistration {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000000))]
    pub cpu_milli: i64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 17179869184_i64))]
    pub memory_mib: i64,
    /// Indexes 0..n-1 each once, one model, at most 16.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub gpus: Vec<GpuInfo>,
    /// With a join token: the SHA-256 (hex, [`crate::token::hash_token`])
    /// of the credential this agent generated and saved for its node. The
    /// registration makes it the node's credential; the same hash again
    /// (an agent retrying after a lost answer) is the same claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_sha256: Option<String>,
}

/// The answer to a registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    pub node: Node,
    pub heartbeat_interval_s: u64,
    /// The server's [`crate::PROTOCOL`].
    pub protocol: u32,
    /// What the operator should know (e.g. the node's GPU model has no
    /// price in the server's price book): the agent logs each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One task of one attempt, as an agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskKey {
    pub job: i64,
    pub run: i64,
    pub task: i64,
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskExit {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    /// Exit code, or `None` if a signal ended it.
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    #[serde(default)]
    pub reason: String,
    /// The agent stopped it for running past the job's `max_runtime_s`:
    /// the job fails without retry.
    #[serde(default)]
    pub timeout: bool,
    /// The task never ran (no such program, bad working directory...):
    /// the job fails without retry.
    #[serde(default)]
    pub not_started: bool,
}

impl TaskExit {
    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job,
            run: self.run,
            task: self.task,
        }
    }
}

/// An agent's report: every task it runs (a heartbeat), and tasks that
/// ended since. A task-status call reports exits only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Report {
    #[serde(default)]
    pub running: Vec<TaskKey>,
    #[serde(default)]
    pub exited: Vec<TaskExit>,
}

/// A task an agent must start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    /// Gang size (`WORLD_SIZE`); `task` is the rank.
    pub tasks: i64,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub max_runtime_s: Option<i64>,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    /// Device indexes on the node (`CUDA_VISIBLE_DEVICES`).
    pub gpus: Vec<u32>,
    /// Fraction of the one device, for a GPU share.
    pub gpu_share: Option<f64>,
    /// Address of the node running task 0 (`MASTER_ADDR`).
    pub master_addr: String,
    /// For a model service's replica: its port and secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<crate::services::ReplicaOrder>,
}

impl Assignment {
    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job,
            run: self.run,
            task: self.task,
        }
    }
}

/// A task to stop, with the devices it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskRef {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    pub gpus: Vec<u32>,
}

impl TaskRef {
    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job,
            run: self.run,
            task: self.task,
        }
    }
}

/// What an agent must do: start these tasks, stop those.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Orders {
    pub start: Vec<Assignment>,
    pub kill: Vec<TaskRef>,
}

/// A task's output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Out,
    Err,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Out => "out",
            LogStream::Err => "err",
        }
    }
}

/// The answer to a log chunk: the stream's length on the server, where the
/// next chunk starts. (A chunk past the end is refused with the problem
/// code `offset_gap`, whose `next_offset` says where to resume.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPushed {
    pub next_offset: u64,
}

/// `POST /v1/agents/{name}/logs?...`: where a chunk of a task's output (the
/// raw body) starts. Idempotent: bytes the server already has are skipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogChunk {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    #[cfg_attr(feature = "openapi", param(inline))]
    pub stream: LogStream,
    /// Where these bytes start in the task's stream.
    pub offset: u64,
}

/// `GET /v1/agents/{name}/wait?...`: hold the call until this node's orders
/// change (the server pushes work this way; heartbeats still carry the
/// orders and keep the node's lease).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct OrdersWait {
    /// The last [`OrdersChanged::seq`] this agent saw (0 at first): the
    /// call answers at once when the node's sequence differs.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 0, maximum = 9223372036854775807_i64)
    )]
    pub seen: u64,
    /// How long to hold the call when nothing changes, in ms
    /// (1..=[`MAX_WAIT_MS`]; default [`DEFAULT_WAIT_MS`]).
    #[serde(default = "default_wait_ms")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 60000))]
    pub timeout_ms: u64,
}

/// The longest an agent may hold a wait call.
pub const MAX_WAIT_MS: u64 = 60_000;
/// The hold of a wait call that names none.
pub const DEFAULT_WAIT_MS: u64 = 20_000;

fn default_wait_ms() -> u64 {
    DEFAULT_WAIT_MS
}

/// The answer to a wait: the node's order sequence now. It differs from
/// `seen` when new orders were committed for the node (the agent then
/// heartbeats to get them); equal when the hold timed out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrdersChanged {
    pub seq: u64,
}
