//! The durable store, behind the [`Backend`] trait so that another database
//! (PostgreSQL, to grow past one machine) can be added without touching the
//! API or the scheduling loop. The embedded default is SQLite
//! ([`sqlite::SqliteStore`]): WAL, synchronous=FULL, foreign keys, migrations
//! embedded in the binary.
//!
//! Reads are called by the API handlers; all writes to jobs, tasks and nodes
//! come from the scheduling loop as one [`Write`] batch per transaction
//! ([`Backend::commit`]). Tenants, tokens and quotas are written by the admin
//! handlers directly.

pub mod postgres;
mod services;
mod sql;
pub mod sqlite;

pub use services::{
    NewService, ReplicaRow, RouterCount, ServiceBackend, ServiceRow, TokenRow, TokenSum,
    ROUTER_FORGET_MS,
};
pub use sql::SqlStore;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use suanli_api::{
    AuditEntry, Class, EventKind, Job, JobEvent, JobState, Node, NodeState, Quota, TaskState,
    TaskView, Tenant, TokenInfo, TokenScope,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its passwords replaced by `***` (in the user part and in a
/// `password=` parameter), for messages and logs; a text that is not a URL
/// (it may be a `key=value` connection string) is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL; not shown)".to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{auth}@{host}"),
        },
        None => rest.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{rest}?{q}"),
        None => format!("{scheme}://{rest}"),
    }
}

