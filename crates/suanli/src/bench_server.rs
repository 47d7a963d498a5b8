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
    /// Skip the placement-while-listing benchmark.
    #[arg(long)]
    no_list: bool,
    /// Runs of the placement-while-listing benchmark, with and without the
    /// lister each (the median counts).
    #[arg(long, default_value_t = 3)]
    list_runs: usize,
    /// Also write the figures as JSON to FILE (`-`: standard output, and
    /// no text).
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Fail (exit 1) when the loop's commit takes more than this many times
    /// the plain SQLite insert of the same rows.
    #[arg(long, value_name = "RATIO")]
    max_commit_ratio: Option<f64>,
    /// Also run every benchmark on PostgreSQL (env SUANLI_STORE): a cluster
    /// whose user may create databases (each run gets a fresh one), e.g.
    /// postgres://USER:PASSWORD@127.0.0.1:5432/postgres. SQLite's figures
    /// come first, from the same run.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

/// Where a benchmark's store lives.
#[derive(Clone)]
enum On {
    Sqlite,
    /// A cluster (its URL), on which each run makes its own database.
    Postgres(String),
}

impl On {
    fn label(&self) -> &'static str {
        match self {
            On::Sqlite => "sqlite",
            On::Postgres(_) => "postgres",
        }
    }

    /// A fresh place for one run's store.
    async fn place(&self, tag: &str) -> Result<Place, CliError> {
        let dir = tmp_dir(tag);
        std::fs::create_dir_all(&dir).map_err(|e| failure(e.to_string()))?;
        let url = match self {
            On::Sqlite => None,
            On::Postgres(cluster) => Some(
                suanli_server::store::postgres::scratch_database(cluster, "suanli_bench")
                    .await
                    .map_err(|e| {
                        failure(format!(
                            "--store {}: {e}",
                            suanli_server::store::redact_url(cluster)
                        ))
                    })?,
            ),
        };
        Ok(Place { dir, url })
    }
}

/// One run's store: SQLite in `dir`, or the database at `url`; the
/// directory is removed when dropped (the database is left to the cluster).
struct Place {
    dir: std::path::PathBuf,
    url: Option<String>,
}

