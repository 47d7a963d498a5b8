//! The placement policies. The six published baselines follow
//! `shared/specs/openb-benchmark.md` §4 to the letter (integer truncation
//! included, since it decides ties); see ARCHITECTURE.md for Suanli's own.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use suanli_core::{GpuMask, Ledger, NodeId, NodeSpec, NodeState, Request, MILLI_PER_GPU};

use crate::frag::Workload;
use crate::policy::{Placement, PlacementPolicy, Score, Scorer};

/// Normalisation constants of the reference simulator (milli-CPU, GPU milli).
pub const MAX_CPU: f64 = 128_000.0;
pub const MAX_GPU: f64 = 8_000.0;
const MAX_GPU_I: i64 = 8_000;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Devices in ascending free-milli order (stable by index), first `k` with at
/// least `m` free: what the reference calls "pack onto the least free fitting GPUs".
fn ascending_pick(left: &[u16], k: usize, m: u16) -> Option<GpuMask> {
    let mut idx: Vec<usize> = (0..left.len()).collect();
    idx.sort_by_key(|&i| left[i]);
    let mut mask = 0u16;
    let mut n = 0;
    for i in idx {
        if n == k {
            break;
        }
        if left[i] >= m {
            mask |= 1 << i;
            n += 1;
        }
    }
    (n == k).then_some(GpuMask(mask))
}

/// `random`: a uniformly random feasible node, then a uniformly random device
/// with enough free milli (whole-device requests take the lowest free devices).
pub struct RandomPolicy {
    rng: ChaCha8Rng,
}

impl RandomPolicy {
    pub fn new(seed: u64) -> Self {
        RandomPolicy {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_4a4d),
        }
    }
}

impl PlacementPolicy for RandomPolicy {
    fn name(&self) -> &'static str {
        "random"
    }

    /// A uniform draw over every feasible node: offering one node per group
    /// would make it a draw over groups.
    fn same_for_equal_free(&self) -> bool {
        false
    }

    fn place(&mut self, ledger: &Ledger, req: &Request, order: &[NodeId]) -> Option<Placement> {
        let (specs, states) = (ledger.specs(), ledger.states());
        let mut chosen = None;
        let mut seen = 0u32;
        for &n in order {
            if states[n as usize].fits(&specs[n as usize], req) {
                seen += 1;
                if self.rng.gen_range(0..seen) == 0 {
                    chosen = Some(n);
                }
            }
        }
        let node = chosen?;
        let st = &states[node as usize];
        let gpus = if req.is_share() {
            let fit: Vec<usize> = (0..st.gpu_left().len())
                .filter(|&i| st.gpu_left()[i] >= req.gpu_milli)
                .collect();
            GpuMask::single(fit[self.rng.gen_range(0..fit.len())])
        } else {
            st.default_gpus(req)
        };
        Some(Placement { node, gpus })
    }
}

/// `bestfit`: the node left with the least free CPU and GPU (weighted 1:1).
pub struct BestFit;

impl Scorer for BestFit {
    fn score(&self, _: &NodeSpec, st: &NodeState, req: &Request) -> (Score, GpuMask) {
        let mut raw = 0.0;
        raw += (st.cpu_free as f64 - req.cpu_milli as f64) / MAX_CPU * 0.5;
        raw += (st.total_gpu_left() as f64 - req.total_gpu_milli() as f64) / MAX_GPU * 0.5;
        let s = ((1.0 - raw) * 100.0) as i64;
        (Score::int(s), st.default_gpus(req))
    }
}

/// `dotprod`: Tetris's alignment score; the smallest dot product of free
/// resources and request wins.
pub struct DotProd;

impl Scorer for DotProd {
    fn score(&self, _: &NodeSpec, st: &NodeState, req: &Request) -> (Score, GpuMask) {
        let node = [
            st.cpu_free as f64 / MAX_CPU,
            st.total_gpu_left() as f64 / MAX_GPU,
        ];
        let pod = [
            req.cpu_milli as f64 / MAX_CPU,
            req.total_gpu_milli() as f64 / MAX_GPU,
        ];
        let dot = node[0] * pod[0] + node[1] * pod[1];
        let s = (100.0 * (1.0 - dot / 2.0)) as i64;
        (Score::int(s), st.default_gpus(req))
    }
}

/// `packing`: prefer shared devices already in use, then free devices of a
/// used node, then an idle node.
pub struct GpuPacking;

impl Scorer for GpuPacking {
    fn score(&self, _: &NodeSpec, st: &NodeState, req: &Request) -> (Score, GpuMask) {
        let gpus = st.default_gpus(req);
        if req.num_gpu == 0 {
            return (Score::int(0), gpus);
        }
        let left = st.gpu_left();
        let fully_free = st.fully_free() as i64;
        if fully_free == left.len() as i64 {
            return (Score::int((33 - fully_free).max(fully_free)), gpus);
        }
        let Some(pick) = ascending_pick(left, req.num_gpu as usize, req.gpu_milli) else {
            return (Score::int(0), gpus);
        };
        let used_free = pick.iter().filter(|&i| left[i] == MILLI_PER_GPU).count() as i64;
        let s = if used_free > 0 {
            (50 - used_free).max(33)
        } else {
            let pct: i64 = pick.iter().map(|i| left[i] as i64 * 100 / 1000).sum();
            (100 - pct / 10).max(50)
        };
        (Score::int(s), gpus)
    }
}

