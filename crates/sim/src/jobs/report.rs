//! Job-simulator output: the comparison table, JSON, and the report directory
//! (CSV time series, SVG charts, one index.html).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::engine::SimResult;

/// The comparison table across policies.
pub fn table(results: &[SimResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:>8} {:>11} {:>10} {:>11} {:>11} {:>10} {:>10} {:>11} {:>7} {:>8} {:>6} {:>8}",
        "policy",
        "jobs",
        "jct_mean_s",
        "jct_p50_s",
        "jct_p99_s",
        "wait_mean_s",
        "wait_p99_s",
        "makespan_h",
        "gpu_util_%",
        "preempt",
        "deadln_%",
        "jain",
        "wall_s"
    );
    for r in results {
        let dl = r
            .deadline_met_pct
            .map_or("-".to_string(), |d| format!("{d:.1}"));
        let _ = writeln!(
            out,
            "{:<9} {:>8} {:>11.0} {:>10.0} {:>11.0} {:>11.0} {:>10.0} {:>10.1} {:>11.2} {:>7} {:>8} {:>6.3} {:>8.3}",
            r.policy,
            r.jobs,
            r.jct_mean_s,
            r.jct_p50_s,
            r.jct_p99_s,
            r.wait_mean_s,
            r.wait_p99_s,
            r.makespan_s / 3600.0,
            r.gpu_util_pct,
            r.preemptions,
            dl,
            r.jain_index,
            r.wall_s
        );
    }
    out
}

/// Money per policy (when priced): revenue, idle capacity at list price,
/// utilisation of the priced window and revenue per capacity GPU-hour.
pub fn money_table(results: &[SimResult]) -> String {
    let mut out = String::new();
    let Some(m0) = results.iter().find_map(|r| r.money.as_ref()) else {
        return out;
    };
    let _ = writeln!(
        out,
        "money ({}), window {} + {:.2} h (every policy; every GPU node is capacity), idle at list price:",
        m0.currency,
        suanli_billing::format_time(m0.from),
        (m0.to - m0.from) as f64 / 3_600_000.0
    );
    let _ = writeln!(
        out,
        "{:<9} {:>14} {:>14} {:>14} {:>14} {:>8} {:>12}",
        "policy", "revenue", "gpu_revenue", "idle_value", "sold_gpu_h", "util_%", "rev/cap_gpu_h"
    );
    for r in results {
        let Some(m) = &r.money else { continue };
        let _ = writeln!(
            out,
            "{:<9} {:>14} {:>14} {:>14} {:>14.1} {:>8} {:>12}",
            r.policy,
            m.revenue,
            m.gpu_revenue,
            m.idle_value,
            m.sold_gpu_hours
                .to_string()
                .parse::<f64>()
                .unwrap_or(f64::NAN),
            m.utilisation_pct.map_or("-".into(), |d| d.to_string()),
            m.revenue_per_capacity_gpu_hour
                .map_or("-".into(), |d| d.to_string())
        );
    }
    out
}

/// The total of `tenant`'s invoice under `r`'s pricing, if priced.
fn bill(r: &SimResult, tenant: &str) -> Option<String> {
    let m = r.money.as_ref()?;
    Some(
        m.invoices
            .iter()
            .find(|i| i.tenant == tenant)
            .map_or_else(|| "0".to_string(), |i| i.total.to_string()),
    )
}

