//! Summaries over seeds and the outputs of `suanli sim openb`: a table, JSON,
//! the curve as CSV and as an SVG chart.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{json, Value};

use crate::fill::{CurvePoint, Experiment};

/// Mean, population standard deviation, min and max.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(xs: &[f64]) -> Stats {
        if xs.is_empty() {
            return Stats {
                mean: f64::NAN,
                std: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Stats {
            mean,
            std: var.sqrt(),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
    fn json(&self) -> Value {
        json!({"mean": self.mean, "std": self.std, "min": self.min, "max": self.max})
    }
}

/// Per-experiment figures at 100% and at the end (130%) of arrived load.
#[derive(Clone, Debug)]
pub struct Figures {
    pub alloc_100: f64,
    pub alloc_end: f64,
    pub frag_100: f64,
    pub frag_end: f64,
}

pub fn figures(e: &Experiment) -> Figures {
    let (alloc_end, frag_end) = e.run.final_pct();
    let at = e.run.at(100);
    Figures {
        alloc_100: at.map_or(f64::NAN, |p| p.alloc_pct),
        alloc_end,
        frag_100: at.map_or(f64::NAN, |p| p.frag_pct),
        frag_end,
    }
}

/// One policy's results over its seeds.
#[derive(Clone, Debug)]
pub struct Summary {
    pub policy: String,
    pub seeds: usize,
    pub alloc_100: Stats,
    pub alloc_end: Stats,
    pub frag_end: Stats,
    pub failed: Stats,
    pub submitted: Stats,
    pub wall_ms: Stats,
}

/// Summaries in the order policies first appear in `exps`.
pub fn summarize(exps: &[Experiment]) -> Vec<Summary> {
    let mut policies: Vec<&str> = Vec::new();
    for e in exps {
        if !policies.contains(&e.policy.as_str()) {
            policies.push(&e.policy);
        }
    }
    policies
        .into_iter()
        .map(|p| {
            let mine: Vec<&Experiment> = exps.iter().filter(|e| e.policy == p).collect();
            let f: Vec<Figures> = mine.iter().map(|e| figures(e)).collect();
            let col = |g: &dyn Fn(&Figures) -> f64| Stats::of(&f.iter().map(g).collect::<Vec<_>>());
            let ecol = |g: &dyn Fn(&Experiment) -> f64| {
                Stats::of(&mine.iter().map(|e| g(e)).collect::<Vec<_>>())
            };
            Summary {
                policy: p.to_string(),
                seeds: mine.len(),
                alloc_100: col(&|x| x.alloc_100),
                alloc_end: col(&|x| x.alloc_end),
                frag_end: col(&|x| x.frag_end),
                failed: ecol(&|e| e.run.pods_failed() as f64),
                submitted: ecol(&|e| e.run.pods_submitted() as f64),
                wall_ms: ecol(&|e| e.wall_ms),
            }
        })
        .collect()
}

/// The human table. `baseline` names the policy the last column compares to.
pub fn table(sums: &[Summary], tune: f64, baseline: Option<&str>) -> String {
    let end = format!("{:.0}%", tune * 100.0);
    let base = baseline.and_then(|b| sums.iter().find(|s| s.policy == b));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:>5} | {:>9} {:>6} | {:>9} {:>5} {:>7} {:>7} | {:>9} | {:>8} {:>9} | {:>9}",
        "policy",
        "seeds",
        "alloc@100",
        "std",
        format!("alloc@{end}"),
        "std",
        "min",
        "max",
        format!("frag@{end}"),
        "failed",
        "wall ms",
        base.map_or(String::new(), |b| format!("vs {}", b.policy)),
    );
    for s in sums {
        let vs = base.map_or(String::new(), |b| {
            format!("{:+.3} pp", s.alloc_end.mean - b.alloc_end.mean)
        });
        let _ = writeln!(
            out,
            "{:<14} {:>5} | {:>9.2} {:>6.2} | {:>9.2} {:>5.2} {:>7.2} {:>7.2} | {:>9.2} | {:>8.1} {:>9.1} | {:>9}",
            s.policy,
            s.seeds,
            s.alloc_100.mean,
            s.alloc_100.std,
            s.alloc_end.mean,
            s.alloc_end.std,
            s.alloc_end.min,
            s.alloc_end.max,
            s.frag_end.mean,
            s.failed.mean,
            s.wall_ms.mean,
            vs
        );
    }
    out
}

