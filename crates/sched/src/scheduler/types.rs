//! The scheduler's public vocabulary: time, classes, job ids and specs,
//! queue policies, quotas, options and decisions.

use suanli_core::Request;

use crate::policy::Placement;

/// Simulated or wall time, in milliseconds.
pub type Time = u64;

/// Service class of a job; earlier variants have priority under the
/// `classes` policy.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Guaranteed,
    OnDemand,
    Spot,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Guaranteed, Class::OnDemand, Class::Spot];
    pub fn name(self) -> &'static str {
        match self {
            Class::Guaranteed => "guaranteed",
            Class::OnDemand => "on-demand",
            Class::Spot => "spot",
        }
    }
    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u16);

/// Handle of a job inside one [`Scheduler`](super::Scheduler). Handles of finished jobs are reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u32);

/// What a job asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub tenant: TenantId,
    pub class: Class,
    /// Gang size: the job runs `tasks` copies of `req`, all or none.
    pub tasks: u32,
    /// One task's request.
    pub req: Request,
    pub submit: Time,
    /// Run time the job needs (the oracle duration in simulation; SJF and
    /// SRTF order by it).
    pub work: Time,
    /// Run-time estimate (EASY backfill); `None` means `work`.
    pub estimate: Option<Time>,
}

impl JobSpec {
    /// GPU milli of the whole gang.
    pub fn gpu_milli(&self) -> u64 {
        self.tasks as u64 * self.req.total_gpu_milli()
    }
    pub fn estimate(&self) -> Time {
        self.estimate.unwrap_or(self.work)
    }
}

/// How the queue is ordered and who may preempt whom.
#[derive(Clone, Debug, PartialEq)]
pub enum QueuePolicy {
    /// First come, first served; the head of the queue blocks the rest.
    Fifo,
    /// Shortest job first by (oracle) work; work-conserving, no preemption.
    Sjf,
    /// Shortest remaining time first; a waiting job preempts running jobs with
    /// more remaining work.
    Srtf,
    /// Tiresias-style discretised two-dimensional least-attained-service:
    /// queue level by attained GPU-seconds (thresholds ascending), FIFO within
    /// a level, higher levels preempted by waiting lower-level jobs. A
    /// preempted job that has waited `starve_factor` times its last run is
    /// promoted back to the first level (its attained service counts from
    /// zero again), so long jobs do not starve; 0 turns this off.
    Las {
        thresholds_gpu_s: Vec<u64>,
        starve_factor: u64,
    },
    /// Strict classes guaranteed > on-demand > spot, FIFO within a class;
    /// waiting guaranteed or on-demand work preempts spot work.
    Classes,
    /// Dominant-resource fairness across tenants (GPUs per model), FIFO
    /// within a tenant; a tenant below its guaranteed quota reclaims GPUs
    /// lent to tenants above theirs by preempting their newest jobs.
    Drf,
    /// FIFO with EASY backfill: the blocked head gets a reservation computed
    /// from running jobs' estimates; later jobs start now if they do not
    /// delay it.
    Backfill,
}

/// Queue-policy names accepted by [`parse_queue_policy`].
pub const QUEUE_POLICY_NAMES: &[&str] =
    &["fifo", "sjf", "srtf", "las", "classes", "drf", "backfill"];

/// Default 2D-LAS thresholds: 1 and 10 GPU-hours of attained service.
pub const DEFAULT_LAS_THRESHOLDS_GPU_S: [u64; 2] = [3_600, 36_000];
/// Default 2D-LAS starvation limit: promote after waiting 10x the last run.
pub const DEFAULT_LAS_STARVE_FACTOR: u64 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown queue policy {name:?}; valid: {}", QUEUE_POLICY_NAMES.join(", "))]
pub struct QueuePolicyError {
    pub name: String,
}

