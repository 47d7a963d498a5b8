//! `suanli bench billing`: the cost of a month's economics report on a large
//! pool, against the same-run baseline of pricing each tenant by scanning
//! all usage (what a per-tenant `invoice` loop does). With `--store`, also
//! the store's side: the time to read a month's usage and node history out
//! of a year of task rows in a real SQLite store, beside the time to price it.

use std::time::Instant;

use clap::Args;
use suanli_billing::{economics, invoice, parse_month, NodeSpan, PriceBook, Usage};

use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct BenchBillingArgs {
    /// Nodes of 8 GPUs (three models).
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Tenants.
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    /// Usage intervals (task attempts) in the month.
    #[arg(long, default_value_t = 1_000_000)]
    intervals: usize,
    /// Also measure the store: a year of history of this many task rows in a
    /// fresh SQLite store (in a temporary directory), read for the last month.
    #[arg(long, value_name = "ROWS")]
    store: Option<usize>,
}

const MODELS: [&str; 3] = ["A100-80G", "H800", "Ascend910B"];
const CLASSES: [&str; 3] = ["guaranteed", "on-demand", "spot"];

/// xorshift64*: a tiny seeded generator, enough for benchmark data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn run(a: BenchBillingArgs) -> Result<(), CliError> {
    if a.nodes == 0 || a.tenants == 0 || a.intervals == 0 {
        return Err(usage(
            "--nodes, --tenants and --intervals must be at least 1",
        ));
    }
    let book = PriceBook::parse(include_str!("../../../examples/prices.toml")).map_err(failure)?;
    let (from, to) = parse_month("2026-11").map_err(failure)?;
    let month = to - from;
    let mut rng = Rng(0x5eed);
    // Nodes: up all month, but one in 20 down for a day in the middle.
    let mut spans = Vec::with_capacity(a.nodes * 2);
    for i in 0..a.nodes {
        let model = MODELS[i % 3].to_string();
        let span = |state: &str, start, end| NodeSpan {
            node: format!("n{i}"),
            gpu_model: Some(model.clone()),
            gpus: 8,
            state: state.to_string(),
            start,
            end: Some(end),
        };
        if i % 20 == 0 {
            let d = from + month / 2;
            spans.push(span("ready", from, d));
            spans.push(span("down", d, d + 86_400_000));
            spans.push(span("ready", d + 86_400_000, to));
        } else {
            spans.push(span("ready", from, to));
        }
    }
    let tenants: Vec<String> = (0..a.tenants).map(|t| format!("tenant-{t}")).collect();
    let usage_rows: Vec<Usage> = (0..a.intervals)
        .map(|k| {
            let start = from + rng.below(month as u64) as i64;
            let len = 60_000 + rng.below(12 * 3_600_000) as i64;
            let gpus = [250, 500, 1000, 2000, 4000, 8000][rng.below(6) as usize];
            Usage {
                tenant: tenants[rng.below(a.tenants as u64) as usize].clone(),
                job: k as i64 + 1,
                run: 1,
                task: 0,
                gpu_model: Some(MODELS[rng.below(3) as usize].to_string()),
                class: CLASSES[rng.below(3) as usize].to_string(),
                gpu_milli: gpus,
                cpu_milli: 4000,
                memory_mib: 32_768,
                start,
                end: Some((start + len).min(to)),
            }
        })
        .collect();
    println!(
        "ledger: {} nodes ({} GPUs), {} tenants, {} usage intervals, one month, {} price periods",
        a.nodes,
        a.nodes * 8,
        a.tenants,
        a.intervals,
        book.periods.len()
    );
    let t = Instant::now();
    let e = economics(&book, &spans, &usage_rows, from, to, to);
    let fast = t.elapsed().as_secs_f64();
    println!(
        "economics report (usage grouped by tenant once): {fast:.3} s  ({:.0} intervals/s)",
        a.intervals as f64 / fast
    );
    let t = Instant::now();
    let baseline: Vec<_> = e
        .invoices
        .iter()
        .map(|i| invoice(&book, &i.tenant, &usage_rows, from, to, to))
        .collect();
    let slow = t.elapsed().as_secs_f64();
    println!("baseline (each tenant's invoice scans all usage): {slow:.3} s");
    println!("speed-up: {:.1}x", slow / fast);
    let same = baseline == e.invoices;
    println!(
        "same invoices: {}; revenue {} {}, utilisation {}%, idle value {}",
        if same { "yes" } else { "NO" },
        e.revenue,
        e.currency,
        e.utilisation_pct.map_or("-".into(), |d| d.to_string()),
        e.idle_value
    );
    if !same {
        return Err(failure("the grouped invoices differ from the baseline"));
    }
    if let Some(rows) = a.store {
        if rows == 0 {
            return Err(usage("--store must be at least 1"));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failure(e.to_string()))?;
        rt.block_on(store_bench(&book, a.nodes, a.tenants, rows))?;
    }
    Ok(())
}

