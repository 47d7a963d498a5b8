//! What makes `/openapi.json` say what the server does, beyond each
//! handler's own annotations: every error is `application/problem+json`,
//! and the errors any operation can meet whatever its handler says are
//! listed on it (a malformed path, query or body: 400; no or a bad token:
//! 401, 403; a path naming nothing: 404; a body too large or not JSON:
//! 413, 415; the loop or store unavailable: 503). Checked against real
//! responses by `crates/suanli/tests/openapi.rs` and by `scripts/fuzz-api`.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::Response;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};

/// The media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

pub struct Truthful;

impl utoipa::Modify for Truthful {
    fn modify(&self, doc: &mut OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let has_path_params = path.contains('{');
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                complete(op, path, has_path_params);
            }
        }
    }
}

fn problem(description: &str) -> RefOr<Response> {
    let mut r = Response::new(description);
    r.content.insert(
        PROBLEM_JSON.to_string(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    RefOr::T(r)
}

fn complete(op: &mut Operation, path: &str, has_path_params: bool) {
    let responses = &mut op.responses.responses;
    // Error bodies are problem documents, whatever media type the handler's
    // annotation named.
    for (status, r) in responses.iter_mut() {
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        if let RefOr::T(r) = r {
            if let Some(c) = r.content.shift_remove("application/json") {
                r.content.insert(PROBLEM_JSON.to_string(), c);
            }
        }
    }
    let has_query = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| problem(description));
    };
    if has_query || has_body || has_path_params {
        add(
            "400",
            "Invalid path, query or body (the problem's `field` names it)",
        );
    }
    if secured {
        add("401", "Missing, unknown or revoked token");
        add("403", "This token's scope does not allow this call");
    }
    if has_path_params {
        add("404", "No such resource (or not the caller's)");
    }
    if has_body {
        add("413", "Body larger than 64 KiB");
        add("415", "Body not of the media type the operation takes");
    }
    if path.starts_with("/v1/") {
        add(
            "503",
            "The scheduling loop or the store is unavailable (the server is stopping or busy)",
        );
    }
}