/// The `--json` document.
pub fn to_json(exps: &[Experiment], sums: &[Summary]) -> Value {
    let experiments: Vec<Value> = exps
        .iter()
        .map(|e| {
            let f = figures(e);
            json!({
                "policy": e.policy,
                "seed": e.seed,
                "pods_submitted": e.run.pods_submitted(),
                "pods_failed": e.run.pods_failed(),
                "alloc_pct_at": {"100": f.alloc_100, "130": f.alloc_end},
                "frag_pct_at": {"100": f.frag_100, "130": f.frag_end},
                "wall_ms": e.wall_ms,
            })
        })
        .collect();
    let summary: Vec<Value> = sums
        .iter()
        .map(|s| {
            json!({
                "policy": s.policy,
                "seeds": s.seeds,
                "alloc_pct_at_130": s.alloc_end.json(),
                "alloc_pct_at_100": s.alloc_100.json(),
                "frag_pct_at_130": s.frag_end.json(),
                "pods_failed": s.failed.json(),
                "wall_ms": s.wall_ms.json(),
            })
        })
        .collect();
    json!({"experiments": experiments, "summary": summary})
}

/// Mean curve over a policy's seeds: for each arrived-load percent present in
/// any seed, the mean of the seeds that have it.
pub fn mean_curve(exps: &[Experiment], policy: &str) -> Vec<CurvePoint> {
    let mut acc: std::collections::BTreeMap<i64, (f64, f64, u32)> = Default::default();
    for e in exps.iter().filter(|e| e.policy == policy) {
        for p in e.run.curve() {
            let a = acc.entry(p.arrived_pct).or_default();
            a.0 += p.alloc_pct;
            a.1 += p.frag_pct;
            a.2 += 1;
        }
    }
    acc.into_iter()
        .map(|(x, (a, f, n))| CurvePoint {
            arrived_pct: x,
            alloc_pct: a / n as f64,
            frag_pct: f / n as f64,
        })
        .collect()
}

/// `policy,arrived_pct,alloc_pct,frag_pct` rows, mean over seeds.
pub fn curve_csv(exps: &[Experiment], sums: &[Summary]) -> String {
    let mut out = String::from("policy,arrived_pct,alloc_pct,frag_pct\n");
    for s in sums {
        for p in mean_curve(exps, &s.policy) {
            let _ = writeln!(
                out,
                "{},{},{:.4},{:.4}",
                s.policy, p.arrived_pct, p.alloc_pct, p.frag_pct
            );
        }
    }
    out
}

/// Allocation (solid) and fragmentation (dashed) against arrived load, one
/// colour per policy.
pub fn plot_svg(exps: &[Experiment], sums: &[Summary], path: &Path) -> Result<(), String> {
    let curves: Vec<(String, Vec<CurvePoint>)> = sums
        .iter()
        .map(|s| (s.policy.clone(), mean_curve(exps, &s.policy)))
        .collect();
    let xmax = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.arrived_pct))
        .max()
        .unwrap_or(100)
        .max(1);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "GPU allocation (solid) and fragmentation (dashed) vs arrived load",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0i64..xmax, 0f64..100f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("arrived GPU load (% of capacity)")
        .y_desc("% of cluster GPU capacity")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (name, c)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                c.iter().map(|p| (p.arrived_pct, p.alloc_pct)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(DashedLineSeries::new(
                c.iter().map(|p| (p.arrived_pct, p.frag_pct)),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
