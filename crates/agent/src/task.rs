//! One task as a process group: start with its environment, devices, working
//! directory and log files; stop with SIGTERM then SIGKILL to the whole
//! group; reap; and read back its logs for pushing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use suanli_api::Assignment;

use crate::cgroup::{Cgroups, Limits, TaskGroup};
use crate::devices::DevNo;
use crate::sandbox::{Sandbox, TASK_PATH};

pub type Key = (i64, i64, i64);

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: String,
    pub timeout: bool,
    /// It never ran (it could not be started).
    pub not_started: bool,
}

pub struct Task {
    pub key: Key,
    child: Option<Child>,
    /// Process group id (= the leader's pid).
    pub pgid: i32,
    pub started: Instant,
    max_runtime: Option<Duration>,
    /// Being stopped: (SIGKILL deadline, reason, timeout).
    stopping: Option<(Instant, String, bool)>,
    pub exit: Option<Exit>,
    pub logs: [PathBuf; 2],
    /// Bytes of each log the server has.
    pub pushed: [u64; 2],
    /// The exit was queued for a heartbeat.
    pub reported: bool,
    /// The task's own user id (sandboxed), until released after its end.
    pub uid: Option<u32>,
    /// Its cgroups (CPU, memory, processes), until removed after its end.
    pub group: Option<TaskGroup>,
    memory_mib: i64,
}

/// The port of a gang's rendezvous on its master node: distinct for jobs
/// (and attempts) that share a master.
pub fn master_port(job: i64, run: i64) -> u16 {
    20_000 + ((job * 31 + run).rem_euclid(20_000)) as u16
}

/// The environment of a task, and all of it (nothing of the agent's): a
/// fixed `PATH`, `HOME` = `home`, the job's own variables, then Suanli's
/// (which win). `filtered`: the task can open only its own GPUs' device
/// files, so CUDA sees just those and numbers them from 0 (in PCI bus
/// order, the node's order): `CUDA_VISIBLE_DEVICES` is then `0..n`, as
/// Slurm sets it under `ConstrainDevices`; `SUANLI_GPUS` always names the
/// node's indices.
pub fn environment(a: &Assignment, home: &Path, filtered: bool) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), TASK_PATH.to_string());
    env.insert("HOME".to_string(), home.display().to_string());
    env.insert("LANG".to_string(), "C.UTF-8".to_string());
    env.extend(a.env.clone());
    let join = |ids: &mut dyn Iterator<Item = u32>| {
        ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    };
    let node_ids = join(&mut a.gpus.iter().copied());
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    if filtered {
        set("CUDA_VISIBLE_DEVICES", join(&mut (0..a.gpus.len() as u32)));
        set("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_string());
    } else {
        set("CUDA_VISIBLE_DEVICES", node_ids.clone());
    }
    set("SUANLI_GPUS", node_ids.clone());
    set("ASCEND_RT_VISIBLE_DEVICES", node_ids);
    set("SUANLI_JOB_ID", a.job.to_string());
    set("SUANLI_RUN", a.run.to_string());
    set("SUANLI_TASK_INDEX", a.task.to_string());
    set("SUANLI_NUM_TASKS", a.tasks.to_string());
    if let Some(s) = a.gpu_share {
        set("SUANLI_GPU_SHARE", format!("{s}"));
    }
    set("MASTER_ADDR", a.master_addr.clone());
    set("MASTER_PORT", master_port(a.job, a.run).to_string());
    set("WORLD_SIZE", a.tasks.to_string());
    set("RANK", a.task.to_string());
    if let Some(r) = &a.replica {
        // A model service's replica: where to listen, and the secret every
        // request must carry (only the router has it).
        set("PORT", r.port.to_string());
        set("SUANLI_REPLICA_KEY", r.key.clone());
        set("SUANLI_SERVICE", r.service.clone());
    }
    env
}

