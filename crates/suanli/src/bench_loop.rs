//! `suanli bench loop`: the live scheduling loop under open-loop load.
//!
//! In one process: a SQLite store and the real loop (`control::start`: the
//! driver batching commands into transactions) on a thread of its own, and
//! a fleet of fake agents (registered nodes that heartbeat every few
//! seconds, staggered, reporting the tasks they were told to start and
//! their exits when each task's run time is over). Jobs arrive at a fixed
//! rate whatever the loop's speed (open loop), with run times of seconds to
//! minutes, so the pool sees arrivals, starts, heartbeats and completions
//! at once.
//!
//! Figures: the time from sending a submission to its durable answer, for
//! the jobs that the same batch started (the answer is RUNNING: the start
//! decision is committed with it), as p50 / p99 / max; how many had to
//! queue instead; and the CPU share of the loop (its thread, the store's
//! writer thread and SQLite's worker threads) over the run.
//!
//! `--backlog N` queues N jobs first that wait through the whole run (each
//! wants a whole node of a GPU model the pool has one node of): the loop
//! then works with a long queue in front of every pass.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use suanli_api::{Class, JobState, Report, TaskExit, TaskKey};
use suanli_server::control::{self, Control, LoopConfig, Registration};
use suanli_server::store::{NewJob, Store};

use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct BenchLoopArgs {
    /// Registered nodes (8 GPUs each).
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Submissions per second, sent whatever the loop's speed.
    #[arg(long, default_value_t = 2_000.0)]
    rate: f64,
    /// How long jobs arrive.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Run times are uniform in [min-run, max-run] seconds.
    #[arg(long, default_value_t = 5.0)]
    min_run: f64,
    #[arg(long, default_value_t = 120.0)]
    max_run: f64,
    /// The fake agents' heartbeat interval, seconds.
    #[arg(long, default_value_t = 5.0)]
    heartbeat: f64,
    /// Jobs queued before the run that wait through it (a long queue).
    #[arg(long, default_value_t = 0)]
    backlog: usize,
    /// Also write the figures as JSON to FILE (`-`: standard output only).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Figures {
    nodes: usize,
    /// Jobs waiting through the run.
    backlog: usize,
    rate_per_s: f64,
    seconds: f64,
    submitted: usize,
    /// Answered RUNNING: started by the batch that accepted them.
    started_at_once: usize,
    /// Answered PENDING: no room at that moment.
    queued: usize,
    refused: usize,
    /// Submission → durable answer of the jobs started at once, ms.
    start_p50_ms: f64,
    start_p99_ms: f64,
    start_max_ms: f64,
    heartbeats: usize,
    /// Exits the fake agents reported.
    completions: usize,
    /// CPU seconds of the loop (its thread and SQLite's worker threads) per
    /// second of the run.
    loop_cpu_share: f64,
    /// The same for the whole process (the fake fleet and clients too).
    process_cpu_share: f64,
}

/// What the fake fleet runs: per node, the tasks it was told to start and
/// when each one's run time is over.
#[derive(Default)]
struct Fleet {
    running: HashMap<usize, Vec<(TaskKey, Instant)>>,
    heartbeats: usize,
    completions: usize,
}

