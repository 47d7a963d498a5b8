//! `suanli bench start-latency`: how long after a tenant's request its
//! process runs, and how long after a cancel it gets SIGTERM, on an idle
//! pool of real processes: the server binary, two agent binaries with
//! fake GPUs, and each job a real `sh` whose first act is to write the
//! clock (`date +%s%N`) to a marker file, and whose SIGTERM trap writes it
//! to another. Latency = the marker's time - the time the request was sent
//! (both the realtime clock of this machine).
//!
//! Two modes in the same run, each on a fresh server: `push` (agents hold
//! a wait call, the default) and `poll` (`agent --poll-only`: agents learn
//! of work at their heartbeat, every `--heartbeat-s`).
//! Jobs are sequential (one at a time: an idle pool), each cancelled once
//! it runs and waited for until it is over; each request is sent after a
//! delay drawn uniformly in one heartbeat interval, so that polling is met
//! at a random phase (in step with the heartbeat it would wait a whole
//! interval every time).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;
use suanli_api::{Job, JobDetail, JobSubmit, TaskState};

use crate::bench_pool::{stats, LocalPool, Stats};
use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct BenchStartArgs {
    /// Jobs per mode (each: submit, wait for its process, cancel, wait
    /// for its SIGTERM); p99 is the maximum below 100.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// The agents' heartbeat interval, s (the polling mode's delay).
    #[arg(long, default_value_t = 1)]
    heartbeat_s: u64,
    /// Task isolation of the agents (`agent --sandbox`). With `auto` as
    /// root, tasks get a private /tmp: give a --data-dir outside /tmp.
    #[arg(long, default_value = "off")]
    sandbox: String,
    /// Where the servers, agents and markers live [default: a new
    /// directory under the system's temp dir, removed at the end].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Fail (exit 1) when the push mode's p99 of either latency exceeds
    /// this many ms.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Milliseconds of one mode's jobs.
#[derive(Serialize)]
struct Figures {
    mode: &'static str,
    jobs: usize,
    submit_to_running_ms: Stats,
    cancel_to_sigterm_ms: Stats,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Wait for `path` to hold a time in ns (written by the task's `date`).
fn marker(path: &Path, timeout: Duration) -> Result<i128, CliError> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if let Ok(ns) = t.trim().parse::<i128>() {
                return Ok(ns);
            }
        }
        if Instant::now() > end {
            return Err(failure(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// One mode: a fresh server and two agents, `jobs` sequential jobs.
fn measure(a: &BenchStartArgs, dir: &Path, push: bool) -> Result<Figures, CliError> {
    let mode = if push { "push" } else { "poll" };
    let dir = dir.join(mode);
    let marks = dir.join("markers");
    std::fs::create_dir_all(&marks).map_err(|e| failure(format!("{}: {e}", marks.display())))?;
    // The tasks may run as other users (sandbox): they write markers here.
    use std::os::unix::fs::PermissionsExt;
    for d in [&dir, &marks] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| failure(format!("{}: {e}", d.display())))?;
    }
    let config = format!(
        "[agents]\nheartbeat_interval_s = {}\nlease_s = {}\n",
        a.heartbeat_s,
        (a.heartbeat_s * 4).max(10)
    );
    let mut agent_args = vec!["--grace-s", "5", "--sandbox", &a.sandbox];
    if !push {
        agent_args.push("--poll-only");
    }
    let pool = LocalPool::start(&dir, &config, 2, "fake:8xA100-80G", &agent_args)?;
    let (api, tok) = (&pool.api, &pool.tenant);
    let mut start = Vec::with_capacity(a.jobs);
    let mut stop = Vec::with_capacity(a.jobs);
    // Requests at a random phase of the heartbeat (sequential requests
    // would otherwise fall into step with it): a delay uniform in one
    // interval before each, from a fixed xorshift sequence.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut jitter = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % (a.heartbeat_s * 1000)));
    };
    // One warm-up job first (connections, page cache), not counted.
    for i in 0..=a.jobs {
        let (s, t) = (
            marks.join(format!("{i}.start")),
            marks.join(format!("{i}.term")),
        );
        let script = format!(
            "trap 'date +%s%N > {t}.w && mv {t}.w {t}; exit 0' TERM; \
             date +%s%N > {s}.w && mv {s}.w {s}; sleep 3600 & wait",
            s = s.display(),
            t = t.display()
        );
        let body = JobSubmit {
            name: Some(format!("latency-{i}")),
            command: vec!["sh".to_string(), "-c".to_string(), script],
            gpus: Some(1),
            ..JobSubmit::default()
        };
        jitter();
        let t0 = now_ns();
        let job: Job = api.post("/v1/jobs", tok, &body)?;
        let running = marker(&s, Duration::from_secs(60))?;
        jitter();
        let t1 = now_ns();
        api.post::<_, serde::de::IgnoredAny>(
            &format!("/v1/jobs/{}/cancel", job.id),
            tok,
            &serde_json::json!({}),
        )?;
        let termed = marker(&t, Duration::from_secs(60))?;
        if i > 0 {
            start.push((running - t0) as f64 / 1e6);
            stop.push((termed - t1) as f64 / 1e6);
        }
        // Idle again: the job over and its process gone.
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let d: JobDetail = api.get(&format!("/v1/jobs/{}", job.id), tok)?;
            let over = d.job.state.is_final()
                && d.task_history.iter().all(|t| {
                    !matches!(
                        t.state,
                        TaskState::Assigned | TaskState::Running | TaskState::Killing
                    )
                });
            if over {
                break;
            }
            if Instant::now() > end {
                return Err(failure("a cancelled job did not end within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(pool);
    Ok(Figures {
        mode,
        jobs: a.jobs,
        submit_to_running_ms: stats(start),
        cancel_to_sigterm_ms: stats(stop),
    })
}

pub fn run(a: BenchStartArgs) -> Result<(), CliError> {
    if a.jobs == 0 || a.jobs > 10_000 {
        return Err(usage("--jobs must be 1..=10000"));
    }
    if a.heartbeat_s == 0 || a.heartbeat_s > 3600 {
        return Err(usage("--heartbeat-s must be 1..=3600"));
    }
    let (dir, temp) = match &a.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("suanli-bench-start-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| failure(format!("{}: {e}", dir.display())))?;
    let dir = std::fs::canonicalize(&dir).map_err(|e| failure(e.to_string()))?;
    let r = [true, false]
        .into_iter()
        .map(|push| measure(&a, &dir, push))
        .collect::<Result<Vec<_>, _>>();
    if temp && r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let figs = r?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&figs).expect("figures serialise")
        );
    } else {
        println!(
            "start latency: 2 agents, idle pool, {} jobs per mode, heartbeat {} s, sandbox {}",
            a.jobs, a.heartbeat_s, a.sandbox
        );
        println!(
            "{:<6} {:>30}   {:>30}",
            "mode", "submit -> running (ms)", "cancel -> SIGTERM (ms)"
        );
        println!(
            "{:<6} {:>7} {:>7} {:>7} {:>7}   {:>7} {:>7} {:>7} {:>7}",
            "", "p50", "p90", "p99", "max", "p50", "p90", "p99", "max"
        );
        for f in &figs {
            let (s, c) = (f.submit_to_running_ms, f.cancel_to_sigterm_ms);
            println!(
                "{:<6} {:>7.1} {:>7.1} {:>7.1} {:>7.1}   {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
                f.mode, s.p50, s.p90, s.p99, s.max, c.p50, c.p90, c.p99, c.max
            );
        }
        let (p, q) = (&figs[0], &figs[1]);
        println!(
            "poll / push, p50: submit {:.1}x, cancel {:.1}x",
            q.submit_to_running_ms.p50 / p.submit_to_running_ms.p50,
            q.cancel_to_sigterm_ms.p50 / p.cancel_to_sigterm_ms.p50
        );
    }
    if let Some(max) = a.max_p99_ms {
        let p = &figs[0];
        let worst = p.submit_to_running_ms.p99.max(p.cancel_to_sigterm_ms.p99);
        if worst > max {
            return Err(failure(format!(
                "push mode p99 {worst:.1} ms exceeds --max-p99-ms {max}"
            )));
        }
    }
    Ok(())
}
