//! `/v1/routers/...`: what a `suanli gateway` needs from the server to run
//! the server's own model router elsewhere (`crate::services::RouterSource`
//! over HTTP). Router tokens (`suanli token create --router`; admin ones
//! too) only: the answers hold every service's replica secret. Not in the OpenAPI document: an internal protocol between this
//! server and its own gateways, versioned with the binary.
//!
//! - `GET /v1/routers/services`: live services and the tenants' limits.
//! - `POST /v1/routers/replicas` `[ids]`: their live replica jobs.
//! - `POST /v1/routers/tokens` `[rows]`: answered requests' tokens (each
//!   request id once, as the server's own router writes them).
//! - `POST /v1/routers/token-owner` `{"token_hash"}`: whose token a caller
//!   sent (by its hash: the secret stays at the gateway).
//! - `POST /v1/routers/exchange` `{router, rows}`: the gateway's counters
//!   in, every other router's out.

use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Caller;
use super::error::Problem;
use super::state::AppState;
use crate::services::{Exchange, RouterServices, TokenOwner, MAX_ROUTER_ROWS};
use crate::store::{ReplicaRow, RouterCount, Scope, TokenRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/routers/services", get(services))
        .route("/v1/routers/replicas", post(replicas))
        .route("/v1/routers/tokens", post(tokens))
        .route("/v1/routers/token-owner", post(token_owner))
        .route("/v1/routers/exchange", post(exchange))
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
}

/// The caller, refused unless a router's (or an admin's) before any body
/// is read.
struct Admin;

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = Problem;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Admin, Problem> {
        match Caller::from_request_parts(parts, st).await?.0 {
            Scope::Router | Scope::Admin => Ok(Admin),
            _ => Err(Problem::forbidden()),
        }
    }
}

fn internal(e: String) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e)
}

/// Requests in flight one router may report for one service.
const MAX_INFLIGHT: i64 = 1_000_000;

fn too_many(field: &'static str, n: usize) -> Result<(), Problem> {
    if n > MAX_ROUTER_ROWS {
        return Err(Problem::invalid(
            field,
            format!("at most {MAX_ROUTER_ROWS} rows per call, got {n}"),
        ));
    }
    Ok(())
}

async fn services(State(st): State<AppState>, _: Admin) -> Result<Json<RouterServices>, Problem> {
    Ok(Json(
        st.services.source().services().await.map_err(internal)?,
    ))
}

async fn replicas(
    State(st): State<AppState>,
    _: Admin,
    body: Result<Json<Vec<i64>>, JsonRejection>,
) -> Result<Json<Vec<(i64, Vec<ReplicaRow>)>>, Problem> {
    let Json(ids) = body?;
    too_many("services", ids.len())?;
    let map: HashMap<i64, Vec<ReplicaRow>> = st
        .services
        .source()
        .replicas(&ids)
        .await
        .map_err(internal)?;
    let mut out: Vec<(i64, Vec<ReplicaRow>)> = map.into_iter().collect();
    out.sort_by_key(|(id, _)| *id);
    Ok(Json(out))
}

async fn tokens(
    State(st): State<AppState>,
    _: Admin,
    body: Result<Json<Vec<TokenRow>>, JsonRejection>,
) -> Result<StatusCode, Problem> {
    let Json(rows) = body?;
    too_many("rows", rows.len())?;
    for (i, r) in rows.iter().enumerate() {
        if r.request_id.is_empty() || r.request_id.len() > 128 {
            return Err(Problem::invalid(
                "request_id",
                format!("row {i}: a request id of 1 to 128 bytes"),
            ));
        }
        let now = crate::store::now_ms();
        if r.at_ms > now + 60_000 || r.at_ms < now - 7 * 86_400_000 {
            return Err(Problem::invalid(
                "at_ms",
                format!("row {i}: an answer of the last 7 days, not in the future"),
            ));
        }
        if r.input_tokens < 0 || r.output_tokens < 0 {
            return Err(Problem::invalid(
                "input_tokens",
                format!("row {i}: token counts cannot be negative"),
            ));
        }
    }
    st.services
        .source()
        .record_tokens(&rows)
        .await
        .map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerQuery {
    /// `suanli_api::token::hash_token` of the caller's token.
    token_hash: String,
}

async fn token_owner(
    State(st): State<AppState>,
    _: Admin,
    body: Result<Json<OwnerQuery>, JsonRejection>,
) -> Result<Json<TokenOwner>, Problem> {
    let Json(q) = body?;
    if q.token_hash.len() > 128 {
        return Err(Problem::invalid("token_hash", "at most 128 bytes"));
    }
    Ok(Json(
        st.services
            .source()
            .token_owner(&q.token_hash)
            .await
            .map_err(internal)?,
    ))
}

async fn exchange(
    State(st): State<AppState>,
    _: Admin,
    body: Result<Json<Exchange>, JsonRejection>,
) -> Result<Json<Vec<RouterCount>>, Problem> {
    let Json(ex) = body?;
    too_many("rows", ex.rows.len())?;
    if ex.router.is_empty() || ex.router.len() > 200 || !ex.router.starts_with("gateway ") {
        return Err(Problem::invalid(
            "router",
            "a gateway's name: \"gateway \" and at most 200 bytes",
        ));
    }
    for (i, r) in ex.rows.iter().enumerate() {
        if !matches!(r.kind.as_str(), "service" | "tenant") {
            return Err(Problem::invalid(
                "kind",
                format!("row {i}: service or tenant"),
            ));
        }
        if r.inflight < 0 || r.requests < 0 || r.tokens < 0 {
            return Err(Problem::invalid(
                "inflight",
                format!("row {i}: counts cannot be negative"),
            ));
        }
        if r.inflight > MAX_INFLIGHT {
            return Err(Problem::invalid(
                "inflight",
                format!("row {i}: at most {MAX_INFLIGHT} requests in flight"),
            ));
        }
    }
    Ok(Json(
        st.services.source().exchange(&ex).await.map_err(internal)?,
    ))
}
