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

pub mod sqlite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use suanli_api::{
    Class, EventKind, Job, JobEvent, JobState, Node, NodeState, Quota, TaskState, TaskView, Tenant,
    TokenInfo, TokenScope,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A store: any [`Backend`], shared.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl Store {
    /// The embedded default: SQLite in `DIR/suanli.db`.
    pub async fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store(Arc::new(sqlite::SqliteStore::open(dir).await?)))
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
    async fn token_count(&self) -> Result<i64, StoreError>;

    async fn create_tenant(&self, name: &str, weight: f64) -> Result<Tenant, StoreError>;

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    async fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError>;

    /// Set (insert or replace) a tenant's quota on a GPU model, in milli.
    async fn set_quota(
        &self,
        tenant_id: i64,
        model: &str,
        guaranteed_milli: i64,
        max_milli: Option<i64>,
    ) -> Result<(), StoreError>;

    async fn quotas(&self, tenant_id: i64) -> Result<Vec<Quota>, StoreError>;

    async fn insert_token(&self, hash: &str, scope: &Scope, name: &str) -> Result<i64, StoreError>;

    /// The scope of a live (not revoked) token, by the hash of its secret.
    async fn scope_of(&self, hash: &str) -> Result<Option<Scope>, StoreError>;

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;

    async fn revoke_token(&self, id: i64) -> Result<(), StoreError>;

    /// A job; with `tenant`, only if it belongs to that tenant.
    async fn job(&self, id: i64, tenant: Option<i64>) -> Result<Job, StoreError>;

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
    /// handed over); the answer resolves when it is durable.
    fn commit(&self, writes: Vec<Write>) -> Committing;

    async fn max_job_id(&self) -> Result<i64, StoreError>;

    async fn max_node_id(&self) -> Result<i64, StoreError>;

    async fn nodes(&self) -> Result<Vec<Node>, StoreError>;

    /// The tasks of RUNNING jobs' current attempts that hold resources
    /// (ASSIGNED or RUNNING), by job id then task index.
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

    /// Capacity history: the node spans that overlap [from, to).
    async fn node_spans(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<suanli_billing::NodeSpan>, StoreError>;

    /// Jobs by state (for metrics).
    async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, StoreError>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Tenant { id: i64, name: String },
    Agent,
}

/// A validated submission.
#[derive(Clone, Debug, PartialEq)]
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
    Event {
        job: i64,
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
}