/// A store: any [`Backend`], shared.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl Store {
    /// The embedded default: SQLite in `DIR/suanli.db`.
    pub async fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store(Arc::new(sqlite::SqliteStore::open(dir).await?)))
    }
    /// A PostgreSQL store: `postgres://USER:PASS@HOST:PORT/DB` (or
    /// `postgresql://`), with libpq's URL parameters (`sslmode`, ...).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if !is_postgres_url(url) {
            return Err(StoreError::Refused(format!(
                "store {:?}: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                redact_url(url)
            )));
        }
        Ok(Store(Arc::new(postgres::PgStore::connect(url).await?)))
    }
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store(backend)
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// What a database must provide. Every method is one statement or one
/// transaction; `commit` applies a batch atomically, in order.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Model services, their replicas, tokens sold and rate limits.
    fn services(&self) -> &dyn ServiceBackend;

    async fn token_count(&self) -> Result<i64, StoreError>;

    // Admin writes: each records itself in the audit log, in its own
    // transaction, as done by `actor` (e.g. "token 3 (admin)").

    async fn create_tenant(
        &self,
        name: &str,
        weight: f64,
        actor: &str,
    ) -> Result<Tenant, StoreError>;

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    async fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError>;

    /// Set (insert or replace) a tenant's quota on a GPU model, in milli.
    async fn set_quota(
        &self,
        tenant_id: i64,
        model: &str,
        guaranteed_milli: i64,
        max_milli: Option<i64>,
        actor: &str,
    ) -> Result<(), StoreError>;

    async fn quotas(&self, tenant_id: i64) -> Result<Vec<Quota>, StoreError>;

    /// Store a token. A node's credential while that node has another live
    /// one is [`StoreError::Conflict`] (atomic: two claims cannot both win).
    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        name: &str,
        audit: (&str, &str),
    ) -> Result<i64, StoreError>;

    /// The id and scope of a live (not revoked) token, by the hash of its
    /// secret.
    async fn scope_of(&self, hash: &str) -> Result<Option<(i64, Scope)>, StoreError>;

    /// Audit entries with id > `after`, oldest first, at most `limit`.
    async fn audit_log(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// Revoke a live token; the last live admin token is refused.
    async fn revoke_token(&self, id: i64, actor: &str) -> Result<(), StoreError>;

    /// A job; with `tenant`, only if it belongs to that tenant.
    async fn job(&self, id: i64, tenant: Option<i64>) -> Result<Job, StoreError>;

    /// Live jobs (PENDING or RUNNING: `state`) with id > `after`, oldest
    /// first, at most `limit`, read through an index of live jobs alone
    /// (recovery: however many jobs have ended).
    async fn live_jobs(
        &self,
        state: JobState,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError>;

    /// Jobs with id > `after`, oldest first, at most `limit`; filtered by
    /// tenant and state when given.
    async fn jobs(
        &self,
        tenant: Option<i64>,
        state: Option<JobState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError>;

    async fn events(&self, id: i64) -> Result<Vec<JobEvent>, StoreError>;

    /// Apply a batch of writes in one transaction: all or nothing. The
    /// batch is handed over at once (batches commit in the order they are
    /// handed over); the answer resolves when it is durable. Once a batch
    /// fails, every batch handed over after it fails too, unapplied: a
    /// caller may hand over batch N+1 before N is durable.
    fn commit(&self, writes: Vec<Write>) -> Committing;

    async fn max_job_id(&self) -> Result<i64, StoreError>;

    async fn max_node_id(&self) -> Result<i64, StoreError>;

    /// Reserve `n` ids of `kind` (committed before it returns): the first
    /// of `n` consecutive ids no other call ever gets, whichever replica
    /// asks. The loop takes its job and node ids from such blocks.
    async fn reserve_ids(&self, kind: IdKind, n: i64) -> Result<i64, StoreError>;

    /// Jobs with an id below `id` (recovery: the learned target's arrival
    /// count, which ids with gaps between blocks do not give).
    async fn jobs_before(&self, id: i64) -> Result<i64, StoreError>;

    /// The last `n` jobs submitted, oldest first.
    async fn recent_jobs(&self, n: i64) -> Result<Vec<Job>, StoreError>;

    /// Store a request a follower took for the loop (durable when this
    /// returns) and hint the leader (see [`Backend::notify`]); its id.
    async fn inbox_put(&self, body: &str) -> Result<i64, StoreError>;

    /// Requests not answered yet with an id above `after`, oldest first.
    async fn inbox_open(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError>;

    /// The answer to request `id`, once the leader wrote it
    /// ([`Write::Answer`]); `Err(NotFound)` for a request forgotten.
    async fn inbox_answer(&self, id: i64) -> Result<Option<String>, StoreError>;

    /// Forget requests answered before `before_ms`; how many.
    async fn inbox_forget(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Hint every listener of `channel` (PostgreSQL's NOTIFY); nothing on
    /// a store only one server opens.
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError>;

    /// Hear the hints of these channels ([`Note`]s) for as long as the
    /// receiver is kept; `None` on a store without hints (one server),
    /// where the callers' polling is all there is.
    async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Note>>, StoreError>;

    /// Append `data` to a task's log stream, whose byte `offset` it
    /// starts at: bytes already stored are skipped, so a push repeated
    /// (a retry, an agent moving replicas) stores nothing twice; a push
    /// past the end is a [`LogAppend::Gap`]. Past `cap` bytes a stream
    /// keeps nothing more (the push still succeeds).
    async fn log_append(
        &self,
        key: LogKey,
        offset: u64,
        data: &[u8],
        cap: u64,
    ) -> Result<LogAppend, StoreError>;

    /// At most `max` bytes of a task's log stream from `offset` (fewer at
    /// its end, none past it).
    async fn log_read(&self, key: LogKey, offset: u64, max: u64) -> Result<Vec<u8>, StoreError>;

    /// The pool's nodes (not those removed).
    async fn nodes(&self) -> Result<Vec<Node>, StoreError>;

    /// Removed nodes: (name, id), so that one registering again gets its id
    /// back.
    async fn removed_nodes(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// The tasks of RUNNING jobs' current attempts that hold resources:
    /// ASSIGNED or RUNNING, and EXITED with code 0 (a gang holds its
    /// devices until every task has ended), by job id then task index.
    async fn active_tasks(&self) -> Result<Vec<Task>, StoreError>;

    /// Tasks whose devices an agent may still hold: those it was ordered to
    /// stop and has not confirmed gone (KILLING), and those lost with a node
    /// that is down (LOST as of the node's last heartbeat: its agent may
    /// come back still running them).
    async fn killing_tasks(&self) -> Result<Vec<Task>, StoreError>;

    /// Tasks of a job, every attempt, oldest first.
    async fn job_tasks(&self, job: i64) -> Result<Vec<TaskView>, StoreError>;

    /// The node a task of an attempt was placed on.
    async fn task_node(&self, job: i64, run: i64, task: i64) -> Result<Option<i64>, StoreError>;

    async fn node_id(&self, name: &str) -> Result<Option<i64>, StoreError>;

    /// Usage intervals of tasks (of `tenant`, or all) that overlap
    /// [from, to): one per task per attempt, `end` None while it runs.
    async fn usage(
        &self,
        tenant: Option<i64>,
        from: i64,
        to: i64,
    ) -> Result<Vec<suanli_billing::Usage>, StoreError>;

    /// Hold the leader lease as `holder` for `ttl_ms` from now, by the
    /// **database's** clock (replicas' clocks may disagree; the one they
    /// share decides). With the `epoch` held, renew it (None once another
    /// took over); without, take it when it has expired (or, with
    /// `take_live`, whoever holds it: for a store only one server can
    /// open), as a new epoch.
    async fn lease(
        &self,
        holder: &str,
        epoch: Option<i64>,
        ttl_ms: i64,
        take_live: bool,
    ) -> Result<Option<i64>, StoreError>;

    /// Idempotency keys of jobs submitted at or after `since_ms`:
    /// (tenant id, key, job id, submitted, request hash), oldest first.
    async fn idempotency_keys(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, String, i64, i64, Option<String>)>, StoreError>;

    /// Who holds the lease, as stored (it may have expired).
    async fn leader(&self) -> Result<Lease, StoreError>;

    /// From now on, every batch handed to [`Backend::commit`] first checks,
    /// in its transaction, that the lease's epoch is still `epoch`, and is
    /// refused ([`StoreError::Fenced`], nothing applied) otherwise. Epoch 0:
    /// no check (tools and tests that write without a lease).
    fn fence(&self, epoch: i64);

    /// Capacity history: the node spans that overlap [from, to).
    async fn node_spans(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<suanli_billing::NodeSpan>, StoreError>;
}

/// One log stream: a task's stdout or stderr in one run of its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogKey {
    pub job: i64,
    pub run: i64,
    pub task: i64,
    /// `"out"` or `"err"` ([`suanli_api::LogStream::as_str`]).
    pub stream: &'static str,
}

/// What [`Backend::log_append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAppend {
    /// Stored (or already there): the stream now ends at this offset (or
    /// the push's end, past the cap).
    To(u64),
    /// The push starts past the stream's end, which is here: push from it.
    Gap(u64),
}

/// Largest chunk stored in one row, so a read of 1 MiB touches a few rows.
pub const LOG_ROW_BYTES: usize = 64 * 1024;

/// The leader lease's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
    /// In the database's clock.
    pub expires_ms: i64,
    /// Not expired yet, by the database's clock.
    pub live: bool,
}

/// What a block of ids is for ([`Backend::reserve_ids`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Job,
    Node,
}

impl IdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Job => "job",
            IdKind::Node => "node",
        }
    }
}

