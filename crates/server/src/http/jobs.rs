//! `/v1/jobs`: submit, list (with why-pending reasons), show, cancel, and a
//! job's event history. A tenant sees only its own jobs: another tenant's
//! job is "not found", never "forbidden", so its existence does not leak.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use suanli_api::{Class, EventList, Job, JobDetail, JobPage, JobState, JobSubmit, JobsQuery};
use suanli_core::MAX_GPUS_PER_NODE;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{job_scope, Caller};
use super::error::{valid_name, IdPath, Problem};
use super::state::AppState;
use crate::control::Refusal;
use crate::store::{NewJob, Scope};
use suanli_api::Problem as ProblemDoc;

/// Attempts a job may make after its first fails (or its node is lost),
/// unless it says otherwise.
pub const DEFAULT_RETRIES: i64 = 0;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_events))
}

pub(super) fn validate_job(b: JobSubmit) -> Result<NewJob, Problem> {
    if b.command.is_empty() || b.command[0].is_empty() {
        return Err(Problem::invalid("command", "command must name a program"));
    }
    if b.command.len() > 1000 || b.command.iter().map(String::len).sum::<usize>() > 32 * 1024 {
        return Err(Problem::invalid("command", "command is too long"));
    }
    // A NUL cannot be passed to a process: refused here, not failed (and
    // retried) on the node.
    if b.command.iter().any(|a| a.contains('\0')) {
        return Err(Problem::invalid(
            "command",
            "command arguments cannot contain NUL bytes",
        ));
    }
    let name = b.name.unwrap_or_else(|| "job".to_string());
    valid_name("name", &name)?;
    let tasks = b.tasks.unwrap_or(1);
    if !(1..=10_000).contains(&tasks) {
        return Err(Problem::invalid(
            "tasks",
            format!("tasks must be 1..=10000 (found {tasks})"),
        ));
    }
    let cpu = b.cpu_milli.unwrap_or(1000);
    if !(0..=10_000_000).contains(&cpu) {
        return Err(Problem::invalid(
            "cpu_milli",
            format!("cpu_milli must be 0..=10000000 (found {cpu})"),
        ));
    }
    let mem = b.memory_mib.unwrap_or(1024);
    if !(0..=1 << 30).contains(&mem) {
        return Err(Problem::invalid(
            "memory_mib",
            format!("memory_mib must be 0..=2^30 (found {mem})"),
        ));
    }
    let (num_gpu, gpu_milli) = match (b.gpus, b.gpu_share) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid(
                "gpu_share",
                "give gpus or gpu_share, not both",
            ))
        }
        (Some(g), None) => {
            if !(0..=MAX_GPUS_PER_NODE as i64).contains(&g) {
                return Err(Problem::invalid(
                    "gpus",
                    format!("gpus per task must be 0..={MAX_GPUS_PER_NODE} (found {g}); use tasks for more"),
                ));
            }
            (g, if g == 0 { 0 } else { 1000 })
        }
        (None, Some(s)) => {
            if !(s.is_finite() && s > 0.0 && s < 1.0) || (s * 1000.0).round() < 1.0 {
                return Err(Problem::invalid(
                    "gpu_share",
                    format!("gpu_share must be in (0, 1) (found {s})"),
                ));
            }
            (1, (s * 1000.0).round() as i64)
        }
        (None, None) => (0, 0),
    };
    let models = b.gpu_models.unwrap_or_default();
    for m in &models {
        valid_name("gpu_models", m)?;
    }
    let class = match b.class {
        None => Class::OnDemand,
        Some(c) => c
            .parse::<Class>()
            .map_err(|e| Problem::invalid("class", e))?,
    };
    let env = b.env.unwrap_or_default();
    if env.len() > 256 || env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > 32 * 1024 {
        return Err(Problem::invalid(
            "env",
            "env is limited to 256 variables and 32 KiB",
        ));
    }
    if env.values().any(|v| v.contains('\0')) {
        return Err(Problem::invalid(
            "env",
            "env values cannot contain NUL bytes",
        ));
    }
    for k in env.keys() {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(Problem::invalid(
                "env",
                format!(
                    "env names are letters, digits and _, not starting with a digit (found {k:?})"
                ),
            ));
        }
        if k.starts_with("SUANLI_") {
            return Err(Problem::invalid(
                "env",
                format!("{k}: SUANLI_ variables are set by the agent"),
            ));
        }
    }
    let workdir = b.workdir.unwrap_or_default();
    if workdir.len() > 4096 || workdir.contains('\0') {
        return Err(Problem::invalid(
            "workdir",
            "workdir must be a path of at most 4096 bytes",
        ));
    }
    if let Some(t) = b.max_runtime_s {
        if !(1..=365 * 24 * 3600).contains(&t) {
            return Err(Problem::invalid(
                "max_runtime_s",
                format!("max_runtime_s must be 1..=31536000 (found {t})"),
            ));
        }
    }
    let retries = b.retries.unwrap_or(DEFAULT_RETRIES);
    if !(0..=100).contains(&retries) {
        return Err(Problem::invalid(
            "retries",
            format!("retries must be 0..=100 (found {retries})"),
        ));
    }
    Ok(NewJob {
        name,
        command: b.command,
        tasks,
        cpu_milli: cpu,
        memory_mib: mem,
        num_gpu,
        gpu_milli,
        gpu_models: models,
        class,
        env,
        workdir,
        max_runtime_s: b.max_runtime_s,
        retries,
        idem_key: None,
        idem_hash: None,
        service: None,
    })
}

