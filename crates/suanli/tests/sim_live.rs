//! Sim = live (issue 15): one event sequence — node registrations, job
//! submissions (GPU shares, whole GPUs, gangs, pinned models) and job
//! completions — driven through the job simulator's engine and through the
//! live control loop ([`Core`], its writes committed to a real SQLite
//! store) yields the same start decisions, one by one: same job, same time,
//! same nodes, same devices. Both run the default placement (`fgd-sa`) with
//! the target workload learned from the submissions, so the live pool
//! places as the benchmarks measure, not first-fit.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use suanli_core::{ModelSet, Request};
use suanli_sched::{Class as SchedClass, TenantId};
use suanli_server::control::{Answer, Command, Core, LoopConfig, Registration, Report, TaskExit};
use suanli_server::store::{Class, NewJob, Store, Write};
use suanli_sim::jobs::{
    simulate, Cluster, Job, NodeChange, NodeEvent, SimEvent, SimParams, SimResult, Workload,
};

const T0: i64 = 1_780_000_000_000;

const CLUSTER: &str = r#"
name = "diff"
[[group]]
name = "a100"
count = 6
gpu_model = "A100-80G"
gpus = 8
cpu_cores = 64
memory_gib = 512
nodes_per_rack = 4
[[group]]
name = "h800"
count = 3
gpu_model = "H800"
gpus = 8
cpu_cores = 96
memory_gib = 1024
nodes_per_rack = 4
"#;

/// One start: (time ms from 0, job index, [(node name, device mask)] by task).
type Start = (i64, usize, Vec<(String, u16)>);

/// A varied workload that the cluster can always hold eventually.
fn workload(cluster: &Cluster) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let a100 = cluster.models.get("A100-80G").unwrap();
    let h800 = cluster.models.get("H800").unwrap();
    let mut t = 0u64;
    let jobs = (0..400)
        .map(|i| {
            t += rng.gen_range(0..4_000);
            let (n, m) = match rng.gen_range(0..10) {
                0..=3 => (1, [250, 500, 700][rng.gen_range(0..3)]),
                4..=6 => (1, 1000),
                7 => (2, 1000),
                8 => (4, 1000),
                _ => (8, 1000),
            };
            let models = match rng.gen_range(0..6) {
                0 => ModelSet::single(a100),
                1 => ModelSet::single(h800),
                _ => ModelSet::ANY,
            };
            Job {
                submit: t,
                work: rng.gen_range(5_000..120_000),
                estimate: None,
                deadline: None,
                tenant: TenantId(0),
                class: SchedClass::OnDemand,
                tasks: if rng.gen_range(0..8) == 0 { 2 } else { 1 },
                req: Request::new(rng.gen_range(1..16) * 1000, 8192, n, m, models).unwrap(),
                line: i + 1,
            }
        })
        .collect();
    Workload {
        source: "generated".to_string(),
        tenants: vec!["acme".to_string()],
        jobs,
    }
}

/// A node lost (its agent silent) at `down` and back (its agent reporting
/// again) at `up`, ms from 0.
#[derive(Clone, Copy)]
struct Outage {
    node: usize,
    down: i64,
    up: i64,
}

/// The live loop's lease (ms): a node silent for longer is lost.
const LEASE: i64 = 2_000;

