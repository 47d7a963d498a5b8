//! Decisions of each policy on small clusters, and memoisation safety.

use proptest::prelude::*;
use suanli_core::{GpuMask, Ledger, ModelId, ModelSet, NodeSpec, Request};
use suanli_sched::{make_policy, registry::make_policy_with, Workload, POLICY_NAMES};

fn node(name: &str, gpus: u8, cpu: u64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli: cpu,
        memory_mib: 1 << 20,
        gpus,
        model: Some(ModelId(0)),
    }
}

fn req(cpu: u64, n: u32, m: u32) -> Request {
    Request::new(cpu, 1024, n, m, ModelSet::ANY).unwrap()
}

fn order(l: &Ledger) -> Vec<u32> {
    (0..l.len() as u32).collect()
}

#[test]
fn unknown_policy_lists_valid_names() {
    let e = make_policy("fastest", &Workload::default(), 1)
        .err()
        .unwrap();
    let msg = e.to_string();
    for p in POLICY_NAMES {
        assert!(msg.contains(p), "{msg}");
    }
}

#[test]
fn infeasible_request_is_none_for_every_policy() {
    let l = Ledger::new(vec![node("a", 2, 8000)]);
    let w = Workload::typical(&[req(1000, 1, 500)], 95);
    for p in POLICY_NAMES {
        let mut pol = make_policy(p, &w, 1).unwrap();
        assert_eq!(pol.place(&l, &req(1000, 4, 1000), &order(&l)), None, "{p}");
        assert_eq!(pol.place(&l, &req(9000, 1, 100), &order(&l)), None, "{p}");
        let wrong_model = Request::new(0, 0, 1, 100, ModelSet::single(ModelId(3))).unwrap();
        assert_eq!(pol.place(&l, &wrong_model, &order(&l)), None, "{p}");
    }
}

#[test]
fn bestfit_prefers_the_fuller_node_and_tightest_device() {
    let mut l = Ledger::new(vec![node("a", 4, 32000), node("b", 4, 32000)]);
    l.allocate(&req(1000, 1, 700), 1, GpuMask::single(2))
        .unwrap();
    let mut p = make_policy("bestfit", &Workload::default(), 1).unwrap();
    let got = p.place(&l, &req(1000, 1, 200), &order(&l)).unwrap();
    assert_eq!(got.node, 1);
    assert_eq!(
        got.gpus,
        GpuMask::single(2),
        "share goes to the least-free fitting device"
    );
}

#[test]
fn ties_go_to_the_earliest_node_in_order() {
    let l = Ledger::new(vec![
        node("a", 4, 32000),
        node("b", 4, 32000),
        node("c", 4, 32000),
    ]);
    let mut p = make_policy("bestfit", &Workload::default(), 1).unwrap();
    let got = p.place(&l, &req(1000, 1, 1000), &[2, 0, 1]).unwrap();
    assert_eq!(got.node, 2);
}

#[test]
fn packing_prefers_used_shared_devices() {
    let mut l = Ledger::new(vec![node("a", 4, 32000), node("b", 4, 32000)]);
    l.allocate(&req(1000, 1, 300), 0, GpuMask::single(1))
        .unwrap();
    let mut p = make_policy("packing", &Workload::default(), 1).unwrap();
    let got = p.place(&l, &req(1000, 1, 500), &[1, 0]).unwrap();
    assert_eq!((got.node, got.gpus), (0, GpuMask::single(1)));
}

#[test]
fn clustering_keeps_shapes_together() {
    let mut l = Ledger::new(vec![
        node("a", 8, 64000),
        node("b", 8, 64000),
        node("c", 8, 64000),
    ]);
    l.allocate(&req(1000, 2, 1000), 0, GpuMask(0b11)).unwrap();
    l.allocate(&req(1000, 1, 300), 1, GpuMask::single(0))
        .unwrap();
    let mut p = make_policy("clustering", &Workload::default(), 1).unwrap();
    assert_eq!(
        p.place(&l, &req(1000, 2, 1000), &[2, 1, 0]).unwrap().node,
        0
    );
    assert_eq!(p.place(&l, &req(1000, 1, 200), &[2, 0, 1]).unwrap().node, 1);
}

#[test]
fn fgd_fills_a_fragment_instead_of_opening_a_device() {
    // Target workload: 0.5- and 0.6-GPU tasks. Taking the half-used device
    // removes a 500-milli fragment (useless to 0.6 tasks); opening a fresh
    // device would create one.
    let w = Workload::typical(&[req(1000, 1, 500), req(1000, 1, 600)], 100);
    let mut l = Ledger::new(vec![node("a", 2, 32000), node("b", 2, 32000)]);
    l.allocate(&req(1000, 1, 500), 1, GpuMask::single(1))
        .unwrap();
    let mut p = make_policy("fgd", &w, 1).unwrap();
    let got = p.place(&l, &req(1000, 1, 500), &[0, 1]).unwrap();
    assert_eq!((got.node, got.gpus), (1, GpuMask::single(1)));
}

#[test]
fn fgd_sa_puts_cpu_work_where_no_gpu_is_idle() {
    let w = Workload::typical(&[req(4000, 1, 1000), req(2000, 0, 0)], 100);
    let mut l = Ledger::new(vec![node("idle", 2, 16000), node("full", 2, 16000)]);
    l.allocate(&req(1000, 2, 1000), 1, GpuMask(0b11)).unwrap();
    let mut p = make_policy("fgd-sa", &w, 1).unwrap();
    assert_eq!(p.place(&l, &req(8000, 0, 0), &[0, 1]).unwrap().node, 1);
    // GPU requests are placed as FGD places them.
    let mut f = make_policy("fgd", &w, 1).unwrap();
    let r = req(1000, 1, 1000);
    assert_eq!(p.place(&l, &r, &[0, 1]), f.place(&l, &r, &[0, 1]));
}

proptest! {
    /// Memoised and unmemoised policies make the same decisions on any
    /// sequence of placements and releases.
    #[test]
    fn memo_never_changes_a_decision(
        ops in prop::collection::vec((0u32..4, 1u32..=1000, 0u64..6, any::<bool>()), 1..120),
        pol in prop::sample::select(POLICY_NAMES.iter().filter(|p| **p != "random").copied().collect::<Vec<_>>()),
    ) {
        let specs: Vec<NodeSpec> = (0..6).map(|i| node(&format!("n{i}"), [1, 2, 4, 8, 8, 4][i], 32000)).collect();
        let reqs: Vec<Request> = ops.iter().map(|&(n, m, c, _)| {
            let m = if n >= 2 { 1000 } else if n == 0 { 0 } else { m };
            req(c * 2000, n, m)
        }).collect();
        let w = Workload::typical(&reqs, 95);
        let mut a = make_policy_with(pol, &w, 7, true).unwrap();
        let mut b = make_policy_with(pol, &w, 7, false).unwrap();
        let mut l = Ledger::new(specs);
        let ord: Vec<u32> = vec![3, 1, 4, 0, 5, 2];
        let mut live = Vec::new();
        for (r, &(_, _, _, release)) in reqs.iter().zip(&ops) {
            if release && !live.is_empty() {
                l.release(live.remove(0)).unwrap();
            }
            let pa = a.place(&l, r, &ord);
            let pb = b.place(&l, r, &ord);
            prop_assert_eq!(pa, pb);
            if let Some(p) = pa {
                live.push(l.allocate(r, p.node, p.gpus).unwrap());
            }
        }
    }
}
