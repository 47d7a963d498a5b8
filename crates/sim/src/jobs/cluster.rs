//! Cluster descriptions for the job simulator: node groups, racks and zones,
//! and tenants with per-model quotas, in TOML. Example:
//!
//! ```toml
//! [[group]]
//! name = "a100"
//! count = 32
//! gpu_model = "A100-80G"
//! gpus = 8
//! cpu_cores = 128
//! memory_gib = 1024
//! nodes_per_rack = 8      # racks a100-r0, a100-r1, ... (or: rack = "r1")
//! zone = "z1"
//! mtbf_h = 2000           # optional failure model: mean hours between
//! mttr_h = 4              #   failures of each node, mean hours to repair
//!
//! [[tenant]]
//! name = "acme"
//! weight = 2.0
//! quota.A100-80G = { guaranteed = 64, max = 128 }   # GPUs
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use suanli_core::{ModelId, Models, NodeSpec, MAX_GPUS_PER_NODE, MILLI_PER_GPU};
use suanli_sched::TenantQuota;

use crate::openb::read_nodes;

/// A cluster ready to simulate.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub models: Models,
    pub nodes: Vec<NodeSpec>,
    /// Rack index of each node (into `rack_names`).
    pub racks: Vec<u32>,
    pub rack_names: Vec<String>,
    /// Zone label of each node ("" when none).
    pub zones: Vec<String>,
    /// Tenants named in the file, in file order (their ids are 0..).
    pub tenants: Vec<TenantDef>,
    /// Each node's failure model, if its group has one.
    pub failures: Vec<Option<Failure>>,
}

/// A node group's failure model: time to failure and time to repair are
/// exponential with these means (ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Failure {
    pub mtbf_ms: f64,
    pub mttr_ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TenantDef {
    pub name: String,
    pub quota: TenantQuota,
}

impl Cluster {
    pub fn gpus(&self) -> u64 {
        self.nodes.iter().map(|n| n.gpus as u64).sum()
    }
    pub fn max_gpus_per_node(&self) -> u32 {
        self.nodes.iter().map(|n| n.gpus as u32).max().unwrap_or(0)
    }

