//! The OpenAI-style API of the pool's model services:
//! `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.
//!
//! A request carries a tenant token; its `model` names the service (the
//! caller's own service of that model, else a public one; another
//! tenant's private service is "not found", as is a model nobody serves).
//! The tenant's rate limits are checked (429 with `Retry-After`), then the
//! request goes to the ready replica holding the fewest requests, with the
//! service's secret. While no replica is ready (a service at zero, or all
//! starting) the request is held, up to `RouterConfig::hold`, and the
//! controller is woken to scale up: requests arriving meanwhile wait for
//! the same replicas. A request that got no answer at all from its replica
//! (connection refused, or reset before any response) evicts the replica
//! and goes to another, at most `max_attempts` sends; once an answer has
//! begun it is never sent again.
//! The answer (status, headers, body; server-sent events as they come) is
//! passed through untouched while its bytes are metered; the tokens are
//! recorded when the body ends, or is cut off (`tokens.rs`). For a
//! stream, the request asks for usage in the stream
//! (`stream_options.include_usage` and vLLM's `continuous_usage_stats`)
//! unless the caller set `stream_options` itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use serde::Deserialize;
use suanli_serve::{retryable, StreamMeter, Usage};

use super::{Services, TokenOwner};
use crate::store::TokenRow;

/// The routes, with their own body limit (`RouterConfig::max_body_bytes`),
/// on any state that holds the [`Services`] (the server's, a gateway's).
pub fn routes<S>(max_body_bytes: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Services: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
}

/// An OpenAI-style error body.
fn error(status: StatusCode, kind: &str, code: &str, message: String) -> Response {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "code": code}
    });
    (status, axum::Json(body)).into_response()
}

fn bad_request(message: String) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message,
    )
}

/// The caller's tenant (id, name); the model API is for tenants.
async fn tenant(st: &Services, headers: &HeaderMap) -> Result<(i64, String), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing_token",
            "expected Authorization: Bearer <tenant token>".into(),
        ));
    };
    // Not even the shape of a token: no need to ask anyone.
    let shaped = token
        .strip_prefix(crate::auth::TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !shaped {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_token",
            "unknown or revoked token".into(),
        ));
    }
    match st
        .0
        .source
        .token_owner(&crate::auth::hash_token(token))
        .await
    {
        Ok(TokenOwner::Tenant { id, name }) => Ok((id, name)),
        Ok(TokenOwner::NotTenant) => Err(error(
            StatusCode::FORBIDDEN,
            "permission_error",
            "not_a_tenant",
            "the model API takes a tenant's token (the caller pays for its tokens)".into(),
        )),
        Ok(TokenOwner::Unknown) => Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_token",
            "unknown or revoked token".into(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a caller's token");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "auth_unavailable",
                "cannot check the token now: retry".into(),
            ))
        }
    }
}