/// A hint heard on a channel ([`Backend::listen`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    Hint {
        channel: String,
        payload: String,
    },
    /// The connection that listens was lost and made again: hints may
    /// have been missed in between.
    Missed,
}

/// Channels of the hints replicas give each other.
pub mod channels {
    /// A follower stored a request in the inbox.
    pub const INBOX: &str = "suanli_inbox";
    /// The leader answered inbox requests: their ids, comma-separated.
    pub const ANSWERS: &str = "suanli_answers";
    /// The leader gave these nodes orders: a JSON array of names.
    pub const WAKES: &str = "suanli_wakes";
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Tenant {
        id: i64,
        name: String,
    },
    /// An agent's join token: it may register a node that has no live
    /// credential, which issues that node's credential, and nothing else.
    Join,
    /// A node's credential: its agent speaks for this node (by name) only.
    Node {
        name: String,
    },
    /// A gateway's: the router API only.
    Router,
}

/// A validated submission.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewJob {
    pub name: String,
    pub command: Vec<String>,
    pub tasks: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub num_gpu: i64,
    pub gpu_milli: i64,
    pub gpu_models: Vec<String>,
    pub class: Class,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub max_runtime_s: Option<i64>,
    pub retries: i64,
    /// The client's idempotency key, if it sent one.
    pub idem_key: Option<String>,
    /// With a key: SHA-256 (hex) of the request as read, so that the key
    /// reused for another request is told apart.
    pub idem_hash: Option<String>,
    /// The model service this job is a replica of (set by the service
    /// controller only; recorded in `replicas` with the job).
    #[serde(default)]
    pub service: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Writer(String),
    /// A batch from a leader that was deposed: the lease's epoch is no
    /// longer the one it carries.
    #[error("refused: this server's leader epoch {0} is over (another server took the lease)")]
    Fenced(i64),
    /// The request would break a rule of the store's content (e.g. revoke
    /// the last admin token); the text says which.
    #[error("{0}")]
    Refused(String),
}

