//! `/v1/services`: a tenant's model services (create, list, show, update
//! scaling, delete), and `/v1/tenants/{name}/limits`, the model API's rate
//! limits (admin). The replicas themselves are jobs, started and stopped
//! by the services' controller (`crate::services`).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use suanli_api::{
    JobSubmit, RateLimits, ScalingUpdate, Service, ServiceCreate, ServiceList, ServiceSpec,
    TokenUsage, TokenUsageQuery, TokenUsageRow, MAX_RATE_LIMIT,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, Caller};
use super::error::{valid_name, Problem};
use super::state::AppState;
use crate::store::{NewService, Scope, ServiceRow};
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_service, list_services))
        .routes(routes!(get_service, update_service, delete_service))
        .routes(routes!(set_limits))
        .routes(routes!(token_usage))
}

/// `?tenant=NAME`: the admin names whose service it means.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Whose {
    tenant: Option<String>,
}

const DEFAULT_READY_PATH: &str = "/health";

/// The stored settings of a new service, every field checked and named.
fn spec_of(b: &ServiceCreate) -> Result<ServiceSpec, Problem> {
    let job = super::jobs::validate_job(JobSubmit {
        name: Some(b.name.clone()),
        command: b.command.clone(),
        tasks: None,
        cpu_milli: b.cpu_milli,
        memory_mib: b.memory_mib,
        gpus: b.gpus,
        gpu_share: b.gpu_share,
        gpu_models: b.gpu_models.clone(),
        class: b.class.clone(),
        env: b.env.clone(),
        workdir: b.workdir.clone(),
        max_runtime_s: None,
        retries: Some(0),
    })?;
    let mut spec = ServiceSpec {
        command: job.command,
        env: job.env,
        workdir: job.workdir,
        cpu_milli: job.cpu_milli,
        memory_mib: job.memory_mib,
        num_gpu: job.num_gpu,
        gpu_milli: job.gpu_milli,
        gpu_models: job.gpu_models,
        class: job.class,
        min: 0,
        max: 8,
        target_inflight: 4.0,
        up_delay_s: 0,
        down_delay_s: 30,
        idle_s: 120,
        ready_path: DEFAULT_READY_PATH.to_string(),
        ready_delay_s: 0,
        start_timeout_s: 600,
    };
    apply(&mut spec, &b.scaling)?;
    Ok(spec)
}

/// Apply the given settings to `spec`, then check the whole.
fn apply(spec: &mut ServiceSpec, u: &ScalingUpdate) -> Result<(), Problem> {
    let day = 86_400;
    let secs = |field: &'static str, v: Option<u64>, max: u64| -> Result<Option<u64>, Problem> {
        match v {
            Some(v) if v > max => Err(Problem::invalid(
                field,
                format!("{field} must be at most {max} s (found {v})"),
            )),
            v => Ok(v),
        }
    };
    if let Some(v) = u.min {
        spec.min = v;
    }
    if let Some(v) = u.max {
        spec.max = v;
    }
    if let Some(v) = u.target_inflight {
        spec.target_inflight = v;
    }
    if let Some(v) = secs("up_delay_s", u.up_delay_s, day)? {
        spec.up_delay_s = v;
    }
    if let Some(v) = secs("down_delay_s", u.down_delay_s, day)? {
        spec.down_delay_s = v;
    }
    if let Some(v) = secs("idle_s", u.idle_s, 30 * day)? {
        spec.idle_s = v;
    }
    if let Some(v) = secs("ready_delay_s", u.ready_delay_s, 3600)? {
        spec.ready_delay_s = v;
    }
    if let Some(v) = secs("start_timeout_s", u.start_timeout_s, day)? {
        spec.start_timeout_s = v;
    }
    if let Some(p) = &u.ready_path {
        let ok = p.starts_with('/')
            && p.len() <= 1024
            && p.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !ok {
            return Err(Problem::invalid(
                "ready_path",
                format!("ready_path must be an absolute URL path of visible ASCII (found {p:?})"),
            ));
        }
        spec.ready_path = p.clone();
    }
    if spec.max > 1000 || spec.max == 0 {
        return Err(Problem::invalid(
            "max",
            format!("max must be 1..=1000 (found {})", spec.max),
        ));
    }
    if spec.min > spec.max {
        return Err(Problem::invalid(
            "min",
            format!("min ({}) must not exceed max ({})", spec.min, spec.max),
        ));
    }
    let t = spec.target_inflight;
    if !(t.is_finite() && t > 0.0 && t <= 10_000.0) {
        return Err(Problem::invalid(
            "target_inflight",
            format!("target_inflight must be in (0, 10000] (found {t})"),
        ));
    }
    if spec.min == 0 && spec.idle_s == 0 {
        return Err(Problem::invalid(
            "idle_s",
            "idle_s must be positive when min is 0 (a service scales to zero after it)",
        ));
    }
    if spec.start_timeout_s == 0 {
        return Err(Problem::invalid(
            "start_timeout_s",
            "start_timeout_s must be positive",
        ));
    }
    Ok(())
}

