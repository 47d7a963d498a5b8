//! The simulator's money equals what the live ledger bills for the same
//! schedule. A small workload (gangs, GPU shares, CPU-only jobs, three
//! classes, spot preemptions, a price change mid-run) is simulated with a
//! meter; the engine's events are then replayed into a real SQLite store as
//! the control loop writes them (node registration, attempt start, agent
//! confirmation, exit, kill order on preemption). The store's usage
//! intervals and node history, priced by the same ledger, must give exactly
//! the simulator's economics: every invoice line, every total, idle value.

use std::collections::BTreeMap;
use std::process::Command;

use suanli_billing::{economics, parse_time, PriceBook};
use suanli_sched::Placement;
use suanli_server::store::{JobState, NewJob, Node, NodeState, Store, TaskState, Write};
use suanli_sim::jobs::{money, simulate, workload, Cluster, Meter, SimEvent, SimParams, Workload};

const LIVE: &[TaskState] = &[TaskState::Assigned, TaskState::Running];

/// A change of every task of one attempt, as the control loop writes it.
fn tasks(
    job: i64,
    run: i64,
    from: &'static [TaskState],
    to: TaskState,
    at: Option<i64>,
    exit_code: Option<i64>,
) -> Write {
    Write::TaskState {
        job,
        run,
        task: None,
        node: None,
        from,
        to,
        at,
        exit_code,
        reason: String::new(),
    }
}

/// What the engine did, owned, for the replay.
enum Ev {
    Start(usize, u64, Vec<Placement>),
    Preempt(usize, u64),
    Complete(usize, u64),
}

const CLUSTER: &str = r#"
name = "tiny"
[[group]]
name = "a100"
count = 2
gpu_model = "A100-80G"
gpus = 4
cpu_cores = 64
memory_gib = 512
[[group]]
name = "h800"
count = 1
gpu_model = "H800"
gpus = 8
cpu_cores = 96
memory_gib = 1024
[[group]]
name = "cpu"
count = 1
gpus = 0
cpu_cores = 32
memory_gib = 128
"#;