    /// Load a TOML cluster description, or an openb node list (`.csv`).
    pub fn load(path: &Path) -> Result<Cluster, String> {
        if path.extension().is_some_and(|e| e == "csv") {
            let mut models = Models::new();
            let nodes = read_nodes(path, &mut models).map_err(|e| e.to_string())?;
            let n = nodes.len();
            return Ok(Cluster {
                name: path
                    .file_stem()
                    .map_or("cluster".into(), |s| s.to_string_lossy().into()),
                models,
                nodes,
                racks: vec![0; n],
                rack_names: vec![String::new()],
                zones: vec![String::new(); n],
                tenants: Vec::new(),
                failures: vec![None; n],
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Cluster::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse a TOML cluster description.
    pub fn parse(text: &str) -> Result<Cluster, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.group.is_empty() {
            return Err("no [[group]] of nodes".into());
        }
        let mut models = Models::new();
        let mut nodes = Vec::new();
        let mut racks = Vec::new();
        let mut rack_names: Vec<String> = Vec::new();
        let mut rack_ids: HashMap<String, u32> = HashMap::new();
        let mut zones = Vec::new();
        let mut failures = Vec::new();
        let mut seen = HashMap::new();
        for (gi, g) in file.group.iter().enumerate() {
            let at = format!("group {} ({:?})", gi + 1, g.name);
            if g.name.is_empty() {
                return Err(format!("{at}: name is empty"));
            }
            if seen.insert(g.name.clone(), gi).is_some() {
                return Err(format!("{at}: duplicate group name"));
            }
            if g.count == 0 {
                return Err(format!("{at}: count must be at least 1"));
            }
            if g.gpus as usize > MAX_GPUS_PER_NODE {
                return Err(format!(
                    "{at}: gpus = {} exceeds {MAX_GPUS_PER_NODE} per node",
                    g.gpus
                ));
            }
            let model = match (&g.gpu_model, g.gpus) {
                (None, 0) => None,
                (Some(m), 0) => return Err(format!("{at}: gpu_model {m:?} with gpus = 0")),
                (None, _) => return Err(format!("{at}: gpus = {} needs a gpu_model", g.gpus)),
                (Some(m), _) => Some(models.intern(m).map_err(|e| format!("{at}: {e}"))?),
            };
            if !(g.cpu_cores.is_finite() && g.cpu_cores > 0.0) {
                return Err(format!("{at}: cpu_cores must be positive"));
            }
            if !(g.memory_gib.is_finite() && g.memory_gib > 0.0) {
                return Err(format!("{at}: memory_gib must be positive"));
            }
            if g.rack.is_some() && g.nodes_per_rack.is_some() {
                return Err(format!(
                    "{at}: give either rack or nodes_per_rack, not both"
                ));
            }
            if g.nodes_per_rack == Some(0) {
                return Err(format!("{at}: nodes_per_rack must be at least 1"));
            }
            let failure = match (g.mtbf_h, g.mttr_h) {
                (None, None) => None,
                (Some(b), Some(r)) if b.is_finite() && b > 0.0 && r.is_finite() && r > 0.0 => {
                    Some(Failure {
                        mtbf_ms: b * 3_600_000.0,
                        mttr_ms: r * 3_600_000.0,
                    })
                }
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: mtbf_h and mttr_h must be positive hours"))
                }
                _ => return Err(format!("{at}: give both mtbf_h and mttr_h, or neither")),
            };
            for i in 0..g.count {
                let rack = match (&g.rack, g.nodes_per_rack) {
                    (Some(r), _) => r.clone(),
                    (None, Some(k)) => format!("{}-r{}", g.name, i / k),
                    (None, None) => g.name.clone(),
                };
                let next = rack_ids.len() as u32;
                let rid = *rack_ids.entry(rack.clone()).or_insert_with(|| {
                    rack_names.push(rack);
                    next
                });
                racks.push(rid);
                zones.push(g.zone.clone().unwrap_or_default());
                failures.push(failure);
                nodes.push(NodeSpec {
                    name: format!("{}-{i}", g.name),
                    cpu_milli: (g.cpu_cores * 1000.0).round() as u64,
                    memory_mib: (g.memory_gib * 1024.0).round() as u64,
                    gpus: g.gpus as u8,
                    model,
                });
            }
        }
        let mut tenants: Vec<TenantDef> = Vec::new();
        for (ti, t) in file.tenant.iter().enumerate() {
            let at = format!("tenant {} ({:?})", ti + 1, t.name);
            if t.name.is_empty() {
                return Err(format!("{at}: name is empty"));
            }
            if tenants.iter().any(|x| x.name == t.name) {
                return Err(format!("{at}: duplicate tenant name"));
            }
            if !(t.weight.is_finite() && t.weight > 0.0) {
                return Err(format!("{at}: weight must be positive"));
            }
            let mut q = TenantQuota::unlimited(models.len());
            q.weight = t.weight;
            for (model, mq) in &t.quota {
                let Some(id) = models.get(model) else {
                    return Err(format!(
                        "{at}: quota for GPU model {model:?}, which no group has"
                    ));
                };
                let to_milli = |what: &str, v: f64| -> Result<u64, String> {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(format!("{at}: quota.{model}.{what} must be >= 0"));
                    }
                    Ok((v * MILLI_PER_GPU as f64).round() as u64)
                };
                let g = to_milli("guaranteed", mq.guaranteed)?;
                let m = match mq.max {
                    Some(v) => to_milli("max", v)?,
                    None => u64::MAX,
                };
                if g > m {
                    return Err(format!("{at}: quota.{model}: guaranteed exceeds max"));
                }
                q.guaranteed[id.0 as usize] = g;
                q.max[id.0 as usize] = m;
            }
            tenants.push(TenantDef {
                name: t.name.clone(),
                quota: q,
            });
        }
        // Guarantees must be honourable: their sum per model ≤ capacity.
        for m in 0..models.len() {
            let cap: u64 = nodes
                .iter()
                .filter(|n| n.model == Some(ModelId(m as u8)))
                .map(|n| n.gpus as u64 * MILLI_PER_GPU as u64)
                .sum();
            let sum: u64 = tenants.iter().map(|t| t.quota.guaranteed[m]).sum();
            if sum > cap {
                return Err(format!(
                    "guaranteed quotas of model {:?} sum to {} GPUs, capacity is {}",
                    models.name(ModelId(m as u8)),
                    sum as f64 / 1000.0,
                    cap / 1000
                ));
            }
        }
        Ok(Cluster {
            name: file.name.unwrap_or_else(|| "cluster".into()),
            models,
            nodes,
            racks,
            rack_names,
            zones,
            tenants,
            failures,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    #[serde(default)]
    group: Vec<Group>,
    #[serde(default)]
    tenant: Vec<Tenant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    count: u32,
    gpu_model: Option<String>,
    #[serde(default)]
    gpus: u32,
    cpu_cores: f64,
    memory_gib: f64,
    rack: Option<String>,
    nodes_per_rack: Option<u32>,
    zone: Option<String>,
    mtbf_h: Option<f64>,
    mttr_h: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tenant {
    name: String,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    quota: BTreeMap<String, ModelQuota>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelQuota {
    #[serde(default)]
    guaranteed: f64,
    max: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "small"
[[group]]
name = "a"
count = 4
gpu_model = "A100"
gpus = 8
cpu_cores = 64
memory_gib = 512
nodes_per_rack = 2
zone = "z1"
[[group]]
name = "cpu"
count = 1
cpu_cores = 32
memory_gib = 128
[[tenant]]
name = "acme"
weight = 2
quota.A100 = { guaranteed = 8, max = 16 }
"#;

    #[test]
    fn parses_groups_racks_and_quotas() {
        let c = Cluster::parse(SMALL).unwrap();
        assert_eq!(c.nodes.len(), 5);
        assert_eq!(c.gpus(), 32);
        assert_eq!(c.racks, vec![0, 0, 1, 1, 2]);
        assert_eq!(c.rack_names, vec!["a-r0", "a-r1", "cpu"]);
        assert_eq!(c.nodes[0].cpu_milli, 64_000);
        assert_eq!(c.nodes[4].model, None);
        let q = &c.tenants[0].quota;
        assert_eq!((q.weight, q.guaranteed[0], q.max[0]), (2.0, 8000, 16000));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = Cluster::parse("[[group]]\nname='x'\ncount=1\ngpus=8\ncpu_cores=1\nmemory_gib=1\n")
            .unwrap_err();
        assert!(e.contains("needs a gpu_model"), "{e}");
        let e =
            Cluster::parse("[[group]]\nname='x'\ncount=1\ncpu_cores=1\nmemory_gib=1\nbogus=1\n")
                .unwrap_err();
        assert!(e.contains("bogus") && e.contains("line"), "{e}");
        let bad = SMALL.replace("guaranteed = 8", "guaranteed = 40");
        let e = Cluster::parse(&bad).unwrap_err();
        assert!(e.contains("guaranteed exceeds max"), "{e}");
        let bad = SMALL.replace("quota.A100", "quota.H800");
        let e = Cluster::parse(&bad).unwrap_err();
        assert!(e.contains("H800"), "{e}");
    }

    #[test]
    fn example_clusters_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusters");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            let c = Cluster::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.nodes.is_empty());
            if p.file_name().unwrap() == "philly.toml" {
                assert_eq!((c.nodes.len(), c.gpus()), (352, 2816));
            }
            n += 1;
        }
        assert!(n >= 2);
    }
}
