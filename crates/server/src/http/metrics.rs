//! `/metrics` in the OpenMetrics text format (through `prometheus-client`;
//! admin token: the figures are pool-wide, so tenants do not see them;
//! Prometheus sends it with `authorization: {credentials_file: ...}`): jobs
//! by state (from the store), and the loop's queue, GPUs allocated against
//! capacity by model, nodes by state, and the latency of one scheduling
//! batch (the pass plus its commit).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use suanli_api::JobState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, Caller};
use super::error::Problem;
use super::state::AppState;
use crate::control::StateLabel;
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
    let counts = st.store.job_counts().await?;
    let jobs = Family::<StateLabel, Gauge>::default();
    for s in JobState::ALL {
        let n = counts.iter().find(|c| c.0 == *s).map_or(0, |c| c.1);
        jobs.get_or_create(&StateLabel {
            state: s.to_string(),
        })
        .set(n);
    }
    let mut reg = Registry::default();
    reg.register("suanli_jobs", "Jobs by state", jobs);
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
