//! [`Problem`]: every error answer, as an RFC 9457 problem document
//! ([`suanli_api::Problem`]) with a stable `code`; validation errors name the
//! `field`. Conversions from the loop's refusals, store errors and axum's
//! rejections live here.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::control::{Gone, Refusal};
use crate::store::StoreError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answer.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<std::borrow::Cow<'static, str>>,
    next_offset: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            field: None,
            next_offset: None,
        }
    }
    pub fn invalid(
        field: impl Into<std::borrow::Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            field: Some(field.into()),
            ..Problem::new(StatusCode::BAD_REQUEST, "invalid_field", detail)
        }
    }
    pub fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    pub fn forbidden() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token's scope does not allow this call",
        )
    }
    /// A log chunk past the end of the stream: push from `len`.
    pub fn offset_gap(len: u64) -> Problem {
        Problem {
            next_offset: Some(len),
            ..Problem::new(
                StatusCode::CONFLICT,
                "offset_gap",
                format!("the server has {len} bytes of this stream; push from offset {len}"),
            )
        }
    }
    pub fn bad_query(r: QueryRejection) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
    }
    pub fn doc(&self) -> suanli_api::Problem {
        suanli_api::Problem {
            type_: format!("https://suanli.dev/problems/{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            status: self.status.as_u16(),
            code: self.code.to_string(),
            detail: self.detail.clone(),
            field: self.field.as_deref().map(str::to_string),
            next_offset: self.next_offset,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.doc()).expect("a problem serialises");
        (
            self.status,
            [(header::CONTENT_TYPE, suanli_api::PROBLEM_JSON)],
            body,
        )
            .into_response()
    }
}

impl Problem {
    /// A 503 that says why.
    pub fn unavailable(detail: &str) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

fn loop_gone() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "scheduler_unavailable",
        "the scheduling loop stopped before answering (the server is stopping, or it lost \
         the leader lease): the request may or may not have taken effect",
    )
}

impl From<Gone> for Problem {
    fn from(g: Gone) -> Problem {
        match g {
            Gone::NotLeader => not_leader(),
            Gone::Unanswered => loop_gone(),
        }
    }
}

/// 503 `not_leader`: nothing was done; another replica may take it.
pub fn not_leader() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_leader",
        "this replica does not run the scheduling loop (another replica holds the leader \
         lease, or none yet): nothing was done; send the request to another replica",
    )
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Problem {
        match r {
            Refusal::NotFound | Refusal::NotLive => Problem::not_found(),
            Refusal::Invalid { field, detail } => Problem::invalid(field, detail),
            Refusal::Unsatisfiable(d) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsatisfiable",
                format!("this job can never run on this pool: {d}"),
            ),
            Refusal::Conflict(d) => Problem::new(StatusCode::CONFLICT, "conflict", d),
            Refusal::KeyReused(id) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key made job {id} for another request: use a new key \
                     for a new request"
                ),
            ),
            // Handled by the submission (an answer, not an error).
            Refusal::Replayed(id) => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("this idempotency key made job {id}"),
            ),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::NotFound => Problem::not_found(),
            StoreError::Conflict(what) => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::Refused(why) => Problem::new(StatusCode::CONFLICT, "refused", why),
            other => {
                tracing::error!("store: {other}");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store failed; retry",
                )
            }
        }
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_path", r.body_text())
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Problem {
        match r {
            JsonRejection::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad_json", e.body_text())
            }
            other => Problem::new(StatusCode::BAD_REQUEST, "bad_body", other.body_text()),
        }
    }
}

/// A job id in the path.
pub type IdPath = Result<axum::extract::Path<i64>, PathRejection>;

/// A name (tenant, job, node, GPU model): 1-63 characters of A-Z a-z 0-9 - _ .
pub fn valid_name(field: &'static str, s: &str) -> Result<(), Problem> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            field,
            format!("{field} must be 1-63 characters of A-Z a-z 0-9 - _ . (found {s:?})"),
        ))
    }
}
