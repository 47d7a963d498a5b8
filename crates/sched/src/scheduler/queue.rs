//! Queue bookkeeping and the scheduling passes: keys per policy, 2D-LAS
//! levels and wake-ups, the ordered pass (FIFO, SJF, SRTF, LAS, classes),
//! DRF with reclaim, and EASY backfill.
use super::*;

impl Scheduler {
    // ---- queue bookkeeping ------------------------------------------------

    pub(super) fn las_level(&self, e: &Entry, attained: Time) -> u64 {
        let QueuePolicy::Las {
            thresholds_gpu_s, ..
        } = &self.policy
        else {
            return 0;
        };
        let attained = attained.saturating_sub(e.las_offset);
        let gpu_ms = attained as u128 * e.spec.gpu_milli() as u128 / MILLI_PER_GPU as u128;
        thresholds_gpu_s
            .iter()
            .filter(|&&t| gpu_ms >= t as u128 * 1000)
            .count() as u64
    }

    pub(super) fn enqueue(&mut self, j: JobId) {
        self.seq += 1;
        let e = &self.jobs[j.0 as usize];
        let s = &e.spec;
        let key = match &self.policy {
            QueuePolicy::Fifo | QueuePolicy::Backfill | QueuePolicy::Drf => (s.submit, self.seq, j),
            QueuePolicy::Sjf => (s.work, s.submit, j),
            QueuePolicy::Srtf => (s.work.saturating_sub(e.progress), s.submit, j),
            QueuePolicy::Las { .. } => (self.las_level(e, e.attained), s.submit, j),
            QueuePolicy::Classes => (s.class as u64, s.submit, j),
        };
        let cpu_only = s.req.num_gpu == 0;
        let tenant = s.tenant.0 as usize;
        let mut shape = 0;
        if self.policy == QueuePolicy::Drf {
            self.tenants[tenant].pending.insert((key.0, j));
        } else {
            self.pending.insert(key);
            shape = self.by_shape.insert((s.req, s.tasks, s.tenant.0), key);
        }
        let e = &mut self.jobs[j.0 as usize];
        e.key = key;
        e.shape = shape;
        e.state = JobState::Pending;
        self.pending_count += 1;
        self.pending_cpu_only += cpu_only as usize;
        self.tenants[tenant].jobs.0 += 1;
    }

    pub(super) fn dequeue(&mut self, j: JobId) {
        let e = &self.jobs[j.0 as usize];
        if self.policy == QueuePolicy::Drf {
            let t = e.spec.tenant.0 as usize;
            self.tenants[t].pending.remove(&(e.key.0, j));
        } else {
            self.pending.remove(&e.key);
            self.by_shape.remove(e.shape, &e.key);
        }
        self.pending_count -= 1;
        self.pending_cpu_only -= (e.spec.req.num_gpu == 0) as usize;
        self.tenants[e.spec.tenant.0 as usize].jobs.0 -= 1;
    }

    pub(super) fn arm_las_wakeup(&mut self, j: JobId, now: Time) {
        let QueuePolicy::Las {
            thresholds_gpu_s, ..
        } = &self.policy
        else {
            return;
        };
        let e = &self.jobs[j.0 as usize];
        if e.state != JobState::Running || e.spec.gpu_milli() == 0 {
            return;
        }
        let base = e.attained.saturating_sub(e.las_offset);
        let attained_now = base + now.saturating_sub(e.started);
        let gpu_milli = e.spec.gpu_milli() as u128;
        let gpu_ms = attained_now as u128 * gpu_milli / MILLI_PER_GPU as u128;
        if let Some(&t) = thresholds_gpu_s
            .iter()
            .find(|&&t| gpu_ms < t as u128 * 1000)
        {
            // run time needed to reach t GPU-seconds, rounded up
            let need = (t as u128 * 1000 * MILLI_PER_GPU as u128).div_ceil(gpu_milli);
            let at = (e.started + (need as u64).saturating_sub(base)).max(now + 1);
            self.las_wakeups.insert((at, j));
            self.jobs[j.0 as usize].wake = Some(at);
        }
    }

    pub(super) fn disarm_las_wakeup(&mut self, j: JobId) {
        if let Some(t) = self.jobs[j.0 as usize].wake.take() {
            self.las_wakeups.remove(&(t, j));
        }
    }