fn simulated(cluster: &Cluster, wl: &Workload, outages: &[Outage]) -> (Vec<Start>, SimResult) {
    let mut starts = Vec::new();
    let mut params = SimParams::new("classes");
    params.check_ledger = true;
    for o in outages {
        // The live loop notices a loss at the first step after the lease.
        params.node_events.push(NodeEvent {
            at: (o.down + 1) as u64,
            node: o.node,
            change: NodeChange::Down,
        });
        params.node_events.push(NodeEvent {
            at: o.up as u64,
            node: o.node,
            change: NodeChange::Up,
        });
    }
    params.node_events.sort_by_key(|e| e.at);
    let r = simulate(
        cluster,
        wl,
        &params,
        &mut |e| {
            if let SimEvent::Start {
                job,
                at,
                placements,
            } = e
            {
                let nodes = placements
                    .iter()
                    .map(|p| (cluster.nodes[p.node as usize].name.clone(), p.gpus.0))
                    .collect();
                starts.push((*at as i64, *job, nodes));
            }
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.rejected, 0);
    (starts, r)
}

fn live(cluster: &Cluster, wl: &Workload, outages: &[Outage]) -> Vec<Start> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let tenant = store.create_tenant("acme", 1.0, "test").await.unwrap();
        let cfg = LoopConfig {
            lease_ms: LEASE as u64,
            ..LoopConfig::default()
        };
        assert_eq!(cfg.placement, "fgd-sa");
        assert!(cfg.learn_target);
        let mut core = Core::new(&cfg).unwrap();
        let mut commit = vec![
            core.step(
                vec![Command::Tenant {
                    tenant: tenant.clone(),
                    quotas: Vec::new(),
                }],
                T0,
            )
            .writes,
        ];
        // Nodes register in the cluster's order.
        let mut names = BTreeMap::new();
        for (i, n) in cluster.nodes.iter().enumerate() {
            let rack = &cluster.rack_names[cluster.racks[i] as usize];
            let reg = Registration {
                name: n.name.clone(),
                addr: String::new(),
                gpu_model: n.model.map(|m| cluster.models.name(m).to_string()),
                gpus: n.gpus as i64,
                gpu_memory_mib: 81920,
                cpu_milli: n.cpu_milli as i64,
                memory_mib: n.memory_mib as i64,
                labels: [("rack".to_string(), rack.clone())].into(),
            };
            let s = core.step(vec![Command::Register(reg)], T0);
            let Answer::Registered(Ok(node)) = &s.answers[0] else {
                panic!("{:?}", s.answers)
            };
            names.insert(node.id, n.name.clone());
            commit.push(s.writes);
        }
        // Each node's agent is silent from its outage's `down - LEASE` (its
        // last report) to `up` (a full report: running nothing).
        let silent = |node: usize, t: i64| {
            outages
                .iter()
                .any(|o| o.node == node && t > o.down - LEASE && t < o.up)
        };
        // Instants: arrivals, completions, the outages' last reports,
        // losses (`down + 1`) and returns, and ticks so that live agents
        // report within every lease.
        let mut instants: std::collections::BTreeSet<i64> =
            wl.jobs.iter().map(|j| j.submit as i64).collect();
        for o in outages {
            instants.extend([o.down - LEASE, o.down + 1, o.up]);
        }
        let mut ends: BTreeMap<i64, Vec<(i64, i64, Vec<i64>)>> = BTreeMap::new();
        let mut run_of: BTreeMap<i64, i64> = BTreeMap::new();
        let mut job_index: BTreeMap<i64, usize> = BTreeMap::new();
        let mut starts = Vec::new();
        let mut next = 0usize;
        let mut last = 0i64;
        loop {
            let ti = instants.iter().next().copied();
            let te = ends.keys().next().copied();
            let Some(mut now) = [ti, te].into_iter().flatten().min() else {
                break;
            };
            if now - last > LEASE / 2 {
                now = last + LEASE / 2; // a tick
            }
            instants.remove(&now);
            last = now;
            let mut cmds = Vec::new();
            // A node lost now: its jobs' attempts end with it (they run
            // again: a new attempt is a new start).
            for o in outages.iter().filter(|o| o.down + 1 == now) {
                let id = o.node as i64 + 1;
                for v in ends.values_mut() {
                    v.retain(|(_, _, nodes)| !nodes.contains(&id));
                }
            }
            // Exits (only of current attempts), one report per node.
            let mut by_node: BTreeMap<i64, Vec<TaskExit>> = BTreeMap::new();
            for (job, run, nodes) in ends.remove(&now).unwrap_or_default() {
                if run_of.get(&job) != Some(&run) {
                    continue; // an attempt lost with its node
                }
                for (task, node) in nodes.iter().enumerate() {
                    by_node.entry(*node).or_default().push(TaskExit {
                        job,
                        run,
                        task: task as i64,
                        exit_code: Some(0),
                        signal: None,
                        reason: String::new(),
                        timeout: false,
                        not_started: false,
                    });
                }
            }
            for (&id, name) in &names {
                let i = (id - 1) as usize;
                if silent(i, now) {
                    assert!(
                        !by_node.contains_key(&id),
                        "an exit on a silent node at {now}"
                    );
                    continue;
                }
                let back = outages.iter().any(|o| o.node == i && o.up == now);
                cmds.push(Command::Heartbeat {
                    node: name.clone(),
                    report: Report {
                        running: Vec::new(),
                        exited: by_node.remove(&id).unwrap_or_default(),
                    },
                    // A returning agent reports all it runs: nothing.
                    full: back,
                });
            }
            let n_hb = cmds.len();
            let mut submitted = Vec::new();
            while next < wl.jobs.len() && wl.jobs[next].submit as i64 == now {
                let j = &wl.jobs[next];
                let gpu_models = if j.req.models == ModelSet::ANY {
                    Vec::new()
                } else {
                    (0..cluster.models.len())
                        .map(|m| suanli_core::ModelId(m as u8))
                        .filter(|&m| j.req.models.accepts(Some(m)))
                        .map(|m| cluster.models.name(m).to_string())
                        .collect()
                };
                cmds.push(Command::Submit {
                    tenant_id: tenant.id,
                    tenant: "acme".to_string(),
                    job: NewJob {
                        name: format!("j{next}"),
                        command: vec!["x".to_string()],
                        tasks: j.tasks as i64,
                        cpu_milli: j.req.cpu_milli as i64,
                        memory_mib: j.req.memory_mib as i64,
                        num_gpu: j.req.num_gpu as i64,
                        gpu_milli: j.req.gpu_milli as i64,
                        gpu_models,
                        class: Class::OnDemand,
                        env: BTreeMap::new(),
                        workdir: String::new(),
                        max_runtime_s: None,
                        // A job lost with its node runs again.
                        retries: 10,
                        idem_key: None,
                        idem_hash: None,
                        service: None,
                    },
                });
                submitted.push(next);
                next += 1;
            }
            let s = core.step(cmds, T0 + now);
            for (k, &j) in submitted.iter().enumerate() {
                let Answer::Submitted(Ok(job)) = &s.answers[n_hb + k] else {
                    panic!("job {j}: {:?}", s.answers[n_hb + k])
                };
                job_index.insert(job.id, j);
            }
            for x in &s.writes {
                if let Write::StartJob {
                    job,
                    run,
                    at,
                    tasks,
                } = x
                {
                    let j = job_index[job];
                    let t = at - T0;
                    run_of.insert(*job, *run);
                    starts.push((
                        t,
                        j,
                        tasks
                            .iter()
                            .map(|(node, mask)| (names[node].clone(), *mask as u16))
                            .collect(),
                    ));
                    ends.entry(t + wl.jobs[j].work as i64).or_default().push((
                        *job,
                        *run,
                        tasks.iter().map(|t| t.0).collect(),
                    ));
                }
            }
            core.scheduler().check_indexes().unwrap();
            commit.push(s.writes);
            if next == wl.jobs.len() && ends.is_empty() && instants.is_empty() {
                break;
            }
        }
        // The live loop learned a target from the submissions.
        let target = core.scheduler().target().unwrap();
        assert!(target.pods.len() > 3, "{target:?}");
        // Everything the loop wrote commits (the store accepts the batches).
        for w in commit {
            store.commit(w).await.unwrap();
        }
        starts
    })
}

