//! The loop's figures for `/metrics`, published after every batch.

use std::collections::BTreeMap;
use std::time::Duration;

use suanli_core::ModelId;

use super::core::Core;
use crate::store::NodeState;

/// Figures for `/metrics`, updated after every batch.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub pending: usize,
    pub running: usize,
    /// (model, capacity milli, allocated milli).
    pub gpus: Vec<(String, u64, u64)>,
    pub nodes_by_state: BTreeMap<NodeState, usize>,
    /// Scheduling pass plus commit, in seconds: bucket counts (cumulative
    /// at export), sum, count.
    pub latency_buckets: Vec<u64>,
    pub latency_sum: f64,
    pub latency_count: u64,
    pub decisions: u64,
    pub batches: u64,
}

/// Upper bounds of the latency histogram, seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            latency_buckets: vec![0; LATENCY_BOUNDS.len()],
            ..Metrics::default()
        }
    }

    /// Take the core's gauges; count a batch that took `took`.
    pub(super) fn publish(&mut self, core: &Core, took: Option<Duration>, decided: u64) {
        self.pending = core.sched.pending_len();
        self.running = core.sched.running_len();
        self.gpus = (0..core.models.len())
            .map(|i| {
                let id = ModelId(i as u8);
                let (cap, free) = core.sched.model_gpu_milli(id);
                (core.models.name(id).to_string(), cap, cap - free)
            })
            .collect();
        self.nodes_by_state.clear();
        for n in core.nodes.values() {
            *self.nodes_by_state.entry(n.node.state).or_default() += 1;
        }
        if let Some(t) = took {
            let s = t.as_secs_f64();
            if let Some(i) = LATENCY_BOUNDS.iter().position(|&b| s <= b) {
                self.latency_buckets[i] += 1;
            }
            self.latency_sum += s;
            self.latency_count += 1;
            self.batches += 1;
        }
        self.decisions += decided;
    }
}
