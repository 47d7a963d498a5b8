//! # suanli-api: the protocol
//!
//! Every type that crosses a process boundary — between the server and its
//! clients (the CLI, scripts), and between the server and its node agents —
//! lives here, once. The server serialises them, the agent and the CLI
//! deserialise them; nobody indexes JSON by string. A reader learns the
//! protocol from this crate alone.
//!
//! - [`states`]: job, task and node states, job classes, event kinds and
//!   token scopes as enums (with their database encodings under the `sqlx`
//!   feature).
//! - [`jobs`], [`tenants`], [`nodes`]: the tenant and admin API (bodies,
//!   answers and query strings; clients encode queries with
//!   `serde_urlencoded`, the server decodes them with axum's `Query`).
//! - [`agents`]: the agent protocol (registration, heartbeat report,
//!   orders, log chunks), versioned by [`PROTOCOL`].
//! - [`problem`]: the RFC 9457 problem document every error is.
//! - [`bills`]: invoices and the operator's economics report.
//! - [`services`]: model services (replicas, scaling, rate limits).
//!
//! **Invariant:** no IO here, and no dependency beyond serde (utoipa and
//! sqlx only behind features), so the agent links it cheaply.

pub mod agents;
pub mod bills;
pub mod jobs;
pub mod nodes;
pub mod problem;
pub mod services;
pub mod states;
pub mod tenants;
pub mod token;

pub use agents::*;
pub use bills::*;
pub use jobs::*;
pub use nodes::*;
pub use problem::*;
pub use services::*;
pub use states::*;
pub use tenants::*;

/// The agent protocol's version. An agent sends it in the
/// [`PROTOCOL_HEADER`] of every call and the server answers it at
/// registration; a mismatch is refused with the problem code
/// `protocol_mismatch`, naming both versions, so a rolling upgrade fails
/// clearly instead of strangely. Bump it with any incompatible change to
/// [`agents`]. 2: node-bound credentials (a join token only registers, with
/// the hash of the credential the agent generated for its node, which
/// every other call needs).
pub const PROTOCOL: u32 = 2;

/// The HTTP header an agent sends its [`PROTOCOL`] version in.
pub const PROTOCOL_HEADER: &str = "suanli-protocol";
