//! The HTTP API (`/v1`, JSON). Errors are `application/problem+json`
//! (RFC 9457) with a stable `code`; validation errors name the `field`.
//! A tenant sees only its own jobs: another tenant's job is "not found", never
//! "forbidden", so its existence does not leak.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use suanli_core::MAX_GPUS_PER_NODE;

use crate::auth::hash_token;
use crate::control::{Control, Gone, Refusal, Registration, Report};
use crate::control::{NodeView, TaskExit, TaskKey};
use crate::store::{
    mask_devices, Assignment, Job, JobEvent, NewJob, Node, Quota, Scope, Store, StoreError,
    TaskRef, TaskView, Tenant, TokenInfo,
};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Attempts a job may make after its first fails (or its node is lost),
/// unless it says otherwise.
pub const DEFAULT_RETRIES: i64 = 1;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A tenant with its quotas.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    pub id: i64,
    pub name: String,
    pub weight: f64,
    pub quotas: Vec<Quota>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// A new token: the secret is shown once, here.
#[derive(Serialize, ToSchema)]
pub struct NewToken {
    pub id: i64,
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// One page of jobs; pass `next_cursor` as `cursor` for the next.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<i64>,
}

/// A job with its tasks (every attempt). `tasks` is the gang size;
/// `task_history` the tasks themselves.
#[derive(Serialize, ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub task_history: Vec<TaskView>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<JobEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

#[derive(Serialize, ToSchema)]
pub struct NodeStateView {
    pub node: String,
    pub state: String,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub node: Node,
    pub heartbeat_interval_s: u64,
}

/// What an agent must do: start these tasks, stop those.
#[derive(Serialize, ToSchema)]
pub struct Orders {
    pub start: Vec<Assignment>,
    pub kill: Vec<TaskRef>,
}

/// An RFC 9457 problem document, as every error is sent.
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code, e.g. `invalid_field`, `not_found`.
    pub code: String,
    pub detail: String,
    /// For `invalid_field`: the field at fault.
    pub field: Option<String>,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub control: Control,
    /// Where task logs are kept: `DIR/logs/JOB/RUN/TASK.{out,err}`.
    pub data_dir: std::path::PathBuf,
    /// The price book invoices use, if configured.
    pub prices: crate::bills::Prices,
}

impl From<Gone> for Problem {
    fn from(_: Gone) -> Problem {
        loop_gone()
    }
}

fn loop_gone() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "scheduler_unavailable",
        "the scheduling loop stopped; the server is shutting down",
    )
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Problem {
        match r {
            Refusal::NotFound | Refusal::NotLive => Problem::not_found(),
            Refusal::Invalid { field, detail } => Problem::invalid(field, detail),
            Refusal::Unsatisfiable(d) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsatisfiable",
                format!("this job can never run on this pool: {d}"),
            ),
            Refusal::Conflict(d) => Problem::new(StatusCode::CONFLICT, "conflict", d),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<&'static str>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            field: None,
        }
    }
    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            field: Some(field),
            ..Problem::new(StatusCode::BAD_REQUEST, "invalid_field", detail)
        }
    }
    pub(crate) fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    pub(crate) fn forbidden() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token's scope does not allow this call",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://suanli.dev/problems/{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::NotFound => Problem::not_found(),
            StoreError::Conflict(what) => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            other => {
                tracing::error!("store: {other}");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store failed; retry",
                )
            }
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for Problem {
    fn from(r: axum::extract::rejection::PathRejection) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_path", r.body_text())
    }
}

type IdPath = Result<Path<i64>, axum::extract::rejection::PathRejection>;

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Problem {
        match r {
            JsonRejection::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad_json", e.body_text())
            }
            other => Problem::new(StatusCode::BAD_REQUEST, "bad_body", other.body_text()),
        }
    }
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct Caller(pub Scope);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Caller, Problem> {
        let unauth = |d: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", d);
        let h = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauth("missing Authorization: Bearer <token>"))?;
        let t = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauth("expected Authorization: Bearer <token>"))?;
        match st.store.scope_of(&hash_token(t.trim())).await? {
            Some(s) => Ok(Caller(s)),
            None => Err(unauth("unknown or revoked token")),
        }
    }
}