/// A batch handed to the store ([`Backend::commit`]): resolves once the
/// batch is durable (to the time the store spent on it, waiting excluded),
/// or rolled back.
pub struct Committing(tokio::sync::oneshot::Receiver<Result<std::time::Duration, StoreError>>);

impl Committing {
    pub fn new(
        rx: tokio::sync::oneshot::Receiver<Result<std::time::Duration, StoreError>>,
    ) -> Committing {
        Committing(rx)
    }

    /// The outcome, if the batch is already durable (or failed); `None`
    /// while it is still being committed.
    pub fn ready(&mut self) -> Option<Result<std::time::Duration, StoreError>> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Closed) => Some(Err(StoreError::Writer(
                "the store's writer stopped".to_string(),
            ))),
        }
    }
}

impl std::future::Future for Committing {
    type Output = Result<std::time::Duration, StoreError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err(StoreError::Writer("the store's writer stopped".to_string())))
        })
    }
}

/// The devices of a bitmask, ascending.
pub fn mask_devices(mask: i64) -> Vec<u32> {
    (0..16).filter(|d| mask & (1 << d) != 0).collect()
}

/// A job's history: its stored events (with their attempt, in the order
/// written) and, for each attempt with task rows (`tasks` ordered by run
/// and index), the attempt's STARTED event, read from them. An attempt's
/// events are written after its start; what happens before the first
/// start, or between attempts, belongs to the attempt before (run 0 for
/// none). So the history reads in (run, STARTED first, order written).
pub fn history(stored: Vec<(i64, JobEvent)>, tasks: &[TaskView]) -> Vec<JobEvent> {
    let mut all: Vec<(i64, bool, usize, JobEvent)> = stored
        .into_iter()
        .enumerate()
        .map(|(k, (run, e))| (run, true, k, e))
        .collect();
    for attempt in tasks.chunk_by(|a, b| a.run == b.run) {
        let first = &attempt[0];
        all.push((
            first.run,
            false,
            0,
            JobEvent {
                at_ms: first.started_ms,
                kind: EventKind::Started,
                detail: describe_start(first.run, attempt),
            },
        ));
    }
    all.sort_by_key(|e| (e.0, e.1, e.2));
    all.into_iter().map(|e| e.3).collect()
}

/// `attempt 2 on n1[0, 1], n2[0, 1]`: each task's node and devices.
fn describe_start(run: i64, tasks: &[TaskView]) -> String {
    use std::fmt::Write as _;
    let mut s = format!("attempt {run} on ");
    for (k, t) in tasks.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        s.push_str(&t.node);
        if !t.gpus.is_empty() {
            s.push('[');
            for (j, d) in t.gpus.iter().enumerate() {
                if j > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{d}");
            }
            s.push(']');
        }
    }
    s
}

/// A task holding resources (for recovery).
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub job: i64,
    pub run: i64,
    pub index: i64,
    pub node: i64,
    pub gpus: i64,
    pub state: TaskState,
    pub started_ms: i64,
}

impl Write {
    /// Rows this write inserts or updates (a start: the job and each task).
    pub fn rows(&self) -> usize {
        match self {
            Write::StartJob { tasks, .. } => 1 + tasks.len(),
            _ => 1,
        }
    }
}

