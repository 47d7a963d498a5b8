//! `/v1/tokens`: issue, list and revoke tokens (admin). Secrets are shown
//! once and stored as SHA-256 only.

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use suanli_api::{AuditLog, NewToken, TokenList, TokenRequest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, Caller};
use super::error::{valid_name, IdPath, Problem};
use super::state::AppState;
use crate::store::{Scope, StoreError};
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(audit_log))
}

/// The audit log (admin): what admins did, oldest first, 1,000 at most
/// per page (`after`: the last id seen).
#[utoipa::path(get, path = "/v1/audit", tag = "tokens", params(AuditQuery), security(("bearer" = [])), responses((status = 200, description = "Entries", body = AuditLog), (status = 400, description = "Invalid query", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn audit_log(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditLog>, Problem> {
    admin(&c)?;
    let Query(q) = q.map_err(Problem::bad_query)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid("limit", "limit must be 1..=1000"));
    }
    Ok(Json(AuditLog {
        entries: st.store.audit_log(q.after.unwrap_or(0), limit).await?,
    }))
}

/// `GET /v1/audit?after=&limit=`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Entries after this id (default 0).
    after: Option<i64>,
    /// At most this many (1..=1000, default 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Issue a token: admin, tenant, or agent (admin). An agent token naming a
/// node is that node's credential (refused while the node has a live one);
/// without a node it is a join token.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenRequest, security(("bearer" = [])), responses((status = 201, description = "Created; the secret is shown once", body = NewToken), (status = 400, description = "Invalid", body = ProblemDoc), (status = 409, description = "The node already has a live credential", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn create_token(
    State(st): State<AppState>,
    c: Caller,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<NewToken>), Problem> {
    admin(&c)?;
    let Json(b) = body?;
    if b.node.is_some() && b.scope != "agent" {
        return Err(Problem::invalid("node", "only agent tokens name a node"));
    }
    let scope = match (b.scope.as_str(), &b.tenant) {
        ("admin", None) => Scope::Admin,
        ("router", None) => Scope::Router,
        ("agent", None) => match b.node {
            Some(node) => {
                valid_name("node", &node)?;
                Scope::Node { name: node }
            }
            None => Scope::Join,
        },
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
        ("admin" | "agent" | "router", Some(_)) => {
            return Err(Problem::invalid(
                "tenant",
                "only tenant tokens name a tenant",
            ))
        }
        (s, _) => {
            return Err(Problem::invalid(
                "scope",
                format!("scope must be admin, tenant, agent or router (found {s:?})"),
            ))
        }
    };
    let name = b.name.unwrap_or_default();
    if name.len() > 200 {
        return Err(Problem::invalid("name", "name is limited to 200 bytes"));
    }
    let (secret, hash) = crate::auth::new_token();
    let id = st
        .store
        .insert_token(&hash, &scope, &name, (&c.actor(), "token.create"))
        .await?;
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
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens", params(("id" = i64, Path)), security(("bearer" = [])), responses((status = 204, description = "Revoked"), (status = 404, description = "No such live token", body = ProblemDoc), (status = 409, description = "The last live admin token cannot be revoked", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Wrong scope", body = ProblemDoc)))]
async fn revoke_token(
    State(st): State<AppState>,
    c: Caller,
    id: IdPath,
) -> Result<StatusCode, Problem> {
    let Path(id) = id?;
    admin(&c)?;
    st.store.revoke_token(id, &c.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
