//! What the loop tells people: why a job is pending (worded for the
//! viewer) and the nodes with what is allocated on them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use suanli_core::{ModelId, ModelSet};
use suanli_sched::scheduler::{WhyPending, WHY_AHEAD_CAP};

use super::core::Core;
use super::NodeView;
use suanli_api::{PoolModel, PoolView};

impl Core {
    pub(super) fn model_names(&self, set: ModelSet) -> String {
        if set.is_any() {
            return "any model".to_string();
        }
        let names: Vec<&str> = (0..self.models.len())
            .filter(|&i| set.accepts(Some(ModelId(i as u8))))
            .map(|i| self.models.name(ModelId(i as u8)))
            .collect();
        names.join("|")
    }

    /// What one task of `req` needs, in words: "2 GPUs (H200), 8 CPUs
    /// and 65536 MiB", "0.5 of a GPU (any model), 1 CPU and 1024 MiB".
    pub(super) fn task_needs(&self, req: &suanli_core::Request, models: ModelSet) -> String {
        let num = |milli: u64| {
            let g = milli as f64 / 1000.0;
            if g.fract() == 0.0 {
                format!("{g:.0}")
            } else {
                format!("{g}")
            }
        };
        let of = if models.is_any() {
            "any model".to_string()
        } else {
            self.model_names(models)
        };
        let gpus = match req.num_gpu {
            0 => String::new(),
            _ if req.is_share() => format!("{} of a GPU ({of}), ", num(req.gpu_milli as u64)),
            1 => format!("1 GPU ({of}), "),
            n => format!("{n} GPUs ({of}), "),
        };
        let cpus = num(req.cpu_milli);
        let s = if cpus == "1" { "" } else { "s" };
        format!("{gpus}{cpus} CPU{s} and {} MiB", req.memory_mib)
    }

    pub(super) fn explain(&self, ids: &[i64], viewer: Option<i64>) -> HashMap<i64, String> {
        let mut out = HashMap::new();
        for id in ids {
            let Some(l) = self.jobs.get(id) else { continue };
            let Some(why) = self.sched.why_pending(l.handle) else {
                continue;
            };
            let spec = self.sched.spec(l.handle);
            let gpus = |milli: u64| {
                let g = milli as f64 / 1000.0;
                if g.fract() == 0.0 {
                    format!("{g:.0}")
                } else {
                    format!("{g}")
                }
            };
            let text = match why {
                WhyPending::Quota {
                    model,
                    used,
                    max,
                    need,
                } => format!(
                    "quota: tenant {} uses {}/{} {} GPUs and this job needs {} more",
                    self.tenant_names
                        .get(&l.tenant_id)
                        .map_or("?", String::as_str),
                    gpus(used),
                    gpus(max),
                    self.models.name(model),
                    gpus(need)
                ),
                WhyPending::Nodes { models, tasks, fit } => {
                    let what = self.task_needs(&spec.req, models);
                    let have = if self.nodes.is_empty() {
                        "no node has joined the pool yet".to_string()
                    } else if fit == 0 {
                        "no ready node can hold it".to_string()
                    } else {
                        format!("the ready nodes could hold only {fit} of the gang's {tasks} tasks")
                    };
                    format!(
                        "nodes: {have} (each task needs {what}); it waits for nodes to join, \
                         come back or be undrained"
                    )
                }
                WhyPending::Resources { models, tasks, fit } => {
                    let what = self.task_needs(&spec.req, models);
                    if tasks == 1 {
                        format!("resources: no node has {what} free now; running jobs hold them")
                    } else {
                        format!(
                            "resources: only {fit} of the gang's {tasks} tasks fit now (each \
                             needs {what}); running jobs hold the rest"
                        )
                    }
                }
                WhyPending::Queue { ahead: 0, .. } => {
                    "queued: resources are free; it starts at the next pass".to_string()
                }
                WhyPending::Queue { ahead, own } => {
                    // Counted up to a cap: that many means at least that many.
                    let n = |k: usize| {
                        if ahead >= WHY_AHEAD_CAP {
                            format!("{k}+")
                        } else {
                            k.to_string()
                        }
                    };
                    match viewer {
                        None => {
                            format!("priority: waiting behind {} higher-priority jobs", n(ahead))
                        }
                        Some(_) if own == ahead => format!(
                            "priority: waiting behind {} higher-priority jobs of yours",
                            n(own)
                        ),
                        Some(_) => format!(
                            "priority: waiting behind higher-priority jobs ({} of them yours)",
                            n(own)
                        ),
                    }
                }
            };
            out.insert(*id, text);
        }
        out
    }

    /// The pool by GPU model, and the queue's depth (`viewer`'s own jobs
    /// too). O(nodes).
    pub(super) fn pool_view(&self, viewer: Option<i64>) -> PoolView {
        let ledger = self.sched.ledger();
        let mut by_model: BTreeMap<Option<String>, PoolModel> = BTreeMap::new();
        for n in self.nodes.values() {
            let Some((spec, st)) = ledger.node(n.handle) else {
                continue;
            };
            let model = spec.model.map(|m| self.models.name(m).to_string());
            let row = by_model.entry(model.clone()).or_insert(PoolModel {
                model,
                nodes_ready: 0,
                nodes_unavailable: 0,
                gpus: 0,
                gpus_free: 0.0,
                most_free_on_one_node: 0,
            });
            if st.is_closed() || n.node.state != suanli_api::NodeState::Ready {
                row.nodes_unavailable += 1;
                continue;
            }
            row.nodes_ready += 1;
            row.gpus += spec.gpus as u64;
            row.gpus_free += st.total_gpu_left() as f64 / 1000.0;
            row.most_free_on_one_node = row.most_free_on_one_node.max(st.fully_free() as u64);
        }
        let (pending, running) = self.sched_queue();
        let (own_pending, own_running) = viewer
            .and_then(|t| self.tenants.get(&t))
            .map_or((0, 0), |&t| self.sched.tenant_jobs(t));
        PoolView {
            models: by_model.into_values().collect(),
            pending_jobs: pending,
            running_jobs: running,
            your_pending_jobs: own_pending,
            your_running_jobs: own_running,
        }
    }

    fn sched_queue(&self) -> (u64, u64) {
        (
            self.sched.pending_len() as u64,
            self.sched.running_len() as u64,
        )
    }

    pub(super) fn node_views(&self) -> Vec<NodeView> {
        let ledger = self.sched.ledger();
        self.nodes
            .values()
            .map(|n| {
                let (spec, st) = ledger.node(n.handle).expect("node in ledger");
                let cap = spec.gpus as u64 * 1000;
                let jobs = self
                    .on_node
                    .get(&n.node.id)
                    .map_or(0, |t| t.iter().map(|x| x.0).collect::<BTreeSet<_>>().len());
                NodeView {
                    node: n.node.clone(),
                    gpu_milli_allocated: cap - st.total_gpu_left() as u64,
                    cpu_milli_allocated: spec.cpu_milli - st.cpu_free,
                    jobs,
                }
            })
            .collect()
    }
}
