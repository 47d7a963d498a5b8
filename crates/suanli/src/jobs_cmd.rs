//! `suanli sim jobs`, `suanli gen` and `suanli bench jobs`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rayon::prelude::*;
use suanli_billing::{parse_time, PriceBook, Usage};
use suanli_sched::{DEFAULT_POLICY, POLICY_NAMES, QUEUE_POLICY_NAMES};
use suanli_sim::jobs::gen::{generate_csv, GenParams};
use suanli_sim::jobs::{
    money, report, simulate, workload, Cluster, Meter, SimEvent, SimParams, SimResult, Workload,
};

use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct SimJobsArgs {
    /// Cluster description: TOML (see examples/clusters) or an openb node list (.csv).
    #[arg(long, value_name = "FILE")]
    cluster: PathBuf,
    /// Workload as KIND:PATH; KIND is native (CSV or .jsonl), philly, chronus or openb.
    #[arg(long, value_name = "KIND:PATH")]
    trace: String,
    /// Queue policies to compare, comma-separated: fifo, sjf, srtf, las, classes, drf, backfill.
    #[arg(long, value_name = "P[,P...]", default_value = "fifo")]
    policy: String,
    /// Placement policy of the scheduler core.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_POLICY)]
    placement: String,
    /// The placement policy's target workload: `learned` from the jobs as
    /// they arrive (what the live pool does) or `trace` (the typical
    /// workload of the whole trace, given up front).
    #[arg(long, default_value = "learned", value_parser = suanli_sched::Target::parse)]
    target: suanli_sched::Target,
    /// Seed of the simulation's one RNG (seeds the placement policy).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Node changes to replay: CSV `time_s,node,event` (event: down, up,
    /// drain, undrain; node: a cluster node name such as a100-3). A
    /// cluster's `mtbf_h`/`mttr_h` add failures of their own.
    #[arg(long, value_name = "FILE.csv")]
    cluster_events: Option<PathBuf>,
    /// Checkpoint interval (s) of preempted jobs; 0 = resume exactly where stopped.
    #[arg(long, default_value_t = 0.0)]
    checkpoint_s: f64,
    /// Multiply every submission time by this factor (< 1 compresses the trace
    /// into a shorter span, i.e. a heavier load).
    #[arg(long, default_value_t = 1.0)]
    arrival_scale: f64,
    /// Write the results as JSON to FILE ("-" for stdout, which then carries only the JSON).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write CSV time series, SVG charts and index.html into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Also print per-tenant GPU-hours, shares and waits, and per-class waits and preemptions.
    #[arg(long)]
    tenants: bool,
    /// Price book (TOML, see examples/prices.toml): add revenue, idle value
    /// and per-tenant bills for each policy, billed as the live pool would.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// With --prices: the UTC instant simulated time 0 stands for
    /// (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ) [default: the book's first period].
    #[arg(long, value_name = "TIME", requires = "prices")]
    start: Option<String>,
}

pub fn parse_policies(s: &str) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    for p in s.split(',').map(str::trim) {
        if !QUEUE_POLICY_NAMES.contains(&p) {
            return Err(usage(format!(
                "unknown queue policy {p:?} in --policy; valid: {}",
                QUEUE_POLICY_NAMES.join(", ")
            )));
        }
        if !out.iter().any(|x| x == p) {
            out.push(p.to_string());
        }
    }
    Ok(out)
}

pub fn load_inputs(
    cluster: &Path,
    trace: &str,
    arrival_scale: f64,
) -> Result<(Cluster, Workload), CliError> {
    let (kind, path) = trace.split_once(':').ok_or_else(|| {
        usage(format!(
            "--trace {trace:?}: expected KIND:PATH with KIND one of {}",
            workload::TRACE_KINDS.join(", ")
        ))
    })?;
    if !workload::TRACE_KINDS.contains(&kind) {
        return Err(usage(format!(
            "--trace: unknown kind {kind:?}; valid: {}",
            workload::TRACE_KINDS.join(", ")
        )));
    }
    if !(arrival_scale.is_finite() && arrival_scale > 0.0 && arrival_scale <= 1000.0) {
        return Err(usage(format!(
            "--arrival-scale must be within (0, 1000], found {arrival_scale}"
        )));
    }
    let cluster = Cluster::load(cluster).map_err(failure)?;
    let mut wl =
        workload::load(kind, Path::new(path), &cluster).map_err(|e| failure(e.to_string()))?;
    if arrival_scale != 1.0 {
        for j in &mut wl.jobs {
            j.submit = (j.submit as f64 * arrival_scale).round() as u64;
        }
    }
    Ok((cluster, wl))
}

