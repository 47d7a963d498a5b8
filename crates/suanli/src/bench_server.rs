//! `suanli bench server`: the control plane's two figures of merit.
//!
//! 1. Durable submissions per second: the real server binary on a fresh data
//!    dir, N client threads POSTing jobs over keep-alive HTTP for a fixed
//!    time; only 201 answers (committed before the answer) count. Baseline in
//!    the same run: one client, which gets no batching (one fsync per job).
//! 2. Placement decisions per second of the scheduling loop: in-process, a
//!    store with `--nodes` registered 8-GPU nodes (drained) and `--pending`
//!    queued jobs of mixed shapes; then every node is undrained in one batch
//!    and the loop's step (the pass plus the commit of every decision) is
//!    timed. Baseline: the same step with node grouping off (every node with
//!    free GPUs scored for every job).
//! 3. The commit's cost against plain SQLite, in the same process: the same
//!    number of rows as the timed commit wrote, inserted with multi-row
//!    statements in one transaction into a fresh store opened with the same
//!    settings. The ratio (commit time / plain insert time) moves with the
//!    code, not with the machine's disk, so `--max-commit-ratio` can guard
//!    it in CI.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use suanli_api::Class;
use suanli_api::{
    GpuInfo, JobSubmit, NewTenant, NewToken, NodeRegistration, TokenRequest, PROTOCOL,
    PROTOCOL_HEADER,
};
use suanli_server::control::{Command as LoopCmd, Driver, LoopConfig, Registration};
use suanli_server::store::sqlite::SqliteStore;
use suanli_server::store::{NewJob, Store};

use crate::{failure, CliError};

#[derive(Args)]
pub struct BenchServerArgs {
    /// Concurrent clients of the submission benchmark.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds each submission run lasts.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Registered nodes (8 GPUs each) of the placement benchmark.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Pending jobs of the placement benchmark.
    #[arg(long, default_value_t = 100_000)]
    pending: usize,
    /// Skip the submission benchmark.
    #[arg(long)]
    no_submit: bool,
    /// Skip the placement benchmark.
    #[arg(long)]
    no_place: bool,
    /// Also write the figures as JSON to FILE (`-`: standard output, and
    /// no text).
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Fail (exit 1) when the loop's commit takes more than this many times
    /// the plain SQLite insert of the same rows.
    #[arg(long, value_name = "RATIO")]
    max_commit_ratio: Option<f64>,
}

/// `bench server --json`.
#[derive(Serialize, Default)]
struct Figures {
    #[serde(skip_serializing_if = "Option::is_none")]
    submissions: Option<SubmitFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<PlaceFigures>,
}

#[derive(Serialize)]
struct SubmitFigures {
    clients: usize,
    one_client_per_s: f64,
    many_clients_per_s: f64,
}

#[derive(Serialize)]
struct PlaceFigures {
    nodes: usize,
    pending: usize,
    /// The placement policy and its target workload.
    policy: String,
    target: String,
    decisions: usize,
    decisions_per_s: f64,
    /// Bounded passes (batches) the decisions took.
    passes: usize,
    /// Time in the passes, summed; it overlaps the commits (each pass runs
    /// while the previous batch commits).
    pass_s: f64,
    /// Time the store spent committing, summed over the batches.
    commit_s: f64,
    /// Rows the timed commit inserted or updated.
    commit_rows: usize,
    /// Node grouping and the walk by job shape off, same workload.
    baseline_decisions_per_s: f64,
    /// The same number of rows through plain multi-row inserts.
    plain_insert_s: f64,
    /// commit_s / plain_insert_s.
    commit_ratio: f64,
    /// Resident memory the loop grew by per pending job, bytes (includes
    /// SQLite's page cache).
    rss_bytes_per_pending_job: f64,
}

