//! The job scheduler: queue order, admission (quotas), gang placement and
//! preemption, over one [`Ledger`]. Pure and deterministic: time is passed in
//! by the caller (the simulator's virtual clock or the server's wall clock),
//! and every decision depends only on the calls made so far.
//!
//! The caller drives it with four calls: [`Scheduler::submit`] when a job
//! arrives, [`Scheduler::complete`] when a running job's work is done,
//! [`Scheduler::schedule`] after a batch of those (it returns the starts and
//! preemptions decided), and [`Scheduler::next_wakeup`] to learn when the
//! scheduler wants to run again without any arrival or completion (2D-LAS
//! demotions).
//!
//! **Invariants**
//! * Every GPU milli is held by at most one task: all allocation goes through
//!   the [`Ledger`], which refuses anything else.
//! * A job's tasks start together (all-or-nothing) and stop together.
//! * A tenant never holds more GPU milli of a model than its `max` quota.
//! * `free_milli[m]` equals the free GPU milli of model `m` in the ledger.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use suanli_core::{
    AllocId, GpuMask, Ledger, ModelId, ModelSet, NodeId, NodeSpec, NodeState, Request,
    MAX_GPUS_PER_NODE, MILLI_PER_GPU,
};

/// Nodes with equal shape class and equal free resources score the same for
/// every filter-and-score policy, so a single task needs to look at one node
/// of each such group: the lowest id, which is also the one a full scan in
/// id order would pick on a tie.
type StateKey = (u32, u64, u64, [u16; MAX_GPUS_PER_NODE]);

use crate::policy::{Placement, PlacementPolicy};

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

/// Handle of a job inside one [`Scheduler`]. Handles of finished jobs are reused.
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

/// Options of a [`Scheduler`].
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
}

