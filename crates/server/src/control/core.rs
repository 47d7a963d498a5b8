//! [`Core`]: the loop's state and [`Core::step`]. No clock, no store, no
//! channel: time comes in as an argument, writes and answers go out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use suanli_core::{ModelId, ModelSet, Models, NodeId, NodeSpec, Request};
use suanli_sched::scheduler::{Class, JobId, JobSpec, Scheduler, TenantId, TenantQuota};

use super::{Answer, Command, IdBlock, Refusal, DEFAULT_WORK_MS, JOB_ID_BLOCK, NODE_ID_BLOCK};
use crate::store::{IdKind, Job, Node, Quota, Tenant, Write};

/// A job the loop tracks (PENDING or RUNNING).
pub(super) struct Live {
    pub handle: JobId,
    pub tenant_id: i64,
    pub run: i64,
    pub retries: i64,
    /// Attempts ended by node loss or preemption.
    pub interrupted: i64,
    /// Current attempt's tasks, by index, when running.
    pub tasks: Vec<LiveTask>,
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct LiveTask {
    pub node: i64,
    /// Device bitmask on the node.
    pub mask: i64,
    pub st: TaskSt,
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) enum TaskSt {
    Assigned,
    Running,
    Exited(i64),
}

pub(super) struct LiveNode {
    pub node: Node,
    pub handle: NodeId,
}

/// (job, run, task): one task of one attempt.
pub(super) type Key = (i64, i64, i64);

/// The loop's state: the scheduler core plus what maps it to stored ids.
pub struct Core {
    pub(super) sched: Scheduler,
    pub(super) models: Models,
    pub(super) racks: HashMap<String, u32>,
    pub(super) jobs: HashMap<i64, Live>,
    pub(super) by_handle: HashMap<JobId, i64>,
    pub(super) nodes: BTreeMap<i64, LiveNode>,
    pub(super) node_ids: HashMap<String, i64>,
    /// Nodes an admin removed, by name: one registering again gets its id
    /// back (the stored row is kept for the tasks that name it).
    pub(super) removed: HashMap<String, i64>,
    /// Stored node id of each scheduler node handle.
    pub(super) node_db: Vec<i64>,
    /// Tasks an agent must stop: node id → task → device mask. Their
    /// devices stay busy, in the agent's eyes, until it stops reporting them.
    pub(super) killing: BTreeMap<i64, BTreeMap<Key, i64>>,
    /// Live tasks (assigned or running) of each node: node id → (job, task).
    pub(super) on_node: HashMap<i64, BTreeSet<(i64, i64)>>,
    pub(super) tenants: HashMap<i64, TenantId>,
    pub(super) tenant_names: HashMap<i64, String>,
    /// Ids the loop may hand out, reserved in the store
    /// ([`crate::store::Backend::reserve_ids`]; the driver tops them up
    /// before each step, [`Core::ids_to_reserve`]).
    pub(super) job_ids: IdBlock,
    pub(super) node_ids_free: IdBlock,
    /// Idempotency keys of the last [`super::IDEMPOTENCY_WINDOW_MS`]:
    /// (tenant id, key) → job id, and the same in submission order (to
    /// forget them).
    pub(super) idem: HashMap<(i64, String), (i64, Option<String>)>,
    pub(super) idem_order: std::collections::VecDeque<(i64, i64, String, i64)>,
    pub(super) lease_ms: i64,
    pub(super) dirty: bool,
    /// Nodes given new orders (a start or a stop) in the current step.
    pub(super) poked: BTreeSet<i64>,
}

/// What one [`Core::step`] produced.
#[derive(Debug, Default)]
pub struct Step {
    /// To commit in one transaction, in order, before any answer is sent.
    pub writes: Vec<Write>,
    /// One per command, in the commands' order.
    pub answers: Vec<Answer>,
    /// Decisions (starts and preemptions) of the pass, if one ran.
    pub decisions: usize,
    /// Nodes with new orders that did not report in this batch: once the
    /// writes are durable their agents are woken ([`super::Wakes`]).
    pub poked: Vec<String>,
}

impl Core {
    /// The id blocks to reserve in the store before `commands` can be
    /// stepped: for each kind the blocks in hand hold too few of, a new
    /// block of at least [`JOB_ID_BLOCK`] (or [`NODE_ID_BLOCK`]) and at
    /// least what `commands` may need. The driver reserves them and hands
    /// them over with [`Core::grant_ids`] (which replaces the old block)
    /// before [`Core::step`].
    pub fn ids_to_reserve(&self, commands: &[Command]) -> Vec<(IdKind, i64)> {
        let (mut jobs, mut nodes) = (0i64, 0i64);
        for c in commands {
            match c {
                Command::Submit { .. } => jobs += 1,
                Command::Register(_) => nodes += 1,
                _ => {}
            }
        }
        let mut out = Vec::new();
        if jobs > self.job_ids.left() {
            out.push((IdKind::Job, jobs.max(JOB_ID_BLOCK)));
        }
        if nodes > self.node_ids_free.left() {
            out.push((IdKind::Node, nodes.max(NODE_ID_BLOCK)));
        }
        out
    }