/// The `Idempotency-Key` header (IETF httpapi draft): 1 to 255 visible
/// ASCII characters.
fn idempotency_key(h: &axum::http::HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = h.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || {
        Problem::invalid(
            IDEMPOTENCY_KEY,
            "Idempotency-Key must be 1 to 255 visible ASCII characters".to_string(),
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

/// The header a client names a submission with, so that a retry (or a
/// failover to another replica) makes the job once.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Submit a job (tenant).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobSubmit, security(("bearer" = [])), params(("Idempotency-Key" = Option<String>, Header, description = "Names this submission (1 to 255 visible ASCII characters): the same key from the same tenant within a day answers the job it made (200, header idempotent-replayed: true) instead of making another")), responses((status = 201, description = "Accepted and durable", body = Job), (status = 200, description = "A repeat of an earlier submission (same Idempotency-Key): the job it made", body = Job), (status = 422, description = "Can never run on this pool, or the Idempotency-Key made a job for another request", body = ProblemDoc), (status = 400, description = "Invalid", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn submit(
    State(st): State<AppState>,
    c: Caller,
    headers: axum::http::HeaderMap,
    body: Result<Json<JobSubmit>, JsonRejection>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let Scope::Tenant { id, name } = c.0 else {
        return Err(Problem::forbidden());
    };
    let key = idempotency_key(&headers)?;
    let Json(b) = body?;
    // What was asked, as read: the same key for another request is told
    // apart (422). Hashed as this server re-serialises it.
    let hash = key.as_ref().map(|_| {
        suanli_api::token::hash_token(&serde_json::to_string(&b).expect("a request serialises"))
    });
    let mut job = validate_job(b)?;
    job.idem_key = key;
    job.idem_hash = hash;
    match st.control.submit(id, name, job).await? {
        Ok(j) => Ok((StatusCode::CREATED, Json(j)).into_response()),
        Err(Refusal::Replayed(job)) => {
            // Durable: the batch that made it committed before this one.
            let j = st.store.job(job, Some(id)).await?;
            Ok((StatusCode::OK, [("idempotent-replayed", "true")], Json(j)).into_response())
        }
        Err(r) => Err(r.into()),
    }
}

/// List jobs: a tenant's own, or all (admin).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobsQuery), security(("bearer" = [])), responses((status = 200, description = "A page of jobs; pending ones carry a reason", body = JobPage), (status = 404, description = "No such tenant (admin's tenant=)", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_jobs(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobPage>, Problem> {
    let mut scope = job_scope(&c)?;
    let Query(q) = q.map_err(Problem::bad_query)?;
    let state = q.state;
    if let Some(t) = &q.tenant {
        if scope.is_some() {
            return Err(Problem::forbidden());
        }
        scope = Some(st.store.tenant_by_name(t).await?.id);
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid("limit", "limit must be 1..=1000"));
    }
    let mut jobs = st
        .store
        .jobs(scope, state, q.cursor.unwrap_or(0), limit)
        .await?;
    explain(&st, job_scope(&c)?, &mut jobs).await?;
    let next = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Ok(Json(JobPage {
        jobs,
        next_cursor: next,
    }))
}

/// A job, its why-pending reason and its tasks.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path)), security(("bearer" = [])), responses((status = 200, description = "The job and its tasks", body = JobDetail), (status = 404, description = "No such job, or not yours", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn get_job(
    State(st): State<AppState>,
    c: Caller,
    id: IdPath,
) -> Result<Json<JobDetail>, Problem> {
    let Path(id) = id?;
    let scope = job_scope(&c)?;
    let mut job = vec![st.store.job(id, scope).await?];
    explain(&st, scope, &mut job).await?;
    let tasks = st.store.job_tasks(id).await?;
    let job = job.pop().expect("one job");
    Ok(Json(JobDetail {
        job,
        task_history: tasks,
    }))
}

/// Fill in why-pending reasons of the PENDING jobs among `jobs`, worded
/// for the caller (`viewer`: its tenant, `None` for the admin).
async fn explain(st: &AppState, viewer: Option<i64>, jobs: &mut [Job]) -> Result<(), Problem> {
    let ids: Vec<i64> = jobs
        .iter()
        .filter(|j| j.state == JobState::Pending)
        .map(|j| j.id)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let mut reasons = st.control.explain(ids, viewer).await?;
    for j in jobs {
        j.reason = reasons.remove(&j.id);
    }
    Ok(())
}

/// Cancel a pending or running job.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path)), security(("bearer" = [])), responses((status = 200, description = "Cancelled", body = Job), (status = 404, description = "No such job, or not yours", body = ProblemDoc), (status = 409, description = "Already over", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn cancel_job(
    State(st): State<AppState>,
    c: Caller,
    id: IdPath,
) -> Result<Json<Job>, Problem> {
    let Path(id) = id?;
    let scope = job_scope(&c)?;
    match st.control.cancel(id, scope).await? {
        Ok(()) => Ok(Json(st.store.job(id, scope).await?)),
        // Not pending or running: absent (or another tenant's), or over.
        Err(Refusal::NotLive) => {
            let j = st.store.job(id, scope).await?;
            Err(Problem::new(
                StatusCode::CONFLICT,
                "not_cancellable",
                format!(
                    "job is {}: only PENDING or RUNNING jobs can be cancelled",
                    j.state
                ),
            ))
        }
        Err(r) => Err(r.into()),
    }
}

/// A job's append-only event history.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = i64, Path)), security(("bearer" = [])), responses((status = 200, description = "The job's history", body = EventList), (status = 404, description = "No such job, or not yours", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn job_events(
    State(st): State<AppState>,
    c: Caller,
    id: IdPath,
) -> Result<Json<EventList>, Problem> {
    let Path(id) = id?;
    let scope = job_scope(&c)?;
    st.store.job(id, scope).await?;
    Ok(Json(EventList {
        events: st.store.events(id).await?,
    }))
}
