//! Recovery: [`Snapshot::load`] reads what the loop needs from the store;
//! [`Core::recover`] rebuilds the state from it and checks it. Any
//! inconsistency is an error naming the job, task and node: the server must
//! not schedule on corrupt state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context};
use suanli_core::{GpuMask, Ledger, Models, NodeId};
use suanli_sched::scheduler::{SchedOptions, Scheduler};
use suanli_sched::{make_policy, LearnParams, Placement, Target, Workload};

use super::core::{Core, LiveTask, TaskSt};
use super::{IdBlock, LoopConfig, JOB_ID_BLOCK, NODE_ID_BLOCK};
use crate::store::{IdKind, Job, JobState, Node, NodeState, Quota, Store, Task, TaskState, Tenant};

/// Everything the loop is rebuilt from, as read from the store.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The first blocks of job and node ids (reserved by `load`).
    pub job_ids: IdBlock,
    pub node_ids: IdBlock,
    /// Jobs submitted before the first of `recent` (the learned target's
    /// arrival count).
    pub arrivals_before: i64,
    pub tenants: Vec<(Tenant, Vec<Quota>)>,
    pub nodes: Vec<Node>,
    /// Removed nodes: (name, id).
    pub removed: Vec<(String, i64)>,
    /// RUNNING jobs, and the tasks of their current attempts that hold
    /// resources (ASSIGNED or RUNNING).
    pub running: Vec<Job>,
    pub active_tasks: Vec<Task>,
    /// Tasks agents were ordered to stop and have not confirmed yet.
    pub killing: Vec<Task>,
    pub pending: Vec<Job>,
    /// The last jobs submitted, any state, oldest first: the learned target
    /// workload is rebuilt from them.
    pub recent: Vec<Job>,
    /// Idempotency keys of the last day's submissions: (tenant, key, job,
    /// submitted), oldest first.
    pub keys: Vec<(i64, String, i64, i64, Option<String>)>,
}

/// Jobs the learned target is rebuilt from.
fn recent_len() -> usize {
    let p = LearnParams::default();
    p.window + p.refresh as usize
}

impl Snapshot {
    pub async fn load(store: &Store) -> anyhow::Result<Snapshot> {
        let mut tenants = Vec::new();
        for t in store.tenants().await? {
            let q = store.quotas(t.id).await?;
            tenants.push((t, q));
        }
        let recent = store.recent_jobs(recent_len() as i64).await?;
        let arrivals_before = match recent.first() {
            Some(j) => store.jobs_before(j.id).await?,
            None => 0,
        };
        // The window before the newest submission (no clock here); the
        // first step forgets what is older than its own window.
        let keys = match recent.last() {
            Some(j) => {
                store
                    .idempotency_keys(j.submitted_ms - super::IDEMPOTENCY_WINDOW_MS)
                    .await?
            }
            None => Vec::new(),
        };
        Ok(Snapshot {
            keys,
            recent,
            arrivals_before,
            job_ids: IdBlock::new(
                store.reserve_ids(IdKind::Job, JOB_ID_BLOCK).await?,
                JOB_ID_BLOCK,
            ),
            node_ids: IdBlock::new(
                store.reserve_ids(IdKind::Node, NODE_ID_BLOCK).await?,
                NODE_ID_BLOCK,
            ),
            tenants,
            nodes: store.nodes().await?,
            removed: store.removed_nodes().await?,
            running: all_jobs(store, JobState::Running).await?,
            active_tasks: store.active_tasks().await?,
            killing: store.killing_tasks().await?,
            pending: all_jobs(store, JobState::Pending).await?,
        })
    }
}

async fn all_jobs(store: &Store, state: JobState) -> anyhow::Result<Vec<Job>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.live_jobs(state, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        out.extend(page);
    }
    Ok(out)
}

impl Core {
    /// An empty pool with these settings.
    pub fn new(cfg: &LoopConfig) -> anyhow::Result<Core> {
        Core::recover(
            Snapshot {
                job_ids: IdBlock::unlimited(),
                node_ids: IdBlock::unlimited(),
                ..Snapshot::default()
            },
            cfg,
            0,
        )
    }

