//! The SQLite backend (the embedded default): WAL, synchronous=FULL,
//! foreign keys, busy timeout, migrations from `migrations/` embedded at
//! build time.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::*;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) `DIR/suanli.db` and bring its schema up to date.
    pub async fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let url = format!("sqlite://{}", dir.join("suanli.db").display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// The connection pool (for tools and tests that inspect the store).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    async fn token_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_tenant(&self, name: &str, weight: f64) -> Result<Tenant, StoreError> {
        let r = sqlx::query("INSERT INTO tenants (name, weight, created_ms) VALUES (?, ?, ?)")
            .bind(name)
            .bind(weight)
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match r {
            Ok(r) => Ok(Tenant {
                id: r.last_insert_rowid(),
                name: name.to_string(),
                weight,
            }),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("tenant {name:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT id, name, weight FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
        let r = sqlx::query("SELECT id, name, weight FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        tenant_from_row(&r)
    }

    /// Set (insert or replace) a tenant's quota on a GPU model, in milli.
    async fn set_quota(
        &self,
        tenant_id: i64,
        model: &str,
        guaranteed_milli: i64,
        max_milli: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO quotas (tenant_id, gpu_model, guaranteed_milli, max_milli) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant_id, gpu_model) DO UPDATE SET guaranteed_milli = excluded.guaranteed_milli, \
             max_milli = excluded.max_milli",
        )
        .bind(tenant_id)
        .bind(model)
        .bind(guaranteed_milli)
        .bind(max_milli)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn quotas(&self, tenant_id: i64) -> Result<Vec<Quota>, StoreError> {
        let rows = sqlx::query(
            "SELECT gpu_model, guaranteed_milli, max_milli FROM quotas WHERE tenant_id = ? ORDER BY gpu_model",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let g: i64 = r.try_get("guaranteed_milli")?;
                let m: Option<i64> = r.try_get("max_milli")?;
                Ok(Quota {
                    gpu_model: r.try_get("gpu_model")?,
                    guaranteed: g as f64 / 1000.0,
                    max: m.map(|m| m as f64 / 1000.0),
                })
            })
            .collect()
    }

    async fn insert_token(&self, hash: &str, scope: &Scope, name: &str) -> Result<i64, StoreError> {
        let (s, tid) = match scope {
            Scope::Admin => (TokenScope::Admin, None),
            Scope::Agent => (TokenScope::Agent, None),
            Scope::Tenant { id, .. } => (TokenScope::Tenant, Some(*id)),
        };
        let r = sqlx::query(
            "INSERT INTO tokens (hash, scope, tenant_id, name, created_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(s)
        .bind(tid)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_rowid())
    }

    /// The scope of a live (not revoked) token, by the hash of its secret.
    async fn scope_of(&self, hash: &str) -> Result<Option<Scope>, StoreError> {
        let r = sqlx::query(
            "SELECT k.scope, k.tenant_id, t.name FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.hash = ? AND k.revoked_ms IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let scope: TokenScope = r.try_get("scope")?;
        Ok(Some(match scope {
            TokenScope::Admin => Scope::Admin,
            TokenScope::Agent => Scope::Agent,
            TokenScope::Tenant => Scope::Tenant {
                id: r.try_get("tenant_id")?,
                name: r.try_get("name")?,
            },
        }))
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.id, k.scope, t.name AS tenant, k.name, k.created_ms, k.revoked_ms \
             FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id ORDER BY k.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let revoked: Option<i64> = r.try_get("revoked_ms")?;
                Ok(TokenInfo {
                    id: r.try_get("id")?,
                    scope: r.try_get("scope")?,
                    tenant: r.try_get("tenant")?,
                    name: r.try_get("name")?,
                    created_ms: r.try_get("created_ms")?,
                    revoked: revoked.is_some(),
                })
            })
            .collect()
    }

    async fn revoke_token(&self, id: i64) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// A job; with `tenant`, only if it belongs to that tenant.
    async fn job(&self, id: i64, tenant: Option<i64>) -> Result<Job, StoreError> {
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.id = ? AND (? IS NULL OR j.tenant_id = ?)"
        );
        let r = sqlx::query(&q)
            .bind(id)
            .bind(tenant)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        job_from_row(&r)
    }

    /// Jobs with id > `after`, oldest first, at most `limit`; filtered by
    /// tenant and state when given.
    async fn jobs(
        &self,
        tenant: Option<i64>,
        state: Option<JobState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.id > ? AND (? IS NULL OR j.tenant_id = ?) AND (? IS NULL OR j.state = ?) \
             ORDER BY j.id LIMIT ?"
        );
        let rows = sqlx::query(&q)
            .bind(after)
            .bind(tenant)
            .bind(tenant)
            .bind(state)
            .bind(state)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn events(&self, id: i64) -> Result<Vec<JobEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT at_ms, kind, detail FROM job_events WHERE job_id = ? ORDER BY id")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(JobEvent {
                    at_ms: r.try_get("at_ms")?,
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Apply a batch of writes in one transaction: all or nothing.
    async fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // Writes are applied in order, except that runs of job inserts, of
        // job starts and of node states become multi-row statements, and
        // events (append-only, read by no other write) are inserted last, in
        // their own order: far fewer round trips for the same result.
        let mut events: Vec<&Write> = Vec::new();
        let mut i = 0;
        while i < writes.len() {
            let w = &writes[i];
            match w {
                Write::Event { .. } => {
                    events.push(w);
                    i += 1;
                }
                Write::InsertJob { .. } | Write::StartJob { .. } | Write::NodeState { .. } => {
                    let same = |x: &Write| std::mem::discriminant(x) == std::mem::discriminant(w);
                    let mut run = Vec::new();
                    while i < writes.len() {
                        match &writes[i] {
                            e @ Write::Event { .. } => events.push(e),
                            x if same(x) => run.push(x),
                            _ => break,
                        }
                        i += 1;
                    }
                    match w {
                        Write::InsertJob { .. } => insert_jobs(&mut tx, &run).await?,
                        Write::StartJob { .. } => start_jobs(&mut tx, &run).await?,
                        _ => node_states(&mut tx, &run).await?,
                    }
                }
                Write::JobState { job, state, ended } => {
                    sqlx::query("UPDATE jobs SET state = ?, ended_ms = ? WHERE id = ?")
                        .bind(*state)
                        .bind(ended)
                        .bind(job)
                        .execute(&mut *tx)
                        .await?;
                    i += 1;
                }
                Write::TaskState {
                    job,
                    run,
                    task,
                    from,
                    to,
                    at,
                    exit_code,
                    reason,
                } => {
                    for f in *from {
                        sqlx::query(
                            "UPDATE tasks SET state = ?, ended_ms = COALESCE(?, ended_ms), \
                             exit_code = COALESCE(?, exit_code), reason = CASE WHEN ? = '' THEN reason ELSE ? END \
                             WHERE job_id = ? AND run = ? AND (? IS NULL OR idx = ?) AND state = ?",
                        )
                        .bind(*to)
                        .bind(at)
                        .bind(exit_code)
                        .bind(reason)
                        .bind(reason)
                        .bind(job)
                        .bind(run)
                        .bind(task)
                        .bind(task)
                        .bind(*f)
                        .execute(&mut *tx)
                        .await?;
                    }
                    i += 1;
                }
                Write::UpsertNode(n) => {
                    upsert_node(&mut tx, n).await?;
                    i += 1;
                }
                Write::Heartbeat { node, at } => {
                    sqlx::query("UPDATE nodes SET last_heartbeat_ms = ? WHERE id = ?")
                        .bind(at)
                        .bind(node)
                        .execute(&mut *tx)
                        .await?;
                    i += 1;
                }
            }
        }
        for chunk in events.chunks(200) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO job_events (job_id, at_ms, kind, detail) ",
            );
            q.push_values(chunk, |mut b, e| {
                if let Write::Event {
                    job,
                    at,
                    kind,
                    detail,
                } = e
                {
                    b.push_bind(*job)
                        .push_bind(*at)
                        .push_bind(*kind)
                        .push_bind(detail.as_str());
                }
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
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
        let rows = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes n ORDER BY n.id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    /// The tasks of RUNNING jobs' current attempts that hold resources
    /// (ASSIGNED or RUNNING), by job id then task index.
    async fn active_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.job_id, k.run, k.idx, k.node_id, k.gpus, k.state, k.started_ms FROM tasks k \
             JOIN jobs j ON j.id = k.job_id AND j.run = k.run \
             WHERE j.state = 'RUNNING' AND k.state IN ('ASSIGNED', 'RUNNING') ORDER BY k.job_id, k.idx",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks agents were ordered to stop and have not confirmed yet.
    async fn killing_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, run, idx, node_id, gpus, state, started_ms FROM tasks WHERE state = 'KILLING'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks of a job, every attempt, oldest first.
    async fn job_tasks(&self, job: i64) -> Result<Vec<TaskView>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.run, k.idx, n.name AS node, k.gpus, k.state, k.started_ms, k.ended_ms, k.exit_code, k.reason \
             FROM tasks k JOIN nodes n ON n.id = k.node_id WHERE k.job_id = ? ORDER BY k.run, k.idx",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let mask: i64 = r.try_get("gpus")?;
                Ok(TaskView {
                    run: r.try_get("run")?,
                    index: r.try_get("idx")?,
                    node: r.try_get("node")?,
                    gpus: mask_devices(mask),
                    state: r.try_get("state")?,
                    started_ms: r.try_get("started_ms")?,
                    ended_ms: r.try_get("ended_ms")?,
                    exit_code: r.try_get("exit_code")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    async fn task_node(&self, job: i64, run: i64, task: i64) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT node_id FROM tasks WHERE job_id = ? AND run = ? AND idx = ?",
            )
            .bind(job)
            .bind(run)
            .bind(task)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    async fn node_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM nodes WHERE name = ?")
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
        let rows = sqlx::query(
            "SELECT t.name AS tenant, k.job_id, k.run, k.idx, COALESCE(k.gpu_model, n.gpu_model) AS gpu_model, j.class, \
             j.num_gpu * j.gpu_milli AS gpu_milli, j.cpu_milli, j.memory_mib, k.started_ms, k.ended_ms \
             FROM tasks k JOIN jobs j ON j.id = k.job_id JOIN tenants t ON t.id = j.tenant_id \
             JOIN nodes n ON n.id = k.node_id \
             WHERE k.started_ms < ? AND (k.ended_ms IS NULL OR k.ended_ms > ?) \
             AND (? IS NULL OR j.tenant_id = ?) ORDER BY k.job_id, k.run, k.idx",
        )
        .bind(to)
        .bind(from)
        .bind(tenant)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let gpu_milli: i64 = r.try_get("gpu_milli")?;
                Ok(suanli_billing::Usage {
                    tenant: r.try_get("tenant")?,
                    job: r.try_get("job_id")?,
                    run: r.try_get("run")?,
                    task: r.try_get("idx")?,
                    gpu_model: if gpu_milli > 0 {
                        r.try_get("gpu_model")?
                    } else {
                        None
                    },
                    class: r.try_get("class")?,
                    gpu_milli,
                    cpu_milli: r.try_get("cpu_milli")?,
                    memory_mib: r.try_get("memory_mib")?,
                    start: r.try_get("started_ms")?,
                    end: r.try_get("ended_ms")?,
                })
            })
            .collect()
    }

    async fn node_spans(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<suanli_billing::NodeSpan>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.name, s.gpu_model, s.gpus, s.state, s.start_ms, s.end_ms \
             FROM node_spans s JOIN nodes n ON n.id = s.node_id \
             WHERE s.start_ms < ? AND (s.end_ms IS NULL OR s.end_ms > ?) \
             ORDER BY s.node_id, s.start_ms",
        )
        .bind(to)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(suanli_billing::NodeSpan {
                    node: r.try_get("name")?,
                    gpu_model: r.try_get("gpu_model")?,
                    gpus: r.try_get("gpus")?,
                    state: r.try_get("state")?,
                    start: r.try_get("start_ms")?,
                    end: r.try_get("end_ms")?,
                })
            })
            .collect()
    }

    /// Jobs by state (for metrics).
    async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}

