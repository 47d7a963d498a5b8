//! Money in the simulator, with the live pool's billing.
//!
//! A [`Meter`] observes the engine's events and writes the usage intervals
//! the live store would write for the same schedule: one per task per
//! attempt, from its start to its completion or preemption, with the job's
//! tenant and class, the node's GPU model, and the task's GPU milli, CPU
//! milli and memory. [`price`] then prices every policy's intervals with
//! [`suanli_billing::economics`]: the tenants' invoices, revenue, and idle
//! capacity at list price. Simulated time 0 is mapped to a wall-clock
//! instant (`t0`) so that the book's effective dates apply.
//!
//! Policies are compared over one window: from `t0` to the latest end of
//! any policy's schedule. Every GPU node is capacity for the whole window,
//! so a policy that finishes the same work sooner shows more idle value.

use std::collections::HashMap;

use suanli_billing::{economics, Ms, NodeSpan, PriceBook, Usage};

use super::cluster::Cluster;
use super::engine::{SimEvent, SimResult};
use super::workload::Workload;

/// Turns engine events into usage intervals.
pub struct Meter<'a> {
    cluster: &'a Cluster,
    wl: &'a Workload,
    t0: Ms,
    /// Attempts started so far, by job.
    runs: Vec<i64>,
    /// Open intervals (indices into `usage`), by job.
    open: HashMap<usize, Vec<usize>>,
    usage: Vec<Usage>,
}

impl<'a> Meter<'a> {
    pub fn new(cluster: &'a Cluster, wl: &'a Workload, t0: Ms) -> Meter<'a> {
        Meter {
            cluster,
            wl,
            t0,
            runs: vec![0; wl.jobs.len()],
            open: HashMap::new(),
            usage: Vec::new(),
        }
    }

    pub fn observe(&mut self, ev: &SimEvent) {
        match *ev {
            SimEvent::Arrive { .. } | SimEvent::Node { .. } => {}
            SimEvent::Start {
                job,
                at,
                placements,
            } => {
                let j = &self.wl.jobs[job];
                self.runs[job] += 1;
                let mut idx = Vec::with_capacity(placements.len());
                for (task, p) in placements.iter().enumerate() {
                    let node = &self.cluster.nodes[p.node as usize];
                    let gpu_milli = j.req.num_gpu as i64 * j.req.gpu_milli as i64;
                    idx.push(self.usage.len());
                    self.usage.push(Usage {
                        tenant: self.wl.tenants[j.tenant.0 as usize].clone(),
                        job: job as i64 + 1,
                        run: self.runs[job],
                        task: task as i64,
                        gpu_model: match (gpu_milli > 0, node.model) {
                            (true, Some(m)) => Some(self.cluster.models.name(m).to_string()),
                            _ => None,
                        },
                        class: j.class.name().to_string(),
                        gpu_milli,
                        cpu_milli: j.req.cpu_milli as i64,
                        memory_mib: j.req.memory_mib as i64,
                        start: self.t0 + at as Ms,
                        end: None,
                    });
                }
                self.open.insert(job, idx);
            }
            SimEvent::Preempt { job, at, .. }
            | SimEvent::Interrupt { job, at, .. }
            | SimEvent::Complete { job, at } => {
                for i in self.open.remove(&job).unwrap_or_default() {
                    self.usage[i].end = Some(self.t0 + at as Ms);
                }
            }
        }
    }

    /// The intervals, in start order. Every one is closed once the engine
    /// has run to the end.
    pub fn finish(self) -> Vec<Usage> {
        self.usage
    }
}

/// Price each result's usage (same order as `results`) over the common
/// window, setting `SimResult::money`. Every GPU node is capacity for the
/// whole window.
pub fn price(
    book: &PriceBook,
    cluster: &Cluster,
    t0: Ms,
    results: &mut [SimResult],
    usages: &[Vec<Usage>],
) {
    let end = usages
        .iter()
        .flatten()
        .filter_map(|u| u.end)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let spans: Vec<NodeSpan> = cluster
        .nodes
        .iter()
        .filter(|n| n.gpus > 0)
        .filter_map(|n| {
            Some(NodeSpan {
                node: n.name.clone(),
                gpu_model: Some(cluster.models.name(n.model?).to_string()),
                gpus: n.gpus as i64,
                state: "ready".to_string(),
                start: t0,
                end: Some(end),
            })
        })
        .collect();
    for (r, u) in results.iter_mut().zip(usages) {
        r.money = Some(economics(book, &spans, u, t0, end, end));
    }
}