fn check_placement(name: &str) -> Result<(), CliError> {
    if POLICY_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(usage(format!(
            "unknown placement policy {name:?}; valid: {}",
            POLICY_NAMES.join(", ")
        )))
    }
}

/// Run every policy (in parallel), with a progress bar per policy on a terminal.
/// With `meter_t0`, each run's usage intervals are metered (simulated time 0
/// at that instant) and returned beside its result.
fn run_all(
    cluster: &Cluster,
    wl: &Workload,
    policies: &[String],
    base: &SimParams,
    show_progress: bool,
    meter_t0: Option<i64>,
) -> Result<(Vec<SimResult>, Vec<Vec<Usage>>), CliError> {
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} jobs arrived {elapsed}")
            .expect("valid template")
            .progress_chars("=> ");
    let bars: Vec<Option<ProgressBar>> = policies
        .iter()
        .map(|p| {
            show_progress.then(|| {
                let b = multi.add(ProgressBar::new(wl.jobs.len() as u64));
                b.set_style(style.clone());
                b.set_prefix(p.clone());
                b
            })
        })
        .collect();
    let results: Vec<Result<(SimResult, Vec<Usage>), String>> = policies
        .par_iter()
        .zip(bars.par_iter())
        .map(|(p, bar)| {
            let mut params = base.clone();
            params.policy = p.clone();
            let mut progress = |n: usize| {
                if let Some(b) = bar {
                    b.set_position(n as u64);
                }
            };
            let mut meter = meter_t0.map(|t0| Meter::new(cluster, wl, t0));
            let mut observe = |e: &SimEvent| {
                if let Some(m) = &mut meter {
                    m.observe(e);
                }
            };
            let r = simulate(cluster, wl, &params, &mut observe, &mut progress);
            if let Some(b) = bar {
                b.finish();
            }
            r.map(|r| (r, meter.map(Meter::finish).unwrap_or_default()))
        })
        .collect();
    Ok(results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(failure)?
        .into_iter()
        .unzip())
}

/// Say on stderr what the book does not price, so that missing revenue is
/// never silent.
fn warn_unpriced(results: &[SimResult], book: &Path) {
    for r in results {
        let Some(m) = &r.money else { continue };
        let raw: u128 = m.invoices.iter().map(|i| i.unpriced_gpu_raw).sum();
        if raw > 0 {
            eprintln!(
                "warning: [{}] {:.1} GPU-hours of usage have no price in {} (a model or class missing, or before the first period); they are not in the revenue",
                r.policy,
                raw as f64 / 3.6e9,
                book.display()
            );
        }
        let idle: Vec<&str> = m
            .models
            .iter()
            .filter(|x| !x.idle_unpriced_gpu_hours.is_zero())
            .map(|x| x.gpu_model.as_str())
            .collect();
        if !idle.is_empty() {
            eprintln!(
                "warning: [{}] no list price (on-demand or guaranteed) for {} in {}: their idle GPUs are not valued",
                r.policy,
                idle.join(", "),
                book.display()
            );
        }
    }
}