impl Place {
    async fn open(&self) -> Result<Store, CliError> {
        let r = match &self.url {
            None => Store::open(&self.dir).await,
            Some(url) => Store::connect(url).await,
        };
        r.map_err(|e| failure(e.to_string()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `bench server --json`.
#[derive(Serialize, Default)]
struct Figures {
    #[serde(skip_serializing_if = "Option::is_none")]
    submissions: Option<SubmitFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<PlaceFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listing: Option<ListFigures>,
    /// The same benchmarks on PostgreSQL (`--store`).
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres: Option<Box<Figures>>,
}

/// The live loop placing while a tenant lists its pending jobs.
#[derive(Serialize)]
struct ListFigures {
    nodes: usize,
    pending: usize,
    decisions_alone: u64,
    seconds_alone: f64,
    decisions_listing: u64,
    seconds_listing: f64,
    /// Pages of 100 pending jobs (with reasons) listed while the loop
    /// placed, over and over from the first (the median run's).
    pages_listed: u64,
    /// (decisions/s alone) / (decisions/s while listing) - 1, in percent.
    slowdown_pct: f64,
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
    /// The same number of rows through plain multi-row SQLite inserts
    /// (SQLite only).
    #[serde(skip_serializing_if = "Option::is_none")]
    plain_insert_s: Option<f64>,
    /// commit_s / plain_insert_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_ratio: Option<f64>,
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
    let mut fig = measure(&a, &On::Sqlite, text)?;
    if let Some(url) = a
        .store
        .clone()
        .or_else(|| std::env::var("SUANLI_STORE").ok())
    {
        if !suanli_server::store::is_postgres_url(&url) {
            return Err(crate::usage(format!(
                "--store {}: expected postgres://USER:PASSWORD@HOST:PORT/DB",
                suanli_server::store::redact_url(&url)
            )));
        }
        fig.postgres = Some(Box::new(measure(&a, &On::Postgres(url), text)?));
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
    if let (Some(max), Some(ratio)) = (
        a.max_commit_ratio,
        fig.placement.as_ref().and_then(|p| p.commit_ratio),
    ) {
        if ratio > max {
            return Err(failure(format!(
                "the loop's commit took {:.1}x the plain insert of the same rows (limit {max}x): \
                 a slower commit path?",
                ratio
            )));
        }
    }
    Ok(())
}

/// Every benchmark asked for, on one backend.
fn measure(a: &BenchServerArgs, on: &On, text: bool) -> Result<Figures, CliError> {
    let mut fig = Figures::default();
    if !a.no_submit {
        let base = submissions(on, 1, a.seconds)?;
        let many = submissions(on, a.clients, a.seconds)?;
        if text {
            println!(
                "[{}] submissions: 1 client {:.0}/s, {} clients {:.0}/s ({:.1}x)",
                on.label(),
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
        let base = rt.block_on(placements(on, a.nodes, a.pending, false))?;
        let fast = rt.block_on(placements(on, a.nodes, a.pending, true))?;
        // The plain insert is short: the best of three (SQLite only).
        let (plain, ratio) = match on {
            On::Sqlite => {
                let mut plain = f64::INFINITY;
                for _ in 0..3 {
                    plain = plain.min(rt.block_on(plain_insert(fast.rows))?);
                }
                (Some(plain), Some(fast.commit / plain))
            }
            On::Postgres(_) => (None, None),
        };
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
                "[{}] placement: {} nodes, {} pending: baseline {} decisions in {:.3} s ({:.0}/s); \
             suanli {} decisions in {:.3} s ({:.0}/s, {:.1}x); {} pass(es) of {:.3} s overlapping \
             commits of {:.3} s",
                on.label(),
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
            match (plain, ratio) {
                (Some(plain), Some(ratio)) => println!(
                    "commit: {} rows in {:.3} s; the same rows as plain SQLite inserts {:.3} s \
                     ({:.1}x)",
                    fast.rows, fast.commit, plain, ratio
                ),
                _ => println!("commit: {} rows in {:.3} s", fast.rows, fast.commit),
            }
            println!(
                "memory: {:.0} bytes of resident memory per pending job",
                base.rss_per_pending
            );
        }
    }
    if !a.no_list {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| failure(e.to_string()))?;
        // Runs are short (under a second at 5,000 nodes): the median of
        // `--list-runs` of each, interleaved.
        let (mut alone_runs, mut list_runs) = (Vec::new(), Vec::new());
        for _ in 0..a.list_runs.max(1) {
            alone_runs.push(rt.block_on(place_while_listing(on, a.nodes, a.pending, false))?);
            list_runs.push(rt.block_on(place_while_listing(on, a.nodes, a.pending, true))?);
        }
        let median = |mut v: Vec<(f64, u64, u64)>| {
            v.sort_by(|x, y| (x.0 / x.1 as f64).total_cmp(&(y.0 / y.1 as f64)));
            v[v.len() / 2]
        };
        let (alone_s, alone, _) = median(alone_runs);
        let (list_s, listing, pages) = median(list_runs);
        let rate = |d: u64, s: f64| d as f64 / s;
        let slowdown = (rate(alone, alone_s) / rate(listing, list_s) - 1.0) * 100.0;
        if text {
            println!(
                "[{}] listing: the live loop placed {alone} jobs in {alone_s:.3} s alone, {listing} in \
                 {list_s:.3} s while a tenant's {LISTERS} clients listed {pages} pages of 100 \
                 pending jobs with reasons ({slowdown:+.1}% time per decision)",
                on.label()
            );
        }
        fig.listing = Some(ListFigures {
            nodes: a.nodes,
            pending: a.pending,
            decisions_alone: alone,
            seconds_alone: alone_s,
            decisions_listing: listing,
            seconds_listing: list_s,
            pages_listed: pages,
            slowdown_pct: slowdown,
        });
    }
    Ok(fig)
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
fn submissions(on: &On, clients: usize, seconds: f64) -> Result<f64, CliError> {
    let place = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failure(e.to_string()))?
        .block_on(on.place(&format!("submit{clients}")))?;
    let dir = place.dir.clone();
    let exe = std::env::current_exe().map_err(|e| failure(e.to_string()))?;
    let mut server = Command::new(exe);
    server
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&dir);
    if let Some(url) = &place.url {
        server.env("SUANLI_STORE", url);
    }
    let mut child = Child(
        server
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
    drop(place);
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

const MODELS: [&str; 3] = ["A100-80G", "H800", "Ascend910B"];

/// `n` queued jobs of mixed shapes: shares, 1, 2, 4 and 8 GPUs, a few
/// 2-node gangs, some pinned to a model, classes mixed (seeded: the same
/// every run).
fn bench_jobs(n: usize) -> impl Iterator<Item = NewJob> {
    let mut x: u64 = 42;
    (0..n).map(move |i| {
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
            vec![MODELS[pin as usize].to_string()]
        } else {
            Vec::new()
        };
        NewJob {
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
            idem_key: None,
            idem_hash: None,
            service: None,
        }
    })
}

/// Queue [`bench_jobs`]`(pending)` for tenant `bench`, 10,000 a batch.
async fn queue_jobs(lp: &mut Driver, tenant: i64, pending: usize) -> Result<(), CliError> {
    let f = |e: anyhow::Error| failure(format!("{e:#}"));
    let mut cmds = Vec::new();
    for job in bench_jobs(pending) {
        cmds.push(LoopCmd::Submit {
            tenant_id: tenant,
            tenant: "bench".to_string(),
            job,
        });
        if cmds.len() == 10_000 {
            lp.step(std::mem::take(&mut cmds)).await.map_err(f)?;
        }
    }
    lp.step(cmds).await.map_err(f)?;
    Ok(())
}

/// A loop with `nodes` registered, drained 8-GPU nodes (of three models)
/// and a tenant `bench`, in a fresh store at `place`.
async fn loaded_store(
    place: &Place,
    nodes: usize,
    cfg: &LoopConfig,
) -> Result<(Driver, i64), CliError> {
    let f = |e: anyhow::Error| failure(format!("{e:#}"));
    let store = place.open().await?;
    let t = store
        .create_tenant("bench", 1.0, "bench")
        .await
        .map_err(|e| failure(e.to_string()))?;
    let mut lp = Driver::recover(store, cfg).await.map_err(f)?;
    let mut cmds = Vec::new();
    for n in 0..nodes {
        cmds.push(LoopCmd::Register(Registration {
            name: format!("n{n:05}"),
            addr: String::new(),
            gpu_model: Some(MODELS[n % 3].to_string()),
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
    Ok((lp, t.id))
}

/// Concurrent listers of `place_while_listing` (a tenant's scripts, or a
/// console's tabs).
const LISTERS: usize = 4;

/// The live loop (its driver task, as the server runs it) places what
/// undraining `nodes` nodes under `pending` queued jobs allows, while (with
/// `list`) a tenant lists its pending jobs page by page from [`LISTERS`]
/// clients at once (100 a page, with their why-pending reasons, over and
/// over). Returns the seconds from the
/// undrain to the last decision, the decisions, and the pages listed in
/// that time.
async fn place_while_listing(
    on: &On,
    nodes: usize,
    pending: usize,
    list: bool,
) -> Result<(f64, u64, u64), CliError> {
    let f = |e: anyhow::Error| failure(format!("{e:#}"));
    let place = on.place(if list { "list" } else { "list-base" }).await?;
    let cfg = LoopConfig {
        lease_ms: 24 * 3600 * 1000,
        ..LoopConfig::default()
    };
    let (mut lp, tenant) = loaded_store(&place, nodes, &cfg).await?;
    queue_jobs(&mut lp, tenant, pending).await?;
    drop(lp);
    // The server's way: recover from the store, run the driver as a task.
    let store = place.open().await?;
    let (control, task) = suanli_server::control::start(store.clone(), &cfg)
        .await
        .map_err(f)?;
    let stop = Arc::new(AtomicBool::new(false));
    let pages = Arc::new(AtomicU64::new(0));
    let listers: Vec<_> = (0..if list { LISTERS } else { 0 })
        .map(|i| {
            let (control, store, stop, pages) =
                (control.clone(), store.clone(), stop.clone(), pages.clone());
            tokio::spawn(async move {
                // Each from its own place in the queue.
                let mut cursor = i as i64 * 2_500;
                while !stop.load(Ordering::Relaxed) {
                    let page = store
                        .jobs(
                            Some(tenant),
                            Some(suanli_api::JobState::Pending),
                            cursor,
                            100,
                        )
                        .await
                        .map_err(|e| failure(e.to_string()))?;
                    let ids: Vec<i64> = page.iter().map(|j| j.id).collect();
                    let reasons = control
                        .explain(ids.clone(), Some(tenant))
                        .await
                        .map_err(|_| failure("the loop stopped"))?;
                    std::hint::black_box(reasons);
                    pages.fetch_add(1, Ordering::Relaxed);
                    cursor = if ids.len() < 100 {
                        0
                    } else {
                        *ids.last().expect("a full page")
                    };
                }
                Ok::<(), CliError>(())
            })
        })
        .collect();
    // Let the lister get going, then undrain every node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = control.metrics.decisions();
    let pages_before = pages.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut undrains = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let c = control.clone();
        undrains.push(tokio::spawn(async move {
            c.drain(format!("n{n:05}"), false, "bench".to_string())
                .await
        }));
    }
    for u in undrains {
        u.await
            .map_err(|e| failure(e.to_string()))?
            .map_err(|_| failure("the loop stopped"))?
            .map_err(|r| failure(format!("undrain refused: {r:?}")))?;
    }
    // Done when no decision came for 500 ms; timed to the last one.
    let (mut last, mut last_at) = (control.metrics.decisions(), Instant::now());
    let mut pages_by_last = pages.load(Ordering::Relaxed);
    while last_at.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let d = control.metrics.decisions();
        if d != last {
            (last, last_at) = (d, Instant::now());
            pages_by_last = pages.load(Ordering::Relaxed);
        }
    }
    let took = last_at.duration_since(t0).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for l in listers {
        l.await.map_err(|e| failure(e.to_string()))??;
    }
    drop(control);
    let _ = task.await;
    drop(place);
    Ok((took, last - before, pages_by_last - pages_before))
}

/// Undrain `nodes` nodes under `pending` queued jobs, and run the loop's
/// passes until the pool is full (timed).
async fn placements(
    on: &On,
    nodes: usize,
    pending: usize,
    group: bool,
) -> Result<Placed, CliError> {
    let f = |e: anyhow::Error| failure(format!("{e:#}"));
    let place = on.place(if group { "place" } else { "place-base" }).await?;
    let cfg = LoopConfig {
        group_nodes: group,
        // No agent reports here: nodes must outlive queuing a million jobs.
        lease_ms: 24 * 3600 * 1000,
        ..LoopConfig::default()
    };
    let (mut lp, tenant) = loaded_store(&place, nodes, &cfg).await?;
    let rss_before = rss_bytes();
    queue_jobs(&mut lp, tenant, pending).await?;
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
    drop(place);
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
