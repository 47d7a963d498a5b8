//! Job simulator: safety and conservation properties under every queue ×
//! placement policy pair in every generated case, each policy's defining
//! behaviour on small scenarios, determinism.

use std::collections::HashMap;

use proptest::prelude::*;
use suanli_core::{ModelSet, Request};
use suanli_sched::{Class, TenantId, POLICY_NAMES, QUEUE_POLICY_NAMES};
use suanli_sim::jobs::{
    report, simulate, Cluster, Job, NodeChange, NodeEvent, SimEvent, SimParams, SimResult, Workload,
};

const S: u64 = 1000;

/// (submit s, run s, tasks, GPUs per task (or milli if < 1000 given as share), class, tenant)
#[derive(Clone, Copy, Debug)]
struct J {
    submit: u64,
    run: u64,
    tasks: u32,
    gpus: u32,
    milli: u32,
    class: Class,
    tenant: u16,
}

fn j(submit: u64, run: u64, tasks: u32, gpus: u32) -> J {
    J {
        submit,
        run,
        tasks,
        gpus,
        milli: if gpus == 0 { 0 } else { 1000 },
        class: Class::OnDemand,
        tenant: 0,
    }
}

fn workload(jobs: &[J], tenants: usize) -> Workload {
    let mut out: Vec<Job> = jobs
        .iter()
        .enumerate()
        .map(|(i, x)| Job {
            submit: x.submit * S,
            work: x.run * S,
            estimate: None,
            deadline: None,
            tenant: TenantId(x.tenant),
            class: x.class,
            tasks: x.tasks,
            req: Request::new(
                if x.gpus == 0 { 1000 } else { 0 },
                0,
                x.gpus,
                x.milli,
                ModelSet::ANY,
            )
            .unwrap(),
            line: i as u32 + 2,
        })
        .collect();
    // Keep indices = input order (inputs are given sorted by submit).
    out.sort_by_key(|j| (j.submit, j.line));
    Workload {
        source: "test".into(),
        tenants: (0..tenants).map(|t| format!("t{t}")).collect(),
        jobs: out,
    }
}

fn cluster(toml: &str) -> Cluster {
    Cluster::parse(toml).unwrap()
}

fn nodes(count: u32, gpus: u32, per_rack: u32) -> Cluster {
    cluster(&format!(
        "[[group]]\nname='n'\ncount={count}\ngpu_model='A100'\ngpus={gpus}\ncpu_cores=64\nmemory_gib=512\nnodes_per_rack={per_rack}\n"
    ))
}

/// (first start s, end s) per job, and the result.
fn run(cl: &Cluster, wl: &Workload, policy: &str) -> (Vec<(u64, u64)>, SimResult) {
    let mut starts = vec![u64::MAX; wl.jobs.len()];
    let mut ends = vec![u64::MAX; wl.jobs.len()];
    let mut obs = |e: &SimEvent| match *e {
        SimEvent::Start { job, at, .. } if starts[job] == u64::MAX => starts[job] = at / S,
        SimEvent::Complete { job, at } => ends[job] = at / S,
        _ => {}
    };
    let mut p = SimParams::new(policy);
    p.check_ledger = true;
    let r = simulate(cl, wl, &p, &mut obs, &mut |_| {}).unwrap();
    (starts.into_iter().zip(ends).collect(), r)
}

#[test]
fn fifo_blocks_behind_the_head_and_backfill_does_not() {
    // 8 GPUs. Job 0 holds 6 until t=100; job 1 wants 8; job 2 wants 2 for 50 s.
    let cl = nodes(1, 8, 1);
    let wl = workload(&[j(0, 100, 1, 6), j(1, 10, 1, 8), j(2, 50, 1, 2)], 1);
    let (fifo, _) = run(&cl, &wl, "fifo");
    assert_eq!(fifo[2].0, 110, "FIFO: job 2 waits for job 1");
    let (bf, _) = run(&cl, &wl, "backfill");
    assert_eq!(bf[2].0, 2, "EASY: job 2 ends before job 1's reservation");
    assert_eq!(bf[1].0, 100, "the head is not delayed");
    // A backfill candidate that would delay the head is held back.
    let wl = workload(&[j(0, 100, 1, 6), j(1, 10, 1, 8), j(2, 500, 1, 2)], 1);
    let (bf, _) = run(&cl, &wl, "backfill");
    assert_eq!(bf[1].0, 100);
    assert_eq!(bf[2].0, 110);
}

