//! Resources: quota admission, the free-capacity indexes (state groups,
//! whole-GPU histogram), allocation and release of a job's tasks, and gang
//! placement.

use suanli_core::GpuMask;

use super::*;

impl Scheduler {
    // ---- resources ---------------------------------------------------------

    /// The GPU models a job may start on now given its tenant's maximum quota.
    pub(super) fn allowed_models(&self, s: &JobSpec) -> Option<ModelSet> {
        let t = &self.tenants[s.tenant.0 as usize];
        if s.req.num_gpu == 0 || !t.limited {
            return Some(s.req.models);
        }
        let need = s.gpu_milli();
        let mut set = ModelSet(0);
        for m in 0..self.n_models {
            let id = ModelId(m as u8);
            if s.req.models.accepts(Some(id))
                && self.capacity_milli[m] > 0
                && t.used[m].saturating_add(need) <= t.quota.max[m]
            {
                set = set.with(id);
            }
        }
        (set.0 != 0).then_some(set)
    }

    /// How many of `tasks` tasks of `req` fit on the open nodes, on one
    /// GPU model for GPU requests: as they are now, or (`empty`) with
    /// nothing running.
    pub(super) fn fit_tasks(&self, req: &Request, tasks: u32, empty: bool) -> u32 {
        if !empty && req.num_gpu > 0 {
            // The common case of a full pool in O(models): no accepted
            // model has a node with the GPUs one task needs free (the
            // indexes count closed nodes too: they only ever say "maybe").
            let maybe = (0..self.n_models)
                .filter(|&m| req.models.accepts(Some(ModelId(m as u8))))
                .any(|m| {
                    if req.is_share() {
                        self.free_milli[m] >= req.gpu_milli as u64
                    } else {
                        let k = (req.num_gpu as usize).min(MAX_GPUS_PER_NODE);
                        self.full_hist[m][k..].iter().any(|&c| c > 0)
                    }
                });
            if !maybe {
                return 0;
            }
        }
        let specs = self.ledger.specs();
        let states = self.ledger.states();
        let mut per_model = vec![0u64; self.n_models.max(1)];
        for n in 0..specs.len() {
            let m = match specs[n].model {
                Some(m) if req.num_gpu > 0 && req.models.accepts(Some(m)) => m.0 as usize,
                _ if req.num_gpu > 0 => continue,
                _ => 0,
            };
            let k = if empty {
                if states[n].is_closed() || self.retired[n] {
                    continue;
                }
                fit_count(&specs[n], &NodeState::empty(&specs[n]), req, tasks)
            } else {
                fit_count(&specs[n], &states[n], req, tasks)
            };
            per_model[m] += k as u64;
        }
        per_model.into_iter().max().unwrap_or(0).min(tasks as u64) as u32
    }

    /// Whether job `j` cannot fit the open nodes even with nothing running:
    /// it waits for nodes (to join, come back or reopen), not for other
    /// jobs, so it holds nobody back (FIFO's head, backfill's reservation).
    /// Cached per shape until the nodes change.
    pub(super) fn waits_for_nodes(&self, j: JobId) -> bool {
        let s = &self.jobs[j.0 as usize].spec;
        self.open_fit(&s.req, s.tasks) < s.tasks
    }

    /// [`Scheduler::fit_tasks`] on empty open nodes, cached per shape until
    /// the nodes change (allocations do not change it).
    pub(super) fn open_fit(&self, req: &Request, tasks: u32) -> u32 {
        let key = (*req, tasks);
        if let Some(&n) = self.open_fit.borrow().get(&key) {
            return n;
        }
        let n = self.fit_tasks(req, tasks, true);
        self.open_fit.borrow_mut().insert(key, n);
        n
    }

    pub(super) fn free_in(&self, models: ModelSet) -> u64 {
        if models.is_any() {
            return self.free_milli.iter().sum();
        }
        (0..self.n_models)
            .filter(|&m| models.0 & (1 << m) != 0)
            .map(|m| self.free_milli[m])
            .sum()
    }

    /// What the indexes should hold for a GPU node, from the ledger: its
    /// count of fully free GPUs (0 when closed) and its state group (none
    /// when closed or full).
    pub(super) fn node_index(&self, node: NodeId) -> (u8, Option<StateKey>) {
        let (_, st) = self.ledger.node(node).expect("node exists");
        let closed = st.is_closed();
        let full = if closed { 0 } else { st.fully_free() as u8 };
        let key = (st.total_gpu_left() > 0 && !closed).then(|| {
            let mut left = [0u16; MAX_GPUS_PER_NODE];
            left[..st.gpu_left().len()].copy_from_slice(st.gpu_left());
            (
                self.shape_class[node as usize],
                st.cpu_free,
                st.mem_free,
                left,
            )
        });
        (full, key)
    }

