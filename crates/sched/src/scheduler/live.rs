//! What a live pool needs beyond a trace replay: nodes that join, drain and
//! leave while jobs run; GPU models and quotas that appear at run time; jobs
//! restored as running after a restart; jobs stopped from outside (a node
//! lost); and the answer to "why is my job still pending?".
use super::*;

/// [`WhyPending::Queue`] counts the jobs ahead up to this many.
pub const WHY_AHEAD_CAP: usize = 100;

/// Why a pending job did not start, as of the scheduler's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhyPending {
    /// The tenant's maximum quota leaves no room on any GPU model the job
    /// accepts; the first such model, with the tenant's usage, its maximum
    /// and what the job needs (GPU milli).
    Quota {
        model: ModelId,
        used: u64,
        max: u64,
        need: u64,
    },
    /// Not enough free resources now: at most `fit` of the gang's `tasks`
    /// tasks fit on one GPU model among `models` (the ones quota allows).
    Resources {
        models: ModelSet,
        tasks: u32,
        fit: u32,
    },
    /// No open node could hold the job even with nothing running: at most
    /// `fit` of its `tasks` tasks on one GPU model among `models`. It
    /// waits for nodes to join, return (down) or reopen (draining).
    Nodes {
        models: ModelSet,
        tasks: u32,
        fit: u32,
    },
    /// Resources are free but `ahead` jobs come first (counted up to
    /// [`WHY_AHEAD_CAP`]: that many means at least that many) in the policy's order
    /// (they are tried first; under FIFO the head blocks the rest), `own` of
    /// them the same tenant's (what that tenant may be told).
    Queue { ahead: usize, own: usize },
}

impl Scheduler {
    /// Make model ids below `n` valid (the registry grew).
    pub fn grow_models(&mut self, n: usize) {
        if n <= self.n_models {
            return;
        }
        assert!(n <= 64, "at most 64 GPU models (ModelSet is a 64-bit mask)");
        self.n_models = n;
        self.capacity_milli.resize(n, 0);
        self.open_milli.resize(n, 0);
        self.free_milli.resize(n, 0);
        self.full_hist.resize(n, [0; MAX_GPUS_PER_NODE + 1]);
        for t in &mut self.tenants {
            t.quota.guaranteed.resize(n, 0);
            t.quota.max.resize(n, u64::MAX);
            t.used.resize(n, 0);
        }
        self.admit_cache.clear();
        self.open_fit.get_mut().clear();
    }

    /// Add a node to the pool (open to placements); returns its id.
    pub fn add_node(&mut self, spec: NodeSpec, rack: u32) -> NodeId {
        if let Some(m) = spec.model {
            self.grow_models(m.0 as usize + 1);
        }
        let shape = (spec.cpu_milli, spec.memory_mib, spec.gpus, spec.model);
        let class = match self.shapes.iter().position(|x| *x == shape) {
            Some(c) => c,
            None => {
                self.shapes.push(shape);
                self.idle.push(BTreeSet::new());
                self.shapes.len() - 1
            }
        };
        let (model, gpus) = (spec.model, spec.gpus);
        let id = self.ledger.add_node(spec);
        self.racks.push(rack);
        self.shape_class.push(class as u32);
        self.node_key.push(None);
        self.node_full.push(0);
        self.all_nodes.push(id);
        self.node_jobs.push(Vec::new());
        self.retired.push(false);
        if let Some(m) = model {
            let milli = gpus as u64 * MILLI_PER_GPU as u64;
            self.capacity_milli[m.0 as usize] += milli;
            self.open_milli[m.0 as usize] += milli;
            self.free_milli[m.0 as usize] += milli;
            self.full_hist[m.0 as usize][0] += 1;
        }
        self.note_node(id);
        self.admit_cache.clear();
        self.open_fit.get_mut().clear();
        id
    }

    /// Close a node to new placements (drain, lost) or reopen it. Jobs
    /// running there keep running. Its GPUs leave (or rejoin) the open
    /// capacity that DRF shares are measured against.
    pub fn set_closed(&mut self, node: NodeId, closed: bool) {
        let (spec, st) = self.ledger.node(node).expect("set_closed of a known node");
        if st.is_closed() != closed {
            if let Some(m) = spec.model {
                let milli = spec.gpus as u64 * MILLI_PER_GPU as u64;
                let open = &mut self.open_milli[m.0 as usize];
                *open = if closed { *open - milli } else { *open + milli };
            }
            self.admit_cache.clear();
            self.open_fit.get_mut().clear();
        }
        self.ledger
            .set_closed(node, closed)
            .expect("set_closed of a known node");
        self.note_node(node);
    }

