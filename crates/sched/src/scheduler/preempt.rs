//! Starting and stopping jobs, and preemption: who may be a victim, the
//! victim search (one node first, then across nodes for a gang), back-off.
use super::*;

impl Scheduler {
    pub(super) fn note_running(&mut self, j: JobId, now: Time) {
        let e = &self.jobs[j.0 as usize];
        self.tenants[e.spec.tenant.0 as usize].jobs.1 += 1;
        let end = now + e.spec.work.saturating_sub(e.progress);
        let level = self.las_level(e, e.attained) as usize;
        let spot = e.spec.class == Class::Spot;
        self.ends.insert((end, j));
        self.est_ends
            .insert((now + e.spec.estimate().saturating_sub(e.progress), j));
        if self.running_by_level.len() <= level {
            self.running_by_level.resize(level + 1, 0);
        }
        self.running_by_level[level] += 1;
        self.running_spot += spot as usize;
        self.jobs[j.0 as usize].level = level;
    }

    pub(super) fn note_stopped(&mut self, j: JobId) {
        let e = &self.jobs[j.0 as usize];
        self.tenants[e.spec.tenant.0 as usize].jobs.1 -= 1;
        let end = e.started + e.spec.work.saturating_sub(e.progress);
        self.ends.remove(&(end, j));
        self.est_ends
            .remove(&(e.started + e.spec.estimate().saturating_sub(e.progress), j));
        self.running_by_level[e.level] -= 1;
        self.running_spot -= (e.spec.class == Class::Spot) as usize;
    }

    /// A cheap necessary condition for `p` to have any victim.
    pub(super) fn may_have_victims(&self, p: JobId, now: Time) -> bool {
        let pe = &self.jobs[p.0 as usize];
        match self.policy {
            QueuePolicy::Srtf => self
                .ends
                .last()
                .is_some_and(|&(end, _)| end.saturating_sub(now) > self.remaining(p, now)),
            QueuePolicy::Las { .. } => {
                let lp = self.las_level(pe, pe.attained) as usize;
                self.running_by_level.iter().skip(lp + 1).any(|&c| c > 0)
            }
            QueuePolicy::Classes => pe.spec.class < Class::Spot && self.running_spot > 0,
            QueuePolicy::Drf => true,
            _ => false,
        }
    }

    pub(super) fn mark_started(&mut self, j: JobId, now: Time) {
        if let Some(t) = self.jobs[j.0 as usize].promote_at.take() {
            self.las_promotions.remove(&(t, j));
        }
        self.note_running(j, now);
        let e = &mut self.jobs[j.0 as usize];
        e.state = JobState::Running;
        e.started = now;
        let placements = e.placements.clone();
        self.running.insert(j);
        self.arm_las_wakeup(j, now);
        self.decisions.push(Decision::Start { job: j, placements });
    }

    pub(super) fn start_if_placeable(&mut self, j: JobId, now: Time) -> bool {
        if self.try_place(j) {
            self.dequeue(j);
            self.mark_started(j, now);
            true
        } else {
            false
        }
    }

    /// Stop running job `j` at `now` and put it back in the queue.
    pub(super) fn preempt(&mut self, j: JobId, now: Time) {
        self.stop_and_queue(j, now, false);
    }

    /// Stop running job `j` and queue it again, keeping its work up to its
    /// last checkpoint. A preemption (`crashed` false) with no checkpoint
    /// interval suspends it exactly; a crash (its node lost) with none
    /// loses all its work: it starts over, as a retried job does.
    pub(super) fn stop_and_queue(&mut self, j: JobId, now: Time, crashed: bool) {
        let e = &self.jobs[j.0 as usize];
        let run = now.saturating_sub(e.started);
        let done = e.progress + run;
        let kept = match done.checked_div(self.opts.checkpoint_ms) {
            None if crashed => 0,
            None => done,
            Some(k) => (k * self.opts.checkpoint_ms).max(e.progress),
        };
        self.disarm_las_wakeup(j);
        self.note_stopped(j);
        self.running.remove(&j);
        let e = &mut self.jobs[j.0 as usize];
        e.attained += run;
        e.progress = kept;
        e.preemptions += 1;
        e.allocs = Vec::new();
        e.placements = Vec::new();
        e.model = None;
        self.decisions.push(Decision::Preempt {
            job: j,
            lost_ms: done - kept,
        });
        self.enqueue(j);
        if let QueuePolicy::Las { starve_factor, .. } = self.policy {
            let e = &self.jobs[j.0 as usize];
            if starve_factor > 0 && e.key.0 > 0 {
                let at = now + starve_factor * run.max(1000);
                self.las_promotions.insert((at, j));
                self.jobs[j.0 as usize].promote_at = Some(at);
            }
        }
    }