    pub(super) fn note_node(&mut self, node: NodeId) {
        let (spec, _) = self.ledger.node(node).expect("node exists");
        if spec.gpus == 0 {
            return;
        }
        let model = spec.model;
        let (full, key) = self.node_index(node);
        // Whole-GPU histogram.
        if let Some(m) = model {
            let h = &mut self.full_hist[m.0 as usize];
            h[self.node_full[node as usize] as usize] -= 1;
            h[full as usize] += 1;
            self.node_full[node as usize] = full;
        }
        if self.node_key[node as usize] != key {
            if let Some(old) = self.node_key[node as usize].take() {
                let g = self.groups.get_mut(&old).expect("group of node");
                let was_rep = g.first() == Some(&node);
                g.remove(&node);
                if was_rep {
                    self.reps.remove(&node);
                    if let Some(&f) = g.first() {
                        self.reps.insert(f);
                    }
                }
                if g.is_empty() {
                    self.groups.remove(&old);
                }
            }
            if let Some(k) = key {
                let g = self.groups.entry(k).or_default();
                let before = g.first().copied();
                g.insert(node);
                if before != g.first().copied() {
                    if let Some(b) = before {
                        self.reps.remove(&b);
                    }
                    self.reps.insert(node);
                }
                self.node_key[node as usize] = Some(k);
            }
        }
        let (spec, st) = self.ledger.node(node).expect("node exists");
        let closed = st.is_closed();
        let is_idle = st.cpu_free == spec.cpu_milli
            && st.mem_free == spec.memory_mib
            && st.total_gpu_left() == spec.gpus as u32 * MILLI_PER_GPU as u32;
        let c = self.shape_class[node as usize] as usize;
        if is_idle && !closed {
            self.open.remove(&node);
            self.idle[c].insert(node);
        } else {
            self.idle[c].remove(&node);
            if st.total_gpu_left() > 0 && !closed {
                self.open.insert(node);
            } else {
                self.open.remove(&node);
            }
        }
    }

    pub(super) fn alloc_one(&mut self, req: &Request, p: Placement) -> AllocId {
        let id = self
            .ledger
            .allocate(req, p.node, p.gpus)
            .expect("placement policy returned an infeasible placement");
        if let Some(m) = self.ledger.specs()[p.node as usize].model {
            self.free_milli[m.0 as usize] -= req.total_gpu_milli();
        }
        self.note_node(p.node);
        id
    }

    pub(super) fn free_one(&mut self, id: AllocId) {
        let a = self.ledger.release(id).expect("live allocation");
        if let Some(m) = self.ledger.specs()[a.node as usize].model {
            self.free_milli[m.0 as usize] += a.gpus.count() as u64 * a.gpu_milli as u64;
        }
        self.note_node(a.node);
    }

    pub(super) fn index_job(&mut self, j: JobId) {
        for p in &self.jobs[j.0 as usize].placements {
            let l = &mut self.node_jobs[p.node as usize];
            if !l.contains(&j) {
                l.push(j);
            }
        }
    }

    pub(super) fn unindex_job(&mut self, j: JobId) {
        for p in &self.jobs[j.0 as usize].placements {
            self.node_jobs[p.node as usize].retain(|&x| x != j);
        }
    }

    /// Release a running job's allocations and quota usage (state unchanged).
    pub(super) fn release_job(&mut self, j: JobId) {
        self.unindex_job(j);
        let allocs = std::mem::take(&mut self.jobs[j.0 as usize].allocs);
        for a in &allocs {
            self.free_one(*a);
        }
        let e = &self.jobs[j.0 as usize];
        if let Some(m) = e.model {
            let need = e.spec.gpu_milli();
            self.tenants[e.spec.tenant.0 as usize].used[m.0 as usize] -= need;
        }
        self.jobs[j.0 as usize].allocs = allocs;
    }

