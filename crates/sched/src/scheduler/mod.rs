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
//! demotions and promotions).
//!
//! `types.rs` holds the public types (specs, policies, quotas, decisions);
//! this file the scheduler's state and its public API; the work is in
//! `queue.rs` (keys, passes, DRF, backfill), `place.rs` (quota admission,
//! capacity indexes, gang placement) and `preempt.rs` (starts, stops, victim
//! search).
//!
//! **Invariants**
//! * Every GPU milli is held by at most one task: all allocation goes through
//!   the [`Ledger`], which refuses anything else.
//! * A job's tasks start together (all-or-nothing) and stop together.
//! * A tenant never holds more GPU milli of a model than its `max` quota.
//! * `free_milli[m]` equals the free GPU milli of model `m` in the ledger.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

mod check;
mod live;
mod place;
mod preempt;
mod queue;
mod shapes;
mod types;

pub use live::{WhyPending, WHY_AHEAD_CAP};
pub use place::fit_count;

use suanli_core::{
    AllocId, Ledger, ModelId, ModelSet, NodeId, NodeSpec, NodeState, Request, MAX_GPUS_PER_NODE,
    MILLI_PER_GPU,
};

/// Nodes with equal shape class and equal free resources score the same for
/// every filter-and-score policy, so a single task needs to look at one node
/// of each such group: the lowest id, which is also the one a full scan in
/// id order would pick on a tie.
type StateKey = (u32, u64, u64, [u16; MAX_GPUS_PER_NODE]);

use crate::frag::Workload;
use crate::learn::{Learner, Target};
use crate::policy::{Placement, PlacementPolicy};

pub use types::*;

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
    /// Its queue in [`shapes::ShapeQueues`] while pending (not under DRF).
    shape: u32,
}