    pub(super) fn memo_key(&self, j: JobId) -> MemoKey {
        let s = &self.jobs[j.0 as usize].spec;
        let t = &self.tenants[s.tenant.0 as usize];
        let tenant = if t.limited || self.policy == QueuePolicy::Drf {
            s.tenant.0
        } else {
            u16::MAX
        };
        (s.req, s.tasks, tenant)
    }

    pub(super) fn nothing_free(&self) -> bool {
        self.pending_cpu_only == 0 && self.free_milli.iter().all(|&f| f == 0)
    }

    // ---- passes --------------------------------------------------------------

    /// FIFO, SJF, SRTF, LAS and classes: visit the queue in key order.
    pub(super) fn pass_ordered(&mut self, now: Time) {
        if self.opts.walk_by_shape {
            self.pass_ordered_by_shape(now)
        } else {
            self.pass_ordered_by_job(now)
        }
    }

    fn preemptive(&self) -> bool {
        matches!(
            self.policy,
            QueuePolicy::Srtf | QueuePolicy::Las { .. } | QueuePolicy::Classes
        )
    }

    /// Try job `j` (visited in queue order): place it, else preempt for it.
    /// `None` stops the pass; `Some(true)`: it started; `Some(false)`: it
    /// failed, and so will every later job of its shape in this pass.
    fn visit(&mut self, j: JobId, now: Time) -> Option<bool> {
        if self.out_of_decisions() {
            return None;
        }
        let preemptive = self.preemptive();
        // The queue is in priority order, so once nothing is free and this
        // job has no possible victim, no later job has one either.
        if self.nothing_free() && (!preemptive || !self.may_have_victims(j, now)) {
            return None;
        }
        let mk = self.memo_key(j);
        if !self.failed.contains(&mk) {
            if self.start_if_placeable(j, now) {
                return Some(true);
            }
            self.failed.insert(mk);
        }
        // A job that could not preempt its way in: later (lower-priority)
        // jobs of the same shape have fewer victims, so they cannot either.
        // A job no open node could hold even empty frees nothing by
        // preempting: no victim search for it.
        if preemptive && !self.failed_preempt.contains(&mk) && !self.waits_for_nodes(j) {
            if self.preempt_for(j, now) {
                return Some(true);
            }
            self.failed_preempt.insert(mk);
        }
        if self.policy == QueuePolicy::Fifo && !self.waits_for_nodes(j) {
            return None;
        }
        Some(false)
    }

    /// The ordered pass job by job (the baseline of the shape walk).
    fn pass_ordered_by_job(&mut self, now: Time) {
        let mut cursor = Cursor::new();
        while let Some(key) = cursor.next(&self.pending, |k| {
            let e = &self.jobs[k.2 .0 as usize];
            e.state == JobState::Pending && e.key == k
        }) {
            if self.visit(key.2, now).is_none() {
                break;
            }
        }
    }

    /// The ordered pass over the shapes' queues: the same visits, in the
    /// same order, minus the jobs of shapes that already failed in it.
    fn pass_ordered_by_shape(&mut self, now: Time) {
        let mut walk = shapes::ShapeWalk::new(&self.by_shape);
        let (mut seq, mut epoch) = (self.seq, self.memo_epoch);
        while let Some((key, shape)) = walk.next(&self.by_shape) {
            match self.visit(key.2, now) {
                None => break,
                Some(true) => walk.advance(&self.by_shape, shape),
                Some(false) => walk.kill(shape),
            }
            if self.memo_epoch != epoch {
                // A preemption freed resources: failed shapes may fit now.
                walk.revive();
            }
            if self.seq != seq || self.memo_epoch != epoch {
                // Jobs were queued (preempted victims) or shapes revived:
                // merge them in.
                (seq, epoch) = (self.seq, self.memo_epoch);
                walk.refill(&self.by_shape);
            }
        }
    }

    pub(super) fn dominant_share(&self, t: usize) -> f64 {
        let x = &self.tenants[t];
        let mut s = 0.0f64;
        for m in 0..self.n_models {
            // Against the open capacity (a drained or lost node's GPUs are
            // nobody's share); all of it when every node of the model is closed.
            let cap = match self.open_milli[m] {
                0 => self.capacity_milli[m],
                c => c,
            };
            if cap > 0 {
                s = s.max(x.used[m] as f64 / cap as f64);
            }
        }
        s / x.quota.weight
    }

