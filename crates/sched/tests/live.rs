//! The live-pool API of the job scheduler: nodes joining and draining, jobs
//! restored after a restart, jobs requeued from outside, quotas changed at
//! run time, and why-pending reasons.

use suanli_core::{GpuMask, Ledger, ModelId, ModelSet, NodeSpec, Request};
use suanli_sched::scheduler::{
    Class, Decision, JobSpec, QueuePolicy, SchedOptions, Scheduler, TenantId, TenantQuota,
    WhyPending,
};
use suanli_sched::{make_policy, Placement, Workload};

fn node(name: &str, gpus: u8, model: u8) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli: 64_000,
        memory_mib: 512 << 10,
        gpus,
        model: Some(ModelId(model)),
    }
}

fn empty(policy: QueuePolicy) -> Scheduler {
    Scheduler::new(
        Ledger::new(Vec::new()),
        Vec::new(),
        make_policy("bestfit", &Workload::default(), 1).unwrap(),
        policy,
        Vec::new(),
        0,
        SchedOptions::default(),
    )
}

fn job(tenant: u16, tasks: u32, gpus: u32, class: Class) -> JobSpec {
    JobSpec {
        tenant: TenantId(tenant),
        class,
        tasks,
        req: Request::new(1000, 1024, gpus, 1000, ModelSet::ANY).unwrap(),
        submit: 0,
        work: 3_600_000,
        estimate: None,
    }
}

