//! Checks against the reference simulator and the published figures. These read
//! `../shared`; without it they print why and pass.

use std::path::{Path, PathBuf};

use suanli_sched::{make_policy, Workload};
use suanli_sim::fill::{fill, TYPICAL_THRESHOLD_PCT};
use suanli_sim::{replay, OpenbTrace};

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if p.join("traces/openb").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} not found (the openb traces live in ../shared)",
            p.display()
        );
        None
    }
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
    let run = fill(&t.nodes, &reqs, &w, &plan, p.as_mut());
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
