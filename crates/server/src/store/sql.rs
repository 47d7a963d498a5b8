//! What both SQL backends share: every read and every admin write, written
//! once in the SQL that SQLite and PostgreSQL both accept (`$N`
//! placeholders, `RETURNING`, `ON CONFLICT ... DO UPDATE`, partial
//! indexes), over an sqlx pool of either database. Only the loop's batch
//! writes differ (each backend's `commit.rs`, tuned to its database), and
//! how a store is opened.
//!
//! [`SqlStore<DB>`] implements [`Backend`] once for both; rows decode
//! through `FromRow` structs (derived, so generic over the database).

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::*;

/// The loop's batch writer of one backend (see [`Backend::commit`]).
pub(crate) trait Commit: Send + Sync {
    fn commit(&self, writes: Vec<Write>) -> Committing;
    /// See [`Backend::fence`].
    fn fence(&self, epoch: i64);
}

/// The fencing check every batch of a leader starts with (in its
/// transaction): one row back while `$1` is still the lease's epoch. It
/// writes the row, so on PostgreSQL it holds the row's lock until the batch
/// commits: a takeover (which updates the row) waits for the batch, or the
/// batch sees the new epoch; never both a takeover and a stale batch.
pub(crate) const FENCE: &str =
    "UPDATE leader SET epoch = epoch WHERE id = 1 AND epoch = $1 RETURNING epoch";

/// What replicas hint each other with (PostgreSQL's LISTEN/NOTIFY); a
/// store only one server opens has none.
#[async_trait::async_trait]
pub(crate) trait Signals: Send + Sync {
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError>;
    async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<tokio::sync::mpsc::Receiver<Note>, StoreError>;
}

/// A store on an SQL database: the shared reads and admin writes over
/// `pool`, and the backend's own batch writer.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) writer: Box<dyn Commit>,
    /// The database's clock, in ms since the Unix epoch, as an SQL
    /// expression of type BIGINT (the lease's time).
    pub(crate) now_sql: &'static str,
    pub(crate) signals: Option<Box<dyn Signals>>,
}