#[derive(Clone, Debug)]
struct Tenant {
    quota: TenantQuota,
    used: Vec<u64>,
    /// FIFO of pending jobs (DRF only).
    pending: BTreeSet<(Time, JobId)>,
    limited: bool,
    /// Its jobs (pending, running), under every policy.
    jobs: (u64, u64),
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

/// Walks the pending queue in key order while the pass mutates it: each
/// step takes the first key after the last one visited, so jobs started
/// meanwhile are skipped, jobs queued ahead of the cursor (preempted
/// victims) are visited, and jobs queued behind it wait for the next pass.
struct Cursor {
    last: Option<Key>,
}

impl Cursor {
    fn new() -> Cursor {
        Cursor { last: None }
    }
    /// The next key after the cursor for which `still` holds (the job is
    /// still pending under that key).
    fn next(&mut self, pending: &BTreeSet<Key>, still: impl Fn(Key) -> bool) -> Option<Key> {
        loop {
            let k = match self.last {
                None => pending.first().copied(),
                Some(c) => pending
                    .range((Bound::Excluded(c), Bound::Unbounded))
                    .next()
                    .copied(),
            }?;
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
    /// The learned target workload, when the options ask for one.
    learner: Option<Learner>,
    policy: QueuePolicy,
    opts: SchedOptions,
    n_models: usize,
    capacity_milli: Vec<u64>,
    /// GPU milli of each model on nodes open to placements (not drained,
    /// not lost): the capacity DRF shares and reported capacity follow.
    open_milli: Vec<u64>,
    /// Nodes out of the pool for good (removed, or replaced by a node of
    /// another inventory): closed, not capacity, never admitted for.
    retired: Vec<bool>,
    free_milli: Vec<u64>,
    /// Nodes in use with at least one GPU milli free, by id.
    open: BTreeSet<NodeId>,
    /// Completely idle GPU nodes, per node shape class (same CPU, memory,
    /// GPU count and model). Idle nodes of one class are interchangeable for
    /// a single task, so placement looks at the lowest-id one of each class
    /// only — what keeps a mostly idle 10,000-GPU pool cheap to schedule.
    idle: Vec<BTreeSet<NodeId>>,
    shape_class: Vec<u32>,
    /// (CPU, memory, GPU count, model) of each shape class.
    shapes: Vec<(u64, u64, u8, Option<ModelId>)>,
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
    /// The same keys by job shape (not under DRF), for the ordered pass.
    by_shape: shapes::ShapeQueues,
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
    /// The last pass stopped at `max_decisions_per_pass`.
    cut_short: bool,
    /// Bumped whenever `failed` is cleared within a pass: shapes that
    /// failed before may fit now.
    memo_epoch: u64,
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
    /// How many tasks of a job shape (request, tasks) the open nodes hold
    /// with nothing running ([`Scheduler::open_fit`]); cleared with
    /// `admit_cache` whenever nodes join, close, reopen or retire.
    open_fit: std::cell::RefCell<HashMap<(Request, u32), u32>>,
    /// The shape part of `why_pending` by memo key, valid for one ledger
    /// generation (and cleared when quotas change).
    why_cache: std::cell::RefCell<(u64, HashMap<MemoKey, Option<WhyPending>>)>,
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
        let mut placement = placement;
        let learner = match opts.target {
            Target::Given => None,
            Target::Learned(p) => {
                placement.set_target(&Workload::default());
                Some(Learner::new(p))
            }
        };
        let mut sched = Scheduler {
            free_milli: capacity_milli.clone(),
            open_milli: capacity_milli.clone(),
            retired: vec![false; n_nodes],
            capacity_milli,
            ledger,
            racks,
            placement,
            learner,
            policy,
            opts,
            n_models,
            open,
            idle,
            shape_class,
            shapes,
            groups: HashMap::new(),
            node_key: vec![None; n_nodes],
            reps: BTreeSet::new(),
            full_hist: vec![[0; MAX_GPUS_PER_NODE + 1]; n_models],
            node_full: vec![0; n_nodes],
            all_nodes,
            jobs: Vec::new(),
            free_slots: Vec::new(),
            pending: BTreeSet::new(),
            by_shape: shapes::ShapeQueues::default(),
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
            memo_epoch: 0,
            cut_short: false,
            order_buf: Vec::new(),
            node_jobs,
            reclaim_models: ModelSet(0),
            ends: BTreeSet::new(),
            est_ends: BTreeSet::new(),
            running_by_level: Vec::new(),
            running_spot: 0,
            admit_cache: HashMap::new(),
            open_fit: std::cell::RefCell::new(HashMap::new()),
            why_cache: std::cell::RefCell::new((u64::MAX, HashMap::new())),
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
            jobs: (0, 0),
        });
    }

