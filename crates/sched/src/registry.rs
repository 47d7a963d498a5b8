//! Policy names → constructors.

use crate::frag::Workload;
use crate::policies::{BestFit, DotProd, Fgd, GpuClustering, GpuPacking, RandomPolicy};
use crate::policy::{PlacementPolicy, ScoredPolicy};

/// Every placement policy, by the name the CLI and configs use.
pub const POLICY_NAMES: &[&str] = &[
    "random",
    "dotprod",
    "clustering",
    "packing",
    "bestfit",
    "fgd",
];

/// The policy used wherever none is named.
pub const DEFAULT_POLICY: &str = "fgd";

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
    Ok(match name {
        "random" => Box::new(RandomPolicy::new(seed)),
        "dotprod" => Box::new(ScoredPolicy::new("dotprod", DotProd)),
        "clustering" => Box::new(ScoredPolicy::new("clustering", GpuClustering)),
        "packing" => Box::new(ScoredPolicy::new("packing", GpuPacking)),
        "bestfit" => Box::new(ScoredPolicy::new("bestfit", BestFit)),
        "fgd" => Box::new(ScoredPolicy::new(
            "fgd",
            Fgd {
                workload: workload.clone(),
            },
        )),
        _ => {
            return Err(PolicyError {
                name: name.to_string(),
            })
        }
    })
}