/// A job's run time, from its id (so an agent knows it from a start order).
fn run_time(job: i64, min: f64, max: f64) -> Duration {
    let x = (job as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let u = x as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64(min + u * (max - min))
}

fn node_name(i: usize) -> String {
    format!("n{i:05}")
}

pub fn run(a: BenchLoopArgs) -> Result<(), CliError> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if a.nodes == 0 || !positive(a.rate) || !positive(a.seconds) || !positive(a.heartbeat) {
        return Err(usage(
            "--nodes, --rate, --seconds and --heartbeat must be positive",
        ));
    }
    if !(positive(a.min_run) && a.max_run >= a.min_run && a.max_run.is_finite()) {
        return Err(usage("--min-run must be positive and at most --max-run"));
    }
    let dir = std::env::temp_dir().join(format!("suanli-bench-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| failure(e.to_string()))?;
    let r = measure(&a, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let fig = r?;
    let text = a.json.as_deref() != Some(std::path::Path::new("-"));
    if text {
        println!(
            "open loop: {} nodes, {} jobs waiting, {:.0} submissions/s for {:.0} s: {} submitted, {} started at once, {} queued, {} refused",
            fig.nodes, fig.backlog, fig.rate_per_s, fig.seconds, fig.submitted, fig.started_at_once, fig.queued, fig.refused
        );
        println!(
            "submission -> durable start decision: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            fig.start_p50_ms, fig.start_p99_ms, fig.start_max_ms
        );
        println!(
            "{} heartbeats, {} completions; CPU share: loop {:.0}%, whole process {:.0}%",
            fig.heartbeats,
            fig.completions,
            fig.loop_cpu_share * 100.0,
            fig.process_cpu_share * 100.0
        );
    }
    if let Some(path) = &a.json {
        let j = serde_json::to_string_pretty(&fig).expect("figures serialise");
        if path.as_os_str() == "-" {
            println!("{j}");
        } else {
            std::fs::write(path, j + "\n")
                .map_err(|e| failure(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

fn measure(a: &BenchLoopArgs, dir: &std::path::Path) -> Result<Figures, CliError> {
    // The loop on a thread (and runtime) of its own, so that its CPU time
    // can be told apart from the fleet's.
    let (tx, rx) = std::sync::mpsc::channel::<Result<(Control, i64), String>>();
    let dir = dir.to_path_buf();
    let heartbeat_s = a.heartbeat.ceil().max(1.0) as u64;
    let loop_thread = std::thread::Builder::new()
        .name("suanli-loop".to_string())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let setup = async {
                    let store = Store::open(&dir).await.map_err(|e| e.to_string())?;
                    let t = store
                        .create_tenant("bench", 1.0, "bench")
                        .await
                        .map_err(|e| e.to_string())?;
                    let cfg = LoopConfig {
                        heartbeat_interval_s: heartbeat_s,
                        lease_ms: heartbeat_s * 4_000,
                        ..LoopConfig::default()
                    };
                    control::start(store, &cfg)
                        .await
                        .map(|(c, task)| (c, t.id, task))
                        .map_err(|e| format!("{e:#}"))
                };
                match setup.await {
                    Ok((c, tenant, task)) => {
                        let _ = tx.send(Ok((c, tenant)));
                        let _ = task.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| failure(e.to_string()))?;
    let (control, tenant_id) = rx
        .recv()
        .map_err(|_| failure("the loop did not start"))?
        .map_err(failure)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failure(e.to_string()))?;
    let fig = rt.block_on(drive(a, control, tenant_id));
    // Every handle is gone: the loop ends.
    drop(rt);
    let _ = loop_thread.join();
    fig
}

async fn drive(a: &BenchLoopArgs, control: Control, tenant_id: i64) -> Result<Figures, CliError> {
    let gone = |_| failure("the scheduling loop stopped");
    // Register the nodes (the loop batches them).
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.nodes {
        let c = control.clone();
        set.spawn(async move {
            c.register(Registration {
                name: node_name(i),
                addr: String::new(),
                gpu_model: Some("H200".to_string()),
                gpus: 8,
                gpu_memory_mib: 141 * 1024,
                cpu_milli: 128_000,
                memory_mib: 1 << 21,
                labels: [("rack".to_string(), format!("r{}", i / 32))].into(),
            })
            .await
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| failure(e.to_string()))?
            .map_err(gone)?
            .map_err(|r| failure(format!("registration refused: {r:?}")))?;
    }
    backlog(a.backlog, &control, tenant_id).await?;
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let cpu0 = (loop_cpu_s(), process_cpu_s());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.seconds);
    // The fleet: every heartbeat interval, each node once, staggered.
    let slots = 100usize;
    let slot_len = Duration::from_secs_f64(a.heartbeat / slots as f64);
    let hb = {
        let (control, fleet) = (control.clone(), fleet.clone());
        let (min, max, nodes) = (a.min_run, a.max_run, a.nodes);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(slot_len);
            let mut slot = 0usize;
            let mut beats = tokio::task::JoinSet::new();
            while Instant::now() < end {
                tick.tick().await;
                for i in (slot..nodes).step_by(slots) {
                    let (c, f) = (control.clone(), fleet.clone());
                    beats.spawn(async move { heartbeat(&c, &f, i, min, max).await });
                }
                slot = (slot + 1) % slots;
                while beats.try_join_next().is_some() {}
            }
            while beats.join_next().await.is_some() {}
        })
    };
    // Submissions, open loop: on time whatever the answers.
    let mut subs = tokio::task::JoinSet::new();
    let mut tally = Tally::default();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < end {
        tick.tick().await;
        let due = (t0.elapsed().as_secs_f64() * a.rate) as usize;
        while sent < due {
            sent += 1;
            let c = control.clone();
            let job = NewJob {
                name: format!("j{sent}"),
                command: vec!["train".to_string()],
                tasks: 1,
                cpu_milli: 8_000,
                memory_mib: 64 * 1024,
                num_gpu: 1,
                gpu_milli: 1000,
                gpu_models: Vec::new(),
                class: Class::OnDemand,
                env: Default::default(),
                workdir: String::new(),
                max_runtime_s: None,
                retries: 0,
                idem_key: None,
                idem_hash: None,
                service: None,
            };
            subs.spawn(async move {
                let t = Instant::now();
                let r = c.submit(tenant_id, "bench".to_string(), job).await;
                (t.elapsed(), r.ok().and_then(Result::ok).map(|j| j.state))
            });
        }
        while let Some(r) = subs.try_join_next() {
            tally.add(r.ok());
        }
    }
    while let Some(r) = subs.join_next().await {
        tally.add(r.ok());
    }
    let _ = hb.await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (loop_cpu_s() - cpu0.0, process_cpu_s() - cpu0.1);
    let f = fleet.lock().expect("fleet lock");
    let mut lat = tally.started;
    lat.sort_unstable();
    let pct = |q: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    Ok(Figures {
        nodes: a.nodes,
        backlog: a.backlog,
        rate_per_s: a.rate,
        seconds: a.seconds,
        submitted: sent,
        started_at_once: lat.len(),
        queued: tally.queued,
        refused: tally.refused,
        start_p50_ms: pct(0.5),
        start_p99_ms: pct(0.99),
        start_max_ms: pct(1.0),
        heartbeats: f.heartbeats,
        completions: f.completions,
        loop_cpu_share: cpu.0 / wall,
        process_cpu_share: cpu.1 / wall,
    })
}

/// The answers to the submissions.
#[derive(Default)]
struct Tally {
    /// Time to the answer of those started at once.
    started: Vec<Duration>,
    queued: usize,
    refused: usize,
}

impl Tally {
    fn add(&mut self, r: Option<(Duration, Option<JobState>)>) {
        match r {
            Some((d, Some(JobState::Running))) => self.started.push(d),
            Some((_, Some(_))) => self.queued += 1,
            _ => self.refused += 1,
        }
    }
}

/// One fake agent's heartbeat: report what runs and what ended, take the
/// orders.
async fn heartbeat(c: &Control, fleet: &Mutex<Fleet>, node: usize, min: f64, max: f64) {
    let now = Instant::now();
    let (running, exited) = {
        let mut f = fleet.lock().expect("fleet lock");
        let tasks = f.running.entry(node).or_default();
        let (done, live): (Vec<_>, Vec<_>) = tasks.drain(..).partition(|t| t.1 <= now);
        *tasks = live;
        let running: Vec<TaskKey> = tasks.iter().map(|t| t.0).collect();
        (running, done)
    };
    let report = Report {
        running,
        exited: exited
            .iter()
            .map(|(k, _)| TaskExit {
                job: k.job,
                run: k.run,
                task: k.task,
                exit_code: Some(0),
                signal: None,
                reason: String::new(),
                timeout: false,
                not_started: false,
            })
            .collect(),
    };
    let Ok(Ok(orders)) = c.report(node_name(node), report, true).await else {
        return;
    };
    let mut f = fleet.lock().expect("fleet lock");
    f.heartbeats += 1;
    f.completions += exited.len();
    let tasks = f.running.entry(node).or_default();
    let now = Instant::now();
    for s in orders.start {
        let k = TaskKey {
            job: s.task.job,
            run: s.task.run,
            task: s.task.task,
        };
        if !tasks.iter().any(|t| t.0 == k) {
            tasks.push((k, now + run_time(k.job, min, max)));
        }
    }
    tasks.retain(|t| {
        !orders
            .kill
            .iter()
            .any(|k| (k.job, k.run, k.task) == (t.0.job, t.0.run, t.0.task))
    });
}

/// CPU seconds of this process's threads whose name starts with one of
/// `prefixes` (Linux `/proc/self/task`), or of the whole process.
fn cpu_s(prefixes: Option<&[&str]>) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for e in dir.flatten() {
        let p = e.path();
        if let Some(prefixes) = prefixes {
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if !prefixes.iter().any(|x| comm.starts_with(x)) {
                continue;
            }
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Fields after the command (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')').map_or("", |x| x.1);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
        let u: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
        let s: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
        ticks += u + s;
    }
    ticks as f64 / tick
}

/// Queue `n` jobs that wait through the run: each wants all 8 GPUs of a
/// node of a model the pool has one node of (which takes the first).
async fn backlog(n: usize, control: &Control, tenant_id: i64) -> Result<(), CliError> {
    if n == 0 {
        return Ok(());
    }
    let gone = |_| failure("the scheduling loop stopped");
    control
        .register(Registration {
            name: "backlog-node".to_string(),
            addr: String::new(),
            gpu_model: Some("B200".to_string()),
            gpus: 8,
            gpu_memory_mib: 180 * 1024,
            cpu_milli: 128_000,
            memory_mib: 1 << 21,
            labels: Default::default(),
        })
        .await
        .map_err(gone)?
        .map_err(|r| failure(format!("registration refused: {r:?}")))?;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = control.clone();
        set.spawn(async move {
            let job = NewJob {
                name: format!("backlog{i}"),
                command: vec!["train".to_string()],
                tasks: 1,
                cpu_milli: 8_000,
                memory_mib: 64 * 1024,
                num_gpu: 8,
                gpu_milli: 1000,
                gpu_models: vec!["B200".to_string()],
                class: Class::Spot,
                env: Default::default(),
                workdir: String::new(),
                max_runtime_s: None,
                retries: 0,
                idem_key: None,
                idem_hash: None,
                service: None,
            };
            c.submit(tenant_id, "bench".to_string(), job).await
        });
        // At most a few batches in flight.
        while set.len() >= 16_384 {
            if let Some(r) = set.join_next().await {
                backlog_answer(r)?;
            }
        }
    }
    while let Some(r) = set.join_next().await {
        backlog_answer(r)?;
    }
    Ok(())
}

fn backlog_answer(
    r: Result<
        Result<Result<suanli_server::store::Job, control::Refusal>, control::Gone>,
        tokio::task::JoinError,
    >,
) -> Result<(), CliError> {
    r.map_err(|e| failure(e.to_string()))?
        .map_err(|_| failure("the scheduling loop stopped"))?
        .map_err(|r| failure(format!("a backlog job was refused: {r:?}")))?;
    Ok(())
}

fn loop_cpu_s() -> f64 {
    cpu_s(Some(&["suanli-loop", "sqlx-sqlite", "suanli-writer"]))
}

fn process_cpu_s() -> f64 {
    cpu_s(None)
}
