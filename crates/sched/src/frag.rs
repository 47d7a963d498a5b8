//! The target workload and GPU fragmentation, after Weng et al., "Beware of
//! Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient
//! Descent", USENIX ATC '23 (formulas as given in `shared/specs/openb-benchmark.md`).
//!
//! F(n) = Σ_t p_t · f(n, t): the GPU milli of node n that a task of typical shape
//! t could not use, weighted by how common t is. Floating-point accumulation
//! follows the reference simulator's order (per-category sums, then the sum of
//! the categories) so that integer-truncated scores agree digit for digit.

use std::collections::HashMap;

use suanli_core::{ModelId, ModelSet, Request};

/// One shape of the target workload with its frequency `p` (Σ p = 1).
#[derive(Clone, Debug, PartialEq)]
pub struct TypicalPod {
    pub cpu_milli: u64,
    pub gpu_milli: u16,
    pub num_gpu: u8,
    pub models: ModelSet,
    pub p: f64,
}

/// The target workload: the most common request shapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    pub pods: Vec<TypicalPod>,
    /// Share of all requests the chosen shapes cover (0..=1).
    pub coverage: f64,
}

// Categories of the reference simulator, in its summation order.
const Q1_LACK_BOTH: usize = 0;
const Q2_LACK_GPU: usize = 1;
const Q4_LACK_CPU: usize = 3;
const XL_SATISFIED: usize = 4;
const XR_LACK_CPU: usize = 5;
const NO_ACCESS: usize = 6;

/// Share of requests the typical workload covers (percent), per the spec.
pub const TYPICAL_THRESHOLD_PCT: u32 = 95;

/// A request's shape, as the target workload groups them: (cpu milli,
/// GPU milli per device, GPU count, accepted models).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape(u64, u16, u8, ModelSet);

impl Shape {
    pub fn of(r: &Request) -> Shape {
        Shape(r.cpu_milli, r.gpu_milli, r.num_gpu, r.models)
    }
}

