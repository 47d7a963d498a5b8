//! The SQLite backend (the embedded default): WAL, synchronous=FULL,
//! foreign keys, busy timeout, migrations from `migrations/` embedded at
//! build time. Reads and admin writes use an async pool (sqlx); the loop's
//! batches go through `writer.rs`, one thread with its own connection.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

mod commit;
mod writer;

use super::*;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The loop's batches go through their own connection and thread.
    writer: writer::Writer,
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
        let writer = writer::Writer::start(&dir.join("suanli.db"))?;
        Ok(SqliteStore { pool, writer })
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

    async fn create_tenant(
        &self,
        name: &str,
        weight: f64,
        actor: &str,
    ) -> Result<Tenant, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("INSERT INTO tenants (name, weight, created_ms) VALUES (?, ?, ?)")
            .bind(name)
            .bind(weight)
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
        let id = match r {
            Ok(r) => r.last_insert_rowid(),
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("tenant {name:?}")))
            }
            Err(e) => return Err(e.into()),
        };
        let target = format!("tenant {name}");
        audit(
            &mut tx,
            actor,
            "tenant.create",
            &target,
            &format!("weight {weight}"),
        )
        .await?;
        tx.commit().await?;
        Ok(Tenant {
            id,
            name: name.to_string(),
            weight,
        })
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
        actor: &str,
    ) -> Result<(), StoreError> {
        // A write first: a transaction that reads first cannot take the
        // write lock once another writer committed (SQLITE_BUSY at once,
        // past the busy timeout).
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO quotas (tenant_id, gpu_model, guaranteed_milli, max_milli) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant_id, gpu_model) DO UPDATE SET guaranteed_milli = excluded.guaranteed_milli, \
             max_milli = excluded.max_milli",
        )
        .bind(tenant_id)
        .bind(model)
        .bind(guaranteed_milli)
        .bind(max_milli)
        .execute(&mut *tx)
        .await?;
        let tenant: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = ?")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let gpus = |m: i64| m as f64 / 1000.0;
        let detail = format!(
            "guaranteed {} GPUs, max {}",
            gpus(guaranteed_milli),
            max_milli.map_or("none".to_string(), |m| format!("{} GPUs", gpus(m)))
        );
        let target = format!("tenant {tenant} model {model}");
        audit(&mut tx, actor, "quota.set", &target, &detail).await?;
        tx.commit().await?;
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
        };
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO tokens (hash, scope, tenant_id, node, name, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(s)
        .bind(tid)
        .bind(node)
        .bind(name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        let id = match r {
            Ok(r) => r.last_insert_rowid(),
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
        };
        let target = format!("token {id} ({what})");
        audit(&mut tx, actor, action, &target, name).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The scope of a live (not revoked) token, by the hash of its secret.
    async fn scope_of(&self, hash: &str) -> Result<Option<(i64, Scope)>, StoreError> {
        let r = sqlx::query(
            "SELECT k.id, k.scope, k.tenant_id, k.node, t.name FROM tokens k \
             LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ? AND k.revoked_ms IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let scope: TokenScope = r.try_get("scope")?;
        let s = match scope {
            TokenScope::Admin => Scope::Admin,
            TokenScope::Agent => match r.try_get::<Option<String>, _>("node")? {
                Some(name) => Scope::Node { name },
                None => Scope::Join,
            },
            TokenScope::Tenant => Scope::Tenant {
                id: r.try_get("tenant_id")?,
                name: r.try_get("name")?,
            },
        };
        Ok(Some((r.try_get("id")?, s)))
    }

    async fn audit_log(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, detail FROM audit WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.id, k.scope, t.name AS tenant, k.node, k.name, k.created_ms, k.revoked_ms \
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
                    node: r.try_get("node")?,
                    name: r.try_get("name")?,
                    created_ms: r.try_get("created_ms")?,
                    revoked: revoked.is_some(),
                })
            })
            .collect()
    }

    /// Revoke a live token, unless it is the last live admin token (one
    /// statement: two admins revoking each other at once cannot both win).
    async fn revoke_token(&self, id: i64, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE tokens SET revoked_ms = ?1 WHERE id = ?2 AND revoked_ms IS NULL \
             AND (scope <> ?3 OR (SELECT COUNT(*) FROM tokens WHERE scope = ?3 AND revoked_ms IS NULL) > 1)",
        )
        .bind(now_ms())
        .bind(id)
        .bind(TokenScope::Admin)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            audit(&mut tx, actor, "token.revoke", &format!("token {id}"), "").await?;
            tx.commit().await?;
            return Ok(());
        }
        let live_admin: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM tokens WHERE id = ? AND revoked_ms IS NULL AND scope = ?",
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

    async fn live_jobs(
        &self,
        state: JobState,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError> {
        // `ended_ms IS NULL` selects the partial index `jobs_live`.
        let q = format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN tenants t ON t.id = j.tenant_id \
             WHERE j.ended_ms IS NULL AND j.state = ? AND j.id > ? ORDER BY j.id LIMIT ?"
        );
        let rows = sqlx::query(&q)
            .bind(state)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
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
        // One snapshot: the stored events and the task rows agree.
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT run, at_ms, kind, detail FROM job_events WHERE job_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("run")?,
                    JobEvent {
                        at_ms: r.try_get("at_ms")?,
                        kind: r.try_get("kind")?,
                        detail: r.try_get("detail")?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let tasks = tasks_of(&mut tx, id).await?;
        tx.commit().await?;
        Ok(super::history(stored, &tasks))
    }

    /// Apply a batch of writes in one transaction: all or nothing.
    fn commit(&self, writes: Vec<Write>) -> Committing {
        self.writer.commit(writes)
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
        let rows = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes n WHERE n.removed_ms IS NULL ORDER BY n.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn removed_nodes(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT name, id FROM nodes WHERE removed_ms IS NOT NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("id")?)))
            .collect()
    }

    /// The tasks of RUNNING jobs' current attempts that hold resources
    /// (ASSIGNED or RUNNING), by job id then task index.
    async fn active_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.job_id, k.run, k.idx, k.node_id, k.gpus, k.state, k.started_ms FROM tasks k \
             JOIN jobs j ON j.id = k.job_id AND j.run = k.run \
             WHERE j.ended_ms IS NULL AND j.state = ? \
             AND (k.state IN (?, ?) OR (k.state = ? AND k.exit_code = 0)) ORDER BY k.job_id, k.idx",
        )
        .bind(JobState::Running)
        .bind(TaskState::Assigned)
        .bind(TaskState::Running)
        .bind(TaskState::Exited)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks whose devices an agent may still hold (see the trait).
    async fn killing_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.job_id, k.run, k.idx, k.node_id, k.gpus, k.state, k.started_ms FROM tasks k \
             JOIN nodes n ON n.id = k.node_id \
             WHERE k.state = ? \
             OR (k.state = ? AND n.state = ? AND k.ended_ms >= n.last_heartbeat_ms \
                 AND n.removed_ms IS NULL)",
        )
        .bind(TaskState::Killing)
        .bind(TaskState::Lost)
        .bind(NodeState::Down)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks of a job, every attempt, oldest first.
    async fn job_tasks(&self, job: i64) -> Result<Vec<TaskView>, StoreError> {
        tasks_of(&mut *self.pool.acquire().await?, job).await
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
}

