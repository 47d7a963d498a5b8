//! `suanli gen`: a seeded synthetic workload in the native format.
//!
//! Defaults: Poisson arrivals, log-normal run times (median 20 min), a
//! Philly-like GPU-count mix, tenants with Zipf-distributed activity, a spot
//! share and a guaranteed share. `calibrate` reads the aggregate tables of the
//! Alibaba 2026 spot trace (`reference-stats/alibaba-spot-2026-stats`) and
//! takes from them the inter-arrival and run-time quantiles, the GPU-demand
//! buckets, the HP/spot split, the per-organisation job counts and the
//! hour-of-day arrival profile.

use std::fmt::Write as _;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use suanli_core::ModelId;

use super::cluster::Cluster;
use super::workload::split_gpus;
use crate::openb::Csv;

/// An inverse CDF given by quantile anchors, interpolated log-linearly.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantiles(pub Vec<(f64, f64)>);

impl Quantiles {
    fn sample(&self, u: f64) -> f64 {
        let a = &self.0;
        if u <= a[0].0 {
            return a[0].1;
        }
        for w in a.windows(2) {
            let ((q0, v0), (q1, v1)) = (w[0], w[1]);
            if u <= q1 {
                let f = (u - q0) / (q1 - q0);
                let (l0, l1) = (v0.max(1e-3).ln(), v1.max(1e-3).ln());
                return (l0 + f * (l1 - l0)).exp();
            }
        }
        a[a.len() - 1].1
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    /// Exponential with this mean (seconds).
    Exp(f64),
    /// Log-normal with this median (seconds) and σ of the log, capped.
    LogNormal {
        median: f64,
        sigma: f64,
        max: f64,
    },
    Empirical(Quantiles),
}

impl Dist {
    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Dist::Exp(mean) => -mean * (1.0 - rng.gen::<f64>()).ln(),
            Dist::LogNormal { median, sigma, max } => {
                // Box–Muller
                let (u1, u2): (f64, f64) = (1.0 - rng.gen::<f64>(), rng.gen());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (median * (sigma * z).exp()).min(*max)
            }
            Dist::Empirical(q) => q.sample(rng.gen()),
        }
    }
}

/// Everything `suanli gen` can vary.
#[derive(Clone, Debug, PartialEq)]
pub struct GenParams {
    pub jobs: usize,
    pub seed: u64,
    pub tenants: Vec<(String, f64)>,
    /// Inter-arrival gaps (seconds) before diurnal modulation and load scaling.
    pub inter_arrival: Dist,
    pub duration: Dist,
    /// (GPUs per job from..=to, weight); 0 GPUs = CPU-only job.
    pub gpu_mix: Vec<((u32, u32), f64)>,
    /// Fraction of 1-GPU jobs that take a share (250 or 500 milli) of a GPU.
    pub share_frac: f64,
    pub spot_frac: f64,
    pub guaranteed_frac: f64,
    /// Relative arrival rate per hour of day (24 values, mean 1), or empty.
    pub diurnal: Vec<f64>,
    /// Fraction of GPU jobs pinned to one GPU model of the cluster.
    pub pinned_frac: f64,
    /// Target offered GPU load as a fraction of the cluster's GPUs (rescales
    /// arrivals); needs a cluster.
    pub load: Option<f64>,
    /// Runtime estimates: the true run time times a factor uniform in
    /// [1, estimate_factor] (1 = exact; 0 = no estimates).
    pub estimate_factor: f64,
}

impl GenParams {
    pub fn new(jobs: usize, seed: u64) -> GenParams {
        GenParams {
            jobs,
            seed,
            tenants: (0..8)
                .map(|i| (format!("tenant-{i}"), 1.0 / (i as f64 + 1.0).powf(1.2)))
                .collect(),
            inter_arrival: Dist::Exp(30.0),
            duration: Dist::LogNormal {
                median: 1200.0,
                sigma: 1.5,
                max: 2.0 * 86_400.0,
            },
            // Philly's mix (SOURCE.md of philly-pollux): 1 GPU 93%, 2: 2.2%,
            // 4: 2.3%, 8: 2.0%, 16+: 0.34%.
            gpu_mix: vec![
                ((1, 1), 93.2),
                ((2, 2), 2.2),
                ((4, 4), 2.3),
                ((8, 8), 2.0),
                ((16, 16), 0.24),
                ((32, 32), 0.08),
                ((64, 64), 0.02),
            ],
            share_frac: 0.0,
            spot_frac: 0.1,
            guaranteed_frac: 0.2,
            diurnal: Vec::new(),
            pinned_frac: 0.0,
            load: None,
            estimate_factor: 2.0,
        }
    }

