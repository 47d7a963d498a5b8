//! A seeded synthetic cluster and workload in the shape of the openb data:
//! a heterogeneous pool (NVIDIA and Ascend side by side) and a stream of
//! CPU-only tasks, GPU shares, and 1–8-GPU tasks, some pinned to a model.
//! Used by `suanli sim openb --synthetic` and by tests on machines without
//! `../shared`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use suanli_core::{ModelSet, Models, NodeSpec, Request};

use crate::openb::{OpenbPod, OpenbTrace};

/// (model, GPUs per node, CPU milli, memory MiB, weight in the node mix)
const NODE_KINDS: &[(&str, u8, u64, u64, u32)] = &[
    ("A100-80G", 8, 128_000, 1_048_576, 35),
    ("Ascend910B", 8, 192_000, 1_572_864, 20),
    ("T4", 4, 64_000, 262_144, 25),
    ("V100M32", 2, 64_000, 262_144, 15),
    ("A10", 1, 32_000, 131_072, 5),
];

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|i| i.1).sum();
    let mut x = rng.gen_range(0..total);
    for &(v, w) in items {
        if x < w {
            return v;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

/// A cluster of `nodes` nodes and a pod list whose GPU request totals about
/// the cluster's GPU capacity. The same seed gives the same trace.
pub fn generate(nodes: usize, seed: u64) -> OpenbTrace {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut models = Models::new();
    let kinds: Vec<(usize, u32)> = NODE_KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| (i, k.4))
        .collect();
    let mut specs = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let (model, gpus, cpu, mem, _) = NODE_KINDS[pick(&mut rng, &kinds)];
        specs.push(NodeSpec {
            name: format!("syn-node-{n:05}"),
            cpu_milli: cpu,
            memory_mib: mem,
            gpus,
            model: Some(models.intern(model).expect("valid model name")),
        });
    }
    let capacity: u64 = specs.iter().map(|s| s.gpus as u64 * 1000).sum();
    // (num_gpu, weight); gpu_milli for shares drawn separately.
    let shapes = [(0u32, 18), (1, 40), (101, 27), (2, 8), (4, 5), (8, 2)];
    let shares = [
        (100u32, 10),
        (250, 20),
        (300, 10),
        (500, 35),
        (700, 15),
        (900, 10),
    ];
    let mut pods = Vec::new();
    let mut total = 0u64;
    while total < capacity {
        let shape = pick(&mut rng, &shapes);
        let (num_gpu, milli) = match shape {
            0 => (0, 0),
            1 => (1, pick(&mut rng, &shares)),
            101 => (1, 1000),
            k => (k, 1000),
        };
        let per = num_gpu.max(1) as u64;
        let cpu = per * 1000 * rng.gen_range(2..=12u64);
        let mem = cpu / 1000 * 4096;
        let mut set = ModelSet::ANY;
        if num_gpu > 0 && rng.gen_bool(0.15) {
            let m = if num_gpu >= 4 {
                "Ascend910B"
            } else {
                "A100-80G"
            };
            set = ModelSet::single(models.get(m).expect("model exists"));
        }
        let req = Request::new(cpu, mem, num_gpu, milli, set).expect("valid synthetic request");
        total += req.total_gpu_milli();
        pods.push(OpenbPod {
            name: format!("syn-pod-{:06}", pods.len()),
            req,
            creation_time: None,
            deletion_time: None,
        });
    }
    OpenbTrace {
        models,
        nodes: specs,
        pods,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_seed_same_trace() {
        let a = super::generate(50, 7);
        let b = super::generate(50, 7);
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.pods, b.pods);
        let c = super::generate(50, 8);
        assert_ne!(a.pods, c.pods);
        let cap: u64 = a.nodes.iter().map(|n| n.gpus as u64 * 1000).sum();
        let req: u64 = a.pods.iter().map(|p| p.req.total_gpu_milli()).sum();
        assert!(req >= cap && req < cap + 8000);
    }
}
