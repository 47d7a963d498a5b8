//! The openb placement experiment (`shared/specs/openb-benchmark.md` §1, §5):
//! fill a cluster with a shuffled, tuned-up stream of pods that never leave,
//! one policy decision per pod, and measure GPU allocation and fragmentation
//! against arrived load. Deterministic: a run is a function of (nodes, pods,
//! policy, seed, tune).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use suanli_core::{Ledger, NodeId, NodeSpec, Request};
use suanli_sched::{make_policy, Learner, PlacementPolicy, PolicyError, Target, Workload};

pub use suanli_sched::TYPICAL_THRESHOLD_PCT;

/// What happened after one submitted pod.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Event {
    /// GPU milli requested by all pods submitted so far (failed ones included).
    pub arrived_milli: u64,
    /// GPU milli allocated in the cluster.
    pub used_milli: u64,
    /// Σ_n F(n), in GPU milli.
    pub frag_milli: f64,
    pub failed: bool,
}

/// The inputs of one fill: which pod is submitted when, and the node ranking
/// that breaks score ties (earlier wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Indices into the pod list, in submission order (copies repeat an index).
    pub order: Vec<usize>,
    /// Nodes from first to last in tie-break order.
    pub rank: Vec<NodeId>,
}

impl Plan {
    /// §1 steps 2–4: shuffle the pods with `seed`, append uniformly drawn
    /// copies while the total GPU request stays within `tune` × capacity, and
    /// draw a random node ranking. Each step has its own RNG stream.
    pub fn seeded(
        pods: &[Request],
        nodes: usize,
        capacity_milli: u64,
        seed: u64,
        tune: f64,
    ) -> Plan {
        let stream = |s: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(s);
            r
        };
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.shuffle(&mut stream(1));
        let target = tune * capacity_milli as f64;
        let mut total: u64 = pods.iter().map(Request::total_gpu_milli).sum();
        let mut rng = stream(2);
        if !pods.is_empty() && pods.iter().any(|p| p.num_gpu > 0) {
            loop {
                let j = rng.gen_range(0..pods.len());
                let r = pods[j].total_gpu_milli();
                if (total + r) as f64 > target {
                    break;
                }
                total += r;
                order.push(j);
            }
        }
        let mut rank: Vec<NodeId> = (0..nodes as NodeId).collect();
        rank.shuffle(&mut stream(3));
        Plan { order, rank }
    }
}

/// Outcome of one fill.
#[derive(Clone, Debug, PartialEq)]
pub struct FillRun {
    pub capacity_milli: u64,
    pub events: Vec<Event>,
}

