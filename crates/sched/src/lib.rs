//! # suanli-sched: where does a task go?
//!
//! Placement is a pure function of (request, cluster snapshot, tie-break order):
//! policies read the [`Ledger`](suanli_core::Ledger) and return a [`Placement`];
//! only the caller commits it to the ledger.
//!
//! * [`policy`]: the [`PlacementPolicy`] trait, the [`Scorer`] trait for
//!   filter-and-score policies, and [`ScoredPolicy`], which runs a scorer over
//!   the feasible nodes with per-node memoisation keyed on node versions.
//! * [`frag`]: the target workload ("typical pods") and the fragmentation
//!   measure F(n) of the FGD paper.
//! * [`learn`]: the target workload learned online from arrivals.
//! * [`policies`]: `random`, `dotprod`, `clustering`, `packing`, `bestfit`, `fgd`
//!   (the published baselines) and `fgd-sa` (Suanli's own default).
//! * [`registry`]: policy names → constructors.
//! * [`scheduler`]: the job [`Scheduler`] over time — queue policies (FIFO, SJF, SRTF,
//!   2D-LAS, strict classes, DRF with quotas, EASY backfill), gang placement and
//!   preemption. The simulator and the live server both drive it.

pub mod frag;
pub mod learn;
pub mod policies;
pub mod policy;
pub mod registry;
pub mod scheduler;

pub use frag::{Shape, TypicalPod, Workload, TYPICAL_THRESHOLD_PCT};
pub use learn::{LearnParams, Learner, Target};
pub use policy::{Placement, PlacementPolicy, ScoredPolicy, Scorer};
pub use registry::{make_policy, PolicyError, DEFAULT_POLICY, POLICY_NAMES};
pub use scheduler::{
    parse_queue_policy, Class, Decision, JobId, JobSpec, JobState, QueuePolicy, SchedOptions,
    Scheduler, TenantId, TenantQuota, Time, QUEUE_POLICY_NAMES,
};