/// Per-tenant GPU-hours and shares, and per-class waits and preemptions,
/// one block per policy.
pub fn tenant_table(results: &[SimResult]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(out, "[{}] per class", r.policy);
        let _ = writeln!(
            out,
            "  {:<14} {:>8} {:>11} {:>11} {:>9}",
            "class", "jobs", "jct_mean_s", "wait_mean_s", "preempt"
        );
        for c in &r.classes {
            let _ = writeln!(
                out,
                "  {:<14} {:>8} {:>11.0} {:>11.0} {:>9}",
                c.class, c.jobs, c.jct_mean_s, c.wait_mean_s, c.preemptions
            );
        }
        let _ = writeln!(out, "[{}] per tenant", r.policy);
        let _ = writeln!(
            out,
            "  {:<14} {:>8} {:>12} {:>8} {:>11} {:>11} {:>9} {:>14}",
            "tenant",
            "jobs",
            "gpu_hours",
            "share_%",
            "jct_mean_s",
            "wait_mean_s",
            "slowdown",
            "bill"
        );
        for t in &r.tenants {
            let _ = writeln!(
                out,
                "  {:<14} {:>8} {:>12.1} {:>8.2} {:>11.0} {:>11.0} {:>9.2} {:>14}",
                t.tenant,
                t.jobs,
                t.gpu_hours,
                t.share_pct,
                t.jct_mean_s,
                t.wait_mean_s,
                t.slowdown_mean,
                bill(r, &t.tenant).unwrap_or_else(|| "-".into())
            );
        }
    }
    out
}

#[derive(Serialize)]
struct Doc<'a> {
    cluster: &'a str,
    trace: &'a str,
    results: &'a [SimResult],
}

/// `{"cluster", "trace", "results": [...]}`.
pub fn to_json(cluster: &str, trace: &str, results: &[SimResult]) -> String {
    serde_json::to_string_pretty(&Doc {
        cluster,
        trace,
        results,
    })
    .expect("results serialise")
}

pub(crate) fn chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    log_x: bool,
) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| format!("{}: {x}", path.display());
    let xmax = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let ymax = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()
                .map_err(|x| e(&x))?;
            for (i, (name, pts)) in lines.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if log_x {
        draw!(builder
            .build_cartesian_2d((1f64..xmax.max(10.0)).log_scale(), 0f64..ymax)
            .map_err(|x| e(&x))?);
    } else {
        draw!(builder
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|x| e(&x))?);
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Up to `k` (x, cumulative fraction) points of an empirical CDF.
pub(crate) fn cdf_points(sorted: &[f64], k: usize) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let n = sorted.len();
    let step = (n / k.max(1)).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i].max(1.0), (i + 1) as f64 / n as f64))
        .collect();
    pts.push((sorted[n - 1].max(1.0), 1.0));
    pts
}

