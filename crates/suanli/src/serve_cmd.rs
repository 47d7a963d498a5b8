//! `suanli sim serve`: a request trace against an autoscaled model service
//! and against static provisioning, with the live autoscaler's code.

use std::path::PathBuf;

use clap::Args;
use suanli_serve::{Route, ScaleConfig};
use suanli_sim::serve::{
    report, simulate, static_peak, Perf, Policy, RequestTrace, ServeParams, Signal, Sleep,
};

use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct SimServeArgs {
    /// Request trace as KIND:FILE; KIND is azure-llm (the Azure LLM inference trace 2023).
    #[arg(long, value_name = "KIND:FILE")]
    trace: String,
    /// Policies to compare, comma-separated: static-peak (the fewest static
    /// replicas meeting the objective, found by trying), static:N, autoscale.
    /// Savings are against the first.
    #[arg(long, value_name = "P[,P...]", default_value = "static-peak,autoscale")]
    policy: String,
    /// Model served: llama-2-7b, llama-2-13b, llama-2-70b.
    #[arg(long, default_value = "llama-2-70b")]
    model: String,
    /// GPU model of the replicas: A100-80G, H100, H200.
    #[arg(long, default_value = "A100-80G")]
    gpu_model: String,
    /// GPUs per replica (tensor parallel).
    #[arg(long, default_value_t = 4)]
    gpus: u32,
    /// Fraction of peak FLOP/s a prefill reaches (assumed).
    #[arg(long, default_value_t = 0.5)]
    mfu: f64,
    /// Fraction of peak memory bandwidth a decode step reaches (assumed).
    #[arg(long, default_value_t = 0.6)]
    mbu: f64,
    /// Fixed cost of each iteration, ms.
    #[arg(long, default_value_t = 5.0)]
    overhead_ms: f64,
    /// Fixed part of a cold start, s (the weights' load is added).
    #[arg(long, default_value_t = 15.0)]
    start_s: f64,
    /// Weight loading bandwidth per GPU, GB/s.
    #[arg(long, default_value_t = 2.0)]
    load_gbps: f64,
    /// The time-to-first-token objective (p99), ms.
    #[arg(long, default_value_t = 2000.0)]
    slo_ttft_ms: f64,
    /// How the router picks a replica: least-outstanding or round-robin.
    #[arg(long, default_value = "least-outstanding")]
    route: Route,
    /// What the autoscaler measures: requests (in flight) or work (seconds of
    /// replica time still needed; --target-inflight is then seconds).
    #[arg(long, default_value = "requests")]
    signal: Signal,
    /// Requests one replica holds at most; the router holds the rest.
    #[arg(long, default_value_t = 8)]
    replica_max_inflight: u32,
    /// Price of one GPU-hour for the cost column.
    #[arg(long, default_value_t = 2.0)]
    price_gpu_hour: f64,
    /// The most static replicas static-peak tries.
    #[arg(long, default_value_t = 64)]
    max_static: u32,
    /// Autoscale: replicas kept when idle (0: scale to zero).
    #[arg(long, default_value_t = 1)]
    min: u32,
    /// Autoscale: replicas never exceeded.
    #[arg(long, default_value_t = 32)]
    max: u32,
    /// Autoscale: requests in flight per replica.
    #[arg(long, default_value_t = 4.0)]
    target_inflight: f64,
    #[arg(long, default_value_t = 60.0)]
    stable_window_s: f64,
    #[arg(long, default_value_t = 6.0)]
    panic_window_s: f64,
    #[arg(long, default_value_t = 2.0)]
    panic_threshold: f64,
    #[arg(long, default_value_t = 0.0)]
    up_delay_s: f64,
    #[arg(long, default_value_t = 30.0)]
    down_delay_s: f64,
    #[arg(long, default_value_t = 0.1)]
    tolerance: f64,
    /// Autoscale with --min 0: idle seconds before scaling to zero.
    #[arg(long, default_value_t = 120.0)]
    idle_s: f64,
    /// Scaled-down replicas sleep instead of stopping (vLLM's sleep mode,
    /// level 1: weights in host memory; the GPUs go back but for
    /// --sleep-gpu-share) and scale-ups wake them first, in --wake-s.
    #[arg(long)]
    sleep: bool,
    /// With --sleep: seconds from asleep to ready [default: 0.5 s plus the
    /// weights of one GPU copied back at 25 GB/s, PCIe 4.0 x16].
    #[arg(long)]
    wake_s: Option<f64>,
    /// With --sleep: a replica asleep this long stops [default: 600].
    #[arg(long)]
    sleep_keep_s: Option<f64>,
    /// With --sleep: the share of its GPUs a sleeping replica is charged
    /// for [default: 0.1].
    #[arg(long)]
    sleep_gpu_share: Option<f64>,
    /// The autoscaler's tick, ms (the live router ticks every 500 ms).
    #[arg(long, default_value_t = 1000)]
    tick_ms: u64,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write CSVs, SVG charts and index.html into this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

fn ms(flag: &str, s: f64) -> Result<u64, CliError> {
    if s.is_finite() && (0.0..=86_400.0 * 365.0).contains(&s) {
        Ok((s * 1000.0).round() as u64)
    } else {
        Err(usage(format!(
            "--{flag}: must be 0..=31536000 seconds, got {s}"
        )))
    }
}

pub fn sim(a: SimServeArgs) -> Result<(), CliError> {
    let mut perf = Perf::new(&a.gpu_model, &a.model, a.gpus).map_err(usage)?;
    perf.mfu = a.mfu;
    perf.mbu = a.mbu;
    perf.overhead_ms = a.overhead_ms;
    perf.start_ms = a.start_s * 1000.0;
    perf.load_bandwidth = a.load_gbps * 1e9;
    perf.validate().map_err(usage)?;
    let scale = ScaleConfig {
        min: a.min,
        max: a.max,
        target_inflight: a.target_inflight,
        stable_window_ms: ms("stable-window-s", a.stable_window_s)?,
        panic_window_ms: ms("panic-window-s", a.panic_window_s)?,
        panic_threshold: a.panic_threshold,
        up_delay_ms: ms("up-delay-s", a.up_delay_s)?,
        down_delay_ms: ms("down-delay-s", a.down_delay_s)?,
        tolerance: a.tolerance,
        idle_ms: ms("idle-s", a.idle_s)?,
    };
    scale.validate().map_err(|e| {
        let flag = match e.field.strip_suffix("_ms") {
            Some(base) => format!("{}-s", base.replace('_', "-")),
            None => e.field.replace('_', "-"),
        };
        usage(format!("--{flag}: {}", e.why))
    })?;
    if !(a.price_gpu_hour.is_finite() && a.price_gpu_hour >= 0.0) {
        return Err(usage(format!(
            "--price-gpu-hour: must be ≥ 0, got {}",
            a.price_gpu_hour
        )));
    }
    if !(a.slo_ttft_ms.is_finite() && a.slo_ttft_ms > 0.0) {
        return Err(usage(format!(
            "--slo-ttft-ms: must be positive, got {}",
            a.slo_ttft_ms
        )));
    }
    if a.max_static == 0 || a.max_static > 10_000 {
        return Err(usage("--max-static: must be 1..=10000"));
    }
    let mut policies = Vec::new();
    for p in a.policy.split(',').map(str::trim) {
        policies.push(match p {
            "static-peak" => None,
            "autoscale" => Some(Policy::Autoscale(scale.clone())),
            _ => match p.strip_prefix("static:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Some(Policy::Static(n)),
                _ => {
                    return Err(usage(format!(
                        "--policy {p:?}: expected static-peak, static:N (N ≥ 1) or autoscale"
                    )))
                }
            },
        });
    }
    let share = a.sleep_gpu_share.unwrap_or(0.1);
    if !(share.is_finite() && (0.0..=1.0).contains(&share)) {
        return Err(usage(format!(
            "--sleep-gpu-share: must be within 0..=1, got {share}"
        )));
    }
    if a.tick_ms == 0 || a.tick_ms > 60_000 {
        return Err(usage(format!(
            "--tick-ms: must be 1..=60000, got {}",
            a.tick_ms
        )));
    }
    let sleep = if a.sleep {
        let wake_s = match a.wake_s {
            Some(w) => w,
            None => 0.5 + perf.weight_bytes() / perf.gpus as f64 / 25e9,
        };
        Some(Sleep {
            wake_us: ms("wake-s", wake_s)? * 1000,
            keep_us: ms("sleep-keep-s", a.sleep_keep_s.unwrap_or(600.0))? * 1000,
            gpu_share: share,
        })
    } else {
        for (flag, set) in [
            ("--wake-s", a.wake_s.is_some()),
            ("--sleep-keep-s", a.sleep_keep_s.is_some()),
            ("--sleep-gpu-share", a.sleep_gpu_share.is_some()),
        ] {
            if set {
                return Err(usage(format!("{flag}: only with --sleep")));
            }
        }
        None
    };
    let trace = RequestTrace::read_spec(&a.trace).map_err(failure)?;
    let params = ServeParams {
        perf: perf.clone(),
        route: a.route,
        slo_ttft_ms: a.slo_ttft_ms,
        tick_ms: a.tick_ms,
        signal: a.signal,
        replica_max_inflight: a.replica_max_inflight,
        price_gpu_hour: a.price_gpu_hour,
        sleep,
    };
    println!(
        "trace {}: {} requests over {:.0} s",
        a.trace,
        trace.requests.len(),
        trace.span_s()
    );
    println!(
        "replica: {} on {} x {} (mfu {}, mbu {}): prefill of 1,000 tokens {:.1} ms, decode step at batch 1 {:.1} ms, \
         KV cache {:.0} tokens, cold start {:.1} s; TTFT objective p99 <= {} ms",
        perf.model.name,
        perf.gpus,
        perf.gpu.name,
        perf.mfu,
        perf.mbu,
        perf.prefill_us(1000) as f64 / 1e3,
        perf.decode_us(1, 0) as f64 / 1e3,
        perf.kv_capacity_tokens(),
        perf.cold_start_us() as f64 / 1e6,
        a.slo_ttft_ms
    );
    let mut results = Vec::new();
    for p in &policies {
        let r = match p {
            Some(p) => simulate(&trace, &params, p).map_err(failure)?,
            None => {
                let mut r = static_peak(&trace, &params, a.max_static)
                    .map_err(failure)?
                    .ok_or_else(|| {
                        failure(format!(
                            "static-peak: even {} replicas miss the TTFT objective of {} ms; raise --max-static or the objective",
                            a.max_static, a.slo_ttft_ms
                        ))
                    })?;
                r.policy = format!("static-peak ({} replicas)", r.replicas_peak);
                r
            }
        };
        results.push(r);
    }
    print!("{}", report::table(&results));
    for r in &results {
        if !r.meets_slo() {
            println!(
                "{}: misses the objective (TTFT p99 {:.0} ms > {} ms)",
                r.policy, r.ttft_ms.p99, a.slo_ttft_ms
            );
        }
    }
    let setup = serde_json::json!({
        "perf": perf,
        "cold_start_s": perf.cold_start_us() as f64 / 1e6,
        "kv_capacity_tokens": perf.kv_capacity_tokens(),
        "autoscale": scale,
        "route": a.route.as_str(),
        "signal": a.signal,
        "replica_max_inflight": a.replica_max_inflight,
        "slo_ttft_ms": a.slo_ttft_ms,
        "price_gpu_hour": a.price_gpu_hour,
        "sleep": params.sleep,
        "tick_ms": a.tick_ms,
    });
    if let Some(path) = &a.json {
        std::fs::write(path, report::to_json(&a.trace, &setup, &results))
            .map_err(|e| failure(format!("{}: {e}", path.display())))?;
    }
    if let Some(dir) = &a.report {
        report::write_report(dir, &a.trace, &setup, &results).map_err(failure)?;
        println!("report: {}", dir.join("index.html").display());
    }
    Ok(())
}