async fn models(State(st): State<Services>, headers: HeaderMap) -> Response {
    let (tenant_id, _) = match tenant(&st, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let reg = st.reg();
    let mut data: Vec<serde_json::Value> = reg
        .by_id
        .values()
        .filter(|s| s.row.tenant_id == tenant_id || s.row.public)
        .map(|s| {
            serde_json::json!({
                "id": s.row.model,
                "object": "model",
                "created": s.row.created_ms / 1000,
                "owned_by": s.row.tenant,
            })
        })
        .collect();
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    data.dedup_by(|a, b| a["id"] == b["id"]);
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn chat(State(st): State<Services>, headers: HeaderMap, body: Bytes) -> Response {
    forward(st, headers, "/v1/chat/completions", body).await
}

async fn completions(State(st): State<Services>, headers: HeaderMap, body: Bytes) -> Response {
    forward(st, headers, "/v1/completions", body).await
}

#[derive(Deserialize)]
struct Head {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
}

/// A request of a service in the router: counted in flight until dropped
/// (with the replica it was sent to, if any).
struct Flight {
    s: Services,
    service: i64,
    replica: Option<u64>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut reg = self.s.reg();
        if let Some(svc) = reg.by_id.get_mut(&self.service) {
            svc.inflight = svc.inflight.saturating_sub(1);
            if let Some(r) = self.replica.take() {
                svc.replicas.finished(r, true);
            }
        }
    }
}

/// The chosen replica: id, `host:port`, and the service's secret.
type Target = (u64, String, String);

async fn forward(s: Services, headers: HeaderMap, path: &str, body: Bytes) -> Response {
    let (tenant_id, _tenant) = match tenant(&s, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let head: Head = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => return bad_request(format!("the body is not a JSON request: {e}")),
    };
    let model = match head.model {
        Some(serde_json::Value::String(m)) => m,
        Some(_) => return bad_request("model: must be a string".into()),
        None => return bad_request("model: required".into()),
    };
    let stream = match head.stream {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => return bad_request("stream: must be true or false".into()),
    };
    let now = s.now();
    // The service, the caller's limits, and the flight.
    let (service, flight) = {
        let mut reg = s.reg();
        let own = reg
            .by_id
            .values()
            .find(|v| v.row.tenant_id == tenant_id && v.row.model == model);
        let found = own.or_else(|| {
            reg.by_id
                .values()
                .find(|v| v.row.public && v.row.model == model)
        });
        let Some(found) = found else {
            drop(reg);
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model {:?} does not exist or you do not have access to it",
                    model.chars().take(128).collect::<String>()
                ),
            );
        };
        let service = found.row.id;
        let limits = reg.limits.get(&tenant_id).copied().unwrap_or_default();
        let admitted = s.0.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(
            &tenant_id.to_string(),
            limits,
            now,
        );
        if let Err(r) = admitted {
            drop(reg);
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                format!(
                    "your tenant's {} limit is reached: retry in {} s",
                    r.limit, r.retry_after_s
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_s));
            return resp;
        }
        let counts = reg.tenant_counts.entry(tenant_id).or_default();
        counts.0 = counts.0.saturating_add(1);
        let svc = reg.by_id.get_mut(&service).expect("found above");
        svc.inflight += 1;
        svc.requests = svc.requests.saturating_add(1);
        svc.scaler.note_request(now);
        (
            service,
            Flight {
                s: s.clone(),
                service,
                replica: None,
            },
        )
    };
    let mut flight = flight;
    let body = if stream && head.stream_options.is_none() {
        match ask_for_usage(&body) {
            Some(b) => b,
            None => body,
        }
    } else {
        body
    };
    let request_id = format!("req-{:032x}", rand::random::<u128>());
    let deadline = tokio::time::Instant::now() + s.0.cfg.hold;
    let mut attempts = 0u32;
    loop {
        let (replica, authority, key) = match hold(&s, service, deadline).await {
            Ok(t) => t,
            Err(r) => return r,
        };
        flight.replica = Some(replica);
        attempts += 1;
        let req = hyper::Request::post(format!("http://{authority}{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", request_id.as_str())
            .body(Full::new(body.clone()));
        let req = match req {
            Ok(r) => r,
            Err(e) => return bad_request(format!("cannot forward the request: {e}")),
        };
        match s.0.client.request(req).await {
            Ok(resp) => {
                return answer(resp, flight, tenant_id, model, request_id, stream);
            }
            Err(e) => {
                // No answer began: the connection was refused, or reset
                // before a response (a replica that died with the request
                // on a kept-alive connection). Nothing was delivered or
                // billed, and an inference has no other effect, so the
                // request goes to another replica; this one is evicted
                // until its probe answers again.
                let r = flight.replica.take().expect("set above");
                if let Some(svc) = s.reg().by_id.get_mut(&service) {
                    svc.replicas.finished(r, false);
                }
                if retryable(false, attempts, s.0.cfg.max_attempts) {
                    tracing::info!(service, replica = r, error = %e, "replica unreachable; sending elsewhere");
                    continue;
                }
                return error(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "replica_failed",
                    format!("the model server failed: {e}"),
                );
            }
        }
    }
}

