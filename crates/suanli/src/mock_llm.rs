//! `suanli mock-llm`: a small OpenAI-compatible model server for tests and
//! the demo. It speaks the parts of the API the router relies on:
//! `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`
//! (whole answers, or server-sent events with `stream: true`, and the usage
//! chunk when `stream_options.include_usage` is set, as OpenAI and vLLM do),
//! and `GET /health` for readiness probes.
//!
//! A "token" here is a whitespace-separated word of the prompt (or of the
//! messages' contents); the answer has `max_tokens` tokens (16 by default),
//! the first after `--ttft-ms`, the rest at `--tokens-per-s`. With
//! `--fail-rate F` a request fails with a 500 before any token, drawn from
//! a seeded generator. With an API key (`--api-key` or
//! `$SUANLI_REPLICA_KEY`) every `/v1` call needs `Authorization: Bearer KEY`
//! (401 otherwise), as vLLM's and SGLang's `--api-key` do. The port comes
//! from `--port` or `$PORT`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct MockLlmArgs {
    /// Port to listen on (default: $PORT).
    #[arg(long, env = "PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Model name served (what /v1/models lists and requests must name).
    #[arg(long, default_value = "mock")]
    model: String,
    /// Time to the first token, ms.
    #[arg(long, default_value_t = 20)]
    ttft_ms: u64,
    /// Tokens per second after the first.
    #[arg(long, default_value_t = 200.0)]
    tokens_per_s: f64,
    /// Fraction of requests answered 500 before any token.
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// /health answers 503 for this long after start, ms (a slow model load).
    #[arg(long, default_value_t = 0)]
    ready_delay_ms: u64,
    /// Required bearer key (default: $SUANLI_REPLICA_KEY; none when unset).
    #[arg(long, env = "SUANLI_REPLICA_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seed of the failure draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Most tokens one answer may have.
const MAX_TOKENS: u64 = 100_000;
/// Largest request body.
const MAX_BODY: usize = 64 << 20;

struct Mock {
    model: String,
    ttft: Duration,
    per_token: Duration,
    fail_rate: f64,
    key: Option<String>,
    ready_at: std::time::Instant,
    rng: Mutex<ChaCha8Rng>,
    next_id: AtomicU64,
}

pub fn run(a: MockLlmArgs) -> Result<(), CliError> {
    if !(a.fail_rate.is_finite() && (0.0..=1.0).contains(&a.fail_rate)) {
        return Err(usage(format!(
            "--fail-rate: must be in [0, 1], got {}",
            a.fail_rate
        )));
    }
    if !(a.tokens_per_s.is_finite() && a.tokens_per_s > 0.0 && a.tokens_per_s <= 1e6) {
        return Err(usage(format!(
            "--tokens-per-s: must be in (0, 1000000], got {}",
            a.tokens_per_s
        )));
    }
    if a.ttft_ms > 3_600_000 || a.ready_delay_ms > 3_600_000 {
        return Err(usage("--ttft-ms and --ready-delay-ms: at most 3600000"));
    }
    if a.model.is_empty() {
        return Err(usage("--model: must not be empty"));
    }
    let key = a.api_key.filter(|k| !k.is_empty());
    let mock = Arc::new(Mock {
        model: a.model,
        ttft: Duration::from_millis(a.ttft_ms),
        per_token: Duration::from_secs_f64(1.0 / a.tokens_per_s),
        fail_rate: a.fail_rate,
        key,
        ready_at: std::time::Instant::now() + Duration::from_millis(a.ready_delay_ms),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(a.seed)),
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(mock);
    let addr = SocketAddr::new(a.host, a.port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failure(format!("runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| failure(format!("listen on {addr}: {e}")))?;
        eprintln!("mock-llm listening on {addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::stop_signal())
            .await
            .map_err(|e| failure(format!("serve: {e}")))
    })
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": status.as_u16()}})),
    )
        .into_response()
}

impl Mock {
    fn authorise(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in full whatever the prefix, so timing says nothing.
        let ok = given.is_some_and(|g| {
            g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if ok {
            Ok(())
        } else {
            Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "a valid API key is required",
            )))
        }
    }
}

async fn health(State(m): State<Arc<Mock>>) -> Response {
    if std::time::Instant::now() < m.ready_at {
        (StatusCode::SERVICE_UNAVAILABLE, "loading\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn models(State(m): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    if let Err(r) = m.authorise(&headers) {
        return *r;
    }
    Json(json!({
        "object": "list",
        "data": [{"id": m.model, "object": "model", "created": 0, "owned_by": "suanli"}],
    }))
    .into_response()
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    /// vLLM's extension: usage so far in every chunk.
    #[serde(default)]
    continuous_usage_stats: bool,
}

#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        // Token ids: one each.
        Value::Number(_) => 1,
        Value::Object(o) => o.get("content").or_else(|| o.get("text")).map_or(0, words),
        _ => 0,
    }
}

