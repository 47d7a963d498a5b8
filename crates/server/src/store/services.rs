//! What model services keep in the store (migration `0017_services.sql`,
//! PostgreSQL `0008_services.sql`): the services themselves, which jobs are
//! their replicas (written by the loop with the job, `commit.rs`), the
//! tokens sold (batched by the router, each request once) and the
//! tenants' rate limits. One implementation for both SQL backends.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::sql::{audit, is_unique_violation};
use super::*;
use suanli_api::{RateLimits, ServiceSpec};

/// A service as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceRow {
    pub id: i64,
    pub tenant_id: i64,
    pub tenant: String,
    pub name: String,
    pub model: String,
    pub public: bool,
    pub spec: ServiceSpec,
    /// The secret its replicas require.
    pub key: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A service to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewService {
    pub tenant_id: i64,
    pub name: String,
    pub model: String,
    pub public: bool,
    pub spec: ServiceSpec,
    /// The secret its replicas will require.
    pub key: String,
}

/// A live replica: its job, and where its current attempt runs.
#[derive(Clone, Debug, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct ReplicaRow {
    pub job: i64,
    pub run: i64,
    pub state: JobState,
    /// The node of task 0 of the current attempt, once started.
    pub node: Option<String>,
    pub addr: Option<String>,
}

/// One answered request's tokens.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRow {
    /// The router's id of the request (a retry keeps it).
    pub request_id: String,
    /// Who called (and pays).
    pub tenant_id: i64,
    pub service_id: i64,
    pub model: String,
    pub at_ms: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Counted from the stream's chunks: the answer carried no usage.
    pub estimated: bool,
}

/// A live replica with its service (`all_live_replicas`).
#[derive(FromRow)]
pub(crate) struct ServiceReplicaRow {
    service_id: i64,
    job: i64,
    run: i64,
    state: JobState,
    node: Option<String>,
    addr: Option<String>,
}

/// One router's counter row (`router_counts`): `kind` "service" (`id` a
/// service: `inflight` now, `requests` so far) or "tenant" (`id` a tenant:
/// `requests` let in and `tokens` charged so far).
#[derive(Clone, Debug, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct RouterCount {
    pub router: String,
    pub kind: String,
    pub id: i64,
    pub inflight: i64,
    pub requests: i64,
    pub tokens: i64,
    pub at_ms: i64,
}

/// A router silent this long is forgotten.
pub const ROUTER_FORGET_MS: i64 = 600_000;

/// Tokens one tenant bought of one model over a period.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct TokenSum {
    pub tenant: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

#[derive(FromRow)]
pub(crate) struct ServiceDbRow {
    id: i64,
    tenant_id: i64,
    tenant: String,
    name: String,
    model: String,
    public: i64,
    spec: String,
    key: String,
    created_ms: i64,
    updated_ms: i64,
}

