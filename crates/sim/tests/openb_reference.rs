//! Checks against the reference simulator and the published figures. These read
//! `../shared`; without it they print why and pass, or fail when
//! SUANLI_REQUIRE_TRACES=1 (as in CI).

mod common;

use std::path::PathBuf;

use suanli_sched::{make_policy, Target, Workload};
use suanli_sim::fill::{fill, TYPICAL_THRESHOLD_PCT};
use suanli_sim::{replay, OpenbTrace};

fn shared() -> Option<PathBuf> {
    common::shared("traces/openb", "the openb traces")
}

fn replay_matches(policy: &str, events_file: &str) {
    let Some(sh) = shared() else { return };
    let o = sh.join("traces/openb");
    let t = OpenbTrace::load(
        &o.join("openb_node_list_gpu_node.csv"),
        &o.join("openb_pod_list_default.csv"),
    )
    .unwrap();
    let reqs = t.requests();
    let names: Vec<String> = t.pods.iter().map(|p| p.name.clone()).collect();
    let nodes: Vec<String> = t.nodes.iter().map(|n| n.name.clone()).collect();
    let s = sh.join("specs/openb-seed42");
    let plan = replay::load_plan(
        &s.join("submission_order.txt"),
        &s.join("node_rank.csv"),
        &names,
        &nodes,
    )
    .unwrap();
    let w = Workload::typical(&reqs, TYPICAL_THRESHOLD_PCT);
    assert_eq!(w.pods.len(), 35, "typical pods of the default trace");
    let mut p = make_policy(policy, &w, 42).unwrap();
    let run = fill(&t.nodes, &reqs, &w, &plan, p.as_mut(), Target::Given);
    let text = std::fs::read_to_string(s.join(events_file)).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let i: usize = f[0].parse().unwrap();
        let e = run.events[i];
        let used: u64 = f[1].parse().unwrap();
        let arrived: u64 = f[2].parse().unwrap();
        let frag: f64 = f[3].parse().unwrap();
        let failed = f[5] == "1";
        assert_eq!(
            (e.used_milli, e.arrived_milli, e.failed),
            (used, arrived, failed),
            "{policy}: event {i} differs from the reference"
        );
        assert!(
            (e.frag_milli - frag).abs() < 0.011,
            "{policy}: event {i} frag {} vs {frag}",
            e.frag_milli
        );
        n += 1;
    }
    assert_eq!(n, run.events.len());
}

#[test]
fn fgd_replays_reference_seed42_digit_for_digit() {
    replay_matches("fgd", "fgd_events.txt");
}

#[test]
fn bestfit_replays_reference_seed42_digit_for_digit() {
    replay_matches("bestfit", "bestfit_events.txt");
}

fn trace(name: &str) -> Option<OpenbTrace> {
    let o = shared()?.join("traces/openb");
    Some(
        OpenbTrace::load(
            &o.join("openb_node_list_gpu_node.csv"),
            &o.join(format!("openb_pod_list_{name}.csv")),
        )
        .unwrap(),
    )
}

/// Every openb pod list of the public release beside the checkout.
const TRACES: [&str; 8] = [
    "default",
    "gpushare20",
    "gpushare40",
    "gpushare60",
    "gpushare80",
    "gpushare100",
    "cpu050",
    "cpu250",
];

/// The published figures' method: the whole trace's typical workload given.
fn mean_alloc_130(t: &OpenbTrace, policy: &str) -> f64 {
    mean_alloc_130_with(t, policy, Target::Given)
}

fn mean_alloc_130_with(t: &OpenbTrace, policy: &str, target: Target) -> f64 {
    use rayon::prelude::*;
    let reqs = t.requests();
    let v: Vec<f64> = (42..=51u64)
        .into_par_iter()
        .map(|s| {
            suanli_sim::fill::experiment(&t.nodes, &reqs, policy, s, 1.3, target)
                .unwrap()
                .run
                .final_pct()
                .0
        })
        .collect();
    v.iter().sum::<f64>() / v.len() as f64
}

/// Spec §6: the mean over seeds 42..51 of each reproduced policy lies inside
/// the published min–max range at 130%.
#[test]
fn six_policies_land_inside_the_published_ranges() {
    let Some(t) = trace("default") else { return };
    let published = [
        ("random", 87.07, 88.03),
        ("dotprod", 90.54, 91.28),
        ("clustering", 90.81, 92.96),
        ("packing", 91.29, 92.79),
        ("bestfit", 92.87, 93.25),
        ("fgd", 95.27, 95.49),
    ];
    for (p, lo, hi) in published {
        let m = mean_alloc_130(&t, p);
        eprintln!("{p}: mean alloc at 130% = {m:.2} (published range {lo}–{hi})");
        assert!(m >= lo && m <= hi, "{p}: {m:.2} outside {lo}–{hi}");
    }
}

/// Suanli's default policy allocates more than FGD at 130% on every openb trace.
#[test]
fn fgd_sa_beats_fgd_on_every_openb_trace() {
    for name in TRACES {
        let Some(t) = trace(name) else { return };
        let (ours, fgd) = (mean_alloc_130(&t, "fgd-sa"), mean_alloc_130(&t, "fgd"));
        eprintln!(
            "{name}: fgd-sa {ours:.3} vs fgd {fgd:.3} ({:+.3} pp)",
            ours - fgd
        );
        assert!(ours > fgd, "{name}: fgd-sa {ours:.3} <= fgd {fgd:.3}");
    }
}

/// Issue 15: the live pool cannot know the trace up front; the target it
/// learns from arrivals costs the default policy at most 0.2 pp of
/// allocation at 130% against the given one, on every openb trace.
#[test]
fn a_learned_target_allocates_within_0_2_pp_of_the_given_one() {
    for name in TRACES {
        let Some(t) = trace(name) else { return };
        let given = mean_alloc_130(&t, "fgd-sa");
        let learned = mean_alloc_130_with(&t, "fgd-sa", Target::default());
        eprintln!(
            "{name}: fgd-sa learned {learned:.3} vs given {given:.3} ({:+.3} pp)",
            learned - given
        );
        assert!(
            learned >= given - 0.2,
            "{name}: learned {learned:.3} < given {given:.3} - 0.2"
        );
    }
}
