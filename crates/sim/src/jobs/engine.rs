//! The discrete-event engine: a virtual clock driving the scheduler core.
//!
//! Events are ordered by (time, sequence number): arrivals come from the
//! sorted workload, completions and wake-ups from a binary heap. After all
//! events of one instant are applied, the scheduler runs one pass and its
//! decisions are applied: starts schedule a completion at `now + remaining`,
//! preemptions invalidate the job's pending completion (an epoch counter per
//! job handle). There is no wall clock and one seeded RNG (it seeds the
//! placement policy), so a run is a pure function of its inputs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use suanli_core::{Ledger, NodeId, MILLI_PER_GPU};
use suanli_sched::{
    parse_queue_policy, registry::make_policy_with, Class, Decision, JobId, JobSpec, Placement,
    SchedOptions, Scheduler, TenantQuota, Time, Workload as Typical,
};

use super::churn::{exponential, NodeChange, NodeEvent};
use super::cluster::Cluster;
use super::workload::Workload;

/// How to run one simulation.
#[derive(Clone, Debug)]
pub struct SimParams {
    /// Queue policy name (see `suanli_sched::QUEUE_POLICY_NAMES`).
    pub policy: String,
    /// Placement policy name (see `suanli_sched::POLICY_NAMES`).
    pub placement: String,
    pub seed: u64,
    /// Checkpoint interval of preempted work (0 = nothing lost).
    pub checkpoint_ms: Time,
    /// Buckets of the utilisation and queue time series.
    pub series_points: usize,
    /// Verify the ledger's invariants after every pass (slow; for tests).
    pub check_ledger: bool,
    /// Memoise placement scores, group identical nodes and walk the queue
    /// by job shape (false = the benchmark's baseline: same decisions, every
    /// node with free GPUs rescored for every placement, every pending job
    /// visited by every pass).
    pub memo: bool,
    /// The placement policy's target workload: learned from arrivals (the
    /// default, as in the live pool) or the trace's typical workload.
    pub target: suanli_sched::Target,
    /// Node changes to replay (a cluster-events file), sorted by time; the
    /// cluster's failure model adds its own.
    pub node_events: Vec<NodeEvent>,
}

impl SimParams {
    pub fn new(policy: &str) -> SimParams {
        SimParams {
            policy: policy.to_string(),
            placement: suanli_sched::DEFAULT_POLICY.to_string(),
            seed: 42,
            checkpoint_ms: 0,
            series_points: 400,
            check_ledger: false,
            memo: true,
            target: suanli_sched::Target::default(),
            node_events: Vec::new(),
        }
    }
}

/// What happened, for observers (tests, traces). `job` indexes `Workload::jobs`.
#[derive(Debug)]
pub enum SimEvent<'a> {
    Arrive {
        job: usize,
        at: Time,
    },
    Start {
        job: usize,
        at: Time,
        placements: &'a [Placement],
    },
    Preempt {
        job: usize,
        at: Time,
        lost_ms: Time,
    },
    Complete {
        job: usize,
        at: Time,
    },
    /// The job's node went down: it was stopped and queued again, losing
    /// `lost_ms` of work (since its last checkpoint).
    Interrupt {
        job: usize,
        at: Time,
        lost_ms: Time,
        node: usize,
    },
    /// A node changed state.
    Node {
        node: usize,
        at: Time,
        change: NodeChange,
    },
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TenantResult {
    pub tenant: String,
    pub jobs: usize,
    pub gpu_hours: f64,
    pub share_pct: f64,
    pub jct_mean_s: f64,
    pub wait_mean_s: f64,
    pub slowdown_mean: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassResult {
    pub class: &'static str,
    pub jobs: usize,
    pub jct_mean_s: f64,
    pub wait_mean_s: f64,
    pub preemptions: u64,
}

/// Time series bucket.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SeriesPoint {
    pub t_s: f64,
    pub gpu_util_pct: f64,
    pub queue_len: f64,
    pub running: f64,
}

