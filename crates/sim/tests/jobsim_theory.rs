//! The job simulator against queueing theory: single-GPU jobs, Poisson
//! arrivals, exponential run times, c GPUs, FIFO — an M/M/c queue, whose mean
//! wait is given by the Erlang-C formula.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use suanli_core::{ModelSet, Request};
use suanli_sched::{Class, TenantId};
use suanli_sim::jobs::{simulate, Cluster, Job, SimEvent, SimParams, Workload};

/// Probability that an arrival waits in M/M/c with offered load a = λ/μ.
fn erlang_c(c: u32, a: f64) -> f64 {
    // Summed in log space-free form via the recursive Erlang-B.
    let mut b = 1.0f64;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c as f64;
    b / (1.0 - rho + rho * b)
}

fn mmc_workload(jobs: usize, c: u32, rho: f64, mean_s: f64, seed: u64) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lambda = rho * c as f64 / mean_s; // arrivals per second
    let req = Request::new(0, 0, 1, 1000, ModelSet::ANY).unwrap();
    let mut t = 0.0f64;
    let mut out = Vec::with_capacity(jobs);
    for i in 0..jobs {
        t += -(1.0 - rng.gen::<f64>()).ln() / lambda;
        let d = -(1.0 - rng.gen::<f64>()).ln() * mean_s;
        out.push(Job {
            submit: (t * 1000.0).round() as u64,
            work: (d * 1000.0).round().max(1.0) as u64,
            estimate: None,
            deadline: None,
            tenant: TenantId(0),
            class: Class::OnDemand,
            tasks: 1,
            req,
            line: i as u32 + 2,
        });
    }
    let mut w = Workload {
        source: "mmc".into(),
        tenants: vec!["t".into()],
        jobs: out,
    };
    suanli_sim::jobs::workload::finish(&mut w.jobs);
    w
}

fn cluster(c: u32) -> Cluster {
    Cluster::parse(&format!(
        "[[group]]\nname='g'\ncount={c}\ngpu_model='G'\ngpus=1\ncpu_cores=8\nmemory_gib=64\n"
    ))
    .unwrap()
}

/// Mean wait (s) of jobs after the first `warm` arrivals.
fn simulated_wait(c: u32, rho: f64, jobs: usize, seed: u64) -> f64 {
    let mean_s = 100.0;
    let w = mmc_workload(jobs, c, rho, mean_s, seed);
    let cl = cluster(c);
    let mut arrive = vec![u64::MAX; jobs];
    let mut waits = Vec::with_capacity(jobs);
    let warm = jobs / 20;
    let mut obs = |e: &SimEvent| match *e {
        SimEvent::Arrive { job, at } => arrive[job] = at,
        SimEvent::Start { job, at, .. } if job >= warm => {
            waits.push((at - arrive[job]) as f64 / 1000.0)
        }
        _ => {}
    };
    let r = simulate(&cl, &w, &SimParams::new("fifo"), &mut obs, &mut |_| {}).unwrap();
    assert_eq!(r.jobs, jobs);
    waits.iter().sum::<f64>() / waits.len() as f64
}

#[test]
fn erlang_c_formula_matches_known_values() {
    // M/M/1: P(wait) = ρ. M/M/2 at a = 1: C = 1/3.
    assert!((erlang_c(1, 0.7) - 0.7).abs() < 1e-12);
    assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn fifo_mean_wait_matches_erlang_c() {
    let mean_s = 100.0;
    let cells: Vec<(u32, f64)> = [8u32, 64]
        .iter()
        .flat_map(|&c| [0.5, 0.8, 0.9].map(|r| (c, r)))
        .collect();
    let results: Vec<(u32, f64, f64, f64)> = cells
        .par_iter()
        .map(|&(c, rho)| {
            let a = rho * c as f64;
            let theory = erlang_c(c, a) * mean_s / (c as f64 - a);
            // Independent replications of 500k jobs each; the 64-GPU cells
            // wait rarely, so they need more jobs for the same precision.
            let reps = if c == 8 { 4 } else { 12 };
            let sims: Vec<f64> = (0..reps)
                .map(|s| simulated_wait(c, rho, 500_000, 100 + s))
                .collect();
            let sim = sims.iter().sum::<f64>() / sims.len() as f64;
            (c, rho, theory, sim)
        })
        .collect();
    for (c, rho, theory, sim) in results {
        let err = (sim - theory).abs();
        eprintln!(
            "c={c:>2} rho={rho}: Erlang-C mean wait {theory:.6} s, simulated {sim:.6} s ({:+.2}%)",
            100.0 * (sim - theory) / theory.max(1e-300)
        );
        if theory > 1e-3 * mean_s {
            assert!(
                err <= 0.03 * theory,
                "c={c} rho={rho}: simulated {sim} vs Erlang-C {theory} (> 3%)"
            );
        } else {
            // c = 64 at ρ = 0.5: P(wait) = 4e-7, i.e. about one waiting job in
            // the whole run; a relative error is meaningless. The simulated
            // mean must then be as near zero as the theory: below 0.1% of a
            // mean run time.
            assert!(
                sim <= 1e-3 * mean_s,
                "c={c} rho={rho}: simulated {sim} s, theory {theory} s"
            );
        }
    }
}