#[test]
fn sjf_runs_short_jobs_first() {
    let cl = nodes(1, 1, 1);
    let wl = workload(&[j(0, 10, 1, 1), j(1, 100, 1, 1), j(2, 5, 1, 1)], 1);
    let (fifo, _) = run(&cl, &wl, "fifo");
    assert_eq!((fifo[1].0, fifo[2].0), (10, 110));
    let (sjf, _) = run(&cl, &wl, "sjf");
    assert_eq!((sjf[2].0, sjf[1].0), (10, 15));
}

#[test]
fn srtf_preempts_longer_remaining_work() {
    let cl = nodes(1, 1, 1);
    let wl = workload(&[j(0, 100, 1, 1), j(10, 5, 1, 1)], 1);
    let (t, r) = run(&cl, &wl, "srtf");
    assert_eq!(t[1], (10, 15));
    assert_eq!(t[0], (0, 105), "resumed where it stopped");
    assert_eq!(r.preemptions, 1);
    assert_eq!(r.lost_gpu_hours, 0.0);
}

#[test]
fn checkpoints_bound_lost_work() {
    let cl = nodes(1, 1, 1);
    let wl = workload(&[j(0, 100, 1, 1), j(25, 5, 1, 1)], 1);
    let mut p = SimParams::new("srtf");
    p.checkpoint_ms = 10 * S;
    let mut end0 = 0;
    let r = simulate(
        &cl,
        &wl,
        &p,
        &mut |e| {
            if let SimEvent::Complete { job: 0, at } = *e {
                end0 = at / S
            }
        },
        &mut |_| {},
    )
    .unwrap();
    // 25 s done, 20 kept (last checkpoint), 5 s redone.
    assert_eq!(end0, 110);
    assert!((r.lost_gpu_hours - 5.0 / 3600.0).abs() < 1e-12);
    assert!((r.gpu_hours_allocated - r.gpu_hours_served - r.lost_gpu_hours).abs() < 1e-9);
}

#[test]
fn las_demotes_long_jobs_below_new_arrivals() {
    // Threshold 1 GPU-hour: job 0 (8 GPUs) crosses it after 450 s.
    let cl = nodes(1, 8, 1);
    let wl = workload(&[j(0, 2000, 1, 8), j(100, 10, 1, 8), j(1000, 10, 1, 8)], 1);
    let (t, r) = run(&cl, &wl, "las");
    assert_eq!(
        t[1].0, 450,
        "level-0 arrival waits for FIFO within the level"
    );
    assert_eq!(t[2].0, 1000, "after demotion a new job preempts at once");
    assert!(r.preemptions >= 2);
}

#[test]
fn classes_preempt_spot_only() {
    let cl = nodes(1, 4, 1);
    let mut spot = j(0, 100, 1, 4);
    spot.class = Class::Spot;
    let mut od = j(10, 10, 1, 4);
    od.class = Class::OnDemand;
    let mut od2 = j(11, 10, 1, 4);
    od2.class = Class::Guaranteed;
    let wl = workload(&[spot, od, od2], 1);
    let (t, r) = run(&cl, &wl, "classes");
    assert_eq!(t[1].0, 10, "on-demand preempts spot");
    assert_eq!(t[2].0, 20, "guaranteed does not preempt on-demand");
    assert_eq!(t[0].1, 120, "spot resumes after both");
    assert_eq!(r.preemptions, 1);
    assert_eq!(
        r.classes
            .iter()
            .find(|c| c.class == "spot")
            .unwrap()
            .preemptions,
        1
    );
}