fn starts(s: &Scheduler) -> Vec<(u32, Vec<Placement>)> {
    s.decisions()
        .iter()
        .filter_map(|d| match d {
            Decision::Start { job, placements } => Some((job.0, placements.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn jobs_wait_for_nodes_and_start_when_one_joins() {
    let mut s = empty(QueuePolicy::Fifo);
    assert_eq!(
        s.admissible(&job(0, 1, 4, Class::OnDemand)),
        Ok(()),
        "no node yet: anything may come"
    );
    let j = s.submit(job(0, 1, 4, Class::OnDemand));
    s.schedule(1);
    assert!(s.decisions().is_empty());
    assert_eq!(
        s.why_pending(j),
        Some(WhyPending::Nodes {
            models: ModelSet::ANY,
            tasks: 1,
            fit: 0
        })
    );
    let n = s.add_node(node("a", 8, 0), 0);
    s.schedule(2);
    assert_eq!(
        starts(&s),
        vec![(
            j.0,
            vec![Placement {
                node: n,
                gpus: GpuMask(0b1111)
            }]
        )]
    );
    assert_eq!(s.check_indexes(), Ok(()));
    assert_eq!(s.allocated_gpu_milli(), 4000);
    assert_eq!(s.capacity_gpu_milli(), 8000);
}

#[test]
fn a_drained_node_gets_no_new_work_but_keeps_its_jobs() {
    let mut s = empty(QueuePolicy::Fifo);
    let a = s.add_node(node("a", 8, 0), 0);
    let b = s.add_node(node("b", 8, 0), 0);
    let first = s.submit(job(0, 1, 4, Class::OnDemand));
    s.schedule(1);
    assert_eq!(starts(&s)[0].1[0].node, a, "bestfit takes the first node");
    s.set_closed(a, true);
    // 4 GPUs are free on a, but it is draining: the next job goes to b.
    let second = s.submit(job(0, 1, 4, Class::OnDemand));
    s.schedule(2);
    assert_eq!(starts(&s)[0].1[0].node, b);
    s.set_closed(b, true);
    let third = s.submit(job(0, 1, 1, Class::OnDemand));
    s.schedule(3);
    assert!(s.decisions().is_empty(), "every node is closed");
    assert!(matches!(
        s.why_pending(third),
        Some(WhyPending::Nodes { fit: 0, .. })
    ));
    // The first job still runs on the drained node and completes normally.
    s.complete(first, 10);
    s.complete(second, 10);
    s.schedule(10);
    assert!(s.decisions().is_empty());
    s.set_closed(a, false);
    s.schedule(11);
    assert_eq!(
        starts(&s)[0],
        (
            third.0,
            vec![Placement {
                node: a,
                gpus: GpuMask(1)
            }]
        )
    );
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn a_gang_never_lands_on_a_closed_node() {
    let mut s = empty(QueuePolicy::Fifo);
    let nodes: Vec<u32> = (0..4)
        .map(|i| s.add_node(node(&format!("n{i}"), 8, 0), i / 2))
        .collect();
    s.set_closed(nodes[1], true);
    let g = s.submit(job(0, 3, 8, Class::OnDemand));
    s.schedule(1);
    let st = starts(&s);
    assert_eq!(st.len(), 1);
    let used: Vec<u32> = st[0].1.iter().map(|p| p.node).collect();
    assert!(!used.contains(&nodes[1]), "{used:?}");
    assert_eq!(used.len(), 3);
    let _ = g;
}

#[test]
fn restore_rebuilds_running_jobs_and_refuses_a_device_held_twice() {
    let mut s = empty(QueuePolicy::Classes);
    let a = s.add_node(node("a", 8, 0), 0);
    let spec = job(0, 2, 2, Class::Spot);
    let p = vec![
        Placement {
            node: a,
            gpus: GpuMask(0b0011),
        },
        Placement {
            node: a,
            gpus: GpuMask(0b1100),
        },
    ];
    let j = s.restore(spec.clone(), p, 5).unwrap();
    assert_eq!(s.allocated_gpu_milli(), 4000);
    assert_eq!(s.running_len(), 1);
    // Device 3 is already held: refused, and nothing changed.
    let err = s
        .restore(
            job(1, 1, 2, Class::OnDemand),
            vec![Placement {
                node: a,
                gpus: GpuMask(0b11000),
            }],
            5,
        )
        .unwrap_err();
    assert!(err.contains("gpu_milli"), "{err}");
    assert_eq!(s.allocated_gpu_milli(), 4000);
    let err = s
        .restore(
            job(1, 2, 1, Class::OnDemand),
            vec![Placement {
                node: a,
                gpus: GpuMask(0b10000),
            }],
            5,
        )
        .unwrap_err();
    assert!(err.contains("gang of 2"), "{err}");
    let err = s
        .restore(
            job(1, 1, 1, Class::OnDemand),
            vec![Placement {
                node: 9,
                gpus: GpuMask(1),
            }],
            5,
        )
        .unwrap_err();
    assert!(err.contains("unknown node"), "{err}");
    assert_eq!(s.check_indexes(), Ok(()));
    // The restored spot job is preemptible like any other.
    s.submit(job(1, 1, 8, Class::Guaranteed));
    s.schedule(100);
    assert!(s
        .decisions()
        .iter()
        .any(|d| matches!(d, Decision::Preempt { job, .. } if *job == j)));
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn requeue_frees_the_devices_and_queues_the_job_again() {
    let mut s = empty(QueuePolicy::Fifo);
    s.add_node(node("a", 8, 0), 0);
    let j = s.submit(job(0, 1, 8, Class::OnDemand));
    s.schedule(1);
    assert_eq!(s.running_len(), 1);
    assert_eq!(
        s.requeue(j, 50),
        49,
        "no checkpoints: the 49 ms run are lost"
    );
    assert!(s.decisions().len() == 1, "requeue reports nothing new");
    assert_eq!(s.allocated_gpu_milli(), 0);
    assert_eq!(s.pending_len(), 1);
    s.schedule(60);
    assert_eq!(starts(&s).len(), 1);
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn quota_set_at_run_time_is_enforced_and_explained() {
    let mut s = empty(QueuePolicy::Fifo);
    s.add_node(node("a", 8, 0), 0);
    s.add_node(node("b", 8, 1), 0);
    let mut q = TenantQuota::unlimited(2);
    q.max = vec![4000, 0];
    s.set_quota(TenantId(0), q);
    let a = s.submit(job(0, 1, 4, Class::OnDemand));
    let b = s.submit(job(0, 1, 1, Class::OnDemand));
    s.schedule(1);
    assert_eq!(starts(&s).len(), 1);
    assert_eq!(s.why_pending(a), None, "running");
    assert_eq!(
        s.why_pending(b),
        Some(WhyPending::Quota {
            model: ModelId(0),
            used: 4000,
            max: 4000,
            need: 1000
        })
    );
    // Raising the maximum lets it start.
    let mut q = TenantQuota::unlimited(2);
    q.max = vec![8000, 0];
    s.set_quota(TenantId(0), q);
    s.schedule(2);
    assert_eq!(starts(&s).len(), 1);
}

#[test]
fn why_pending_counts_the_jobs_ahead() {
    let mut s = empty(QueuePolicy::Fifo);
    s.add_node(node("a", 8, 0), 0);
    s.submit(job(0, 1, 8, Class::OnDemand));
    s.schedule(1);
    let big = s.submit(job(0, 2, 8, Class::OnDemand));
    let small: Vec<_> = (0..3)
        .map(|_| s.submit(job(0, 1, 1, Class::OnDemand)))
        .collect();
    s.schedule(2);
    assert!(s.decisions().is_empty());
    assert_eq!(
        s.why_pending(big),
        Some(WhyPending::Nodes {
            models: ModelSet::ANY,
            tasks: 2,
            fit: 1
        }),
        "one node, even empty, holds one of its two tasks"
    );
    s.add_node(node("b", 8, 0), 0);
    assert_eq!(
        s.why_pending(big),
        Some(WhyPending::Resources {
            models: ModelSet::ANY,
            tasks: 2,
            fit: 1
        }),
        "two nodes could: it waits for the running job"
    );
    // After the running job ends there is room for a small job, but FIFO
    // holds it behind the gang (and behind the small jobs before it).
    s.complete(suanli_sched::scheduler::JobId(0), 3);
    assert_eq!(
        s.why_pending(small[2]),
        Some(WhyPending::Queue { ahead: 3, own: 3 })
    );
}

#[test]
fn models_appear_at_run_time() {
    let mut s = empty(QueuePolicy::Fifo);
    s.add_node(node("a", 8, 0), 0);
    let mut spec = job(0, 1, 2, Class::OnDemand);
    spec.req.models = ModelSet::single(ModelId(5));
    assert!(s.admissible(&spec).is_err());
    let b = s.add_node(node("b", 4, 5), 0);
    assert_eq!(s.admissible(&spec), Ok(()));
    s.submit(spec);
    s.schedule(1);
    assert_eq!(starts(&s)[0].1[0].node, b);
}

/// A pass bounded to k decisions stops there and says so; passes run again
/// until none is cut short start the same jobs, in the same order, on the
/// same devices, as one unbounded pass.
#[test]
fn bounded_passes_start_what_one_pass_starts() {
    let run = |max: usize| {
        let mut s = Scheduler::new(
            Ledger::new(Vec::new()),
            Vec::new(),
            make_policy("bestfit", &Workload::default(), 1).unwrap(),
            QueuePolicy::Classes,
            Vec::new(),
            0,
            SchedOptions {
                max_decisions_per_pass: max,
                ..SchedOptions::default()
            },
        );
        for n in 0..6 {
            s.add_node(node(&format!("n{n}"), 8, 0), n / 2);
        }
        for i in 0..40u32 {
            let class = [Class::Spot, Class::OnDemand, Class::Guaranteed][i as usize % 3];
            s.submit(job(
                i as u16 % 2,
                1 + i % 2,
                [1, 2, 4, 8][i as usize % 4],
                class,
            ));
        }
        let (mut all, mut passes) = (Vec::new(), 0);
        loop {
            s.schedule(1);
            passes += 1;
            assert!(
                s.decisions().len() <= max,
                "a pass made more than {max} decisions"
            );
            all.extend(starts(&s));
            s.check_indexes().unwrap();
            if !s.pass_cut_short() {
                break;
            }
        }
        (all, passes)
    };
    let (one, passes) = run(usize::MAX);
    assert_eq!(passes, 1);
    assert!(one.len() > 5, "the pool takes several jobs: {}", one.len());
    let (bounded, passes) = run(2);
    assert_eq!(bounded, one);
    assert!(
        passes > one.len() / 2,
        "{passes} passes for {} starts",
        one.len()
    );
}

#[test]
fn closed_nodes_leave_the_open_capacity_and_retired_ones_the_pool() {
    let mut s = empty(QueuePolicy::Fifo);
    let a = s.add_node(node("a", 8, 0), 0);
    let h = s.add_node(node("h", 8, 1), 0);
    assert_eq!(s.open_capacity_gpu_milli(), 16_000);
    // Drained (or lost): not open, still capacity, still admissible.
    s.set_closed(h, true);
    assert_eq!(s.open_capacity_gpu_milli(), 8_000);
    assert_eq!(s.model_open_gpu_milli(ModelId(1)), 0);
    let on_h = JobSpec {
        req: Request::new(1000, 1024, 8, 1000, ModelSet::single(ModelId(1))).unwrap(),
        ..job(0, 1, 8, Class::OnDemand)
    };
    assert_eq!(s.admissible(&on_h), Ok(()), "h may come back");
    s.set_closed(h, false);
    assert_eq!(s.open_capacity_gpu_milli(), 16_000);
    // Retired (removed, or replaced by another inventory): gone for good.
    s.retire_node(h);
    assert_eq!(s.capacity_gpu_milli(), 8_000);
    assert_eq!(s.open_capacity_gpu_milli(), 8_000);
    assert_eq!(
        s.admissible(&on_h),
        Ok(()),
        "the pool has had a node of model 1: the job may wait for one"
    );
    let held = s.submit(on_h.clone());
    let two = JobSpec { tasks: 2, ..on_h };
    assert!(
        s.admissible(&two).is_err(),
        "the pool never had two nodes of model 1"
    );
    assert_eq!(s.check_indexes(), Ok(()));
    // The rest of the pool works on.
    s.submit(job(0, 1, 8, Class::OnDemand));
    s.schedule(1);
    assert_eq!(starts(&s).len(), 1);
    assert_eq!(starts(&s)[0].1[0].node, a);
    assert_eq!(s.allocated_gpu_milli(), 8_000);
    assert!(matches!(
        s.why_pending(held),
        Some(WhyPending::Nodes { fit: 0, .. })
    ));
    assert_eq!(s.check_indexes(), Ok(()));
}

/// Cached why-pending answers stay equal to fresh ones whatever changes
/// between them: nodes joining, closing and reopening, jobs starting and
/// ending, quotas changing; and the count of jobs ahead stops at the cap.
#[test]
fn cached_reasons_match_fresh_ones_through_every_kind_of_change() {
    use suanli_sched::scheduler::WHY_AHEAD_CAP;
    let mut s = empty(QueuePolicy::Classes);
    let mut jobs = Vec::new();
    let mut x = 7u64;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut nodes = Vec::new();
    for step in 0..400u64 {
        match rnd(8) {
            0 if nodes.len() < 6 => nodes.push(s.add_node(node("n", 8, rnd(2) as u8), 0)),
            1 if !nodes.is_empty() => {
                let n = nodes[rnd(nodes.len() as u64) as usize];
                let closed = s.ledger().node(n).unwrap().1.is_closed();
                s.set_closed(n, !closed);
            }
            2 => {
                let mut q = TenantQuota::unlimited(2);
                q.max = vec![rnd(3) * 4000, u64::MAX];
                s.set_quota(TenantId(rnd(2) as u16), q);
            }
            3 => {
                let running: Vec<_> = jobs
                    .iter()
                    .copied()
                    .filter(|&j| s.state(j) == suanli_sched::scheduler::JobState::Running)
                    .collect();
                if let Some(&j) = running.first() {
                    s.complete(j, step);
                }
            }
            4 => s.schedule(step),
            _ => {
                let spec = job(
                    rnd(2) as u16,
                    1 + rnd(2) as u32,
                    1 + rnd(8) as u32,
                    Class::OnDemand,
                );
                if s.admissible(&spec).is_ok() {
                    jobs.push(s.submit(spec));
                }
            }
        }
        let cached: Vec<_> = jobs.iter().map(|&j| s.why_pending(j)).collect();
        s.forget_why();
        let fresh: Vec<_> = jobs.iter().map(|&j| s.why_pending(j)).collect();
        assert_eq!(cached, fresh, "step {step}");
    }
    // Far down a long queue: at most the cap is counted.
    let mut s = empty(QueuePolicy::Fifo);
    s.add_node(node("a", 8, 0), 0);
    let ids: Vec<_> = (0..WHY_AHEAD_CAP + 20)
        .map(|_| s.submit(job(0, 1, 8, Class::OnDemand)))
        .collect();
    s.schedule(1);
    let last = *ids.last().unwrap();
    match s.why_pending(last) {
        Some(WhyPending::Resources { .. }) => {}
        w => panic!("{w:?}"),
    }
    s.complete(ids[0], 2);
    // The pool is free again: the first pending job would start at the
    // next pass, the last is behind the cap.
    assert_eq!(
        s.why_pending(last),
        Some(WhyPending::Queue {
            ahead: WHY_AHEAD_CAP,
            own: WHY_AHEAD_CAP
        })
    );
}

/// Under DRF a tenant's job that no open node could hold (its node is
/// drained) does not hold back the tenant's next job.
#[test]
fn drf_passes_over_a_job_that_waits_for_nodes() {
    let mut s = empty(QueuePolicy::Drf);
    s.add_node(node("a", 8, 0), 0);
    let b = s.add_node(node("b", 8, 1), 0);
    s.set_closed(b, true);
    let on_b = JobSpec {
        req: Request::new(1000, 1024, 8, 1000, ModelSet::single(ModelId(1))).unwrap(),
        ..job(0, 1, 8, Class::OnDemand)
    };
    let waiting = s.submit(on_b);
    let next = s.submit(job(0, 1, 4, Class::OnDemand));
    s.schedule(1);
    assert_eq!(
        starts(&s).iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![next.0]
    );
    assert!(matches!(
        s.why_pending(waiting),
        Some(WhyPending::Nodes { fit: 0, .. })
    ));
    assert_eq!(s.check_indexes(), Ok(()));
}
