//! The loop's IO: a channel of requests in, the clock, one store commit per
//! batch (pipelined with the next batch's pass), answers out after their
//! batch's commit. Every decision is [`Core::step`]'s.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use super::core::Core;
use super::forward::{Forwarded, Forwarder, Reply as InboxReply};
use super::metrics::{ended_jobs, Ended, Metrics};
use super::recover::Snapshot;
use super::wakes::Wakes;
use super::{
    Answer, Command, IdBlock, LoopConfig, NodeOrders, NodeView, Refusal, Registration, Report,
    MAX_BATCH,
};
use crate::store::{now_ms, Committing, Job, NewJob, Node, NodeState, Store, StoreError, Write};

#[allow(clippy::large_enum_variant)] // nearly every message is an Ask
pub(super) enum Msg {
    Ask(Command, oneshot::Sender<Answer>),
    /// A tenant's weight or quotas changed in the store: the driver reads
    /// them (in order with the other commands) and hands them to the core.
    TenantChanged(i64),
    /// A request a follower stored in the inbox: answered in the store,
    /// in the transaction of its batch.
    Inbox(i64, Forwarded),
    /// An inbox request that could not be read: answered with why.
    InboxUnreadable(i64, String),
}

/// Where a command's answer goes.
enum Reply {
    Here(oneshot::Sender<Answer>),
    /// Into the inbox row, in the batch's transaction.
    Inbox(i64),
    /// Nowhere (a tenant change).
    Nobody,
}

/// The loop did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// No loop here: this replica does not lead (another server runs the
    /// loop, or none does yet). The request was not processed: it is safe
    /// to send it to another replica, whatever it is.
    NotLeader,
    /// The loop stopped before answering (the server is stopping, or its
    /// store failed, or it was deposed): the request may or may not have
    /// taken effect.
    Unanswered,
}

/// The handle handlers use to talk to the loop. On a replica that does not
/// hold the leader lease there is no loop: every call is [`Gone`] (a 503
/// that sends clients to another replica) until it takes the lease
/// ([`Control::lead`]).
#[derive(Clone)]
pub struct Control {
    tx: std::sync::Arc<std::sync::RwLock<Option<mpsc::Sender<Msg>>>>,
    /// While not leading: requests go through the store's inbox to the
    /// leader (none: 503 `not_leader`, e.g. before the store is known).
    forwarder: std::sync::Arc<std::sync::OnceLock<Forwarder>>,
    /// The leader's inbox reader, stopped when the term ends.
    intake: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    pub metrics: Metrics,
    /// The nodes' order sequences agents wait on.
    pub wakes: Wakes,
    /// Told to agents when they register.
    pub heartbeat_interval_s: u64,
}

impl Control {
    /// A handle with no loop behind it yet.
    pub fn idle(cfg: &LoopConfig) -> Control {
        Control {
            tx: Default::default(),
            forwarder: Default::default(),
            intake: Default::default(),
            metrics: Metrics::new(),
            wakes: Wakes::default(),
            heartbeat_interval_s: cfg.heartbeat_interval_s,
        }
    }

    /// Whether a loop answers this handle now.
    pub fn leading(&self) -> bool {
        self.sender().is_some()
    }

    /// Whether requests are served: by the loop here, or through the
    /// inbox to the leader.
    pub fn serves(&self) -> bool {
        self.leading() || self.forwarder.get().is_some()
    }

