//! Workloads for the job simulator and their readers.
//!
//! Every reader streams its file record by record into compact [`Job`]s
//! (about 80 bytes each) and reports a malformed row as
//! `file:line: column C: what`. CSV fields may be quoted (RFC 4180).
//!
//! **Native format** (CSV with a header, or JSONL with the same field names):
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `id` | yes | job name (kept for error messages only) |
//! | `tenant` | yes | tenant name |
//! | `submit_s` | yes | submission time, seconds (decimals allowed) |
//! | `duration_s` | yes | run time the job needs, seconds |
//! | `tasks` | no (1) | gang size: tasks that start together |
//! | `cpu_milli`, `memory_mib` | no (0) | per task |
//! | `num_gpu` | yes | GPUs per task (0 = CPU-only) |
//! | `gpu_milli` | no (1000) | milli of each GPU; < 1000 = a share of one GPU |
//! | `gpu_models` | no (any) | allowed GPU models, `|`-separated |
//! | `class` | no (`on-demand`) | `guaranteed`, `on-demand` or `spot` |
//! | `estimate_s` | no | run-time estimate (EASY backfill) |
//! | `deadline_s` | no | deadline, seconds after submission |

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;
use suanli_core::{ModelSet, Models, Request, RequestError};
use suanli_sched::{Class, TenantId, Time};

use super::cluster::Cluster;
use crate::openb::{read_pods, Csv, Row, TraceError};

/// One job of a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub submit: Time,
    pub work: Time,
    pub estimate: Option<Time>,
    /// Deadline relative to submission.
    pub deadline: Option<Time>,
    pub tenant: TenantId,
    pub class: Class,
    pub tasks: u32,
    pub req: Request,
    /// Line of the source file (for messages).
    pub line: u32,
}

impl Job {
    pub fn gpu_milli(&self) -> u64 {
        self.tasks as u64 * self.req.total_gpu_milli()
    }
}

/// Jobs sorted by submission time (ties in file order), submissions starting at 0.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub source: String,
    pub tenants: Vec<String>,
    pub jobs: Vec<Job>,
}

/// Trace kinds accepted by [`load`] (`KIND:PATH` on the command line).
pub const TRACE_KINDS: &[&str] = &["native", "philly", "chronus", "openb"];

/// Tenant names → ids, seeded with the cluster's tenants so quotas line up.
struct Tenants {
    names: Vec<String>,
    ids: HashMap<String, TenantId>,
}

impl Tenants {
    fn new(cluster: &Cluster) -> Tenants {
        let mut t = Tenants {
            names: Vec::new(),
            ids: HashMap::new(),
        };
        for d in &cluster.tenants {
            t.id(&d.name).expect("cluster tenants are few");
        }
        t
    }
    fn id(&mut self, name: &str) -> Result<TenantId, String> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if self.names.len() >= u16::MAX as usize {
            return Err(format!("more than {} tenants", u16::MAX));
        }
        let id = TenantId(self.names.len() as u16);
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }
}

/// Load a workload of `kind` from `path` for `cluster`.
pub fn load(kind: &str, path: &Path, cluster: &Cluster) -> Result<Workload, TraceError> {
    let mut tenants = Tenants::new(cluster);
    let per_node = cluster.max_gpus_per_node().max(1);
    let mut jobs = match kind {
        "native" => {
            let jsonl = path
                .extension()
                .is_some_and(|e| e == "jsonl" || e == "json");
            if jsonl {
                read_native_jsonl(path, &cluster.models, &mut tenants)?
            } else {
                read_native_csv(path, &cluster.models, &mut tenants)?
            }
        }
        "philly" => read_philly(path, per_node, &mut tenants)?,
        "chronus" => read_chronus(path, per_node, &mut tenants)?,
        "openb" => read_openb(path, &cluster.models, &mut tenants)?,
        _ => {
            return Err(TraceError {
                file: path.to_path_buf(),
                line: 0,
                column: None,
                message: format!(
                    "unknown trace kind {kind:?}; valid: {}",
                    TRACE_KINDS.join(", ")
                ),
            })
        }
    };
    if jobs.is_empty() {
        return Err(TraceError {
            file: path.to_path_buf(),
            line: 0,
            column: None,
            message: "no jobs in file".into(),
        });
    }
    finish(&mut jobs);
    Ok(Workload {
        source: path.display().to_string(),
        tenants: tenants.names,
        jobs,
    })
}