/// Record that `node` is in `state` (with `inventory`, or its stored one)
/// from `at`: close its open span and open a new one, unless nothing
/// changed. A change dated before later spans (a lost node is down from its
/// last heartbeat, which can precede a drain) replaces them, so the spans of
/// a node never overlap and the history agrees with the billing of its tasks.
async fn node_span(
    tx: &mut sqlx::SqliteConnection,
    node: i64,
    state: NodeState,
    inventory: Option<(Option<String>, i64)>,
    at: i64,
) -> Result<(), StoreError> {
    let (model, gpus): (Option<String>, i64) = match inventory {
        Some(i) => i,
        None => {
            let r = sqlx::query("SELECT gpu_model, gpus FROM nodes WHERE id = ?")
                .bind(node)
                .fetch_one(&mut *tx)
                .await?;
            (r.try_get("gpu_model")?, r.try_get("gpus")?)
        }
    };
    let open = sqlx::query(
        "SELECT start_ms, state, gpu_model, gpus FROM node_spans WHERE node_id = ? AND end_ms IS NULL",
    )
    .bind(node)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(r) = open {
        let (start, st, m, g): (i64, NodeState, Option<String>, i64) = (
            r.try_get("start_ms")?,
            r.try_get("state")?,
            r.try_get("gpu_model")?,
            r.try_get("gpus")?,
        );
        if st == state && m == model && g == gpus && start <= at {
            return Ok(());
        }
    }
    sqlx::query("DELETE FROM node_spans WHERE node_id = ? AND start_ms > ?")
        .bind(node)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE node_spans SET end_ms = ? WHERE node_id = ? AND (end_ms IS NULL OR end_ms > ?)",
    )
    .bind(at)
    .bind(node)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    // A zero-length span (two changes in one millisecond) is replaced.
    sqlx::query(
        "INSERT INTO node_spans (node_id, start_ms, end_ms, state, gpu_model, gpus) \
         VALUES (?, ?, NULL, ?, ?, ?) ON CONFLICT (node_id, start_ms) DO UPDATE SET \
         end_ms = NULL, state = excluded.state, gpu_model = excluded.gpu_model, gpus = excluded.gpus",
    )
    .bind(node)
    .bind(at)
    .bind(state)
    .bind(&model)
    .bind(gpus)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const JOB_COLUMNS: &str =
    "j.id, t.name AS tenant, j.name, j.command, j.tasks, j.cpu_milli, j.memory_mib, \
     j.num_gpu, j.gpu_milli, j.gpu_models, j.class, j.env, j.workdir, j.max_runtime_s, j.retries, \
     j.run, j.state, j.submitted_ms, j.started_ms, j.ended_ms";