/// Whether a replica's port is free on this node (it listens on every
/// address): a replica whose port is taken is not started, and its service
/// starts another on another port.
fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

impl Task {
    /// Start the task in its own process group. A task that cannot start
    /// (no such program, bad working directory) is returned already ended,
    /// with exit code 127 and the reason.
    pub fn start(
        a: &Assignment,
        work_dir: &Path,
        sandbox: &mut Sandbox,
        cgroups: Option<&Cgroups>,
        gpu_devices: &[(u32, DevNo)],
    ) -> Task {
        let base = work_dir
            .join("jobs")
            .join(a.job.to_string())
            .join(a.run.to_string());
        let logs = [
            base.join(format!("task-{}.out", a.task)),
            base.join(format!("task-{}.err", a.task)),
        ];
        let mut t = Task {
            key: (a.job, a.run, a.task),
            child: None,
            pgid: 0,
            started: Instant::now(),
            max_runtime: a
                .max_runtime_s
                .map(|s| Duration::from_secs(s.max(1) as u64)),
            stopping: None,
            exit: None,
            logs: logs.clone(),
            pushed: [0, 0],
            reported: false,
            uid: None,
            group: None,
            memory_mib: a.memory_mib,
        };
        let failed = |t: &mut Task, why: String| {
            let _ = std::fs::write(&t.logs[1], format!("suanli-agent: {why}\n"));
            t.exit = Some(Exit {
                code: Some(127),
                signal: None,
                reason: why,
                timeout: false,
                not_started: true,
            });
        };
        if let Some(r) = &a.replica {
            if !port_free(r.port) {
                failed(
                    &mut t,
                    format!("replica port {} is already in use on this node", r.port),
                );
                return t;
            }
        }
        let cwd = if a.workdir.is_empty() {
            base.join(format!("task-{}", a.task))
        } else {
            PathBuf::from(&a.workdir)
        };
        if let Err(e) = std::fs::create_dir_all(&base) {
            failed(&mut t, format!("cannot create {}: {e}", base.display()));
            return t;
        }
        if a.workdir.is_empty() {
            if let Err(e) = std::fs::create_dir_all(&cwd) {
                failed(&mut t, format!("cannot create {}: {e}", cwd.display()));
                return t;
            }
        }
        match sandbox.take_uid((a.job, a.run)) {
            Ok(uid) => t.uid = uid,
            Err(e) => {
                failed(&mut t, e);
                return t;
            }
        }
        if t.uid.is_some() {
            // Other users pass through to their own directories; they
            // cannot list which jobs ran here.
            use std::os::unix::fs::PermissionsExt;
            let jobs = work_dir.join("jobs");
            for d in [&jobs, &jobs.join(a.job.to_string()), &base] {
                let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711));
            }
        }
        if let (Some(uid), true) = (t.uid, a.workdir.is_empty()) {
            if let Err(e) = sandbox.own_dir(&cwd, uid) {
                failed(
                    &mut t,
                    format!("cannot give {} to the task: {e}", cwd.display()),
                );
                return t;
            }
        }
        // The logs are the agent's (0600): the task writes them through
        // the descriptors it is given, no other task can read them.
        let create = |p: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
        };
        let (out, err) = match (create(&logs[0]), create(&logs[1])) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                failed(&mut t, format!("cannot create log files: {e}"));
                return t;
            }
        };
        let Some((prog, args)) = a.command.split_first() else {
            failed(&mut t, "empty command".to_string());
            return t;
        };
        // Every GPU of the node but the task's own, kept from it by its
        // cgroup where the agent has a devices controller.
        let deny: Vec<DevNo> = gpu_devices
            .iter()
            .filter(|(i, _)| !a.gpus.contains(i))
            .map(|(_, d)| *d)
            .collect();
        let filtered = cgroups.is_some_and(Cgroups::devices) && !deny.is_empty();
        let mut c = Command::new(prog);
        c.args(args)
            .current_dir(&cwd)
            .env_clear()
            .envs(environment(a, &cwd, filtered))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        if let Some(cg) = cgroups {
            let limits = Limits {
                memory_mib: a.memory_mib.max(0) as u64,
                cpu_milli: a.cpu_milli.max(0) as u64,
                deny,
            };
            // Unique on the machine: agents sharing it may run the same
            // (job, run, task) of different servers.
            let name = format!(
                "suanli-{}-task-{}-{}-{}",
                std::process::id(),
                a.job,
                a.run,
                a.task
            );
            match cg.create(&name, &limits) {
                // Entered before the sandbox drops root.
                Ok(g) => {
                    g.enter(&mut c);
                    t.group = Some(g);
                }
                Err(e) => {
                    failed(
                        &mut t,
                        format!("cannot set the task's CPU, memory and device limits: {e}"),
                    );
                    return t;
                }
            }
        }
        if let Some(uid) = t.uid {
            sandbox.prepare(&mut c, uid);
        }
        let spawned = c.spawn();
        match spawned {
            Ok(c) => {
                t.pgid = c.id() as i32;
                t.child = Some(c);
            }
            Err(e) => failed(
                &mut t,
                format!("cannot start {prog:?} in {}: {e}", cwd.display()),
            ),
        }
        t
    }

    pub fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// SIGTERM the whole group now; SIGKILL after `grace` if still alive.
    pub fn stop(&mut self, reason: &str, timeout: bool, grace: Duration) {
        if self.exit.is_some() || self.stopping.is_some() {
            return;
        }
        signal_group(self.pgid, libc::SIGTERM);
        self.stopping = Some((Instant::now() + grace, reason.to_string(), timeout));
    }

    /// Reap the leader, enforce the run-time limit and the grace period.
    /// Returns true when the task has just ended.
    pub fn poll(&mut self, grace: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        if self.exit.is_some() {
            return false;
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // The leader is gone: nothing of the task may outlive it.
                signal_group(self.pgid, libc::SIGKILL);
                let (reason, timeout) = match &self.stopping {
                    Some((_, r, t)) => (r.clone(), *t),
                    None if self.group.as_ref().is_some_and(TaskGroup::memory_killed) => (
                        format!("killed: memory limit ({} MiB)", self.memory_mib),
                        false,
                    ),
                    None => (String::new(), false),
                };
                self.exit = Some(Exit {
                    code: status.code(),
                    signal: status.signal(),
                    reason,
                    timeout,
                    not_started: false,
                });
                return true;
            }
            Ok(None) => {}
            Err(_) => {}
        }
        if let Some(limit) = self.max_runtime {
            if self.stopping.is_none() && self.started.elapsed() > limit {
                let why = format!("max runtime exceeded ({} s)", limit.as_secs());
                self.stop(&why, true, grace);
            }
        }
        if let Some((deadline, _, _)) = &self.stopping {
            if Instant::now() >= *deadline {
                signal_group(self.pgid, libc::SIGKILL);
            }
        }
        false
    }

    /// The next chunk of log `stream` (0 = out, 1 = err) the server lacks.
    pub fn log_chunk(&self, stream: usize, max: usize) -> Vec<u8> {
        let Ok(mut f) = File::open(&self.logs[stream]) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.pushed[stream])).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let _ = f.take(max as u64).read_to_end(&mut buf);
        buf
    }

    /// Whether every byte of both logs has been pushed.
    pub fn logs_pushed(&self) -> bool {
        (0..2).all(|s| std::fs::metadata(&self.logs[s]).map_or(true, |m| m.len() <= self.pushed[s]))
    }
}

/// Send `sig` to process group `pgid` (no-op for 0; errors such as "no
/// such group" are expected once it is gone).
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: killpg only sends a signal; it touches no memory of ours.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// The start time (clock ticks since boot) of process `pid`, to tell a
/// process from a later one that reused its pid.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}