async fn completions(State(m): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(m, headers, body, Kind::Completion).await
}

async fn chat(State(m): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    answer(m, headers, body, Kind::Chat).await
}

async fn answer(m: Arc<Mock>, headers: HeaderMap, body: Bytes, kind: Kind) -> Response {
    if let Err(r) = m.authorise(&headers) {
        return *r;
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("body: {e}"),
            )
        }
    };
    let c: Common = match serde_json::from_value(v.clone()) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("body: {e}"),
            )
        }
    };
    if c.model != m.model {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!(
                "model {:?} is not served here (this serves {:?})",
                c.model, m.model
            ),
        );
    }
    let prompt = match kind {
        Kind::Completion => v.get("prompt"),
        Kind::Chat => v.get("messages"),
    };
    let Some(prompt) = prompt else {
        let field = if kind == Kind::Chat {
            "messages"
        } else {
            "prompt"
        };
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("{field} is required"),
        );
    };
    let prompt_tokens = words(prompt);
    let n = c.max_completion_tokens.or(c.max_tokens).unwrap_or(16);
    if n == 0 || n > MAX_TOKENS {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("max_tokens must be 1..={MAX_TOKENS}, got {n}"),
        );
    }
    let fail = m.fail_rate > 0.0 && m.rng.lock().expect("rng").gen::<f64>() < m.fail_rate;
    tokio::time::sleep(m.ttft).await;
    if fail {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "injected failure (--fail-rate)",
        );
    }
    let id = format!(
        "{}-{}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        m.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": n,
        "total_tokens": prompt_tokens + n,
    });
    let object = if kind == Kind::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    if !c.stream {
        if n > 1 {
            tokio::time::sleep(m.per_token * (n - 1) as u32).await;
        }
        let text: String = (0..n).map(|i| format!("tok{i} ")).collect();
        let choice = match kind {
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
            }
            Kind::Completion => json!({"index": 0, "text": text, "finish_reason": "length"}),
        };
        return Json(json!({
            "id": id, "object": object, "created": 0, "model": m.model,
            "choices": [choice], "usage": usage,
        }))
        .into_response();
    }
    let include_usage = c.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let continuous = include_usage
        && c.stream_options
            .as_ref()
            .is_some_and(|o| o.continuous_usage_stats);
    let chunk_object = if kind == Kind::Chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let model = m.model.clone();
    let per_token = m.per_token;
    // One event per token; the last says why it stopped; then the usage
    // chunk (no choices) when asked for; then [DONE].
    let events = futures_util::stream::unfold(0u64, move |i| {
        let (id, model, usage) = (id.clone(), model.clone(), usage.clone());
        async move {
            let total = n + u64::from(include_usage) + 1;
            if i >= total {
                return None;
            }
            if i > 0 && i < n {
                tokio::time::sleep(per_token).await;
            }
            let data = if i < n {
                let finish = if i + 1 == n {
                    json!("length")
                } else {
                    Value::Null
                };
                let text = format!("tok{i} ");
                let choice = match kind {
                    Kind::Chat => {
                        json!({"index": 0, "delta": {"content": text}, "finish_reason": finish})
                    }
                    Kind::Completion => json!({"index": 0, "text": text, "finish_reason": finish}),
                };
                let mut chunk = json!({"id": id, "object": chunk_object, "created": 0, "model": model, "choices": [choice]});
                if continuous {
                    chunk["usage"] = json!({
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": i + 1,
                        "total_tokens": prompt_tokens + i + 1,
                    });
                }
                chunk.to_string()
            } else if include_usage && i == n {
                json!({"id": id, "object": chunk_object, "created": 0, "model": model, "choices": [], "usage": usage})
                    .to_string()
            } else {
                "[DONE]".to_string()
            };
            Some((
                Ok::<_, Infallible>(Bytes::from(format!("data: {data}\n\n"))),
                i + 1,
            ))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .expect("a response")
}