    /// Take a node out of the pool for good (removed, or replaced by a node
    /// of another inventory): closed, its GPUs no longer capacity, and no
    /// job admitted on its account. It must run nothing.
    pub fn retire_node(&mut self, node: NodeId) {
        assert!(
            self.node_jobs[node as usize].is_empty(),
            "a node retired while running jobs"
        );
        self.set_closed(node, true);
        if std::mem::replace(&mut self.retired[node as usize], true) {
            return;
        }
        let (spec, _) = self.ledger.node(node).expect("a known node");
        if let Some(m) = spec.model {
            let milli = spec.gpus as u64 * MILLI_PER_GPU as u64;
            self.capacity_milli[m.0 as usize] -= milli;
            self.free_milli[m.0 as usize] -= milli;
        }
        self.admit_cache.clear();
        self.open_fit.get_mut().clear();
        self.why_cache.get_mut().1.clear();
    }

    /// Running jobs with a task on `node`.
    pub fn jobs_on(&self, node: NodeId) -> Vec<JobId> {
        let mut v = self
            .node_jobs
            .get(node as usize)
            .cloned()
            .unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Replace tenant `t`'s quotas (vectors shorter than the model registry
    /// are padded: no guarantee, no maximum).
    pub fn set_quota(&mut self, t: TenantId, mut quota: TenantQuota) {
        while self.tenants.len() <= t.0 as usize {
            self.push_tenant(TenantQuota::unlimited(self.n_models));
        }
        quota.guaranteed.resize(self.n_models, 0);
        quota.max.resize(self.n_models, u64::MAX);
        let tenant = &mut self.tenants[t.0 as usize];
        tenant.limited = quota.max.iter().any(|&m| m != u64::MAX);
        tenant.quota = quota;
        self.admit_cache.clear();
        self.open_fit.get_mut().clear();
        self.why_cache.get_mut().1.clear();
    }

    /// After a restart: a job that was running since `started` on exactly
    /// these devices (one placement per task). Fails, changing nothing, if
    /// the placements do not fit the gang or any device would be allocated
    /// twice — the store is then inconsistent.
    pub fn restore(
        &mut self,
        spec: JobSpec,
        placements: Vec<Placement>,
        started: Time,
    ) -> Result<JobId, String> {
        if placements.len() != spec.tasks as usize {
            return Err(format!(
                "{} placements for a gang of {} tasks",
                placements.len(),
                spec.tasks
            ));
        }
        let mut model = None;
        for (i, p) in placements.iter().enumerate() {
            let Some((s, _)) = self.ledger.node(p.node) else {
                return Err(format!("task {i} is on unknown node {}", p.node));
            };
            if spec.req.num_gpu > 0 {
                if i > 0 && s.model != model {
                    return Err("a gang's tasks are on different GPU models".to_string());
                }
                model = s.model;
            }
        }
        let mut allocs = Vec::with_capacity(placements.len());
        for (i, p) in placements.iter().enumerate() {
            match self.ledger.allocate(&spec.req, p.node, p.gpus) {
                Ok(a) => {
                    if let Some(m) = self.ledger.specs()[p.node as usize].model {
                        self.free_milli[m.0 as usize] -= spec.req.total_gpu_milli();
                    }
                    self.note_node(p.node);
                    allocs.push(a);
                }
                Err(e) => {
                    for a in allocs {
                        self.free_one(a);
                    }
                    return Err(format!("task {i}: {e}"));
                }
            }
        }
        let need = spec.gpu_milli();
        let tenant = spec.tenant;
        let j = self.new_entry(spec);
        if let Some(m) = model {
            self.tenants[tenant.0 as usize].used[m.0 as usize] += need;
        }
        let e = &mut self.jobs[j.0 as usize];
        e.allocs = allocs;
        e.placements = placements;
        e.model = model;
        e.started = started;
        e.state = JobState::Running;
        self.index_job(j);
        self.note_running(j, started);
        self.running.insert(j);
        self.arm_las_wakeup(j, started);
        Ok(j)
    }

    /// Stop a running job from outside the scheduler (its node was lost, a
    /// task failed and the job will be retried) and queue it again, from
    /// its last checkpoint (from the start without checkpoints). Unlike a
    /// preemption this is not a decision: nothing is reported. Answers the
    /// work lost (ms).
    pub fn requeue(&mut self, j: JobId, now: Time) -> Time {
        assert_eq!(self.jobs[j.0 as usize].state, JobState::Running);
        self.release_job(j);
        self.stop_and_queue(j, now, true);
        match self.decisions.pop() {
            Some(Decision::Preempt { lost_ms, .. }) => lost_ms,
            d => unreachable!("a stop records a preemption, not {d:?}"),
        }
    }

    /// Why pending job `j` is not running (by a test placement that changes
    /// nothing); `None` if it is not pending. The part that depends on the
    /// job's shape (nodes, quota, resources: O(nodes)) is computed once per
    /// shape while the ledger and the quotas stay as they are; what depends
    /// on the job itself (how many jobs are ahead) counts at most
    /// [`WHY_AHEAD_CAP`] of them. So explaining a page of jobs costs
    /// O(page), not O(page x nodes).
    pub fn why_pending(&self, j: JobId) -> Option<WhyPending> {
        let e = self.jobs.get(j.0 as usize)?;
        if e.state != JobState::Pending {
            return None;
        }
        let key = self.memo_key(j);
        let generation = self.ledger.generation();
        let cached = {
            let mut c = self.why_cache.borrow_mut();
            if c.0 != generation {
                *c = (generation, HashMap::new());
            }
            c.1.get(&key).cloned()
        };
        let shaped = match cached {
            Some(w) => w,
            None => {
                let w = self.why_shape(&e.spec);
                self.why_cache.borrow_mut().1.insert(key, w.clone());
                w
            }
        };
        if shaped.is_some() {
            return shaped;
        }
        let s = &e.spec;
        let (ahead, own) = if self.policy == QueuePolicy::Drf {
            let t = &self.tenants[s.tenant.0 as usize];
            let n = t.pending.range(..(e.key.0, j)).take(WHY_AHEAD_CAP).count();
            (n, n)
        } else {
            let mut n = (0, 0);
            for k in self.pending.range(..e.key).take(WHY_AHEAD_CAP) {
                n.0 += 1;
                n.1 += (self.jobs[k.2 .0 as usize].spec.tenant == s.tenant) as usize;
            }
            n
        };
        Some(WhyPending::Queue { ahead, own })
    }

    /// Forget the cached part of the why-pending answers (tests compare
    /// cached answers with fresh ones).
    #[doc(hidden)]
    pub fn forget_why(&self) {
        self.why_cache.borrow_mut().1.clear();
    }

    /// The shape's part of [`Scheduler::why_pending`]: `None` when the job
    /// would fit now (it waits for the jobs ahead).
    fn why_shape(&self, s: &JobSpec) -> Option<WhyPending> {
        let req = s.req;
        // Even empty, the open nodes cannot hold it: it waits for nodes
        // (whatever the quota says).
        let fit = self.open_fit(&req, s.tasks);
        if fit < s.tasks {
            return Some(WhyPending::Nodes {
                models: req.models,
                tasks: s.tasks,
                fit,
            });
        }
        let models = match self.allowed_models(s) {
            Some(m) => m,
            None => {
                let t = &self.tenants[s.tenant.0 as usize];
                let need = s.gpu_milli();
                let m = (0..self.n_models)
                    .find(|&m| {
                        req.models.accepts(Some(ModelId(m as u8)))
                            && self.capacity_milli[m] > 0
                            && t.used[m].saturating_add(need) > t.quota.max[m]
                    })
                    .unwrap_or(0);
                return Some(WhyPending::Quota {
                    model: ModelId(m as u8),
                    used: t.used[m],
                    max: t.quota.max[m],
                    need,
                });
            }
        };
        let req = Request { models, ..req };
        let fit = self.fit_tasks(&req, s.tasks, false);
        if fit < s.tasks {
            return Some(WhyPending::Resources {
                models,
                tasks: s.tasks,
                fit,
            });
        }
        None
    }
}