/// Append an audit row inside the transaction of the action it records:
/// the action and its record commit together or not at all.
async fn audit(
    tx: &mut SqliteConnection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(tx)
        .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const JOB_COLUMNS: &str =
    "j.id, t.name AS tenant, j.name, j.command, j.tasks, j.cpu_milli, j.memory_mib, \
     j.num_gpu, j.gpu_milli, j.gpu_models, j.class, j.env, j.workdir, j.max_runtime_s, j.retries, \
     j.run, j.interrupted, j.state, j.submitted_ms, j.started_ms, j.ended_ms";

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
        interrupted: r.try_get("interrupted")?,
        state: r.try_get("state")?,
        submitted_ms: r.try_get("submitted_ms")?,
        started_ms: r.try_get("started_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        reason: None,
    })
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

/// A job's tasks, every attempt, by run and index, with node names.
async fn tasks_of(conn: &mut SqliteConnection, job: i64) -> Result<Vec<TaskView>, StoreError> {
    let rows = sqlx::query(
            "SELECT k.run, k.idx, n.name AS node, k.gpus, k.state, k.started_ms, k.ended_ms, k.exit_code, k.reason \
             FROM tasks k JOIN nodes n ON n.id = k.node_id WHERE k.job_id = ? ORDER BY k.run, k.idx",
        )
        .bind(job)
        .fetch_all(&mut *conn)
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
