//! `submit`, `queue`, `job show`, `cancel`, `logs`.

use clap::{Args, Subcommand};
use serde::Serialize;
use suanli_api::{
    Class, EventList, Job, JobDetail, JobEvent, JobPage, JobState, JobSubmit, JobsQuery, LogRead,
    LogStream,
};

use super::output::{gpus_of, print_json, total_gpus};
use super::{parse_duration, parse_env, parse_mem, query, Conn};
use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    conn: Conn,
    /// Name this submission: the same key (from the same tenant, within a
    /// day) gives back the job it made instead of a new one, so a script
    /// may run the command again safely [default: a new key per command,
    /// which makes retries and failovers within it safe].
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Whole GPUs per task.
    #[arg(long, conflicts_with = "gpu_share")]
    gpus: Option<u32>,
    /// A fraction of one GPU per task, e.g. 0.25.
    #[arg(long)]
    gpu_share: Option<f64>,
    /// Allowed GPU models, comma-separated (default: any).
    #[arg(long, value_name = "A,B")]
    gpu_model: Option<String>,
    /// Gang size: tasks that start together.
    #[arg(long, default_value_t = 1)]
    tasks: u32,
    /// CPU cores per task (decimals allowed).
    #[arg(long, default_value_t = 1.0)]
    cpu: f64,
    /// Memory per task: a number of MiB, or with a K/M/G/T suffix (binary).
    #[arg(long, default_value = "1G")]
    mem: String,
    /// Service class: guaranteed, on-demand or spot.
    #[arg(long, default_value = "on-demand", value_parser = |s: &str| s.parse::<Class>())]
    class: Class,
    #[arg(long)]
    name: Option<String>,
    /// Environment variable for the tasks, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Working directory of the tasks on the node.
    #[arg(long)]
    workdir: Option<String>,
    /// Maximum run time: seconds, or with s/m/h/d (e.g. 90m, 2h).
    #[arg(long, value_name = "DURATION")]
    time: Option<String>,
    /// Attempts allowed after the first one fails.
    #[arg(long)]
    retries: Option<u32>,
    /// Print the job as JSON.
    #[arg(long)]
    json: bool,
    /// The command to run (after --).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn submit(a: SubmitArgs) -> Result<(), CliError> {
    if !(a.cpu.is_finite() && a.cpu >= 0.0) {
        return Err(usage(format!("--cpu must be >= 0, found {}", a.cpu)));
    }
    let env = parse_env(&a.env)?;
    let body = JobSubmit {
        name: a.name,
        command: a.command,
        tasks: Some(a.tasks.into()),
        cpu_milli: Some((a.cpu * 1000.0).round() as i64),
        memory_mib: Some(parse_mem(&a.mem)? as i64),
        gpus: a.gpus.map(i64::from),
        gpu_share: a.gpu_share,
        gpu_models: a
            .gpu_model
            .map(|m| m.split(',').map(|s| s.trim().to_string()).collect()),
        class: Some(a.class.to_string()),
        env: (!a.env.is_empty()).then_some(env),
        workdir: a.workdir,
        max_runtime_s: a
            .time
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .map(|s| s as i64),
        retries: a.retries.map(i64::from),
    };
    // One key per command: a retry, here or on another replica, makes the
    // job once.
    let key = match &a.idempotency_key {
        Some(k) => k.clone(),
        None => suanli_api::token::new_token().1,
    };
    let j: Job = a.conn.post_once("/v1/jobs", &body, &key)?;
    if a.json {
        print_json(&j);
    } else {
        println!("submitted job {}", j.id);
    }
    Ok(())
}

#[derive(Args)]
pub struct QueueArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only jobs in this state, in any case (pending, running, completed,
    /// failed, cancelled) [default: pending and running].
    #[arg(long, value_parser = parse_state)]
    state: Option<JobState>,
    /// Every job, whatever its state.
    #[arg(long, conflicts_with = "state")]
    all: bool,
    #[arg(long)]
    json: bool,
}

