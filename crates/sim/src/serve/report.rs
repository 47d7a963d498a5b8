//! Serving-simulator output: the comparison table, JSON, and the report
//! directory (CSV, SVG charts, one index.html).

use std::fmt::Write as _;
use std::path::Path;

use super::engine::ServeResult;
use crate::jobs::report::{cdf_points, chart, esc};

/// GPU-hours saved against the first result (the baseline), %.
pub fn saving_pct(baseline: &ServeResult, r: &ServeResult) -> f64 {
    if baseline.gpu_hours > 0.0 {
        100.0 * (1.0 - r.gpu_hours / baseline.gpu_hours)
    } else {
        0.0
    }
}

/// The comparison table; savings are against the first row.
pub fn table(results: &[ServeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:>9} {:>9} {:>9} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "policy",
        "ttft_p50",
        "ttft_p90",
        "ttft_p99",
        "e2e_p50",
        "e2e_p99",
        "slo_%",
        "gpu_h",
        "saved_%",
        "cost",
        "peak",
        "mean"
    );
    let Some(base) = results.first() else {
        return out;
    };
    for r in results {
        let _ = writeln!(
            out,
            "{:<36} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>7.2} {:>9.2} {:>9.1} {:>9.2} {:>8} {:>8.2}",
            r.policy,
            r.ttft_ms.p50,
            r.ttft_ms.p90,
            r.ttft_ms.p99,
            r.e2e_ms.p50,
            r.e2e_ms.p99,
            r.slo_attainment_pct,
            r.gpu_hours,
            saving_pct(base, r),
            r.cost,
            r.replicas_peak,
            r.replicas_mean
        );
    }
    out
}

pub fn to_json(trace: &str, setup: &serde_json::Value, results: &[ServeResult]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "trace": trace,
        "setup": setup,
        "results": results,
    }))
    .expect("results serialise")
}

/// Write `summary.csv`, `series.csv`, `results.json`, two SVG charts
/// (replicas over time, time-to-first-token CDF) and `index.html` into `dir`.
pub fn write_report(
    dir: &Path,
    trace: &str,
    setup: &serde_json::Value,
    results: &[ServeResult],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut sum = String::from(
        "policy,requests,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,e2e_p50_ms,e2e_p99_ms,slo_ttft_ms,slo_attainment_pct,gpu_hours,cost,replicas_peak,replicas_mean,launches\n",
    );
    for r in results {
        let _ = writeln!(
            sum,
            "\"{}\",{},{:.1},{:.1},{:.1},{:.1},{:.1},{},{:.3},{:.4},{:.4},{},{:.3},{}",
            r.policy,
            r.requests,
            r.ttft_ms.p50,
            r.ttft_ms.p90,
            r.ttft_ms.p99,
            r.e2e_ms.p50,
            r.e2e_ms.p99,
            r.slo_ttft_ms,
            r.slo_attainment_pct,
            r.gpu_hours,
            r.cost,
            r.replicas_peak,
            r.replicas_mean,
            r.launches
        );
    }
    w("summary.csv", &sum)?;
    let mut series = String::from("policy,t_s,replicas,inflight\n");
    for r in results {
        for p in &r.series {
            let _ = writeln!(
                series,
                "\"{}\",{:.0},{},{}",
                r.policy, p.t_s, p.replicas, p.inflight
            );
        }
    }
    w("series.csv", &series)?;
    w("results.json", &to_json(trace, setup, results))?;
    let replicas: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|r| {
            (
                r.policy.clone(),
                r.series
                    .iter()
                    .map(|p| (p.t_s, p.replicas as f64))
                    .collect(),
            )
        })
        .collect();
    chart(
        &dir.join("replicas.svg"),
        "Replicas holding GPUs",
        "time (s)",
        "replicas",
        &replicas,
        false,
    )?;
    let cdf: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|r| (r.policy.clone(), cdf_points(&r.ttft_sorted, 400)))
        .collect();
    chart(
        &dir.join("ttft_cdf.svg"),
        "Time to first token (CDF)",
        "ms (log)",
        "fraction of requests",
        &cdf,
        true,
    )?;
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>sim serve: {t}</title>\
         <h1>sim serve: {t}</h1><pre>{table}</pre>\
         <img src=replicas.svg alt=replicas><img src=ttft_cdf.svg alt='TTFT CDF'>\
         <h2>Setup</h2><pre>{setup}</pre>",
        t = esc(trace),
        table = esc(&table(results)),
        setup = esc(&serde_json::to_string_pretty(setup).expect("json")),
    );
    html.push_str("<p>summary.csv, series.csv and results.json hold the figures.</p>\n");
    w("index.html", &html)
}