    /// If running job `v` may be preempted in favour of pending job `p`, its
    /// rank among victims (smaller = preempted first).
    pub(super) fn victim_rank(&self, p: JobId, v: JobId, now: Time) -> Option<(u64, u64)> {
        let (pe, ve) = (&self.jobs[p.0 as usize], &self.jobs[v.0 as usize]);
        let newest_first = u64::MAX - ve.started;
        match self.policy {
            QueuePolicy::Srtf => {
                // Pending p's remaining work is fixed: work − progress.
                let rp = pe.spec.work.saturating_sub(pe.progress);
                let rv =
                    (ve.started + ve.spec.work.saturating_sub(ve.progress)).saturating_sub(now);
                (rv > rp).then_some((u64::MAX - rv, newest_first))
            }
            QueuePolicy::Las { .. } => {
                let lv = self.las_level(ve, ve.attained + now.saturating_sub(ve.started));
                (lv > self.las_level(pe, pe.attained)).then_some((u64::MAX - lv, newest_first))
            }
            QueuePolicy::Classes => (ve.spec.class == Class::Spot && pe.spec.class < Class::Spot)
                .then_some((0, newest_first)),
            QueuePolicy::Drf => {
                let m = ve.model?;
                if ve.spec.tenant == pe.spec.tenant
                    || !self.reclaim_models.accepts(Some(m))
                    || !self.over_guarantee(v)
                {
                    return None;
                }
                let vt = &self.tenants[ve.spec.tenant.0 as usize];
                let over = vt.used[m.0 as usize] - vt.quota.guaranteed[m.0 as usize];
                Some((u64::MAX - over, newest_first))
            }
            _ => None,
        }
    }

    /// Try to start pending job `p` by preempting running jobs that rank below
    /// it. First choice: the one node where the fewest victims (then the fewest
    /// GPUs) make room for the whole job; otherwise (a gang spanning nodes)
    /// victims in rank order across the cluster. Victims whose resources turn
    /// out not to be needed are spared.
    pub(super) fn preempt_for(&mut self, p: JobId, now: Time) -> bool {
        if self.preempt_failures >= self.opts.preempt_attempts_per_pass
            || !self.may_have_victims(p, now)
        {
            return false;
        }
        let mk = self.memo_key(p);
        let prio = self.jobs[p.0 as usize].key.0;
        self.preempt_backoff.retain(|b| b.2 > now);
        if self
            .preempt_backoff
            .iter()
            .any(|b| b.0 == mk && prio >= b.1)
        {
            return false;
        }
        let ok = self.preempt_search(p, now);
        if !ok {
            self.preempt_failures += 1;
            if self.opts.preempt_backoff_ms > 0 {
                self.preempt_backoff
                    .push((mk, prio, now + self.opts.preempt_backoff_ms));
            }
        }
        ok
    }