/// `clustering`: keep tasks of the same shape together.
pub struct GpuClustering;

impl Scorer for GpuClustering {
    fn score(&self, _: &NodeSpec, st: &NodeState, req: &Request) -> (Score, GpuMask) {
        let gpus = st.default_gpus(req);
        let Some(tag) = suanli_core::shape_index(req.num_gpu as u32, req.gpu_milli) else {
            return (Score::int(0), gpus);
        };
        let base = 25 * (MAX_GPU_I - st.total_gpu_left() as i64) / MAX_GPU_I;
        let tags = st.gpu_tasks.iter().filter(|&&c| c > 0).count();
        let s = if st.gpu_tasks[tag] > 0 {
            if tags == 1 {
                base + 75
            } else {
                base + 50
            }
        } else if tags == 0 {
            base + 25
        } else {
            base
        };
        (Score::int(s), gpus)
    }

    /// The score counts the tasks of each shape on the node, which equal
    /// free resources do not determine (one 500-milli task or two 250s).
    fn same_for_equal_free(&self) -> bool {
        false
    }
}

/// The node after `req` takes its devices the way the reference does it
/// (`Sub`: least-free fitting devices first). Returns (cpu_left, left).
fn after(st: &NodeState, req: &Request) -> (u64, [u16; 16], usize) {
    let left = st.gpu_left();
    let mut out = [0u16; 16];
    out[..left.len()].copy_from_slice(left);
    if req.num_gpu > 0 {
        if let Some(p) = ascending_pick(left, req.num_gpu as usize, req.gpu_milli) {
            for i in p.iter() {
                out[i] -= req.gpu_milli;
            }
        }
    }
    (st.cpu_free.saturating_sub(req.cpu_milli), out, left.len())
}

/// `fgd`: fragmentation gradient descent — the placement that increases the
/// node's expected fragmentation F the least.
pub struct Fgd {
    pub workload: Workload,
}

impl Fgd {
    /// For each candidate placement on the node: (F before − F after, devices).
    /// Share requests try each fitting device (one evaluation per distinct free
    /// value, since F depends only on the multiset of free milli).
    fn deltas(
        &self,
        spec: &NodeSpec,
        st: &NodeState,
        req: &Request,
        out: &mut Vec<(f64, GpuMask)>,
    ) {
        let w = &self.workload;
        let f0 = w.node_frag(spec.model, st.cpu_free, st.gpu_left());
        let cpu1 = st.cpu_free.saturating_sub(req.cpu_milli);
        if req.is_share() {
            let left = st.gpu_left();
            let mut buf = [0u16; 16];
            buf[..left.len()].copy_from_slice(left);
            let mut seen: [(u16, f64); 16] = [(0, 0.0); 16];
            let mut nseen = 0;
            for (i, &l) in left.iter().enumerate() {
                if l < req.gpu_milli {
                    continue;
                }
                let d = match seen[..nseen].iter().find(|(v, _)| *v == l) {
                    Some(&(_, d)) => d,
                    None => {
                        buf[i] = l - req.gpu_milli;
                        let f1 = w.node_frag(spec.model, cpu1, &buf[..left.len()]);
                        buf[i] = l;
                        seen[nseen] = (l, f0 - f1);
                        nseen += 1;
                        f0 - f1
                    }
                };
                out.push((d, GpuMask::single(i)));
            }
        } else {
            let (cpu, left1, g) = after(st, req);
            let f1 = w.node_frag(spec.model, cpu, &left1[..g]);
            out.push((f0 - f1, st.lowest_free(req.num_gpu as usize)));
        }
    }
}

impl Scorer for Fgd {
    fn score(&self, spec: &NodeSpec, st: &NodeState, req: &Request) -> (Score, GpuMask) {
        let mut cands = Vec::with_capacity(8);
        self.deltas(spec, st, req, &mut cands);
        let mut best: Option<(i64, GpuMask)> = None;
        for (d, g) in cands {
            let s = (sigmoid(d / 1000.0) * 100.0) as i64;
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, g));
            }
        }
        let (s, g) = best.unwrap_or((0, GpuMask::default()));
        (Score::int(s), g)
    }

    fn set_target(&mut self, target: &Workload) -> bool {
        self.workload = target.clone();
        true
    }
}

/// `fgd-sa`, stranding-aware FGD: Suanli's default policy.
///
/// GPU requests are placed exactly as FGD places them. CPU-only requests go
/// first to the node left with the fewest idle GPU milli, and only among
/// those by FGD's score: CPU work that lands beside idle GPUs eats the CPU
/// those GPUs need and strands them, and FGD cannot see that coming because
/// F(n) only changes when a typical task's CPU threshold is crossed.
pub struct FgdStrandAware {
    pub fgd: Fgd,
}

impl Scorer for FgdStrandAware {
    fn score(&self, spec: &NodeSpec, st: &NodeState, req: &Request) -> (Score, GpuMask) {
        let (s, g) = self.fgd.score(spec, st, req);
        if req.num_gpu > 0 {
            return (s, g);
        }
        let idle_after = st.total_gpu_left() as f64;
        (
            Score {
                primary: -idle_after,
                secondary: s.primary,
            },
            g,
        )
    }

    fn set_target(&mut self, target: &Workload) -> bool {
        self.fgd.set_target(target)
    }
}