impl ServiceDbRow {
    fn decode(self) -> Result<ServiceRow, StoreError> {
        let spec = serde_json::from_str(&self.spec).map_err(|e| {
            StoreError::Refused(format!("service {}: stored spec unreadable: {e}", self.id))
        })?;
        Ok(ServiceRow {
            id: self.id,
            tenant_id: self.tenant_id,
            tenant: self.tenant,
            name: self.name,
            model: self.model,
            public: self.public != 0,
            spec,
            key: self.key,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct LimitRow {
    tenant_id: i64,
    requests_per_minute: Option<i64>,
    tokens_per_minute: Option<i64>,
}

/// Services, replicas, tokens and rate limits in the store.
#[async_trait::async_trait]
pub trait ServiceBackend: Send + Sync {
    /// A new service; `Conflict` names what is taken (its name, or its
    /// model among the tenant's services or among public ones).
    async fn create_service(&self, new: &NewService, actor: &str)
        -> Result<ServiceRow, StoreError>;
    /// Live services: of `tenant`, or all.
    async fn services(&self, tenant: Option<i64>) -> Result<Vec<ServiceRow>, StoreError>;
    /// `tenant`'s live service `name`.
    async fn service(&self, tenant: i64, name: &str) -> Result<ServiceRow, StoreError>;
    async fn update_service(
        &self,
        id: i64,
        spec: &ServiceSpec,
        actor: &str,
    ) -> Result<(), StoreError>;
    /// The service is gone for callers and the controller (its replicas are
    /// stopped by the controller; its usage rows stay).
    async fn delete_service(&self, id: i64, actor: &str) -> Result<(), StoreError>;
    /// Replicas of `service` that are not over (pending or running).
    async fn live_replicas(&self, service: i64) -> Result<Vec<ReplicaRow>, StoreError>;
    /// Every live service's live replicas, by service, in one read (the
    /// router's tick).
    async fn all_live_replicas(&self) -> Result<Vec<(i64, ReplicaRow)>, StoreError>;
    /// Replica jobs alive at some time in [from, to), with their model.
    async fn replica_models(&self, from: i64, to: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// Live replica jobs of deleted services (to be stopped).
    async fn orphan_replicas(&self) -> Result<Vec<i64>, StoreError>;
    /// The service a job is a replica of, with its name and key.
    async fn replica_of(&self, job: i64) -> Result<Option<(String, String)>, StoreError>;
    /// Record answered requests, one transaction; a request id already
    /// recorded is skipped. Answers the rows inserted.
    async fn record_tokens(&self, rows: &[TokenRow]) -> Result<u64, StoreError>;
    /// Tokens per (tenant, model) with `from <= at < to`, of one tenant or all.
    async fn token_sums(
        &self,
        tenant: Option<i64>,
        from: i64,
        to: i64,
    ) -> Result<Vec<TokenSum>, StoreError>;
    async fn set_limits(
        &self,
        tenant_id: i64,
        limits: RateLimits,
        actor: &str,
    ) -> Result<(), StoreError>;
    /// Every tenant's limits (tenants without a row have none).
    async fn limits(&self) -> Result<Vec<(i64, RateLimits)>, StoreError>;
    /// Write `router`'s counters (one transaction, stamped `now`), forget
    /// routers silent for `ROUTER_FORGET_MS`, and answer the other
    /// routers' rows written since `fresh_from`.
    async fn exchange_counts(
        &self,
        router: &str,
        rows: &[RouterCount],
        now: i64,
        fresh_from: i64,
    ) -> Result<Vec<RouterCount>, StoreError>;
}

const SERVICE_COLUMNS: &str = "s.id, s.tenant_id, t.name AS tenant, s.name, s.model, s.public, \
     s.spec, s.key, s.created_ms, s.updated_ms FROM services s JOIN tenants t ON t.id = s.tenant_id";

fn conflict(e: &sqlx::Error, name: &str, model: &str) -> StoreError {
    let text = match e {
        sqlx::Error::Database(d) => format!("{} {}", d.message(), d.constraint().unwrap_or("")),
        _ => String::new(),
    };
    // SQLite names columns ("services.tenant_id, services.model"),
    // PostgreSQL the index ("services_public_model").
    if text.contains("services_public_model")
        || (text.contains("services.model") && !text.contains("tenant_id, services.model"))
    {
        StoreError::Conflict(format!(
            "a public service of model {model:?} (model names of public services are shared by every tenant)"
        ))
    } else if text.contains("model") {
        StoreError::Conflict(format!("a service of yours for model {model:?}"))
    } else {
        StoreError::Conflict(format!("service {name:?}"))
    }
}

#[async_trait::async_trait]
impl<DB> ServiceBackend for SqlStore<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB>,
    str: Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'r> (i64, String): FromRow<'r, DB::Row>,
    for<'r> ServiceDbRow: FromRow<'r, DB::Row>,
    for<'r> ReplicaRow: FromRow<'r, DB::Row>,
    for<'r> TokenSum: FromRow<'r, DB::Row>,
    for<'r> LimitRow: FromRow<'r, DB::Row>,
    for<'r> RouterCount: FromRow<'r, DB::Row>,
    for<'r> ServiceReplicaRow: FromRow<'r, DB::Row>,
{
    async fn create_service(
        &self,
        new: &NewService,
        actor: &str,
    ) -> Result<ServiceRow, StoreError> {
        let NewService {
            tenant_id,
            name,
            model,
            public,
            spec,
            key,
        } = new;
        let (tenant_id, public) = (*tenant_id, *public);
        let (name, model, key) = (name.as_str(), model.as_str(), key.as_str());
        let text = serde_json::to_string(spec).expect("a spec serialises");
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let r: Result<(i64,), _> = sqlx::query_as(
            "INSERT INTO services (tenant_id, name, model, public, spec, key, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(model)
        .bind(i64::from(public))
        .bind(text.as_str())
        .bind(key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let (id,) = match r {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => return Err(conflict(&e, name, model)),
            Err(e) => return Err(e.into()),
        };
        let target = format!("service {id} ({name})");
        let detail = format!("model {model}, public {public}");
        audit::<DB>(&mut tx, actor, "service.create", &target, &detail).await?;
        let row: ServiceDbRow =
            sqlx::query_as(&format!("SELECT {SERVICE_COLUMNS} WHERE s.id = $1"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        row.decode()
    }

    async fn services(&self, tenant: Option<i64>) -> Result<Vec<ServiceRow>, StoreError> {
        let rows: Vec<ServiceDbRow> = sqlx::query_as(&format!(
            "SELECT {SERVICE_COLUMNS} WHERE s.deleted_ms IS NULL \
             AND ($1 IS NULL OR s.tenant_id = $1) ORDER BY s.id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ServiceDbRow::decode).collect()
    }

    async fn service(&self, tenant: i64, name: &str) -> Result<ServiceRow, StoreError> {
        let row: Option<ServiceDbRow> = sqlx::query_as(&format!(
            "SELECT {SERVICE_COLUMNS} WHERE s.deleted_ms IS NULL AND s.tenant_id = $1 AND s.name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or(StoreError::NotFound)?.decode()
    }

    async fn update_service(
        &self,
        id: i64,
        spec: &ServiceSpec,
        actor: &str,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(spec).expect("a spec serialises");
        let mut tx = self.pool.begin().await?;
        let n: Option<(i64,)> = sqlx::query_as(
            "UPDATE services SET spec = $1, updated_ms = $2 WHERE id = $3 AND deleted_ms IS NULL \
             RETURNING id",
        )
        .bind(text.as_str())
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if n.is_none() {
            return Err(StoreError::NotFound);
        }
        let detail = format!(
            "min {}, max {}, target_inflight {}",
            spec.min, spec.max, spec.target_inflight
        );
        audit::<DB>(
            &mut tx,
            actor,
            "service.update",
            &format!("service {id}"),
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_service(&self, id: i64, actor: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let n: Option<(i64,)> = sqlx::query_as(
            "UPDATE services SET deleted_ms = $1 WHERE id = $2 AND deleted_ms IS NULL RETURNING id",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if n.is_none() {
            return Err(StoreError::NotFound);
        }
        audit::<DB>(
            &mut tx,
            actor,
            "service.delete",
            &format!("service {id}"),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_replicas(&self, service: i64) -> Result<Vec<ReplicaRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.id AS job, j.run, j.state, n.name AS node, n.addr \
             FROM replicas r JOIN jobs j ON j.id = r.job_id \
             LEFT JOIN tasks k ON k.job_id = j.id AND k.run = j.run AND k.idx = 0 \
             LEFT JOIN nodes n ON n.id = k.node_id \
             WHERE r.service_id = $1 AND j.ended_ms IS NULL ORDER BY j.id",
        )
        .bind(service)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn all_live_replicas(&self) -> Result<Vec<(i64, ReplicaRow)>, StoreError> {
        let rows: Vec<ServiceReplicaRow> = sqlx::query_as(
            "SELECT r.service_id, j.id AS job, j.run, j.state, n.name AS node, n.addr \
             FROM replicas r JOIN services s ON s.id = r.service_id \
             JOIN jobs j ON j.id = r.job_id \
             LEFT JOIN tasks k ON k.job_id = j.id AND k.run = j.run AND k.idx = 0 \
             LEFT JOIN nodes n ON n.id = k.node_id \
             WHERE s.deleted_ms IS NULL AND j.ended_ms IS NULL ORDER BY r.service_id, j.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.service_id,
                    ReplicaRow {
                        job: r.job,
                        run: r.run,
                        state: r.state,
                        node: r.node,
                        addr: r.addr,
                    },
                )
            })
            .collect())
    }

    async fn replica_models(&self, from: i64, to: i64) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT r.job_id, s.model FROM replicas r JOIN services s ON s.id = r.service_id \
             JOIN jobs j ON j.id = r.job_id \
             WHERE j.submitted_ms < $2 AND (j.ended_ms IS NULL OR j.ended_ms > $1) ORDER BY r.job_id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn orphan_replicas(&self) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT r.job_id FROM replicas r JOIN services s ON s.id = r.service_id \
             JOIN jobs j ON j.id = r.job_id \
             WHERE s.deleted_ms IS NOT NULL AND j.ended_ms IS NULL ORDER BY r.job_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(j,)| j).collect())
    }

    async fn replica_of(&self, job: i64) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.name, s.key FROM replicas r JOIN services s ON s.id = r.service_id \
             WHERE r.job_id = $1",
        )
        .bind(job)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn record_tokens(&self, rows: &[TokenRow]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for r in rows {
            let done: Option<(i64,)> = sqlx::query_as(
                "INSERT INTO token_usage (request_id, tenant_id, service_id, model, at_ms, \
                 input_tokens, output_tokens, estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (request_id) DO NOTHING RETURNING tenant_id",
            )
            .bind(r.request_id.as_str())
            .bind(r.tenant_id)
            .bind(r.service_id)
            .bind(r.model.as_str())
            .bind(r.at_ms)
            .bind(r.input_tokens)
            .bind(r.output_tokens)
            .bind(i64::from(r.estimated))
            .fetch_optional(&mut *tx)
            .await?;
            n += u64::from(done.is_some());
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn token_sums(
        &self,
        tenant: Option<i64>,
        from: i64,
        to: i64,
    ) -> Result<Vec<TokenSum>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT t.name AS tenant, u.model, COUNT(*) AS requests, \
             CAST(SUM(u.input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(u.output_tokens) AS BIGINT) AS output_tokens \
             FROM token_usage u JOIN tenants t ON t.id = u.tenant_id \
             WHERE u.at_ms >= $1 AND u.at_ms < $2 AND ($3 IS NULL OR u.tenant_id = $3) \
             GROUP BY t.name, u.model ORDER BY t.name, u.model",
        )
        .bind(from)
        .bind(to)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn set_limits(
        &self,
        tenant_id: i64,
        limits: RateLimits,
        actor: &str,
    ) -> Result<(), StoreError> {
        let as_db = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tenant_limits (tenant_id, requests_per_minute, tokens_per_minute) \
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET \
             requests_per_minute = excluded.requests_per_minute, \
             tokens_per_minute = excluded.tokens_per_minute",
        )
        .bind(tenant_id)
        .bind(as_db(limits.requests_per_minute))
        .bind(as_db(limits.tokens_per_minute))
        .execute(&mut *tx)
        .await?;
        let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
        let detail = format!(
            "requests_per_minute {}, tokens_per_minute {}",
            show(limits.requests_per_minute),
            show(limits.tokens_per_minute)
        );
        audit::<DB>(
            &mut tx,
            actor,
            "tenant.limits",
            &format!("tenant {tenant_id}"),
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn limits(&self) -> Result<Vec<(i64, RateLimits)>, StoreError> {
        let rows: Vec<LimitRow> = sqlx::query_as(
            "SELECT tenant_id, requests_per_minute, tokens_per_minute FROM tenant_limits",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.tenant_id,
                    RateLimits {
                        requests_per_minute: r.requests_per_minute.map(|v| v.max(0) as u64),
                        tokens_per_minute: r.tokens_per_minute.map(|v| v.max(0) as u64),
                    },
                )
            })
            .collect())
    }

    async fn exchange_counts(
        &self,
        router: &str,
        rows: &[RouterCount],
        now: i64,
        fresh_from: i64,
    ) -> Result<Vec<RouterCount>, StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO router_counts (router, kind, id, inflight, requests, tokens, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (router, kind, id) DO UPDATE SET \
                 inflight = excluded.inflight, requests = excluded.requests, \
                 tokens = excluded.tokens, at_ms = excluded.at_ms",
            )
            .bind(router)
            .bind(r.kind.as_str())
            .bind(r.id)
            .bind(r.inflight)
            .bind(r.requests)
            .bind(r.tokens)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM router_counts WHERE at_ms < $1")
            .bind(now - ROUTER_FORGET_MS)
            .execute(&mut *tx)
            .await?;
        let others: Vec<RouterCount> = sqlx::query_as(
            "SELECT router, kind, id, inflight, requests, tokens, at_ms FROM router_counts \
             WHERE router <> $1 AND at_ms >= $2 ORDER BY router, kind, id",
        )
        .bind(router)
        .bind(fresh_from)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(others)
    }
}
