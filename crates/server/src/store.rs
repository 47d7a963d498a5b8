//! The durable store: SQLite through sqlx (WAL, foreign keys, migrations
//! embedded in the binary). Every state change and its job event are written
//! in one transaction.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub weight: f64,
}

/// A tenant's quota on one GPU model, in GPUs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Quota {
    pub gpu_model: String,
    pub guaranteed: f64,
    /// `None` = unlimited.
    pub max: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Tenant { id: i64, name: String },
    Agent,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TokenInfo {
    pub id: i64,
    pub scope: String,
    pub tenant: Option<String>,
    pub name: String,
    pub created_ms: i64,
    pub revoked: bool,
}

/// A job as stored and returned by the API.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Job {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    pub command: Vec<String>,
    pub tasks: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub num_gpu: i64,
    pub gpu_milli: i64,
    pub gpu_models: Vec<String>,
    pub class: String,
    pub state: String,
    pub submitted_ms: i64,
    pub ended_ms: Option<i64>,
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
    pub class: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JobEvent {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("job is {0}: only PENDING or RUNNING jobs can be cancelled")]
    NotCancellable(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const JOB_COLUMNS: &str =
    "j.id, t.name AS tenant, j.name, j.command, j.tasks, j.cpu_milli, j.memory_mib, \
     j.num_gpu, j.gpu_milli, j.gpu_models, j.class, j.state, j.submitted_ms, j.ended_ms";

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
        state: r.try_get("state")?,
        submitted_ms: r.try_get("submitted_ms")?,
        ended_ms: r.try_get("ended_ms")?,
    })
}

impl Store {
    /// Open (creating if needed) `DIR/suanli.db` and bring its schema up to date.
    pub async fn open(dir: &Path) -> Result<Store, StoreError> {
        let url = format!("sqlite://{}", dir.join("suanli.db").display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn token_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn create_tenant(&self, name: &str, weight: f64) -> Result<Tenant, StoreError> {
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

    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT id, name, weight FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    pub async fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
        let r = sqlx::query("SELECT id, name, weight FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        tenant_from_row(&r)
    }

    /// Set (insert or replace) a tenant's quota on a GPU model, in milli.
    pub async fn set_quota(
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

    pub async fn quotas(&self, tenant_id: i64) -> Result<Vec<Quota>, StoreError> {
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

    pub async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        name: &str,
    ) -> Result<i64, StoreError> {
        let (s, tid) = match scope {
            Scope::Admin => ("admin", None),
            Scope::Agent => ("agent", None),
            Scope::Tenant { id, .. } => ("tenant", Some(*id)),
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
    pub async fn scope_of(&self, hash: &str) -> Result<Option<Scope>, StoreError> {
        let r = sqlx::query(
            "SELECT k.scope, k.tenant_id, t.name FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.hash = ? AND k.revoked_ms IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let scope: String = r.try_get("scope")?;
        Ok(Some(match scope.as_str() {
            "admin" => Scope::Admin,
            "agent" => Scope::Agent,
            _ => Scope::Tenant {
                id: r.try_get("tenant_id")?,
                name: r.try_get("name")?,
            },
        }))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
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

    pub async fn revoke_token(&self, id: i64) -> Result<(), StoreError> {
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

    /// Insert a job and its SUBMITTED event in one transaction.
    pub async fn submit(&self, tenant_id: i64, j: &NewJob) -> Result<Job, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO jobs (tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli, \
             gpu_models, class, state, submitted_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?)",
        )
        .bind(tenant_id)
        .bind(&j.name)
        .bind(serde_json::to_string(&j.command).expect("strings serialise"))
        .bind(j.tasks)
        .bind(j.cpu_milli)
        .bind(j.memory_mib)
        .bind(j.num_gpu)
        .bind(j.gpu_milli)
        .bind(serde_json::to_string(&j.gpu_models).expect("strings serialise"))
        .bind(&j.class)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let id = r.last_insert_rowid();
        sqlx::query("INSERT INTO job_events (job_id, at_ms, kind) VALUES (?, ?, 'SUBMITTED')")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.job(id, None).await
    }

    /// A job; with `tenant`, only if it belongs to that tenant.
    pub async fn job(&self, id: i64, tenant: Option<i64>) -> Result<Job, StoreError> {
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
    pub async fn jobs(
        &self,
        tenant: Option<i64>,
        state: Option<&str>,
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

    /// Cancel a PENDING or RUNNING job (of `tenant`, when given): state and
    /// event in one transaction.
    pub async fn cancel(&self, id: i64, tenant: Option<i64>) -> Result<Job, StoreError> {
        let mut tx = self.pool.begin().await?;
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM jobs WHERE id = ? AND (? IS NULL OR tenant_id = ?)",
        )
        .bind(id)
        .bind(tenant)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let state = state.ok_or(StoreError::NotFound)?;
        if state != "PENDING" && state != "RUNNING" {
            return Err(StoreError::NotCancellable(state));
        }
        let now = now_ms();
        sqlx::query("UPDATE jobs SET state = 'CANCELLED', ended_ms = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO job_events (job_id, at_ms, kind, detail) VALUES (?, ?, 'CANCELLED', ?)",
        )
        .bind(id)
        .bind(now)
        .bind(format!("from {state}"))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.job(id, None).await
    }

    pub async fn events(&self, id: i64) -> Result<Vec<JobEvent>, StoreError> {
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
}