#[test]
fn drf_reclaims_guaranteed_quota_and_caps_at_max() {
    let cl = cluster(
        "[[group]]\nname='n'\ncount=2\ngpu_model='A100'\ngpus=4\ncpu_cores=64\nmemory_gib=512\n\
         [[tenant]]\nname='t0'\nquota.A100 = { guaranteed = 4, max = 8 }\n\
         [[tenant]]\nname='t1'\nquota.A100 = { guaranteed = 4, max = 6 }\n",
    );
    // t0 borrows all 8 GPUs; t1 arrives and takes its 4 back.
    let mut jobs: Vec<J> = (0..8).map(|_| j(0, 1000, 1, 1)).collect();
    let mut b = j(10, 10, 1, 4);
    b.tenant = 1;
    jobs.push(b);
    let wl = workload(&jobs, 2);
    let (t, r) = run(&cl, &wl, "drf");
    assert!(t[..8].iter().all(|x| x.0 == 0));
    assert_eq!(t[8].0, 10, "reclaimed at once");
    assert_eq!(r.preemptions, 4);
    // t1 alone may use at most 6 of 8 GPUs.
    let mut jobs: Vec<J> = (0..8).map(|_| j(0, 100, 1, 1)).collect();
    for x in &mut jobs {
        x.tenant = 1;
    }
    let wl = workload(&jobs, 2);
    for policy in QUEUE_POLICY_NAMES {
        let (t, _) = run(&cl, &wl, policy);
        assert_eq!(t.iter().filter(|x| x.0 == 0).count(), 6, "{policy}");
    }
}

#[test]
fn gangs_take_the_fewest_nodes_in_one_rack() {
    // 2 racks x 2 nodes x 4 GPUs; rack 0 has one node half busy.
    let cl = nodes(4, 4, 2);
    let wl = workload(&[j(0, 1000, 1, 2), j(1, 10, 2, 4), j(2, 10, 3, 2)], 1);
    let mut placements: HashMap<usize, Vec<u32>> = HashMap::new();
    let mut obs = |e: &SimEvent| {
        if let SimEvent::Start {
            job, placements: p, ..
        } = e
        {
            placements.insert(*job, p.iter().map(|x| x.node).collect());
        }
    };
    simulate(&cl, &wl, &SimParams::new("fifo"), &mut obs, &mut |_| {}).unwrap();
    let mut g = placements[&1].clone();
    g.sort();
    g.dedup();
    assert_eq!(g.len(), 2, "2 x 4 GPUs need two whole nodes");
    let racks: Vec<u32> = g.iter().map(|&n| cl.racks[n as usize]).collect();
    assert_eq!(racks[0], racks[1], "both in one rack");
    let mut g = placements[&2].clone();
    g.sort();
    g.dedup();
    assert!(g.len() <= 2, "3 x 2 GPUs fit on two nodes: {g:?}");
}

#[test]
fn impossible_jobs_are_rejected_not_hung() {
    let cl = nodes(2, 8, 2);
    let wl = workload(&[j(0, 10, 1, 8), j(0, 10, 3, 8), j(0, 10, 1, 1)], 1);
    let (_, r) = run(&cl, &wl, "fifo");
    assert_eq!((r.jobs, r.rejected), (2, 1));
    assert!(
        r.rejected_examples[0].contains("test:3"),
        "{:?}",
        r.rejected_examples
    );
}