    /// While this replica does not lead, send requests through `store`'s
    /// inbox, waiting at most `wait` for each answer, and mirror the
    /// leader's wake hints.
    pub async fn forward_through(&self, store: Store, wait: Duration) {
        let tx = self.tx.clone();
        let following = move || tx.read().unwrap_or_else(|e| e.into_inner()).is_none();
        let f = Forwarder::start(store, self.wakes.clone(), wait, following).await;
        let _ = self.forwarder.set(f);
    }

    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, tx: Option<mpsc::Sender<Msg>>) {
        *self.tx.write().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    /// Recover a loop from `store` and run it behind this handle (the
    /// replica took the lease). Its metrics and wakes are this handle's.
    pub async fn lead(
        &self,
        store: Store,
        cfg: &LoopConfig,
    ) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
        let d = Driver::recover_with(store.clone(), cfg, self.metrics.clone(), self.wakes.clone())
            .await?;
        let (tx, rx) = mpsc::channel(16 * 1024);
        self.set(Some(tx.clone()));
        let task = tokio::spawn(d.run(rx));
        let intake = tokio::spawn(super::forward::intake(store.clone(), tx.downgrade()));
        if let Some(old) = self.intakes().replace(intake) {
            old.abort();
        }
        // A tenant or quota an admin changed while the loop recovered: read
        // them all again (in order with what follows).
        if let Ok(all) = store.tenants().await {
            for t in all {
                let _ = tx.send(Msg::TenantChanged(t.id)).await;
            }
        }
        Ok(task)
    }

    /// Detach the loop (the replica lost the lease): new calls are [`Gone`];
    /// the loop answers what it holds and stops once the last clone of its
    /// sender is dropped.
    pub fn follow(&self) {
        self.set(None);
        if let Some(i) = self.intakes().take() {
            i.abort();
        }
        self.wakes.wake_all();
    }

    fn intakes(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        self.intake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send a command and wait for its answer (after the batch's commit);
    /// on a follower, through the inbox.
    pub async fn ask(&self, cmd: Command) -> Result<Answer, Gone> {
        let Some(tx) = self.sender() else {
            return match self.forwarder.get() {
                Some(f) => f.ask(Forwarded::Ask(cmd)).await,
                None => Err(Gone::NotLeader),
            };
        };
        let (reply, rx) = oneshot::channel();
        // Not delivered: the loop never saw it.
        tx.send(Msg::Ask(cmd, reply))
            .await
            .map_err(|_| Gone::NotLeader)?;
        rx.await.map_err(|_| Gone::Unanswered)
    }

    pub async fn tenant_changed(&self, tenant_id: i64) {
        match (self.sender(), self.forwarder.get()) {
            (Some(tx), _) => {
                let _ = tx.send(Msg::TenantChanged(tenant_id)).await;
            }
            (None, Some(f)) => {
                let _ = f.ask(Forwarded::TenantChanged(tenant_id)).await;
            }
            (None, None) => {}
        }
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
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn cancel(&self, id: i64, tenant: Option<i64>) -> Result<Result<(), Refusal>, Gone> {
        match self.ask(Command::Cancel { id, tenant }).await? {
            Answer::Cancelled(r) => Ok(r),
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn register(&self, reg: Registration) -> Result<Result<Node, Refusal>, Gone> {
        match self.ask(Command::Register(reg)).await? {
            Answer::Registered(r) => Ok(r),
            _ => Err(Gone::Unanswered),
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
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn drain(
        &self,
        node: String,
        drain: bool,
        actor: String,
    ) -> Result<Result<NodeState, Refusal>, Gone> {
        match self.ask(Command::Drain { node, drain, actor }).await? {
            Answer::Drained(r) => Ok(r),
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn remove_node(
        &self,
        node: String,
        actor: String,
    ) -> Result<Result<(), Refusal>, Gone> {
        match self.ask(Command::RemoveNode { node, actor }).await? {
            Answer::Removed(r) => Ok(r),
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn explain(
        &self,
        ids: Vec<i64>,
        viewer: Option<i64>,
    ) -> Result<HashMap<i64, String>, Gone> {
        match self.ask(Command::Explain { ids, viewer }).await? {
            Answer::Reasons(r) => Ok(r),
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn pool(&self, viewer: Option<i64>) -> Result<super::PoolView, Gone> {
        match self.ask(Command::Pool { viewer }).await? {
            Answer::Pool(r) => Ok(r),
            _ => Err(Gone::Unanswered),
        }
    }

    pub async fn nodes(&self) -> Result<Vec<NodeView>, Gone> {
        match self.ask(Command::Nodes).await? {
            Answer::Nodes(r) => Ok(r),
            _ => Err(Gone::Unanswered),
        }
    }
}

/// Seconds one batch took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// [`Core::step`]: commands plus the scheduling pass.
    pub step_s: f64,
    /// The store's time on the batch's writes, until durable.
    pub commit_s: f64,
    pub decisions: usize,
    /// Rows the commit inserted or updated.
    pub rows: usize,
    /// Batches (passes) this covers.
    pub batches: usize,
}

impl Timing {
    fn add(&mut self, t: Timing) {
        self.step_s += t.step_s;
        self.commit_s += t.commit_s;
        self.decisions += t.decisions;
        self.rows += t.rows;
        self.batches += t.batches;
    }
}

/// A batch computed by the core, its answers held back.
struct Prepared {
    writes: Vec<Write>,
    answers: Vec<Answer>,
    replies: Vec<oneshot::Sender<Answer>>,
    started: Instant,
    step_s: f64,
    decisions: usize,
    poked: Vec<String>,
}

/// A batch whose writes are with the store; its answers go out once they
/// are durable.
struct InFlight {
    commit: Committing,
    answers: Vec<Answer>,
    replies: Vec<oneshot::Sender<Answer>>,
    started: Instant,
    step_s: f64,
    decisions: usize,
    rows: usize,
    writes: usize,
    ended: Ended,
    poked: Vec<String>,
}

/// The core with its store and metrics: what [`start`] runs, and what
/// benchmarks drive directly.
///
/// Batches are pipelined: while the store's writer commits batch N (and
/// holds up to [`DEPTH`] - 1 batches in all), the core computes the next
/// one and hands it over at once; the writer commits them in order, and
/// every answer waits for its own batch. A failed commit stops the loop:
/// the batches handed over after it are refused unapplied by the store
/// (see [`crate::store::Backend::commit`]) and nothing computed after it is
/// answered.
/// Batches with the store at once, at most. Two keep the writer busy
/// while the core computes; a third absorbs a long commit (10,000 node
/// changes in one batch) without stalling the core behind it.
const DEPTH: usize = 3;

pub struct Driver {
    core: Core,
    store: Store,
    metrics: Metrics,
    wakes: Wakes,
}

impl Driver {
    /// Read the store, rebuild and check the loop.
    pub async fn recover(store: Store, cfg: &LoopConfig) -> anyhow::Result<Driver> {
        Driver::recover_with(store, cfg, Metrics::new(), Wakes::default()).await
    }

    /// [`recover`](Self::recover), publishing to `m` and poking `wakes`.
    pub async fn recover_with(
        store: Store,
        cfg: &LoopConfig,
        m: Metrics,
        wakes: Wakes,
    ) -> anyhow::Result<Driver> {
        let snap = Snapshot::load(&store).await?;
        let core = Core::recover(snap, cfg, now_ms())?;
        m.publish(&core, None, 0, &Ended::default());
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
            wakes,
        })
    }

    /// Decisions taken since start.
    /// The loop's state (read-only): its scheduler, target workload, ...
    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn decisions_total(&self) -> u64 {
        self.metrics.decisions()
    }

    /// One batch without answers, committed before it returns (benchmarks
    /// and tests).
    pub async fn step(&mut self, cmds: Vec<Command>) -> anyhow::Result<Timing> {
        let p = self.prepare(asks(cmds)).await?;
        let f = self.hand(p);
        self.land(f).await
    }

    /// Like [`step`](Self::step), then passes until none is cut short, as
    /// the running loop does (each pass computed while the previous one
    /// commits); returns the sums over all batches.
    pub async fn settle(&mut self, cmds: Vec<Command>) -> anyhow::Result<Timing> {
        let mut total = Timing::default();
        let mut inflight = VecDeque::with_capacity(DEPTH);
        let p = self.prepare(asks(cmds)).await?;
        inflight.push_back(self.hand(p));
        while self.core.wants_pass() {
            let p = self.prepare(Vec::new()).await?;
            inflight.push_back(self.hand(p));
            while inflight.len() >= DEPTH {
                let f = inflight.pop_front().expect("a batch in flight");
                total.add(self.land(f).await?);
            }
        }
        while let Some(f) = inflight.pop_front() {
            total.add(self.land(f).await?);
        }
        Ok(total)
    }

    /// Apply one batch of messages to the core: its writes and answers.
    async fn prepare(&mut self, msgs: Vec<Msg>) -> anyhow::Result<Prepared> {
        let mut cmds = Vec::with_capacity(msgs.len());
        let mut replies = Vec::with_capacity(msgs.len());
        // Answers to inbox requests that are not commands for the core.
        let mut extra: Vec<(i64, InboxReply)> = Vec::new();
        for m in msgs {
            match m {
                Msg::Ask(c, r) => {
                    cmds.push(c);
                    replies.push(Reply::Here(r));
                }
                Msg::Inbox(id, Forwarded::Ask(c)) => {
                    cmds.push(c);
                    replies.push(Reply::Inbox(id));
                }
                Msg::InboxUnreadable(id, why) => extra.push((id, Err(why))),
                Msg::TenantChanged(id) | Msg::Inbox(_, Forwarded::TenantChanged(id)) => {
                    if let Msg::Inbox(inbox, _) = m {
                        extra.push((inbox, Ok(Answer::Done)));
                    }
                    let t = self.store.tenants().await?.into_iter().find(|t| t.id == id);
                    if let Some(tenant) = t {
                        let quotas = self.store.quotas(id).await?;
                        cmds.push(Command::Tenant { tenant, quotas });
                        replies.push(Reply::Nobody);
                    }
                }
            }
        }
        self.reserve_ids(&cmds).await?;
        let started = Instant::now();
        let now = now_ms();
        let mut step = self.core.step(cmds, now);
        // Reads (why-pending reasons, node views) wrote nothing: they are
        // answered now, not after the batch's commit (a tenant listing its
        // jobs does not wait behind a long commit). Inbox requests are
        // answered in the batch itself.
        let (mut answers, mut waiting) = (Vec::new(), Vec::new());
        for (a, r) in step.answers.into_iter().zip(replies) {
            match (a, r) {
                (a, Reply::Inbox(id)) => extra.push((id, Ok(a))),
                (_, Reply::Nobody) => {}
                (a @ (Answer::Reasons(_) | Answer::Nodes(_) | Answer::Pool(_)), Reply::Here(r)) => {
                    let _ = r.send(a);
                }
                (a, Reply::Here(r)) => {
                    answers.push(a);
                    waiting.push(r);
                }
            }
        }
        for (inbox, reply) in extra {
            step.writes.push(Write::Answer {
                inbox,
                body: serde_json::to_string(&reply).context("writing an inbox answer")?,
                at: now,
            });
        }
        wake_hints(&mut step.writes, &step.poked);
        Ok(Prepared {
            writes: step.writes,
            answers,
            replies: waiting,
            started,
            step_s: started.elapsed().as_secs_f64(),
            decisions: step.decisions,
            poked: step.poked,
        })
    }

    /// Reserve in the store the ids `cmds` may need beyond the core's.
    async fn reserve_ids(&mut self, cmds: &[Command]) -> anyhow::Result<()> {
        for (kind, n) in self.core.ids_to_reserve(cmds) {
            let first = self
                .store
                .reserve_ids(kind, n)
                .await
                .context("reserving ids in the store")?;
            self.core.grant_ids(kind, IdBlock::new(first, n));
        }
        Ok(())
    }

    /// Hand a batch's writes to the store.
    fn hand(&self, p: Prepared) -> InFlight {
        let rows = p.writes.iter().map(Write::rows).sum();
        let writes = p.writes.len();
        let ended = ended_jobs(&p.writes);
        InFlight {
            commit: self.store.commit(p.writes),
            answers: p.answers,
            replies: p.replies,
            started: p.started,
            step_s: p.step_s,
            decisions: p.decisions,
            rows,
            writes,
            ended,
            poked: p.poked,
        }
    }

    /// Wait until a batch is durable, then answer.
    async fn land(&mut self, mut f: InFlight) -> anyhow::Result<Timing> {
        let r = (&mut f.commit).await;
        self.finish(f, r)
    }

    /// Answer a batch whose commit ended with `r`; an error stops the loop.
    fn finish(&mut self, f: InFlight, r: Result<Duration, StoreError>) -> anyhow::Result<Timing> {
        let commit_s = r
            .context("committing a scheduling batch; stopping (restart recovers from the store)")?
            .as_secs_f64();
        if f.decisions > 0 {
            tracing::debug!(
                decisions = f.decisions,
                writes = f.writes,
                seconds = f.step_s + commit_s,
                "batch committed"
            );
        }
        for (a, r) in f.answers.into_iter().zip(f.replies) {
            let _ = r.send(a);
        }
        self.wakes.poke(&f.poked);
        self.metrics.publish(
            &self.core,
            Some(f.started.elapsed()),
            f.decisions as u64,
            &f.ended,
        );
        Ok(Timing {
            step_s: f.step_s,
            commit_s,
            decisions: f.decisions,
            rows: f.rows,
            batches: 1,
        })
    }

    /// Run until the channel closes (server shutdown) or the store fails.
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(DEPTH);
        let mut open = true;
        loop {
            if batch.is_empty() && !self.core.wants_pass() {
                if !open {
                    // Shutting down: answer what is in flight, then stop.
                    while let Some(f) = inflight.pop_front() {
                        self.land(f).await?;
                    }
                    return Ok(());
                }
                // Nothing to compute: wait for a request, the oldest
                // commit in flight, or the scheduler's next wake-up.
                let wake = self
                    .core
                    .next_wakeup()
                    .map(|t| Duration::from_millis(t.saturating_sub(now_ms()).max(0) as u64))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                let landed = match inflight.front_mut() {
                    Some(f) => tokio::select! {
                        got = rx.recv() => { open = push(&mut batch, got); None }
                        r = &mut f.commit => Some(r),
                        _ = tokio::time::sleep(wake) => None,
                    },
                    None => tokio::select! {
                        got = rx.recv() => { open = push(&mut batch, got); None }
                        _ = tokio::time::sleep(wake) => None,
                    },
                };
                if let Some(r) = landed {
                    let f = inflight.pop_front().expect("a commit was in flight");
                    self.finish(f, r)?;
                    continue;
                }
                if !open {
                    continue;
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let p = self.prepare(std::mem::take(&mut batch)).await?;
            inflight.push_back(self.hand(p));
            // Answer what is already durable, then wait while the store
            // holds too much.
            while let Some(r) = inflight.front_mut().and_then(|f| f.commit.ready()) {
                let f = inflight.pop_front().expect("a batch in flight");
                self.finish(f, r)?;
            }
            while inflight.len() >= DEPTH {
                let f = inflight.pop_front().expect("a batch in flight");
                self.land(f).await?;
            }
        }
    }
}

/// Tell followers which nodes were given orders (when the batch commits),
/// so the agents that wait on them there are woken too; payloads stay
/// under NOTIFY's 8,000 bytes.
fn wake_hints(writes: &mut Vec<Write>, poked: &[String]) {
    let mut chunk: Vec<&String> = Vec::new();
    let mut len = 0;
    for name in poked {
        if len + name.len() > 7_000 {
            writes.push(hint(&chunk));
            chunk.clear();
            len = 0;
        }
        len += name.len() + 3;
        chunk.push(name);
    }
    if !chunk.is_empty() {
        writes.push(hint(&chunk));
    }
}

fn hint(names: &[&String]) -> Write {
    Write::Notify {
        channel: crate::store::channels::WAKES,
        payload: serde_json::to_string(names).unwrap_or_default(),
    }
}

/// Commands without anyone waiting for their answers.
fn asks(cmds: Vec<Command>) -> Vec<Msg> {
    cmds.into_iter()
        .map(|c| Msg::Ask(c, oneshot::channel().0))
        .collect()
}

/// Queue a received message; false when the channel closed.
fn push(batch: &mut Vec<Msg>, got: Option<Msg>) -> bool {
    match got {
        Some(m) => {
            batch.push(m);
            true
        }
        None => false,
    }
}

/// Recover the loop from the store and start it; returns the handle and
/// the task (which ends with an error if the store fails).
pub async fn start(
    store: Store,
    cfg: &LoopConfig,
) -> anyhow::Result<(Control, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let control = Control::idle(cfg);
    let task = control.lead(store, cfg).await?;
    Ok((control, task))
}