/// One write of a batch (see [`Backend::commit`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    InsertJob {
        id: i64,
        tenant_id: i64,
        job: NewJob,
        at: i64,
    },
    /// An entry of the job's history, in attempt `run` (0 before the
    /// first start). STARTED is not written: [`history`] reads it from the
    /// attempt's task rows.
    Event {
        job: i64,
        run: i64,
        at: i64,
        kind: EventKind,
        detail: String,
    },
    /// Set a job's state; `ended` for a final state.
    JobState {
        job: i64,
        state: JobState,
        ended: Option<i64>,
    },
    /// A new attempt starts: state RUNNING, `run` bumped, tasks inserted.
    StartJob {
        job: i64,
        run: i64,
        at: i64,
        tasks: Vec<(i64, i64)>, // (node id, device mask), by task index
    },
    /// Tasks of one attempt in one of `from` states move to `to` (only on
    /// `node`, when given).
    TaskState {
        job: i64,
        run: i64,
        task: Option<i64>,
        node: Option<i64>,
        from: &'static [TaskState],
        to: TaskState,
        at: Option<i64>,
        exit_code: Option<i64>,
        reason: String,
    },
    UpsertNode(Node),
    /// A node changes state at `at` (for a lost node: its last heartbeat).
    NodeState {
        node: i64,
        state: NodeState,
        at: i64,
    },
    Heartbeat {
        node: i64,
        at: i64,
    },
    /// The job's current attempt ended by no fault of its own (node lost,
    /// preempted): one more interruption.
    Interrupted {
        job: i64,
    },
    /// An admin removed the node (it holds no live task): it leaves the
    /// pool (its history closes at `at`), and its agent's credential
    /// (tokens of node `name`) is revoked in the same transaction; tasks
    /// still being stopped there are given up as KILLED.
    RemoveNode {
        node: i64,
        name: String,
        at: i64,
    },
    /// The answer to inbox request `inbox` (JSON), written in the same
    /// transaction as the request's effects.
    Answer {
        inbox: i64,
        body: String,
        at: i64,
    },
    /// A hint sent when the batch commits ([`Backend::notify`]; nothing on
    /// SQLite).
    Notify {
        channel: &'static str,
        payload: String,
    },
    /// An admin action done through the loop (drains, removals), recorded
    /// in the same transaction as the action.
    Audit {
        at: i64,
        actor: String,
        action: &'static str,
        target: String,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_is_shown_without_its_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?sslmode=require&password=s2"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        let kv = redact_url("host=h password=secret");
        assert!(!kv.contains("secret"), "{kv}");
    }

    fn ev(at_ms: i64, kind: EventKind, detail: &str) -> JobEvent {
        JobEvent {
            at_ms,
            kind,
            detail: detail.to_string(),
        }
    }

    fn task(run: i64, index: i64, node: &str, gpus: &[u32], at: i64) -> TaskView {
        TaskView {
            run,
            index,
            node: node.to_string(),
            gpus: gpus.to_vec(),
            state: TaskState::Exited,
            started_ms: at,
            ended_ms: None,
            exit_code: None,
            reason: String::new(),
        }
    }

    #[test]
    fn history_puts_each_start_between_its_attempts_even_in_one_millisecond() {
        use EventKind::*;
        // Everything at t=5: submitted, started, preempted, started again
        // (a gang on two nodes, one CPU-only), cancelled.
        let stored = vec![
            (0, ev(5, Submitted, "")),
            (1, ev(5, Preempted, "requeued")),
            (2, ev(5, Cancelled, "from RUNNING")),
        ];
        let tasks = [
            task(1, 0, "a", &[3], 5),
            task(2, 0, "b", &[0, 1], 5),
            task(2, 1, "c", &[], 5),
        ];
        assert_eq!(
            history(stored, &tasks),
            [
                ev(5, Submitted, ""),
                ev(5, Started, "attempt 1 on a[3]"),
                ev(5, Preempted, "requeued"),
                ev(5, Started, "attempt 2 on b[0, 1], c"),
                ev(5, Cancelled, "from RUNNING"),
            ]
        );
        // No attempt: the stored events alone, in the order written.
        let stored = vec![(0, ev(9, Submitted, "")), (0, ev(7, Cancelled, "x"))];
        assert_eq!(
            history(stored, &[]),
            [ev(9, Submitted, ""), ev(7, Cancelled, "x")]
        );
    }
}