#[test]
fn same_inputs_same_json() {
    let cl = cluster(include_str!("../../../examples/clusters/mixed.toml"));
    let mut gp = suanli_sim::jobs::gen::GenParams::new(3000, 5);
    gp.load = Some(1.1);
    gp.share_frac = 0.2;
    gp.pinned_frac = 0.3;
    let csv = suanli_sim::jobs::gen::generate_csv(&gp, Some(&cl)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.csv");
    std::fs::write(&path, csv).unwrap();
    let wl = suanli_sim::jobs::workload::load("native", &path, &cl).unwrap();
    let strip = |mut r: SimResult| {
        r.wall_s = 0.0;
        r
    };
    for policy in QUEUE_POLICY_NAMES {
        for placement in ["fgd-sa", "random"] {
            let mut p = SimParams::new(policy);
            p.placement = placement.to_string();
            let a = strip(simulate(&cl, &wl, &p, &mut |_| {}, &mut |_| {}).unwrap());
            let b = strip(simulate(&cl, &wl, &p, &mut |_| {}, &mut |_| {}).unwrap());
            assert_eq!(
                report::to_json("c", "t", std::slice::from_ref(&a)),
                report::to_json("c", "t", &[b]),
                "{policy}/{placement}"
            );
            assert_eq!(a.series, strip(a.clone()).series);
            assert!(a.jobs > 2900, "{policy}: {}", a.jobs);
        }
    }
}

/// Five nodes of two models, two tenants with quotas: the property tests'
/// cluster.
const SMALL_MIXED: &str = "[[group]]\nname='a'\ncount=3\ngpu_model='A100'\ngpus=4\ncpu_cores=4\nmemory_gib=64\nnodes_per_rack=2\n\
     [[group]]\nname='b'\ncount=2\ngpu_model='T4'\ngpus=2\ncpu_cores=2\nmemory_gib=32\n\
     [[tenant]]\nname='t0'\nquota.A100 = { guaranteed = 6, max = 10 }\n\
     [[tenant]]\nname='t1'\nquota.A100 = { guaranteed = 4, max = 12 }\nquota.T4 = { guaranteed = 2, max = 4 }\n";

fn arb_job() -> impl Strategy<Value = J> {
    (
        0u64..200,
        1u64..120,
        1u32..4,
        prop_oneof![Just(0u32), Just(1), Just(2), Just(4)],
        prop_oneof![Just(1000u32), Just(500), Just(250)],
        0usize..3,
        0u16..3,
    )
        .prop_map(|(submit, run, tasks, gpus, milli, class, tenant)| J {
            submit,
            run,
            tasks,
            gpus,
            milli: if gpus == 0 {
                0
            } else if gpus == 1 {
                milli
            } else {
                1000
            },
            class: Class::ALL[class],
            tenant,
        })
}

/// One run of `wl` on `cl` under (`policy`, `placement`), checked event by
/// event: no device over 1000 milli and no node over its CPU; no start before
/// arrival; a gang's tasks start in one decision, on one GPU model; every
/// admitted job completes; served GPU-time equals demand, and allocated =
/// served + lost.
fn check_safety_and_conservation(
    cl: &Cluster,
    wl: &Workload,
    policy: &str,
    placement: &str,
    ckpt: u64,
    node_events: &[NodeEvent],
) -> Result<(), TestCaseError> {
    let specs = cl.nodes.clone();
    // Nodes down, and nodes closed (down or drained), as the events say.
    let mut down: std::collections::HashSet<u32> = Default::default();
    let mut drained: std::collections::HashSet<u32> = Default::default();
    let mut used: HashMap<(u32, usize), u32> = HashMap::new();
    let mut cpu: HashMap<u32, u64> = HashMap::new();
    let mut held: HashMap<usize, Vec<suanli_sched::Placement>> = HashMap::new();
    let mut arrived: HashMap<usize, u64> = HashMap::new();
    let mut run_ms: HashMap<usize, u64> = HashMap::new();
    let mut started_at: HashMap<usize, u64> = HashMap::new();
    let mut lost: HashMap<usize, u64> = HashMap::new();
    let mut done = 0usize;
    let mut violation: Option<String> = None;
    let release = |job: usize,
                   held: &mut HashMap<usize, Vec<suanli_sched::Placement>>,
                   used: &mut HashMap<(u32, usize), u32>,
                   cpu: &mut HashMap<u32, u64>| {
        let r = &wl.jobs[job].req;
        for p in held.remove(&job).unwrap_or_default() {
            for d in p.gpus.iter() {
                *used.get_mut(&(p.node, d)).unwrap() -= r.gpu_milli as u32;
            }
            *cpu.get_mut(&p.node).unwrap() -= r.cpu_milli;
        }
    };
    let mut obs = |e: &SimEvent| match e {
        SimEvent::Arrive { job, at } => {
            arrived.insert(*job, *at);
        }
        SimEvent::Start {
            job,
            at,
            placements,
        } => {
            let r = &wl.jobs[*job].req;
            if placements.len() != wl.jobs[*job].tasks as usize {
                violation = Some(format!(
                    "job {job}: {} of {} tasks started",
                    placements.len(),
                    wl.jobs[*job].tasks
                ));
            }
            if arrived.get(job).is_none_or(|&a| *at < a) {
                violation = Some(format!("job {job} started before arriving"));
            }
            let models: std::collections::HashSet<_> = placements
                .iter()
                .map(|p| specs[p.node as usize].model)
                .collect();
            if r.num_gpu > 0 && models.len() != 1 {
                violation = Some(format!("job {job}: gang spans GPU models"));
            }
            for p in placements.iter() {
                if p.gpus.count() != r.num_gpu as u32 {
                    violation = Some(format!("job {job}: wrong device count"));
                }
                for d in p.gpus.iter() {
                    let u = used.entry((p.node, d)).or_default();
                    *u += r.gpu_milli as u32;
                    if *u > 1000 {
                        violation = Some(format!("node {} device {d} over-allocated: {u}", p.node));
                    }
                }
                let c = cpu.entry(p.node).or_default();
                *c += r.cpu_milli;
                if *c > specs[p.node as usize].cpu_milli {
                    violation = Some(format!("node {} CPU over-allocated", p.node));
                }
            }
            for p in placements.iter() {
                if down.contains(&p.node) || drained.contains(&p.node) {
                    violation = Some(format!("job {job} started on closed node {}", p.node));
                }
            }
            held.insert(*job, placements.to_vec());
            started_at.insert(*job, *at);
        }
        SimEvent::Interrupt {
            job,
            at,
            lost_ms,
            node,
        } => {
            if !held
                .get(job)
                .is_some_and(|h| h.iter().any(|p| p.node as usize == *node))
            {
                violation = Some(format!("job {job} interrupted by node {node} it is not on"));
            }
            release(*job, &mut held, &mut used, &mut cpu);
            *run_ms.entry(*job).or_default() += at - started_at[job];
            *lost.entry(*job).or_default() += lost_ms;
        }
        SimEvent::Node { node, change, .. } => {
            let n = *node as u32;
            match change {
                NodeChange::Down => {
                    down.insert(n);
                    if let Some((j, _)) = held.iter().find(|(_, h)| h.iter().any(|p| p.node == n)) {
                        violation = Some(format!("job {j} still runs on node {n}, which is down"));
                    }
                }
                NodeChange::Up => {
                    down.remove(&n);
                }
                NodeChange::Drain => {
                    drained.insert(n);
                }
                NodeChange::Undrain => {
                    drained.remove(&n);
                }
            }
        }
        SimEvent::Preempt { job, at, lost_ms } => {
            release(*job, &mut held, &mut used, &mut cpu);
            *run_ms.entry(*job).or_default() += at - started_at[job];
            *lost.entry(*job).or_default() += lost_ms;
        }
        SimEvent::Complete { job, at } => {
            release(*job, &mut held, &mut used, &mut cpu);
            *run_ms.entry(*job).or_default() += at - started_at[job];
            done += 1;
        }
    };
    let mut p = SimParams::new(policy);
    p.placement = placement.to_string();
    p.check_ledger = true;
    p.checkpoint_ms = ckpt * S;
    p.node_events = node_events.to_vec();
    let r = simulate(cl, wl, &p, &mut obs, &mut |_| {}).unwrap();
    prop_assert!(violation.is_none(), "{}", violation.unwrap());
    prop_assert_eq!(done, r.jobs);
    prop_assert_eq!(r.jobs + r.rejected, wl.jobs.len());
    for (job, ms) in &run_ms {
        // Run time = work + redone (lost) work, for every completed job.
        let w = &wl.jobs[*job];
        prop_assert_eq!(
            *ms,
            w.work + lost.get(job).copied().unwrap_or(0),
            "job {}",
            job
        );
    }
    let served: f64 = run_ms
        .keys()
        .map(|&j| wl.jobs[j].gpu_milli() as f64 * wl.jobs[j].work as f64)
        .sum::<f64>()
        / 1000.0
        / 3.6e6;
    prop_assert!((r.gpu_hours_served - served).abs() < 1e-9);
    prop_assert!((r.gpu_hours_allocated - r.gpu_hours_served - r.lost_gpu_hours).abs() < 1e-9);
    prop_assert!(r.gpu_util_pct <= 100.0 + 1e-9);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every case runs its workload under every queue × placement policy pair
    /// (so no pair goes unchecked in a run), with the ledger's own `check`
    /// after every pass.
    #[test]
    fn safety_and_conservation(
        mut jobs in prop::collection::vec(arb_job(), 1..40),
        ckpt in prop_oneof![Just(0u64), Just(7u64)],
    ) {
        jobs.sort_by_key(|x| x.submit);
        let cl = cluster(SMALL_MIXED);
        let wl = workload(&jobs, 3);
        for policy in QUEUE_POLICY_NAMES {
            for placement in POLICY_NAMES {
                check_safety_and_conservation(&cl, &wl, policy, placement, ckpt, &[]).map_err(|e| {
                    TestCaseError::fail(format!("{policy} × {placement}, checkpoint {ckpt} s: {e}"))
                })?;
            }
        }
    }
}

fn arb_node_event() -> impl Strategy<Value = NodeEvent> {
    (
        0u64..300,
        0usize..5,
        prop::sample::select(vec![
            NodeChange::Down,
            NodeChange::Up,
            NodeChange::Drain,
            NodeChange::Undrain,
        ]),
    )
        .prop_map(|(t, node, change)| NodeEvent {
            at: t * S,
            node,
            change,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Issue 15: the same safety and conservation with nodes failing,
    /// returning, draining and undraining mid-run (every node back and
    /// open at 10,000 s, so that every job can finish): no start on a
    /// closed node, no job left on a node that went down, run time = work
    /// + work lost to preemptions and failures, utilisation against the
    /// capacity that was up.
    #[test]
    fn safety_and_conservation_with_node_churn(
        mut jobs in prop::collection::vec(arb_job(), 1..30),
        mut events in prop::collection::vec(arb_node_event(), 0..12),
        ckpt in prop_oneof![Just(0u64), Just(7u64)],
        placement in prop::sample::select(POLICY_NAMES),
    ) {
        jobs.sort_by_key(|x| x.submit);
        events.sort_by_key(|e| e.at);
        for node in 0..5 {
            for change in [NodeChange::Up, NodeChange::Undrain] {
                events.push(NodeEvent { at: 10_000 * S, node, change });
            }
        }
        let cl = cluster(SMALL_MIXED);
        let wl = workload(&jobs, 3);
        for policy in QUEUE_POLICY_NAMES {
            check_safety_and_conservation(&cl, &wl, policy, placement, ckpt, &events).map_err(|e| {
                TestCaseError::fail(format!("{policy} × {placement}, checkpoint {ckpt} s: {e}"))
            })?;
        }
    }
}

/// Every start, preemption and completion of a run, as (kind, job, time,
/// placements).
fn event_log(cl: &Cluster, wl: &Workload, p: &SimParams) -> Vec<(u8, usize, u64, String)> {
    let mut log = Vec::new();
    let mut obs = |e: &SimEvent| match e {
        SimEvent::Arrive { .. } => {}
        SimEvent::Start {
            job,
            at,
            placements,
        } => log.push((0, *job, *at, format!("{placements:?}"))),
        SimEvent::Preempt { job, at, lost_ms } => log.push((1, *job, *at, lost_ms.to_string())),
        SimEvent::Interrupt {
            job, at, lost_ms, ..
        } => log.push((3, *job, *at, lost_ms.to_string())),
        SimEvent::Node { .. } => {}
        SimEvent::Complete { job, at } => log.push((2, *job, *at, String::new())),
    };
    simulate(cl, wl, p, &mut obs, &mut |_| {}).unwrap();
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The shortcuts of a pass (the walk by job shape, one node per group of
    /// identical nodes, the policies' score memo) change no decision: the
    /// same workload with and without them gives the same events, for every
    /// queue policy, with a few tenants and shapes so that shapes fail,
    /// preempt and get re-queued within a pass.
    #[test]
    fn shape_walk_decides_as_the_job_walk(
        mut jobs in prop::collection::vec(arb_job(), 1..60),
        placement in prop::sample::select(POLICY_NAMES),
    ) {
        jobs.sort_by_key(|x| x.submit);
        let cl = cluster(
            "[[group]]\nname='a'\ncount=3\ngpu_model='A100'\ngpus=4\ncpu_cores=4\nmemory_gib=64\nnodes_per_rack=2\n\
             [[group]]\nname='b'\ncount=2\ngpu_model='T4'\ngpus=2\ncpu_cores=2\nmemory_gib=32\n\
             [[tenant]]\nname='t0'\nquota.A100 = { guaranteed = 6, max = 10 }\n\
             [[tenant]]\nname='t1'\n",
        );
        let wl = workload(&jobs, 3);
        for policy in QUEUE_POLICY_NAMES {
            let mut fast = SimParams::new(policy);
            fast.placement = placement.to_string();
            fast.check_ledger = true;
            let mut slow = fast.clone();
            slow.memo = false;
            let (a, b) = (event_log(&cl, &wl, &fast), event_log(&cl, &wl, &slow));
            let first = a.iter().zip(&b).position(|(x, y)| x != y);
            prop_assert!(
                a == b,
                "{policy} × {placement}: first difference at event {first:?}: {:?} vs {:?}",
                first.map(|i| &a[i]),
                first.map(|i| &b[i])
            );
        }
    }
}

#[test]
fn a_failed_node_interrupts_its_jobs_which_finish_elsewhere() {
    // Two 8-GPU nodes; job 0 (8 GPUs, 100 s) starts on n-0 at 0; n-0 fails
    // at 40 s (no checkpoint: all 40 s lost) and job 0 restarts on n-1;
    // job 1 (8 GPUs) arriving at 10 s waits for a node: n-0 back at 60 s.
    let cl = nodes(2, 8, 2);
    let wl = workload(&[j(0, 100, 1, 8), j(10, 50, 1, 8)], 1);
    let ev = |t: u64, node: usize, change| NodeEvent {
        at: t * S,
        node,
        change,
    };
    let mut p = SimParams::new("fifo");
    p.check_ledger = true;
    p.node_events = vec![ev(40, 0, NodeChange::Down), ev(60, 0, NodeChange::Up)];
    let mut log = Vec::new();
    let r = simulate(
        &cl,
        &wl,
        &p,
        &mut |e| match e {
            SimEvent::Start {
                job,
                at,
                placements,
            } => log.push(format!(
                "{}: start {job} on n-{}",
                at / S,
                placements[0].node
            )),
            SimEvent::Interrupt {
                job,
                at,
                lost_ms,
                node,
            } => log.push(format!(
                "{}: interrupt {job} on n-{node}, lost {} s",
                at / S,
                lost_ms / S
            )),
            SimEvent::Complete { job, at } => log.push(format!("{}: done {job}", at / S)),
            _ => {}
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        log,
        [
            "0: start 0 on n-0",
            "10: start 1 on n-1",
            "40: interrupt 0 on n-0, lost 40 s",
            "60: done 1",
            "60: start 0 on n-0",
            "160: done 0",
        ]
    );
    assert_eq!((r.node_failures, r.interruptions), (1, 1));
    assert!((r.failure_lost_gpu_hours - 8.0 * 40.0 / 3600.0).abs() < 1e-9);
    // 16 GPUs for 160 s, 8 of them down for 20 s.
    assert!(
        (r.availability_pct - 100.0 * (16.0 * 160.0 - 8.0 * 20.0) / (16.0 * 160.0)).abs() < 1e-9
    );
    // A drained node keeps its job but takes no new one.
    p.node_events = vec![ev(5, 0, NodeChange::Drain)];
    let (times, _) = {
        let mut starts = vec![u64::MAX; 2];
        let mut ends = vec![u64::MAX; 2];
        simulate(
            &cl,
            &wl,
            &p,
            &mut |e| match *e {
                SimEvent::Start { job, at, .. } => starts[job] = at / S,
                SimEvent::Complete { job, at } => ends[job] = at / S,
                _ => {}
            },
            &mut |_| {},
        )
        .unwrap();
        (starts.into_iter().zip(ends).collect::<Vec<_>>(), ())
    };
    assert_eq!(times, [(0, 100), (10, 60)]);
}

#[test]
fn a_failure_model_fails_and_repairs_nodes_deterministically() {
    let cl = cluster(
        "[[group]]\nname='n'\ncount=4\ngpu_model='A100'\ngpus=8\ncpu_cores=64\nmemory_gib=512\nmtbf_h=2\nmttr_h=0.5\n",
    );
    let wl = workload(
        &(0..200).map(|i| j(i * 60, 1800, 1, 4)).collect::<Vec<_>>(),
        1,
    );
    let mut p = SimParams::new("fifo");
    p.check_ledger = true;
    let a = simulate(&cl, &wl, &p, &mut |_| {}, &mut |_| {}).unwrap();
    let b = simulate(&cl, &wl, &p, &mut |_| {}, &mut |_| {}).unwrap();
    assert_eq!(a.jobs, 200);
    assert!(a.node_failures > 0 && a.interruptions > 0, "{a:?}");
    // Four nodes up 2 h, down 0.5 h on average: about 80% available.
    assert!(
        (60.0..95.0).contains(&a.availability_pct),
        "{}",
        a.availability_pct
    );
    assert_eq!(
        (a.node_failures, a.interruptions, a.jct_mean_s),
        (b.node_failures, b.interruptions, b.jct_mean_s)
    );
    // A job whose only node is drained for good by the events, with the
    // failure model cycling the other nodes: the run ends with an error
    // instead of following the model for ever.
    let cl2 = cluster(
        "[[group]]\nname='n'\ncount=2\ngpu_model='A100'\ngpus=8\ncpu_cores=64\nmemory_gib=512\nmtbf_h=2\nmttr_h=0.5\n\
         [[group]]\nname='t'\ncount=1\ngpu_model='T4'\ngpus=2\ncpu_cores=8\nmemory_gib=64\n",
    );
    let mut one = workload(&[j(10, 60, 1, 2)], 1);
    let t4 = ModelSet::single(cl2.models.get("T4").unwrap());
    one.jobs[0].req = Request::new(0, 0, 2, 1000, t4).unwrap();
    p.node_events = vec![NodeEvent {
        at: 0,
        node: 2,
        change: NodeChange::Drain,
    }];
    let e = simulate(&cl2, &one, &p, &mut |_| {}, &mut |_| {}).unwrap_err();
    assert!(e.contains("left down or drained"), "{e}");
    assert!(Cluster::parse(
        "[[group]]\nname='n'\ncount=1\ngpus=0\ncpu_cores=1\nmemory_gib=1\nmtbf_h=2\n"
    )
    .unwrap_err()
    .contains("both mtbf_h and mttr_h"));
}

#[test]
fn las_promotes_starving_jobs() {
    // Job 0 (8 GPUs) is demoted at 450 s and preempted at 500 s by a stream of
    // short 8-GPU jobs, one every 100 s. After waiting 10x its last run
    // (500 s) it is promoted back to the first level and runs again at 5,500 s.
    let cl = nodes(1, 8, 1);
    let mut jobs = vec![j(0, 10_000, 1, 8)];
    for k in 0..150 {
        jobs.push(j(500 + 100 * k, 100, 1, 8));
    }
    let wl = workload(&jobs, 1);
    let mut starts0 = Vec::new();
    let mut obs = |e: &SimEvent| {
        if let SimEvent::Start { job: 0, at, .. } = e {
            starts0.push(at / S);
        }
    };
    let r = simulate(&cl, &wl, &SimParams::new("las"), &mut obs, &mut |_| {}).unwrap();
    assert_eq!(r.jobs, 151);
    assert_eq!(&starts0[..2], &[0, 5_500], "{starts0:?}");
}