/// Sort by submission (stable) and shift times so the first job arrives at 0.
pub fn finish(jobs: &mut [Job]) {
    jobs.sort_by_key(|j| (j.submit, j.line));
    let t0 = jobs.first().map_or(0, |j| j.submit);
    for j in jobs.iter_mut() {
        j.submit -= t0;
    }
}

fn seconds(row: &Row, col: &str) -> Result<Time, TraceError> {
    let v = row.str(col);
    parse_seconds(v)
        .ok_or_else(|| row.err(col, format!("expected non-negative seconds, found {v:?}")))
}

fn opt_seconds(row: &Row, col: &str) -> Result<Option<Time>, TraceError> {
    match row.get(col) {
        None | Some("") => Ok(None),
        Some(_) => seconds(row, col).map(Some),
    }
}

/// Seconds (decimal allowed) → milliseconds.
pub fn parse_seconds(v: &str) -> Option<Time> {
    let x: f64 = v.trim().parse().ok()?;
    // 1e12 s is 30,000 years: anything larger is a unit mistake.
    (x.is_finite() && (0.0..1e12).contains(&x)).then(|| (x * 1000.0).round() as Time)
}

fn request_error_column(e: &RequestError) -> &'static str {
    match e {
        RequestError::TooManyGpus(_) => "num_gpu",
        _ => "gpu_milli",
    }
}

fn parse_models(v: &str, models: &Models) -> Result<ModelSet, String> {
    let mut set = ModelSet::ANY;
    for m in v.split('|').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(id) = models.get(m) else {
            let known: Vec<&str> = (0..models.len())
                .map(|i| models.name(suanli_core::ModelId(i as u8)))
                .collect();
            return Err(format!(
                "GPU model {m:?} is not in the cluster (it has: {})",
                known.join(", ")
            ));
        };
        set = set.with(id);
    }
    Ok(set)
}

/// Split a job of `n` GPUs into a gang of equal tasks no larger than a node:
/// the fewest tasks `t` with `n % t == 0` and `n / t <= per_node`.
pub fn split_gpus(n: u32, per_node: u32) -> (u32, u32) {
    if n <= per_node {
        return (1, n);
    }
    let mut t = n.div_ceil(per_node);
    while t < n && (!n.is_multiple_of(t) || n / t > per_node) {
        t += 1;
    }
    (t, n / t)
}

fn gpu_request(num_gpu: u32) -> Request {
    if num_gpu == 0 {
        Request::new(1000, 0, 0, 0, ModelSet::ANY).expect("valid")
    } else {
        Request::new(0, 0, num_gpu, 1000, ModelSet::ANY).expect("valid")
    }
}

const NATIVE_REQUIRED: &[&str] = &["id", "tenant", "submit_s", "duration_s", "num_gpu"];