    /// Hand out these ids from now on (what is left of the last block is
    /// not used).
    pub fn grant_ids(&mut self, kind: IdKind, block: IdBlock) {
        match kind {
            IdKind::Job => self.job_ids = block,
            IdKind::Node => self.node_ids_free = block,
        }
    }

    /// Apply a batch of commands at time `now` (ms since the epoch), run a
    /// scheduling pass if anything changed or a wake-up is due, and return
    /// the writes and the answers. Orders for agents that reported in this
    /// batch are computed after the pass, so a start decided now reaches the
    /// agent in this very answer.
    pub fn step(&mut self, commands: Vec<Command>, now: i64) -> Step {
        let mut w = Vec::new();
        let mut answers = Vec::with_capacity(commands.len());
        // (answer index, node id) of the reports in this batch.
        let mut reported: Vec<(usize, i64)> = Vec::new();
        // Answer indexes of the submissions accepted in this batch.
        let mut submitted: Vec<usize> = Vec::new();
        if self
            .sched
            .next_wakeup()
            .is_some_and(|t| t <= now.max(0) as u64)
        {
            self.dirty = true;
        }
        self.expire_leases(now, &mut w);
        self.forget_keys(now);
        for cmd in commands {
            let a = match cmd {
                Command::Submit {
                    tenant_id,
                    tenant,
                    job,
                } => {
                    let r = self.submit(tenant_id, tenant, job, now, &mut w);
                    if r.is_ok() {
                        submitted.push(answers.len());
                    }
                    Answer::Submitted(r)
                }
                Command::Cancel { id, tenant } => {
                    Answer::Cancelled(self.cancel(id, tenant, now, &mut w))
                }
                Command::Register(reg) => Answer::Registered(self.register(reg, now, &mut w)),
                Command::Heartbeat { node, report, full } => {
                    match self.heartbeat(&node, report, full, now, &mut w) {
                        Ok(id) => {
                            reported.push((answers.len(), id));
                            Answer::Orders(Ok(super::NodeOrders::default()))
                        }
                        Err(r) => Answer::Orders(Err(r)),
                    }
                }
                Command::Drain { node, drain, actor } => {
                    Answer::Drained(self.drain(&node, drain, &actor, now, &mut w))
                }
                Command::RemoveNode { node, actor } => {
                    Answer::Removed(self.remove_node(&node, &actor, now, &mut w))
                }
                Command::Tenant { tenant, quotas } => {
                    self.set_tenant(&tenant, &quotas);
                    Answer::Done
                }
                Command::Explain { ids, viewer } => Answer::Reasons(self.explain(&ids, viewer)),
                Command::Nodes => Answer::Nodes(self.node_views()),
                Command::Pool { viewer } => Answer::Pool(self.pool_view(viewer)),
            };
            answers.push(a);
        }
        let mut decisions = 0;
        if self.dirty {
            self.dirty = false;
            self.sched.schedule(now.max(0) as u64);
            decisions = self.sched.decisions().len();
            self.record_decisions(now, &mut w);
            // A bounded pass left work: another pass follows at once.
            self.dirty = self.sched.pass_cut_short();
        }
        for &(i, node) in &reported {
            answers[i] = Answer::Orders(Ok(self.orders(node)));
            // Its answer carries the orders already.
            self.poked.remove(&node);
        }
        let poked = std::mem::take(&mut self.poked)
            .into_iter()
            .filter_map(|id| self.nodes.get(&id).map(|n| n.node.name.clone()))
            .collect();
        // A job the pass started is answered as it is committed: RUNNING.
        for i in submitted {
            if let Answer::Submitted(Ok(j)) = &mut answers[i] {
                if let Some(l) = self.jobs.get(&j.id).filter(|l| l.run > 0) {
                    j.state = suanli_api::JobState::Running;
                    j.run = l.run;
                    j.started_ms = Some(now);
                }
            }
        }
        Step {
            writes: w,
            answers,
            decisions,
            poked,
        }
    }

