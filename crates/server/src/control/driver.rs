//! The loop's IO: a channel of requests in, the clock, one store commit per
//! batch, answers out after the commit. Every decision is [`Core::step`]'s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use super::core::Core;
use super::metrics::Metrics;
use super::recover::Snapshot;
use super::{
    Answer, Command, LoopConfig, NodeOrders, NodeView, Refusal, Registration, Report, MAX_BATCH,
};
use crate::store::{now_ms, Job, NewJob, Node, NodeState, Store, Write};

#[allow(clippy::large_enum_variant)] // nearly every message is an Ask
enum Msg {
    Ask(Command, oneshot::Sender<Answer>),
    /// A tenant's weight or quotas changed in the store: the driver reads
    /// them (in order with the other commands) and hands them to the core.
    TenantChanged(i64),
}

/// The loop stopped (the server is shutting down, or its store failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// The handle handlers use to talk to the loop.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Msg>,
    pub metrics: Metrics,
    /// Told to agents when they register.
    pub heartbeat_interval_s: u64,
}

impl Control {
    /// Send a command and wait for its answer (after the batch's commit).
    pub async fn ask(&self, cmd: Command) -> Result<Answer, Gone> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Ask(cmd, tx)).await.map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    pub async fn tenant_changed(&self, tenant_id: i64) {
        let _ = self.tx.send(Msg::TenantChanged(tenant_id)).await;
    }

    pub async fn submit(
        &self,
        tenant_id: i64,
        tenant: String,
        job: NewJob,
    ) -> Result<Result<Job, Refusal>, Gone> {
        let cmd = Command::Submit {
            tenant_id,
            tenant,
            job,
        };
        match self.ask(cmd).await? {
            Answer::Submitted(r) => Ok(r),
            _ => Err(Gone),
        }
    }

    pub async fn cancel(&self, id: i64, tenant: Option<i64>) -> Result<Result<(), Refusal>, Gone> {
        match self.ask(Command::Cancel { id, tenant }).await? {
            Answer::Cancelled(r) => Ok(r),
            _ => Err(Gone),
        }
    }

    pub async fn register(&self, reg: Registration) -> Result<Result<Node, Refusal>, Gone> {
        match self.ask(Command::Register(reg)).await? {
            Answer::Registered(r) => Ok(r),
            _ => Err(Gone),
        }
    }

    pub async fn report(
        &self,
        node: String,
        report: Report,
        full: bool,
    ) -> Result<Result<NodeOrders, Refusal>, Gone> {
        match self.ask(Command::Heartbeat { node, report, full }).await? {
            Answer::Orders(r) => Ok(r),
            _ => Err(Gone),
        }
    }

    pub async fn drain(
        &self,
        node: String,
        drain: bool,
    ) -> Result<Result<NodeState, Refusal>, Gone> {
        match self.ask(Command::Drain { node, drain }).await? {
            Answer::Drained(r) => Ok(r),
            _ => Err(Gone),
        }
    }

    pub async fn explain(
        &self,
        ids: Vec<i64>,
        viewer: Option<i64>,
    ) -> Result<HashMap<i64, String>, Gone> {
        match self.ask(Command::Explain { ids, viewer }).await? {
            Answer::Reasons(r) => Ok(r),
            _ => Err(Gone),
        }
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, Gone> {
        match self.ask(Command::Nodes).await? {
            Answer::Nodes(r) => Ok(r),
            _ => Err(Gone),
        }
    }
}

/// Seconds one batch took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// [`Core::step`]: commands plus the scheduling pass.
    pub step_s: f64,
    /// The store commit of the batch's writes.
    pub commit_s: f64,
    pub decisions: usize,
    /// Rows the commit inserted or updated.
    pub rows: usize,
}

/// The core with its store and metrics: what [`start`] runs, and what
/// benchmarks drive directly.
pub struct Driver {
    core: Core,
    store: Store,
    metrics: Metrics,
}

impl Driver {
    /// Read the store, rebuild and check the loop.
    pub async fn recover(store: Store, cfg: &LoopConfig) -> anyhow::Result<Driver> {
        let snap = Snapshot::load(&store).await?;
        let core = Core::recover(snap, cfg, now_ms())?;
        let m = Metrics::new();
        m.publish(&core, None, 0);
        let (pending, running) = core.queue_lengths();
        tracing::info!(
            nodes = core.node_count(),
            running,
            pending,
            gpu_milli_allocated = core.scheduler().allocated_gpu_milli(),
            "recovered and checked the state from the store"
        );
        Ok(Driver {
            core,
            store,
            metrics: m,
        })
    }

    /// Decisions taken since start.
    pub fn decisions_total(&self) -> u64 {
        self.metrics.decisions()
    }

    /// One batch without answers (benchmarks).
    pub async fn step(&mut self, cmds: Vec<Command>) -> anyhow::Result<Timing> {
        let msgs = cmds
            .into_iter()
            .map(|c| Msg::Ask(c, oneshot::channel().0))
            .collect();
        self.batch(msgs).await
    }

    /// Apply one batch, commit it, then answer.
    async fn batch(&mut self, msgs: Vec<Msg>) -> anyhow::Result<Timing> {
        let mut cmds = Vec::with_capacity(msgs.len());
        let mut replies = Vec::with_capacity(msgs.len());
        for m in msgs {
            match m {
                Msg::Ask(c, r) => {
                    cmds.push(c);
                    replies.push(r);
                }
                Msg::TenantChanged(id) => {
                    let t = self.store.tenants().await?.into_iter().find(|t| t.id == id);
                    if let Some(tenant) = t {
                        let quotas = self.store.quotas(id).await?;
                        cmds.push(Command::Tenant { tenant, quotas });
                        replies.push(oneshot::channel().0);
                    }
                }
            }
        }
        let t0 = Instant::now();
        let step = self.core.step(cmds, now_ms());
        let step_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        self.store
            .commit(&step.writes)
            .await
            .context("committing a scheduling batch; stopping (restart recovers from the store)")?;
        let commit_s = t1.elapsed().as_secs_f64();
        if step.decisions > 0 {
            tracing::debug!(
                decisions = step.decisions,
                writes = step.writes.len(),
                seconds = step_s + commit_s,
                "batch committed"
            );
        }
        for (a, r) in step.answers.into_iter().zip(replies) {
            let _ = r.send(a);
        }
        self.metrics
            .publish(&self.core, Some(t0.elapsed()), step.decisions as u64);
        Ok(Timing {
            step_s,
            commit_s,
            decisions: step.decisions,
            rows: step.writes.iter().map(Write::rows).sum(),
        })
    }

    /// Run until the channel closes (server shutdown) or the store fails.
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let wake = self
                .core
                .next_wakeup()
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms()).max(0) as u64))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                got = rx.recv() => match got {
                    Some(m) => batch.push(m),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(wake) => {}
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.batch(std::mem::take(&mut batch)).await?;
        }
    }
}

/// Recover the loop from the store and start it; returns the handle and
/// the task (which ends with an error if the store fails).
pub async fn start(
    store: Store,
    cfg: &LoopConfig,
) -> anyhow::Result<(Control, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let d = Driver::recover(store, cfg).await?;
    let (tx, rx) = mpsc::channel(16 * 1024);
    let control = Control {
        tx,
        metrics: d.metrics.clone(),
        heartbeat_interval_s: cfg.heartbeat_interval_s,
    };
    let task = tokio::spawn(d.run(rx));
    Ok((control, task))
}