impl FillRun {
    pub fn pods_submitted(&self) -> usize {
        self.events.len()
    }
    pub fn pods_failed(&self) -> usize {
        self.events.iter().filter(|e| e.failed).count()
    }
    fn pct(&self, milli: f64) -> f64 {
        100.0 * milli / self.capacity_milli as f64
    }
    /// Allocation and fragmentation (% of GPU capacity) at the end of the run.
    pub fn final_pct(&self) -> (f64, f64) {
        self.events.last().map_or((0.0, 0.0), |e| {
            (self.pct(e.used_milli as f64), self.pct(e.frag_milli))
        })
    }
    /// §5 curve: for each integer arrived-load percent x, the mean allocation %
    /// and fragmentation % over the events whose rounded arrived load is x.
    pub fn curve(&self) -> Vec<CurvePoint> {
        let mut out: Vec<CurvePoint> = Vec::new();
        let mut acc = (0.0, 0.0, 0u32);
        let mut cur: Option<i64> = None;
        for e in &self.events {
            let x = self.pct(e.arrived_milli as f64).round() as i64;
            if cur != Some(x) {
                if let Some(c) = cur {
                    out.push(CurvePoint::mean(c, acc));
                }
                cur = Some(x);
                acc = (0.0, 0.0, 0);
            }
            acc.0 += self.pct(e.used_milli as f64);
            acc.1 += self.pct(e.frag_milli);
            acc.2 += 1;
        }
        if let Some(c) = cur {
            out.push(CurvePoint::mean(c, acc));
        }
        out
    }
    /// Curve value at arrived load `x` percent (None if no event rounds to x).
    pub fn at(&self, x: i64) -> Option<CurvePoint> {
        self.curve().into_iter().find(|p| p.arrived_pct == x)
    }
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub struct CurvePoint {
    pub arrived_pct: i64,
    pub alloc_pct: f64,
    pub frag_pct: f64,
}

impl CurvePoint {
    fn mean(x: i64, (a, f, n): (f64, f64, u32)) -> CurvePoint {
        CurvePoint {
            arrived_pct: x,
            alloc_pct: a / n as f64,
            frag_pct: f / n as f64,
        }
    }
}

/// Submit `pods[plan.order[..]]` one at a time through `policy`. A pod that no
/// node can host now fails and is dropped; pods never leave. Fragmentation
/// is measured against `workload` (the trace's typical workload, per the
/// spec); the policy targets it too with [`Target::Given`], or, with
/// [`Target::Learned`], the workload learned from the pods submitted so far
/// (each pod is seen as it arrives, before it is placed).
pub fn fill(
    nodes: &[NodeSpec],
    pods: &[Request],
    workload: &Workload,
    plan: &Plan,
    policy: &mut dyn PlacementPolicy,
    target: Target,
) -> FillRun {
    let mut learner = match target {
        Target::Given => None,
        Target::Learned(p) => {
            policy.set_target(&Workload::default());
            Some(Learner::new(p))
        }
    };
    let mut ledger = Ledger::new(nodes.to_vec());
    let frag_of = |l: &Ledger, n: usize| {
        let (spec, st) = (&l.specs()[n], &l.states()[n]);
        workload.node_frag(spec.model, st.cpu_free, st.gpu_left())
    };
    let mut node_frag: Vec<f64> = (0..nodes.len()).map(|n| frag_of(&ledger, n)).collect();
    let mut events = Vec::with_capacity(plan.order.len());
    let mut arrived = 0u64;
    for &i in &plan.order {
        let req = &pods[i];
        if let Some(l) = &mut learner {
            if l.observe(req, 1) {
                policy.set_target(l.workload());
            }
        }
        arrived += req.total_gpu_milli();
        let failed = match policy.place(&ledger, req, &plan.rank) {
            Some(p) => {
                ledger
                    .allocate(req, p.node, p.gpus)
                    .expect("policy returned an infeasible placement");
                node_frag[p.node as usize] = frag_of(&ledger, p.node as usize);
                false
            }
            None => true,
        };
        events.push(Event {
            arrived_milli: arrived,
            used_milli: ledger.allocated_gpu_milli(),
            frag_milli: node_frag.iter().sum(),
            failed,
        });
    }
    FillRun {
        capacity_milli: ledger.capacity_gpu_milli(),
        events,
    }
}

/// One (policy, seed) experiment with its wall time.
#[derive(Clone, Debug)]
pub struct Experiment {
    pub policy: String,
    pub seed: u64,
    pub run: FillRun,
    pub wall_ms: f64,
}

/// Run the full §1 experiment for `policy` and `seed`, the policy's
/// target workload given (the spec's method) or learned.
pub fn experiment(
    nodes: &[NodeSpec],
    pods: &[Request],
    policy: &str,
    seed: u64,
    tune: f64,
    target: Target,
) -> Result<Experiment, PolicyError> {
    let t0 = std::time::Instant::now();
    let workload = Workload::typical(pods, TYPICAL_THRESHOLD_PCT);
    let mut p = make_policy(policy, &workload, seed)?;
    let capacity: u64 = nodes.iter().map(|n| n.gpus as u64 * 1000).sum();
    let plan = Plan::seeded(pods, nodes.len(), capacity, seed, tune);
    let run = fill(nodes, pods, &workload, &plan, p.as_mut(), target);
    Ok(Experiment {
        policy: policy.to_string(),
        seed,
        run,
        wall_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}