fn tenant_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        weight: r.try_get("weight")?,
    })
}

fn job_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Job, StoreError> {
    let command: String = r.try_get("command")?;
    let models: String = r.try_get("gpu_models")?;
    let env: String = r.try_get("env")?;
    Ok(Job {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        tasks: r.try_get("tasks")?,
        cpu_milli: r.try_get("cpu_milli")?,
        memory_mib: r.try_get("memory_mib")?,
        num_gpu: r.try_get("num_gpu")?,
        gpu_milli: r.try_get("gpu_milli")?,
        gpu_models: serde_json::from_str(&models).unwrap_or_default(),
        class: r.try_get("class")?,
        env: serde_json::from_str(&env).unwrap_or_default(),
        workdir: r.try_get("workdir")?,
        max_runtime_s: r.try_get("max_runtime_s")?,
        retries: r.try_get("retries")?,
        run: r.try_get("run")?,
        state: r.try_get("state")?,
        submitted_ms: r.try_get("submitted_ms")?,
        started_ms: r.try_get("started_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        reason: None,
    })
}

async fn node_states(tx: &mut sqlx::SqliteConnection, run: &[&Write]) -> Result<(), StoreError> {
    let mut by_state: BTreeMap<NodeState, Vec<i64>> = BTreeMap::new();
    for w in run {
        if let Write::NodeState { node, state, .. } = w {
            by_state.entry(*state).or_default().push(*node);
        }
    }
    // A node set twice in one run keeps its last state; every change opens a span.
    let mut last: BTreeMap<i64, NodeState> = BTreeMap::new();
    for w in run {
        if let Write::NodeState { node, state, at } = w {
            last.insert(*node, *state);
            node_span(tx, *node, *state, None, *at).await?;
        }
    }
    for (state, nodes) in by_state {
        let nodes: Vec<i64> = nodes.into_iter().filter(|n| last[n] == state).collect();
        for chunk in nodes.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE nodes SET state = ");
            q.push_bind(state).push(" WHERE id IN (");
            let mut sep = q.separated(", ");
            for n in chunk {
                sep.push_bind(*n);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
    }
    Ok(())
}

async fn insert_jobs(tx: &mut sqlx::SqliteConnection, run: &[&Write]) -> Result<(), StoreError> {
    for chunk in run.chunks(100) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli, \
             gpu_models, class, env, workdir, max_runtime_s, retries, state, submitted_ms) ",
        );
        q.push_values(chunk, |mut b, w| {
            if let Write::InsertJob {
                id,
                tenant_id,
                job: j,
                at,
            } = w
            {
                b.push_bind(*id)
                    .push_bind(*tenant_id)
                    .push_bind(j.name.clone())
                    .push_bind(serde_json::to_string(&j.command).expect("strings serialise"))
                    .push_bind(j.tasks)
                    .push_bind(j.cpu_milli)
                    .push_bind(j.memory_mib)
                    .push_bind(j.num_gpu)
                    .push_bind(j.gpu_milli)
                    .push_bind(serde_json::to_string(&j.gpu_models).expect("strings serialise"))
                    .push_bind(j.class)
                    .push_bind(serde_json::to_string(&j.env).expect("strings serialise"))
                    .push_bind(j.workdir.clone())
                    .push_bind(j.max_runtime_s)
                    .push_bind(j.retries)
                    .push_bind(JobState::Pending)
                    .push_bind(*at);
            }
        });
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Consecutive job starts: their job rows and every task row, a few
/// statements per hundred jobs.
async fn start_jobs(tx: &mut sqlx::SqliteConnection, run: &[&Write]) -> Result<(), StoreError> {
    for chunk in run.chunks(100) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "UPDATE jobs SET state = 'RUNNING', run = CASE id",
        );
        for w in chunk {
            if let Write::StartJob { job, run, .. } = w {
                q.push(" WHEN ")
                    .push_bind(*job)
                    .push(" THEN ")
                    .push_bind(*run);
            }
        }
        q.push(" END, started_ms = CASE id");
        for w in chunk {
            if let Write::StartJob { job, at, .. } = w {
                q.push(" WHEN ")
                    .push_bind(*job)
                    .push(" THEN ")
                    .push_bind(*at);
            }
        }
        q.push(" END WHERE id IN (");
        let mut sep = q.separated(", ");
        for w in chunk {
            if let Write::StartJob { job, .. } = w {
                sep.push_bind(*job);
            }
        }
        q.push(")");
        q.build().execute(&mut *tx).await?;
        let mut rows: Vec<(i64, i64, i64, i64, i64, i64)> = Vec::new();
        for w in chunk {
            if let Write::StartJob {
                job,
                run,
                at,
                tasks,
            } = w
            {
                for (i, (node, mask)) in tasks.iter().enumerate() {
                    rows.push((*job, *run, i as i64, *node, *mask, *at));
                }
            }
        }
        for part in rows.chunks(150) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO tasks (job_id, run, idx, node_id, gpus, state, started_ms, gpu_model) ",
            );
            q.push_values(part, |mut b, r| {
                b.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4)
                    .push_bind(TaskState::Assigned)
                    .push_bind(r.5)
                    // The model it runs on, kept should the node's inventory change later.
                    .push("(SELECT gpu_model FROM nodes WHERE id = ")
                    .push_bind_unseparated(r.3)
                    .push_unseparated(")");
            });
            q.build().execute(&mut *tx).await?;
        }
    }
    Ok(())
}