impl Default for SchedOptions {
    fn default() -> Self {
        SchedOptions {
            checkpoint_ms: 0,
            preempt_attempts_per_pass: 8,
            preempt_backoff_ms: 30_000,
            group_nodes: true,
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

/// Pending-queue key: (primary, secondary, job); smallest first.
type Key = (u64, u64, JobId);

#[derive(Clone, Debug)]
struct Entry {
    spec: JobSpec,
    state: JobState,
    allocs: Vec<AllocId>,
    placements: Vec<Placement>,
    /// GPU model the job runs on (for quota usage); `None` for CPU-only work.
    model: Option<ModelId>,
    /// Start of the current run.
    started: Time,
    /// Useful work done before the current run (ms).
    progress: Time,
    /// Total run time, including work later lost (ms).
    attained: Time,
    key: Key,
    preemptions: u32,
    /// Pending LAS demotion wake-up of this running job.
    wake: Option<Time>,
    /// LAS level while running.
    level: usize,
    /// Attained service when last promoted (LAS counts from here).
    las_offset: Time,
    /// Pending LAS promotion time of this waiting job.
    promote_at: Option<Time>,
}

#[derive(Clone, Debug)]
struct Tenant {
    quota: TenantQuota,
    used: Vec<u64>,
    /// FIFO of pending jobs (DRF only).
    pending: BTreeSet<(Time, JobId)>,
    limited: bool,
}

/// What a failed placement attempt looked like, for the per-pass memo:
/// a job identical in these respects fails too while nothing was released.
type MemoKey = (Request, u32, u16);

/// A small set of memo keys (a pass sees few distinct job shapes; a linear
/// scan beats hashing them).
#[derive(Default)]
struct Memo(Vec<MemoKey>);

impl Memo {
    fn contains(&self, k: &MemoKey) -> bool {
        self.0.iter().any(|x| x == k)
    }
    fn insert(&mut self, k: MemoKey) {
        if !self.contains(&k) {
            self.0.push(k);
        }
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Walks the pending queue in key order while the pass mutates it, fetching
/// keys in chunks (jobs started meanwhile are skipped; jobs re-queued behind
/// the cursor wait for the next pass).
struct Cursor {
    last: Option<Key>,
    buf: Vec<Key>,
    at: usize,
}

impl Cursor {
    fn new() -> Cursor {
        Cursor {
            last: None,
            buf: Vec::new(),
            at: 0,
        }
    }
    /// The next key after the cursor for which `still` holds (the job is
    /// still pending under that key).
    fn next(&mut self, pending: &BTreeSet<Key>, still: impl Fn(Key) -> bool) -> Option<Key> {
        loop {
            if self.at == self.buf.len() {
                self.buf.clear();
                self.at = 0;
                match self.last {
                    None => self.buf.extend(pending.iter().take(64).copied()),
                    Some(c) => self.buf.extend(
                        pending
                            .range((Bound::Excluded(c), Bound::Unbounded))
                            .take(64)
                            .copied(),
                    ),
                }
                if self.buf.is_empty() {
                    return None;
                }
            }
            let k = self.buf[self.at];
            self.at += 1;
            self.last = Some(k);
            if still(k) {
                return Some(k);
            }
        }
    }
}

/// The job scheduler. See the module documentation.
pub struct Scheduler {
    ledger: Ledger,
    racks: Vec<u32>,
    placement: Box<dyn PlacementPolicy>,
    policy: QueuePolicy,
    opts: SchedOptions,
    n_models: usize,
    capacity_milli: Vec<u64>,
    free_milli: Vec<u64>,
    /// Nodes in use with at least one GPU milli free, by id.
    open: BTreeSet<NodeId>,
    /// Completely idle GPU nodes, per node shape class (same CPU, memory,
    /// GPU count and model). Idle nodes of one class are interchangeable for
    /// a single task, so placement looks at the lowest-id one of each class
    /// only — what keeps a mostly idle 10,000-GPU pool cheap to schedule.
    idle: Vec<BTreeSet<NodeId>>,
    shape_class: Vec<u32>,
    /// Nodes with free GPU milli grouped by [`StateKey`], and the lowest id
    /// of each group (the candidates for a single task).
    groups: HashMap<StateKey, BTreeSet<NodeId>>,
    node_key: Vec<Option<StateKey>>,
    reps: BTreeSet<NodeId>,
    /// Per model: how many nodes have c fully free GPUs (c = 0..=16), and
    /// each node's c — an O(1) test that whole-GPU tasks cannot fit.
    full_hist: Vec<[u32; MAX_GPUS_PER_NODE + 1]>,
    node_full: Vec<u8>,
    all_nodes: Vec<NodeId>,
    jobs: Vec<Entry>,
    free_slots: Vec<u32>,
    pending: BTreeSet<Key>,
    pending_count: usize,
    pending_cpu_only: usize,
    running: BTreeSet<JobId>,
    tenants: Vec<Tenant>,
    seq: u64,
    /// (time a running job crosses its next LAS threshold, job).
    las_wakeups: BTreeSet<(Time, JobId)>,
    /// (time a preempted job is promoted back to LAS level 0, job).
    las_promotions: BTreeSet<(Time, JobId)>,
    decisions: Vec<Decision>,
    failed: Memo,
    failed_preempt: Memo,
    order_buf: Vec<NodeId>,
    /// Running jobs with a task on each node (for node-local preemption).
    node_jobs: Vec<Vec<JobId>>,
    /// During a DRF reclaim: the models the reclaiming job is within guarantee on.
    reclaim_models: ModelSet,
    /// Quick "could anyone be preempted?" checks: running jobs by predicted
    /// end (SRTF), by LAS level, and running spot jobs.
    ends: BTreeSet<(Time, JobId)>,
    /// Running jobs by estimated end (EASY backfill reservations).
    est_ends: BTreeSet<(Time, JobId)>,
    running_by_level: Vec<usize>,
    running_spot: usize,
    /// Failed preemption searches in the current pass.
    preempt_failures: u32,
    /// (shape, priority key of the job that failed, retry time).
    preempt_backoff: Vec<(MemoKey, u64, Time)>,
    /// Answers of `admissible` by (request, tasks, tenant): they depend only
    /// on the fixed node inventory and quotas.
    admit_cache: HashMap<MemoKey, Result<(), String>>,
}

impl Scheduler {
    /// A scheduler over `ledger` (which must have no allocations). `racks`
    /// gives each node's rack (gangs prefer one rack); `quotas` is indexed by
    /// `TenantId` (tenants beyond it are unlimited); `n_models` is the size
    /// of the model registry the requests use.
    pub fn new(
        ledger: Ledger,
        racks: Vec<u32>,
        placement: Box<dyn PlacementPolicy>,
        policy: QueuePolicy,
        quotas: Vec<TenantQuota>,
        n_models: usize,
        opts: SchedOptions,
    ) -> Scheduler {
        assert_eq!(racks.len(), ledger.len(), "one rack per node");
        assert_eq!(ledger.live_allocations(), 0, "ledger must start empty");
        let n_models = n_models.max(1);
        let mut capacity_milli = vec![0u64; n_models];
        let open = BTreeSet::new();
        let mut shapes: Vec<(u64, u64, u8, Option<ModelId>)> = Vec::new();
        let mut shape_class = Vec::with_capacity(ledger.len());
        let mut idle: Vec<BTreeSet<NodeId>> = Vec::new();
        for (i, s) in ledger.specs().iter().enumerate() {
            let shape = (s.cpu_milli, s.memory_mib, s.gpus, s.model);
            let c = match shapes.iter().position(|x| *x == shape) {
                Some(c) => c,
                None => {
                    shapes.push(shape);
                    idle.push(BTreeSet::new());
                    shapes.len() - 1
                }
            };
            shape_class.push(c as u32);
            if let Some(m) = s.model {
                capacity_milli[m.0 as usize] += s.gpus as u64 * MILLI_PER_GPU as u64;
                if s.gpus > 0 {
                    idle[c].insert(i as NodeId);
                }
            }
        }
        let all_nodes = (0..ledger.len() as NodeId).collect();
        let node_jobs = vec![Vec::new(); ledger.len()];
        let n_nodes = ledger.len();
        let mut sched = Scheduler {
            free_milli: capacity_milli.clone(),
            capacity_milli,
            ledger,
            racks,
            placement,
            policy,
            opts,
            n_models,
            open,
            idle,
            shape_class,
            groups: HashMap::new(),
            node_key: vec![None; n_nodes],
            reps: BTreeSet::new(),
            full_hist: vec![[0; MAX_GPUS_PER_NODE + 1]; n_models],
            node_full: vec![0; n_nodes],
            all_nodes,
            jobs: Vec::new(),
            free_slots: Vec::new(),
            pending: BTreeSet::new(),
            pending_count: 0,
            pending_cpu_only: 0,
            running: BTreeSet::new(),
            tenants: Vec::new(),
            seq: 0,
            las_wakeups: BTreeSet::new(),
            las_promotions: BTreeSet::new(),
            decisions: Vec::new(),
            failed: Memo::default(),
            failed_preempt: Memo::default(),
            order_buf: Vec::new(),
            node_jobs,
            reclaim_models: ModelSet(0),
            ends: BTreeSet::new(),
            est_ends: BTreeSet::new(),
            running_by_level: Vec::new(),
            running_spot: 0,
            admit_cache: HashMap::new(),
            preempt_failures: 0,
            preempt_backoff: Vec::new(),
        };
        for q in quotas {
            sched.push_tenant(q);
        }
        for n in 0..sched.ledger.len() {
            let s = &sched.ledger.specs()[n];
            if let Some(m) = s.model {
                sched.full_hist[m.0 as usize][0] += 1;
            }
            sched.note_node(n as NodeId);
        }
        sched
    }

    fn push_tenant(&mut self, mut quota: TenantQuota) {
        quota.guaranteed.resize(self.n_models, 0);
        quota.max.resize(self.n_models, u64::MAX);
        let limited = quota.max.iter().any(|&m| m != u64::MAX);
        self.tenants.push(Tenant {
            used: vec![0; self.n_models],
            pending: BTreeSet::new(),
            limited,
            quota,
        });
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }
    pub fn pending_len(&self) -> usize {
        self.pending_count
    }
    pub fn running_len(&self) -> usize {
        self.running.len()
    }
    /// GPU milli allocated now, across all models.
    pub fn allocated_gpu_milli(&self) -> u64 {
        self.capacity_milli.iter().sum::<u64>() - self.free_milli.iter().sum::<u64>()
    }
    pub fn capacity_gpu_milli(&self) -> u64 {
        self.capacity_milli.iter().sum()
    }
    /// GPU milli tenant `t` holds of model `m`.
    pub fn tenant_used(&self, t: TenantId, m: ModelId) -> u64 {
        self.tenants
            .get(t.0 as usize)
            .map_or(0, |x| x.used[m.0 as usize])
    }
    pub fn spec(&self, j: JobId) -> &JobSpec {
        &self.jobs[j.0 as usize].spec
    }
    pub fn state(&self, j: JobId) -> JobState {
        self.jobs[j.0 as usize].state
    }
    pub fn placements(&self, j: JobId) -> &[Placement] {
        &self.jobs[j.0 as usize].placements
    }
    pub fn preemptions(&self, j: JobId) -> u32 {
        self.jobs[j.0 as usize].preemptions
    }
    /// Work still to do for a job (for a running one, as of `now`).
    pub fn remaining(&self, j: JobId, now: Time) -> Time {
        let e = &self.jobs[j.0 as usize];
        let done = e.progress
            + if e.state == JobState::Running {
                now.saturating_sub(e.started)
            } else {
                0
            };
        e.spec.work.saturating_sub(done)
    }

    /// Can this job ever run on this cluster (some node of an allowed model
    /// holds one task, enough such GPUs exist for the gang, and the quota
    /// maximum leaves room)? A job that cannot is best rejected at submission.
    pub fn admissible(&mut self, spec: &JobSpec) -> Result<(), String> {
        let key = (spec.req, spec.tasks, spec.tenant.0);
        if let Some(r) = self.admit_cache.get(&key) {
            return r.clone();
        }
        let r = self.admissible_uncached(spec);
        self.admit_cache.insert(key, r.clone());
        r
    }

    fn admissible_uncached(&self, spec: &JobSpec) -> Result<(), String> {
        let req = &spec.req;
        let specs = self.ledger.specs();
        let fits_empty = |s: &NodeSpec| NodeState::empty(s).fits(s, req);
        if !specs.iter().any(fits_empty) {
            return Err(format!("no node can hold one task ({req})"));
        }
        if req.num_gpu > 0 {
            let mut best = 0u64;
            for m in 0..self.n_models {
                let id = ModelId(m as u8);
                if !req.models.accepts(Some(id)) {
                    continue;
                }
                let mut slots = 0u64;
                for s in specs.iter().filter(|s| s.model == Some(id)) {
                    let st = NodeState::empty(s);
                    slots += fit_count(s, &st, req, spec.tasks) as u64;
                }
                if slots < spec.tasks as u64 {
                    continue;
                }
                let max = self
                    .tenants
                    .get(spec.tenant.0 as usize)
                    .map_or(u64::MAX, |t| t.quota.max[m]);
                if spec.gpu_milli() <= max {
                    best = best.max(slots);
                }
            }
            if best == 0 {
                return Err(format!(
                    "{} tasks of {req}: no GPU model has room for the gang within the tenant's maximum quota",
                    spec.tasks
                ));
            }
        }
        Ok(())
    }

    /// Add a job to the queue. It must be [`admissible`](Self::admissible).
    pub fn submit(&mut self, spec: JobSpec) -> JobId {
        while self.tenants.len() <= spec.tenant.0 as usize {
            self.push_tenant(TenantQuota::unlimited(self.n_models));
        }
        let entry = Entry {
            spec,
            state: JobState::Pending,
            allocs: Vec::new(),
            placements: Vec::new(),
            model: None,
            started: 0,
            progress: 0,
            attained: 0,
            key: (0, 0, JobId(0)),
            preemptions: 0,
            wake: None,
            level: 0,
            las_offset: 0,
            promote_at: None,
        };
        let id = match self.free_slots.pop() {
            Some(s) => {
                self.jobs[s as usize] = entry;
                JobId(s)
            }
            None => {
                self.jobs.push(entry);
                JobId(self.jobs.len() as u32 - 1)
            }
        };
        self.enqueue(id);
        id
    }

    /// A running job finished its work at `now`: free its resources.
    pub fn complete(&mut self, j: JobId, now: Time) {
        let e = &self.jobs[j.0 as usize];
        assert_eq!(
            e.state,
            JobState::Running,
            "complete() of a job not running"
        );
        let run = now.saturating_sub(e.started);
        self.disarm_las_wakeup(j);
        self.note_stopped(j);
        self.release_job(j);
        let e = &mut self.jobs[j.0 as usize];
        e.attained += run;
        e.progress += run;
        e.state = JobState::Done;
        e.allocs = Vec::new();
        self.running.remove(&j);
        self.free_slots.push(j.0);
    }

    /// Remove a pending job from the queue (cancellation) or stop a running
    /// one; the handle is freed.
    pub fn cancel(&mut self, j: JobId, now: Time) {
        match self.jobs[j.0 as usize].state {
            JobState::Pending => {
                if let Some(t) = self.jobs[j.0 as usize].promote_at.take() {
                    self.las_promotions.remove(&(t, j));
                }
                self.dequeue(j);
                self.jobs[j.0 as usize].state = JobState::Done;
                self.free_slots.push(j.0);
            }
            JobState::Running => self.complete(j, now),
            JobState::Done => {}
        }
    }

    /// When the scheduler next wants a pass without any arrival or completion.
    pub fn next_wakeup(&self) -> Option<Time> {
        let a = self.las_wakeups.first().map(|w| w.0);
        let b = self.las_promotions.first().map(|w| w.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Run one scheduling pass at `now`; its decisions, already applied to the
    /// ledger, are then in [`decisions`](Self::decisions).
    pub fn schedule(&mut self, now: Time) {
        self.decisions.clear();
        self.failed.clear();
        self.failed_preempt.clear();
        self.preempt_failures = 0;
        while let Some(&(t, j)) = self.las_promotions.first() {
            if t > now {
                break;
            }
            self.las_promotions.remove(&(t, j));
            self.dequeue(j);
            let e = &mut self.jobs[j.0 as usize];
            e.promote_at = None;
            e.las_offset = e.attained;
            self.enqueue(j);
        }
        while let Some(&(t, j)) = self.las_wakeups.first() {
            if t > now {
                break;
            }
            self.las_wakeups.remove(&(t, j));
            let e = &self.jobs[j.0 as usize];
            let level = self.las_level(e, e.attained + now.saturating_sub(e.started)) as usize;
            let old = e.level;
            if self.running_by_level.len() <= level {
                self.running_by_level.resize(level + 1, 0);
            }
            self.running_by_level[old] -= 1;
            self.running_by_level[level] += 1;
            let e = &mut self.jobs[j.0 as usize];
            e.level = level;
            e.wake = None;
            self.arm_las_wakeup(j, now);
        }
        match self.policy {
            QueuePolicy::Drf => self.pass_drf(now),
            QueuePolicy::Backfill => self.pass_backfill(now),
            _ => self.pass_ordered(now),
        }
    }

    /// The decisions of the last [`schedule`](Self::schedule) pass, in order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    // ---- queue bookkeeping ------------------------------------------------

    fn las_level(&self, e: &Entry, attained: Time) -> u64 {
        let QueuePolicy::Las {
            thresholds_gpu_s, ..
        } = &self.policy
        else {
            return 0;
        };
        let attained = attained.saturating_sub(e.las_offset);
        let gpu_ms = attained as u128 * e.spec.gpu_milli() as u128 / MILLI_PER_GPU as u128;
        thresholds_gpu_s
            .iter()
            .filter(|&&t| gpu_ms >= t as u128 * 1000)
            .count() as u64
    }

    fn enqueue(&mut self, j: JobId) {
        self.seq += 1;
        let e = &self.jobs[j.0 as usize];
        let s = &e.spec;
        let key = match &self.policy {
            QueuePolicy::Fifo | QueuePolicy::Backfill | QueuePolicy::Drf => (s.submit, self.seq, j),
            QueuePolicy::Sjf => (s.work, s.submit, j),
            QueuePolicy::Srtf => (s.work.saturating_sub(e.progress), s.submit, j),
            QueuePolicy::Las { .. } => (self.las_level(e, e.attained), s.submit, j),
            QueuePolicy::Classes => (s.class as u64, s.submit, j),
        };
        let cpu_only = s.req.num_gpu == 0;
        let tenant = s.tenant.0 as usize;
        if self.policy == QueuePolicy::Drf {
            self.tenants[tenant].pending.insert((key.0, j));
        } else {
            self.pending.insert(key);
        }
        let e = &mut self.jobs[j.0 as usize];
        e.key = key;
        e.state = JobState::Pending;
        self.pending_count += 1;
        self.pending_cpu_only += cpu_only as usize;
    }

    fn dequeue(&mut self, j: JobId) {
        let e = &self.jobs[j.0 as usize];
        if self.policy == QueuePolicy::Drf {
            let t = e.spec.tenant.0 as usize;
            self.tenants[t].pending.remove(&(e.key.0, j));
        } else {
            self.pending.remove(&e.key);
        }
        self.pending_count -= 1;
        self.pending_cpu_only -= (e.spec.req.num_gpu == 0) as usize;
    }

    fn arm_las_wakeup(&mut self, j: JobId, now: Time) {
        let QueuePolicy::Las {
            thresholds_gpu_s, ..
        } = &self.policy
        else {
            return;
        };
        let e = &self.jobs[j.0 as usize];
        if e.state != JobState::Running || e.spec.gpu_milli() == 0 {
            return;
        }
        let base = e.attained.saturating_sub(e.las_offset);
        let attained_now = base + now.saturating_sub(e.started);
        let gpu_milli = e.spec.gpu_milli() as u128;
        let gpu_ms = attained_now as u128 * gpu_milli / MILLI_PER_GPU as u128;
        if let Some(&t) = thresholds_gpu_s
            .iter()
            .find(|&&t| gpu_ms < t as u128 * 1000)
        {
            // run time needed to reach t GPU-seconds, rounded up
            let need = (t as u128 * 1000 * MILLI_PER_GPU as u128).div_ceil(gpu_milli);
            let at = (e.started + (need as u64).saturating_sub(base)).max(now + 1);
            self.las_wakeups.insert((at, j));
            self.jobs[j.0 as usize].wake = Some(at);
        }
    }

    fn disarm_las_wakeup(&mut self, j: JobId) {
        if let Some(t) = self.jobs[j.0 as usize].wake.take() {
            self.las_wakeups.remove(&(t, j));
        }
    }

    // ---- resources ---------------------------------------------------------

    /// The GPU models a job may start on now given its tenant's maximum quota.
    fn allowed_models(&self, s: &JobSpec) -> Option<ModelSet> {
        let t = &self.tenants[s.tenant.0 as usize];
        if s.req.num_gpu == 0 || !t.limited {
            return Some(s.req.models);
        }
        let need = s.gpu_milli();
        let mut set = ModelSet(0);
        for m in 0..self.n_models {
            let id = ModelId(m as u8);
            if s.req.models.accepts(Some(id))
                && self.capacity_milli[m] > 0
                && t.used[m].saturating_add(need) <= t.quota.max[m]
            {
                set = set.with(id);
            }
        }
        (set.0 != 0).then_some(set)
    }

    fn free_in(&self, models: ModelSet) -> u64 {
        if models.is_any() {
            return self.free_milli.iter().sum();
        }
        (0..self.n_models)
            .filter(|&m| models.0 & (1 << m) != 0)
            .map(|m| self.free_milli[m])
            .sum()
    }

    fn note_node(&mut self, node: NodeId) {
        let (spec, st) = self.ledger.node(node).expect("node exists");
        if spec.gpus == 0 {
            return;
        }
        // Whole-GPU histogram.
        if let Some(m) = spec.model {
            let full = st.fully_free() as u8;
            let h = &mut self.full_hist[m.0 as usize];
            h[self.node_full[node as usize] as usize] -= 1;
            h[full as usize] += 1;
            self.node_full[node as usize] = full;
        }
        // State groups.
        let key = (st.total_gpu_left() > 0).then(|| {
            let mut left = [0u16; MAX_GPUS_PER_NODE];
            left[..st.gpu_left().len()].copy_from_slice(st.gpu_left());
            (
                self.shape_class[node as usize],
                st.cpu_free,
                st.mem_free,
                left,
            )
        });
        if self.node_key[node as usize] != key {
            if let Some(old) = self.node_key[node as usize].take() {
                let g = self.groups.get_mut(&old).expect("group of node");
                let was_rep = g.first() == Some(&node);
                g.remove(&node);
                if was_rep {
                    self.reps.remove(&node);
                    if let Some(&f) = g.first() {
                        self.reps.insert(f);
                    }
                }
                if g.is_empty() {
                    self.groups.remove(&old);
                }
            }
            if let Some(k) = key {
                let g = self.groups.entry(k).or_default();
                let before = g.first().copied();
                g.insert(node);
                if before != g.first().copied() {
                    if let Some(b) = before {
                        self.reps.remove(&b);
                    }
                    self.reps.insert(node);
                }
                self.node_key[node as usize] = Some(k);
            }
        }
        let is_idle = st.cpu_free == spec.cpu_milli
            && st.mem_free == spec.memory_mib
            && st.total_gpu_left() == spec.gpus as u32 * MILLI_PER_GPU as u32;
        let c = self.shape_class[node as usize] as usize;
        if is_idle {
            self.open.remove(&node);
            self.idle[c].insert(node);
        } else {
            self.idle[c].remove(&node);
            if st.total_gpu_left() > 0 {
                self.open.insert(node);
            } else {
                self.open.remove(&node);
            }
        }
    }

    fn alloc_one(&mut self, req: &Request, p: Placement) -> AllocId {
        let id = self
            .ledger
            .allocate(req, p.node, p.gpus)
            .expect("placement policy returned an infeasible placement");
        if let Some(m) = self.ledger.specs()[p.node as usize].model {
            self.free_milli[m.0 as usize] -= req.total_gpu_milli();
        }
        self.note_node(p.node);
        id
    }

    fn free_one(&mut self, id: AllocId) {
        let a = self.ledger.release(id).expect("live allocation");
        if let Some(m) = self.ledger.specs()[a.node as usize].model {
            self.free_milli[m.0 as usize] += a.gpus.count() as u64 * a.gpu_milli as u64;
        }
        self.note_node(a.node);
    }

    fn index_job(&mut self, j: JobId) {
        for p in &self.jobs[j.0 as usize].placements {
            let l = &mut self.node_jobs[p.node as usize];
            if !l.contains(&j) {
                l.push(j);
            }
        }
    }

    fn unindex_job(&mut self, j: JobId) {
        for p in &self.jobs[j.0 as usize].placements {
            self.node_jobs[p.node as usize].retain(|&x| x != j);
        }
    }

    /// Release a running job's allocations and quota usage (state unchanged).
    fn release_job(&mut self, j: JobId) {
        self.unindex_job(j);
        let allocs = std::mem::take(&mut self.jobs[j.0 as usize].allocs);
        for a in &allocs {
            self.free_one(*a);
        }
        let e = &self.jobs[j.0 as usize];
        if let Some(m) = e.model {
            let need = e.spec.gpu_milli();
            self.tenants[e.spec.tenant.0 as usize].used[m.0 as usize] -= need;
        }
        self.jobs[j.0 as usize].allocs = allocs;
    }

    /// Re-take exactly the placements a job held (after a tentative release);
    /// all-or-nothing.
    fn retake_job(&mut self, j: JobId) -> bool {
        let e = &self.jobs[j.0 as usize];
        let req = e.spec.req;
        let placements = e.placements.clone();
        let mut got = Vec::with_capacity(placements.len());
        for p in &placements {
            match self.ledger.allocate(&req, p.node, p.gpus) {
                Ok(id) => {
                    if let Some(m) = self.ledger.specs()[p.node as usize].model {
                        self.free_milli[m.0 as usize] -= req.total_gpu_milli();
                    }
                    self.note_node(p.node);
                    got.push(id);
                }
                Err(_) => {
                    for id in got {
                        self.free_one(id);
                    }
                    return false;
                }
            }
        }
        let e = &mut self.jobs[j.0 as usize];
        e.allocs = got;
        if let Some(m) = e.model {
            let need = e.spec.gpu_milli();
            self.tenants[e.spec.tenant.0 as usize].used[m.0 as usize] += need;
        }
        self.index_job(j);
        true
    }

    /// Try to place job `j` now; on success its allocations are taken (the
    /// job is not yet marked running).
    fn try_place(&mut self, j: JobId) -> bool {
        let spec = &self.jobs[j.0 as usize].spec;
        let Some(models) = self.allowed_models(spec) else {
            return false;
        };
        let need = spec.gpu_milli();
        if need > 0 && self.free_in(models) < need {
            return false;
        }
        let tasks = spec.tasks;
        let req = Request { models, ..spec.req };
        if req.num_gpu > 0 && !req.is_share() {
            // Room for whole-GPU tasks, by the histogram (ignores CPU/memory).
            let k = req.num_gpu as usize;
            let mut room = 0u64;
            for (m, h) in self.full_hist.iter().enumerate() {
                if models.accepts(Some(ModelId(m as u8))) {
                    room += (k..h.len())
                        .map(|c| h[c] as u64 * (c / k) as u64)
                        .sum::<u64>();
                }
            }
            if room < tasks as u64 {
                return false;
            }
        }
        let mut order = std::mem::take(&mut self.order_buf);
        order.clear();
        if req.num_gpu == 0 {
            order.extend_from_slice(&self.all_nodes);
        } else if tasks == 1 && self.opts.group_nodes {
            order.extend(self.reps.iter().copied());
        } else {
            // A gang weighs racks: every node counts.
            order.extend(self.open.iter().copied());
            for set in &self.idle {
                order.extend(set.iter().copied());
            }
            order.sort_unstable();
        }
        let placed = if tasks == 1 {
            self.placement
                .place(&self.ledger, &req, &order)
                .map(|p| vec![(p.node, 1u32, Some(p.gpus))])
        } else {
            self.plan_gang(&req, tasks, &order)
        };
        self.order_buf = order;
        let Some(plan) = placed else {
            return false;
        };
        let mut allocs = Vec::with_capacity(tasks as usize);
        let mut placements = Vec::with_capacity(tasks as usize);
        for (node, count, first) in plan {
            for i in 0..count {
                let p = match (i, first) {
                    (0, Some(g)) => Placement { node, gpus: g },
                    _ => self
                        .placement
                        .place(&self.ledger, &req, &[node])
                        .expect("gang plan counted a task slot that is not there"),
                };
                allocs.push(self.alloc_one(&req, p));
                placements.push(p);
            }
        }
        debug_assert_eq!(allocs.len(), tasks as usize);
        let model = if req.num_gpu > 0 {
            self.ledger.specs()[placements[0].node as usize].model
        } else {
            None
        };
        let e = &mut self.jobs[j.0 as usize];
        e.allocs = allocs;
        e.placements = placements;
        e.model = model;
        if let Some(m) = model {
            let need = e.spec.gpu_milli();
            self.tenants[e.spec.tenant.0 as usize].used[m.0 as usize] += need;
        }
        self.index_job(j);
        true
    }

    /// Where a gang of `tasks` copies of `req` goes: one node if any can hold
    /// them all (chosen by the placement policy), else the fewest nodes of one
    /// rack, else the fewest nodes of one GPU model. Returns (node, tasks there,
    /// devices of the first task when the placement policy chose them).
    fn plan_gang(
        &mut self,
        req: &Request,
        tasks: u32,
        order: &[NodeId],
    ) -> Option<Vec<(NodeId, u32, Option<GpuMask>)>> {
        let specs = self.ledger.specs();
        let states = self.ledger.states();
        let mut cands: Vec<(NodeId, u32)> = Vec::new();
        let mut whole: Vec<NodeId> = Vec::new();
        for &n in order {
            let (s, st) = (&specs[n as usize], &states[n as usize]);
            if !st.fits(s, req) {
                continue;
            }
            let k = fit_count(s, st, req, tasks);
            if k >= tasks {
                whole.push(n);
            }
            cands.push((n, k));
        }
        if !whole.is_empty() {
            let p = self.placement.place(&self.ledger, req, &whole)?;
            return Some(vec![(p.node, tasks, Some(p.gpus))]);
        }
        // Group by (model, rack); within a group take the roomiest nodes first.
        let key = |n: NodeId| {
            let m = specs[n as usize].model.map_or(0, |m| m.0 as u32 + 1);
            (m, self.racks[n as usize])
        };
        cands.sort_by_key(|&(n, k)| (key(n), std::cmp::Reverse(k), n));
        let mut best: Option<(usize, usize, usize)> = None; // (nodes, start, end)
        let mut i = 0;
        while i < cands.len() {
            let g = key(cands[i].0);
            let mut j = i;
            let mut sum = 0u32;
            let mut need_nodes = None;
            while j < cands.len() && key(cands[j].0) == g {
                sum += cands[j].1;
                if need_nodes.is_none() && sum >= tasks {
                    need_nodes = Some(j - i + 1);
                }
                j += 1;
            }
            if let Some(nn) = need_nodes {
                if best.is_none_or(|b| nn < b.0) {
                    best = Some((nn, i, i + nn));
                }
            }
            i = j;
        }
        let chosen: Vec<(NodeId, u32)> = match best {
            Some((_, s, e)) => cands[s..e].to_vec(),
            None => {
                // Span racks, within one GPU model.
                let mut by_model: Vec<(u32, NodeId, u32)> =
                    cands.iter().map(|&(n, k)| (key(n).0, n, k)).collect();
                by_model.sort_by_key(|&(m, n, k)| (m, std::cmp::Reverse(k), n));
                let mut pick: Option<(usize, usize, usize)> = None;
                let mut i = 0;
                while i < by_model.len() {
                    let m = by_model[i].0;
                    let mut j = i;
                    let mut sum = 0;
                    let mut got = None;
                    while j < by_model.len() && by_model[j].0 == m {
                        sum += by_model[j].2;
                        if got.is_none() && sum >= tasks {
                            got = Some(j - i + 1);
                        }
                        j += 1;
                    }
                    if let Some(nn) = got {
                        if pick.is_none_or(|b| nn < b.0) {
                            pick = Some((nn, i, i + nn));
                        }
                    }
                    i = j;
                }
                let (_, s, e) = pick?;
                by_model[s..e].iter().map(|&(_, n, k)| (n, k)).collect()
            }
        };
        let mut left = tasks;
        let mut plan = Vec::with_capacity(chosen.len());
        for (n, k) in chosen {
            let take = k.min(left);
            plan.push((n, take, None));
            left -= take;
        }
        debug_assert_eq!(left, 0);
        Some(plan)
    }

    fn note_running(&mut self, j: JobId, now: Time) {
        let e = &self.jobs[j.0 as usize];
        let end = now + e.spec.work.saturating_sub(e.progress);
        let level = self.las_level(e, e.attained) as usize;
        let spot = e.spec.class == Class::Spot;
        self.ends.insert((end, j));
        self.est_ends
            .insert((now + e.spec.estimate().saturating_sub(e.progress), j));
        if self.running_by_level.len() <= level {
            self.running_by_level.resize(level + 1, 0);
        }
        self.running_by_level[level] += 1;
        self.running_spot += spot as usize;
        self.jobs[j.0 as usize].level = level;
    }

    fn note_stopped(&mut self, j: JobId) {
        let e = &self.jobs[j.0 as usize];
        let end = e.started + e.spec.work.saturating_sub(e.progress);
        self.ends.remove(&(end, j));
        self.est_ends
            .remove(&(e.started + e.spec.estimate().saturating_sub(e.progress), j));
        self.running_by_level[e.level] -= 1;
        self.running_spot -= (e.spec.class == Class::Spot) as usize;
    }

    /// A cheap necessary condition for `p` to have any victim.
    fn may_have_victims(&self, p: JobId, now: Time) -> bool {
        let pe = &self.jobs[p.0 as usize];
        match self.policy {
            QueuePolicy::Srtf => self
                .ends
                .last()
                .is_some_and(|&(end, _)| end.saturating_sub(now) > self.remaining(p, now)),
            QueuePolicy::Las { .. } => {
                let lp = self.las_level(pe, pe.attained) as usize;
                self.running_by_level.iter().skip(lp + 1).any(|&c| c > 0)
            }
            QueuePolicy::Classes => pe.spec.class < Class::Spot && self.running_spot > 0,
            QueuePolicy::Drf => true,
            _ => false,
        }
    }

    fn mark_started(&mut self, j: JobId, now: Time) {
        if let Some(t) = self.jobs[j.0 as usize].promote_at.take() {
            self.las_promotions.remove(&(t, j));
        }
        self.note_running(j, now);
        let e = &mut self.jobs[j.0 as usize];
        e.state = JobState::Running;
        e.started = now;
        let placements = e.placements.clone();
        self.running.insert(j);
        self.arm_las_wakeup(j, now);
        self.decisions.push(Decision::Start { job: j, placements });
    }

    fn start_if_placeable(&mut self, j: JobId, now: Time) -> bool {
        if self.try_place(j) {
            self.dequeue(j);
            self.mark_started(j, now);
            true
        } else {
            false
        }
    }

    /// Stop running job `j` at `now` and put it back in the queue.
    fn preempt(&mut self, j: JobId, now: Time) {
        let e = &self.jobs[j.0 as usize];
        let run = now.saturating_sub(e.started);
        let done = e.progress + run;
        let kept = match done.checked_div(self.opts.checkpoint_ms) {
            None => done,
            Some(k) => (k * self.opts.checkpoint_ms).max(e.progress),
        };
        self.disarm_las_wakeup(j);
        self.note_stopped(j);
        self.running.remove(&j);
        let e = &mut self.jobs[j.0 as usize];
        e.attained += run;
        e.progress = kept;
        e.preemptions += 1;
        e.allocs = Vec::new();
        e.placements = Vec::new();
        e.model = None;
        self.decisions.push(Decision::Preempt {
            job: j,
            lost_ms: done - kept,
        });
        self.enqueue(j);
        if let QueuePolicy::Las { starve_factor, .. } = self.policy {
            let e = &self.jobs[j.0 as usize];
            if starve_factor > 0 && e.key.0 > 0 {
                let at = now + starve_factor * run.max(1000);
                self.las_promotions.insert((at, j));
                self.jobs[j.0 as usize].promote_at = Some(at);
            }
        }
    }

    /// If running job `v` may be preempted in favour of pending job `p`, its
    /// rank among victims (smaller = preempted first).
    fn victim_rank(&self, p: JobId, v: JobId, now: Time) -> Option<(u64, u64)> {
        let (pe, ve) = (&self.jobs[p.0 as usize], &self.jobs[v.0 as usize]);
        let newest_first = u64::MAX - ve.started;
        match self.policy {
            QueuePolicy::Srtf => {
                // Pending p's remaining work is fixed: work − progress.
                let rp = pe.spec.work.saturating_sub(pe.progress);
                let rv =
                    (ve.started + ve.spec.work.saturating_sub(ve.progress)).saturating_sub(now);
                (rv > rp).then_some((u64::MAX - rv, newest_first))
            }
            QueuePolicy::Las { .. } => {
                let lv = self.las_level(ve, ve.attained + now.saturating_sub(ve.started));
                (lv > self.las_level(pe, pe.attained)).then_some((u64::MAX - lv, newest_first))
            }
            QueuePolicy::Classes => (ve.spec.class == Class::Spot && pe.spec.class < Class::Spot)
                .then_some((0, newest_first)),
            QueuePolicy::Drf => {
                let m = ve.model?;
                if ve.spec.tenant == pe.spec.tenant
                    || !self.reclaim_models.accepts(Some(m))
                    || !self.over_guarantee(v)
                {
                    return None;
                }
                let vt = &self.tenants[ve.spec.tenant.0 as usize];
                let over = vt.used[m.0 as usize] - vt.quota.guaranteed[m.0 as usize];
                Some((u64::MAX - over, newest_first))
            }
            _ => None,
        }
    }

    /// Try to start pending job `p` by preempting running jobs that rank below
    /// it. First choice: the one node where the fewest victims (then the fewest
    /// GPUs) make room for the whole job; otherwise (a gang spanning nodes)
    /// victims in rank order across the cluster. Victims whose resources turn
    /// out not to be needed are spared.
    fn preempt_for(&mut self, p: JobId, now: Time) -> bool {
        if self.preempt_failures >= self.opts.preempt_attempts_per_pass
            || !self.may_have_victims(p, now)
        {
            return false;
        }
        let mk = self.memo_key(p);
        let prio = self.jobs[p.0 as usize].key.0;
        self.preempt_backoff.retain(|b| b.2 > now);
        if self
            .preempt_backoff
            .iter()
            .any(|b| b.0 == mk && prio >= b.1)
        {
            return false;
        }
        let ok = self.preempt_search(p, now);
        if !ok {
            self.preempt_failures += 1;
            if self.opts.preempt_backoff_ms > 0 {
                self.preempt_backoff
                    .push((mk, prio, now + self.opts.preempt_backoff_ms));
            }
        }
        ok
    }

    fn preempt_search(&mut self, p: JobId, now: Time) -> bool {
        let spec = &self.jobs[p.0 as usize].spec;
        let Some(models) = self.allowed_models(spec) else {
            return false;
        };
        let req = Request { models, ..spec.req };
        let tasks = spec.tasks;
        let need = spec.gpu_milli();
        // Plan A: one node.
        // Cost of a node's victims: the least expendable victim's rank first
        // (as kube-scheduler minimises the highest victim priority), then
        // their number, then their GPUs.
        type Cost = ((u64, u64), usize, u64, NodeId);
        let mut best: Option<(Cost, Vec<JobId>)> = None;
        // Every eligible victim, grouped by node (a gang member appears
        // under each of its nodes), each group most expendable first.
        let mut by_node: Vec<(NodeId, (u64, u64), JobId)> = Vec::new();
        for n in 0..self.ledger.len() {
            let nspec = &self.ledger.specs()[n];
            if need > 0 && (nspec.gpus == 0 || !models.accepts(nspec.model)) {
                continue;
            }
            let from = by_node.len();
            for &v in &self.node_jobs[n] {
                if let Some(r) = self.victim_rank(p, v, now) {
                    by_node.push((n as NodeId, r, v));
                }
            }
            by_node[from..].sort_unstable();
        }
        if by_node.is_empty() {
            return false;
        }
        let mut i = 0;
        while i < by_node.len() {
            let n = by_node[i].0 as usize;
            let mut j = i;
            while j < by_node.len() && by_node[j].0 as usize == n {
                j += 1;
            }
            let group = &by_node[i..j];
            i = j;
            let (nspec, st) = (&self.ledger.specs()[n], &self.ledger.states()[n]);
            if need > 0 && (nspec.gpus == 0 || !models.accepts(nspec.model)) {
                continue;
            }
            let mut what_if = st.clone();
            let mut chosen = Vec::new();
            let mut gpu = 0u64;
            for &(_, rank, v) in group {
                let ve = &self.jobs[v.0 as usize];
                for a in &ve.allocs {
                    let al = self.ledger.allocation(*a).expect("live allocation");
                    if al.node as usize == n {
                        what_if.credit(al);
                    }
                }
                chosen.push(v);
                gpu += ve.spec.gpu_milli();
                if fit_count(nspec, &what_if, &req, tasks) >= tasks {
                    let cost = (rank, chosen.len(), gpu, n as NodeId);
                    if best.as_ref().is_none_or(|b| cost < b.0) {
                        best = Some((cost, chosen.clone()));
                    }
                    break;
                }
            }
        }
        let victims: Vec<JobId> = match best {
            Some((_, v)) => v,
            None if tasks > 1 => {
                // Plan B: a gang across nodes. Per node: how many tasks fit now
                // and after evicting every eligible victim there; take nodes
                // needing no eviction first, then those with the fewest
                // victims, until the gang fits.
                // (victims needed, room after, node, victims as a range of by_node)
                type Room = (usize, std::cmp::Reverse<u32>, NodeId, (usize, usize));
                let mut nodes: Vec<Room> = Vec::new();
                let mut at = 0usize;
                for n in 0..self.ledger.len() {
                    let lo = at;
                    while at < by_node.len() && by_node[at].0 as usize == n {
                        at += 1;
                    }
                    let (nspec, st) = (&self.ledger.specs()[n], &self.ledger.states()[n]);
                    if need > 0 && (nspec.gpus == 0 || !models.accepts(nspec.model)) {
                        continue;
                    }
                    let k_now = fit_count(nspec, st, &req, tasks);
                    let mut k_after = k_now;
                    if at > lo {
                        let mut what_if = st.clone();
                        for &(_, _, v) in &by_node[lo..at] {
                            for a in &self.jobs[v.0 as usize].allocs {
                                let al = self.ledger.allocation(*a).expect("live allocation");
                                if al.node as usize == n {
                                    what_if.credit(al);
                                }
                            }
                        }
                        k_after = fit_count(nspec, &what_if, &req, tasks);
                    }
                    if k_after == 0 {
                        continue;
                    }
                    let range = if k_now >= k_after { (lo, lo) } else { (lo, at) };
                    nodes.push((
                        range.1 - range.0,
                        std::cmp::Reverse(k_after),
                        n as NodeId,
                        range,
                    ));
                }
                // Group by model: a gang runs on one GPU model.
                let model_of = |n: NodeId| self.ledger.specs()[n as usize].model;
                nodes.sort_by_key(|x| (model_of(x.2), x.0, x.1, x.2));
                let mut pick: Option<(usize, Vec<JobId>)> = None;
                let mut i = 0;
                while i < nodes.len() {
                    let m = model_of(nodes[i].2);
                    let (mut sum, mut vs, mut count) = (0u32, Vec::new(), 0usize);
                    let mut j = i;
                    let mut done = false;
                    while j < nodes.len() && model_of(nodes[j].2) == m {
                        if !done {
                            sum += nodes[j].1 .0;
                            count += nodes[j].0;
                            let (lo, hi) = nodes[j].3;
                            vs.extend(by_node[lo..hi].iter().map(|x| x.2));
                            done = sum >= tasks;
                        }
                        j += 1;
                    }
                    if done && pick.as_ref().is_none_or(|b| count < b.0) {
                        pick = Some((count, vs));
                    }
                    i = j;
                }
                let Some((_, mut vs)) = pick else {
                    return false;
                };
                vs.sort_unstable();
                vs.dedup();
                vs.sort_by_key(|&v| self.victim_rank(p, v, now));
                vs
            }
            None => return false,
        };
        let mut released = Vec::new();
        let mut placed = false;
        for v in victims {
            if self.policy == QueuePolicy::Drf && !self.over_guarantee(v) {
                continue;
            }
            self.release_job(v);
            released.push(v);
            if (need == 0 || self.free_in(models) >= need) && self.try_place(p) {
                placed = true;
                break;
            }
        }
        if !placed {
            for &v in released.iter().rev() {
                let ok = self.retake_job(v);
                assert!(ok, "re-taking a tentatively released job failed");
            }
            return false;
        }
        for &v in released.iter().rev() {
            if !self.retake_job(v) {
                self.preempt(v, now);
            }
        }
        self.dequeue(p);
        self.mark_started(p, now);
        // Preempted victims may have left more free than `p` took.
        self.failed.clear();
        true
    }

    fn over_guarantee(&self, v: JobId) -> bool {
        let e = &self.jobs[v.0 as usize];
        let Some(m) = e.model else { return false };
        let t = &self.tenants[e.spec.tenant.0 as usize];
        t.used[m.0 as usize] > t.quota.guaranteed[m.0 as usize]
    }

    fn memo_key(&self, j: JobId) -> MemoKey {
        let s = &self.jobs[j.0 as usize].spec;
        let t = &self.tenants[s.tenant.0 as usize];
        let tenant = if t.limited || self.policy == QueuePolicy::Drf {
            s.tenant.0
        } else {
            u16::MAX
        };
        (s.req, s.tasks, tenant)
    }

    fn nothing_free(&self) -> bool {
        self.pending_cpu_only == 0 && self.free_milli.iter().all(|&f| f == 0)
    }

    // ---- passes --------------------------------------------------------------

    /// FIFO, SJF, SRTF, LAS and classes: visit the queue in key order.
    fn pass_ordered(&mut self, now: Time) {
        let strict = self.policy == QueuePolicy::Fifo;
        let preemptive = matches!(
            self.policy,
            QueuePolicy::Srtf | QueuePolicy::Las { .. } | QueuePolicy::Classes
        );
        let mut cursor = Cursor::new();
        while let Some(key) = cursor.next(&self.pending, |k| {
            let e = &self.jobs[k.2 .0 as usize];
            e.state == JobState::Pending && e.key == k
        }) {
            let j = key.2;
            // The queue is in priority order, so once nothing is free and this
            // job has no possible victim, no later job has one either.
            if self.nothing_free() && (!preemptive || !self.may_have_victims(j, now)) {
                break;
            }
            let mk = self.memo_key(j);
            let place_failed = self.failed.contains(&mk);
            if !place_failed {
                if self.start_if_placeable(j, now) {
                    continue;
                }
                self.failed.insert(mk);
            }
            // A job that could not preempt its way in: later (lower-priority)
            // jobs of the same shape have fewer victims, so they cannot either.
            if preemptive && !self.failed_preempt.contains(&mk) {
                if self.preempt_for(j, now) {
                    continue;
                }
                self.failed_preempt.insert(mk);
            }
            if strict {
                break;
            }
        }
    }

    fn dominant_share(&self, t: usize) -> f64 {
        let x = &self.tenants[t];
        let mut s = 0.0f64;
        for m in 0..self.n_models {
            if self.capacity_milli[m] > 0 {
                s = s.max(x.used[m] as f64 / self.capacity_milli[m] as f64);
            }
        }
        s / x.quota.weight
    }

    fn pass_drf(&mut self, now: Time) {
        let mut blocked = vec![false; self.tenants.len()];
        loop {
            let mut pick: Option<(f64, usize)> = None;
            for (t, &is_blocked) in blocked.iter().enumerate() {
                if is_blocked || self.tenants[t].pending.is_empty() {
                    continue;
                }
                let s = self.dominant_share(t);
                if pick.is_none_or(|(b, _)| s < b) {
                    pick = Some((s, t));
                }
            }
            let Some((_, t)) = pick else { break };
            let j = self.tenants[t].pending.first().expect("non-empty").1;
            if self.start_if_placeable(j, now) {
                continue;
            }
            if self.reclaim_for(j, now) {
                continue;
            }
            blocked[t] = true;
        }
    }

    /// DRF reclaim: a tenant within its guaranteed quota takes GPUs back from
    /// tenants above theirs, most over-quota tenant first, newest job first.
    fn reclaim_for(&mut self, j: JobId, now: Time) -> bool {
        let s = &self.jobs[j.0 as usize].spec;
        let t = &self.tenants[s.tenant.0 as usize];
        let need = s.gpu_milli();
        if need == 0 {
            return false;
        }
        let mut within = ModelSet(0);
        for m in 0..self.n_models {
            let id = ModelId(m as u8);
            if s.req.models.accepts(Some(id)) && t.used[m] + need <= t.quota.guaranteed[m] {
                within = within.with(id);
            }
        }
        if within.0 == 0 {
            return false;
        }
        // Reclaimed GPUs go to the models within guarantee only.
        self.reclaim_models = within;
        let saved = self.jobs[j.0 as usize].spec.req.models;
        self.jobs[j.0 as usize].spec.req.models = within;
        let ok = self.preempt_for(j, now);
        self.jobs[j.0 as usize].spec.req.models = saved;
        self.reclaim_models = ModelSet(0);
        ok
    }

    /// FIFO with EASY backfill.
    fn pass_backfill(&mut self, now: Time) {
        let mut cursor = Cursor::new();
        let mut reservation: Option<(Time, u64, ModelSet)> = None; // (shadow, extra, models)
        while let Some(key) = cursor.next(&self.pending, |k| {
            let e = &self.jobs[k.2 .0 as usize];
            e.state == JobState::Pending && e.key == k
        }) {
            let j = key.2;
            if self.nothing_free() {
                break;
            }
            let mk = self.memo_key(j);
            if self.failed.contains(&mk) {
                continue;
            }
            let spec = &self.jobs[j.0 as usize].spec;
            let (est, need, models) = (spec.estimate(), spec.gpu_milli(), spec.req.models);
            match reservation {
                None => {
                    if self.start_if_placeable(j, now) {
                        continue;
                    }
                    reservation = Some(self.reserve(j, now));
                    self.failed.insert(mk);
                }
                Some((shadow, extra, rmodels)) => {
                    let overlaps = models.is_any() || rmodels.is_any() || models.0 & rmodels.0 != 0;
                    let ends_in_time = now.saturating_add(est) <= shadow;
                    let in_extra = need <= extra;
                    if !(ends_in_time || !overlaps || in_extra) {
                        continue;
                    }
                    if self.start_if_placeable(j, now) {
                        if !ends_in_time && overlaps {
                            reservation = Some((shadow, extra - need, rmodels));
                        }
                    } else {
                        self.failed.insert(mk);
                    }
                }
            }
        }
    }

    /// EASY reservation for the blocked head `j`: the earliest time enough
    /// GPUs of its models are free by running jobs' estimates (the shadow
    /// time), and the GPU milli left over then (the extra).
    fn reserve(&self, j: JobId, now: Time) -> (Time, u64, ModelSet) {
        let s = &self.jobs[j.0 as usize].spec;
        let models = s.req.models;
        let need = s.gpu_milli();
        let mut avail = self.free_in(models);
        for &(end, r) in &self.est_ends {
            let e = &self.jobs[r.0 as usize];
            let Some(m) = e.model else { continue };
            if !models.accepts(Some(m)) {
                continue;
            }
            avail += e.spec.gpu_milli();
            if avail >= need {
                return (end.max(now + 1), avail - need, models);
            }
        }
        (Time::MAX, 0, models)
    }
}

/// How many copies of `req` fit on this node now (at most `cap`).
pub fn fit_count(spec: &NodeSpec, st: &NodeState, req: &Request, cap: u32) -> u32 {
    let mut k = cap as u64;
    if let Some(c) = st.cpu_free.checked_div(req.cpu_milli) {
        k = k.min(c);
    }
    if let Some(m) = st.mem_free.checked_div(req.memory_mib) {
        k = k.min(m);
    }
    if req.num_gpu > 0 {
        if spec.gpus == 0 || !req.models.accepts(spec.model) {
            return 0;
        }
        let slots: u64 = if req.is_share() {
            st.gpu_left()
                .iter()
                .map(|&l| (l / req.gpu_milli) as u64)
                .sum()
        } else {
            st.fully_free() as u64 / req.num_gpu as u64
        };
        k = k.min(slots);
    }
    k as u32
}