    /// Whether a pass is due now (something changed, or the last pass was
    /// cut short at its bound).
    pub fn wants_pass(&self) -> bool {
        self.dirty
    }

    /// When the scheduler next needs a pass with no command (2D-LAS
    /// demotions, starvation promotions), in ms since the epoch.
    pub fn next_wakeup(&self) -> Option<i64> {
        self.sched.next_wakeup().map(|t| t as i64)
    }

    /// Jobs waiting, and jobs running.
    pub fn queue_lengths(&self) -> (usize, usize) {
        (self.sched.pending_len(), self.sched.running_len())
    }

    /// Registered nodes, whatever their state.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The scheduler core (read-only), e.g. to check the allocation ledger.
    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    pub(super) fn track(&mut self, j: &Job, h: JobId) {
        let tenant_id = self
            .tenant_names
            .iter()
            .find(|(_, n)| **n == j.tenant)
            .map_or(0, |(id, _)| *id);
        self.jobs.insert(
            j.id,
            Live {
                handle: h,
                tenant_id,
                run: j.run,
                retries: j.retries,
                interrupted: j.interrupted,
                tasks: Vec::new(),
            },
        );
        self.by_handle.insert(h, j.id);
    }

    pub(super) fn untrack(&mut self, id: i64) -> Option<Live> {
        let l = self.jobs.remove(&id)?;
        self.by_handle.remove(&l.handle);
        Some(l)
    }

    pub(super) fn tenant(&mut self, id: i64) -> TenantId {
        let n = self.tenants.len();
        *self.tenants.entry(id).or_insert(TenantId(n as u16))
    }

    /// A tenant's weight and quotas, as stored now.
    pub(super) fn set_tenant(&mut self, tenant: &Tenant, quotas: &[Quota]) {
        let t = self.tenant(tenant.id);
        self.tenant_names.insert(tenant.id, tenant.name.clone());
        let mut q = TenantQuota::unlimited(self.models.len());
        q.weight = tenant.weight;
        for quota in quotas {
            if !self.can_intern(&quota.gpu_model) {
                tracing::warn!(tenant = tenant.id, model = %quota.gpu_model,
                    "quota ignored: the pool already has 64 GPU models");
                continue;
            }
            let Ok(m) = self.intern(&quota.gpu_model) else {
                continue;
            };
            let i = m.0 as usize;
            if q.max.len() <= i {
                q.max.resize(i + 1, u64::MAX);
                q.guaranteed.resize(i + 1, 0);
            }
            q.guaranteed[i] = (quota.guaranteed * 1000.0).round() as u64;
            q.max[i] = quota.max.map_or(u64::MAX, |m| (m * 1000.0).round() as u64);
        }
        self.sched.set_quota(t, q);
        self.dirty = true;
    }