    /// Take distributions from the aggregate tables in `dir`
    /// (`alibaba-spot-2026-stats`). Errors name the file and line.
    pub fn calibrate(&mut self, dir: &Path) -> Result<(), String> {
        // (line, fields) of each row after the header.
        let read = |name: &str| -> Result<Vec<(usize, Vec<String>)>, String> {
            let mut csv = Csv::open(&dir.join(name), &[]).map_err(|e| e.to_string())?;
            let mut rows = Vec::new();
            while let Some(row) = csv.next_row() {
                let row = row.map_err(|e| e.to_string())?;
                rows.push((row.line(), row.fields().map(str::to_string).collect()));
            }
            Ok(rows)
        };
        let num = |name: &str, line: usize, v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "{}:{line}: expected a number, found {v:?}",
                        dir.join(name).display(),
                    )
                })
        };
        let quantiles = |name: &str, floor: f64| -> Result<Quantiles, String> {
            let mut a = vec![(0.0, floor)];
            for (line, r) in read(name)? {
                if r.len() < 2 {
                    return Err(format!(
                        "{}:{line}: expected quantile,value",
                        dir.join(name).display(),
                    ));
                }
                a.push((num(name, line, &r[0])?, num(name, line, &r[1])?));
            }
            if a.len() < 2 || a.windows(2).any(|w| w[1].0 <= w[0].0) {
                return Err(format!(
                    "{}: quantiles must increase",
                    dir.join(name).display()
                ));
            }
            Ok(Quantiles(a))
        };
        self.inter_arrival = Dist::Empirical(quantiles("inter_arrival_quantiles.csv", 0.5)?);
        self.duration = Dist::Empirical(quantiles("duration_quantiles.csv", 10.0)?);
        let mut mix = Vec::new();
        for (line, r) in read("bucket_gpu_demand.csv")? {
            let name = "bucket_gpu_demand.csv";
            if r.len() < 2 {
                return Err(format!(
                    "{}:{line}: too few fields",
                    dir.join(name).display()
                ));
            }
            let b = r[0].as_str();
            let range = if let Some((lo, hi)) = b.split_once(" to ") {
                (num(name, line, lo)? as u32, num(name, line, hi)? as u32)
            } else if let Some(lo) = b.strip_suffix(" plus") {
                let lo = num(name, line, lo)? as u32;
                (lo, lo * 2)
            } else {
                let v = num(name, line, b)? as u32;
                (v, v)
            };
            mix.push((range, num(name, line, &r[1])?));
        }
        mix.sort_by_key(|m| m.0);
        self.gpu_mix = mix;
        let mut hp = 0.0;
        let mut spot = 0.0;
        for (line, r) in read("job_type_summary.csv")? {
            let jobs = num("job_type_summary.csv", line, r.get(1).map_or("", |s| s))?;
            match r[0].as_str() {
                "Spot" => spot += jobs,
                _ => hp += jobs,
            }
        }
        if hp + spot > 0.0 {
            self.spot_frac = spot / (hp + spot);
        }
        let mut tenants = Vec::new();
        for (line, r) in read("org_by_gpu_seconds.csv")? {
            let jobs = num("org_by_gpu_seconds.csv", line, r.get(1).map_or("", |s| s))?;
            if jobs > 0.0 {
                tenants.push((format!("org-{}", r[0]), jobs));
            }
        }
        if !tenants.is_empty() {
            self.tenants = tenants;
        }
        let mut hours = [0.0; 24];
        for (line, r) in read("hour_of_day_patterns.csv")? {
            let h = num("hour_of_day_patterns.csv", line, &r[0])? as usize;
            let jobs = num("hour_of_day_patterns.csv", line, r.get(1).map_or("", |s| s))?;
            if h < 24 {
                hours[h] = jobs;
            }
        }
        let m = hours.iter().sum::<f64>() / 24.0;
        if m > 0.0 {
            self.diurnal = hours.iter().map(|h| h / m).collect();
        }
        Ok(())
    }
}

fn pick<T: Clone>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|i| i.1).sum();
    let mut x = rng.gen::<f64>() * total;
    for (v, w) in items {
        if x < *w {
            return v.clone();
        }
        x -= w;
    }
    items[items.len() - 1].0.clone()
}