    /// Re-take exactly the placements a job held (after a tentative release);
    /// all-or-nothing.
    pub(super) fn retake_job(&mut self, j: JobId) -> bool {
        let e = &self.jobs[j.0 as usize];
        let req = e.spec.req;
        let placements = e.placements.clone();
        let mut got = Vec::with_capacity(placements.len());
        for p in &placements {
            match self.ledger.allocate(&req, p.node, p.gpus) {
                Ok(id) => {
                    if let Some(m) = self.ledger.specs()[p.node as usize].model {
                        self.free_milli[m.0 as usize] -= req.total_gpu_milli();
                    }
                    self.note_node(p.node);
                    got.push(id);
                }
                Err(_) => {
                    for id in got {
                        self.free_one(id);
                    }
                    return false;
                }
            }
        }
        let e = &mut self.jobs[j.0 as usize];
        e.allocs = got;
        if let Some(m) = e.model {
            let need = e.spec.gpu_milli();
            self.tenants[e.spec.tenant.0 as usize].used[m.0 as usize] += need;
        }
        self.index_job(j);
        true
    }

    /// Try to place job `j` now; on success its allocations are taken (the
    /// job is not yet marked running).
    pub(super) fn try_place(&mut self, j: JobId) -> bool {
        let spec = &self.jobs[j.0 as usize].spec;
        let Some(models) = self.allowed_models(spec) else {
            return false;
        };
        let need = spec.gpu_milli();
        if need > 0 && self.free_in(models) < need {
            return false;
        }
        let tasks = spec.tasks;
        let req = Request { models, ..spec.req };
        if req.num_gpu > 0 && !req.is_share() {
            // Room for whole-GPU tasks, by the histogram (ignores CPU/memory).
            let k = req.num_gpu as usize;
            let mut room = 0u64;
            for (m, h) in self.full_hist.iter().enumerate() {
                if models.accepts(Some(ModelId(m as u8))) {
                    room += (k..h.len())
                        .map(|c| h[c] as u64 * (c / k) as u64)
                        .sum::<u64>();
                }
            }
            if room < tasks as u64 {
                return false;
            }
        }
        let mut order = std::mem::take(&mut self.order_buf);
        order.clear();
        if req.num_gpu == 0 || tasks > 1 {
            // A gang weighs racks: every node counts (those without room
            // fail the fit test), in id order.
            order.extend_from_slice(&self.all_nodes);
        } else if self.opts.group_nodes && self.placement.same_for_equal_free() {
            order.extend(self.reps.iter().copied());
        } else {
            order.extend(self.open.iter().copied());
            for set in &self.idle {
                order.extend(set.iter().copied());
            }
            order.sort_unstable();
        }
        let placed = if tasks == 1 {
            self.placement
                .place(&self.ledger, &req, &order)
                .map(|p| vec![(p.node, 1u32, Some(p.gpus))])
        } else {
            self.plan_gang(&req, tasks, &order)
        };
        self.order_buf = order;
        let Some(plan) = placed else {
            return false;
        };
        let mut allocs = Vec::with_capacity(tasks as usize);
        let mut placements = Vec::with_capacity(tasks as usize);
        for (node, count, first) in plan {
            for i in 0..count {
                let p = match (i, first) {
                    (0, Some(g)) => Placement { node, gpus: g },
                    _ => self
                        .placement
                        .place(&self.ledger, &req, &[node])
                        .expect("gang plan counted a task slot that is not there"),
                };
                allocs.push(self.alloc_one(&req, p));
                placements.push(p);
            }
        }
        debug_assert_eq!(allocs.len(), tasks as usize);
        let model = if req.num_gpu > 0 {
            self.ledger.specs()[placements[0].node as usize].model
        } else {
            None
        };
        let e = &mut self.jobs[j.0 as usize];
        e.allocs = allocs;
        e.placements = placements;
        e.model = model;
        if let Some(m) = model {
            let need = e.spec.gpu_milli();
            self.tenants[e.spec.tenant.0 as usize].used[m.0 as usize] += need;
        }
        self.index_job(j);
        true
    }

