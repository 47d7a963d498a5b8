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
use suanli_sim::jobs::{simulate, Cluster, Job, SimEvent, SimParams, Workload};

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

fn simulated(cluster: &Cluster, wl: &Workload) -> Vec<Start> {
    let mut starts = Vec::new();
    let mut params = SimParams::new("classes");
    params.check_ledger = true;
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
    starts
}

fn live(cluster: &Cluster, wl: &Workload) -> Vec<Start> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let tenant = store.create_tenant("acme", 1.0, "test").await.unwrap();
        let cfg = LoopConfig {
            lease_ms: i64::MAX as u64 / 4, // no heartbeats here
            ..LoopConfig::default()
        };
        assert_eq!(cfg.placement, "fgd-sa");
        assert!(cfg.learn_target);
        let mut core = Core::new(&cfg).unwrap();
        let step = |core: &mut Core, cmds: Vec<Command>, now: i64| {
            let s = core.step(cmds, now);
            let writes = s.writes.clone();
            (s, writes)
        };
        let mut commit = Vec::new();
        let (_, w) = step(
            &mut core,
            vec![Command::Tenant {
                tenant: tenant.clone(),
                quotas: Vec::new(),
            }],
            T0,
        );
        commit.push(w);
        // Nodes register in the cluster's order (ids 1, 2, ...).
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
            let (s, w) = step(&mut core, vec![Command::Register(reg)], T0);
            let Answer::Registered(Ok(node)) = &s.answers[0] else {
                panic!("{:?}", s.answers)
            };
            names.insert(node.id, n.name.clone());
            commit.push(w);
        }
        // Events by time: completions first, then arrivals, one step each
        // instant (as the simulator: completions, arrivals, one pass).
        let mut ends: BTreeMap<i64, Vec<(i64, i64, Vec<i64>)>> = BTreeMap::new(); // t → (job id, run, nodes by task)
        let mut job_index: BTreeMap<i64, usize> = BTreeMap::new();
        let mut starts = Vec::new();
        let mut next = 0usize;
        loop {
            let ta = wl.jobs.get(next).map(|j| j.submit as i64);
            let te = ends.keys().next().copied();
            let now = match (ta, te) {
                (None, None) => break,
                (Some(a), None) => a,
                (None, Some(e)) => e,
                (Some(a), Some(e)) => a.min(e),
            };
            let mut cmds = Vec::new();
            if te == Some(now) {
                // Each node reports the exits of its tasks.
                let mut by_node: BTreeMap<i64, Vec<TaskExit>> = BTreeMap::new();
                for (job, run, nodes) in ends.remove(&now).unwrap() {
                    for (task, node) in nodes.iter().enumerate() {
                        by_node.entry(*node).or_default().push(TaskExit {
                            job,
                            run,
                            task: task as i64,
                            exit_code: Some(0),
                            signal: None,
                            reason: String::new(),
                            timeout: false,
                        });
                    }
                }
                for (node, exited) in by_node {
                    cmds.push(Command::Heartbeat {
                        node: names[&node].clone(),
                        report: Report {
                            running: Vec::new(),
                            exited,
                        },
                        full: false,
                    });
                }
            }
            let mut submitted = Vec::new();
            while next < wl.jobs.len() && wl.jobs[next].submit as i64 == now {
                let j = &wl.jobs[next];
                let gpu_models = if j.req.models == ModelSet::ANY {
                    Vec::new()
                } else {
                    (0..cluster.models.len())
                        .filter(|&m| j.req.models.accepts(Some(suanli_core::ModelId(m as u8))))
                        .map(|m| {
                            cluster
                                .models
                                .name(suanli_core::ModelId(m as u8))
                                .to_string()
                        })
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
                        retries: 0,
                    },
                });
                submitted.push(next);
                next += 1;
            }
            let n_hb = cmds.len() - submitted.len();
            let (s, w) = step(&mut core, cmds, T0 + now);
            for (k, &j) in submitted.iter().enumerate() {
                let Answer::Submitted(Ok(job)) = &s.answers[n_hb + k] else {
                    panic!("job {j}: {:?}", s.answers[n_hb + k])
                };
                job_index.insert(job.id, j);
            }
            for x in &w {
                if let Write::StartJob {
                    job,
                    run,
                    at,
                    tasks,
                } = x
                {
                    let j = job_index[job];
                    let t = at - T0;
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
            commit.push(w);
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

#[test]
fn the_live_loop_decides_as_the_simulator_one_start_at_a_time() {
    let cluster = Cluster::parse(CLUSTER).unwrap();
    let wl = workload(&cluster);
    let sim = simulated(&cluster, &wl);
    let live = live(&cluster, &wl);
    assert_eq!(sim.len(), wl.jobs.len(), "every job ran once");
    for (k, (s, l)) in sim.iter().zip(&live).enumerate() {
        assert_eq!(s, l, "start {k}: the simulator and the live loop differ");
    }
    assert_eq!(sim.len(), live.len());
}