/// Generate a workload as native CSV. With a cluster, GPU counts are split
/// into node-sized gangs, a share of jobs is pinned to the cluster's models,
/// and `load` can be targeted.
pub fn generate_csv(p: &GenParams, cluster: Option<&Cluster>) -> Result<String, String> {
    if p.tenants.is_empty() || p.gpu_mix.is_empty() {
        return Err("need at least one tenant and one GPU-count bucket".into());
    }
    let per_node = cluster.map_or(8, |c| c.max_gpus_per_node().max(1));
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    // Load targeting: the mean GPU-seconds per job, by sampling a separate stream.
    let mut scale = 1.0;
    if let Some(load) = p.load {
        let c = cluster.ok_or("--load needs --cluster")?;
        if !(load > 0.0 && load.is_finite()) {
            return Err(format!("--load must be positive, found {load}"));
        }
        let mut est = ChaCha8Rng::seed_from_u64(p.seed ^ 0x5eed);
        let k = 200_000;
        let (mut demand, mut gap) = (0.0, 0.0);
        for _ in 0..k {
            let (lo, hi) = pick(&mut est, &p.gpu_mix);
            let g = est.gen_range(lo..=hi) as f64;
            demand += g * p.duration.sample(&mut est);
            gap += p.inter_arrival.sample(&mut est);
        }
        let offered = demand / gap; // GPUs busy on average at scale 1
        scale = offered / (load * c.gpus() as f64);
    }
    let models: Vec<(ModelId, u32, f64)> = cluster.map_or(Vec::new(), |c| {
        (0..c.models.len())
            .map(|m| {
                let id = ModelId(m as u8);
                let nodes = c.nodes.iter().filter(|n| n.model == Some(id));
                let per = nodes.clone().map(|n| n.gpus as u32).max().unwrap_or(0);
                let cap: f64 = nodes.map(|n| n.gpus as f64).sum();
                (id, per, cap)
            })
            .collect()
    });
    let mut out = String::from(
        "id,tenant,submit_s,duration_s,tasks,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_models,class,estimate_s,deadline_s\n",
    );
    let tenant_w: Vec<(usize, f64)> = p
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (i, t.1))
        .collect();
    let mut t = 0.0f64;
    for i in 0..p.jobs {
        let m = if p.diurnal.len() == 24 {
            p.diurnal[((t / 3600.0) as usize) % 24].max(0.05)
        } else {
            1.0
        };
        t += p.inter_arrival.sample(&mut rng) * scale / m;
        let tenant = &p.tenants[pick(&mut rng, &tenant_w)].0;
        let dur = p.duration.sample(&mut rng).max(1.0).round();
        let (lo, hi) = pick(&mut rng, &p.gpu_mix);
        let gpus = rng.gen_range(lo..=hi);
        let (tasks, per, milli) = if gpus == 0 {
            (1, 0, 0)
        } else if gpus == 1 && rng.gen::<f64>() < p.share_frac {
            (1, 1, if rng.gen_bool(0.5) { 250 } else { 500 })
        } else {
            let (t, per) = split_gpus(gpus, per_node);
            (t, per, 1000)
        };
        let cpu = if per == 0 { 2000 } else { 4000 * per as u64 };
        let mem = if per == 0 { 8192 } else { 32_768 * per as u64 };
        let mut pinned = String::new();
        if per > 0 && rng.gen::<f64>() < p.pinned_frac {
            let fit: Vec<(ModelId, f64)> = models
                .iter()
                .filter(|m| m.1 >= per && m.2 >= (tasks * per) as f64)
                .map(|m| (m.0, m.2))
                .collect();
            if !fit.is_empty() {
                let id = pick(&mut rng, &fit);
                pinned = cluster
                    .expect("models come from a cluster")
                    .models
                    .name(id)
                    .to_string();
            }
        }
        let u: f64 = rng.gen();
        let class = if u < p.spot_frac {
            "spot"
        } else if u < p.spot_frac + p.guaranteed_frac {
            "guaranteed"
        } else {
            "on-demand"
        };
        let estimate = if p.estimate_factor >= 1.0 {
            format!("{:.0}", dur * rng.gen_range(1.0..=p.estimate_factor))
        } else {
            String::new()
        };
        let deadline = if class == "guaranteed" {
            format!("{:.0}", dur * 2.0 + 600.0)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "job-{i},{tenant},{t:.3},{dur:.0},{tasks},{cpu},{mem},{per},{milli},{pinned},{class},{estimate},{deadline}"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_workload() {
        let p = GenParams::new(500, 7);
        assert_eq!(
            generate_csv(&p, None).unwrap(),
            generate_csv(&p, None).unwrap()
        );
        let q = GenParams::new(500, 8);
        assert_ne!(
            generate_csv(&p, None).unwrap(),
            generate_csv(&q, None).unwrap()
        );
    }

    #[test]
    fn quantile_sampling_hits_the_anchors() {
        let q = Quantiles(vec![(0.0, 1.0), (0.5, 100.0), (1.0, 10_000.0)]);
        assert!((q.sample(0.5) - 100.0).abs() < 1e-9);
        assert!((q.sample(0.25) - 10.0).abs() < 1e-9);
        assert!((q.sample(1.0) - 10_000.0).abs() < 1e-6);
    }
}