    pub(super) fn pass_drf(&mut self, now: Time) {
        let mut blocked = vec![false; self.tenants.len()];
        loop {
            let mut pick: Option<(f64, usize)> = None;
            for (t, &is_blocked) in blocked.iter().enumerate() {
                if is_blocked || self.tenants[t].pending.is_empty() {
                    continue;
                }
                let s = self.dominant_share(t);
                if pick.is_none_or(|(b, _)| s < b) {
                    pick = Some((s, t));
                }
            }
            let Some((_, t)) = pick else { break };
            if self.out_of_decisions() {
                break;
            }
            // The tenant's first job that open nodes could hold (one that
            // waits for nodes holds back none of the tenant's others).
            let Some(j) = self.tenants[t]
                .pending
                .iter()
                .map(|k| k.1)
                .find(|&j| !self.waits_for_nodes(j))
            else {
                blocked[t] = true;
                continue;
            };
            if self.start_if_placeable(j, now) {
                continue;
            }
            if self.reclaim_for(j, now) {
                continue;
            }
            blocked[t] = true;
        }
    }

    /// DRF reclaim: a tenant within its guaranteed quota takes GPUs back from
    /// tenants above theirs, most over-quota tenant first, newest job first.
    pub(super) fn reclaim_for(&mut self, j: JobId, now: Time) -> bool {
        let s = &self.jobs[j.0 as usize].spec;
        let t = &self.tenants[s.tenant.0 as usize];
        let need = s.gpu_milli();
        if need == 0 {
            return false;
        }
        let mut within = ModelSet(0);
        for m in 0..self.n_models {
            let id = ModelId(m as u8);
            if s.req.models.accepts(Some(id)) && t.used[m] + need <= t.quota.guaranteed[m] {
                within = within.with(id);
            }
        }
        if within.0 == 0 {
            return false;
        }
        // Reclaimed GPUs go to the models within guarantee only.
        self.reclaim_models = within;
        let saved = self.jobs[j.0 as usize].spec.req.models;
        self.jobs[j.0 as usize].spec.req.models = within;
        let ok = self.preempt_for(j, now);
        self.jobs[j.0 as usize].spec.req.models = saved;
        self.reclaim_models = ModelSet(0);
        ok
    }

    /// FIFO with EASY backfill.
    pub(super) fn pass_backfill(&mut self, now: Time) {
        let mut cursor = Cursor::new();
        let mut reservation: Option<(Time, u64, ModelSet)> = None; // (shadow, extra, models)
        while let Some(key) = cursor.next(&self.pending, |k| {
            let e = &self.jobs[k.2 .0 as usize];
            e.state == JobState::Pending && e.key == k
        }) {
            let j = key.2;
            if self.nothing_free() || self.out_of_decisions() {
                break;
            }
            let mk = self.memo_key(j);
            if self.failed.contains(&mk) {
                continue;
            }
            let spec = &self.jobs[j.0 as usize].spec;
            let (est, need, models) = (spec.estimate(), spec.gpu_milli(), spec.req.models);
            match reservation {
                None => {
                    if self.start_if_placeable(j, now) {
                        continue;
                    }
                    self.failed.insert(mk);
                    if self.waits_for_nodes(j) {
                        continue; // no reservation for what no open node holds
                    }
                    reservation = Some(self.reserve(j, now));
                }
                Some((shadow, extra, rmodels)) => {
                    let overlaps = models.is_any() || rmodels.is_any() || models.0 & rmodels.0 != 0;
                    let ends_in_time = now.saturating_add(est) <= shadow;
                    let in_extra = need <= extra;
                    if !(ends_in_time || !overlaps || in_extra) {
                        continue;
                    }
                    if self.start_if_placeable(j, now) {
                        if !ends_in_time && overlaps {
                            reservation = Some((shadow, extra - need, rmodels));
                        }
                    } else {
                        self.failed.insert(mk);
                    }
                }
            }
        }
    }

    /// EASY reservation for the blocked head `j`: the earliest time enough
    /// GPUs of its models are free by running jobs' estimates (the shadow
    /// time), and the GPU milli left over then (the extra).
    pub(super) fn reserve(&self, j: JobId, now: Time) -> (Time, u64, ModelSet) {
        let s = &self.jobs[j.0 as usize].spec;
        let models = s.req.models;
        let need = s.gpu_milli();
        let mut avail = self.free_in(models);
        for &(end, r) in &self.est_ends {
            let e = &self.jobs[r.0 as usize];
            let Some(m) = e.model else { continue };
            if !models.accepts(Some(m)) {
                continue;
            }
            avail += e.spec.gpu_milli();
            if avail >= need {
                return (end.max(now + 1), avail - need, models);
            }
        }
        (Time::MAX, 0, models)
    }
}