/// Write `series.csv`, `summary.csv`, `tenants.csv`, `results.json`, three
/// SVG charts and `index.html` into `dir`.
pub fn write_report(
    dir: &Path,
    cluster: &str,
    trace: &str,
    results: &[SimResult],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut csv = String::from("policy,t_s,gpu_util_pct,queue_len,running\n");
    for r in results {
        for p in &r.series {
            let _ = writeln!(
                csv,
                "{},{:.0},{:.3},{:.3},{:.3}",
                r.policy, p.t_s, p.gpu_util_pct, p.queue_len, p.running
            );
        }
    }
    w("series.csv", &csv)?;
    let mut sum = String::from(
        "policy,placement,jobs,jct_mean_s,jct_p50_s,jct_p95_s,jct_p99_s,wait_mean_s,wait_p99_s,makespan_s,gpu_util_pct,preemptions,lost_gpu_hours,deadline_met_pct,jain_index\n",
    );
    for r in results {
        let _ = writeln!(
            sum,
            "{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.3},{},{:.3},{},{:.4}",
            r.policy,
            r.placement,
            r.jobs,
            r.jct_mean_s,
            r.jct_p50_s,
            r.jct_p95_s,
            r.jct_p99_s,
            r.wait_mean_s,
            r.wait_p99_s,
            r.makespan_s,
            r.gpu_util_pct,
            r.preemptions,
            r.lost_gpu_hours,
            r.deadline_met_pct
                .map_or(String::new(), |d| format!("{d:.2}")),
            r.jain_index
        );
    }
    w("summary.csv", &sum)?;
    let mut ten = String::from(
        "policy,tenant,jobs,gpu_hours,share_pct,jct_mean_s,wait_mean_s,slowdown_mean,bill\n",
    );
    for r in results {
        for t in &r.tenants {
            let _ = writeln!(
                ten,
                "{},{},{},{:.3},{:.3},{:.1},{:.1},{:.3},{}",
                r.policy,
                t.tenant,
                t.jobs,
                t.gpu_hours,
                t.share_pct,
                t.jct_mean_s,
                t.wait_mean_s,
                t.slowdown_mean,
                bill(r, &t.tenant).unwrap_or_default()
            );
        }
    }
    w("tenants.csv", &ten)?;
    w("results.json", &to_json(cluster, trace, results))?;
    let hours = |r: &SimResult, f: &dyn Fn(&super::engine::SeriesPoint) -> f64| {
        r.series
            .iter()
            .map(|p| (p.t_s / 3600.0, f(p)))
            .collect::<Vec<_>>()
    };
    let util: Vec<_> = results
        .iter()
        .map(|r| (r.policy.clone(), hours(r, &|p| p.gpu_util_pct)))
        .collect();
    chart(
        &dir.join("utilisation.svg"),
        "GPU utilisation over time",
        "hours since first arrival",
        "allocated GPUs (% of capacity)",
        &util,
        false,
    )?;
    let queue: Vec<_> = results
        .iter()
        .map(|r| (r.policy.clone(), hours(r, &|p| p.queue_len)))
        .collect();
    chart(
        &dir.join("queue.svg"),
        "Jobs waiting over time",
        "hours since first arrival",
        "pending jobs (time-averaged)",
        &queue,
        false,
    )?;
    let cdf: Vec<_> = results
        .iter()
        .map(|r| (r.policy.clone(), cdf_points(&r.jct_sorted_s, 500)))
        .collect();
    chart(
        &dir.join("jct_cdf.svg"),
        "Job completion time CDF",
        "job completion time (s, log scale)",
        "fraction of jobs",
        &cdf,
        true,
    )?;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Suanli simulation report</title>\n\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#eee}}</style></head><body>\n\
<h1>Suanli simulation report</h1>\n<p>Cluster: <code>{}</code><br>Trace: <code>{}</code></p>\n<table><tr>",
        esc(cluster),
        esc(trace)
    );
    for h in [
        "policy",
        "placement",
        "jobs",
        "JCT mean (s)",
        "JCT p50",
        "JCT p99",
        "wait mean (s)",
        "wait p99",
        "makespan (h)",
        "GPU util %",
        "preemptions",
        "deadlines met %",
        "Jain",
    ] {
        let _ = write!(html, "<th>{h}</th>");
    }
    html.push_str("</tr>\n");
    for r in results {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
            esc(&r.policy),
            esc(&r.placement),
            r.jobs,
            r.jct_mean_s,
            r.jct_p50_s,
            r.jct_p99_s,
            r.wait_mean_s,
            r.wait_p99_s,
            r.makespan_s / 3600.0,
            r.gpu_util_pct,
            r.preemptions,
            r.deadline_met_pct.map_or("-".into(), |d| format!("{d:.1}")),
            r.jain_index
        );
    }
    html.push_str("</table>\n");
    if results.iter().any(|r| r.money.is_some()) {
        let _ = write!(
            html,
            "<h2>Money</h2>\n<pre>{}</pre>\n<p>Per-tenant bills: <a href=\"tenants.csv\">tenants.csv</a> (column <code>bill</code>); invoices with line items: <a href=\"results.json\">results.json</a>.</p>\n",
            esc(&money_table(results))
        );
    }
    html.push_str("<h2>Utilisation</h2><img src=\"utilisation.svg\" alt=\"GPU utilisation over time\">\n\
<h2>Queue length</h2><img src=\"queue.svg\" alt=\"pending jobs over time\">\n\
<h2>Job completion times</h2><img src=\"jct_cdf.svg\" alt=\"JCT CDF\">\n\
<p>Data: <a href=\"summary.csv\">summary.csv</a>, <a href=\"series.csv\">series.csv</a>, \
<a href=\"tenants.csv\">tenants.csv</a>, <a href=\"results.json\">results.json</a></p>\n</body></html>\n");
    w("index.html", &html)?;
    Ok(())
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
