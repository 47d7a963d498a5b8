//! Model services: a tenant's model server run as replicas on pool GPUs,
//! called OpenAI-style through the router, paid per token by the caller.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::states::Class;

/// `POST /v1/services`: a new service. Absent fields take the defaults
/// named on each; the replica fields are those of [`crate::JobSubmit`]
/// (validated the same way).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceCreate {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub name: String,
    /// The model name callers put in a request's `model` (1..=128
    /// printable ASCII characters, no space).
    pub model: String,
    /// The replica's program; it must listen on `$PORT` and require
    /// `Authorization: Bearer $SUANLI_REPLICA_KEY`.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_milli: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// Whole GPUs per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i64>,
    /// A share of one GPU per replica, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_models: Option<Vec<String>>,
    /// The replicas' class (default `on-demand`, which may preempt spot
    /// batch work under the `classes` queue policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Class>))]
    pub class: Option<String>,
    /// Callable by every tenant (default: only the owner).
    #[serde(default)]
    pub public: bool,
    /// Scaling and readiness settings.
    #[serde(default)]
    pub scaling: ScalingUpdate,
}

/// The settings `PATCH /v1/services/{name}` may change (absent: kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScalingUpdate {
    /// Replicas kept however idle (default 0: scale to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// Replicas never exceeded (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Requests in flight per replica (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_inflight: Option<f64>,
    /// A larger count is taken once wished this long (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_delay_s: Option<u64>,
    /// A smaller count is taken at the largest wish of this long (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_delay_s: Option<u64>,
    /// With min 0: idle this long → zero replicas (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<u64>,
    /// The readiness probe's path (default `/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// No probe before this many seconds after the start (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_delay_s: Option<u64>,
    /// A replica not ready this long after its start, or not answering for
    /// this long, is replaced (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout_s: Option<u64>,
}

/// A service's settings as stored: every default applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceSpec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub num_gpu: i64,
    /// Per device: 1000 for whole GPUs, less for a share.
    pub gpu_milli: i64,
    pub gpu_models: Vec<String>,
    pub class: Class,
    pub min: u32,
    pub max: u32,
    pub target_inflight: f64,
    pub up_delay_s: u64,
    pub down_delay_s: u64,
    pub idle_s: u64,
    pub ready_path: String,
    pub ready_delay_s: u64,
    pub start_timeout_s: u64,
}

/// A service as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Service {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    pub model: String,
    pub public: bool,
    pub created_ms: i64,
    pub spec: ServiceSpec,
    /// The replica count the autoscaler wants now (absent on a replica of
    /// the server that does not run the services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    #[serde(default)]
    pub replicas: Vec<ReplicaView>,
    /// Why the last replica that failed did (cleared once one is ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// One replica of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaView {
    /// The job that runs it.
    pub job: i64,
    /// `pending` (waiting for GPUs), `starting` (not yet answering its
    /// probe), `ready`, `evicted` (stopped answering) or `draining`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub outstanding: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceList {
    pub services: Vec<Service>,
}

/// `PUT /v1/tenants/{name}/limits`: the tenant's model API rate limits
/// (absent: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// The most a rate limit may be set to.
pub const MAX_RATE_LIMIT: u64 = 1_000_000_000_000;

/// What the router tells a replica's agent: the port it listens on
/// (`$PORT`) and the secret it requires (`$SUANLI_REPLICA_KEY`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaOrder {
    pub service: String,
    pub port: u16,
    pub key: String,
}

/// The port a replica of job `job`, attempt `run` listens on: fixed by
/// the server so the router knows it without asking (10000..=19999; the
/// agent refuses to start a replica whose port is taken, and the service
/// starts another replica, on another port).
pub fn replica_port(job: i64, run: i64) -> u16 {
    10_000 + ((job * 31 + run).rem_euclid(10_000)) as u16
}

/// Whether `m` is a valid model name.
pub fn valid_model(m: &str) -> bool {
    !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_graphic())
}

/// `GET /v1/token-usage?from_ms=&to_ms=`: tokens bought per tenant and
/// model over `[from_ms, to_ms)` (a tenant sees its own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TokenUsageQuery {
    #[serde(default)]
    pub from_ms: Option<i64>,
    #[serde(default)]
    pub to_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenUsage {
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: Vec<TokenUsageRow>,
}

/// One tenant's tokens of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenUsageRow {
    pub tenant: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}
