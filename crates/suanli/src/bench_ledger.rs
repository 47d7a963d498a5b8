//! `suanli bench ledger`: the cost of a month's economics report on a large
//! pool, against the same-run baseline of pricing each tenant by scanning
//! all usage (what a per-tenant `invoice` loop does).

use std::time::Instant;

use clap::Args;
use suanli_ledger::{economics, invoice, parse_month, NodeSpan, PriceBook, Usage};

use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct BenchLedgerArgs {
    /// Nodes of 8 GPUs (three models).
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Tenants.
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    /// Usage intervals (task attempts) in the month.
    #[arg(long, default_value_t = 1_000_000)]
    intervals: usize,
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

pub fn run(a: BenchLedgerArgs) -> Result<(), CliError> {
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
    Ok(())
}
