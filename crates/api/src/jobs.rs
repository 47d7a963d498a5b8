//! Jobs: submission, the job as the API shows it, its tasks and history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::states::{Class, EventKind, JobState, TaskState};

/// `POST /v1/jobs`: a submission. Absent fields take the server's
/// defaults (1 task, 1 CPU, 1 GiB, no GPU, class on-demand, 1 retry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSubmit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub name: Option<String>,
    /// The program and its arguments (no shell unless you name one): at
    /// most 1,000 strings and 32 KiB, no NUL byte, the program not empty.
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::command))]
    pub command: Vec<String>,
    /// Gang size: tasks started together, each with `RANK` and `WORLD_SIZE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub tasks: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10000000))]
    pub cpu_milli: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1073741824))]
    pub memory_mib: Option<i64>,
    /// Whole GPUs per task (0..=16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 16))]
    pub gpus: Option<i64>,
    /// A share of one GPU, in (0, 1), to the thousandth; exclusive with
    /// `gpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0005, exclusive_maximum = 1))]
    pub gpu_share: Option<f64>,
    /// Accepted GPU models; absent or empty = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::names))]
    pub gpu_models: Option<Vec<String>>,
    /// `guaranteed`, `on-demand` (default) or `spot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Class>))]
    pub class: Option<String>,
    /// At most 256 variables and 32 KiB; names of letters, digits and `_`
    /// not starting with a digit, and not `SUANLI_...` (the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = openapi::env))]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 4096, pattern = "^[^\\u0000]*$")
    )]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31536000))]
    pub max_runtime_s: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub retries: Option<i64>,
}

/// Schemas the derive cannot say.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    fn text(pattern: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
    }

    /// Strings without NUL.
    const NO_NUL: &str = "^[^\\u0000]*$";

    pub fn command() -> RefOr<Schema> {
        ArrayBuilder::new()
            .prefix_items([text(NO_NUL).min_length(Some(1))])
            .items(text(NO_NUL))
            .min_items(Some(1))
            .max_items(Some(1000))
            .into()
    }

    pub fn names() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(text("^[A-Za-z0-9._-]{1,63}$"))
            .into()
    }

    pub fn env() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(
                text("^[A-Za-z_][A-Za-z0-9_]*$").max_length(Some(4096)),
            ))
            .additional_properties(Some(text(NO_NUL)))
            .max_properties(Some(256))
            .into()
    }
}

/// A job as stored and returned by the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    pub command: Vec<String>,
    /// Gang size.
    pub tasks: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub num_gpu: i64,
    /// Per device: 1000 for whole GPUs, less for a share.
    pub gpu_milli: i64,
    pub gpu_models: Vec<String>,
    pub class: Class,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub max_runtime_s: Option<i64>,
    /// Times the job runs again after a failure of its own (a task exiting
    /// non-zero or killed by a signal); default 0. A task that could not
    /// start, or ran past `max_runtime_s`, is never retried.
    pub retries: i64,
    /// Attempts started so far.
    pub run: i64,
    /// Attempts that ended by no fault of the job (its node lost, or
    /// preempted): requeued without using up `retries`.
    #[serde(default)]
    pub interrupted: i64,
    pub state: JobState,
    pub submitted_ms: i64,
    /// Start of the current (or last) attempt.
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// For a PENDING job: why it has not started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One page of jobs; pass `next_cursor` as `cursor` for the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<i64>,
}

/// A job with its tasks (every attempt). `tasks` is the gang size;
/// `task_history` the tasks themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub task_history: Vec<TaskView>,
}

/// A task as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    pub run: i64,
    pub index: i64,
    pub node: String,
    pub gpus: Vec<u32>,
    pub state: TaskState,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub exit_code: Option<i64>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEvent {
    pub at_ms: i64,
    pub kind: EventKind,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventList {
    pub events: Vec<JobEvent>,
}

/// `GET /v1/jobs?...`: a page of jobs, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Only jobs in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// Admin only: one tenant's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub tenant: Option<String>,
    /// Jobs with ids above this (a page's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// 1..=1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<i64>,
}

/// `GET /v1/jobs/{id}/logs?...`: a task's output from an offset, at most
/// 1 MiB; the answer's [`NEXT_OFFSET_HEADER`] says where to continue and
/// [`JOB_STATE_HEADER`] the job's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogRead {
    /// Task index, below the job's `tasks` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 9999))]
    pub task: Option<i64>,
    /// Attempt (default: the job's latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub run: Option<i64>,
    /// `out` (default) or `err`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(inline))]
    pub stream: Option<crate::agents::LogStream>,
    /// Byte offset to read from (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Header of a log read: the offset after the bytes returned.
pub const NEXT_OFFSET_HEADER: &str = "x-next-offset";
/// Header of a log read: the job's state (a reader following the output
/// stops once it is final).
pub const JOB_STATE_HEADER: &str = "x-job-state";
/// Header of a log read: the job's latest attempt (a reader following one
/// attempt's output moves to the next when the job is retried).
pub const JOB_RUN_HEADER: &str = "x-job-run";