/// The next ready replica, waiting (until `deadline`) while none is.
async fn hold(
    s: &Services,
    service: i64,
    deadline: tokio::time::Instant,
) -> Result<Target, Response> {
    loop {
        let mut ready = {
            let mut reg = s.reg();
            let Some(svc) = reg.by_id.get_mut(&service) else {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    "the service was deleted".into(),
                ));
            };
            // Subscribed before looking: a replica ready after the look
            // wakes this request.
            let rx = svc.ready.subscribe();
            if let Some(id) = svc.replicas.pick() {
                let authority = svc.endpoints.get(&(id as i64)).map(|e| e.authority.clone());
                match authority {
                    Some(a) => return Ok((id, a, svc.row.key.clone())),
                    None => svc.replicas.finished(id, true),
                }
            }
            rx
        };
        // No replica ready: the controller looks now (a service at zero
        // starts one).
        s.0.poke.notify_one();
        match tokio::time::timeout_at(deadline, ready.changed()).await {
            Ok(_) => continue,
            Err(_) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "no_replica_ready",
                    format!(
                        "no replica of this model became ready within {} s",
                        s.0.cfg.hold.as_secs()
                    ),
                ))
            }
        }
    }
}

/// The body with `stream_options` asking for usage in the stream.
fn ask_for_usage(body: &[u8]) -> Option<Bytes> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    v.insert(
        "stream_options".into(),
        serde_json::json!({"include_usage": true, "continuous_usage_stats": true}),
    );
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// Headers that belong to one connection, not to the answer.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

fn answer(
    resp: hyper::Response<hyper::body::Incoming>,
    flight: Flight,
    tenant_id: i64,
    model: String,
    request_id: String,
    stream: bool,
) -> Response {
    let (parts, inner) = resp.into_parts();
    let ok = parts.status.is_success();
    let service = flight.service;
    let body = Metered {
        inner,
        acct: Account {
            flight,
            tenant_id,
            service,
            model,
            request_id: request_id.clone(),
            stream,
            ok,
            meter: StreamMeter::new(),
            whole: Vec::new(),
            whole_overflow: false,
        },
    };
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    for (k, v) in parts.headers.iter() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        out.headers_mut().insert("x-request-id", v);
    }
    out
}

/// The most of a whole (not streamed) answer kept to read its usage.
const MAX_WHOLE_BYTES: usize = 64 << 20;

/// A replica's answer on its way to the caller, metered as it goes.
struct Metered {
    inner: hyper::body::Incoming,
    acct: Account,
}

/// What one request used; recorded when the answer's body is dropped
/// (ended, or cut off by either side).
struct Account {
    flight: Flight,
    tenant_id: i64,
    service: i64,
    model: String,
    request_id: String,
    stream: bool,
    ok: bool,
    meter: StreamMeter,
    whole: Vec<u8>,
    whole_overflow: bool,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.acct.feed(d);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

impl Account {
    fn feed(&mut self, d: &[u8]) {
        if self.stream {
            self.meter.feed(d);
        } else if !self.whole_overflow {
            if self.whole.len() + d.len() > MAX_WHOLE_BYTES {
                self.whole_overflow = true;
                self.whole = Vec::new();
            } else {
                self.whole.extend_from_slice(d);
            }
        }
    }

    fn usage(&self) -> (Usage, bool) {
        if self.stream {
            let m = self.meter.metered();
            (m.usage, m.estimated)
        } else {
            match suanli_serve::usage_of_body(&self.whole) {
                Some(u) => (u, false),
                None => (Usage::default(), false),
            }
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let (u, estimated) = self.usage();
        let tokens = u.prompt_tokens.saturating_add(u.completion_tokens);
        if !self.ok || tokens == 0 {
            return;
        }
        let s = &self.flight.s;
        let now = s.now();
        let limits = {
            let mut reg = s.reg();
            let counts = reg.tenant_counts.entry(self.tenant_id).or_default();
            counts.1 = counts.1.saturating_add(tokens);
            reg.limits.get(&self.tenant_id).copied().unwrap_or_default()
        };
        s.0.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .charge(&self.tenant_id.to_string(), limits, tokens, now);
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        s.record(TokenRow {
            request_id: std::mem::take(&mut self.request_id),
            tenant_id: self.tenant_id,
            service_id: self.service,
            model: std::mem::take(&mut self.model),
            at_ms: crate::store::now_ms(),
            input_tokens: clamp(u.prompt_tokens),
            output_tokens: clamp(u.completion_tokens),
            estimated,
        });
    }
}