fn inputs(dir: &std::path::Path) -> (Cluster, Workload) {
    let c = dir.join("cluster.toml");
    std::fs::write(&c, CLUSTER).unwrap();
    let w = dir.join("w.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["gen", "--jobs", "250", "--seed", "7", "--load", "1.3"])
        .args(["--spot", "0.35", "--guaranteed", "0.3", "--share", "0.3"])
        .args(["--tenants", "3", "--cluster"])
        .arg(&c)
        .arg("--out")
        .arg(&w)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // CPU-only jobs and multi-node gangs too.
    let mut text = std::fs::read_to_string(&w).unwrap();
    for i in 0..4 {
        text.push_str(&format!(
            "gang-{i},tenant-{},{},{},2,16000,65536,4,1000,,guaranteed,,\n",
            i % 3,
            900 * i + 50,
            2400 + 300 * i
        ));
    }
    for i in 0..6 {
        text.push_str(&format!(
            "cpu-{i},tenant-{},{},{},1,8000,16384,0,0,,on-demand,,\n",
            i % 3,
            600 * i,
            1800 + 100 * i
        ));
    }
    std::fs::write(&w, text).unwrap();
    let cluster = Cluster::load(&c).unwrap();
    let wl = workload::load("native", &w, &cluster).unwrap();
    (cluster, wl)
}

#[test]
fn simulated_money_equals_the_live_ledger_for_the_same_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, wl) = inputs(dir);
    let book = PriceBook::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/prices.toml"
    )))
    .unwrap();
    // Start a few hours before the price change of 2026-11-15.
    let t0 = parse_time("2026-11-14T21:00:00Z").unwrap();
    let mut meter = Meter::new(&cluster, &wl, t0);
    let mut evs = Vec::new();
    let mut params = SimParams::new("classes");
    params.check_ledger = true;
    let mut r = simulate(
        &cluster,
        &wl,
        &params,
        &mut |e: &SimEvent| {
            meter.observe(e);
            match *e {
                SimEvent::Start {
                    job,
                    at,
                    placements,
                } => evs.push(Ev::Start(job, at, placements.to_vec())),
                SimEvent::Preempt { job, at, .. } => evs.push(Ev::Preempt(job, at)),
                SimEvent::Complete { job, at } => evs.push(Ev::Complete(job, at)),
                SimEvent::Arrive { .. } => {}
                SimEvent::Interrupt { .. } | SimEvent::Node { .. } => {
                    unreachable!("no node churn in this cluster")
                }
            }
        },
        &mut |_| {},
    )
    .unwrap();
    let usage = meter.finish();
    assert!(r.preemptions > 0, "the workload must preempt spot work");
    let change = parse_time("2026-11-15").unwrap();
    assert!(
        usage
            .iter()
            .any(|u| u.start < change && u.end.unwrap() > change),
        "some task must run across the price change"
    );
    assert!(
        usage.iter().any(|u| u.gpu_milli > 0 && u.gpu_milli < 1000),
        "GPU shares"
    );
    assert!(usage.iter().any(|u| u.task > 0), "gangs");
    assert!(usage.iter().any(|u| u.gpu_milli == 0), "CPU-only jobs");
    money::price(&book, &cluster, t0, std::slice::from_mut(&mut r), &[usage]);
    let sim = r.money.clone().unwrap();
    assert!(sim.revenue > rust_decimal::Decimal::ZERO);

    // Replay the schedule into a real store, as the control loop writes it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let live = rt.block_on(async {
        let store = Store::open(dir).await.unwrap();
        let mut tenant_ids = Vec::new();
        for t in &wl.tenants {
            tenant_ids.push(store.create_tenant(t, 1.0, "test").await.unwrap().id);
        }
        let mut w = Vec::new();
        for (i, n) in cluster.nodes.iter().enumerate() {
            w.push(Write::UpsertNode(Node {
                id: i as i64 + 1,
                name: n.name.clone(),
                addr: String::new(),
                gpu_model: n.model.map(|m| cluster.models.name(m).to_string()),
                gpus: n.gpus as i64,
                gpu_memory_mib: 0,
                cpu_milli: n.cpu_milli as i64,
                memory_mib: n.memory_mib as i64,
                rack: String::new(),
                labels: BTreeMap::new(),
                state: NodeState::Ready,
                registered_ms: t0,
                last_heartbeat_ms: t0,
            }));
        }
        for (i, j) in wl.jobs.iter().enumerate() {
            w.push(Write::InsertJob {
                id: i as i64 + 1,
                tenant_id: tenant_ids[j.tenant.0 as usize],
                job: NewJob {
                    name: format!("j{i}"),
                    command: vec!["true".into()],
                    tasks: j.tasks as i64,
                    cpu_milli: j.req.cpu_milli as i64,
                    memory_mib: j.req.memory_mib as i64,
                    num_gpu: j.req.num_gpu as i64,
                    gpu_milli: j.req.gpu_milli as i64,
                    gpu_models: Vec::new(),
                    class: j.class.name().parse().unwrap(),
                    env: BTreeMap::new(),
                    workdir: String::new(),
                    max_runtime_s: None,
                    retries: 0,
                    idem_key: None,
                    idem_hash: None,
                    service: None,
                },
                at: t0 + j.submit as i64,
            });
        }
        store.commit(w.clone()).await.unwrap();
        let mut runs = vec![0i64; wl.jobs.len()];
        for e in &evs {
            let mut w = Vec::new();
            match e {
                Ev::Start(job, at, placements) => {
                    runs[*job] += 1;
                    let id = *job as i64 + 1;
                    w.push(Write::StartJob {
                        job: id,
                        run: runs[*job],
                        at: t0 + *at as i64,
                        tasks: placements
                            .iter()
                            .map(|p| (p.node as i64 + 1, p.gpus.0 as i64))
                            .collect(),
                    });
                    // The agent confirms.
                    w.push(tasks(
                        id,
                        runs[*job],
                        &[TaskState::Assigned],
                        TaskState::Running,
                        None,
                        None,
                    ));
                }
                Ev::Preempt(job, at) => {
                    let id = *job as i64 + 1;
                    // The kill order ends billing; the agent's confirmation later does not.
                    let at = Some(t0 + *at as i64);
                    w.push(tasks(id, runs[*job], LIVE, TaskState::Killing, at, None));
                    w.push(Write::JobState {
                        job: id,
                        state: JobState::Pending,
                        ended: None,
                    });
                    w.push(tasks(
                        id,
                        runs[*job],
                        &[TaskState::Killing],
                        TaskState::Killed,
                        None,
                        Some(-15),
                    ));
                }
                Ev::Complete(job, at) => {
                    let id = *job as i64 + 1;
                    let at = Some(t0 + *at as i64);
                    w.push(tasks(id, runs[*job], LIVE, TaskState::Exited, at, Some(0)));
                    w.push(Write::JobState {
                        job: id,
                        state: JobState::Completed,
                        ended: at,
                    });
                }
            }
            store.commit(w.clone()).await.unwrap();
        }
        let (from, to) = (sim.from, sim.to);
        let usage = store.usage(None, from, to).await.unwrap();
        let spans = store.node_spans(from, to).await.unwrap();
        economics(&book, &spans, &usage, from, to, to)
    });
    assert_eq!(live.invoices.len(), wl.tenants.len());
    for (a, b) in sim.invoices.iter().zip(&live.invoices) {
        assert_eq!(a, b, "invoice of {}", a.tenant);
    }
    assert_eq!(sim, live);
    eprintln!(
        "{} tasks-attempts, {} preemptions: revenue {} {}, idle value {}, identical in both",
        evs.iter().filter(|e| matches!(e, Ev::Start(..))).count(),
        r.preemptions,
        sim.revenue,
        sim.currency,
        sim.idle_value
    );
}
