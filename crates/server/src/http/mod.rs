//! The HTTP API (`/v1`, JSON; types in [`suanli_api`]). One module per
//! resource, each registering its routes and their OpenAPI paths together
//! (`utoipa-axum`), so `/openapi.json` lists exactly what is routed.
//!
//! - `state.rs`: [`AppState`], what handlers share.
//! - `error.rs`: [`Problem`], every error as an RFC 9457 document.
//! - `auth.rs`: the caller's scope from its bearer token; the agent protocol check.
//! - `openapi.rs`: what every operation's documentation gains (the errors
//!   any call can meet, as `application/problem+json`).
//! - `tenants.rs`, `tokens.rs`, `jobs.rs`, `nodes.rs`, `agents.rs`,
//!   `logs.rs`, `bills.rs` (with `wire.rs`), `services.rs`, `metrics.rs`:
//!   the resources. The model API itself (`/v1/chat/completions`, ...) is
//!   `crate::services`' proxy, merged with its own body limit;
//!   `routers.rs` is what `suanli gateway` asks of the server to run it.
//!
//! Handlers read from the store and send every change to jobs, tasks and
//! nodes to the scheduling loop ([`crate::control::Control`]); tenants,
//! tokens and quotas are written to the store directly (then the loop is
//! told). Bodies are limited to [`MAX_BODY_BYTES`].

mod agents;
mod auth;
mod bills;
mod error;
mod jobs;
mod logs;
mod metrics;
mod nodes;
mod openapi;
mod routers;
mod services;
mod state;
mod tenants;
mod tokens;
mod wire;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{Problem, MAX_BODY_BYTES};
pub use jobs::DEFAULT_RETRIES;
pub use state::AppState;

/// The server's routes.
pub fn router(state: AppState) -> Router {
    let (router, doc) = api();
    let model_api = crate::services::routes(state.services.max_body_bytes());
    router
        .route("/openapi.json", get(move || async move { Json(doc) }))
        .fallback(|| async { Problem::not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(reject_declared_oversize))
        // The model API has its own body limit (long prompts).
        .merge(model_api)
        .merge(routers::routes())
        .with_state(state)
}

/// The OpenAPI document of every routed operation.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .merge(tenants::routes())
        .merge(tokens::routes())
        .merge(jobs::routes())
        .merge(nodes::routes())
        .merge(agents::routes())
        .merge(logs::routes())
        .merge(bills::routes())
        .merge(services::routes())
        .merge(metrics::routes())
        .split_for_parts();
    // Errors every operation can meet, and their media type.
    utoipa::Modify::modify(&openapi::Truthful, &mut doc);
    (router, doc)
}

#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "The server is up")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: this replica runs the scheduling loop, or its store answers and
/// another replica holds a live leader lease. Otherwise 503 (no replica
/// can take work yet, or the store is unreachable).
#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, description = "This replica serves", body = suanli_api::Readiness),
    (status = 503, description = "Not ready: no live leader, or the store is unreachable")))]
async fn readyz(
    axum::extract::State(st): axum::extract::State<AppState>,
) -> Result<Json<suanli_api::Readiness>, error::Problem> {
    let lease = st
        .store
        .leader()
        .await
        .map_err(|e| error::Problem::unavailable(&format!("not ready: the store: {e}")))?;
    let leading = st.control.leading();
    if !leading && !lease.live {
        return Err(error::Problem::unavailable(
            "not ready: no replica holds a live leader lease yet",
        ));
    }
    Ok(Json(suanli_api::Readiness {
        role: if leading { "leader" } else { "follower" }.to_string(),
        epoch: lease.epoch,
    }))
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

/// The document's frame; the paths come from the resources' routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Suanli control plane", description = "Tenants, tokens, jobs, nodes and agents of a GPU compute pool. Errors are application/problem+json (RFC 9457). Agents send their protocol version in the suanli-protocol header."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

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
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
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