pub(crate) fn admin(c: &Caller) -> Result<(), Problem> {
    match c.0 {
        Scope::Admin => Ok(()),
        _ => Err(Problem::forbidden()),
    }
}

/// Tenant filter for job queries: a tenant sees its own, the admin all.
pub(crate) fn job_scope(c: &Caller) -> Result<Option<i64>, Problem> {
    match &c.0 {
        Scope::Admin => Ok(None),
        Scope::Tenant { id, .. } => Ok(Some(*id)),
        Scope::Agent => Err(Problem::forbidden()),
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{name}", get(get_tenant))
        .route(
            "/v1/tenants/{name}/quotas/{model}",
            axum::routing::put(set_quota),
        )
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}/drain", post(drain_node))
        .route("/v1/nodes/{name}/undrain", post(undrain_node))
        .route("/v1/agents/register", post(register_agent))
        .route("/v1/agents/{name}/heartbeat", post(heartbeat))
        .route("/v1/agents/{name}/tasks/status", post(task_status))
        .route("/v1/agents/{name}/logs", post(crate::logs::push))
        .route("/v1/jobs/{id}/logs", get(crate::logs::read))
        .route("/v1/bills", get(crate::bills::bills))
        .route("/v1/reports/economics", get(crate::bills::economics_report))
        .route("/metrics", get(crate::metrics::render))
        .fallback(|| async { Problem::not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(reject_declared_oversize))
        .with_state(state)
}

/// Refuse a body whose declared length exceeds the limit at once, before
/// reading it (bodies without a length are cut off by `DefaultBodyLimit`).
async fn reject_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut r = Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return r;
    }
    next.run(req).await
}

fn valid_name(field: &'static str, s: &str) -> Result<(), Problem> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            field,
            format!("{field} must be 1-63 characters of A-Z a-z 0-9 - _ . (found {s:?})"),
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    name: String,
    weight: Option<f64>,
}

/// Create a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = TenantBody, security(("bearer" = [])), responses((status = 201, description = "Created", body = Tenant), (status = 400, description = "Invalid", body = ProblemDoc), (status = 409, description = "Exists", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn create_tenant(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<TenantBody>, JsonRejection>,
) -> Result<(StatusCode, Json<crate::store::Tenant>), Problem> {
    admin(&c)?;
    let Json(b) = body?;
    valid_name("name", &b.name)?;
    let w = b.weight.unwrap_or(1.0);
    if !(w.is_finite() && w > 0.0 && w <= 1e6) {
        return Err(Problem::invalid("weight", "weight must be in (0, 1e6]"));
    }
    let t = st.store.create_tenant(&b.name, w).await?;
    st.control.tenant_changed(t.id).await;
    Ok((StatusCode::CREATED, Json(t)))
}

/// List tenants (admin).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])), responses((status = 200, description = "Tenants with quotas", body = TenantList), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_tenants(State(st): State<AppState>, c: Caller) -> Result<Json<TenantList>, Problem> {
    admin(&c)?;
    let mut out = Vec::new();
    for t in st.store.tenants().await? {
        out.push(tenant_json(&st.store, t).await?);
    }
    Ok(Json(TenantList { tenants: out }))
}

/// A tenant and its quotas, as the API shows it.
async fn tenant_json(store: &Store, t: crate::store::Tenant) -> Result<TenantView, Problem> {
    let quotas = store.quotas(t.id).await?;
    Ok(TenantView {
        id: t.id,
        name: t.name,
        weight: t.weight,
        quotas,
    })
}