pub fn run(a: BenchServerArgs) -> Result<(), CliError> {
    if a.clients == 0 || !a.seconds.is_finite() || a.seconds <= 0.0 {
        return Err(crate::usage("--clients and --seconds must be positive"));
    }
    if a.nodes == 0 || a.pending == 0 {
        return Err(crate::usage("--nodes and --pending must be positive"));
    }
    if a.max_commit_ratio
        .is_some_and(|r| !(r.is_finite() && r > 0.0))
    {
        return Err(crate::usage("--max-commit-ratio must be a positive number"));
    }
    let text = a.json.as_deref() != Some(std::path::Path::new("-"));
    let mut fig = Figures::default();
    if !a.no_submit {
        let base = submissions(1, a.seconds)?;
        let many = submissions(a.clients, a.seconds)?;
        if text {
            println!(
                "submissions: 1 client {:.0}/s, {} clients {:.0}/s ({:.1}x)",
                base,
                a.clients,
                many,
                many / base
            );
        }
        fig.submissions = Some(SubmitFigures {
            clients: a.clients,
            one_client_per_s: base,
            many_clients_per_s: many,
        });
    }
    if !a.no_place {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failure(e.to_string()))?;
        let base = rt.block_on(placements(a.nodes, a.pending, false))?;
        let fast = rt.block_on(placements(a.nodes, a.pending, true))?;
        // The plain insert is short: the best of three.
        let mut plain = f64::INFINITY;
        for _ in 0..3 {
            plain = plain.min(rt.block_on(plain_insert(fast.rows))?);
        }
        let ratio = fast.commit / plain;
        fig.placement = Some(PlaceFigures {
            nodes: a.nodes,
            pending: a.pending,
            policy: fast.policy.clone(),
            target: fast.target.clone(),
            decisions: fast.decisions,
            decisions_per_s: fast.decisions as f64 / fast.total,
            passes: fast.batches,
            pass_s: fast.pass,
            commit_s: fast.commit,
            commit_rows: fast.rows,
            baseline_decisions_per_s: base.decisions as f64 / base.total,
            plain_insert_s: plain,
            commit_ratio: ratio,
            // The first run's growth: the second reuses memory the first freed.
            rss_bytes_per_pending_job: base.rss_per_pending,
        });
        if text {
            println!(
                "placement: {} nodes, {} pending: baseline {} decisions in {:.3} s ({:.0}/s); \
             suanli {} decisions in {:.3} s ({:.0}/s, {:.1}x); {} pass(es) of {:.3} s overlapping \
             commits of {:.3} s",
                a.nodes,
                a.pending,
                base.decisions,
                base.total,
                base.decisions as f64 / base.total,
                fast.decisions,
                fast.total,
                fast.decisions as f64 / fast.total,
                (fast.decisions as f64 / fast.total) / (base.decisions as f64 / base.total),
                fast.batches,
                fast.pass,
                fast.commit,
            );
            println!(
                "placement policy: {} (the live default); target workload {}",
                fast.policy, fast.target
            );
            println!(
                "commit: {} rows in {:.3} s; the same rows as plain SQLite inserts {:.3} s ({:.1}x)",
                fast.rows, fast.commit, plain, ratio
            );
            println!(
                "memory: {:.0} bytes of resident memory per pending job",
                base.rss_per_pending
            );
        }
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
    if let (Some(max), Some(p)) = (a.max_commit_ratio, &fig.placement) {
        if p.commit_ratio > max {
            return Err(failure(format!(
                "the loop's commit took {:.1}x the plain insert of the same rows (limit {max}x): \
                 a slower commit path?",
                p.commit_ratio
            )));
        }
    }
    Ok(())
}

/// The process's resident memory (Linux `/proc/self/statm`), 0 elsewhere.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Seconds to insert `rows` rows of 7 integer and text columns, with a
/// primary key like the task rows', in one transaction of multi-row
/// statements, into a fresh store opened with the server's settings.
async fn plain_insert(rows: usize) -> Result<f64, CliError> {
    let f = |e: sqlx::Error| failure(format!("plain insert: {e}"));
    let dir = tmp_dir("plain");
    std::fs::create_dir_all(&dir).map_err(|e| failure(e.to_string()))?;
    let store = SqliteStore::open(&dir)
        .await
        .map_err(|e| failure(e.to_string()))?;
    let pool = store.pool();
    sqlx::query(
        "CREATE TABLE plain (a INTEGER NOT NULL, b INTEGER NOT NULL, c INTEGER NOT NULL, \
         d INTEGER, e INTEGER, f INTEGER, g TEXT, PRIMARY KEY (a, b, c))",
    )
    .execute(pool)
    .await
    .map_err(f)?;
    let t0 = Instant::now();
    let mut tx = pool.begin().await.map_err(f)?;
    let all: Vec<usize> = (0..rows).collect();
    for chunk in all.chunks(150) {
        let mut q =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO plain (a, b, c, d, e, f, g) ");
        q.push_values(chunk, |mut b, &i| {
            let i = i as i64;
            b.push_bind(i)
                .push_bind(1i64)
                .push_bind(i % 2)
                .push_bind(i % 5000)
                .push_bind(255i64)
                .push_bind(1_780_000_000_000i64 + i)
                .push_bind("ASSIGNED");
        });
        q.build().execute(&mut *tx).await.map_err(f)?;
    }
    tx.commit().await.map_err(f)?;
    let took = t0.elapsed().as_secs_f64();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(took)
}