    /// Where a gang of `tasks` copies of `req` goes: one node if any can hold
    /// them all (chosen by the placement policy), else the fewest nodes of one
    /// rack, else the fewest nodes of one GPU model. Returns (node, tasks there,
    /// devices of the first task when the placement policy chose them).
    pub(super) fn plan_gang(
        &mut self,
        req: &Request,
        tasks: u32,
        order: &[NodeId],
    ) -> Option<Vec<(NodeId, u32, Option<GpuMask>)>> {
        let specs = self.ledger.specs();
        let states = self.ledger.states();
        // Group key (model, rack) of a node.
        let key = |n: NodeId| {
            let m = specs[n as usize].model.map_or(0, |m| m.0 as u32 + 1);
            (m, self.racks[n as usize])
        };
        // (group key, room first, node): sorted, the groups in key order
        // with their roomiest nodes first.
        let mut cands: Vec<((u32, u32), std::cmp::Reverse<u32>, NodeId)> = Vec::new();
        let mut whole: Vec<NodeId> = Vec::new();
        // Whole GPUs: a node with fewer fully free GPUs than a task takes
        // cannot hold one (the same answer as `fits`, from an array).
        let min_full = if req.num_gpu > 0 && !req.is_share() {
            req.num_gpu
        } else {
            0
        };
        for &n in order {
            if self.node_full[n as usize] < min_full {
                continue;
            }
            let (s, st) = (&specs[n as usize], &states[n as usize]);
            if !st.fits(s, req) {
                continue;
            }
            let k = fit_count(s, st, req, tasks);
            if k >= tasks {
                whole.push(n);
            }
            cands.push((key(n), std::cmp::Reverse(k), n));
        }
        if !whole.is_empty() {
            let p = self.placement.place(&self.ledger, req, &whole)?;
            return Some(vec![(p.node, tasks, Some(p.gpus))]);
        }
        // Group by (model, rack); within a group take the roomiest nodes
        // first. Keys end with the node id: an unstable sort is exact.
        cands.sort_unstable();
        let cands: Vec<(NodeId, u32)> = cands.into_iter().map(|(_, k, n)| (n, k.0)).collect();
        let mut best: Option<(usize, usize, usize)> = None; // (nodes, start, end)
        let mut i = 0;
        while i < cands.len() {
            let g = key(cands[i].0);
            let mut j = i;
            let mut sum = 0u32;
            let mut need_nodes = None;
            while j < cands.len() && key(cands[j].0) == g {
                sum += cands[j].1;
                if need_nodes.is_none() && sum >= tasks {
                    need_nodes = Some(j - i + 1);
                }
                j += 1;
            }
            if let Some(nn) = need_nodes {
                if best.is_none_or(|b| nn < b.0) {
                    best = Some((nn, i, i + nn));
                }
            }
            i = j;
        }
        let chosen: Vec<(NodeId, u32)> = match best {
            Some((_, s, e)) => cands[s..e].to_vec(),
            None => {
                // Span racks, within one GPU model.
                let mut by_model: Vec<(u32, NodeId, u32)> =
                    cands.iter().map(|&(n, k)| (key(n).0, n, k)).collect();
                by_model.sort_unstable_by_key(|&(m, n, k)| (m, std::cmp::Reverse(k), n));
                let mut pick: Option<(usize, usize, usize)> = None;
                let mut i = 0;
                while i < by_model.len() {
                    let m = by_model[i].0;
                    let mut j = i;
                    let mut sum = 0;
                    let mut got = None;
                    while j < by_model.len() && by_model[j].0 == m {
                        sum += by_model[j].2;
                        if got.is_none() && sum >= tasks {
                            got = Some(j - i + 1);
                        }
                        j += 1;
                    }
                    if let Some(nn) = got {
                        if pick.is_none_or(|b| nn < b.0) {
                            pick = Some((nn, i, i + nn));
                        }
                    }
                    i = j;
                }
                let (_, s, e) = pick?;
                by_model[s..e].iter().map(|&(_, n, k)| (n, k)).collect()
            }
        };
        let mut left = tasks;
        let mut plan = Vec::with_capacity(chosen.len());
        for (n, k) in chosen {
            let take = k.min(left);
            plan.push((n, take, None));
            left -= take;
        }
        debug_assert_eq!(left, 0);
        Some(plan)
    }
}

/// How many copies of `req` fit on this node now (at most `cap`).
pub fn fit_count(spec: &NodeSpec, st: &NodeState, req: &Request, cap: u32) -> u32 {
    if st.is_closed() {
        return 0;
    }
    let mut k = cap as u64;
    if let Some(c) = st.cpu_free.checked_div(req.cpu_milli) {
        k = k.min(c);
    }
    if let Some(m) = st.mem_free.checked_div(req.memory_mib) {
        k = k.min(m);
    }
    if req.num_gpu > 0 {
        if spec.gpus == 0 || !req.models.accepts(spec.model) {
            return 0;
        }
        let slots: u64 = if req.is_share() {
            st.gpu_left()
                .iter()
                .map(|&l| (l / req.gpu_milli) as u64)
                .sum()
        } else {
            st.fully_free() as u64 / req.num_gpu as u64
        };
        k = k.min(slots);
    }
    k as u32
}
