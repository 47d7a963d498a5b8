//! The loop's figures for `/metrics` (through `prometheus-client`),
//! published after every batch. Handles are cheap clones of shared atomics:
//! the loop writes them, the `/metrics` handler encodes them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use suanli_core::ModelId;

use super::core::Core;
use crate::store::{JobState, NodeState, Write};

/// Upper bounds of the latency histogram, seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// The scheduling loop's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    queue: Family<StateLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    ended: Family<StateLabel, Counter>,
    gpus_capacity: Family<ModelLabel, GaugeF64>,
    gpus_allocated: Family<ModelLabel, GaugeF64>,
    nodes: Family<StateLabel, Gauge>,
    latency: Histogram,
    decisions: Counter,
    leader: Gauge,
    epoch: Gauge,
    stale_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            queue: Family::default(),
            jobs: Family::default(),
            ended: Family::default(),
            gpus_capacity: Family::default(),
            gpus_allocated: Family::default(),
            nodes: Family::default(),
            latency: Histogram::new(LATENCY_BOUNDS),
            decisions: Counter::default(),
            leader: Gauge::default(),
            epoch: Gauge::default(),
            stale_writes: Counter::default(),
        }
    }

    /// This replica runs the scheduling loop (1) under `epoch`, or not (0,
    /// and the last epoch it led, if any).
    pub fn set_leader(&self, leading: bool, epoch: i64) {
        self.leader.set(i64::from(leading));
        self.epoch.set(epoch);
    }

    /// A batch of this replica's loop was refused: another server had taken
    /// the lease.
    pub fn stale_write_refused(&self) {
        self.stale_writes.inc();
    }

    pub fn stale_writes(&self) -> u64 {
        self.stale_writes.get()
    }

    /// Starts and preemptions decided since start.
    pub fn decisions(&self) -> u64 {
        self.decisions.get()
    }

    /// Add the loop's metrics to a registry. Nothing here reads the
    /// store: a scrape costs the same with a billion jobs in it.
    pub fn register(&self, reg: &mut Registry) {
        reg.register("suanli_jobs", "Live jobs by state", self.jobs.clone());
        reg.register(
            "suanli_jobs_ended",
            "Jobs that ended since the server started, by final state",
            self.ended.clone(),
        );
        reg.register(
            "suanli_queue_length",
            "Jobs the scheduler holds, pending or running",
            self.queue.clone(),
        );
        reg.register(
            "suanli_gpus_capacity",
            "GPUs open to placements (on ready nodes), by model",
            self.gpus_capacity.clone(),
        );
        reg.register(
            "suanli_gpus_allocated",
            "GPUs allocated to tasks, by model (shares count by fraction)",
            self.gpus_allocated.clone(),
        );
        reg.register("suanli_nodes", "Nodes by state", self.nodes.clone());
        reg.register(
            "suanli_scheduling_latency_seconds",
            "One batch of the scheduling loop: the pass and its commit",
            self.latency.clone(),
        );
        reg.register(
            "suanli_scheduling_decisions",
            "Starts and preemptions decided",
            self.decisions.clone(),
        );
        reg.register(
            "suanli_leader",
            "1 while this replica holds the lease and runs the scheduling loop",
            self.leader.clone(),
        );
        reg.register(
            "suanli_leader_epoch",
            "The lease epoch this replica leads (or last led)",
            self.epoch.clone(),
        );
        reg.register(
            "suanli_stale_writes_refused",
            "Batches of this replica refused by the store: another server had taken the lease",
            self.stale_writes.clone(),
        );
    }

    /// Take the core's gauges; count a durable batch that took `took` and
    /// ended the jobs counted in `ended` (see [`ended_jobs`]).
    pub(super) fn publish(&self, core: &Core, took: Option<Duration>, decided: u64, ended: &Ended) {
        let label = |s: &str| StateLabel {
            state: s.to_string(),
        };
        let (pending, running) = core.queue_lengths();
        self.jobs
            .get_or_create(&label(JobState::Pending.as_str()))
            .set(pending as i64);
        self.jobs
            .get_or_create(&label(JobState::Running.as_str()))
            .set(running as i64);
        for (s, n) in JobState::ALL.iter().zip(ended) {
            if s.is_final() {
                self.ended.get_or_create(&label(s.as_str())).inc_by(*n);
            }
        }
        self.queue
            .get_or_create(&label("pending"))
            .set(core.sched.pending_len() as i64);
        self.queue
            .get_or_create(&label("running"))
            .set(core.sched.running_len() as i64);
        for i in 0..core.models.len() {
            let id = ModelId(i as u8);
            let (cap, free) = core.sched.model_gpu_milli(id);
            let model = ModelLabel {
                model: core.models.name(id).to_string(),
            };
            // Capacity open to placements: drained, lost, removed and
            // retired nodes' GPUs are not offered.
            self.gpus_capacity
                .get_or_create(&model)
                .set(core.sched.model_open_gpu_milli(id) as f64 / 1000.0);
            self.gpus_allocated
                .get_or_create(&model)
                .set((cap - free) as f64 / 1000.0);
        }
        // One walk over the nodes per batch, whatever the number of states.
        let mut by_state = [0i64; NodeState::ALL.len()];
        for n in core.nodes.values() {
            let i = NodeState::ALL.iter().position(|s| *s == n.node.state);
            by_state[i.expect("every state is listed")] += 1;
        }
        for (s, n) in NodeState::ALL.iter().zip(by_state) {
            self.nodes.get_or_create(&label(s.as_str())).set(n);
        }
        if let Some(t) = took {
            self.latency.observe(t.as_secs_f64());
        }
        self.decisions.inc_by(decided);
    }
}

/// Jobs a batch ends, by final state (indexed as [`JobState::ALL`]).
pub(super) type Ended = [u64; JobState::ALL.len()];

/// Count the jobs `writes` end.
pub(super) fn ended_jobs(writes: &[Write]) -> Ended {
    let mut n = [0; JobState::ALL.len()];
    for w in writes {
        if let Write::JobState {
            state,
            ended: Some(_),
            ..
        } = w
        {
            let i = JobState::ALL.iter().position(|s| s == state);
            n[i.expect("every state is listed")] += 1;
        }
    }
    n
}