/// A request body of any type, for one closure that posts them all.
trait ErasedBody {
    fn json(&self) -> String;
}

impl<T: Serialize> ErasedBody for T {
    fn json(&self) -> String {
        serde_json::to_string(self).expect("request bodies serialise")
    }
}

/// The server under test, killed however the benchmark ends (an early
/// error must not leave it running, holding the caller's pipes).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tmp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("suanli-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Acknowledged submissions per second with `clients` concurrent clients.
fn submissions(clients: usize, seconds: f64) -> Result<f64, CliError> {
    let dir = tmp_dir(&format!("submit{clients}"));
    std::fs::create_dir_all(&dir).map_err(|e| failure(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| failure(e.to_string()))?;
    let mut child = Child(
        Command::new(exe)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failure(format!("cannot start the server: {e}")))?,
    );
    let mut lines = BufReader::new(child.0.stderr.take().expect("piped")).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(a) = l.strip_prefix("listening on ") {
                    break a.to_string();
                }
            }
            _ => return Err(failure("the server exited before listening")),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{addr}");
    let admin = std::fs::read_to_string(dir.join("admin.token"))
        .map_err(|e| failure(e.to_string()))?
        .trim()
        .to_string();
    let post = |path: &str, tok: &str, body: &dyn ErasedBody| -> Result<ureq::Response, CliError> {
        ureq::post(&format!("{url}{path}"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set(PROTOCOL_HEADER, &PROTOCOL.to_string())
            .set("Content-Type", "application/json")
            .send_string(&body.json())
            .map_err(|e| failure(format!("{path}: {e}")))
    };
    let token = |req: TokenRequest| -> Result<String, CliError> {
        let t: NewToken = post("/v1/tokens", &admin, &req)?
            .into_json()
            .map_err(|e| failure(e.to_string()))?;
        Ok(t.token)
    };
    let tenant = NewTenant {
        name: "bench".to_string(),
        weight: None,
    };
    post("/v1/tenants", &admin, &tenant)?;
    let tok = token(TokenRequest {
        scope: "tenant".to_string(),
        tenant: Some("bench".to_string()),
        node: None,
        name: None,
    })?;
    let agent = token(TokenRequest {
        scope: "agent".to_string(),
        tenant: None,
        node: None,
        name: None,
    })?;
    for n in 0..4 {
        let reg = NodeRegistration {
            name: format!("n{n}"),
            addr: None,
            labels: None,
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            gpus: (0..8)
                .map(|i| GpuInfo {
                    index: i,
                    model: "A100-80G".to_string(),
                    memory_mib: None,
                })
                .collect(),
            credential_sha256: Some(suanli_api::token::new_token().1),
        };
        post("/v1/agents/register", &agent, &reg)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for c in 0..clients {
        let (stop, acked, errors, tok, url) = (
            stop.clone(),
            acked.clone(),
            errors.clone(),
            tok.clone(),
            url.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = JobSubmit {
                    name: Some(format!("c{c}-{i}")),
                    command: vec!["sleep".to_string(), "60".to_string()],
                    gpus: Some((i % 3) as i64),
                    class: Some(["spot", "on-demand"][(i % 2) as usize].to_string()),
                    ..JobSubmit::default()
                };
                match agent
                    .post(&format!("{url}/v1/jobs"))
                    .set("Authorization", &format!("Bearer {tok}"))
                    .send_json(&body)
                {
                    Ok(r) if r.status() == 201 => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let n = acked.load(Ordering::Relaxed);
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let e = errors.load(Ordering::Relaxed);
    if e > 0 {
        return Err(failure(format!("{e} submissions failed")));
    }
    Ok(n as f64 / el)
}

struct Placed {
    decisions: usize,
    total: f64,
    pass: f64,
    commit: f64,
    rows: usize,
    batches: usize,
    /// Growth of the process's resident memory while the pending jobs were
    /// queued, per job (includes SQLite's page cache).
    rss_per_pending: f64,
    /// The placement policy measured (the live default).
    policy: String,
    /// Its target workload.
    target: String,
}

/// Undrain `nodes` nodes under `pending` queued jobs, and run the loop's
/// passes until the pool is full (timed).
async fn placements(nodes: usize, pending: usize, group: bool) -> Result<Placed, CliError> {
    let f = |e: anyhow::Error| failure(format!("{e:#}"));
    let dir = tmp_dir(if group { "place" } else { "place-base" });
    std::fs::create_dir_all(&dir).map_err(|e| failure(e.to_string()))?;
    let store = Store::open(&dir)
        .await
        .map_err(|e| failure(e.to_string()))?;
    let t = store
        .create_tenant("bench", 1.0, "bench")
        .await
        .map_err(|e| failure(e.to_string()))?;
    let cfg = LoopConfig {
        group_nodes: group,
        // No agent reports here: nodes must outlive queuing a million jobs.
        lease_ms: 24 * 3600 * 1000,
        ..LoopConfig::default()
    };
    let mut lp = Driver::recover(store, &cfg).await.map_err(f)?;
    let models = ["A100-80G", "H800", "Ascend910B"];
    let mut cmds = Vec::new();
    for n in 0..nodes {
        cmds.push(LoopCmd::Register(Registration {
            name: format!("n{n:05}"),
            addr: String::new(),
            gpu_model: Some(models[n % 3].to_string()),
            gpus: 8,
            gpu_memory_mib: 81920,
            cpu_milli: 128_000,
            memory_mib: 1 << 20,
            labels: [("rack".to_string(), format!("r{}", n / 32))].into(),
        }));
        cmds.push(LoopCmd::Drain {
            node: format!("n{n:05}"),
            drain: true,
            actor: "bench".to_string(),
        });
    }
    lp.step(cmds).await.map_err(f)?;
    let rss_before = rss_bytes();
    // Mixed shapes: shares, 1, 2, 4 and 8 GPUs, a few 2-node gangs, some
    // pinned to a model, classes mixed.
    let mut x: u64 = 42;
    let mut cmds = Vec::new();
    for i in 0..pending {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (x >> 33) % 100;
        let (num_gpu, gpu_milli, tasks) = match r {
            0..=19 => (1, 250 + 250 * ((x >> 20) % 3) as i64, 1),
            20..=54 => (1, 1000, 1),
            55..=74 => (2, 1000, 1),
            75..=89 => (4, 1000, 1),
            90..=97 => (8, 1000, 1),
            _ => (8, 1000, 2),
        };
        let pin = (x >> 40) % 4;
        let gpu_models = if pin < 3 {
            vec![models[pin as usize].to_string()]
        } else {
            Vec::new()
        };
        cmds.push(LoopCmd::Submit {
            tenant_id: t.id,
            tenant: "bench".to_string(),
            job: NewJob {
                name: format!("j{i}"),
                command: vec!["x".to_string()],
                tasks,
                cpu_milli: 4000,
                memory_mib: 16384,
                num_gpu,
                gpu_milli,
                gpu_models,
                class: [Class::Spot, Class::OnDemand, Class::Guaranteed][(x >> 50) as usize % 3],
                env: Default::default(),
                workdir: String::new(),
                max_runtime_s: None,
                retries: 0,
            },
        });
        if cmds.len() == 10_000 {
            lp.step(std::mem::take(&mut cmds)).await.map_err(f)?;
        }
    }
    lp.step(cmds).await.map_err(f)?;
    let rss_pending = rss_bytes().saturating_sub(rss_before);
    let before = lp.decisions_total();
    let cmds = (0..nodes)
        .map(|n| LoopCmd::Drain {
            node: format!("n{n:05}"),
            drain: false,
            actor: "bench".to_string(),
        })
        .collect();
    let target = match lp.core().scheduler().target() {
        Some(w) => format!(
            "learned from the submissions: {} shapes, the most common {:.0}%",
            w.pods.len(),
            w.pods.first().map_or(0.0, |p| p.p * 100.0)
        ),
        None => "none".to_string(),
    };
    let t0 = Instant::now();
    let timing = lp.settle(cmds).await.map_err(f)?;
    let total = t0.elapsed().as_secs_f64();
    let decisions = (lp.decisions_total() - before) as usize;
    drop(lp);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Placed {
        decisions,
        total,
        pass: timing.step_s,
        commit: timing.commit_s,
        rows: timing.rows,
        batches: timing.batches,
        rss_per_pending: rss_pending as f64 / pending as f64,
        policy: cfg.placement.clone(),
        target,
    })
}