/// One policy's results.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SimResult {
    pub policy: String,
    pub placement: String,
    pub seed: u64,
    pub jobs: usize,
    pub rejected: usize,
    pub jct_mean_s: f64,
    pub jct_p50_s: f64,
    pub jct_p95_s: f64,
    pub jct_p99_s: f64,
    pub wait_mean_s: f64,
    pub wait_p50_s: f64,
    pub wait_p99_s: f64,
    pub makespan_s: f64,
    pub gpu_util_pct: f64,
    pub gpu_hours_served: f64,
    pub gpu_hours_allocated: f64,
    pub preemptions: u64,
    pub lost_gpu_hours: f64,
    /// Node failures (down events) during the run.
    pub node_failures: u64,
    /// Jobs stopped by a failing node (and queued again).
    pub interruptions: u64,
    /// GPU-hours of work lost to node failures (part of `lost_gpu_hours`).
    pub failure_lost_gpu_hours: f64,
    /// GPU capacity of nodes up, averaged over the makespan (% of all).
    pub availability_pct: f64,
    pub deadline_jobs: usize,
    pub deadline_met_pct: Option<f64>,
    pub jain_index: f64,
    pub tenants: Vec<TenantResult>,
    pub classes: Vec<ClassResult>,
    pub events: u64,
    /// Wall-clock seconds of the run (the only non-deterministic field).
    pub wall_s: f64,
    /// Invoices, revenue and idle value, when priced ([`super::money::price`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub money: Option<suanli_billing::Economics>,
    #[serde(skip)]
    pub series: Vec<SeriesPoint>,
    /// Sorted job completion times (seconds), for the CDF.
    #[serde(skip)]
    pub jct_sorted_s: Vec<f64>,
    #[serde(skip)]
    pub rejected_examples: Vec<String>,
}

const NONE: Time = Time::MAX;

/// A queued node change: (time, order, node, change, drawn by the failure
/// model).
type Churn = (Time, u64, usize, NodeChange, bool);

/// Accumulates time-weighted utilisation and queue length per bucket.
struct Series {
    width: Time,
    alloc: Vec<u128>,
    queue: Vec<u128>,
    running: Vec<u128>,
}

impl Series {
    fn add(&mut self, from: Time, to: Time, alloc: u64, queue: u64, running: u64) {
        let mut t = from;
        while t < to {
            let b = (t / self.width) as usize;
            let end = ((b as Time + 1) * self.width).min(to);
            if self.alloc.len() <= b {
                self.alloc.resize(b + 1, 0);
                self.queue.resize(b + 1, 0);
                self.running.resize(b + 1, 0);
            }
            let dt = (end - t) as u128;
            self.alloc[b] += alloc as u128 * dt;
            self.queue[b] += queue as u128 * dt;
            self.running[b] += running as u128 * dt;
            t = end;
        }
    }
}