    pub(super) fn preempt_search(&mut self, p: JobId, now: Time) -> bool {
        let spec = &self.jobs[p.0 as usize].spec;
        let Some(models) = self.allowed_models(spec) else {
            return false;
        };
        let req = Request { models, ..spec.req };
        let tasks = spec.tasks;
        let need = spec.gpu_milli();
        // Plan A: one node.
        // Cost of a node's victims: the least expendable victim's rank first
        // (as kube-scheduler minimises the highest victim priority), then
        // their number, then their GPUs.
        type Cost = ((u64, u64), usize, u64, NodeId);
        let mut best: Option<(Cost, Vec<JobId>)> = None;
        // Every eligible victim, grouped by node (a gang member appears
        // under each of its nodes), each group most expendable first.
        let mut by_node: Vec<(NodeId, (u64, u64), JobId)> = Vec::new();
        for n in 0..self.ledger.len() {
            let nspec = &self.ledger.specs()[n];
            if need > 0 && (nspec.gpus == 0 || !models.accepts(nspec.model)) {
                continue;
            }
            let from = by_node.len();
            for &v in &self.node_jobs[n] {
                if let Some(r) = self.victim_rank(p, v, now) {
                    by_node.push((n as NodeId, r, v));
                }
            }
            by_node[from..].sort_unstable();
        }
        if by_node.is_empty() {
            return false;
        }
        let mut i = 0;
        while i < by_node.len() {
            let n = by_node[i].0 as usize;
            let mut j = i;
            while j < by_node.len() && by_node[j].0 as usize == n {
                j += 1;
            }
            let group = &by_node[i..j];
            i = j;
            let (nspec, st) = (&self.ledger.specs()[n], &self.ledger.states()[n]);
            if need > 0 && (nspec.gpus == 0 || !models.accepts(nspec.model)) {
                continue;
            }
            let mut what_if = st.clone();
            let mut chosen = Vec::new();
            let mut gpu = 0u64;
            for &(_, rank, v) in group {
                let ve = &self.jobs[v.0 as usize];
                for a in &ve.allocs {
                    let al = self.ledger.allocation(*a).expect("live allocation");
                    if al.node as usize == n {
                        what_if.credit(al);
                    }
                }
                chosen.push(v);
                gpu += ve.spec.gpu_milli();
                if fit_count(nspec, &what_if, &req, tasks) >= tasks {
                    let cost = (rank, chosen.len(), gpu, n as NodeId);
                    if best.as_ref().is_none_or(|b| cost < b.0) {
                        best = Some((cost, chosen.clone()));
                    }
                    break;
                }
            }
        }
        let victims: Vec<JobId> = match best {
            Some((_, v)) => v,
            None if tasks > 1 => {
                // Plan B: a gang across nodes. Per node: how many tasks fit now
                // and after evicting every eligible victim there; take nodes
                // needing no eviction first, then those with the fewest
                // victims, until the gang fits.
                // (victims needed, room after, node, victims as a range of by_node)
                type Room = (usize, std::cmp::Reverse<u32>, NodeId, (usize, usize));
                let mut nodes: Vec<Room> = Vec::new();
                let mut at = 0usize;
                for n in 0..self.ledger.len() {
                    let lo = at;
                    while at < by_node.len() && by_node[at].0 as usize == n {
                        at += 1;
                    }
                    let (nspec, st) = (&self.ledger.specs()[n], &self.ledger.states()[n]);
                    if need > 0 && (nspec.gpus == 0 || !models.accepts(nspec.model)) {
                        continue;
                    }
                    let k_now = fit_count(nspec, st, &req, tasks);
                    let mut k_after = k_now;
                    if at > lo {
                        let mut what_if = st.clone();
                        for &(_, _, v) in &by_node[lo..at] {
                            for a in &self.jobs[v.0 as usize].allocs {
                                let al = self.ledger.allocation(*a).expect("live allocation");
                                if al.node as usize == n {
                                    what_if.credit(al);
                                }
                            }
                        }
                        k_after = fit_count(nspec, &what_if, &req, tasks);
                    }
                    if k_after == 0 {
                        continue;
                    }
                    let range = if k_now >= k_after { (lo, lo) } else { (lo, at) };
                    nodes.push((
                        range.1 - range.0,
                        std::cmp::Reverse(k_after),
                        n as NodeId,
                        range,
                    ));
                }
                // Group by model: a gang runs on one GPU model.
                let model_of = |n: NodeId| self.ledger.specs()[n as usize].model;
                nodes.sort_by_key(|x| (model_of(x.2), x.0, x.1, x.2));
                let mut pick: Option<(usize, Vec<JobId>)> = None;
                let mut i = 0;
                while i < nodes.len() {
                    let m = model_of(nodes[i].2);
                    let (mut sum, mut vs, mut count) = (0u32, Vec::new(), 0usize);
                    let mut j = i;
                    let mut done = false;
                    while j < nodes.len() && model_of(nodes[j].2) == m {
                        if !done {
                            sum += nodes[j].1 .0;
                            count += nodes[j].0;
                            let (lo, hi) = nodes[j].3;
                            vs.extend(by_node[lo..hi].iter().map(|x| x.2));
                            done = sum >= tasks;
                        }
                        j += 1;
                    }
                    if done && pick.as_ref().is_none_or(|b| count < b.0) {
                        pick = Some((count, vs));
                    }
                    i = j;
                }
                let Some((_, mut vs)) = pick else {
                    return false;
                };
                vs.sort_unstable();
                vs.dedup();
                vs.sort_by_key(|&v| self.victim_rank(p, v, now));
                vs
            }
            None => return false,
        };
        let mut released = Vec::new();
        let mut placed = false;
        for v in victims {
            if self.policy == QueuePolicy::Drf && !self.over_guarantee(v) {
                continue;
            }
            self.release_job(v);
            released.push(v);
            if (need == 0 || self.free_in(models) >= need) && self.try_place(p) {
                placed = true;
                break;
            }
        }
        if !placed {
            for &v in released.iter().rev() {
                let ok = self.retake_job(v);
                assert!(ok, "re-taking a tentatively released job failed");
            }
            return false;
        }
        for &v in released.iter().rev() {
            if !self.retake_job(v) {
                self.preempt(v, now);
            }
        }
        self.dequeue(p);
        self.mark_started(p, now);
        // Preempted victims may have left more free than `p` took.
        self.failed.clear();
        self.memo_epoch += 1;
        true
    }

    pub(super) fn over_guarantee(&self, v: JobId) -> bool {
        let e = &self.jobs[v.0 as usize];
        let Some(m) = e.model else { return false };
        let t = &self.tenants[e.spec.tenant.0 as usize];
        t.used[m.0 as usize] > t.quota.guaranteed[m.0 as usize]
    }
}
