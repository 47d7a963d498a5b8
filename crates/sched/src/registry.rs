//! Policy names → constructors.

use crate::frag::Workload;
use crate::policies::{
    BestFit, DotProd, Fgd, FgdStrandAware, GpuClustering, GpuPacking, RandomPolicy,
};
use crate::policy::{PlacementPolicy, ScoredPolicy, Scorer};

/// Every placement policy, by the name the CLI and configs use: the six
/// published baselines of the openb benchmark, then Suanli's own.
pub const POLICY_NAMES: &[&str] = &[
    "random",
    "dotprod",
    "clustering",
    "packing",
    "bestfit",
    "fgd",
    "fgd-sa",
];

/// The policy used wherever none is named.
pub const DEFAULT_POLICY: &str = "fgd-sa";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown placement policy {name:?}; valid: {}", POLICY_NAMES.join(", "))]
pub struct PolicyError {
    pub name: String,
}

/// Build policy `name`. `workload` is the target workload (used by the
/// fragmentation-aware policies), `seed` seeds the randomised ones.
/// A policy instance memoises scores for one ledger: use a fresh one per ledger.
pub fn make_policy(
    name: &str,
    workload: &Workload,
    seed: u64,
) -> Result<Box<dyn PlacementPolicy>, PolicyError> {
    make_policy_with(name, workload, seed, true)
}

fn boxed<S: Scorer + 'static>(name: &'static str, s: S, memo: bool) -> Box<dyn PlacementPolicy> {
    let p = ScoredPolicy::new(name, s);
    Box::new(if memo { p } else { p.without_memo() })
}

/// [`make_policy`], choosing whether scores are memoised (`memo = false` is
/// the benchmark's baseline: same decisions, every node rescored every time).
pub fn make_policy_with(
    name: &str,
    workload: &Workload,
    seed: u64,
    memo: bool,
) -> Result<Box<dyn PlacementPolicy>, PolicyError> {
    Ok(match name {
        "random" => Box::new(RandomPolicy::new(seed)),
        "dotprod" => boxed("dotprod", DotProd, memo),
        "clustering" => boxed("clustering", GpuClustering, memo),
        "packing" => boxed("packing", GpuPacking, memo),
        "bestfit" => boxed("bestfit", BestFit, memo),
        "fgd" => boxed(
            "fgd",
            Fgd {
                workload: workload.clone(),
            },
            memo,
        ),
        "fgd-sa" => boxed(
            "fgd-sa",
            FgdStrandAware {
                fgd: Fgd {
                    workload: workload.clone(),
                },
            },
            memo,
        ),
        _ => {
            return Err(PolicyError {
                name: name.to_string(),
            })
        }
    })
}