/// A job state a job can be in, in any case (PREEMPTED is an event: a
/// preempted job is PENDING again).
fn parse_state(s: &str) -> Result<JobState, String> {
    let valid = "pending, running, completed, failed or cancelled";
    match s.to_ascii_uppercase().parse::<JobState>() {
        Ok(JobState::Preempted) => Err(format!(
            "no job is ever in state {s:?} (a preempted job is pending again); expected {valid}"
        )),
        Ok(st) => Ok(st),
        Err(_) => Err(format!("expected {valid} (found {s:?})")),
    }
}

fn list_jobs(conn: &Conn, state: Option<JobState>) -> Result<Vec<Job>, CliError> {
    let mut all = Vec::new();
    let mut cursor = 0i64;
    loop {
        let q = JobsQuery {
            state,
            tenant: None,
            cursor: Some(cursor),
            limit: Some(1000),
        };
        let page: JobPage = conn.get(&format!("/v1/jobs?{}", query(&q)))?;
        all.extend(page.jobs);
        match page.next_cursor {
            Some(c) => cursor = c,
            None => break,
        }
    }
    Ok(all)
}

#[derive(Serialize)]
struct JobList {
    jobs: Vec<Job>,
}

pub fn queue(a: QueueArgs) -> Result<(), CliError> {
    let mut all = match (a.state, a.all) {
        (Some(s), _) => list_jobs(&a.conn, Some(s))?,
        (None, true) => list_jobs(&a.conn, None)?,
        (None, false) => {
            let mut v = list_jobs(&a.conn, Some(JobState::Running))?;
            v.extend(list_jobs(&a.conn, Some(JobState::Pending))?);
            v
        }
    };
    all.sort_by_key(|j| j.id);
    if a.json {
        print_json(&JobList { jobs: all });
        return Ok(());
    }
    // GPUS is the job's total (tasks x per task); TASK GPUS one task's.
    println!(
        "{:>8} {:<12} {:<20} {:<10} {:>5} {:>6} {:>9} {:<10} {:<20} REASON",
        "ID", "TENANT", "NAME", "STATE", "TASKS", "GPUS", "TASK GPUS", "CLASS", "SUBMITTED"
    );
    for j in &all {
        println!(
            "{:>8} {:<12} {:<20} {:<10} {:>5} {:>6} {:>9} {:<10} {:<20} {}",
            j.id,
            j.tenant,
            j.name,
            j.state.as_str(),
            j.tasks,
            total_gpus(j),
            gpus_of(j),
            j.class.as_str(),
            suanli_billing::format_time(j.submitted_ms),
            j.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct JobIdArgs {
    #[command(flatten)]
    conn: Conn,
    id: i64,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// A job's details and event history.
    Show(JobIdArgs),
}

/// `job show --json`: the job, its tasks and its history.
#[derive(Serialize)]
struct JobShow {
    #[serde(flatten)]
    detail: JobDetail,
    events: Vec<JobEvent>,
}

pub fn job(c: JobCmd) -> Result<(), CliError> {
    let JobCmd::Show(a) = c;
    let d: JobDetail = a.conn.get(&format!("/v1/jobs/{}", a.id))?;
    let ev: EventList = a.conn.get(&format!("/v1/jobs/{}/events", a.id))?;
    if a.json {
        print_json(&JobShow {
            detail: d,
            events: ev.events,
        });
        return Ok(());
    }
    let j = &d.job;
    let rows: [(&str, String); 8] = [
        ("id", j.id.to_string()),
        ("tenant", j.tenant.clone()),
        ("name", j.name.clone()),
        ("state", j.state.to_string()),
        ("class", j.class.to_string()),
        ("tasks", j.tasks.to_string()),
        ("cpu_milli", j.cpu_milli.to_string()),
        ("memory_mib", j.memory_mib.to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<12} {v}");
    }
    println!("{:<12} {}", "gpus/task", gpus_of(j));
    println!("{:<12} {}", "gpus total", total_gpus(j));
    println!(
        "{:<12} {}",
        "submitted",
        suanli_billing::format_time(j.submitted_ms)
    );
    if let Some(t) = j.started_ms {
        println!("{:<12} {}", "started", suanli_billing::format_time(t));
    }
    if let Some(t) = j.ended_ms {
        println!("{:<12} {}", "ended", suanli_billing::format_time(t));
    }
    println!("{:<12} {:?}", "command", j.command);
    if let Some(r) = &j.reason {
        println!("{:<12} {r}", "reason");
    }
    if !d.task_history.is_empty() {
        println!("tasks:");
        for t in &d.task_history {
            let ended = t
                .ended_ms
                .map_or("-".to_string(), suanli_billing::format_time);
            println!(
                "  attempt {} task {} on {} gpus {:?} {} {} .. {} {}",
                t.run,
                t.index,
                t.node,
                t.gpus,
                t.state,
                suanli_billing::format_time(t.started_ms),
                ended,
                t.reason
            );
        }
    }
    println!("events:");
    for e in &ev.events {
        println!(
            "  {} {} {}",
            suanli_billing::format_time(e.at_ms),
            e.kind,
            e.detail
        );
    }
    Ok(())
}

pub fn cancel(a: JobIdArgs) -> Result<(), CliError> {
    #[derive(Serialize)]
    struct NoBody {}
    let j: Job = a
        .conn
        .post(&format!("/v1/jobs/{}/cancel", a.id), &NoBody {})?;
    if a.json {
        print_json(&j);
    } else {
        println!("job {} {}", j.id, j.state);
    }
    Ok(())
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    conn: Conn,
    id: i64,
    /// Task index.
    #[arg(long, default_value_t = 0)]
    task: i64,
    /// Attempt [default: the latest].
    #[arg(long)]
    run: Option<i64>,
    /// Standard error instead of standard output.
    #[arg(long)]
    stderr: bool,
    /// Keep printing new output until the job ends.
    #[arg(long, short)]
    follow: bool,
}

/// `suanli logs JOB`: a task's output, through the server.
pub fn logs(a: LogsArgs) -> Result<(), CliError> {
    use std::io::Write;
    let stream = if a.stderr {
        LogStream::Err
    } else {
        LogStream::Out
    };
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    // The attempt being read: the one asked for, else the latest, pinned
    // at the first read so that an offset never crosses attempts.
    let mut run = a.run;
    let path = |run: Option<i64>, offset: u64| {
        let q = LogRead {
            task: Some(a.task),
            run,
            stream: Some(stream),
            offset: Some(offset),
        };
        format!("/v1/jobs/{}/logs?{}", a.id, query(&q))
    };
    let mut print = |data: &[u8]| {
        out.write_all(data)
            .and_then(|_| out.flush())
            .map_err(|e| failure(e.to_string()))
    };
    loop {
        let (data, next, state, latest) = a.conn.get_bytes(&path(run, offset))?;
        let reading = *run.get_or_insert(latest);
        print(&data)?;
        offset = next.max(offset);
        if !a.follow {
            return Ok(());
        }
        if data.is_empty() {
            if a.run.is_none() && latest > reading {
                // Started (from 0), or retried: this attempt's tail, then
                // the next attempt's output from its start.
                if reading > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1500));
                    let (data, _, _, _) = a.conn.get_bytes(&path(run, offset))?;
                    print(&data)?;
                    eprintln!("suanli: attempt {latest} (the job was requeued)");
                }
                run = Some(latest);
                offset = 0;
                continue;
            }
            if state.parse::<JobState>().is_ok_and(JobState::is_final) {
                // The agent pushes the tail right after the exit: one last read.
                std::thread::sleep(std::time::Duration::from_millis(1500));
                let (data, _, _, _) = a.conn.get_bytes(&path(run, offset))?;
                return print(&data);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}