fn compare(sim: &[Start], live: &[Start]) {
    for (k, (s, l)) in sim.iter().zip(live).enumerate() {
        assert_eq!(s, l, "start {k}: the simulator and the live loop differ");
    }
    assert_eq!(sim.len(), live.len());
}

#[test]
fn the_live_loop_decides_as_the_simulator_one_start_at_a_time() {
    let cluster = Cluster::parse(CLUSTER).unwrap();
    let wl = workload(&cluster);
    let (sim, _) = simulated(&cluster, &wl, &[]);
    assert_eq!(sim.len(), wl.jobs.len(), "every job ran once");
    compare(&sim, &live(&cluster, &wl, &[]));
}

/// The same with two nodes lost mid-run (their jobs run again elsewhere)
/// and back later. A loss is placed where the node reports no exit in the
/// lease before it (its agent is silent then).
#[test]
fn node_loss_and_return_decide_the_same_too() {
    let cluster = Cluster::parse(CLUSTER).unwrap();
    let wl = workload(&cluster);
    let (calm, _) = simulated(&cluster, &wl, &[]);
    // Ends of jobs per node, in the calm run (a loss changes nothing before it).
    let ends_on = |node: &str| -> Vec<i64> {
        calm.iter()
            .filter(|(_, _, n)| n.iter().any(|(x, _)| x == node))
            .map(|(t, j, _)| t + wl.jobs[*j].work as i64)
            .collect()
    };
    let quiet = |node: &str, from: i64| -> i64 {
        let ends = ends_on(node);
        (from..)
            .step_by(500)
            .find(|&d| !ends.iter().any(|&e| e > d - LEASE && e <= d + 1))
            .unwrap()
    };
    let a = cluster
        .nodes
        .iter()
        .position(|n| n.name == "a100-1")
        .unwrap();
    let h = cluster
        .nodes
        .iter()
        .position(|n| n.name == "h800-0")
        .unwrap();
    let down_a = quiet("a100-1", 200_000);
    let down_h = quiet("h800-0", 450_000);
    let outages = [
        Outage {
            node: a,
            down: down_a,
            up: down_a + 90_000,
        },
        Outage {
            node: h,
            down: down_h,
            up: down_h + 40_000,
        },
    ];
    let (sim, r) = simulated(&cluster, &wl, &outages);
    assert_eq!(r.node_failures, 2);
    assert!(r.interruptions > 0, "the lost nodes were running jobs");
    assert_eq!(r.jobs, wl.jobs.len());
    compare(&sim, &live(&cluster, &wl, &outages));
}
