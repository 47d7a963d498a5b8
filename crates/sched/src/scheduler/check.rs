//! [`Scheduler::check_indexes`]: every index the scheduler keeps beside the
//! ledger, recomputed from the ledger and the running jobs and compared.
//! For tests and debugging (O(nodes + jobs)); never called by a pass.

use std::collections::{BTreeSet, HashMap};

use suanli_core::{NodeId, MAX_GPUS_PER_NODE};

use super::{JobState, Scheduler};

impl Scheduler {
    /// Check that the per-model free GPU milli, the whole-GPU histograms,
    /// the node state groups and their representatives, and every tenant's
    /// usage per model mirror the ledger and the running jobs; that the
    /// queues by shape hold exactly the pending jobs; and the
    /// ledger's own [`check`](suanli_core::Ledger::check). The first
    /// difference found is the error.
    pub fn check_indexes(&self) -> Result<(), String> {
        self.ledger.check().map_err(|e| format!("ledger: {e}"))?;
        let mut free = vec![0u64; self.n_models];
        let mut open = vec![0u64; self.n_models];
        let mut hist = vec![[0u32; MAX_GPUS_PER_NODE + 1]; self.n_models];
        let mut groups: HashMap<_, BTreeSet<NodeId>> = HashMap::new();
        for &node in &self.all_nodes {
            let (spec, st) = self.ledger.node(node).ok_or("a node left the ledger")?;
            if spec.gpus == 0 {
                continue;
            }
            let retired = self.retired[node as usize];
            if retired && (!st.is_closed() || st.total_gpu_left() as u64 != spec.gpus as u64 * 1000)
            {
                return Err(format!(
                    "retired node {node} is open or holds an allocation"
                ));
            }
            let (full, key) = self.node_index(node);
            if let Some(m) = spec.model {
                if !retired {
                    free[m.0 as usize] += st.total_gpu_left() as u64;
                }
                if !st.is_closed() {
                    open[m.0 as usize] += spec.gpus as u64 * suanli_core::MILLI_PER_GPU as u64;
                }
                if self.node_full[node as usize] != full {
                    return Err(format!(
                        "node {node}: {} fully free GPUs indexed, {full} in the ledger",
                        self.node_full[node as usize]
                    ));
                }
                hist[m.0 as usize][full as usize] += 1;
            }
            if self.node_key[node as usize] != key {
                return Err(format!("node {node}: its state group is stale"));
            }
            if let Some(k) = key {
                groups.entry(k).or_default().insert(node);
            }
        }
        if free != self.free_milli {
            return Err(format!(
                "free GPU milli by model: indexed {:?}, ledger {free:?}",
                self.free_milli
            ));
        }
        if open != self.open_milli {
            return Err(format!(
                "open GPU milli by model: indexed {:?}, ledger {open:?}",
                self.open_milli
            ));
        }
        if hist != self.full_hist {
            return Err("the whole-GPU histograms differ from the ledger".to_string());
        }
        if groups != self.groups {
            return Err("the node state groups differ from the ledger".to_string());
        }
        let reps: BTreeSet<NodeId> = groups.values().filter_map(|g| g.first().copied()).collect();
        if reps != self.reps {
            return Err("the groups' representatives are stale".to_string());
        }
        let mut used: Vec<Vec<u64>> = self
            .tenants
            .iter()
            .map(|_| vec![0; self.n_models])
            .collect();
        for &j in &self.running {
            let e = &self.jobs[j.0 as usize];
            if e.state != JobState::Running {
                return Err(format!("job {}: in the running set but {:?}", j.0, e.state));
            }
            if let Some(m) = e.model {
                used[e.spec.tenant.0 as usize][m.0 as usize] += e.spec.gpu_milli();
            }
        }
        let mut jobs = vec![(0u64, 0u64); self.tenants.len()];
        for e in &self.jobs {
            let t = e.spec.tenant.0 as usize;
            match e.state {
                JobState::Pending => jobs[t].0 += 1,
                JobState::Running => jobs[t].1 += 1,
                _ => {}
            }
        }
        for (t, (n, tenant)) in jobs.iter().zip(&self.tenants).enumerate() {
            if *n != tenant.jobs {
                return Err(format!(
                    "tenant {t}: (pending, running) counted {:?}, the jobs say {n:?}",
                    tenant.jobs
                ));
            }
        }
        for (t, (u, tenant)) in used.iter().zip(&self.tenants).enumerate() {
            let indexed = (0..self.n_models).map(|m| tenant.used.get(m).copied().unwrap_or(0));
            if !indexed.eq(u.iter().copied()) {
                return Err(format!(
                    "tenant {t}: usage indexed {:?}, running jobs hold {u:?}",
                    tenant.used
                ));
            }
        }
        if self.policy != super::QueuePolicy::Drf {
            let queued = self.by_shape.total();
            if queued != self.pending.len() {
                return Err(format!(
                    "{queued} jobs queued by shape, {} pending",
                    self.pending.len()
                ));
            }
            for k in &self.pending {
                let e = &self.jobs[k.2 .0 as usize];
                if !self.by_shape.holds(e.shape, k) {
                    return Err(format!("job {}: missing from its shape's queue", k.2 .0));
                }
            }
        }
        Ok(())
    }
}