fn view(st: &AppState, r: ServiceRow) -> Service {
    let live = st.services.live(r.id);
    Service {
        id: r.id,
        tenant: r.tenant,
        name: r.name,
        model: r.model,
        public: r.public,
        created_ms: r.created_ms,
        spec: r.spec,
        desired: live.desired,
        replicas: live.replicas,
        last_failure: live.last_failure,
    }
}

/// The tenant a call acts for: the caller's own, or the admin's `?tenant=`.
async fn whose(st: &AppState, c: &Caller, q: &Whose) -> Result<i64, Problem> {
    match (&c.0, &q.tenant) {
        (Scope::Tenant { id, .. }, None) => Ok(*id),
        (Scope::Tenant { .. }, Some(_)) => Err(Problem::forbidden()),
        (Scope::Admin, Some(t)) => Ok(st.store.tenant_by_name(t).await?.id),
        (Scope::Admin, None) => Err(Problem::invalid(
            "tenant",
            "the admin names the service's tenant: ?tenant=NAME",
        )),
        _ => Err(Problem::forbidden()),
    }
}

/// Create a model service (tenant). Its replicas start as requests come (or at once with `min` > 0).
#[utoipa::path(post, path = "/v1/services", tag = "services", request_body = ServiceCreate, security(("bearer" = [])), responses((status = 201, description = "Created", body = Service), (status = 400, description = "Invalid", body = ProblemDoc), (status = 409, description = "The name or the model is taken", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn create_service(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<ServiceCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<Service>), Problem> {
    let Scope::Tenant { id, .. } = &c.0 else {
        return Err(Problem::forbidden());
    };
    let tenant_id = *id;
    let Json(b) = body?;
    valid_name("name", &b.name)?;
    if !suanli_api::valid_model(&b.model) {
        return Err(Problem::invalid(
            "model",
            "model must be 1..=128 visible ASCII characters (no space)",
        ));
    }
    let spec = spec_of(&b)?;
    let (key, _) = crate::auth::new_token();
    let new = NewService {
        tenant_id,
        name: b.name,
        model: b.model,
        public: b.public,
        spec,
        key,
    };
    let row = st.store.services().create_service(&new, &c.actor()).await?;
    st.services.changed();
    Ok((StatusCode::CREATED, Json(view(&st, row))))
}

/// List services: the caller's own, or every tenant's (admin).
#[utoipa::path(get, path = "/v1/services", tag = "services", security(("bearer" = [])), responses((status = 200, description = "Services", body = ServiceList), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_services(
    State(st): State<AppState>,
    c: Caller,
) -> Result<Json<ServiceList>, Problem> {
    let scope = super::auth::job_scope(&c)?;
    let rows = st.store.services().services(scope).await?;
    let services = rows.into_iter().map(|r| view(&st, r)).collect();
    Ok(Json(ServiceList { services }))
}

/// A service with its replicas.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "services", params(("name" = String, Path), Whose), security(("bearer" = [])), responses((status = 200, description = "The service", body = Service), (status = 404, description = "No such service of yours", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn get_service(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    q: Result<Query<Whose>, QueryRejection>,
) -> Result<Json<Service>, Problem> {
    let Query(q) = q.map_err(Problem::bad_query)?;
    let tenant = whose(&st, &c, &q).await?;
    let row = st.store.services().service(tenant, &name).await?;
    Ok(Json(view(&st, row)))
}

