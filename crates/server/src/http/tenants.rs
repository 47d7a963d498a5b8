//! `/v1/tenants`: tenants and their quotas (admin; a tenant reads itself).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use suanli_api::{NewTenant, QuotaSet, Tenant, TenantList, TenantView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, Caller};
use super::error::{valid_name, Problem};
use super::state::AppState;
use crate::store::{Scope, Store};
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant))
        .routes(routes!(set_quota))
}

/// Create a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant, security(("bearer" = [])), responses((status = 201, description = "Created", body = Tenant), (status = 400, description = "Invalid", body = ProblemDoc), (status = 409, description = "Exists", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn create_tenant(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<NewTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Tenant>), Problem> {
    admin(&c)?;
    let Json(b) = body?;
    valid_name("name", &b.name)?;
    let w = b.weight.unwrap_or(1.0);
    if !(w.is_finite() && w > 0.0 && w <= 1e6) {
        return Err(Problem::invalid("weight", "weight must be in (0, 1e6]"));
    }
    // Tenants and quotas feed the loop: written where it runs or where it
    // is told of them (a follower, through the inbox).
    if !st.control.serves() {
        return Err(super::error::not_leader());
    }
    let t = st.store.create_tenant(&b.name, w, &c.actor()).await?;
    st.control.tenant_changed(t.id).await;
    Ok((StatusCode::CREATED, Json(t)))
}

/// List tenants (admin).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])), responses((status = 200, description = "Tenants with quotas", body = TenantList), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn list_tenants(State(st): State<AppState>, c: Caller) -> Result<Json<TenantList>, Problem> {
    admin(&c)?;
    let mut out = Vec::new();
    for t in st.store.tenants().await? {
        out.push(tenant_view(&st.store, t).await?);
    }
    Ok(Json(TenantList { tenants: out }))
}

async fn tenant_view(store: &Store, t: Tenant) -> Result<TenantView, Problem> {
    let quotas = store.quotas(t.id).await?;
    Ok(TenantView {
        id: t.id,
        name: t.name,
        weight: t.weight,
        quotas,
    })
}

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
        Scope::Join | Scope::Node { .. } | Scope::Router => return Err(Problem::forbidden()),
    }
    let t = st.store.tenant_by_name(&name).await?;
    Ok(Json(tenant_view(&st.store, t).await?))
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
#[utoipa::path(put, path = "/v1/tenants/{name}/quotas/{model}", tag = "tenants", request_body = QuotaSet, params(("name" = String, Path), ("model" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The tenant", body = TenantView), (status = 400, description = "Invalid", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn set_quota(
    State(st): State<AppState>,
    c: Caller,
    Path((name, model)): Path<(String, String)>,
    body: Result<Json<QuotaSet>, JsonRejection>,
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
    if !st.control.serves() {
        return Err(super::error::not_leader());
    }
    st.store.set_quota(t.id, &model, g, m, &c.actor()).await?;
    st.control.tenant_changed(t.id).await;
    Ok(Json(tenant_view(&st.store, t).await?))
}
