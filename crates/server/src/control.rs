//! The scheduling loop: one task owns the scheduler core
//! ([`suanli_sched::jobs::Scheduler`], the same one the simulator drives)
//! and is the only writer of jobs, tasks and nodes.
//!
//! Handlers send it [`Cmd`]s over a channel. It takes whatever commands are
//! waiting (up to [`MAX_BATCH`]), applies them to the scheduler, runs one
//! scheduling pass if anything changed (or a timer fired), and commits the
//! commands' writes and every decision of the pass in **one transaction**.
//! Only then does it answer: a submission is acknowledged once durable, and an
//! agent learns of an assignment only from committed rows. Batching many
//! clients' commands into one transaction is what makes durable submission
//! cheap (one fsync for the batch, as in a database's group commit).
//!
//! The in-memory state is a cache of the store. If a commit fails the loop
//! stops and the server exits (crash-only): on restart [`Loop::recover`]
//! rebuilds it from the store and checks it (no device milli allocated twice,
//! every running task on a known node) before scheduling anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use suanli_core::{GpuMask, Ledger, ModelId, ModelSet, Models, NodeId, NodeSpec, Request};
use suanli_sched::jobs::{
    Class, Decision, JobId, JobSpec, QueuePolicy, SchedOptions, Scheduler, TenantId, TenantQuota,
    WhyPending,
};
use suanli_sched::{make_policy, Placement, Workload};
use tokio::sync::{mpsc, oneshot};

use crate::store::{now_ms, Job, NewJob, Node, Store, Write};

/// Most commands applied (and committed) together.
pub const MAX_BATCH: usize = 4096;
/// Run time assumed for a job without `max_runtime_s` (SJF, SRTF and
/// backfill order by it): one week.
pub const DEFAULT_WORK_MS: u64 = 7 * 24 * 3600 * 1000;

/// A request refused for a reason the caller can fix (a 4xx).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    NotFound,
    NotCancellable(String),
    Invalid {
        field: &'static str,
        detail: String,
    },
    /// The job can never run on this pool as it is.
    Unsatisfiable(String),
    Conflict(String),
}

/// What an agent reports about one task.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskKey {
    pub job: i64,
    pub run: i64,
    pub task: i64,
}

#[derive(Clone, Debug, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskExit {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    /// Exit code, or `None` if a signal ended it.
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    #[serde(default)]
    pub reason: String,
    /// The agent stopped it for running past the job's `max_runtime_s`:
    /// the job fails without retry.
    #[serde(default)]
    pub timeout: bool,
}

/// An agent's report: every task it runs, and tasks that ended since.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    #[serde(default)]
    pub running: Vec<TaskKey>,
    #[serde(default)]
    pub exited: Vec<TaskExit>,
}

/// A validated node registration.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub name: String,
    pub addr: String,
    pub gpu_model: Option<String>,
    pub gpus: i64,
    pub gpu_memory_mib: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub labels: BTreeMap<String, String>,
}

/// A node as the API lists it: stored fields plus what is allocated now.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    pub gpu_milli_allocated: u64,
    pub cpu_milli_allocated: u64,
    pub jobs: usize,
}

type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

pub enum Cmd {
    Submit {
        tenant_id: i64,
        tenant: String,
        job: NewJob,
        reply: Reply<Job>,
    },
    Cancel {
        id: i64,
        tenant: Option<i64>,
        reply: Reply<()>,
    },
    Register {
        reg: Registration,
        reply: Reply<Node>,
    },
    /// An agent's report. A `full` report (a heartbeat) lists every task
    /// the agent runs, so tasks missing from it are over; a partial one (a
    /// task-status call) only reports exits.
    Heartbeat {
        node: String,
        report: Report,
        full: bool,
        reply: Reply<i64>,
    },
    /// Drain (or undrain) a node; answers its resulting state.
    Drain {
        node: String,
        drain: bool,
        reply: Reply<String>,
    },
    /// A tenant's quotas or weight changed in the store: reload them.
    TenantChanged { tenant_id: i64 },
    /// Why-pending reasons of these jobs (missing = not pending), worded
    /// for `viewer`: a tenant id, or `None` for the admin (a tenant is never
    /// told how many of other tenants' jobs are ahead).
    Explain {
        ids: Vec<i64>,
        viewer: Option<i64>,
        reply: oneshot::Sender<HashMap<i64, String>>,
    },
    Nodes {
        reply: oneshot::Sender<Vec<NodeView>>,
    },
}

/// Figures for `/metrics`, updated after every batch.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub pending: usize,
    pub running: usize,
    /// (model, capacity milli, allocated milli).
    pub gpus: Vec<(String, u64, u64)>,
    pub nodes_by_state: BTreeMap<String, usize>,
    /// Scheduling pass plus commit, in seconds: bucket counts (cumulative
    /// at export), sum, count.
    pub latency_buckets: Vec<u64>,
    pub latency_sum: f64,
    pub latency_count: u64,
    pub decisions: u64,
    pub batches: u64,
}