const NODE_COLUMNS: &str =
    "n.id, n.name, n.addr, n.gpu_model, n.gpus, n.gpu_memory_mib, n.cpu_milli, \
     n.memory_mib, n.rack, n.labels, n.state, n.registered_ms, n.last_heartbeat_ms";

fn node_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Node, StoreError> {
    let labels: String = r.try_get("labels")?;
    Ok(Node {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        addr: r.try_get("addr")?,
        gpu_model: r.try_get("gpu_model")?,
        gpus: r.try_get("gpus")?,
        gpu_memory_mib: r.try_get("gpu_memory_mib")?,
        cpu_milli: r.try_get("cpu_milli")?,
        memory_mib: r.try_get("memory_mib")?,
        rack: r.try_get("rack")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        state: r.try_get("state")?,
        registered_ms: r.try_get("registered_ms")?,
        last_heartbeat_ms: r.try_get("last_heartbeat_ms")?,
    })
}

fn task_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Task, StoreError> {
    Ok(Task {
        job: r.try_get("job_id")?,
        run: r.try_get("run")?,
        index: r.try_get("idx")?,
        node: r.try_get("node_id")?,
        gpus: r.try_get("gpus")?,
        state: r.try_get("state")?,
        started_ms: r.try_get("started_ms")?,
    })
}

