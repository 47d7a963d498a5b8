//! Task logs. Agents push each task's stdout and stderr to the server in
//! chunks (`POST /v1/agents/{node}/logs`, raw bytes at an offset), so a
//! tenant reads them through the API (`GET /v1/jobs/{id}/logs`) without any
//! connection to the nodes. They are kept in the store (`task_logs`), so
//! every replica serves the same bytes whichever one an agent pushed to.
//! A push is idempotent: bytes the store already has are skipped, and a
//! push past the end is refused with the offset expected. Logs written by
//! servers before they moved into the store (`DATA_DIR/logs/JOB/RUN/
//! TASK.STREAM`) are still read from there.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use suanli_api::{LogChunk, LogPushed, LogRead, LogStream, NEXT_OFFSET_HEADER};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{job_scope, AgentCaller, Caller};
use super::error::Problem;
use super::state::AppState;
use crate::store::{LogAppend, LogKey};
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(push))
        .routes(routes!(read))
}

/// Most bytes one read returns.
pub const MAX_READ: u64 = 1 << 20;

/// Most bytes kept of one stream (a task's stdout or stderr in one run):
/// output past it is accepted and dropped, so a task printing without end
/// cannot fill the database every tenant shares.
pub const MAX_STREAM_BYTES: u64 = 256 << 20;

fn key(job: i64, run: i64, task: i64, stream: LogStream) -> LogKey {
    LogKey {
        job,
        run,
        task,
        stream: stream.as_str(),
    }
}

/// Where a server before 0.2 kept a stream (read only).
fn legacy_path(st: &AppState, k: LogKey) -> PathBuf {
    st.data_dir
        .join("logs")
        .join(k.job.to_string())
        .join(k.run.to_string())
        .join(format!("{}.{}", k.task, k.stream))
}

fn io(e: std::io::Error) -> Problem {
    tracing::error!("logs: {e}");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "logs_unavailable",
        "the log store failed; retry",
    )
}

/// Append a chunk of a task's output (agent of the node the task runs on).
#[utoipa::path(post, path = "/v1/agents/{name}/logs", tag = "agents", params(("name" = String, Path), LogChunk),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"), security(("bearer" = [])),
    responses((status = 200, description = "Stored", body = LogPushed),
        (status = 409, description = "Offset past the end: push from next_offset", body = ProblemDoc),
        (status = 404, description = "No such task on this node", body = ProblemDoc),
        (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc),
        (status = 403, description = "Not this node's credential", body = ProblemDoc)))]
async fn push(
    State(st): State<AppState>,
    who: AgentCaller,
    Path(name): Path<String>,
    q: Result<Query<LogChunk>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<LogPushed>, Problem> {
    who.speaks_for(&name)?;
    let Query(q) = q.map_err(Problem::bad_query)?;
    let node = st.store.node_id(&name).await?;
    let on = st.store.task_node(q.job, q.run, q.task).await?;
    if node.is_none() || on != node {
        return Err(Problem::not_found());
    }
    let k = key(q.job, q.run, q.task, q.stream);
    match st
        .store
        .log_append(k, q.offset, &body, MAX_STREAM_BYTES)
        .await?
    {
        LogAppend::To(n) => Ok(Json(LogPushed { next_offset: n })),
        LogAppend::Gap(end) => Err(Problem::offset_gap(end)),
    }
}

/// A task's output from `offset`, at most 1 MiB; the `x-next-offset` header
/// says where to continue.
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "jobs", params(("id" = i64, Path), LogRead),
    security(("bearer" = [])),
    responses((status = 200, description = "Bytes of the stream", content_type = "application/octet-stream"),
        (status = 404, description = "No such job, or not yours", body = ProblemDoc)))]
async fn read(
    State(st): State<AppState>,
    c: Caller,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    q: Result<Query<LogRead>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, Problem> {
    let Path(id) = id?;
    let scope = job_scope(&c)?;
    let Query(q) = q.map_err(Problem::bad_query)?;
    let job = st.store.job(id, scope).await?;
    let stream = q.stream.unwrap_or(LogStream::Out);
    let task = q.task.unwrap_or(0);
    if !(0..job.tasks).contains(&task) {
        return Err(Problem::invalid(
            "task",
            format!("task must be 0..{}", job.tasks),
        ));
    }
    let run = q.run.unwrap_or(job.run);
    if run < 0 {
        return Err(Problem::invalid("run", "run must be 0 or more"));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return Err(Problem::invalid(
            "offset",
            "offset must be at most 2^63 - 1",
        ));
    }
    let k = key(id, run, task, stream);
    let mut data = st.store.log_read(k, offset, MAX_READ).await?;
    // A stream the store has nothing of may predate it.
    if data.is_empty() && st.store.log_read(k, 0, 1).await?.is_empty() {
        data = legacy(legacy_path(&st, k), offset).await?;
    }
    let next = offset + data.len() as u64;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                HeaderName::from_static(NEXT_OFFSET_HEADER),
                next.to_string(),
            ),
            (
                HeaderName::from_static("x-job-state"),
                job.state.to_string(),
            ),
            (
                HeaderName::from_static(suanli_api::JOB_RUN_HEADER),
                job.run.to_string(),
            ),
        ],
        data,
    ))
}

/// A stream from a server before logs moved into the store; empty when
/// there is none.
async fn legacy(p: PathBuf, offset: u64) -> Result<Vec<u8>, Problem> {
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>, std::io::Error> {
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(MAX_READ).read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await
    .map_err(|e| io(std::io::Error::other(e)))?
    .map_err(io)
}