/// Upper bounds of the latency histogram, seconds.
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The handle handlers use to talk to the loop.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Cmd>,
    pub metrics: Arc<Mutex<Metrics>>,
    /// Told to agents when they register.
    pub heartbeat_interval_s: u64,
}

impl Control {
    /// Send a command and wait for its answer. `None` if the loop stopped.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
    pub async fn tell(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd).await;
    }
}

/// Scheduler settings of the server.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub queue_policy: QueuePolicy,
    pub placement: String,
    pub checkpoint_ms: u64,
    /// See [`SchedOptions::group_nodes`]; false only for benchmark baselines.
    pub group_nodes: bool,
    /// A node whose agent has not reported for this long is down: its tasks
    /// are lost (requeued, or failed once the job's retries are used).
    pub lease_ms: u64,
    /// How often agents are asked to report.
    pub heartbeat_interval_s: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            queue_policy: QueuePolicy::Classes,
            placement: suanli_sched::DEFAULT_POLICY.to_string(),
            checkpoint_ms: 0,
            group_nodes: true,
            lease_ms: 20_000,
            heartbeat_interval_s: 5,
        }
    }
}

/// A job the loop tracks (PENDING or RUNNING).
struct Live {
    handle: JobId,
    tenant_id: i64,
    run: i64,
    retries: i64,
    /// Current attempt's tasks: (node id, state), when running.
    tasks: Vec<(i64, TaskSt)>,
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum TaskSt {
    Assigned,
    Running,
    Exited(i64),
}

struct LiveNode {
    node: Node,
    handle: NodeId,
}

pub struct Loop {
    store: Store,
    sched: Scheduler,
    models: Models,
    racks: HashMap<String, u32>,
    jobs: HashMap<i64, Live>,
    by_handle: HashMap<JobId, i64>,
    nodes: BTreeMap<i64, LiveNode>,
    node_ids: HashMap<String, i64>,
    node_db: Vec<i64>,
    /// Tasks an agent must stop: node id → (job, run, task).
    killing: BTreeMap<i64, BTreeSet<(i64, i64, i64)>>,
    /// Live tasks (assigned or running) of each node: node id → (job, task).
    on_node: HashMap<i64, BTreeSet<(i64, i64)>>,
    tenants: HashMap<i64, TenantId>,
    tenant_names: HashMap<i64, String>,
    next_job: i64,
    next_node: i64,
    lease_ms: i64,
    dirty: bool,
    metrics: Arc<Mutex<Metrics>>,
}

fn class_of(s: &str) -> Class {
    Class::parse(s).unwrap_or(Class::OnDemand)
}

impl Loop {
    /// Rebuild the in-memory state from the store and check it. Any
    /// inconsistency is an error naming the job, task and node: the server
    /// must not schedule on corrupt state.
    pub async fn recover(store: Store, cfg: &LoopConfig) -> anyhow::Result<Loop> {
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
                ..SchedOptions::default()
            },
        );
        let mut lp = Loop {
            next_job: store.max_job_id().await? + 1,
            next_node: store.max_node_id().await? + 1,
            lease_ms: cfg.lease_ms as i64,
            store,
            sched,
            models: Models::new(),
            racks: HashMap::new(),
            jobs: HashMap::new(),
            by_handle: HashMap::new(),
            nodes: BTreeMap::new(),
            node_ids: HashMap::new(),
            node_db: Vec::new(),
            killing: BTreeMap::new(),
            on_node: HashMap::new(),
            tenants: HashMap::new(),
            tenant_names: HashMap::new(),
            dirty: true,
            metrics: Arc::new(Mutex::new(Metrics {
                latency_buckets: vec![0; LATENCY_BOUNDS.len()],
                ..Metrics::default()
            })),
        };
        for t in lp.store.tenants().await? {
            lp.tenant_names.insert(t.id, t.name.clone());
            lp.load_tenant(t.id).await?;
        }
        let nodes = lp.store.nodes().await?;
        let now = now_ms();
        for n in &nodes {
            // Agents get a fresh lease when the server (re)starts.
            let mut n = n.clone();
            n.last_heartbeat_ms = n.last_heartbeat_ms.max(now);
            lp.add_node(n)?;
        }
        // Running jobs, from their tasks holding resources.
        let mut by_job: BTreeMap<i64, Vec<crate::store::Task>> = BTreeMap::new();
        for t in lp.store.active_tasks().await? {
            by_job.entry(t.job).or_default().push(t);
        }
        let running = lp.all_jobs("RUNNING").await?;
        for j in running {
            let tasks = by_job.remove(&j.id).unwrap_or_default();
            lp.restore_running(&j, &tasks)
                .with_context(|| format!("recovery: job {} (run {})", j.id, j.run))?;
        }
        if let Some((job, _)) = by_job.into_iter().next() {
            bail!("recovery: job {job} has tasks holding resources but is not RUNNING");
        }
        for t in lp.store.killing_tasks().await? {
            lp.killing
                .entry(t.node)
                .or_default()
                .insert((t.job, t.run, t.index));
        }
        for j in lp.all_jobs("PENDING").await? {
            let spec = lp
                .spec_of(&j)
                .map_err(|r| anyhow::anyhow!("recovery: job {}: {r:?}", j.id))?;
            let h = lp.sched.submit(spec);
            lp.track(&j, h);
        }
        // Close draining and down nodes only now: their running jobs were
        // restored onto them above.
        let closed: Vec<NodeId> = lp
            .nodes
            .values()
            .filter(|n| n.node.state != "ready")
            .map(|n| n.handle)
            .collect();
        for h in closed {
            lp.sched.set_closed(h, true);
        }
        lp.sched
            .ledger()
            .check()
            .map_err(|e| anyhow::anyhow!("recovery: allocation ledger inconsistent: {e}"))?;
        lp.publish(None, 0);
        tracing::info!(
            nodes = lp.nodes.len(),
            running = lp.sched.running_len(),
            pending = lp.sched.pending_len(),
            gpu_milli_allocated = lp.sched.allocated_gpu_milli(),
            "recovered and checked the state from the store"
        );
        Ok(lp)
    }

    async fn all_jobs(&self, state: &str) -> anyhow::Result<Vec<Job>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.jobs(None, Some(state), after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            out.extend(page);
        }
        Ok(out)
    }

    fn restore_running(&mut self, j: &Job, tasks: &[crate::store::Task]) -> anyhow::Result<()> {
        let spec = self.spec_of(j).map_err(|r| anyhow::anyhow!("{r:?}"))?;
        if tasks.len() != j.tasks as usize {
            bail!(
                "{} of its {} tasks hold resources (ASSIGNED or RUNNING)",
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
            let st = if t.state == "RUNNING" {
                TaskSt::Running
            } else {
                TaskSt::Assigned
            };
            live_tasks.push((t.node, st));
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
            self.on_node
                .entry(t.0)
                .or_default()
                .insert((j.id, i as i64));
        }
        self.jobs.get_mut(&j.id).expect("tracked").tasks = live_tasks;
        Ok(())
    }

    fn track(&mut self, j: &Job, h: JobId) {
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
                tasks: Vec::new(),
            },
        );
        self.by_handle.insert(h, j.id);
    }

    fn untrack(&mut self, id: i64) -> Option<Live> {
        let l = self.jobs.remove(&id)?;
        self.by_handle.remove(&l.handle);
        Some(l)
    }

    fn tenant(&mut self, id: i64) -> TenantId {
        let n = self.tenants.len();
        *self.tenants.entry(id).or_insert(TenantId(n as u16))
    }

    async fn load_tenant(&mut self, id: i64) -> anyhow::Result<()> {
        let t = self.tenant(id);
        let tenant = self.store.tenants().await?.into_iter().find(|x| x.id == id);
        let Some(tenant) = tenant else { return Ok(()) };
        self.tenant_names.insert(id, tenant.name.clone());
        let mut q = TenantQuota::unlimited(self.models.len());
        q.weight = tenant.weight;
        for quota in self.store.quotas(id).await? {
            if !self.can_intern(&quota.gpu_model) {
                tracing::warn!(tenant = id, model = %quota.gpu_model,
                    "quota ignored: the pool already has 64 GPU models");
                continue;
            }
            let m = self.intern(&quota.gpu_model)?;
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
        Ok(())
    }

    /// Whether `name` is a known model or there is room for one more.
    fn can_intern(&self, name: &str) -> bool {
        self.models.get(name).is_some() || self.models.len() < 64
    }

    fn model_room(&self, n: &Node) -> Option<Refusal> {
        let full = n.gpu_model.as_deref().is_some_and(|m| !self.can_intern(m));
        full.then(|| Refusal::Invalid {
            field: "gpus",
            detail: "the pool already has 64 GPU models".to_string(),
        })
    }

    fn intern(&mut self, name: &str) -> anyhow::Result<ModelId> {
        let m = self
            .models
            .intern(name)
            .map_err(|e| anyhow::anyhow!("GPU model {name:?}: {e}"))?;
        self.sched.grow_models(self.models.len());
        Ok(m)
    }

    /// The scheduler's view of a stored job.
    fn spec_of(&mut self, j: &Job) -> Result<JobSpec, Refusal> {
        let mut models = ModelSet::ANY;
        for name in &j.gpu_models {
            let Some(m) = self.models.get(name) else {
                let mut known: Vec<&str> = (0..self.models.len())
                    .map(|i| self.models.name(ModelId(i as u8)))
                    .collect();
                known.sort_unstable();
                return Err(Refusal::Invalid {
                    field: "gpu_models",
                    detail: format!(
                        "unknown GPU model {name:?}; the pool has: {}",
                        if known.is_empty() {
                            "none yet".to_string()
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
            field: "gpus",
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
            class: class_of(&j.class),
            tasks: j.tasks as u32,
            req,
            submit: j.submitted_ms.max(0) as u64,
            work,
            estimate: None,
        })
    }

    fn add_node(&mut self, n: Node) -> anyhow::Result<()> {
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

    /// Run until the channel closes (server shutdown) or the store fails.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let wake = self
                .sched
                .next_wakeup()
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms() as u64)))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                got = rx.recv() => match got {
                    Some(c) => batch.push(c),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(wake) => {
                    if self.sched.next_wakeup().is_some_and(|t| t <= now_ms() as u64) {
                        self.dirty = true;
                    }
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.step(std::mem::take(&mut batch)).await?;
        }
    }

    /// Apply one batch of commands, run a pass, commit everything, answer.
    pub async fn step(&mut self, batch: Vec<Cmd>) -> anyhow::Result<()> {
        self.step_timed(batch).await.map(|_| ())
    }

    /// Decisions taken since start.
    pub fn decisions_total(&self) -> u64 {
        self.metrics.lock().expect("metrics lock").decisions
    }

    /// [`step`](Self::step), returning the seconds spent in the scheduling
    /// pass itself (for benchmarks).
    pub async fn step_timed(&mut self, batch: Vec<Cmd>) -> anyhow::Result<f64> {
        let now = now_ms();
        let mut w: Vec<Write> = Vec::new();
        let mut done: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        self.expire_leases(now, &mut w);
        for cmd in batch {
            self.apply(cmd, now, &mut w, &mut done).await?;
        }
        let t0 = Instant::now();
        let mut decided = 0;
        let mut pass = 0.0;
        if self.dirty {
            self.dirty = false;
            self.sched.schedule(now as u64);
            pass = t0.elapsed().as_secs_f64();
            decided = self.sched.decisions().len();
            self.record_decisions(now, &mut w);
        }
        self.store
            .commit(&w)
            .await
            .context("committing a scheduling batch; stopping (restart recovers from the store)")?;
        let took = t0.elapsed();
        if decided > 0 {
            tracing::debug!(
                decisions = decided,
                writes = w.len(),
                seconds = took.as_secs_f64(),
                "batch committed"
            );
        }
        for d in done {
            d();
        }
        self.publish(Some(took), decided as u64);
        Ok(pass)
    }

    fn publish(&self, took: Option<Duration>, decided: u64) {
        let mut m = self.metrics.lock().expect("metrics lock");
        m.pending = self.sched.pending_len();
        m.running = self.sched.running_len();
        m.gpus = (0..self.models.len())
            .map(|i| {
                let id = ModelId(i as u8);
                let (cap, free) = self.sched.model_gpu_milli(id);
                (self.models.name(id).to_string(), cap, cap - free)
            })
            .collect();
        m.nodes_by_state.clear();
        for n in self.nodes.values() {
            *m.nodes_by_state.entry(n.node.state.clone()).or_default() += 1;
        }
        if let Some(t) = took {
            let s = t.as_secs_f64();
            if let Some(i) = LATENCY_BOUNDS.iter().position(|&b| s <= b) {
                m.latency_buckets[i] += 1;
            }
            m.latency_sum += s;
            m.latency_count += 1;
            m.batches += 1;
        }
        m.decisions += decided;
    }

    fn record_decisions(&mut self, now: i64, w: &mut Vec<Write>) {
        let decisions = self.sched.decisions().to_vec();
        for d in decisions {
            match d {
                Decision::Start { job, placements } => {
                    let id = self.by_handle[&job];
                    let tasks: Vec<(i64, i64)> = placements
                        .iter()
                        .map(|p| (self.node_db[p.node as usize], p.gpus.0 as i64))
                        .collect();
                    let l = self.jobs.get_mut(&id).expect("tracked job");
                    l.run += 1;
                    l.tasks = tasks.iter().map(|t| (t.0, TaskSt::Assigned)).collect();
                    for (i, t) in tasks.iter().enumerate() {
                        self.on_node.entry(t.0).or_default().insert((id, i as i64));
                    }
                    let detail = describe_tasks(&tasks, &self.nodes);
                    let run = l.run;
                    w.push(Write::StartJob {
                        job: id,
                        run,
                        at: now,
                        tasks,
                    });
                    w.push(Write::Event {
                        job: id,
                        at: now,
                        kind: "STARTED",
                        detail: format!("attempt {run} on {detail}"),
                    });
                }
                Decision::Preempt { job, lost_ms } => {
                    let id = self.by_handle[&job];
                    self.stop_tasks(id, "preempted", now, w);
                    transition(
                        w,
                        id,
                        "PENDING",
                        None,
                        "PREEMPTED",
                        format!(
                            "requeued; {:.1} s of work since the last checkpoint lost",
                            lost_ms as f64 / 1000.0
                        ),
                        now,
                    );
                }
            }
        }
    }

    /// Order the agents to stop the current attempt's live tasks.
    fn stop_tasks(&mut self, id: i64, reason: &str, now: i64, w: &mut Vec<Write>) {
        let Some(l) = self.jobs.get_mut(&id) else {
            return;
        };
        let run = l.run;
        for (i, (node, st)) in std::mem::take(&mut l.tasks).into_iter().enumerate() {
            if matches!(st, TaskSt::Assigned | TaskSt::Running) {
                if let Some(set) = self.on_node.get_mut(&node) {
                    set.remove(&(id, i as i64));
                }
                self.killing
                    .entry(node)
                    .or_default()
                    .insert((id, run, i as i64));
            }
        }
        w.push(Write::TaskState {
            job: id,
            run,
            task: None,
            from: &["ASSIGNED", "RUNNING"],
            to: "KILLING",
            at: Some(now),
            exit_code: None,
            reason: reason.to_string(),
        });
    }

    async fn apply(
        &mut self,
        cmd: Cmd,
        now: i64,
        w: &mut Vec<Write>,
        done: &mut Vec<Box<dyn FnOnce() + Send>>,
    ) -> anyhow::Result<()> {
        match cmd {
            Cmd::Submit {
                tenant_id,
                tenant,
                job,
                reply,
            } => {
                let r = self.submit(tenant_id, tenant, job, now, w);
                done.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Cmd::Cancel { id, tenant, reply } => {
                let r = self.cancel(id, tenant, now, w).await?;
                done.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Cmd::Register { reg, reply } => {
                let r = self.register(reg, now, w)?;
                done.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Cmd::Heartbeat {
                node,
                report,
                full,
                reply,
            } => {
                let r = self.heartbeat(&node, report, full, now, w);
                done.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Cmd::Drain { node, drain, reply } => {
                let r = self.drain(&node, drain, now, w);
                done.push(Box::new(move || {
                    let _ = reply.send(r);
                }));
            }
            Cmd::TenantChanged { tenant_id } => self.load_tenant(tenant_id).await?,
            Cmd::Explain { ids, viewer, reply } => {
                let _ = reply.send(self.explain(&ids, viewer));
            }
            Cmd::Nodes { reply } => {
                let _ = reply.send(self.node_views());
            }
        }
        Ok(())
    }

    fn submit(
        &mut self,
        tenant_id: i64,
        tenant: String,
        job: NewJob,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<Job, Refusal> {
        self.tenant_names.entry(tenant_id).or_insert(tenant.clone());
        let id = self.next_job;
        let j = Job {
            id,
            tenant,
            name: job.name.clone(),
            command: job.command.clone(),
            tasks: job.tasks,
            cpu_milli: job.cpu_milli,
            memory_mib: job.memory_mib,
            num_gpu: job.num_gpu,
            gpu_milli: job.gpu_milli,
            gpu_models: job.gpu_models.clone(),
            class: job.class.clone(),
            env: job.env.clone(),
            workdir: job.workdir.clone(),
            max_runtime_s: job.max_runtime_s,
            retries: job.retries,
            run: 0,
            state: "PENDING".to_string(),
            submitted_ms: now,
            started_ms: None,
            ended_ms: None,
            reason: None,
        };
        let spec = self.spec_of(&j)?;
        self.sched
            .admissible(&spec)
            .map_err(Refusal::Unsatisfiable)?;
        self.next_job += 1;
        w.push(Write::InsertJob {
            id,
            tenant_id,
            job,
            at: now,
        });
        w.push(Write::Event {
            job: id,
            at: now,
            kind: "SUBMITTED",
            detail: String::new(),
        });
        let h = self.sched.submit(spec);
        self.track(&j, h);
        self.dirty = true;
        Ok(j)
    }

    async fn cancel(
        &mut self,
        id: i64,
        tenant: Option<i64>,
        now: i64,
        w: &mut Vec<Write>,
    ) -> anyhow::Result<Result<(), Refusal>> {
        let visible = self
            .jobs
            .get(&id)
            .is_some_and(|l| tenant.is_none_or(|t| t == l.tenant_id));
        if !visible {
            // Not live: either absent (or another tenant's) or already over.
            return Ok(match self.store.job(id, tenant).await {
                Ok(j) => Err(Refusal::NotCancellable(j.state)),
                Err(crate::store::StoreError::NotFound) => Err(Refusal::NotFound),
                Err(e) => return Err(e.into()),
            });
        }
        let was_running = !self.jobs[&id].tasks.is_empty();
        self.stop_tasks(id, "cancelled", now, w);
        let l = self.untrack(id).expect("live job");
        self.sched.cancel(l.handle, now as u64);
        transition(
            w,
            id,
            "CANCELLED",
            Some(now),
            "CANCELLED",
            format!("from {}", if was_running { "RUNNING" } else { "PENDING" }),
            now,
        );
        self.dirty = true;
        Ok(Ok(()))
    }

    fn register(
        &mut self,
        reg: Registration,
        now: i64,
        w: &mut Vec<Write>,
    ) -> anyhow::Result<Result<Node, Refusal>> {
        let rack = reg.labels.get("rack").cloned().unwrap_or_default();
        if let Some(&id) = self.node_ids.get(&reg.name) {
            let old = &self.nodes[&id].node;
            let same = old.gpu_model == reg.gpu_model
                && old.gpus == reg.gpus
                && old.cpu_milli == reg.cpu_milli
                && old.memory_mib == reg.memory_mib
                && old.rack == rack;
            let state = if old.state == "draining" {
                "draining"
            } else {
                "ready"
            };
            let node = Node {
                addr: reg.addr,
                labels: reg.labels,
                state: state.to_string(),
                last_heartbeat_ms: now,
                gpu_model: reg.gpu_model,
                gpus: reg.gpus,
                gpu_memory_mib: reg.gpu_memory_mib,
                cpu_milli: reg.cpu_milli,
                memory_mib: reg.memory_mib,
                rack,
                ..old.clone()
            };
            let handle = self.nodes[&id].handle;
            if same {
                if self.nodes[&id].node.state == "down" {
                    self.sched.set_closed(handle, false);
                    self.dirty = true;
                }
                self.nodes.get_mut(&id).expect("node").node = node.clone();
            } else {
                let busy = self.on_node.get(&id).is_some_and(|t| !t.is_empty());
                if busy {
                    return Ok(Err(Refusal::Conflict(format!(
                        "node {} has running tasks; its inventory cannot change until they end",
                        reg.name
                    ))));
                }
                if let Some(r) = self.model_room(&node) {
                    return Ok(Err(r));
                }
                // Retire the old scheduler node (closed for good) and add
                // one with the new inventory under the same id.
                self.sched.set_closed(handle, true);
                self.nodes.remove(&id);
                self.add_node(node.clone())?;
                if node.state != "ready" {
                    let h = self.nodes[&id].handle;
                    self.sched.set_closed(h, true);
                }
            }
            w.push(Write::UpsertNode(node.clone()));
            return Ok(Ok(node));
        }
        let node = Node {
            id: self.next_node,
            name: reg.name,
            addr: reg.addr,
            gpu_model: reg.gpu_model,
            gpus: reg.gpus,
            gpu_memory_mib: reg.gpu_memory_mib,
            cpu_milli: reg.cpu_milli,
            memory_mib: reg.memory_mib,
            rack,
            labels: reg.labels,
            state: "ready".to_string(),
            registered_ms: now,
            last_heartbeat_ms: now,
        };
        if let Some(r) = self.model_room(&node) {
            return Ok(Err(r));
        }
        self.next_node += 1;
        tracing::info!(node = %node.name, gpus = node.gpus, model = ?node.gpu_model, "node registered");
        self.add_node(node.clone())?;
        w.push(Write::UpsertNode(node.clone()));
        Ok(Ok(node))
    }

    fn drain(
        &mut self,
        name: &str,
        drain: bool,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<String, Refusal> {
        let id = *self.node_ids.get(name).ok_or(Refusal::NotFound)?;
        let n = self.nodes.get_mut(&id).expect("node");
        let state = match (n.node.state.as_str(), drain) {
            ("down", false) => {
                return Err(Refusal::Conflict(format!(
                    "node {name} is down; it becomes ready when its agent registers again"
                )))
            }
            ("down", true) => return Ok("down".to_string()),
            (_, true) => "draining",
            (_, false) => "ready",
        };
        n.node.state = state.to_string();
        tracing::info!(node = name, state, "node state changed by the admin");
        let h = n.handle;
        self.sched.set_closed(h, drain);
        w.push(Write::NodeState {
            node: id,
            state,
            at: now,
        });
        self.dirty = true;
        Ok(state.to_string())
    }

    fn heartbeat(
        &mut self,
        name: &str,
        report: Report,
        full: bool,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<i64, Refusal> {
        let node = *self.node_ids.get(name).ok_or(Refusal::NotFound)?;
        let n = self.nodes.get_mut(&node).expect("node");
        n.node.last_heartbeat_ms = now;
        if n.node.state == "down" {
            // The agent is back: the node takes work again.
            n.node.state = "ready".to_string();
            let h = n.handle;
            self.sched.set_closed(h, false);
            w.push(Write::NodeState {
                node,
                state: "ready",
                at: now,
            });
            self.dirty = true;
        }
        w.push(Write::Heartbeat { node, at: now });
        let mut alive: BTreeSet<(i64, i64, i64)> = BTreeSet::new();
        for t in &report.running {
            alive.insert((t.job, t.run, t.task));
            let current = self.jobs.get(&t.job).is_some_and(|l| {
                l.run == t.run && l.tasks.get(t.task as usize).is_some_and(|x| x.0 == node)
            });
            let killing = self
                .killing
                .get(&node)
                .is_some_and(|k| k.contains(&(t.job, t.run, t.task)));
            if !current && !killing {
                // Not ours (any more): a leftover, or a task of a node that
                // was down. Have the agent stop it.
                self.killing
                    .entry(node)
                    .or_default()
                    .insert((t.job, t.run, t.task));
                w.push(Write::TaskState {
                    job: t.job,
                    run: t.run,
                    task: Some(t.task),
                    from: &["ASSIGNED", "RUNNING", "LOST"],
                    to: "KILLING",
                    at: None,
                    exit_code: None,
                    reason: "not a live task of this node".to_string(),
                });
                continue;
            }
            let Some(l) = self.jobs.get_mut(&t.job) else {
                continue;
            };
            let Some(slot) = l.tasks.get_mut(t.task as usize) else {
                continue;
            };
            if l.run == t.run && slot.0 == node && slot.1 == TaskSt::Assigned {
                slot.1 = TaskSt::Running;
                w.push(Write::TaskState {
                    job: t.job,
                    run: t.run,
                    task: Some(t.task),
                    from: &["ASSIGNED"],
                    to: "RUNNING",
                    at: None,
                    exit_code: None,
                    reason: String::new(),
                });
            }
        }
        for e in &report.exited {
            self.task_exited(node, e, now, w);
        }
        if !full {
            return Ok(node);
        }
        // Kill orders the agent no longer reports running are done.
        if let Some(k) = self.killing.get_mut(&node) {
            let gone: Vec<(i64, i64, i64)> =
                k.iter().filter(|t| !alive.contains(t)).copied().collect();
            for (job, run, task) in gone {
                k.remove(&(job, run, task));
                w.push(Write::TaskState {
                    job,
                    run,
                    task: Some(task),
                    from: &["KILLING"],
                    to: "KILLED",
                    at: None, // billing ended when the kill was ordered
                    exit_code: None,
                    reason: String::new(),
                });
            }
        }
        // Tasks the agent had confirmed but no longer reports are lost.
        let lost: Vec<(i64, i64, i64)> = self
            .on_node
            .get(&node)
            .into_iter()
            .flatten()
            .filter_map(|&(job, task)| {
                let l = &self.jobs[&job];
                (l.tasks[task as usize].1 == TaskSt::Running).then_some((job, l.run, task))
            })
            .filter(|k| !alive.contains(k))
            .collect();
        for (job, run, task) in lost {
            let e = TaskExit {
                job,
                run,
                task,
                exit_code: None,
                signal: None,
                reason: "lost: the agent no longer runs it".to_string(),
                timeout: false,
            };
            self.task_exited(node, &e, now, w);
        }
        Ok(node)
    }

    /// Nodes whose agent missed its lease are down; their live tasks are
    /// lost as of the last heartbeat.
    fn expire_leases(&mut self, now: i64, w: &mut Vec<Write>) {
        let expired: Vec<i64> = self
            .nodes
            .values()
            .filter(|n| n.node.state != "down" && now - n.node.last_heartbeat_ms > self.lease_ms)
            .map(|n| n.node.id)
            .collect();
        for id in expired {
            let n = self.nodes.get_mut(&id).expect("node");
            n.node.state = "down".to_string();
            let (h, last, name) = (n.handle, n.node.last_heartbeat_ms, n.node.name.clone());
            self.sched.set_closed(h, true);
            w.push(Write::NodeState {
                node: id,
                state: "down",
                at: last,
            });
            tracing::warn!(node = %name, "node down: no heartbeat within the lease");
            let tasks: Vec<(i64, i64)> = self
                .on_node
                .get(&id)
                .map(|t| t.iter().copied().collect())
                .unwrap_or_default();
            for (job, task) in tasks {
                let run = self.jobs[&job].run;
                let e = TaskExit {
                    job,
                    run,
                    task,
                    exit_code: None,
                    signal: None,
                    reason: format!("lost: node {name} missed its lease"),
                    timeout: false,
                };
                self.task_exited(id, &e, last, w);
            }
            self.dirty = true;
        }
    }

    fn task_exited(&mut self, node: i64, e: &TaskExit, now: i64, w: &mut Vec<Write>) {
        let code = e.exit_code.unwrap_or(-1);
        let how = match (e.exit_code, e.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "no exit status".to_string(),
        };
        let reason = if e.reason.is_empty() {
            how.clone()
        } else {
            format!("{how}: {}", e.reason)
        };
        let current = self.jobs.get(&e.job).is_some_and(|l| {
            l.run == e.run
                && l.tasks
                    .get(e.task as usize)
                    .is_some_and(|t| t.0 == node && t.1 != TaskSt::Exited(0))
        });
        if !current {
            // A task of an earlier attempt, or one being killed.
            if let Some(k) = self.killing.get_mut(&node) {
                k.remove(&(e.job, e.run, e.task));
            }
            w.push(Write::TaskState {
                job: e.job,
                run: e.run,
                task: Some(e.task),
                from: &["KILLING"],
                to: "KILLED",
                at: None, // billing ended when the kill was ordered
                exit_code: e.exit_code,
                reason: reason.clone(),
            });
            return;
        }
        let lost = e.exit_code.is_none() && e.signal.is_none();
        w.push(Write::TaskState {
            job: e.job,
            run: e.run,
            task: Some(e.task),
            from: &["ASSIGNED", "RUNNING"],
            to: if lost { "LOST" } else { "EXITED" },
            at: Some(now),
            exit_code: e.exit_code,
            reason: reason.clone(),
        });
        let l = self.jobs.get_mut(&e.job).expect("live");
        l.tasks[e.task as usize].1 = TaskSt::Exited(code);
        if let Some(set) = self.on_node.get_mut(&node) {
            set.remove(&(e.job, e.task));
        }
        let l = self.jobs.get_mut(&e.job).expect("live");
        let all_ok = l.tasks.iter().all(|t| t.1 == TaskSt::Exited(0));
        let (handle, run, retries) = (l.handle, l.run, l.retries);
        if e.exit_code == Some(0) && !all_ok {
            return; // wait for the rest of the gang
        }
        self.dirty = true;
        if all_ok {
            self.untrack(e.job);
            self.sched.complete(handle, now as u64);
            transition(
                w,
                e.job,
                "COMPLETED",
                Some(now),
                "COMPLETED",
                String::new(),
                now,
            );
            return;
        }
        // The attempt failed: stop the rest of the gang.
        self.stop_tasks(e.job, "another task of the gang failed", now, w);
        let detail = format!("task {} {reason}", e.task);
        if run <= retries && !e.timeout {
            self.sched.requeue(handle, now as u64);
            transition(
                w,
                e.job,
                "PENDING",
                None,
                "RETRYING",
                format!("{detail}; attempt {} of {}", run + 1, retries + 1),
                now,
            );
        } else {
            self.untrack(e.job);
            self.sched.complete(handle, now as u64);
            transition(w, e.job, "FAILED", Some(now), "FAILED", detail, now);
        }
    }

    fn model_names(&self, set: ModelSet) -> String {
        if set.is_any() {
            return "any model".to_string();
        }
        let names: Vec<&str> = (0..self.models.len())
            .filter(|&i| set.accepts(Some(ModelId(i as u8))))
            .map(|i| self.models.name(ModelId(i as u8)))
            .collect();
        names.join("|")
    }

    fn explain(&self, ids: &[i64], viewer: Option<i64>) -> HashMap<i64, String> {
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
                WhyPending::Resources { models, tasks, fit } => {
                    let r = spec.req;
                    let what = if r.num_gpu == 0 {
                        format!("{} CPU and {} MiB free", gpus(r.cpu_milli), r.memory_mib)
                    } else if r.is_share() {
                        format!(
                            "a GPU with {} free of model {}",
                            gpus(r.gpu_milli as u64),
                            self.model_names(models)
                        )
                    } else {
                        format!(
                            "{} free GPUs of model {}",
                            r.num_gpu,
                            self.model_names(models)
                        )
                    };
                    if tasks == 1 {
                        format!("resources: no node has {what}")
                    } else {
                        format!(
                            "resources: only {fit} of the gang's {tasks} tasks fit now (each needs {what})"
                        )
                    }
                }
                WhyPending::Queue { ahead: 0, .. } => {
                    "queued: resources are free; it starts at the next pass".to_string()
                }
                WhyPending::Queue { ahead, own } => match viewer {
                    None => format!("priority: waiting behind {ahead} higher-priority jobs"),
                    Some(_) if own == ahead => {
                        format!("priority: waiting behind {own} higher-priority jobs of yours")
                    }
                    Some(_) => format!(
                        "priority: waiting behind higher-priority jobs ({own} of them yours)"
                    ),
                },
            };
            out.insert(*id, text);
        }
        out
    }

    fn node_views(&self) -> Vec<NodeView> {
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

/// A job's state change and the event that records it (always together).
fn transition(
    w: &mut Vec<Write>,
    job: i64,
    state: &'static str,
    ended: Option<i64>,
    kind: &'static str,
    detail: String,
    now: i64,
) {
    w.push(Write::JobState { job, state, ended });
    w.push(Write::Event {
        job,
        at: now,
        kind,
        detail,
    });
}

fn describe_tasks(tasks: &[(i64, i64)], nodes: &BTreeMap<i64, LiveNode>) -> String {
    let parts: Vec<String> = tasks
        .iter()
        .map(|(n, mask)| {
            let name = nodes.get(n).map_or("?", |x| x.node.name.as_str());
            let devs = crate::store::mask_devices(*mask);
            if devs.is_empty() {
                name.to_string()
            } else {
                format!("{name}{devs:?}")
            }
        })
        .collect();
    parts.join(", ")
}

/// Recover the loop from the store and start it; returns the handle and
/// the task (which ends with an error if the store fails).
pub async fn start(
    store: Store,
    cfg: &LoopConfig,
) -> anyhow::Result<(Control, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let lp = Loop::recover(store, cfg).await?;
    let (tx, rx) = mpsc::channel(16 * 1024);
    let control = Control {
        tx,
        metrics: lp.metrics.clone(),
        heartbeat_interval_s: cfg.heartbeat_interval_s,
    };
    let task = tokio::spawn(lp.run(rx));
    Ok((control, task))
}
