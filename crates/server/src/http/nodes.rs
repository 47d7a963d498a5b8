//! `/v1/nodes`: the pool's nodes with what is allocated on them, drain,
//! undrain and removal (admin); `/v1/pool`: the pool by GPU model, for
//! tenants.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use suanli_api::{NodeList, NodeStateView, PoolView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, job_scope, Caller};
use super::error::Problem;
use super::state::AppState;
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_nodes))
        .routes(routes!(drain_node))
        .routes(routes!(undrain_node))
        .routes(routes!(remove_node))
        .routes(routes!(pool))
}

/// The pool by GPU model: nodes, GPUs, what is free, and the queue's depth
/// (tenant or admin; no node names).
#[utoipa::path(get, path = "/v1/pool", tag = "nodes", security(("bearer" = [])), responses((status = 200, description = "The pool", body = PoolView), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Not a tenant or admin token", body = ProblemDoc)))]
async fn pool(State(st): State<AppState>, c: Caller) -> Result<Json<PoolView>, Problem> {
    let viewer = job_scope(&c)?;
    Ok(Json(st.control.pool(viewer).await?))
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
    // Audited by the loop, in the transaction of the change.
    let state = st.control.drain(name.clone(), drain, c.actor()).await??;
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

/// Remove a node from the pool (admin): refused (409) while it holds live
/// tasks (drain it and let them end first). Its agent's credential is
/// revoked with it; an agent that registers the name again (with a join
/// token) brings it back.
#[utoipa::path(delete, path = "/v1/nodes/{name}", tag = "nodes", params(("name" = String, Path)), security(("bearer" = [])), responses((status = 204, description = "Removed"), (status = 404, description = "No such node", body = ProblemDoc), (status = 409, description = "The node holds live tasks", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn remove_node(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    admin(&c)?;
    st.control.remove_node(name, c.actor()).await??;
    Ok(StatusCode::NO_CONTENT)
}