fn read_native_csv(
    path: &Path,
    models: &Models,
    tenants: &mut Tenants,
) -> Result<Vec<Job>, TraceError> {
    let mut csv = Csv::open(path, NATIVE_REQUIRED)?;
    let mut jobs = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        if row.str("id").is_empty() {
            return Err(row.err("id", "empty job id".into()));
        }
        let num = |col: &str, default: u64| -> Result<u64, TraceError> {
            match row.get(col) {
                None | Some("") => Ok(default),
                Some(_) => row.int(col),
            }
        };
        let rec = NativeRecord {
            id: row.str("id").to_string(),
            tenant: row.str("tenant").to_string(),
            submit_s: 0.0,
            duration_s: 0.0,
            tasks: Some(num("tasks", 1)?),
            cpu_milli: Some(num("cpu_milli", 0)?),
            memory_mib: Some(num("memory_mib", 0)?),
            num_gpu: num("num_gpu", 0)?,
            gpu_milli: row
                .get("gpu_milli")
                .filter(|s| !s.is_empty())
                .map(|_| row.int("gpu_milli"))
                .transpose()?,
            gpu_models: row.get("gpu_models").map(str::to_string),
            class: row.get("class").map(str::to_string),
            estimate_s: None,
            deadline_s: None,
        };
        let times = (
            seconds(&row, "submit_s")?,
            seconds(&row, "duration_s")?,
            opt_seconds(&row, "estimate_s")?,
            opt_seconds(&row, "deadline_s")?,
        );
        let job = rec
            .to_job(times, row.line(), models, tenants)
            .map_err(|(col, msg)| row.err(col, msg))?;
        jobs.push(job);
    }
    Ok(jobs)
}