    /// Rebuild the loop from a snapshot at time `now`, and check it.
    pub fn recover(snap: Snapshot, cfg: &LoopConfig, now: i64) -> anyhow::Result<Core> {
        let placement = make_policy(&cfg.placement, &Workload::default(), 1)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sched = Scheduler::new(
            Ledger::new(Vec::new()),
            Vec::new(),
            placement,
            cfg.queue_policy.clone(),
            Vec::new(),
            0,
            SchedOptions {
                checkpoint_ms: cfg.checkpoint_ms,
                group_nodes: cfg.group_nodes,
                walk_by_shape: cfg.group_nodes,
                max_decisions_per_pass: cfg.max_decisions_per_pass,
                target: if cfg.learn_target {
                    Target::Learned(LearnParams::default())
                } else {
                    Target::Given
                },
                ..SchedOptions::default()
            },
        );
        let mut c = Core {
            job_ids: snap.job_ids,
            node_ids_free: snap.node_ids,
            idem: HashMap::new(),
            idem_order: Default::default(),
            lease_ms: cfg.lease_ms as i64,
            sched,
            models: Models::new(),
            racks: HashMap::new(),
            jobs: HashMap::new(),
            by_handle: HashMap::new(),
            nodes: BTreeMap::new(),
            node_ids: HashMap::new(),
            removed: snap.removed.iter().cloned().collect(),
            node_db: Vec::new(),
            killing: BTreeMap::new(),
            poked: BTreeSet::new(),
            on_node: HashMap::new(),
            tenants: HashMap::new(),
            tenant_names: HashMap::new(),
            dirty: true,
        };
        for (tenant, key, job, at, hash) in &snap.keys {
            c.remember_key(*at, *tenant, key.clone(), *job, hash.clone());
        }
        for (t, q) in &snap.tenants {
            c.set_tenant(t, q);
        }
        for n in &snap.nodes {
            // Agents get a fresh lease when the server (re)starts.
            let mut n = n.clone();
            n.last_heartbeat_ms = n.last_heartbeat_ms.max(now);
            let name = n.name.clone();
            c.add_node(n)
                .map_err(|e| anyhow::anyhow!("recovery: node {name}: {e}"))?;
        }
        // GPU models that jobs name but no node of the pool has now (their
        // last node was removed): known again, with no capacity, so those
        // jobs wait (pending) instead of failing the recovery.
        for j in snap.running.iter().chain(&snap.pending).chain(&snap.recent) {
            for name in &j.gpu_models {
                if c.models.get(name).is_none() {
                    c.intern(name)
                        .map_err(|e| anyhow::anyhow!("recovery: job {}: {e}", j.id))?;
                }
            }
        }
        let mut by_job: BTreeMap<i64, Vec<Task>> = BTreeMap::new();
        for t in snap.active_tasks {
            by_job.entry(t.job).or_default().push(t);
        }
        for j in &snap.running {
            let tasks = by_job.remove(&j.id).unwrap_or_default();
            c.restore_running(j, &tasks)
                .with_context(|| format!("recovery: job {} (run {})", j.id, j.run))?;
        }
        if let Some((job, _)) = by_job.into_iter().next() {
            bail!("recovery: job {job} has tasks holding resources but is not RUNNING");
        }
        for t in snap.killing {
            c.killing
                .entry(t.node)
                .or_default()
                .insert((t.job, t.run, t.index), t.gpus);
        }
        for j in &snap.pending {
            let spec = c
                .spec_of(j)
                .map_err(|r| anyhow::anyhow!("recovery: job {}: {r:?}", j.id))?;
            let h = c.sched.submit(spec);
            c.track(j, h);
        }
        // The learned target, as it was: from the last jobs submitted (a
        // job whose GPU model no node has now is left out).
        let first = snap.arrivals_before;
        let recent: Vec<(suanli_core::Request, u32)> = snap
            .recent
            .iter()
            .filter_map(|j| Some((c.spec_of(j).ok()?.req, j.tasks as u32)))
            .collect();
        c.sched
            .replay_target(first.max(0) as u64, recent.iter().map(|(r, t)| (r, *t)));
        // Close draining and down nodes only now: their running jobs were
        // restored onto them above.
        let closed: Vec<NodeId> = c
            .nodes
            .values()
            .filter(|n| n.node.state != NodeState::Ready)
            .map(|n| n.handle)
            .collect();
        for h in closed {
            c.sched.set_closed(h, true);
        }
        c.sched
            .ledger()
            .check()
            .map_err(|e| anyhow::anyhow!("recovery: allocation ledger inconsistent: {e}"))?;
        Ok(c)
    }

    fn restore_running(&mut self, j: &Job, tasks: &[Task]) -> anyhow::Result<()> {
        let spec = self.spec_of(j).map_err(|r| anyhow::anyhow!("{r:?}"))?;
        if tasks.len() != j.tasks as usize {
            bail!(
                "{} of its {} tasks hold resources (ASSIGNED, RUNNING or EXITED 0)",
                tasks.len(),
                j.tasks
            );
        }
        let mut placements = Vec::new();
        let mut live_tasks = Vec::new();
        for t in tasks {
            let Some(n) = self.nodes.get(&t.node) else {
                bail!("task {} is on unknown node id {}", t.index, t.node);
            };
            if !(0..1 << 16).contains(&t.gpus) {
                bail!("task {} has an invalid device mask {}", t.index, t.gpus);
            }
            placements.push(Placement {
                node: n.handle,
                gpus: GpuMask(t.gpus as u16),
            });
            let st = match t.state {
                TaskState::Running => TaskSt::Running,
                TaskState::Exited => TaskSt::Exited(0),
                _ => TaskSt::Assigned,
            };
            live_tasks.push(LiveTask {
                node: t.node,
                mask: t.gpus,
                st,
            });
        }
        let started = j.started_ms.unwrap_or(j.submitted_ms).max(0) as u64;
        let h = self.sched.restore(spec, placements, started).map_err(|e| {
            let nodes: Vec<&str> = tasks
                .iter()
                .map(|t| self.nodes[&t.node].node.name.as_str())
                .collect();
            anyhow::anyhow!("on nodes {nodes:?}: {e} (a device would be allocated twice)")
        })?;
        self.track(j, h);
        for (i, t) in live_tasks.iter().enumerate() {
            if t.st != TaskSt::Exited(0) {
                self.on_node
                    .entry(t.node)
                    .or_default()
                    .insert((j.id, i as i64));
            }
        }
        self.jobs.get_mut(&j.id).expect("tracked").tasks = live_tasks;
        Ok(())
    }
}
