//! `/metrics` in the Prometheus text format (admin token: the figures are
//! pool-wide, so tenants do not see them; Prometheus sends it with
//! `authorization: {credentials_file: ...}`): jobs by state, GPUs allocated
//! against capacity by model, nodes by state, and the latency of the
//! scheduling loop (one pass plus its commit).

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use suanli_api::{JobState, NodeState};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{admin, Caller};
use super::error::Problem;
use super::state::AppState;
use crate::control::LATENCY_BOUNDS;
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(render))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "meta", security(("bearer" = [])), responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc),
    (status = 403, description = "Not an admin token", body = ProblemDoc)))]
async fn render(State(st): State<AppState>, c: Caller) -> Result<impl IntoResponse, Problem> {
    admin(&c)?;
    let counts = st.store.job_counts().await?;
    let m = st.control.metrics.lock().expect("metrics lock").clone();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP suanli_jobs Jobs by state.\n# TYPE suanli_jobs gauge"
    );
    for s in JobState::ALL {
        let n = counts.iter().find(|c| c.0 == *s).map_or(0, |c| c.1);
        let _ = writeln!(o, "suanli_jobs{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP suanli_queue_length Jobs the scheduler holds, pending or running.\n# TYPE suanli_queue_length gauge"
    );
    let _ = writeln!(o, "suanli_queue_length{{state=\"pending\"}} {}", m.pending);
    let _ = writeln!(o, "suanli_queue_length{{state=\"running\"}} {}", m.running);
    let _ = writeln!(
        o,
        "# HELP suanli_gpus_capacity GPUs in registered nodes, by model.\n# TYPE suanli_gpus_capacity gauge"
    );
    for (model, cap, _) in &m.gpus {
        let _ = writeln!(
            o,
            "suanli_gpus_capacity{{model=\"{model}\"}} {}",
            *cap as f64 / 1000.0
        );
    }
    let _ = writeln!(
        o,
        "# HELP suanli_gpus_allocated GPUs allocated to tasks, by model (shares count by fraction).\n# TYPE suanli_gpus_allocated gauge"
    );
    for (model, _, used) in &m.gpus {
        let _ = writeln!(
            o,
            "suanli_gpus_allocated{{model=\"{model}\"}} {}",
            *used as f64 / 1000.0
        );
    }
    let _ = writeln!(
        o,
        "# HELP suanli_nodes Nodes by state.\n# TYPE suanli_nodes gauge"
    );
    for s in NodeState::ALL {
        let n = m.nodes_by_state.get(s).copied().unwrap_or(0);
        let _ = writeln!(o, "suanli_nodes{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP suanli_scheduling_latency_seconds One batch of the scheduling loop: the pass and its commit.\n# TYPE suanli_scheduling_latency_seconds histogram"
    );
    let mut cum = 0;
    for (b, n) in LATENCY_BOUNDS.iter().zip(&m.latency_buckets) {
        cum += n;
        let _ = writeln!(
            o,
            "suanli_scheduling_latency_seconds_bucket{{le=\"{b}\"}} {cum}"
        );
    }
    let _ = writeln!(
        o,
        "suanli_scheduling_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        m.latency_count
    );
    let _ = writeln!(o, "suanli_scheduling_latency_seconds_sum {}", m.latency_sum);
    let _ = writeln!(
        o,
        "suanli_scheduling_latency_seconds_count {}",
        m.latency_count
    );
    let _ = writeln!(
        o,
        "# HELP suanli_scheduling_decisions_total Starts and preemptions decided.\n# TYPE suanli_scheduling_decisions_total counter"
    );
    let _ = writeln!(o, "suanli_scheduling_decisions_total {}", m.decisions);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], o))
}
