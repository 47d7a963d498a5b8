//! `/metrics` in the OpenMetrics text format (through `prometheus-client`;
//! admin token: the figures are pool-wide, so tenants do not see them;
//! Prometheus sends it with `authorization: {credentials_file: ...}`), all
//! from the loop, none from the store: live jobs by state, jobs ended since
//! start by final state, the queue, GPUs allocated against capacity by
//! model, nodes by state, and the latency of one scheduling batch (the pass
//! plus its commit).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, Caller};
use super::error::Problem;
use super::state::AppState;
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(render))
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus metrics (OpenMetrics text format).
#[utoipa::path(get, path = "/metrics", tag = "meta", security(("bearer" = [])), responses(
    (status = 200, description = "OpenMetrics text format", content_type = "application/openmetrics-text"),
    (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc),
    (status = 403, description = "Not an admin token", body = ProblemDoc)))]
async fn render(State(st): State<AppState>, c: Caller) -> Result<impl IntoResponse, Problem> {
    admin(&c)?;
    let mut reg = Registry::default();
    st.control.metrics.register(&mut reg);
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_unavailable",
            format!("encoding the metrics failed: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out))
}