/// A tenant with its quotas: the admin, or the tenant itself.
/// A tenant and its quotas (admin, or the tenant itself).
#[utoipa::path(get, path = "/v1/tenants/{name}", tag = "tenants", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The tenant", body = TenantView), (status = 404, description = "No such tenant, or not yours", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn get_tenant(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<TenantView>, Problem> {
    match &c.0 {
        Scope::Admin => {}
        Scope::Tenant { name: own, .. } if *own == name => {}
        Scope::Tenant { .. } => return Err(Problem::not_found()),
        Scope::Agent => return Err(Problem::forbidden()),
    }
    let t = st.store.tenant_by_name(&name).await?;
    Ok(Json(tenant_json(&st.store, t).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    /// GPUs the tenant can always reclaim.
    guaranteed: f64,
    /// GPUs the tenant may never exceed; absent = unlimited.
    max: Option<f64>,
}

fn gpus_to_milli(field: &'static str, v: f64) -> Result<i64, Problem> {
    if !(v.is_finite() && (0.0..=1e7).contains(&v)) {
        return Err(Problem::invalid(
            field,
            format!("{field} must be 0..=1e7 GPUs (found {v})"),
        ));
    }
    Ok((v * 1000.0).round() as i64)
}

/// Set a tenant's quota on a GPU model, in GPUs (admin).
#[utoipa::path(put, path = "/v1/tenants/{name}/quotas/{model}", tag = "tenants", request_body = QuotaBody, params(("name" = String, Path), ("model" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The tenant", body = TenantView), (status = 400, description = "Invalid", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn set_quota(
    State(st): State<AppState>,
    c: Caller,
    Path((name, model)): Path<(String, String)>,
    body: Result<Json<QuotaBody>, JsonRejection>,
) -> Result<Json<TenantView>, Problem> {
    admin(&c)?;
    let Json(b) = body?;
    valid_name("gpu_model", &model)?;
    let g = gpus_to_milli("guaranteed", b.guaranteed)?;
    let m = b.max.map(|m| gpus_to_milli("max", m)).transpose()?;
    if m.is_some_and(|m| m < g) {
        return Err(Problem::invalid("max", "max must be at least guaranteed"));
    }
    let t = st.store.tenant_by_name(&name).await?;
    st.store.set_quota(t.id, &model, g, m).await?;
    st.control.tenant_changed(t.id).await;
    Ok(Json(tenant_json(&st.store, t).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    scope: String,
    tenant: Option<String>,
    name: Option<String>,
}

/// Issue a token: admin, agent, or tenant (admin).
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenBody, security(("bearer" = [])), responses((status = 201, description = "Created; the secret is shown once", body = NewToken), (status = 400, description = "Invalid", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn create_token(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<TokenBody>, JsonRejection>,
) -> Result<(StatusCode, Json<NewToken>), Problem> {
    admin(&c)?;
    let Json(b) = body?;
    let scope = match (b.scope.as_str(), &b.tenant) {
        ("admin", None) => Scope::Admin,
        ("agent", None) => Scope::Agent,
        ("tenant", Some(name)) => {
            let t = st.store.tenant_by_name(name).await.map_err(|e| match e {
                StoreError::NotFound => {
                    Problem::invalid("tenant", format!("no tenant named {name:?}"))
                }
                e => e.into(),
            })?;
            Scope::Tenant {
                id: t.id,
                name: t.name,
            }
        }
        ("tenant", None) => {
            return Err(Problem::invalid(
                "tenant",
                "a tenant token names its tenant",
            ))
        }
        ("admin" | "agent", Some(_)) => {
            return Err(Problem::invalid(
                "tenant",
                "only tenant tokens name a tenant",
            ))
        }
        (s, _) => {
            return Err(Problem::invalid(
                "scope",
                format!("scope must be admin, tenant or agent (found {s:?})"),
            ))
        }
    };
    let name = b.name.unwrap_or_default();
    if name.len() > 200 {
        return Err(Problem::invalid("name", "name is limited to 200 bytes"));
    }
    let (secret, hash) = crate::auth::new_token();
    let id = st.store.insert_token(&hash, &scope, &name).await?;
    Ok((StatusCode::CREATED, Json(NewToken { id, token: secret })))
}

/// List tokens (admin).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])), responses((status = 200, description = "Tokens, without secrets", body = TokenList), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_tokens(State(st): State<AppState>, c: Caller) -> Result<Json<TokenList>, Problem> {
    admin(&c)?;
    Ok(Json(TokenList {
        tokens: st.store.tokens().await?,
    }))
}

/// Revoke a token (admin).
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens", params(("id" = i64, Path)), security(("bearer" = [])), responses((status = 204, description = "Revoked"), (status = 404, description = "No such live token", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn revoke_token(
    State(st): State<AppState>,
    c: Caller,
    id: IdPath,
) -> Result<StatusCode, Problem> {
    let Path(id) = id?;
    admin(&c)?;
    st.store.revoke_token(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JobBody {
    name: Option<String>,
    command: Vec<String>,
    tasks: Option<i64>,
    cpu_milli: Option<i64>,
    memory_mib: Option<i64>,
    gpus: Option<i64>,
    gpu_share: Option<f64>,
    gpu_models: Option<Vec<String>>,
    class: Option<String>,
    env: Option<std::collections::BTreeMap<String, String>>,
    workdir: Option<String>,
    max_runtime_s: Option<i64>,
    retries: Option<i64>,
}

fn validate_job(b: JobBody) -> Result<NewJob, Problem> {
    if b.command.is_empty() || b.command[0].is_empty() {
        return Err(Problem::invalid("command", "command must name a program"));
    }
    if b.command.len() > 1000 || b.command.iter().map(String::len).sum::<usize>() > 32 * 1024 {
        return Err(Problem::invalid("command", "command is too long"));
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
    let class = b.class.unwrap_or_else(|| "on-demand".to_string());
    if suanli_sched::Class::parse(&class).is_none() {
        return Err(Problem::invalid(
            "class",
            format!("class must be guaranteed, on-demand or spot (found {class:?})"),
        ));
    }
    let env = b.env.unwrap_or_default();
    if env.len() > 256 || env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > 32 * 1024 {
        return Err(Problem::invalid(
            "env",
            "env is limited to 256 variables and 32 KiB",
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
    })
}

/// Submit a job (tenant).
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobBody, security(("bearer" = [])), responses((status = 201, description = "Accepted and durable", body = Job), (status = 400, description = "Invalid", body = ProblemDoc), (status = 422, description = "Can never run on this pool", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn submit(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<JobBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Job>), Problem> {
    let Scope::Tenant { id, name } = c.0 else {
        return Err(Problem::forbidden());
    };
    let Json(b) = body?;
    let job = validate_job(b)?;
    let j = st.control.submit(id, name, job).await??;
    Ok((StatusCode::CREATED, Json(j)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    tenant: Option<String>,
    cursor: Option<i64>,
    limit: Option<i64>,
}

pub const STATES: &[&str] = &[
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "PREEMPTED",
];

/// List jobs: a tenant's own, or all (admin).
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery), security(("bearer" = [])), responses((status = 200, description = "A page of jobs; pending ones carry a reason", body = JobPage), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_jobs(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, Problem> {
    let mut scope = job_scope(&c)?;
    let Query(q) =
        q.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    if let Some(s) = &q.state {
        if !STATES.contains(&s.as_str()) {
            return Err(Problem::invalid(
                "state",
                format!("state must be one of {}", STATES.join(", ")),
            ));
        }
    }
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
        .jobs(scope, q.state.as_deref(), q.cursor.unwrap_or(0), limit)
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
async fn explain(
    st: &AppState,
    viewer: Option<i64>,
    jobs: &mut [crate::store::Job],
) -> Result<(), Problem> {
    let ids: Vec<i64> = jobs
        .iter()
        .filter(|j| j.state == "PENDING")
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

/// List nodes (admin).
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", security(("bearer" = [])), responses((status = 200, description = "Nodes with allocation", body = NodeList), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_nodes(State(st): State<AppState>, c: Caller) -> Result<Json<NodeList>, Problem> {
    admin(&c)?;
    let nodes = st.control.nodes().await?;
    Ok(Json(NodeList { nodes }))
}

async fn set_drain(
    st: &AppState,
    c: &Caller,
    name: String,
    drain: bool,
) -> Result<Json<NodeStateView>, Problem> {
    admin(c)?;
    let state = st.control.drain(name.clone(), drain).await??;
    Ok(Json(NodeStateView { node: name, state }))
}

/// Stop placing work on a node (admin).
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The node's state", body = NodeStateView), (status = 404, description = "No such node", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn drain_node(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<NodeStateView>, Problem> {
    set_drain(&st, &c, name, true).await
}

/// Place work on a drained node again (admin).
#[utoipa::path(post, path = "/v1/nodes/{name}/undrain", tag = "nodes", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The node's state", body = NodeStateView), (status = 409, description = "The node is down", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn undrain_node(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<NodeStateView>, Problem> {
    set_drain(&st, &c, name, false).await
}

pub(crate) fn agent(c: &Caller) -> Result<(), Problem> {
    match c.0 {
        Scope::Agent => Ok(()),
        _ => Err(Problem::forbidden()),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GpuBody {
    index: i64,
    model: String,
    memory_mib: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    name: String,
    addr: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    cpu_milli: i64,
    memory_mib: i64,
    #[serde(default)]
    gpus: Vec<GpuBody>,
}

fn validate_registration(b: RegisterBody) -> Result<Registration, Problem> {
    valid_name("name", &b.name)?;
    if !(1..=100_000_000).contains(&b.cpu_milli) {
        return Err(Problem::invalid(
            "cpu_milli",
            format!("cpu_milli must be 1..=1e8 (found {})", b.cpu_milli),
        ));
    }
    if !(1..=1 << 34).contains(&b.memory_mib) {
        return Err(Problem::invalid(
            "memory_mib",
            format!("memory_mib must be 1..=2^34 (found {})", b.memory_mib),
        ));
    }
    if b.gpus.len() > MAX_GPUS_PER_NODE {
        return Err(Problem::invalid(
            "gpus",
            format!(
                "at most {MAX_GPUS_PER_NODE} GPUs per node (found {})",
                b.gpus.len()
            ),
        ));
    }
    let mut seen = 0u32;
    for g in &b.gpus {
        if !(0..b.gpus.len() as i64).contains(&g.index) || seen & (1 << g.index) != 0 {
            return Err(Problem::invalid(
                "gpus",
                "GPU indexes must be 0..n-1, each once",
            ));
        }
        seen |= 1 << g.index;
        valid_name("gpus", &g.model)?;
        if g.memory_mib.is_some_and(|m| !(0..=1 << 24).contains(&m)) {
            return Err(Problem::invalid("gpus", "GPU memory_mib must be 0..=2^24"));
        }
    }
    if let Some(g) = b.gpus.iter().find(|g| g.model != b.gpus[0].model) {
        return Err(Problem::invalid(
            "gpus",
            format!(
                "a node's GPUs must be one model (found {} and {})",
                b.gpus[0].model, g.model
            ),
        ));
    }
    let labels = b.labels.unwrap_or_default();
    if labels.len() > 64
        || labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 253)
    {
        return Err(Problem::invalid(
            "labels",
            "at most 64 labels, keys 1-63 bytes, values at most 253",
        ));
    }
    let addr = b.addr.unwrap_or_default();
    if addr.len() > 253 {
        return Err(Problem::invalid("addr", "addr is at most 253 bytes"));
    }
    Ok(Registration {
        name: b.name,
        addr,
        gpu_model: b.gpus.first().map(|g| g.model.clone()),
        gpus: b.gpus.len() as i64,
        gpu_memory_mib: b.gpus.first().and_then(|g| g.memory_mib).unwrap_or(0),
        cpu_milli: b.cpu_milli,
        memory_mib: b.memory_mib,
        labels,
    })
}

/// Register (or re-register) a node (agent).
#[utoipa::path(post, path = "/v1/agents/register", tag = "agents", request_body = RegisterBody, security(("bearer" = [])), responses((status = 200, description = "Registered", body = Registered), (status = 409, description = "Inventory changed under running tasks", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn register_agent(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<Json<Registered>, Problem> {
    agent(&c)?;
    let Json(b) = body?;
    let reg = validate_registration(b)?;
    let node = st.control.register(reg).await??;
    Ok(Json(Registered {
        node,
        heartbeat_interval_s: st.control.heartbeat_interval_s,
    }))
}

async fn report(
    st: &AppState,
    c: &Caller,
    name: String,
    report: Report,
    full: bool,
) -> Result<Json<Orders>, Problem> {
    agent(c)?;
    if report.running.len() + report.exited.len() > 10_000 {
        return Err(Problem::invalid(
            "running",
            "at most 10000 tasks per report",
        ));
    }
    let orders = st.control.report(name, report, full).await??;
    // The loop decided what to start and stop; the store adds what each
    // started task runs (committed before the loop answered).
    let mut jobs: std::collections::HashMap<i64, Job> = std::collections::HashMap::new();
    let mut start = Vec::with_capacity(orders.start.len());
    for o in orders.start {
        let t = o.task;
        let j = match jobs.entry(t.job) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(st.store.job(t.job, None).await?)
            }
        };
        start.push(Assignment {
            job: t.job,
            run: t.run,
            task: t.task,
            tasks: j.tasks,
            command: j.command.clone(),
            env: j.env.clone(),
            workdir: j.workdir.clone(),
            max_runtime_s: j.max_runtime_s,
            cpu_milli: j.cpu_milli,
            memory_mib: j.memory_mib,
            gpus: mask_devices(t.mask),
            gpu_share: (j.gpu_milli > 0 && j.gpu_milli < 1000).then(|| j.gpu_milli as f64 / 1000.0),
            master_addr: o.master_addr,
        });
    }
    let kill = orders
        .kill
        .into_iter()
        .map(|t| TaskRef {
            job: t.job,
            run: t.run,
            task: t.task,
            gpus: mask_devices(t.mask),
        })
        .collect();
    Ok(Json(Orders { start, kill }))
}

/// Report every running task and the exits since; get tasks to start and to stop (agent).
#[utoipa::path(post, path = "/v1/agents/{name}/heartbeat", tag = "agents", request_body = Report, params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Orders", body = Orders), (status = 404, description = "Unregistered node", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn heartbeat(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<Orders>, Problem> {
    agent(&c)?;
    let Json(r) = body?;
    report(&st, &c, name, r, true).await
}

/// Report task exits between heartbeats (agent).
#[utoipa::path(post, path = "/v1/agents/{name}/tasks/status", tag = "agents", request_body = Report, params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Orders", body = Orders), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn task_status(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<Orders>, Problem> {
    agent(&c)?;
    let Json(r) = body?;
    if !r.running.is_empty() {
        return Err(Problem::invalid(
            "running",
            "a task-status call reports exits only; use the heartbeat",
        ));
    }
    report(&st, &c, name, r, false).await
}

#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The server is up")))]
async fn healthz() -> &'static str {
    "ok\n"
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "Suanli control plane", description = "Tenants, tokens, jobs, nodes and agents of a GPU compute pool. Errors are application/problem+json (RFC 9457)."),
    paths(
        healthz, create_tenant, list_tenants, get_tenant, set_quota, create_token, list_tokens,
        revoke_token, submit, list_jobs, get_job, cancel_job, job_events, list_nodes, drain_node,
        undrain_node, register_agent, heartbeat, task_status, crate::metrics::render,
        crate::logs::push, crate::logs::read, crate::bills::bills, crate::bills::economics_report
    ),
    components(schemas(TaskKey, TaskExit)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