impl Workload {
    /// Group requests by (cpu, gpu milli, GPU count, models), most common first,
    /// and keep groups until they cover at least `threshold_pct` percent of all
    /// requests (`threshold_pct`, e.g. 95); frequencies are renormalised over the
    /// kept groups.
    pub fn typical<'a>(
        requests: impl IntoIterator<Item = &'a Request>,
        threshold_pct: u32,
    ) -> Self {
        let mut counts: HashMap<Shape, u64> = HashMap::new();
        for r in requests {
            *counts.entry(Shape::of(r)).or_default() += 1;
        }
        Workload::from_counts(counts, threshold_pct)
    }

    /// [`Workload::typical`] from the number of requests of each shape.
    pub fn from_counts(counts: impl IntoIterator<Item = (Shape, u64)>, threshold_pct: u32) -> Self {
        let mut groups: Vec<(Shape, u64)> = counts.into_iter().filter(|c| c.1 > 0).collect();
        let total: u64 = groups.iter().map(|g| g.1).sum();
        if total == 0 {
            return Workload::default();
        }
        // Most common first; ties by larger (cpu, milli, count, models), as the
        // reference's reversed sort does.
        groups.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let total_f = total as f64;
        let expected = threshold_pct as f64 * total_f / 100.0;
        let mut cum = 0.0f64;
        let mut kept = 0;
        while cum < expected && kept < groups.len() {
            cum += groups[kept].1 as f64;
            kept += 1;
        }
        let norm = cum / total_f;
        let pods = groups[..kept]
            .iter()
            .map(
                |&(Shape(cpu_milli, gpu_milli, num_gpu, models), n)| TypicalPod {
                    cpu_milli,
                    gpu_milli,
                    num_gpu,
                    models,
                    p: if kept == groups.len() {
                        n as f64 / total_f
                    } else {
                        (n as f64 / total_f) / norm
                    },
                },
            )
            .collect();
        Workload {
            pods,
            coverage: norm,
        }
    }

    /// The same workload with frequencies and coverage rounded to multiples
    /// of `1/steps`; shapes rounded to 0 are dropped.
    pub fn rounded(mut self, steps: u32) -> Workload {
        let s = steps as f64;
        let round = |x: f64| (x * s).round() / s;
        self.pods.retain_mut(|t| {
            t.p = round(t.p);
            t.p > 0.0
        });
        self.coverage = round(self.coverage);
        self
    }

    /// F(n) for a node of `model` with `cpu_left` milli-CPU and per-device free
    /// milli `left`.
    pub fn node_frag(&self, model: Option<ModelId>, cpu_left: u64, left: &[u16]) -> f64 {
        let total: u32 = left.iter().map(|&l| l as u32).sum();
        if total == 0 {
            return 0.0;
        }
        let total = total as f64;
        let mut cat = [0.0f64; 7];
        for t in &self.pods {
            let cpu_ok = cpu_left >= t.cpu_milli;
            if t.gpu_milli == 0 {
                cat[if cpu_ok { XL_SATISFIED } else { XR_LACK_CPU }] += t.p * total;
                continue;
            }
            if !t.models.accepts(model) {
                cat[NO_ACCESS] += t.p * total;
                continue;
            }
            let mut fitting = 0u32;
            let mut too_small = 0u32;
            for &l in left {
                if l >= t.gpu_milli {
                    fitting += 1;
                } else {
                    too_small += l as u32;
                }
            }
            if fitting >= t.num_gpu as u32 {
                if cpu_ok {
                    cat[Q2_LACK_GPU] += t.p * too_small as f64;
                } else {
                    cat[Q4_LACK_CPU] += t.p * total;
                }
            } else if cpu_ok {
                cat[Q2_LACK_GPU] += t.p * total;
            } else {
                cat[Q1_LACK_BOTH] += t.p * total;
            }
        }
        let mut out = 0.0;
        for (i, v) in cat.iter().enumerate() {
            if i != 2 {
                out += v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cpu: u64, n: u32, m: u32) -> Request {
        Request::new(cpu, 0, n, m, ModelSet::ANY).unwrap()
    }

    #[test]
    fn typical_keeps_most_common_until_threshold() {
        let mut rs = vec![req(1000, 1, 500); 6];
        rs.extend(vec![req(2000, 1, 1000); 3]);
        rs.push(req(0, 0, 0));
        let w = Workload::typical(&rs, 85);
        assert_eq!(w.pods.len(), 2);
        assert!((w.coverage - 0.9).abs() < 1e-12);
        assert!((w.pods[0].p - 6.0 / 9.0).abs() < 1e-12);
        let s: f64 = w.pods.iter().map(|p| p.p).sum();
        assert!((s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn fragmentation_counts_only_unusable_milli() {
        // Workload: only half-GPU tasks needing 1 CPU.
        let w = Workload::typical(&[req(1000, 1, 500)], 95);
        // Devices with 300 and 800 free: 300 is a fragment, 800 is usable.
        assert_eq!(w.node_frag(Some(ModelId(0)), 4000, &[300, 800]), 300.0);
        // Without CPU everything idle is a fragment.
        assert_eq!(w.node_frag(Some(ModelId(0)), 500, &[300, 800]), 1100.0);
        // A model the task does not accept: everything is a fragment.
        let w2 = Workload::typical(
            &[Request::new(1000, 0, 1, 500, ModelSet::single(ModelId(1))).unwrap()],
            95,
        );
        assert_eq!(w2.node_frag(Some(ModelId(0)), 4000, &[300, 800]), 1100.0);
        // CPU-only tasks see every idle GPU milli as a fragment.
        let w3 = Workload::typical(&[req(1000, 0, 0)], 95);
        assert_eq!(w3.node_frag(Some(ModelId(0)), 4000, &[1000, 1000]), 2000.0);
        assert_eq!(w3.node_frag(None, 4000, &[]), 0.0);
    }
}
