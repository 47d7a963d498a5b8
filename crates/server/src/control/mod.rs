//! The scheduling loop: the only writer of jobs, tasks and nodes.
//!
//! It is split the way the data flows:
//!
//! - [`Core`] (`core.rs`, with `jobs.rs`, `agents.rs`, `explain.rs`): the
//!   sans-IO heart. [`Core::step`] takes a batch of [`Command`]s and the
//!   time, applies them to the scheduler core
//!   ([`suanli_sched::scheduler::Scheduler`], the same one the simulator drives),
//!   runs one scheduling pass if anything changed (or a wake-up is due), and
//!   returns a [`Step`]: the store [`Write`](crate::store::Write)s of the whole
//!   batch and one [`Answer`] per command. No clock, no store, no channel:
//!   every rule (leases, gangs, retries, drains, preemption, which orders an
//!   agent may be given) is here and is unit-tested with virtual time.
//! - `recover.rs`: [`Snapshot`] reads what the core needs from the store at
//!   start; [`Core::recover`] rebuilds and checks the state from it.
//! - `driver.rs`: the thin async part. [`start`] recovers and spawns the
//!   loop; handlers talk to it through the [`Control`] handle. The driver
//!   drains up to [`MAX_BATCH`] requests, reads the clock, calls
//!   [`Core::step`], commits the writes in **one transaction**, and only then
//!   answers: a submission is acknowledged once durable, and an agent learns
//!   of an assignment only from committed rows. Batching many clients'
//!   commands into one transaction is what makes durable submission cheap
//!   (one fsync per batch, as in a database's group commit). A pass stops
//!   at [`LoopConfig::max_decisions_per_pass`]; the next batch's pass runs
//!   while the store commits the last one (two deep, never more).
//! - `metrics.rs`: the figures `/metrics` shows, published after each batch.
//! - `leader.rs`: [`keep_lease`]: a replica runs the loop only while it
//!   holds the store's leader lease, and every batch it commits is fenced by
//!   the lease's epoch; a replica that loses the lease detaches its loop
//!   and waits to take it again.
//! - `wakes.rs`: [`Wakes`], each node's order sequence, bumped once a batch
//!   that gave the node orders is durable; agents hold a wait call on it and
//!   heartbeat when it moves (work is pushed, not polled for).
//!
//! The in-memory state is a cache of the store. If a commit fails the loop
//! stops and the server exits (crash-only): on restart [`Core::recover`]
//! rebuilds it and checks it (no device milli allocated twice, every running
//! task on a known node) before scheduling anything.

mod agents;
mod core;
mod driver;
mod explain;
mod forward;
mod jobs;
mod leader;
mod metrics;
mod recover;
mod wakes;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use suanli_sched::scheduler::QueuePolicy;

pub use self::core::{Core, Step};
pub use driver::{start, Control, Driver, Gone, Timing};
pub use forward::{Forwarded, Forwarder};
pub use jobs::MAX_INTERRUPTIONS;
pub use leader::{keep_lease, replica_name, Opener};
pub use metrics::{Metrics, ModelLabel, StateLabel, LATENCY_BOUNDS};
pub use recover::Snapshot;
pub use wakes::{Wakes, MAX_WAITS_PER_NODE};

pub use suanli_api::{NodeView, PoolView, Report, TaskExit, TaskKey};

use crate::store::{Job, NewJob, Node, NodeState, Quota, Tenant};

/// Most commands applied (and committed) together.
pub const MAX_BATCH: usize = 4096;
/// Run time assumed for a job without `max_runtime_s` (SJF, SRTF and
/// backfill order by it): one week.
pub const DEFAULT_WORK_MS: u64 = 7 * 24 * 3600 * 1000;

/// A request refused for a reason the caller can fix (a 4xx).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    NotFound,
    /// The job is not pending or running in the loop: it does not exist (or
    /// is another tenant's), or it is over. The store says which.
    NotLive,
    Invalid {
        field: std::borrow::Cow<'static, str>,
        detail: String,
    },
    /// The job can never run on this pool as it is.
    Unsatisfiable(String),
    Conflict(String),
    /// Not a refusal: the submission repeats an earlier one of the tenant
    /// (same idempotency key, within [`IDEMPOTENCY_WINDOW_MS`]); this is
    /// the job that one made.
    Replayed(i64),
    /// The idempotency key made job N for another request.
    KeyReused(i64),
}

/// How long a submission's idempotency key is remembered: a day.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// A block of ids reserved in the store, `[next, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdBlock {
    pub next: i64,
    pub end: i64,
}

impl IdBlock {
    /// `n` ids from `first`.
    pub fn new(first: i64, n: i64) -> IdBlock {
        IdBlock {
            next: first,
            end: first.saturating_add(n),
        }
    }

    /// Every id from 1 (a core without a store: tests).
    pub fn unlimited() -> IdBlock {
        IdBlock::new(1, i64::MAX - 1)
    }

    pub fn left(&self) -> i64 {
        self.end - self.next
    }