pub fn parse_queue_policy(name: &str) -> Result<QueuePolicy, QueuePolicyError> {
    Ok(match name {
        "fifo" => QueuePolicy::Fifo,
        "sjf" => QueuePolicy::Sjf,
        "srtf" => QueuePolicy::Srtf,
        "las" => QueuePolicy::Las {
            thresholds_gpu_s: DEFAULT_LAS_THRESHOLDS_GPU_S.to_vec(),
            starve_factor: DEFAULT_LAS_STARVE_FACTOR,
        },
        "classes" => QueuePolicy::Classes,
        "drf" => QueuePolicy::Drf,
        "backfill" => QueuePolicy::Backfill,
        _ => {
            return Err(QueuePolicyError {
                name: name.to_string(),
            })
        }
    })
}

/// A tenant's quotas, in GPU milli per model (indexed by `ModelId`).
#[derive(Clone, Debug, PartialEq)]
pub struct TenantQuota {
    /// Fair-share weight (DRF divides the dominant share by it); > 0.
    pub weight: f64,
    /// GPU milli the tenant is entitled to take back by preemption.
    pub guaranteed: Vec<u64>,
    /// GPU milli the tenant may never exceed (`u64::MAX` = unlimited).
    pub max: Vec<u64>,
}

impl TenantQuota {
    pub fn unlimited(models: usize) -> TenantQuota {
        TenantQuota {
            weight: 1.0,
            guaranteed: vec![0; models],
            max: vec![u64::MAX; models],
        }
    }
}

/// Options of a [`Scheduler`](super::Scheduler).
#[derive(Clone, Debug, PartialEq)]
pub struct SchedOptions {
    /// Jobs checkpoint every this much run time; a preempted job resumes from
    /// its last checkpoint (0 = suspend and resume exactly, nothing lost).
    pub checkpoint_ms: Time,
    /// Failed preemption searches allowed per pass before the pass stops
    /// looking for victims (later jobs try again at the next pass). Bounds a
    /// pass's cost on a long queue, like kube-scheduler preempting for one
    /// pod per cycle.
    pub preempt_attempts_per_pass: u32,
    /// After a preemption search fails for a job shape, jobs of that shape and
    /// no higher priority skip the search for this long (like kube-scheduler's
    /// back-off of unschedulable pods).
    pub preempt_backoff_ms: Time,
    /// Place single tasks by looking at one node per group of identical
    /// nodes (same decisions as a full scan for filter-and-score policies;
    /// false = the benchmark's baseline, every node with free GPUs visited).
    pub group_nodes: bool,
    /// The ordered passes walk the queue shape by shape, skipping a shape
    /// at its first failure (same decisions as visiting every job; false =
    /// the benchmark's baseline, every pending job visited each pass).
    pub walk_by_shape: bool,
    /// A pass stops after this many decisions and says so
    /// ([`Scheduler::pass_cut_short`](super::Scheduler::pass_cut_short)); the
    /// caller runs another pass, which goes on from the head of the queue.
    /// Lets a live loop commit the first decisions while it computes the
    /// next ones, and answer arrivals between (as Slurm's
    /// `sched_max_job_start`). Unbounded by default.
    pub max_decisions_per_pass: usize,
    /// The placement policy's target workload: learned from the jobs
    /// submitted (the default; see [`crate::learn`]) or the one it was
    /// built with.
    pub target: crate::learn::Target,
}

impl Default for SchedOptions {
    fn default() -> Self {
        SchedOptions {
            checkpoint_ms: 0,
            preempt_attempts_per_pass: 8,
            preempt_backoff_ms: 30_000,
            group_nodes: true,
            walk_by_shape: true,
            max_decisions_per_pass: usize::MAX,
            target: crate::learn::Target::default(),
        }
    }
}

/// One decision of a scheduling pass, in the order it must be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The job's tasks start now on these devices (one placement per task).
    Start {
        job: JobId,
        placements: Vec<Placement>,
    },
    /// The job stops now and goes back to the queue; `lost_ms` of its run
    /// time since the last checkpoint will be redone.
    Preempt { job: JobId, lost_ms: Time },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Done,
}