impl<DB: Database> SqlStore<DB> {
    /// The connection pool (for tools and tests that inspect the store).
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

#[derive(FromRow)]
struct TenantRow {
    id: i64,
    name: String,
    weight: f64,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Tenant {
        Tenant {
            id: r.id,
            name: r.name,
            weight: r.weight,
        }
    }
}

#[derive(FromRow)]
struct QuotaRow {
    gpu_model: String,
    guaranteed_milli: i64,
    max_milli: Option<i64>,
}

#[derive(FromRow)]
struct ScopeRow {
    id: i64,
    scope: TokenScope,
    tenant_id: Option<i64>,
    node: Option<String>,
    tenant: Option<String>,
}

#[derive(FromRow)]
struct AuditRow {
    id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(FromRow)]
struct TokenRow {
    id: i64,
    scope: TokenScope,
    tenant: Option<String>,
    node: Option<String>,
    name: String,
    created_ms: i64,
    revoked_ms: Option<i64>,
}

#[derive(FromRow)]
struct JobRow {
    id: i64,
    tenant: String,
    name: String,
    command: String,
    tasks: i64,
    cpu_milli: i64,
    memory_mib: i64,
    num_gpu: i64,
    gpu_milli: i64,
    gpu_models: String,
    class: Class,
    env: String,
    workdir: String,
    max_runtime_s: Option<i64>,
    retries: i64,
    run: i64,
    interrupted: i64,
    state: JobState,
    submitted_ms: i64,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Job {
        // The JSON columns are written by the store from typed values.
        Job {
            id: r.id,
            tenant: r.tenant,
            name: r.name,
            command: serde_json::from_str(&r.command).unwrap_or_default(),
            tasks: r.tasks,
            cpu_milli: r.cpu_milli,
            memory_mib: r.memory_mib,
            num_gpu: r.num_gpu,
            gpu_milli: r.gpu_milli,
            gpu_models: serde_json::from_str(&r.gpu_models).unwrap_or_default(),
            class: r.class,
            env: serde_json::from_str(&r.env).unwrap_or_default(),
            workdir: r.workdir,
            max_runtime_s: r.max_runtime_s,
            retries: r.retries,
            run: r.run,
            interrupted: r.interrupted,
            state: r.state,
            submitted_ms: r.submitted_ms,
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            reason: None,
        }
    }
}

#[derive(FromRow)]
struct EventRow {
    run: i64,
    at_ms: i64,
    kind: EventKind,
    detail: String,
}

#[derive(FromRow)]
struct NodeRow {
    id: i64,
    name: String,
    addr: String,
    gpu_model: Option<String>,
    gpus: i64,
    gpu_memory_mib: i64,
    cpu_milli: i64,
    memory_mib: i64,
    rack: String,
    labels: String,
    state: NodeState,
    registered_ms: i64,
    last_heartbeat_ms: i64,
}

impl From<NodeRow> for Node {
    fn from(r: NodeRow) -> Node {
        Node {
            id: r.id,
            name: r.name,
            addr: r.addr,
            gpu_model: r.gpu_model,
            gpus: r.gpus,
            gpu_memory_mib: r.gpu_memory_mib,
            cpu_milli: r.cpu_milli,
            memory_mib: r.memory_mib,
            rack: r.rack,
            labels: serde_json::from_str(&r.labels).unwrap_or_default(),
            state: r.state,
            registered_ms: r.registered_ms,
            last_heartbeat_ms: r.last_heartbeat_ms,
        }
    }
}

#[derive(FromRow)]
struct TaskRow {
    job_id: i64,
    run: i64,
    idx: i64,
    node_id: i64,
    gpus: i64,
    state: TaskState,
    started_ms: i64,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Task {
        Task {
            job: r.job_id,
            run: r.run,
            index: r.idx,
            node: r.node_id,
            gpus: r.gpus,
            state: r.state,
            started_ms: r.started_ms,
        }
    }
}

#[derive(FromRow)]
struct TaskViewRow {
    run: i64,
    idx: i64,
    node: String,
    gpus: i64,
    state: TaskState,
    started_ms: i64,
    ended_ms: Option<i64>,
    exit_code: Option<i64>,
    reason: String,
}

impl From<TaskViewRow> for TaskView {
    fn from(r: TaskViewRow) -> TaskView {
        TaskView {
            run: r.run,
            index: r.idx,
            node: r.node,
            gpus: mask_devices(r.gpus),
            state: r.state,
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            exit_code: r.exit_code,
            reason: r.reason,
        }
    }
}

#[derive(FromRow)]
struct UsageRow {
    tenant: String,
    job_id: i64,
    run: i64,
    idx: i64,
    gpu_model: Option<String>,
    class: String,
    gpu_milli: i64,
    cpu_milli: i64,
    memory_mib: i64,
    started_ms: i64,
    ended_ms: Option<i64>,
}

#[derive(FromRow)]
struct SpanRow {
    name: String,
    gpu_model: Option<String>,
    gpus: i64,
    state: String,
    start_ms: i64,
    end_ms: Option<i64>,
}

const JOB_COLUMNS: &str =
    "j.id, t.name AS tenant, j.name, j.command, j.tasks, j.cpu_milli, j.memory_mib, \
     j.num_gpu, j.gpu_milli, j.gpu_models, j.class, j.env, j.workdir, j.max_runtime_s, j.retries, \
     j.run, j.interrupted, j.state, j.submitted_ms, j.started_ms, j.ended_ms";

const NODE_COLUMNS: &str =
    "n.id, n.name, n.addr, n.gpu_model, n.gpus, n.gpu_memory_mib, n.cpu_milli, \
     n.memory_mib, n.rack, n.labels, n.state, n.registered_ms, n.last_heartbeat_ms";

const TASK_COLUMNS: &str = "k.job_id, k.run, k.idx, k.node_id, k.gpus, k.state, k.started_ms";

// The where clause below is what the shared SQL needs of a database
// (executors, the parameter types it binds, the rows it decodes); both
// backends meet it. Rust has no where-clause aliases, so the helpers' impl
// repeats it.

#[async_trait::async_trait]
impl<DB> Backend for SqlStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    f64: for<'q> Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    Option<JobState>: for<'q> Encode<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (String, i64, i64): FromRow<'r, DB::Row>,
    for<'r> (String, i64, i64, i64): FromRow<'r, DB::Row>,
    for<'r> (i64, String): FromRow<'r, DB::Row>,
    for<'r> (i64, Vec<u8>): FromRow<'r, DB::Row>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'r> (Option<String>,): FromRow<'r, DB::Row>,
    for<'r> (i64, String, i64, i64, Option<String>): FromRow<'r, DB::Row>,
    for<'r> TenantRow: FromRow<'r, DB::Row>,
    for<'r> QuotaRow: FromRow<'r, DB::Row>,
    for<'r> ScopeRow: FromRow<'r, DB::Row>,
    for<'r> AuditRow: FromRow<'r, DB::Row>,
    for<'r> TokenRow: FromRow<'r, DB::Row>,
    for<'r> JobRow: FromRow<'r, DB::Row>,
    for<'r> EventRow: FromRow<'r, DB::Row>,
    for<'r> NodeRow: FromRow<'r, DB::Row>,
    for<'r> TaskRow: FromRow<'r, DB::Row>,
    for<'r> TaskViewRow: FromRow<'r, DB::Row>,
    for<'r> UsageRow: FromRow<'r, DB::Row>,
    for<'r> SpanRow: FromRow<'r, DB::Row>,
    Self: ServiceBackend,
{
    fn services(&self) -> &dyn ServiceBackend {
        self
    }

    async fn token_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_tenant(
        &self,
        name: &str,
        weight: f64,
        actor: &str,
    ) -> Result<Tenant, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query_scalar(
            "INSERT INTO tenants (name, weight, created_ms) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(name)
        .bind(weight)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match r {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("tenant {name:?}")))
            }
            Err(e) => return Err(e.into()),
        };
        let target = format!("tenant {name}");
        let detail = format!("weight {weight}");
        audit::<DB>(&mut tx, actor, "tenant.create", &target, &detail).await?;
        tx.commit().await?;
        Ok(Tenant {
            id,
            name: name.to_string(),
            weight,
        })
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<TenantRow> =
            sqlx::query_as("SELECT id, name, weight FROM tenants ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Tenant::from).collect())
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
        let r: Option<TenantRow> =
            sqlx::query_as("SELECT id, name, weight FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        r.map(Tenant::from).ok_or(StoreError::NotFound)
    }

    async fn set_quota(
        &self,
        tenant_id: i64,
        model: &str,
        guaranteed_milli: i64,
        max_milli: Option<i64>,
        actor: &str,
    ) -> Result<(), StoreError> {
        // A write first: an SQLite transaction that reads first cannot
        // take the write lock once another writer committed (SQLITE_BUSY
        // at once, past the busy timeout).
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO quotas (tenant_id, gpu_model, guaranteed_milli, max_milli) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, gpu_model) DO UPDATE SET \
             guaranteed_milli = excluded.guaranteed_milli, max_milli = excluded.max_milli",
        )
        .bind(tenant_id)
        .bind(model)
        .bind(guaranteed_milli)
        .bind(max_milli)
        .execute(&mut *tx)
        .await?;
        let tenant: Option<String> = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        let tenant = tenant.ok_or(StoreError::NotFound)?;
        let gpus = |m: i64| m as f64 / 1000.0;
        let detail = format!(
            "guaranteed {} GPUs, max {}",
            gpus(guaranteed_milli),
            max_milli.map_or("none".to_string(), |m| format!("{} GPUs", gpus(m)))
        );
        let target = format!("tenant {tenant} model {model}");
        audit::<DB>(&mut tx, actor, "quota.set", &target, &detail).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn quotas(&self, tenant_id: i64) -> Result<Vec<Quota>, StoreError> {
        let rows: Vec<QuotaRow> = sqlx::query_as(
            "SELECT gpu_model, guaranteed_milli, max_milli FROM quotas WHERE tenant_id = $1 \
             ORDER BY gpu_model",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Quota {
                gpu_model: r.gpu_model,
                guaranteed: r.guaranteed_milli as f64 / 1000.0,
                max: r.max_milli.map(|m| m as f64 / 1000.0),
            })
            .collect())
    }

    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        name: &str,
        (actor, action): (&str, &str),
    ) -> Result<i64, StoreError> {
        let (s, tid, node) = match scope {
            Scope::Admin => (TokenScope::Admin, None, None),
            Scope::Join => (TokenScope::Agent, None, None),
            Scope::Node { name } => (TokenScope::Agent, None, Some(name.as_str())),
            Scope::Tenant { id, .. } => (TokenScope::Tenant, Some(*id), None),
            Scope::Router => (TokenScope::Router, None, None),
        };
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query_scalar(
            "INSERT INTO tokens (hash, scope, tenant_id, node, name, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(hash)
        .bind(s)
        .bind(tid)
        .bind(node)
        .bind(name)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match r {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) && node.is_some() => {
                return Err(StoreError::Conflict(format!(
                    "a live credential for node {:?}",
                    node.unwrap_or_default()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let what = match scope {
            Scope::Admin => "admin".to_string(),
            Scope::Tenant { name, .. } => format!("tenant {name}"),
            Scope::Join => "agent join".to_string(),
            Scope::Node { name } => format!("agent, node {name}"),
            Scope::Router => "router".to_string(),
        };
        let target = format!("token {id} ({what})");
        audit::<DB>(&mut tx, actor, action, &target, name).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn scope_of(&self, hash: &str) -> Result<Option<(i64, Scope)>, StoreError> {
        let r: Option<ScopeRow> = sqlx::query_as(
            "SELECT k.id, k.scope, k.tenant_id, k.node, t.name AS tenant FROM tokens k \
             LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.hash = $1 AND k.revoked_ms IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let s = match r.scope {
            TokenScope::Admin => Scope::Admin,
            TokenScope::Router => Scope::Router,
            TokenScope::Agent => match r.node {
                Some(name) => Scope::Node { name },
                None => Scope::Join,
            },
            TokenScope::Tenant => match (r.tenant_id, r.tenant) {
                (Some(id), Some(name)) => Scope::Tenant { id, name },
                // The schema ties a tenant token to its tenant.
                _ => return Ok(None),
            },
        };
        Ok(Some((r.id, s)))
    }

    async fn audit_log(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at_ms, actor, action, target, detail FROM audit WHERE id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at_ms: r.at_ms,
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: r.detail,
            })
            .collect())
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT k.id, k.scope, t.name AS tenant, k.node, k.name, k.created_ms, k.revoked_ms \
             FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id ORDER BY k.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TokenInfo {
                id: r.id,
                scope: r.scope,
                tenant: r.tenant,
                node: r.node,
                name: r.name,
                created_ms: r.created_ms,
                revoked: r.revoked_ms.is_some(),
            })
            .collect())
    }

    /// Revoke a live token, unless it is the last live admin token (one
    /// statement: two admins revoking each other at once cannot both win
    /// on SQLite; on PostgreSQL the admin tokens' rows are locked first).
    async fn revoke_token(&self, id: i64, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialise revocations of admin tokens (PostgreSQL's READ
        // COMMITTED would let two see two live admins; SQLite holds its
        // write lock already).
        sqlx::query(
            "UPDATE tokens SET revoked_ms = revoked_ms WHERE scope = $1 AND revoked_ms IS NULL",
        )
        .bind(TokenScope::Admin)
        .execute(&mut *tx)
        .await?;
        let revoked: Option<i64> = sqlx::query_scalar(
            "UPDATE tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL \
             AND (scope <> $3 OR (SELECT COUNT(*) FROM tokens WHERE scope = $3 \
                                  AND revoked_ms IS NULL) > 1) RETURNING id",
        )
        .bind(now_ms())
        .bind(id)
        .bind(TokenScope::Admin)
        .fetch_optional(&mut *tx)
        .await?;
        if revoked.is_some() {
            audit::<DB>(&mut tx, actor, "token.revoke", &format!("token {id}"), "").await?;
            tx.commit().await?;
            return Ok(());
        }
        let live_admin: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM tokens WHERE id = $1 AND revoked_ms IS NULL AND scope = $2",
        )
        .bind(id)
        .bind(TokenScope::Admin)
        .fetch_optional(&mut *tx)
        .await?;
        match live_admin {
            Some(_) => Err(StoreError::Refused(
                "this is the last live admin token: issue another admin token first \
                 (or run `suanli server --reset-admin` on the server machine)"
                    .to_string(),
            )),
            None => Err(StoreError::NotFound),
        }
    }

    async fn job(&self, id: i64, tenant: Option<i64>) -> Result<Job, StoreError> {
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.id = $1 AND ($2 IS NULL OR j.tenant_id = $2)"
        );
        let r: Option<JobRow> = sqlx::query_as(&q)
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        r.map(Job::from).ok_or(StoreError::NotFound)
    }

    async fn live_jobs(
        &self,
        state: JobState,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError> {
        // `ended_ms IS NULL` selects the partial index `jobs_live`.
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.ended_ms IS NULL AND j.state = $1 AND j.id > $2 ORDER BY j.id LIMIT $3"
        );
        let rows: Vec<JobRow> = sqlx::query_as(&q)
            .bind(state)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    async fn jobs(
        &self,
        tenant: Option<i64>,
        state: Option<JobState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.id > $1 AND ($2 IS NULL OR j.tenant_id = $2) \
             AND ($3 IS NULL OR j.state = $3) ORDER BY j.id LIMIT $4"
        );
        let rows: Vec<JobRow> = sqlx::query_as(&q)
            .bind(after)
            .bind(tenant)
            .bind(state)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    async fn events(&self, id: i64) -> Result<Vec<JobEvent>, StoreError> {
        // One snapshot: the stored events and the task rows agree.
        let mut tx = self.pool.begin().await?;
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT run, at_ms, kind, detail FROM job_events WHERE job_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows
            .into_iter()
            .map(|r| {
                (
                    r.run,
                    JobEvent {
                        at_ms: r.at_ms,
                        kind: r.kind,
                        detail: r.detail,
                    },
                )
            })
            .collect();
        let tasks = tasks_of::<DB>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(super::history(stored, &tasks))
    }

    fn commit(&self, writes: Vec<Write>) -> Committing {
        self.writer.commit(writes)
    }

    fn fence(&self, epoch: i64) {
        self.writer.fence(epoch)
    }

    async fn lease(
        &self,
        holder: &str,
        epoch: Option<i64>,
        ttl_ms: i64,
        take_live: bool,
    ) -> Result<Option<i64>, StoreError> {
        let now = self.now_sql;
        let held: Option<i64> = match epoch {
            Some(e) => {
                let q = format!(
                    "UPDATE leader SET expires_ms = {now} + $1 \
                     WHERE id = 1 AND holder = $2 AND epoch = $3 RETURNING epoch"
                );
                sqlx::query_scalar(&q)
                    .bind(ttl_ms)
                    .bind(holder)
                    .bind(e)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                let q = format!(
                    "UPDATE leader SET holder = $1, epoch = epoch + 1, expires_ms = {now} + $2 \
                     WHERE id = 1 AND (expires_ms <= {now} OR $3 = 1) RETURNING epoch"
                );
                sqlx::query_scalar(&q)
                    .bind(holder)
                    .bind(ttl_ms)
                    .bind(i64::from(take_live))
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        Ok(held)
    }

    async fn reserve_ids(&self, kind: IdKind, n: i64) -> Result<i64, StoreError> {
        if n < 1 {
            return Err(StoreError::Refused(format!("reserve {n} ids: at least 1")));
        }
        let first: Option<i64> = sqlx::query_scalar(
            "UPDATE ids SET next = next + $1 WHERE name = $2 RETURNING next - $1",
        )
        .bind(n)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        first.ok_or_else(|| StoreError::Refused(format!("no id counter {:?}", kind.as_str())))
    }

    async fn jobs_before(&self, id: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id < $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn recent_jobs(&self, n: i64) -> Result<Vec<Job>, StoreError> {
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             ORDER BY j.id DESC LIMIT $1"
        );
        let rows: Vec<JobRow> = sqlx::query_as(&q).bind(n).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().rev().map(Job::from).collect())
    }

    async fn inbox_put(&self, body: &str) -> Result<i64, StoreError> {
        let id: i64 =
            sqlx::query_scalar("INSERT INTO inbox (at_ms, body) VALUES ($1, $2) RETURNING id")
                .bind(now_ms())
                .bind(body)
                .fetch_one(&self.pool)
                .await?;
        // Only a hint: the leader also polls.
        if let Err(e) = self.notify(channels::INBOX, "").await {
            tracing::debug!(error = %e, "could not hint the leader of an inbox request");
        }
        Ok(id)
    }

    async fn inbox_open(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        // `answered_ms IS NULL` selects the partial index `inbox_open`.
        Ok(sqlx::query_as(
            "SELECT id, body FROM inbox WHERE answered_ms IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn inbox_answer(&self, id: i64) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT answer FROM inbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(a,)| a).ok_or(StoreError::NotFound)
    }

    async fn inbox_forget(&self, before_ms: i64) -> Result<u64, StoreError> {
        let gone: Vec<(i64,)> = sqlx::query_as(
            "DELETE FROM inbox WHERE answered_ms IS NOT NULL AND answered_ms < $1 RETURNING id",
        )
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(gone.len() as u64)
    }

    async fn log_append(
        &self,
        key: LogKey,
        offset: u64,
        data: &[u8],
        cap: u64,
    ) -> Result<LogAppend, StoreError> {
        let wanted = offset.saturating_add(data.len() as u64);
        loop {
            // The stream's end: where its last chunk stops (the key's
            // index, newest first).
            let end: Option<i64> = sqlx::query_scalar(
                "SELECT stop FROM task_logs WHERE job_id = $1 AND run = $2 AND task = $3 \
                 AND stream = $4 ORDER BY start DESC LIMIT 1",
            )
            .bind(key.job)
            .bind(key.run)
            .bind(key.task)
            .bind(key.stream)
            .fetch_optional(&self.pool)
            .await?;
            let end = end.unwrap_or(0) as u64;
            if end >= cap {
                return Ok(LogAppend::To(end.max(wanted)));
            }
            if offset > end {
                return Ok(LogAppend::Gap(end));
            }
            if wanted <= end {
                return Ok(LogAppend::To(end));
            }
            let from = (end - offset) as usize;
            let take = (data.len() - from)
                .min(LOG_ROW_BYTES)
                .min((cap - end) as usize);
            let chunk = &data[from..from + take];
            // Two appends that read the same end collide on the key: one
            // stores, the other reads the new end and goes on from there.
            sqlx::query(
                "INSERT INTO task_logs (job_id, run, task, stream, start, stop, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(key.job)
            .bind(key.run)
            .bind(key.task)
            .bind(key.stream)
            .bind(end as i64)
            .bind((end + take as u64) as i64)
            .bind(chunk)
            .execute(&self.pool)
            .await?;
        }
    }

    async fn log_read(&self, key: LogKey, offset: u64, max: u64) -> Result<Vec<u8>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        // The chunk holding `offset`, then those after it, a few at a time
        // (rows hold at most LOG_ROW_BYTES, often much less).
        let mut at = offset.min(i64::MAX as u64);
        let mut first = true;
        while (out.len() as u64) < max {
            let q = if first {
                "SELECT start, data FROM task_logs WHERE job_id = $1 AND run = $2 AND task = $3 \
                 AND stream = $4 AND start >= (SELECT COALESCE(MAX(start), 0) FROM task_logs \
                 WHERE job_id = $1 AND run = $2 AND task = $3 AND stream = $4 AND start <= $5) \
                 ORDER BY start LIMIT $6"
            } else {
                "SELECT start, data FROM task_logs WHERE job_id = $1 AND run = $2 AND task = $3 \
                 AND stream = $4 AND start >= $5 ORDER BY start LIMIT $6"
            };
            first = false;
            let chunks: Vec<(i64, Vec<u8>)> = sqlx::query_as(q)
                .bind(key.job)
                .bind(key.run)
                .bind(key.task)
                .bind(key.stream)
                .bind(at as i64)
                .bind(32i64)
                .fetch_all(&self.pool)
                .await?;
            if chunks.is_empty() {
                break;
            }
            for (start, data) in chunks {
                let (start, stop) = (start as u64, start as u64 + data.len() as u64);
                at = stop;
                if stop <= offset {
                    continue;
                }
                let from = offset.saturating_sub(start) as usize;
                out.extend_from_slice(&data[from..]);
                if out.len() as u64 >= max {
                    break;
                }
            }
        }
        out.truncate(max.min(usize::MAX as u64) as usize);
        Ok(out)
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        match &self.signals {
            Some(s) => s.notify(channel, payload).await,
            None => Ok(()),
        }
    }

    async fn listen(
        &self,
        channels: &[&str],
    ) -> Result<Option<tokio::sync::mpsc::Receiver<Note>>, StoreError> {
        match &self.signals {
            Some(s) => Ok(Some(s.listen(channels).await?)),
            None => Ok(None),
        }
    }

    async fn idempotency_keys(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, String, i64, i64, Option<String>)>, StoreError> {
        // `idem_key IS NOT NULL` selects the partial index `jobs_idem`.
        Ok(sqlx::query_as(
            "SELECT tenant_id, idem_key, id, submitted_ms, idem_hash FROM jobs \
             WHERE idem_key IS NOT NULL AND submitted_ms >= $1 ORDER BY submitted_ms, id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn leader(&self) -> Result<Lease, StoreError> {
        let q = format!(
            "SELECT holder, epoch, expires_ms, \
             CAST(CASE WHEN expires_ms > {} THEN 1 ELSE 0 END AS BIGINT) FROM leader WHERE id = 1",
            self.now_sql
        );
        let (holder, epoch, expires_ms, live): (String, i64, i64, i64) =
            sqlx::query_as(&q).fetch_one(&self.pool).await?;
        Ok(Lease {
            holder,
            epoch,
            expires_ms,
            live: live == 1,
        })
    }

    async fn max_job_id(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM jobs")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn max_node_id(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM nodes")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let q =
            format!("SELECT {NODE_COLUMNS} FROM nodes n WHERE n.removed_ms IS NULL ORDER BY n.id");
        let rows: Vec<NodeRow> = sqlx::query_as(&q).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Node::from).collect())
    }

    async fn removed_nodes(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, id FROM nodes WHERE removed_ms IS NOT NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows)
    }

    async fn active_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let q = format!(
            "SELECT {TASK_COLUMNS} FROM tasks k JOIN jobs j ON j.id = k.job_id AND j.run = k.run \
             WHERE j.ended_ms IS NULL AND j.state = $1 \
             AND (k.state IN ($2, $3) OR (k.state = $4 AND k.exit_code = 0)) \
             ORDER BY k.job_id, k.idx"
        );
        let rows: Vec<TaskRow> = sqlx::query_as(&q)
            .bind(JobState::Running)
            .bind(TaskState::Assigned)
            .bind(TaskState::Running)
            .bind(TaskState::Exited)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Task::from).collect())
    }

    async fn killing_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let q = format!(
            "SELECT {TASK_COLUMNS} FROM tasks k JOIN nodes n ON n.id = k.node_id \
             WHERE k.state = $1 \
             OR (k.state = $2 AND n.state = $3 AND k.ended_ms >= n.last_heartbeat_ms \
                 AND n.removed_ms IS NULL)"
        );
        let rows: Vec<TaskRow> = sqlx::query_as(&q)
            .bind(TaskState::Killing)
            .bind(TaskState::Lost)
            .bind(NodeState::Down)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Task::from).collect())
    }

    async fn job_tasks(&self, job: i64) -> Result<Vec<TaskView>, StoreError> {
        tasks_of::<DB>(&mut *self.pool.acquire().await?, job).await
    }

    async fn task_node(&self, job: i64, run: i64, task: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT node_id FROM tasks WHERE job_id = $1 AND run = $2 AND idx = $3",
        )
        .bind(job)
        .bind(run)
        .bind(task)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn node_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn usage(
        &self,
        tenant: Option<i64>,
        from: i64,
        to: i64,
    ) -> Result<Vec<suanli_billing::Usage>, StoreError> {
        let rows: Vec<UsageRow> = sqlx::query_as(
            "SELECT t.name AS tenant, k.job_id, k.run, k.idx, \
             COALESCE(k.gpu_model, n.gpu_model) AS gpu_model, j.class, \
             j.num_gpu * j.gpu_milli AS gpu_milli, j.cpu_milli, j.memory_mib, k.started_ms, \
             k.ended_ms \
             FROM tasks k JOIN jobs j ON j.id = k.job_id JOIN tenants t ON t.id = j.tenant_id \
             JOIN nodes n ON n.id = k.node_id \
             WHERE k.started_ms < $1 AND (k.ended_ms IS NULL OR k.ended_ms > $2) \
             AND ($3 IS NULL OR j.tenant_id = $3) ORDER BY k.job_id, k.run, k.idx",
        )
        .bind(to)
        .bind(from)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| suanli_billing::Usage {
                tenant: r.tenant,
                job: r.job_id,
                run: r.run,
                task: r.idx,
                gpu_model: if r.gpu_milli > 0 { r.gpu_model } else { None },
                class: r.class,
                gpu_milli: r.gpu_milli,
                cpu_milli: r.cpu_milli,
                memory_mib: r.memory_mib,
                start: r.started_ms,
                end: r.ended_ms,
            })
            .collect())
    }

    async fn node_spans(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<suanli_billing::NodeSpan>, StoreError> {
        let rows: Vec<SpanRow> = sqlx::query_as(
            "SELECT n.name, s.gpu_model, s.gpus, s.state, s.start_ms, s.end_ms \
             FROM node_spans s JOIN nodes n ON n.id = s.node_id \
             WHERE s.start_ms < $1 AND (s.end_ms IS NULL OR s.end_ms > $2) \
             ORDER BY s.node_id, s.start_ms",
        )
        .bind(to)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| suanli_billing::NodeSpan {
                node: r.name,
                gpu_model: r.gpu_model,
                gpus: r.gpus,
                state: r.state,
                start: r.start_ms,
                end: r.end_ms,
            })
            .collect())
    }
}

/// Append an audit row inside the transaction of the action it records:
/// the action and its record commit together or not at all.
pub(super) async fn audit<DB>(
    tx: &mut DB::Connection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
{
    sqlx::query(
        "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now_ms())
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(tx)
    .await?;
    Ok(())
}

/// A job's tasks, every attempt, by run and index, with node names.
async fn tasks_of<DB>(conn: &mut DB::Connection, job: i64) -> Result<Vec<TaskView>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    for<'r> TaskViewRow: FromRow<'r, DB::Row>,
{
    let rows: Vec<TaskViewRow> = sqlx::query_as(
        "SELECT k.run, k.idx, n.name AS node, k.gpus, k.state, k.started_ms, k.ended_ms, \
         k.exit_code, k.reason \
         FROM tasks k JOIN nodes n ON n.id = k.node_id WHERE k.job_id = $1 ORDER BY k.run, k.idx",
    )
    .bind(job)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(TaskView::from).collect())
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