/// Change a service's scaling and readiness settings.
#[utoipa::path(patch, path = "/v1/services/{name}", tag = "services", request_body = ScalingUpdate, params(("name" = String, Path), Whose), security(("bearer" = [])), responses((status = 200, description = "The service", body = Service), (status = 400, description = "Invalid", body = ProblemDoc), (status = 404, description = "No such service of yours", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn update_service(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    q: Result<Query<Whose>, QueryRejection>,
    body: Result<Json<ScalingUpdate>, JsonRejection>,
) -> Result<Json<Service>, Problem> {
    let Query(q) = q.map_err(Problem::bad_query)?;
    let Json(u) = body?;
    let tenant = whose(&st, &c, &q).await?;
    let mut row = st.store.services().service(tenant, &name).await?;
    apply(&mut row.spec, &u)?;
    st.store
        .services()
        .update_service(row.id, &row.spec, &c.actor())
        .await?;
    st.services.changed();
    let row = st.store.services().service(tenant, &name).await?;
    Ok(Json(view(&st, row)))
}

/// Delete a service: its replicas stop and their GPUs go back to the queue.
#[utoipa::path(delete, path = "/v1/services/{name}", tag = "services", params(("name" = String, Path), Whose), security(("bearer" = [])), responses((status = 204, description = "Deleted"), (status = 404, description = "No such service of yours", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn delete_service(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    q: Result<Query<Whose>, QueryRejection>,
) -> Result<StatusCode, Problem> {
    let Query(q) = q.map_err(Problem::bad_query)?;
    let tenant = whose(&st, &c, &q).await?;
    let row = st.store.services().service(tenant, &name).await?;
    st.store
        .services()
        .delete_service(row.id, &c.actor())
        .await?;
    st.services.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Set a tenant's model API rate limits (admin); absent fields: no limit.
#[utoipa::path(put, path = "/v1/tenants/{name}/limits", tag = "tenants", request_body = RateLimits, params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The limits", body = RateLimits), (status = 400, description = "Invalid", body = ProblemDoc), (status = 404, description = "No such tenant", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn set_limits(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Result<Json<RateLimits>, JsonRejection>,
) -> Result<Json<RateLimits>, Problem> {
    admin(&c)?;
    let Json(l) = body?;
    for (field, v) in [
        ("requests_per_minute", l.requests_per_minute),
        ("tokens_per_minute", l.tokens_per_minute),
    ] {
        if v.is_some_and(|v| v > MAX_RATE_LIMIT) {
            return Err(Problem::invalid(
                field,
                format!("{field} must be at most {MAX_RATE_LIMIT}"),
            ));
        }
    }
    let t = st.store.tenant_by_name(&name).await?;
    st.store.services().set_limits(t.id, l, &c.actor()).await?;
    st.services.changed();
    Ok(Json(l))
}

/// Tokens bought per tenant and model over a period (a tenant: its own; default: all time until now).
#[utoipa::path(get, path = "/v1/token-usage", tag = "services", params(TokenUsageQuery), security(("bearer" = [])), responses((status = 200, description = "Tokens per tenant and model", body = TokenUsage), (status = 400, description = "Invalid query", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn token_usage(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<TokenUsageQuery>, QueryRejection>,
) -> Result<Json<TokenUsage>, Problem> {
    let scope = super::auth::job_scope(&c)?;
    let Query(q) = q.map_err(Problem::bad_query)?;
    let from = q.from_ms.unwrap_or(0);
    let to = q.to_ms.unwrap_or_else(|| crate::store::now_ms() + 1);
    if from > to {
        return Err(Problem::invalid(
            "from_ms",
            "from_ms must not be after to_ms",
        ));
    }
    let rows = st
        .store
        .services()
        .token_sums(scope, from, to)
        .await?
        .into_iter()
        .map(|r| TokenUsageRow {
            tenant: r.tenant,
            model: r.model,
            requests: r.requests,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
        })
        .collect();
    Ok(Json(TokenUsage {
        from_ms: from,
        to_ms: to,
        rows,
    }))
}