    /// The next id, not taken yet.
    pub fn peek(&self) -> Option<i64> {
        (self.next < self.end).then_some(self.next)
    }

    pub fn take(&mut self) -> Option<i64> {
        let id = self.peek()?;
        self.next += 1;
        Some(id)
    }
}

/// Job ids the loop reserves at a time (a block left unused by a replica
/// that stops leading is a gap in the ids, nothing more).
pub const JOB_ID_BLOCK: i64 = 1024;
/// Node ids reserved at a time.
pub const NODE_ID_BLOCK: i64 = 16;

/// A validated node registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub addr: String,
    pub gpu_model: Option<String>,
    pub gpus: i64,
    pub gpu_memory_mib: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub labels: BTreeMap<String, String>,
}

/// One task of one attempt on a node, with its devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOrder {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    /// Device bitmask on the node.
    pub mask: i64,
}

/// A task an agent must start, with what only the loop knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOrder {
    pub task: TaskOrder,
    /// Address of the node running task 0 (`MASTER_ADDR`).
    pub master_addr: String,
}

/// What a node's agent must do after its report: start these tasks, stop
/// those. A device still held by a task being stopped is never handed to a
/// new task in the same answer (it waits until the agent stops reporting
/// the old one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOrders {
    pub node: i64,
    pub start: Vec<StartOrder>,
    pub kill: Vec<TaskOrder>,
}

/// One input of [`Core::step`]. Serialisable: a follower replica stores
/// the commands it takes in the inbox for the leader (`forward.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Submit {
        tenant_id: i64,
        tenant: String,
        job: NewJob,
    },
    Cancel {
        id: i64,
        tenant: Option<i64>,
    },
    Register(Registration),
    /// An agent's report. A `full` report (a heartbeat) lists every task
    /// the agent runs, so tasks missing from it are over; a partial one (a
    /// task-status call) only reports exits.
    Heartbeat {
        node: String,
        report: Report,
        full: bool,
    },
    /// Drain (or undrain) a node; answers its resulting state. `actor`:
    /// who asked, for the audit log.
    Drain {
        node: String,
        drain: bool,
        actor: String,
    },
    /// Remove a node that holds no live task from the pool, revoking its
    /// agent's credential.
    RemoveNode {
        node: String,
        actor: String,
    },
    /// A tenant's quotas or weight as now stored (the driver reads them).
    Tenant {
        tenant: Tenant,
        quotas: Vec<Quota>,
    },
    /// Why-pending reasons of these jobs (missing = not pending), worded
    /// for `viewer`: a tenant id, or `None` for the admin (a tenant is never
    /// told how many of other tenants' jobs are ahead).
    Explain {
        ids: Vec<i64>,
        viewer: Option<i64>,
    },
    Nodes,
    /// The pool as a tenant (`Some`) or the admin sees it.
    Pool {
        viewer: Option<i64>,
    },
}

/// One output of [`Core::step`], for the command at the same position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    Submitted(Result<Job, Refusal>),
    Cancelled(Result<(), Refusal>),
    Registered(Result<Node, Refusal>),
    Orders(Result<NodeOrders, Refusal>),
    /// A node's state after a drain or undrain.
    Drained(Result<NodeState, Refusal>),
    Removed(Result<(), Refusal>),
    Done,
    Reasons(HashMap<i64, String>),
    Nodes(Vec<NodeView>),
    Pool(PoolView),
}

/// Scheduler settings of the server.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub queue_policy: QueuePolicy,
    pub placement: String,
    pub checkpoint_ms: u64,
    /// See [`suanli_sched::scheduler::SchedOptions::group_nodes`]; false only for
    /// benchmark baselines.
    pub group_nodes: bool,
    /// A node whose agent has not reported for this long is down: its tasks
    /// are lost (requeued, or failed once the job's retries are used).
    pub lease_ms: u64,
    /// How often agents are asked to report.
    pub heartbeat_interval_s: u64,
    /// A pass stops after this many decisions; the loop commits them while
    /// it runs the next pass (see `driver.rs`), and arrivals are answered
    /// between passes.
    pub max_decisions_per_pass: usize,
    /// The placement policy targets the workload learned from submissions
    /// (with [`suanli_sched::LearnParams::default`], rebuilt from the last
    /// jobs after a restart); false: an empty target (benchmark baselines).
    pub learn_target: bool,
    /// The leader lease's time to live: a replica that stops renewing it
    /// (dead, stopped, cut off) is replaced this long after its last
    /// renewal; the holder renews it every third of it.
    pub leader_lease_ms: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            queue_policy: QueuePolicy::Classes,
            placement: suanli_sched::DEFAULT_POLICY.to_string(),
            checkpoint_ms: 0,
            group_nodes: true,
            lease_ms: 20_000,
            heartbeat_interval_s: 5,
            max_decisions_per_pass: 4096,
            learn_target: true,
            leader_lease_ms: 6_000,
        }
    }
}