pub fn sim(a: SimJobsArgs) -> Result<(), CliError> {
    let policies = parse_policies(&a.policy)?;
    check_placement(&a.placement)?;
    if !(a.checkpoint_s.is_finite() && a.checkpoint_s >= 0.0) {
        return Err(usage(format!(
            "--checkpoint-s must be >= 0, found {}",
            a.checkpoint_s
        )));
    }
    let book = match &a.prices {
        Some(p) => Some(PriceBook::read(p).map_err(usage)?),
        None => None,
    };
    let t0 = match (&book, &a.start) {
        (Some(_), Some(s)) => Some(parse_time(s).map_err(|e| usage(format!("--start {e}")))?),
        (Some(b), None) => Some(b.periods[0].from),
        (None, _) => None,
    };
    let (cluster, wl) = load_inputs(&a.cluster, &a.trace, a.arrival_scale)?;
    let json_stdout = a.json.as_deref() == Some(Path::new("-"));
    let show_progress = std::io::stderr().is_terminal() && !json_stdout;
    let mut base = SimParams::new("fifo");
    base.placement = a.placement.clone();
    base.target = a.target;
    if let Some(f) = &a.cluster_events {
        base.node_events = suanli_sim::jobs::churn::read_events(f, &cluster).map_err(failure)?;
    }
    base.seed = a.seed;
    base.checkpoint_ms = (a.checkpoint_s * 1000.0).round() as u64;
    let (mut results, usages) = run_all(&cluster, &wl, &policies, &base, show_progress, t0)?;
    if let (Some(book), Some(t0)) = (&book, t0) {
        money::price(book, &cluster, t0, &mut results, &usages);
        warn_unpriced(&results, a.prices.as_deref().unwrap_or(Path::new("")));
    }
    let cluster_desc = format!(
        "{} ({}: {} nodes, {} GPUs)",
        cluster.name,
        a.cluster.display(),
        cluster.nodes.len(),
        cluster.gpus()
    );
    let trace_desc = format!(
        "{} ({} jobs, {} tenants)",
        a.trace,
        wl.jobs.len(),
        wl.tenants.len()
    );
    if let Some(r) = results.first() {
        if r.rejected > 0 {
            eprintln!(
                "warning: {} jobs can never run on this cluster and were rejected, e.g.:",
                r.rejected
            );
            for e in &r.rejected_examples {
                eprintln!("  {e}");
            }
        }
    }
    let doc = report::to_json(&cluster_desc, &trace_desc, &results);
    match &a.json {
        Some(p) if p == Path::new("-") => println!("{doc}"),
        Some(p) => std::fs::write(p, &doc).map_err(|e| failure(format!("{}: {e}", p.display())))?,
        None => {}
    }
    if !json_stdout {
        println!("cluster: {cluster_desc}\ntrace:   {trace_desc}");
        print!("{}", report::table(&results));
        for r in results.iter().filter(|r| r.node_failures > 0) {
            println!(
                "{}: {} node failures, {} jobs interrupted, {:.1} GPU-hours of work lost to them; \
                 {:.1}% of GPU capacity up",
                r.policy,
                r.node_failures,
                r.interruptions,
                r.failure_lost_gpu_hours,
                r.availability_pct
            );
        }
        if book.is_some() {
            print!("{}", report::money_table(&results));
        }
        if a.tenants {
            print!("{}", report::tenant_table(&results));
        }
    }
    if let Some(dir) = &a.report {
        report::write_report(dir, &cluster_desc, &trace_desc, &results).map_err(failure)?;
        if !json_stdout {
            println!("report: {}", dir.join("index.html").display());
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct GenArgs {
    /// Number of jobs.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Cluster (TOML) the workload is for: gangs are split to its node size,
    /// jobs may be pinned to its GPU models, and --load refers to its GPUs.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Offered GPU load as a fraction of the cluster's GPUs (e.g. 0.8).
    #[arg(long, requires = "cluster")]
    load: Option<f64>,
    /// Calibrate from the aggregate tables in DIR
    /// (../shared/traces/reference-stats/alibaba-spot-2026-stats).
    #[arg(long, value_name = "DIR")]
    calibrate: Option<PathBuf>,
    /// Number of tenants (Zipf-distributed activity); ignored with --calibrate
    /// and when --cluster names tenants (then theirs are used, by weight).
    #[arg(long, default_value_t = 8)]
    tenants: usize,
    /// Mean inter-arrival time in seconds (Poisson); ignored with --calibrate.
    #[arg(long, default_value_t = 30.0)]
    mean_interarrival_s: f64,
    /// Fraction of spot jobs (default 0.1; calibrated: the trace's share).
    #[arg(long)]
    spot: Option<f64>,
    /// Fraction of guaranteed jobs (they get a deadline of 2x run time + 10 min).
    #[arg(long, default_value_t = 0.2)]
    guaranteed: f64,
    /// Fraction of 1-GPU jobs that take a share (250 or 500 milli) of a GPU.
    #[arg(long, default_value_t = 0.0)]
    share: f64,
    /// Fraction of GPU jobs pinned to one GPU model of --cluster.
    #[arg(long, default_value_t = 0.0, requires = "cluster")]
    pinned: f64,
    /// Diurnal amplitude 0..1: arrival rate x (1 + A sin(2 pi (h - 8) / 24)).
    #[arg(long, default_value_t = 0.0)]
    diurnal: f64,
    /// Output file (.csv or .jsonl); stdout when absent.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn frac(name: &str, v: f64) -> Result<f64, CliError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(usage(format!("--{name} must be within 0..=1, found {v}")))
    }
}

pub fn gen(a: GenArgs) -> Result<(), CliError> {
    if a.jobs == 0 {
        return Err(usage("--jobs must be at least 1"));
    }
    let mut p = GenParams::new(a.jobs, a.seed);
    if let Some(dir) = &a.calibrate {
        p.calibrate(dir).map_err(failure)?;
    } else {
        if a.tenants == 0 {
            return Err(usage("--tenants must be at least 1"));
        }
        if !(a.mean_interarrival_s.is_finite() && a.mean_interarrival_s > 0.0) {
            return Err(usage("--mean-interarrival-s must be positive"));
        }
        p.tenants = (0..a.tenants)
            .map(|i| (format!("tenant-{i}"), 1.0 / (i as f64 + 1.0).powf(1.2)))
            .collect();
        p.inter_arrival = suanli_sim::jobs::gen::Dist::Exp(a.mean_interarrival_s);
        let amp = frac("diurnal", a.diurnal)?;
        if amp > 0.0 {
            p.diurnal = (0..24)
                .map(|h| 1.0 + amp * (2.0 * std::f64::consts::PI * (h as f64 - 8.0) / 24.0).sin())
                .collect();
        }
    }
    if let Some(s) = a.spot {
        p.spot_frac = frac("spot", s)?;
    }
    p.guaranteed_frac = frac("guaranteed", a.guaranteed)?;
    if p.spot_frac + p.guaranteed_frac > 1.0 {
        return Err(usage("--spot plus --guaranteed exceeds 1"));
    }
    p.share_frac = frac("share", a.share)?;
    p.pinned_frac = frac("pinned", a.pinned)?;
    p.load = a.load;
    let cluster = match &a.cluster {
        Some(c) => Some(Cluster::load(c).map_err(failure)?),
        None => None,
    };
    if let Some(c) = &cluster {
        if a.calibrate.is_none() && !c.tenants.is_empty() {
            p.tenants = c
                .tenants
                .iter()
                .map(|t| (t.name.clone(), t.quota.weight))
                .collect();
        }
    }
    let csv = generate_csv(&p, cluster.as_ref()).map_err(usage)?;
    let text = match &a.out {
        Some(o) if o.extension().is_some_and(|e| e == "jsonl") => csv_to_jsonl(&csv)?,
        _ => csv,
    };
    match &a.out {
        Some(o) => std::fs::write(o, text).map_err(|e| failure(format!("{}: {e}", o.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// The generator's CSV as JSONL (same field names; empty fields omitted).
fn csv_to_jsonl(csv: &str) -> Result<String, CliError> {
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header = r
        .headers()
        .map_err(|e| failure(format!("generated CSV: {e}")))?
        .clone();
    let mut out = String::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| failure(format!("generated CSV: {e}")))?;
        let mut obj = serde_json::Map::new();
        for (k, v) in header.iter().zip(rec.iter()) {
            if v.is_empty() {
                continue;
            }
            let val = match k {
                "id" | "tenant" | "gpu_models" | "class" => {
                    serde_json::Value::String(v.to_string())
                }
                _ => v
                    .parse::<f64>()
                    .ok()
                    .and_then(|x| {
                        if x.fract() == 0.0 && x.abs() < 9e15 {
                            Some(serde_json::Value::from(x as i64))
                        } else {
                            serde_json::Number::from_f64(x).map(serde_json::Value::Number)
                        }
                    })
                    .unwrap_or(serde_json::Value::Null),
            };
            obj.insert(k.to_string(), val);
        }
        out.push_str(&serde_json::Value::Object(obj).to_string());
        out.push('\n');
    }
    Ok(out)
}

#[derive(Args)]
pub struct BenchJobsArgs {
    /// Cluster for the trace replay (e.g. examples/clusters/philly.toml).
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Trace for the replay as KIND:PATH (e.g. philly:../shared/traces/philly-pollux/philly.csv).
    #[arg(long, value_name = "KIND:PATH", requires = "cluster")]
    trace: Option<String>,
    /// Queue policies to time.
    #[arg(long, default_value = "fifo,sjf,srtf,las,drf,backfill")]
    policy: String,
    /// Jobs of the synthetic scale test (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    synthetic_jobs: usize,
    /// GPUs of the synthetic scale test's cluster (8-GPU nodes).
    #[arg(long, default_value_t = 10_000)]
    synthetic_gpus: u64,
    /// Offered load of the synthetic scale test.
    #[arg(long, default_value_t = 0.85)]
    synthetic_load: f64,
}

fn time_one(
    cluster: &Cluster,
    wl: &Workload,
    policy: &str,
    memo: bool,
) -> Result<(f64, SimResult), CliError> {
    let mut p = SimParams::new(policy);
    p.memo = memo;
    let t = Instant::now();
    let r = simulate(cluster, wl, &p, &mut |_| {}, &mut |_| {}).map_err(failure)?;
    Ok((t.elapsed().as_secs_f64(), r))
}

pub fn bench(a: BenchJobsArgs) -> Result<(), CliError> {
    let policies = parse_policies(&a.policy)?;
    if let (Some(c), Some(t)) = (&a.cluster, &a.trace) {
        let t0 = Instant::now();
        let (cluster, wl) = load_inputs(c, t, 1.0)?;
        println!(
            "replay: {} jobs on {} GPUs; load {:.2} s",
            wl.jobs.len(),
            cluster.gpus(),
            t0.elapsed().as_secs_f64()
        );
        println!(
            "{:<9} {:>10} {:>14} {:>8} {:>12}",
            "policy", "wall_s", "baseline_s", "speedup", "jct_mean_s"
        );
        for p in &policies {
            let (fast, r) = time_one(&cluster, &wl, p, true)?;
            let (slow, r0) = time_one(&cluster, &wl, p, false)?;
            if (r.jct_mean_s - r0.jct_mean_s).abs() > 1e-9 {
                return Err(failure(format!(
                    "{p}: memoised and unmemoised runs disagree ({} vs {})",
                    r.jct_mean_s, r0.jct_mean_s
                )));
            }
            println!(
                "{:<9} {:>10.3} {:>14.3} {:>7.1}x {:>12.0}",
                p,
                fast,
                slow,
                slow / fast,
                r.jct_mean_s
            );
        }
    }
    if a.synthetic_jobs > 0 {
        let nodes = a.synthetic_gpus.div_ceil(8);
        let toml = format!(
            "name = \"bench\"\n[[group]]\nname = \"n\"\ncount = {nodes}\ngpu_model = \"A100\"\ngpus = 8\ncpu_cores = 128\nmemory_gib = 1024\nnodes_per_rack = 32\n"
        );
        let cluster = Cluster::parse(&toml).map_err(failure)?;
        let mut gp = GenParams::new(a.synthetic_jobs, 42);
        gp.load = Some(a.synthetic_load);
        let t0 = Instant::now();
        let csv = generate_csv(&gp, Some(&cluster)).map_err(failure)?;
        let dir = std::env::temp_dir().join(format!("suanli-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| failure(e.to_string()))?;
        let path = dir.join("synthetic.csv");
        std::fs::write(&path, csv).map_err(|e| failure(e.to_string()))?;
        let wl = workload::load("native", &path, &cluster).map_err(|e| failure(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "synthetic: {} jobs on {} GPUs at offered load {:.2}; generate+load {:.2} s",
            wl.jobs.len(),
            cluster.gpus(),
            a.synthetic_load,
            t0.elapsed().as_secs_f64()
        );
        println!(
            "{:<9} {:>10} {:>12} {:>11} {:>12}",
            "policy", "wall_s", "events", "gpu_util_%", "jct_mean_s"
        );
        for p in &policies {
            let (s, r) = time_one(&cluster, &wl, p, true)?;
            println!(
                "{:<9} {:>10.3} {:>12} {:>11.2} {:>12.0}",
                p, s, r.events, r.gpu_util_pct, r.jct_mean_s
            );
        }
    }
    Ok(())
}