    /// A tenant's jobs: (pending, running).
    pub fn tenant_jobs(&self, t: TenantId) -> (u64, u64) {
        self.tenants.get(t.0 as usize).map_or((0, 0), |x| x.jobs)
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
    /// GPU milli of nodes open to placements (closed ones, drained or lost,
    /// left out).
    pub fn open_capacity_gpu_milli(&self) -> u64 {
        self.open_milli.iter().sum()
    }
    /// GPU milli of model `m` on nodes open to placements.
    pub fn model_open_gpu_milli(&self, m: ModelId) -> u64 {
        self.open_milli.get(m.0 as usize).copied().unwrap_or(0)
    }
    /// (capacity, free) GPU milli of model `m`.
    pub fn model_gpu_milli(&self, m: ModelId) -> (u64, u64) {
        let i = m.0 as usize;
        (
            self.capacity_milli.get(i).copied().unwrap_or(0),
            self.free_milli.get(i).copied().unwrap_or(0),
        )
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

    /// Could this job ever run on this pool? It could when some node shape
    /// the pool has had (retired nodes included: a node may come back) holds
    /// one task, enough such GPUs of one model exist for the gang, and the
    /// tenant's maximum quota leaves room; or when no node has joined yet.
    /// A job that could not is best refused at submission; one that could
    /// but cannot now waits ([`Scheduler::why_pending`] says for what).
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
        if specs.is_empty() {
            return Ok(()); // no node yet: it waits for them
        }
        let fits_empty = |s: &NodeSpec| NodeState::empty(s).fits(s, req);
        if !specs.iter().any(fits_empty) {
            return Err(format!(
                "one task ({req}) is larger than every node this pool has had"
            ));
        }
        if req.num_gpu > 0 {
            // Tasks of the gang that fit on each model's nodes, all empty.
            let mut slots = vec![0u64; self.n_models];
            for s in specs {
                if let Some(m) = s.model.filter(|&m| req.models.accepts(Some(m))) {
                    let st = NodeState::empty(s);
                    slots[m.0 as usize] += fit_count(s, &st, req, spec.tasks) as u64;
                }
            }
            let big_enough: Vec<usize> = (0..self.n_models)
                .filter(|&m| slots[m] >= spec.tasks as u64)
                .collect();
            if big_enough.is_empty() {
                return Err(format!(
                    "a gang of {} tasks of {req}: the pool has had room for at most {} of them \
                     on one GPU model",
                    spec.tasks,
                    slots.iter().max().copied().unwrap_or(0)
                ));
            }
            let max = |m: usize| {
                self.tenants
                    .get(spec.tenant.0 as usize)
                    .map_or(u64::MAX, |t| t.quota.max[m])
            };
            if !big_enough.iter().any(|&m| spec.gpu_milli() <= max(m)) {
                let most = big_enough.iter().map(|&m| max(m)).max().unwrap_or(0);
                return Err(format!(
                    "the job needs {} GPUs; the tenant's maximum quota allows at most {} on \
                     any GPU model that could hold it",
                    spec.gpu_milli() as f64 / 1000.0,
                    most as f64 / 1000.0
                ));
            }
        }
        Ok(())
    }

    /// Add a job to the queue. It must be [`admissible`](Self::admissible).
    pub fn submit(&mut self, spec: JobSpec) -> JobId {
        if let Some(l) = &mut self.learner {
            if l.observe(&spec.req, spec.tasks) {
                self.placement.set_target(l.workload());
            }
        }
        let id = self.new_entry(spec);
        self.enqueue(id);
        id
    }

    /// The learned target workload (`None` when the target is given).
    pub fn target(&self) -> Option<&Workload> {
        self.learner.as_ref().map(Learner::workload)
    }

    /// How many of the last submitted jobs [`Scheduler::replay_target`]
    /// needs (`None` when the target is given).
    pub fn target_replay_len(&self) -> Option<usize> {
        self.learner.as_ref().map(Learner::replay_len)
    }

    /// After a restart: rebuild the learned target from the last jobs
    /// submitted (oldest first, as (request, tasks)), `first` jobs having
    /// been submitted before them; the same target as before the restart.
    pub fn replay_target<'a>(
        &mut self,
        first: u64,
        jobs: impl IntoIterator<Item = (&'a Request, u32)>,
    ) {
        if let Target::Learned(p) = self.opts.target {
            let l = Learner::replay(p, first, jobs);
            self.placement.set_target(l.workload());
            self.learner = Some(l);
        }
    }

    /// A fresh entry (pending, not queued) in a free handle slot.
    fn new_entry(&mut self, spec: JobSpec) -> JobId {
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
            shape: 0,
        };
        match self.free_slots.pop() {
            Some(s) => {
                self.jobs[s as usize] = entry;
                JobId(s)
            }
            None => {
                self.jobs.push(entry);
                JobId(self.jobs.len() as u32 - 1)
            }
        }
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
        self.cut_short = false;
        self.by_shape.recycle();
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

    /// Whether the last pass stopped at
    /// [`SchedOptions::max_decisions_per_pass`] with work perhaps left: the
    /// caller should run another pass soon.
    pub fn pass_cut_short(&self) -> bool {
        self.cut_short
    }

    /// True (and remembered) once the pass has made its allowed decisions.
    fn out_of_decisions(&mut self) -> bool {
        if self.decisions.len() >= self.opts.max_decisions_per_pass {
            self.cut_short = true;
        }
        self.cut_short
    }

    /// The decisions of the last pass, moved out: afterwards
    /// [`decisions`](Self::decisions) is empty until the next pass.
    pub fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decisions)
    }

    /// The decisions of the last [`schedule`](Self::schedule) pass, in order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }
}