/// A year of history in a real store; the economics report of its last
/// month: reading the rows, then pricing them.
async fn store_bench(
    book: &PriceBook,
    nodes: usize,
    tenants: usize,
    rows: usize,
) -> Result<(), CliError> {
    use std::collections::BTreeMap;
    use suanli_server::store::{sqlite::SqliteStore, Node, Store, Write};
    let f = |e: &dyn std::fmt::Display| failure(format!("store: {e}"));
    let dir = std::env::temp_dir().join(format!("suanli-bench-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| f(&e))?;
    let sq = SqliteStore::open(&dir).await.map_err(|e| f(&e))?;
    let pool = sq.pool().clone();
    let store = Store::new(std::sync::Arc::new(sq));
    let (year_from, _) = parse_month("2025-12").map_err(failure)?;
    let (from, to) = parse_month("2026-11").map_err(failure)?;
    let span = to - year_from;
    let t = Instant::now();
    for t in 0..tenants {
        store
            .create_tenant(&format!("tenant-{t}"), 1.0, "bench")
            .await
            .map_err(|e| f(&e))?;
    }
    let w: Vec<Write> = (0..nodes)
        .map(|i| {
            Write::UpsertNode(Node {
                id: i as i64 + 1,
                name: format!("n{i}"),
                addr: String::new(),
                gpu_model: Some(MODELS[i % 3].to_string()),
                gpus: 8,
                gpu_memory_mib: 81_920,
                cpu_milli: 128_000,
                memory_mib: 1 << 20,
                rack: String::new(),
                labels: BTreeMap::new(),
                state: suanli_api::NodeState::Ready,
                registered_ms: year_from,
                last_heartbeat_ms: year_from,
            })
        })
        .collect();
    store.commit(w.clone()).await.map_err(|e| f(&e))?;
    let mut rng = Rng(0xbe11);
    let mut tx = pool.begin().await.map_err(|e| f(&e))?;
    let mut id = 0i64;
    while (id as usize) < rows {
        let n = (rows - id as usize).min(100);
        let batch: Vec<(i64, i64, i64, i64, i64, i64)> = (0..n as i64)
            .map(|k| {
                // Ids grow with time, as in a live store: job k starts at
                // about k/rows of the year.
                let start = year_from
                    + ((id + k) as i128 * span as i128 / rows as i128) as i64
                    + rng.below(600_000) as i64;
                let end = (start + 60_000 + rng.below(12 * 3_600_000) as i64).min(to);
                (
                    id + k + 1,
                    rng.below(tenants as u64) as i64 + 1,
                    rng.below(nodes as u64) as i64 + 1,
                    [250, 500, 1000, 2000, 4000, 8000][rng.below(6) as usize],
                    start,
                    end,
                )
            })
            .collect();
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, \
             gpu_milli, gpu_models, class, state, submitted_ms, ended_ms) ",
        );
        q.push_values(&batch, |mut b, r| {
            let (num, milli) = if r.3 < 1000 {
                (1, r.3)
            } else {
                (r.3 / 1000, 1000)
            };
            b.push_bind(r.0)
                .push_bind(r.1)
                .push_bind("j")
                .push_bind("[]")
                .push_bind(1)
                .push_bind(4000)
                .push_bind(32_768)
                .push_bind(num)
                .push_bind(milli)
                .push_bind("[]")
                .push_bind(CLASSES[(r.0 % 3) as usize])
                .push_bind("COMPLETED")
                .push_bind(r.4)
                .push_bind(r.5);
        });
        q.build().execute(&mut *tx).await.map_err(|e| f(&e))?;
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO tasks (job_id, run, idx, node_id, gpus, state, started_ms, ended_ms, gpu_model) ",
        );
        q.push_values(&batch, |mut b, r| {
            b.push_bind(r.0)
                .push_bind(1)
                .push_bind(0)
                .push_bind(r.2)
                .push_bind(1)
                .push_bind("EXITED")
                .push_bind(r.4)
                .push_bind(r.5)
                .push_bind(MODELS[((r.2 - 1) % 3) as usize]);
        });
        q.build().execute(&mut *tx).await.map_err(|e| f(&e))?;
        id += n as i64;
    }
    tx.commit().await.map_err(|e| f(&e))?;
    println!(
        "store: {rows} task rows over 12 months, {nodes} nodes, {tenants} tenants, written in {:.1} s; report for 2026-11:",
        t.elapsed().as_secs_f64()
    );
    let report = || async {
        let t = Instant::now();
        let usage = store.usage(None, from, to).await.map_err(|e| f(&e))?;
        let spans = store.node_spans(from, to).await.map_err(|e| f(&e))?;
        let read = t.elapsed().as_secs_f64();
        let e = economics(book, &spans, &usage, from, to, to);
        Ok::<_, CliError>((read, t.elapsed().as_secs_f64(), usage.len(), e))
    };
    report().await?; // warm the page cache
    let (read, total, n, _) = report().await?;
    println!(
        "  read {read:.3} s ({n} intervals, {:.1} us each), priced in {:.3} s more",
        read / n.max(1) as f64 * 1e6,
        total - read
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