fn read_native_jsonl(
    path: &Path,
    models: &Models,
    tenants: &mut Tenants,
) -> Result<Vec<Job>, TraceError> {
    let err = |line: usize, column: Option<&str>, message: String| TraceError {
        file: path.to_path_buf(),
        line,
        column: column.map(str::to_string),
        message,
    };
    let f = File::open(path).map_err(|e| err(0, None, format!("cannot open: {e}")))?;
    let mut jobs = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| err(n, None, format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: NativeRecord =
            serde_json::from_str(&line).map_err(|e| err(n, None, format!("bad JSON: {e}")))?;
        let sec = |col: &str, v: Option<f64>| -> Result<Option<Time>, TraceError> {
            match v {
                None => Ok(None),
                Some(x) => parse_seconds(&x.to_string()).map(Some).ok_or_else(|| {
                    err(
                        n,
                        Some(col),
                        format!("expected non-negative seconds, found {x}"),
                    )
                }),
            }
        };
        let times = (
            sec("submit_s", Some(rec.submit_s))?.unwrap_or(0),
            sec("duration_s", Some(rec.duration_s))?.unwrap_or(0),
            sec("estimate_s", rec.estimate_s)?,
            sec("deadline_s", rec.deadline_s)?,
        );
        if rec.id.is_empty() {
            return Err(err(n, Some("id"), "empty job id".into()));
        }
        let job = rec
            .to_job(times, n, models, tenants)
            .map_err(|(col, msg)| err(n, Some(col), msg))?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// One native record (CSV row or JSON line) before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeRecord {
    id: String,
    tenant: String,
    submit_s: f64,
    duration_s: f64,
    tasks: Option<u64>,
    cpu_milli: Option<u64>,
    memory_mib: Option<u64>,
    num_gpu: u64,
    gpu_milli: Option<u64>,
    gpu_models: Option<String>,
    class: Option<String>,
    estimate_s: Option<f64>,
    deadline_s: Option<f64>,
}

impl NativeRecord {
    fn to_job(
        &self,
        (submit, work, estimate, deadline): (Time, Time, Option<Time>, Option<Time>),
        line: usize,
        models: &Models,
        tenants: &mut Tenants,
    ) -> Result<Job, (&'static str, String)> {
        if self.tenant.is_empty() {
            return Err(("tenant", "empty tenant".into()));
        }
        let tenant = tenants.id(&self.tenant).map_err(|e| ("tenant", e))?;
        let tasks = self.tasks.unwrap_or(1);
        if tasks == 0 || tasks > 100_000 {
            return Err(("tasks", format!("tasks must be 1..=100000, found {tasks}")));
        }
        let set = parse_models(self.gpu_models.as_deref().unwrap_or(""), models)
            .map_err(|e| ("gpu_models", e))?;
        let num_gpu = u32::try_from(self.num_gpu).unwrap_or(u32::MAX);
        let default_milli = if num_gpu == 0 { 0 } else { 1000 };
        let milli = self.gpu_milli.unwrap_or(default_milli);
        let milli = u32::try_from(milli).unwrap_or(u32::MAX);
        let req = Request::new(
            self.cpu_milli.unwrap_or(0),
            self.memory_mib.unwrap_or(0),
            num_gpu,
            milli,
            set,
        )
        .map_err(|e| (request_error_column(&e), e.to_string()))?;
        let class = match self.class.as_deref() {
            None | Some("") => Class::OnDemand,
            Some(c) => Class::parse(c).ok_or((
                "class",
                format!("unknown class {c:?}; valid: guaranteed, on-demand, spot"),
            ))?,
        };
        Ok(Job {
            submit,
            work,
            estimate,
            deadline,
            tenant,
            class,
            tasks: tasks as u32,
            req,
            line: line as u32,
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC; leading zeros optional, years 1970 on) →
/// seconds since the Unix epoch.
pub fn parse_datetime(v: &str) -> Option<u64> {
    use jiff::civil::{date, DateTime, Time};
    let t = DateTime::strptime("%Y-%m-%d %H:%M:%S", v.trim()).ok()?;
    let epoch = date(1970, 1, 1).to_datetime(Time::midnight());
    u64::try_from(t.duration_since(epoch).as_secs()).ok()
}

/// `philly-pollux/philly.csv`: `timestamp,duration,num_gpus,gpu_time,cluster`;
/// the tenant is the virtual cluster, jobs larger than a node become gangs.
fn read_philly(path: &Path, per_node: u32, tenants: &mut Tenants) -> Result<Vec<Job>, TraceError> {
    let mut csv = Csv::open(path, &["timestamp", "duration", "num_gpus", "cluster"])?;
    let mut jobs = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        let ts = row.str("timestamp");
        let submit = parse_datetime(ts).ok_or_else(|| {
            row.err(
                "timestamp",
                format!("expected YYYY-MM-DD HH:MM:SS, found {ts:?}"),
            )
        })?;
        let work = seconds(&row, "duration")?;
        let n = row.int("num_gpus")?;
        if n > 100_000 {
            return Err(row.err("num_gpus", format!("{n} GPUs is not plausible")));
        }
        let (tasks, per) = split_gpus(n as u32, per_node);
        let name = row.str("cluster");
        if name.is_empty() {
            return Err(row.err("cluster", "empty virtual cluster".into()));
        }
        let tenant = tenants.id(name).map_err(|e| row.err("cluster", e))?;
        jobs.push(Job {
            submit: submit * 1000,
            work,
            estimate: None,
            deadline: None,
            tenant,
            class: Class::OnDemand,
            tasks: tasks.max(1),
            req: gpu_request(per),
            line: row.line() as u32,
        });
    }
    Ok(jobs)
}

/// `chronus-philly-slo/*.csv`: `job_type` strict → guaranteed (hard
/// deadline), soft → on-demand (first deadline), best → spot (no deadline).
fn read_chronus(path: &Path, per_node: u32, tenants: &mut Tenants) -> Result<Vec<Job>, TraceError> {
    let mut csv = Csv::open(
        path,
        &[
            "job_id",
            "user",
            "num_gpu",
            "submit_time",
            "duration",
            "expect_time_list",
            "job_type",
        ],
    )?;
    let mut jobs = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        let user = row.str("user");
        if user.is_empty() {
            return Err(row.err("user", "empty user".into()));
        }
        let tenant = tenants.id(user).map_err(|e| row.err("user", e))?;
        let n = row.int("num_gpu")?;
        if n > 100_000 {
            return Err(row.err("num_gpu", format!("{n} GPUs is not plausible")));
        }
        let (tasks, per) = split_gpus(n as u32, per_node);
        let submit = seconds(&row, "submit_time")?;
        let work = seconds(&row, "duration")?;
        let ty = row.str("job_type");
        let (class, has_deadline) = match ty {
            "strict" => (Class::Guaranteed, true),
            "soft" => (Class::OnDemand, true),
            "best" => (Class::Spot, false),
            _ => {
                return Err(row.err(
                    "job_type",
                    format!("expected strict, soft or best, found {ty:?}"),
                ))
            }
        };
        let deadline = if has_deadline {
            let list = row.str("expect_time_list");
            let first = list.split('-').next().unwrap_or("");
            Some(parse_seconds(first).ok_or_else(|| {
                row.err(
                    "expect_time_list",
                    format!("expected seconds (first of a '-' list), found {list:?}"),
                )
            })?)
        } else {
            None
        };
        jobs.push(Job {
            submit,
            work,
            estimate: None,
            deadline,
            tenant,
            class,
            tasks: tasks.max(1),
            req: gpu_request(per),
            line: row.line() as u32,
        });
    }
    Ok(jobs)
}

/// An openb pod list with `creation_time` and `deletion_time`: one job per
/// pod, run time = deletion − creation, tenant "openb".
fn read_openb(path: &Path, models: &Models, tenants: &mut Tenants) -> Result<Vec<Job>, TraceError> {
    let mut m = models.clone();
    let pods = read_pods(path, &mut m)?;
    let err = |message: String| TraceError {
        file: path.to_path_buf(),
        line: 0,
        column: None,
        message,
    };
    let tenant = tenants.id("openb").map_err(err)?;
    let mut jobs = Vec::with_capacity(pods.len());
    for (i, p) in pods.iter().enumerate() {
        let (Some(c), Some(d)) = (p.creation_time, p.deletion_time) else {
            return Err(err(format!(
                "pod {} lacks creation_time/deletion_time: this pod list has no times",
                p.name
            )));
        };
        if c < 0 || d < c {
            return Err(err(format!(
                "pod {}: deletion_time {d} before creation_time {c}",
                p.name
            )));
        }
        if m.len() > models.len() && !p.req.models.is_any() {
            let extra = (0..m.len()).find(|&k| {
                k >= models.len() && p.req.models.accepts(Some(suanli_core::ModelId(k as u8)))
            });
            if let Some(k) = extra {
                return Err(err(format!(
                    "pod {} asks for GPU model {:?}, which the cluster lacks",
                    p.name,
                    m.name(suanli_core::ModelId(k as u8))
                )));
            }
        }
        jobs.push(Job {
            submit: c as u64 * 1000,
            work: (d - c) as u64 * 1000,
            estimate: None,
            deadline: None,
            tenant,
            class: Class::OnDemand,
            tasks: 1,
            req: p.req,
            line: i as u32 + 2,
        });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_gangs_into_node_sized_tasks() {
        assert_eq!(split_gpus(1, 8), (1, 1));
        assert_eq!(split_gpus(8, 8), (1, 8));
        assert_eq!(split_gpus(12, 8), (2, 6));
        assert_eq!(split_gpus(24, 8), (3, 8));
        assert_eq!(split_gpus(128, 8), (16, 8));
        assert_eq!(split_gpus(11, 8), (11, 1));
    }

    #[test]
    fn parses_datetimes() {
        assert_eq!(parse_datetime("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_datetime("2017-10-09 07:01:55"), Some(1_507_532_515));
        assert_eq!(parse_datetime("2017-13-09 07:01:55"), None);
        assert_eq!(parse_datetime("2017-10-09"), None);
        assert_eq!(parse_datetime("2017-02-29 00:00:00"), None);
        assert_eq!(parse_datetime("1969-12-31 23:59:59"), None);
        assert_eq!(parse_datetime(" 2017-10-9 7:01:55 "), Some(1_507_532_515));
    }

    #[test]
    fn parses_seconds() {
        assert_eq!(parse_seconds("66.0"), Some(66_000));
        assert_eq!(parse_seconds("0.0015"), Some(2));
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("nan"), None);
        assert_eq!(parse_seconds("1e20"), None);
    }
}