/// Insert a node or update its inventory and state, and record the change
/// in its history.
async fn upsert_node(tx: &mut sqlx::SqliteConnection, n: &Node) -> Result<(), StoreError> {
    sqlx::query(
            "INSERT INTO nodes (id, name, addr, gpu_model, gpus, gpu_memory_mib, cpu_milli, memory_mib, rack, \
             labels, state, registered_ms, last_heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, gpu_model = excluded.gpu_model, \
             gpus = excluded.gpus, gpu_memory_mib = excluded.gpu_memory_mib, cpu_milli = excluded.cpu_milli, \
             memory_mib = excluded.memory_mib, rack = excluded.rack, labels = excluded.labels, \
             state = excluded.state, last_heartbeat_ms = excluded.last_heartbeat_ms",
        )
        .bind(n.id)
        .bind(&n.name)
        .bind(&n.addr)
        .bind(&n.gpu_model)
        .bind(n.gpus)
        .bind(n.gpu_memory_mib)
        .bind(n.cpu_milli)
        .bind(n.memory_mib)
        .bind(&n.rack)
        .bind(serde_json::to_string(&n.labels).expect("strings serialise"))
        .bind(n.state)
        .bind(n.registered_ms)
        .bind(n.last_heartbeat_ms)
        .execute(&mut *tx)
        .await?;
    let inventory = (n.gpu_model.clone(), n.gpus);
    node_span(tx, n.id, n.state, Some(inventory), n.last_heartbeat_ms).await
}