fn pct(sorted: &[Time], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Jain's fairness index of `xs`: (Σx)² / (n Σx²); 1 when all are equal.
pub fn jain(xs: &[f64]) -> f64 {
    let s: f64 = xs.iter().sum();
    let s2: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || s2 == 0.0 {
        1.0
    } else {
        s * s / (xs.len() as f64 * s2)
    }
}

/// Bounded slowdown of one job: JCT / max(run time, 10 s), at least 1.
fn slowdown(jct: Time, work: Time) -> f64 {
    (jct as f64 / work.max(10_000) as f64).max(1.0)
}

/// Run `wl` on `cluster` under `params`. `observe` sees every event;
/// `progress` is told how many jobs have arrived, about every 1%.
pub fn simulate(
    cluster: &Cluster,
    wl: &Workload,
    params: &SimParams,
    observe: &mut dyn FnMut(&SimEvent),
    progress: &mut dyn FnMut(usize),
) -> Result<SimResult, String> {
    let wall = std::time::Instant::now();
    let policy = parse_queue_policy(&params.policy).map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let typical = Typical::typical(wl.jobs.iter().map(|j| &j.req), 95);
    let placement = make_policy_with(&params.placement, &typical, rng.gen(), params.memo)
        .map_err(|e| e.to_string())?;
    let n_models = cluster.models.len();
    let mut quotas: Vec<TenantQuota> = cluster.tenants.iter().map(|t| t.quota.clone()).collect();
    while quotas.len() < wl.tenants.len() {
        quotas.push(TenantQuota::unlimited(n_models));
    }
    let mut sched = Scheduler::new(
        Ledger::new(cluster.nodes.clone()),
        cluster.racks.clone(),
        placement,
        policy,
        quotas,
        n_models,
        SchedOptions {
            checkpoint_ms: params.checkpoint_ms,
            group_nodes: params.memo,
            walk_by_shape: params.memo,
            target: params.target,
            ..SchedOptions::default()
        },
    );
    let capacity = sched.capacity_gpu_milli();
    let n = wl.jobs.len();
    let horizon = wl
        .jobs
        .iter()
        .map(|j| j.submit.saturating_add(j.work))
        .max()
        .unwrap_or(0);
    let mut series = Series {
        width: (horizon / params.series_points.max(1) as u64).max(1000),
        alloc: Vec::new(),
        queue: Vec::new(),
        running: Vec::new(),
    };

    let mut first_start = vec![NONE; n];
    let mut end = vec![NONE; n];
    let mut run_start = vec![0 as Time; n];
    let mut preempts = vec![0u32; n];
    let mut tenant_gpu_ms = vec![0u128; wl.tenants.len()];
    let mut slot_job: Vec<u32> = Vec::new();
    let mut epoch: Vec<u32> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(Time, u64, u32, u32)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut next_arrival = 0usize;
    let mut last_t: Time = 0;
    let mut alloc_integral: u128 = 0;
    let mut lost_gpu_ms: u128 = 0;
    let mut total_preemptions = 0u64;
    let mut events = 0u64;
    let mut rejected = 0usize;
    let mut rejected_examples = Vec::new();
    let mut armed_wake: Option<Time> = None;
    let mut completed = 0usize;
    let tick = (n / 100).max(1);
    const WAKE: u32 = u32::MAX;
    // Node churn: replayed changes and the failure model's, in one queue
    // (time, order, node, change, drawn by the model).
    let mut fail_rng = ChaCha8Rng::seed_from_u64(params.seed);
    fail_rng.set_stream(7);
    let mut churn: BinaryHeap<Reverse<Churn>> = BinaryHeap::new();
    // Replayed changes still queued, and queued returns per node: what can
    // still let a waiting job start once nothing else is left.
    let mut file_left = params.node_events.len();
    let mut up_queued = vec![0u32; cluster.nodes.len()];
    for e in &params.node_events {
        if e.change == NodeChange::Up && e.node < up_queued.len() {
            up_queued[e.node] += 1;
        }
        if e.node >= cluster.nodes.len() {
            return Err(format!(
                "node event for node {} of {}",
                e.node,
                cluster.nodes.len()
            ));
        }
        seq += 1;
        churn.push(Reverse((e.at, seq, e.node, e.change, false)));
    }
    for (i, f) in cluster.failures.iter().enumerate() {
        if let Some(f) = f {
            seq += 1;
            let at = exponential(&mut fail_rng, f.mtbf_ms);
            churn.push(Reverse((at, seq, i, NodeChange::Down, true)));
        }
    }
    let mut down = vec![false; cluster.nodes.len()];
    let mut drained = vec![false; cluster.nodes.len()];
    // GPU milli of nodes down, from each time on.
    let mut down_milli = 0u64;
    let mut down_since: Vec<(Time, u64)> = vec![(0, 0)];
    let (mut node_failures, mut interruptions) = (0u64, 0u64);
    let mut failure_lost_gpu_ms: u128 = 0;

    loop {
        let ta = wl.jobs.get(next_arrival).map(|j| j.submit);
        let th = heap.peek().map(|Reverse(e)| e.0);
        // Node changes matter while work is left: with nothing to arrive,
        // run or wake, only while jobs wait and a change can still help
        // them (a replayed change, or the return of a node that is down);
        // otherwise the failure model would cycle for ever.
        let tc = churn.peek().map(|Reverse(e)| e.0).filter(|_| {
            ta.is_some()
                || th.is_some()
                || (sched.pending_len() > 0
                    && (file_left > 0 || (0..down.len()).any(|i| down[i] && up_queued[i] > 0)))
        });
        let now = match [ta, th, tc].into_iter().flatten().min() {
            Some(t) => t,
            None => break,
        };
        let alloc = sched.allocated_gpu_milli();
        alloc_integral += alloc as u128 * (now - last_t) as u128;
        series.add(
            last_t,
            now,
            alloc,
            sched.pending_len() as u64,
            sched.running_len() as u64,
        );
        last_t = now;
        // Completions and wake-ups due now.
        while let Some(&Reverse((t, _, slot, ep))) = heap.peek() {
            if t != now {
                break;
            }
            heap.pop();
            events += 1;
            if slot == WAKE {
                if armed_wake == Some(t) {
                    armed_wake = None;
                }
                continue;
            }
            if epoch[slot as usize] != ep {
                continue; // preempted since this completion was scheduled
            }
            let j = slot_job[slot as usize] as usize;
            let id = JobId(slot);
            if sched.remaining(id, now) != 0 {
                return Err(format!(
                    "job at line {} completed with work left",
                    wl.jobs[j].line
                ));
            }
            let gm = sched.spec(id).gpu_milli() as u128;
            tenant_gpu_ms[wl.jobs[j].tenant.0 as usize] += gm * (now - run_start[j]) as u128;
            sched.complete(id, now);
            epoch[slot as usize] += 1;
            end[j] = now;
            completed += 1;
            observe(&SimEvent::Complete { job: j, at: now });
        }
        // Node changes due now.
        while let Some(&Reverse((t, _, node, change, model))) = churn.peek() {
            if t != now {
                break;
            }
            churn.pop();
            events += 1;
            if !model {
                file_left -= 1;
            }
            if change == NodeChange::Up {
                up_queued[node] -= 1;
            }
            let gpus = cluster.nodes[node].gpus as u64 * MILLI_PER_GPU as u64;
            match change {
                NodeChange::Down if !down[node] => {
                    down[node] = true;
                    down_milli += gpus;
                    node_failures += 1;
                    // Every job with a task there stops and queues again.
                    for id in sched.jobs_on(node as NodeId) {
                        let j = slot_job[id.0 as usize] as usize;
                        let gm = sched.spec(id).gpu_milli() as u128;
                        tenant_gpu_ms[wl.jobs[j].tenant.0 as usize] +=
                            gm * (now - run_start[j]) as u128;
                        let lost = sched.requeue(id, now);
                        lost_gpu_ms += gm * lost as u128;
                        failure_lost_gpu_ms += gm * lost as u128;
                        epoch[id.0 as usize] += 1;
                        interruptions += 1;
                        observe(&SimEvent::Interrupt {
                            job: j,
                            at: now,
                            lost_ms: lost,
                            node,
                        });
                    }
                }
                NodeChange::Up if down[node] => {
                    down[node] = false;
                    down_milli -= gpus;
                }
                NodeChange::Drain => drained[node] = true,
                NodeChange::Undrain => drained[node] = false,
                NodeChange::Down | NodeChange::Up => {}
            }
            if down_since.last().is_some_and(|d| d.1 != down_milli) {
                down_since.push((now, down_milli));
            }
            sched.set_closed(node as NodeId, down[node] || drained[node]);
            observe(&SimEvent::Node {
                node,
                at: now,
                change,
            });
            if model {
                // The model's next change of this node: repaired after its
                // MTTR, failing again after its MTBF.
                let f = cluster.failures[node].expect("a model event has a model");
                let (next, mean) = match change {
                    NodeChange::Down => (NodeChange::Up, f.mttr_ms),
                    _ => (NodeChange::Down, f.mtbf_ms),
                };
                seq += 1;
                let at = now + exponential(&mut fail_rng, mean);
                if next == NodeChange::Up {
                    up_queued[node] += 1;
                }
                churn.push(Reverse((at, seq, node, next, true)));
            }
        }
        // Arrivals due now.
        while next_arrival < n && wl.jobs[next_arrival].submit == now {
            let j = next_arrival;
            next_arrival += 1;
            events += 1;
            if next_arrival.is_multiple_of(tick) {
                progress(next_arrival);
            }
            let job = &wl.jobs[j];
            let spec = JobSpec {
                tenant: job.tenant,
                class: job.class,
                tasks: job.tasks,
                req: job.req,
                submit: job.submit,
                work: job.work,
                estimate: job.estimate,
            };
            if let Err(why) = sched.admissible(&spec) {
                rejected += 1;
                if rejected_examples.len() < 5 {
                    rejected_examples.push(format!("{}:{}: {why}", wl.source, job.line));
                }
                continue;
            }
            observe(&SimEvent::Arrive { job: j, at: now });
            let id = sched.submit(spec);
            let s = id.0 as usize;
            if slot_job.len() <= s {
                slot_job.resize(s + 1, 0);
                epoch.resize(s + 1, 0);
            }
            slot_job[s] = j as u32;
        }
        // One scheduling pass.
        sched.schedule(now);
        for d in sched.decisions() {
            events += 1;
            match d {
                Decision::Start { job, placements } => {
                    let j = slot_job[job.0 as usize] as usize;
                    if first_start[j] == NONE {
                        first_start[j] = now;
                    }
                    run_start[j] = now;
                    let rem = sched.remaining(*job, now);
                    seq += 1;
                    heap.push(Reverse((now + rem, seq, job.0, epoch[job.0 as usize])));
                    observe(&SimEvent::Start {
                        job: j,
                        at: now,
                        placements,
                    });
                }
                Decision::Preempt { job, lost_ms } => {
                    let j = slot_job[job.0 as usize] as usize;
                    let gm = sched.spec(*job).gpu_milli() as u128;
                    tenant_gpu_ms[wl.jobs[j].tenant.0 as usize] +=
                        gm * (now - run_start[j]) as u128;
                    lost_gpu_ms += gm * *lost_ms as u128;
                    epoch[job.0 as usize] += 1;
                    preempts[j] += 1;
                    total_preemptions += 1;
                    observe(&SimEvent::Preempt {
                        job: j,
                        at: now,
                        lost_ms: *lost_ms,
                    });
                }
            }
        }
        if params.check_ledger {
            sched
                .check_indexes()
                .map_err(|e| format!("invariant broken at t={now} ms: {e}"))?;
            if sched.allocated_gpu_milli() > capacity {
                return Err(format!("capacity exceeded at t={now} ms"));
            }
        }
        if let Some(w) = sched.next_wakeup() {
            if armed_wake.is_none_or(|a| w < a) {
                seq += 1;
                heap.push(Reverse((w, seq, WAKE, 0)));
                armed_wake = Some(w);
            }
        }
    }
    progress(n);
    if sched.pending_len() > 0 || sched.running_len() > 0 {
        let why = if down.iter().any(|&d| d) || drained.iter().any(|&d| d) {
            "nodes they need left down or drained by the cluster events?"
        } else {
            "a job that can never start?"
        };
        return Err(format!(
            "simulation ended with {} jobs pending and {} running ({why})",
            sched.pending_len(),
            sched.running_len()
        ));
    }

    // ---- metrics ----
    let done: Vec<usize> = (0..n).filter(|&j| end[j] != NONE).collect();
    debug_assert_eq!(done.len(), completed);
    let mut jct: Vec<Time> = done.iter().map(|&j| end[j] - wl.jobs[j].submit).collect();
    let mut wait: Vec<Time> = done
        .iter()
        .map(|&j| first_start[j] - wl.jobs[j].submit)
        .collect();
    let jct_mean = mean(jct.iter().map(|&x| x as f64 / 1000.0));
    let wait_mean = mean(wait.iter().map(|&x| x as f64 / 1000.0));
    jct.sort_unstable();
    wait.sort_unstable();
    let makespan = done.iter().map(|&j| end[j]).max().unwrap_or(0);
    let served: u128 = done
        .iter()
        .map(|&j| wl.jobs[j].gpu_milli() as u128 * wl.jobs[j].work as u128)
        .sum();
    let total_alloc: u128 = tenant_gpu_ms.iter().sum();
    if total_alloc != alloc_integral {
        return Err(format!(
            "accounting mismatch: jobs held {total_alloc} GPU-milli-ms, the cluster integral is {alloc_integral}"
        ));
    }
    let to_hours = |gm: u128| gm as f64 / MILLI_PER_GPU as f64 / 3_600_000.0;
    // GPU capacity of nodes up over [0, makespan]: utilisation is measured
    // against what was there to use.
    let mut down_integral: u128 = 0;
    for (k, &(from, milli)) in down_since.iter().enumerate() {
        let to = down_since
            .get(k + 1)
            .map_or(makespan, |d| d.0)
            .min(makespan);
        if to > from {
            down_integral += milli as u128 * (to - from) as u128;
        }
    }
    let up_integral = (capacity as u128 * makespan as u128).saturating_sub(down_integral);
    let util = if up_integral == 0 {
        0.0
    } else {
        100.0 * alloc_integral as f64 / up_integral as f64
    };
    let availability = if makespan == 0 || capacity == 0 {
        100.0
    } else {
        100.0 * up_integral as f64 / (capacity as f64 * makespan as f64)
    };
    let jct_s = |j: usize| (end[j] - wl.jobs[j].submit) as f64 / 1000.0;
    let wait_s = |j: usize| (first_start[j] - wl.jobs[j].submit) as f64 / 1000.0;
    let mut tenants = Vec::new();
    let mut slowdowns = Vec::new();
    for (t, name) in wl.tenants.iter().enumerate() {
        let mine: Vec<usize> = done
            .iter()
            .copied()
            .filter(|&j| wl.jobs[j].tenant.0 as usize == t)
            .collect();
        if mine.is_empty() && tenant_gpu_ms[t] == 0 {
            continue;
        }
        let sd = mean(
            mine.iter()
                .map(|&j| slowdown(end[j] - wl.jobs[j].submit, wl.jobs[j].work)),
        );
        slowdowns.push(sd);
        tenants.push(TenantResult {
            tenant: name.clone(),
            jobs: mine.len(),
            gpu_hours: to_hours(tenant_gpu_ms[t]),
            share_pct: if total_alloc == 0 {
                0.0
            } else {
                100.0 * tenant_gpu_ms[t] as f64 / total_alloc as f64
            },
            jct_mean_s: mean(mine.iter().map(|&j| jct_s(j))),
            wait_mean_s: mean(mine.iter().map(|&j| wait_s(j))),
            slowdown_mean: sd,
        });
    }
    let classes = Class::ALL
        .iter()
        .filter_map(|&c| {
            let mine: Vec<usize> = done
                .iter()
                .copied()
                .filter(|&j| wl.jobs[j].class == c)
                .collect();
            (!mine.is_empty()).then(|| ClassResult {
                class: c.name(),
                jobs: mine.len(),
                jct_mean_s: mean(mine.iter().map(|&j| jct_s(j))),
                wait_mean_s: mean(mine.iter().map(|&j| wait_s(j))),
                preemptions: mine.iter().map(|&j| preempts[j] as u64).sum(),
            })
        })
        .collect();
    let with_deadline: Vec<usize> = done
        .iter()
        .copied()
        .filter(|&j| wl.jobs[j].deadline.is_some())
        .collect();
    let met = with_deadline
        .iter()
        .filter(|&&j| {
            let job = &wl.jobs[j];
            end[j] <= job.submit + job.deadline.unwrap_or(0)
        })
        .count();
    let width = series.width;
    let points = (0..series.alloc.len())
        .filter(|&b| (b as Time) * width < makespan.max(1))
        .map(|b| {
            let lo = b as Time * width;
            let span = ((b as Time + 1) * width).min(makespan.max(1)) - lo;
            let span = span.max(1) as f64;
            SeriesPoint {
                t_s: lo as f64 / 1000.0,
                gpu_util_pct: if capacity == 0 {
                    0.0
                } else {
                    100.0 * series.alloc[b] as f64 / (capacity as f64 * span)
                },
                queue_len: series.queue[b] as f64 / span,
                running: series.running[b] as f64 / span,
            }
        })
        .collect();
    Ok(SimResult {
        policy: params.policy.clone(),
        placement: params.placement.clone(),
        seed: params.seed,
        jobs: done.len(),
        rejected,
        jct_mean_s: jct_mean,
        jct_p50_s: pct(&jct, 50.0),
        jct_p95_s: pct(&jct, 95.0),
        jct_p99_s: pct(&jct, 99.0),
        wait_mean_s: wait_mean,
        wait_p50_s: pct(&wait, 50.0),
        wait_p99_s: pct(&wait, 99.0),
        makespan_s: makespan as f64 / 1000.0,
        gpu_util_pct: util,
        gpu_hours_served: to_hours(served),
        gpu_hours_allocated: to_hours(total_alloc),
        preemptions: total_preemptions,
        lost_gpu_hours: to_hours(lost_gpu_ms),
        node_failures,
        interruptions,
        failure_lost_gpu_hours: to_hours(failure_lost_gpu_ms),
        availability_pct: availability,
        deadline_jobs: with_deadline.len(),
        deadline_met_pct: (!with_deadline.is_empty())
            .then(|| 100.0 * met as f64 / with_deadline.len() as f64),
        jain_index: jain(&slowdowns),
        tenants,
        classes,
        events,
        wall_s: wall.elapsed().as_secs_f64(),
        money: None,
        series: points,
        jct_sorted_s: jct.iter().map(|&x| x as f64 / 1000.0).collect(),
        rejected_examples,
    })
}