    /// Whether `name` is a known model or there is room for one more.
    pub(super) fn can_intern(&self, name: &str) -> bool {
        self.models.get(name).is_some() || self.models.len() < 64
    }

    pub(super) fn model_room(&self, n: &Node) -> Option<Refusal> {
        let full = n.gpu_model.as_deref().is_some_and(|m| !self.can_intern(m));
        full.then(|| Refusal::Invalid {
            field: "gpus".into(),
            detail: "the pool already has 64 GPU models".to_string(),
        })
    }

    pub(super) fn intern(&mut self, name: &str) -> Result<ModelId, String> {
        let m = self
            .models
            .intern(name)
            .map_err(|e| format!("GPU model {name:?}: {e}"))?;
        self.sched.grow_models(self.models.len());
        Ok(m)
    }

    /// The scheduler's view of a stored job.
    pub(super) fn spec_of(&mut self, j: &Job) -> Result<JobSpec, Refusal> {
        let mut models = ModelSet::ANY;
        for name in &j.gpu_models {
            let Some(m) = self.models.get(name) else {
                let mut known: Vec<&str> = (0..self.models.len())
                    .map(|i| self.models.name(ModelId(i as u8)))
                    .collect();
                known.sort_unstable();
                return Err(Refusal::Invalid {
                    field: "gpu_models".into(),
                    detail: format!(
                        "unknown GPU model {name:?}; the pool has: {}",
                        if known.is_empty() {
                            "none yet (no node has joined: submit without a GPU model, or \
                             once the agents have registered)"
                                .to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            };
            models = models.with(m);
        }
        let req = Request::new(
            j.cpu_milli as u64,
            j.memory_mib as u64,
            j.num_gpu as u32,
            j.gpu_milli as u32,
            models,
        )
        .map_err(|e| Refusal::Invalid {
            field: "gpus".into(),
            detail: e.to_string(),
        })?;
        let tenant_id = self
            .tenant_names
            .iter()
            .find(|(_, n)| **n == j.tenant)
            .map(|(id, _)| *id)
            .ok_or(Refusal::NotFound)?;
        let work = j
            .max_runtime_s
            .map_or(DEFAULT_WORK_MS, |s| s.max(1) as u64 * 1000);
        Ok(JobSpec {
            tenant: self.tenant(tenant_id),
            class: match j.class {
                suanli_api::Class::Guaranteed => Class::Guaranteed,
                suanli_api::Class::OnDemand => Class::OnDemand,
                suanli_api::Class::Spot => Class::Spot,
            },
            tasks: j.tasks as u32,
            req,
            submit: j.submitted_ms.max(0) as u64,
            work,
            estimate: None,
        })
    }

    pub(super) fn add_node(&mut self, n: Node) -> Result<(), String> {
        let model = match &n.gpu_model {
            Some(m) if n.gpus > 0 => Some(self.intern(m)?),
            _ => None,
        };
        let spec = NodeSpec {
            name: n.name.clone(),
            cpu_milli: n.cpu_milli.max(0) as u64,
            memory_mib: n.memory_mib.max(0) as u64,
            gpus: if model.is_some() { n.gpus as u8 } else { 0 },
            model,
        };
        let next = self.racks.len() as u32;
        let rack = *self.racks.entry(n.rack.clone()).or_insert(next);
        let h = self.sched.add_node(spec, rack);
        debug_assert_eq!(h as usize, self.node_db.len());
        self.node_db.push(n.id);
        self.node_ids.insert(n.name.clone(), n.id);
        self.nodes.insert(n.id, LiveNode { node: n, handle: h });
        self.dirty = true;
        Ok(())
    }
}
