//! # suanli-agent: the node agent
//!
//! Installed on every GPU server. It discovers the machine (GPUs through NVML
//! loaded at run time, CPU cores and memory from the OS), registers with the
//! server using an agent (join) token, and then loops:
//!
//! 1. reap finished tasks, enforce each job's `max_runtime_s` and the stop
//!    grace period;
//! 2. push new log bytes of every task to the server;
//! 3. heartbeat: every task it runs and every exit not yet acknowledged go in;
//!    start and kill orders come back;
//! 4. stop what it is told to stop (SIGTERM to the process group, SIGKILL
//!    after the grace period) and start what it is told to start, each task
//!    a process group with its devices in `CUDA_VISIBLE_DEVICES`.
//!
//! A heartbeat that misses the server's lease makes the node `down` and its
//! tasks are requeued elsewhere. A restarted agent kills the process groups
//! its previous run left (listed in `WORK_DIR/agent-state.json`, checked by
//! process start time against pid reuse). The server then learns which tasks
//! are gone from the first heartbeat.

pub mod cgroup;
pub mod devices;
pub mod discover;
pub mod sandbox;
pub mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use suanli_api::{
    GpuInfo, LogChunk, LogPushed, LogStream, NodeRegistration, Orders, OrdersChanged, Problem,
    Registered, Report, TaskExit, TaskKey, DEFAULT_WAIT_MS, PROTOCOL, PROTOCOL_HEADER,
};

pub use discover::{discover_gpus, discover_host, model_name, Gpu, GpuSpec};
use task::{Key, Task};

/// Everything the agent needs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub server: String,
    /// A join token, used when this node has no saved credential (first
    /// start, or after an admin revoked it).
    pub join_token: Option<String>,
    pub name: String,
    /// Address other nodes reach this one at (`MASTER_ADDR` of gangs).
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    pub gpus: Vec<Gpu>,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub work_dir: PathBuf,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// `auto`, `full` or `off` (see [`sandbox`]).
    pub sandbox: String,
    /// The pool of task user ids (inclusive).
    pub task_uids: (u32, u32),
    /// PEM certificates to trust for the server (else the system's roots).
    pub ca: Option<PathBuf>,
    /// Hold a wait call on the node's orders and heartbeat as soon as they
    /// change (false: learn of work only at the periodic heartbeat).
    pub push: bool,
}

/// The server's replicas (`--server URL1,URL2,...`): calls go to the one
/// that answered last; a call that cannot reach it, or that it answers 503
/// (a replica not running the scheduling loop, or stopping), moves the
/// agent on to the next for the following call. Heartbeats and log pushes
/// are safe to repeat, so the agent rides a leader takeover.
#[derive(Debug)]
pub struct Servers {
    list: Vec<String>,
    current: AtomicUsize,
}

impl Servers {
    pub fn parse(s: &str) -> Result<Servers, String> {
        let list: Vec<String> = s
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if list.is_empty() {
            return Err(format!("--server {s:?}: no URL in it"));
        }
        Ok(Servers {
            list,
            current: AtomicUsize::new(0),
        })
    }

    /// The replica to call now, and its index (for [`Servers::failed`]).
    fn base(&self) -> (usize, &str) {
        let k = self.current.load(Ordering::Relaxed) % self.list.len();
        (k, &self.list[k])
    }

    /// A call to replica `k` failed: the next call goes to the next one
    /// (unless another call moved on already).
    fn failed(&self, k: usize) {
        let next = (k + 1) % self.list.len();
        let _ = self
            .current
            .compare_exchange(k, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether a failed call should move the agent to another replica.
    fn moves_on(e: &ureq::Error) -> bool {
        matches!(e, ureq::Error::Transport(_) | ureq::Error::Status(503, _))
    }
}

struct Agent {
    cfg: AgentConfig,
    servers: Arc<Servers>,
    sandbox: sandbox::Sandbox,
    /// Where tasks' CPU and memory limits go (none: unlimited).
    cgroups: Option<cgroup::Cgroups>,
    /// The node's GPUs' device numbers, by GPU index (those with a device
    /// file): a task may open only its own.
    gpu_devices: Vec<(u32, devices::DevNo)>,
    /// Groups of ended tasks not removed yet (a process still exiting).
    stale_groups: Vec<cgroup::TaskGroup>,
    /// This node's credential (`WORK_DIR/node.token`, 0600).
    credential: String,
    /// The same, for the thread that waits for orders.
    shared_credential: Arc<Mutex<String>>,
    http: ureq::Agent,
    interval: Duration,
    tasks: BTreeMap<Key, Task>,
    /// Exits not yet acknowledged by a successful heartbeat.
    unacked: Vec<TaskExit>,
}

/// `WORK_DIR/agent-state.json`: the process groups this agent runs.
#[derive(Serialize, Deserialize, Default)]
struct SavedState {
    groups: Vec<SavedGroup>,
}

#[derive(Serialize, Deserialize)]
struct SavedGroup {
    pgid: i32,
    /// The leader's start time (clock ticks since boot), against pid reuse.
    start: Option<u64>,
}

/// A call that failed: the HTTP status (0 if the server was not reached)
/// and what it said.
type CallError = (u16, String);

/// What a refusal says: its problem document's detail, or the raw body.
fn refusal_text(body: &str) -> String {
    match serde_json::from_str::<Problem>(body) {
        Ok(p) => format!("{} ({})", p.detail, p.code),
        Err(_) => body.to_string(),
    }
}

fn log(msg: &str) {
    eprintln!("suanli-agent: {msg}");
}

impl Agent {
    /// A request to the current replica, and its index.
    fn request(&self, method: &str, path: &str) -> (usize, ureq::Request) {
        self.request_as(self.token(), method, path)
    }

    fn request_as(&self, token: &str, method: &str, path: &str) -> (usize, ureq::Request) {
        let (k, base) = self.servers.base();
        let r = self
            .http
            .request(method, &format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {token}"))
            .set(PROTOCOL_HEADER, &PROTOCOL.to_string());
        (k, r)
    }

    fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        self.post_as(self.token(), path, body)
    }

    fn post_as<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let (k, req) = self.request_as(token, "POST", path);
        let r = req.send_json(body);
        if let Err(e) = &r {
            if Servers::moves_on(e) {
                self.servers.failed(k);
            }
        }
        match r {
            Ok(resp) => resp
                .into_json()
                .map_err(|e| (0, format!("an answer this agent cannot read: {e}"))),
            Err(ureq::Error::Status(code, resp)) => {
                Err((code, refusal_text(&resp.into_string().unwrap_or_default())))
            }
            Err(e) => Err((0, e.to_string())),
        }
    }

    /// This node's credential (generated by the agent; the server knows
    /// its hash once a registration with the join token claimed it).
    fn token(&self) -> &str {
        &self.credential
    }

    fn credential_file(&self) -> PathBuf {
        self.cfg.work_dir.join("node.token")
    }

    /// Register with this node's credential; if the server does not know
    /// it (never claimed, or revoked: 401), claim a new one with the join
    /// token. The new credential is saved before it is sent, so a lost
    /// answer is retried as the same claim.
    fn register(&mut self) -> Result<(), CallError> {
        match self.register_once(None) {
            Err((401, msg)) => {
                let Some(join) = self.cfg.join_token.clone() else {
                    return Err((
                        401,
                        format!("this node's credential was refused ({msg}) and there is no join token to claim another"),
                    ));
                };
                let (secret, hash) = suanli_api::token::new_token();
                write_secret(&self.credential_file(), &secret)
                    .map_err(|e| (0, format!("cannot save this node's credential: {e}")))?;
                self.credential = secret.clone();
                *self
                    .shared_credential
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = secret;
                self.register_once(Some((&join, hash)))
            }
            r => r,
        }
    }

    /// One registration: with the credential, or (`claim`) with the join
    /// token and the hash of a new credential.
    fn register_once(&mut self, claim: Option<(&str, String)>) -> Result<(), CallError> {
        let body = NodeRegistration {
            name: self.cfg.name.clone(),
            addr: Some(self.cfg.addr.clone()),
            labels: Some(self.cfg.labels.clone()),
            cpu_milli: self.cfg.cpu_milli as i64,
            memory_mib: self.cfg.memory_mib as i64,
            gpus: self
                .cfg
                .gpus
                .iter()
                .map(|g| GpuInfo {
                    index: g.index as i64,
                    model: g.model.clone(),
                    memory_mib: Some(g.memory_mib as i64),
                })
                .collect(),
            credential_sha256: claim.as_ref().map(|c| c.1.clone()),
        };
        let r: Registered = match &claim {
            Some((join, _)) => self.post_as(join, "/v1/agents/register", &body)?,
            None => self.post("/v1/agents/register", &body)?,
        };
        if r.protocol != PROTOCOL {
            return Err((
                400,
                format!(
                    "the server speaks agent protocol {}, this agent {PROTOCOL}",
                    r.protocol
                ),
            ));
        }
        self.interval = Duration::from_secs(r.heartbeat_interval_s.max(1));
        for w in &r.warnings {
            log(&format!("WARNING from the server: {w}"));
        }
        Ok(())
    }

    fn state_file(&self) -> PathBuf {
        self.cfg.work_dir.join("agent-state.json")
    }

    /// Remember the live process groups, so a restarted agent can kill them.
    fn save_state(&self) {
        let groups = self
            .tasks
            .values()
            .filter(|t| t.running() && t.pgid > 0)
            .map(|t| SavedGroup {
                pgid: t.pgid,
                start: task::start_ticks(t.pgid),
            })
            .collect();
        let text = serde_json::to_string(&SavedState { groups }).expect("state serialises");
        let tmp = self.state_file().with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, self.state_file());
        }
    }

    /// Hand back the user ids of ended tasks (killing what still runs
    /// under them) and remove their groups.
    fn release_ended(&mut self) {
        self.stale_groups.retain(|g| !g.remove());
        for t in self.tasks.values_mut() {
            if !t.running() {
                if let Some(g) = t.group.take() {
                    g.kill_all();
                    self.stale_groups.push(g);
                }
                if let Some(uid) = t.uid.take() {
                    self.sandbox.release_uid(uid);
                }
            }
        }
    }

    /// Kill what a previous run of this agent left behind.
    fn kill_leftovers(&self) {
        self.sandbox.sweep();
        let Ok(text) = std::fs::read_to_string(self.state_file()) else {
            return;
        };
        let saved: SavedState = serde_json::from_str(&text).unwrap_or_default();
        for g in saved.groups {
            let (pgid, start) = (g.pgid, g.start);
            if pgid > 0 && start.is_some() && task::start_ticks(pgid) == start {
                log(&format!(
                    "killing process group {pgid} left by a previous run"
                ));
                task::signal_group(pgid, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(self.state_file());
    }

    fn push_logs(&mut self) {
        const CHUNK: usize = 60 * 1024;
        let keys: Vec<Key> = self.tasks.keys().copied().collect();
        for k in keys {
            for (stream, &name) in [LogStream::Out, LogStream::Err].iter().enumerate() {
                for _ in 0..16 {
                    let t = &self.tasks[&k];
                    let data = t.log_chunk(stream, CHUNK);
                    if data.is_empty() {
                        break;
                    }
                    let chunk = LogChunk {
                        job: k.0,
                        run: k.1,
                        task: k.2,
                        stream: name,
                        offset: t.pushed[stream],
                    };
                    let query = serde_urlencoded::to_string(&chunk).expect("a query serialises");
                    let path = format!("/v1/agents/{}/logs?{query}", self.cfg.name);
                    let (server, req) = self.request("POST", &path);
                    let r = req
                        .set("Content-Type", "application/octet-stream")
                        .send_bytes(&data);
                    if let Err(e) = &r {
                        if Servers::moves_on(e) {
                            self.servers.failed(server);
                        }
                    }
                    let t = self.tasks.get_mut(&k).expect("task");
                    match r {
                        Ok(resp) => {
                            let next = resp.into_json::<LogPushed>().map(|p| p.next_offset);
                            t.pushed[stream] = next.unwrap_or(t.pushed[stream] + data.len() as u64);
                        }
                        Err(ureq::Error::Status(409, resp)) => {
                            // The server has less: resend from where it is.
                            let p = resp.into_json::<Problem>().ok();
                            t.pushed[stream] = p.and_then(|p| p.next_offset).unwrap_or(0);
                        }
                        Err(ureq::Error::Status(404, _)) => {
                            // The server no longer has this task here: drop its logs.
                            t.pushed = [u64::MAX, u64::MAX];
                            break;
                        }
                        Err(_) => return, // server unreachable: retry next tick
                    }
                }
            }
        }
    }

    /// Report, then obey the answer; true when it started a task (whose
    /// start the next report confirms).
    fn heartbeat(&mut self) -> Result<bool, CallError> {
        let sent = self.unacked.len();
        let body = Report {
            running: self
                .tasks
                .values()
                .filter(|t| t.running())
                .map(|t| TaskKey {
                    job: t.key.0,
                    run: t.key.1,
                    task: t.key.2,
                })
                .collect(),
            exited: self.unacked.clone(),
        };
        let orders: Orders =
            self.post(&format!("/v1/agents/{}/heartbeat", self.cfg.name), &body)?;
        self.unacked.drain(..sent);
        for k in &orders.kill {
            if let Some(t) = self.tasks.get_mut(&(k.job, k.run, k.task)) {
                t.stop("stopped by the server", false, self.cfg.grace);
            }
        }
        let started = !orders.start.is_empty();
        for a in orders.start {
            let key = (a.job, a.run, a.task);
            if self.tasks.contains_key(&key) {
                continue;
            }
            let mut t = Task::start(
                &a,
                &self.cfg.work_dir,
                &mut self.sandbox,
                self.cgroups.as_ref(),
                &self.gpu_devices,
            );
            if let Some(e) = &t.exit {
                log(&format!("job {} task {}: {}", a.job, a.task, e.reason));
                self.unacked.push(exit_report(&t));
                t.reported = true;
            }
            self.tasks.insert(key, t);
        }
        // Forget tasks that ended, were acknowledged and whose logs are up.
        let acked: Vec<Key> = self
            .tasks
            .values()
            .filter(|t| !t.running() && t.reported && t.logs_pushed())
            .map(|t| t.key)
            .collect();
        // Their ids, groups and job /dev/shm are handed back first.
        self.release_ended();
        for k in acked {
            self.tasks.remove(&k);
        }
        self.save_state();
        Ok(started)
    }
}

fn exit_report(t: &Task) -> TaskExit {
    let e = t.exit.as_ref().expect("ended");
    TaskExit {
        job: t.key.0,
        run: t.key.1,
        task: t.key.2,
        exit_code: e.code.map(i64::from),
        signal: e.signal.map(i64::from),
        reason: e.reason.clone(),
        timeout: e.timeout,
        not_started: e.not_started,
    }
}

/// An HTTP client for the server: HTTPS verified against the system's
/// web roots, or only against the PEM certificates in `ca` when given
/// (`--ca`, `SUANLI_CA`: a private CA or a self-signed server).
pub fn http_client(ca: Option<&Path>, timeout: Duration) -> Result<ureq::Agent, String> {
    let mut b = ureq::AgentBuilder::new().timeout(timeout);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            let c = c.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {}: no PEM certificate in it", ca.display()));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        b = b.tls_config(std::sync::Arc::new(cfg));
    }
    Ok(b.build())
}

/// Write `text` to a file only its owner can read (mode 0600, also when
/// the file existed with a wider mode), synced.
pub fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The device numbers of the GPUs' device files (a declared file that is
/// not a character device is an error; a driver's missing file, a
/// warning), and a warning when tasks cannot be kept from them.
fn gpu_devices(
    gpus: &[Gpu],
    cgroups: Option<&cgroup::Cgroups>,
    strict: bool,
) -> Result<Vec<(u32, devices::DevNo)>, String> {
    let mut out = Vec::new();
    for g in gpus {
        let Some(path) = &g.device else {
            if strict && !g.fake {
                return Err(format!(
                    "GPU {}: its device file is unknown (NVML gave no minor number), so tasks \
                     could not be kept from it (--sandbox full)",
                    g.index
                ));
            }
            continue;
        };
        match devices::char_device(path) {
            Ok(d) => out.push((g.index, d)),
            Err(e) if path.starts_with("/dev/nvidia") && !strict => {
                log(&format!("WARNING: GPU {}: {e}", g.index))
            }
            Err(e) => return Err(format!("GPU {}: {e}", g.index)),
        }
    }
    if strict && !out.is_empty() && !cgroups.is_some_and(|c| c.devices()) {
        return Err(
            "--sandbox full: no cgroup devices controller (v1) or device filter (v2) to keep \
             tasks from other GPUs' device files"
                .to_string(),
        );
    }
    if !out.is_empty() && !cgroups.is_some_and(|c| c.devices()) {
        log(
            "WARNING: tasks can open every GPU's device file, not only their own \
             (no cgroup devices controller: run the agent as root on a node with cgroup v1 \
             devices or cgroup v2)",
        );
    }
    Ok(out)
}

/// Run the agent until `stop` is set; then stop every task (SIGTERM, then
/// SIGKILL after the grace period) and return.
pub fn run(cfg: AgentConfig, stop: &AtomicBool) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| format!("{}: {e}", cfg.work_dir.display()))?;
    let credential = match std::fs::read_to_string(cfg.work_dir.join("node.token")) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    if credential.is_none() && cfg.join_token.is_none() {
        return Err(format!(
            "no credential in {} and no join token: give one (--join-token-file, SUANLI_JOIN_TOKEN)",
            cfg.work_dir.join("node.token").display()
        ));
    }
    let sandbox = sandbox::Sandbox::new(&cfg.sandbox, cfg.task_uids)?;
    if sandbox.mode == sandbox::Mode::Full {
        // Tasks (other users) may pass through the work dir to their own
        // directories, not list or read it.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&cfg.work_dir, std::fs::Permissions::from_mode(0o711));
    }
    // SAFETY: geteuid has no preconditions.
    let cgroups = if unsafe { libc::geteuid() } == 0 {
        match cgroup::Cgroups::detect() {
            Ok(c) => Some(c),
            Err(e) => {
                log(&format!(
                    "WARNING: tasks run without CPU and memory limits: {e}"
                ));
                None
            }
        }
    } else {
        log("WARNING: not root: tasks run without CPU and memory limits (cgroups need root)");
        None
    };
    if let Some(c) = &cgroups {
        c.sweep();
    }
    let strict = cfg.sandbox == "full";
    if strict && cgroups.is_none() {
        return Err(
            "--sandbox full: tasks would run without CPU, memory and device limits (no usable \
             cgroups; see the warning above): fix the cgroups or use --sandbox auto"
                .to_string(),
        );
    }
    let gpu_devices = gpu_devices(&cfg.gpus, cgroups.as_ref(), strict)?;
    let credential = credential.unwrap_or_default();
    let mut a = Agent {
        shared_credential: Arc::new(Mutex::new(credential.clone())),
        cgroups,
        gpu_devices,
        stale_groups: Vec::new(),
        sandbox,
        credential,
        servers: Arc::new(Servers::parse(&cfg.server)?),
        http: http_client(cfg.ca.as_deref(), Duration::from_secs(10))?,
        interval: Duration::from_secs(5),
        tasks: BTreeMap::new(),
        unacked: Vec::new(),
        cfg,
    };
    a.kill_leftovers();
    // Register, retrying while the server is unreachable; a refusal (4xx)
    // is final.
    loop {
        match a.register() {
            Ok(()) => break,
            Err((code, msg)) if (400..500).contains(&code) => {
                return Err(format!("registration refused ({code}): {msg}"))
            }
            Err((_, msg)) => log(&format!("cannot register yet: {msg}")),
        }
        if sleep_or_stop(stop, Duration::from_secs(1)) {
            return Ok(());
        }
    }
    log(&format!(
        "registered {} with {} GPUs; heartbeat every {} s",
        a.cfg.name,
        a.cfg.gpus.len(),
        a.interval.as_secs()
    ));
    // Pushed work: a thread holds a wait call on the node's orders and
    // says when they change; the loop below then heartbeats at once.
    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    let quit_waiter = Arc::new(AtomicBool::new(false));
    if a.cfg.push {
        let w = Waiter {
            servers: a.servers.clone(),
            path: format!("/v1/agents/{}/wait", a.cfg.name),
            http: http_client(
                a.cfg.ca.as_deref(),
                Duration::from_millis(DEFAULT_WAIT_MS + 10_000),
            )?,
            credential: a.shared_credential.clone(),
            wake: wake_tx.clone(),
            quit: quit_waiter.clone(),
        };
        std::thread::Builder::new()
            .name("orders-wait".to_string())
            .spawn(move || w.run())
            .map_err(|e| format!("cannot start the orders thread: {e}"))?;
    }
    let mut last_beat = Instant::now() - a.interval;
    let mut woken = false;
    while !stop.load(Ordering::Relaxed) {
        let mut ended = false;
        for t in a.tasks.values_mut() {
            if t.poll(a.cfg.grace) {
                ended = true;
            }
        }
        a.release_ended();
        if ended {
            for t in a.tasks.values_mut().filter(|t| !t.running() && !t.reported) {
                t.reported = true;
                a.unacked.push(exit_report(t));
            }
        }
        a.push_logs();
        if ended || woken || last_beat.elapsed() >= a.interval {
            woken = false;
            match a.heartbeat() {
                Ok(started) => {
                    last_beat = Instant::now();
                    // Confirm new tasks at once when work is pushed (a
                    // polling agent confirms them at its next heartbeat).
                    woken = started && a.cfg.push;
                }
                Err((404, _)) => {
                    log("the server does not know this node; registering again");
                    let _ = a.register();
                }
                Err((401, msg)) => {
                    log(&format!(
                        "the server refused this node's credential ({msg}); registering again"
                    ));
                    let _ = a.register();
                }
                Err((_, msg)) => log(&format!("heartbeat failed: {msg}")),
            }
        }
        // Reap every tick; heartbeat early when the orders changed.
        if wake_rx.recv_timeout(TICK).is_ok() {
            woken = true;
            while wake_rx.try_recv().is_ok() {}
        }
    }
    quit_waiter.store(true, Ordering::Relaxed);
    drop(wake_tx);
    // Shutting down: nothing we started may outlive us.
    for t in a.tasks.values_mut() {
        t.stop("the agent is stopping", false, a.cfg.grace);
    }
    let deadline = Instant::now() + a.cfg.grace + Duration::from_secs(1);
    while a.tasks.values().any(Task::running) && Instant::now() < deadline {
        for t in a.tasks.values_mut() {
            t.poll(a.cfg.grace);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    a.release_ended();
    // Their groups, once the last processes are gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !a.stale_groups.is_empty() && Instant::now() < deadline {
        a.stale_groups.retain(|g| !g.remove());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(a.state_file());
    Ok(())
}

/// How often the agent checks its tasks (exits, time limits) and whether
/// its orders changed.
const TICK: Duration = Duration::from_millis(50);

/// The thread that holds `GET /v1/agents/{name}/wait` and sends on `wake`
/// each time the node's order sequence moves.
struct Waiter {
    servers: Arc<Servers>,
    path: String,
    http: ureq::Agent,
    credential: Arc<Mutex<String>>,
    wake: mpsc::Sender<()>,
    quit: Arc<AtomicBool>,
}

impl Waiter {
    fn run(self) {
        let mut seen = 0u64;
        while !self.quit.load(Ordering::Relaxed) {
            let token = self
                .credential
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let (k, base) = self.servers.base();
            let r = self
                .http
                .get(&format!("{base}{}", self.path))
                .query("seen", &seen.to_string())
                .query("timeout_ms", &DEFAULT_WAIT_MS.to_string())
                .set("Authorization", &format!("Bearer {token}"))
                .set(PROTOCOL_HEADER, &PROTOCOL.to_string())
                .call();
            match r.map(|resp| resp.into_json::<OrdersChanged>()) {
                Ok(Ok(c)) => {
                    if c.seq != seen {
                        seen = c.seq;
                        if self.wake.send(()).is_err() {
                            return; // the agent is stopping
                        }
                    }
                }
                Err(ureq::Error::Status(404 | 405, _)) => {
                    // A server without pushed orders (or a proxy while it
                    // restarts): heartbeats carry the orders; try again
                    // later.
                    seen = 0;
                    std::thread::sleep(Duration::from_secs(30));
                }
                // The server restarting, a credential being renewed, a
                // bad answer: the heartbeats go on meanwhile, and the next
                // answer (`seen` 0) says to heartbeat at once. A replica
                // that does not lead (503) or is gone: try the next.
                Err(e) if Servers::moves_on(&e) => {
                    self.servers.failed(k);
                    seen = 0;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(Err(_)) | Err(_) => {
                    seen = 0;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Sleep `d` unless `stop` is set meanwhile; true if it was.
fn sleep_or_stop(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    stop.load(Ordering::Relaxed)
}

/// Labels from `rack=r1,zone=z1`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for kv in s.split(',').filter(|x| !x.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--labels {s:?}: expected KEY=VALUE,KEY=VALUE"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// The default node name: the host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// Default work dir.
pub fn default_work_dir() -> PathBuf {
    Path::new("suanli-agent").to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_specs_parse() {
        assert_eq!(
            GpuSpec::parse("fake:8xA100-80G"),
            Ok(GpuSpec::Fake {
                count: 8,
                model: "A100-80G".into(),
                devices: None
            })
        );
        assert_eq!(
            GpuSpec::parse("fake:2xH100,devices=/tmp/gpu"),
            Ok(GpuSpec::Fake {
                count: 2,
                model: "H100".into(),
                devices: Some("/tmp/gpu".into())
            })
        );
        assert!(GpuSpec::parse("fake:2xH100,devices=gpu").is_err());
        assert!(GpuSpec::parse("fake:2xH100,dev=/gpu").is_err());
        assert_eq!(GpuSpec::parse("none"), Ok(GpuSpec::None));
        assert!(GpuSpec::parse("fake:0xA100").is_err());
        assert!(GpuSpec::parse("fake:8").is_err());
        assert!(GpuSpec::parse("lots")
            .unwrap_err()
            .contains("fake:COUNTxMODEL"));
    }

    #[test]
    fn nvml_names_become_model_names() {
        assert_eq!(model_name("NVIDIA A100-SXM4-80GB"), "A100-SXM4-80GB");
        assert_eq!(model_name("NVIDIA GeForce RTX 4090"), "GeForce-RTX-4090");
    }

    #[test]
    fn without_a_driver_auto_finds_no_gpus() {
        // This machine has no NVIDIA driver: NVML fails to load, which is
        // "no GPUs", not an error.
        if std::path::Path::new("/proc/driver/nvidia").exists() {
            eprintln!("skipped: an NVIDIA driver is present");
            return;
        }
        assert_eq!(discover_gpus(&GpuSpec::Auto), Ok(Vec::new()));
    }

    #[test]
    fn the_environment_names_devices_rank_and_master() {
        let a = suanli_api::Assignment {
            job: 7,
            run: 2,
            task: 1,
            tasks: 2,
            command: vec!["x".into()],
            env: [
                ("RANK".to_string(), "99".to_string()),
                ("LR".to_string(), "0.1".to_string()),
            ]
            .into(),
            workdir: String::new(),
            max_runtime_s: None,
            cpu_milli: 0,
            memory_mib: 0,
            gpus: vec![2, 3],
            gpu_share: None,
            master_addr: "10.0.0.5".into(),
            replica: None,
        };
        std::env::set_var("SUANLI_AGENT_TEST_SECRET", "x");
        let e = task::environment(&a, std::path::Path::new("/w/task-1"), false);
        assert_eq!(e["HOME"], "/w/task-1");
        assert_eq!(e["PATH"], sandbox::TASK_PATH);
        assert!(
            !e.contains_key("SUANLI_AGENT_TEST_SECRET"),
            "nothing of the agent's environment"
        );
        assert_eq!(e["CUDA_VISIBLE_DEVICES"], "2,3");
        assert_eq!(e["SUANLI_GPUS"], "2,3");
        // With the other GPUs' device files closed to it, CUDA sees two
        // devices, numbered from 0.
        let f = task::environment(&a, std::path::Path::new("/w/task-1"), true);
        assert_eq!(f["CUDA_VISIBLE_DEVICES"], "0,1");
        assert_eq!(f["CUDA_DEVICE_ORDER"], "PCI_BUS_ID");
        assert_eq!(f["SUANLI_GPUS"], "2,3");
        assert_eq!(e["RANK"], "1", "Suanli's variables win over the job's");
        assert_eq!(e["WORLD_SIZE"], "2");
        assert_eq!(e["MASTER_ADDR"], "10.0.0.5");
        assert_eq!(e["LR"], "0.1");
        assert_eq!(e["SUANLI_JOB_ID"], "7");
        assert!(!e.contains_key("SUANLI_GPU_SHARE"));
        assert_ne!(task::master_port(7, 2), task::master_port(8, 2));
        assert!(!e.contains_key("PORT") && !e.contains_key("SUANLI_REPLICA_KEY"));
        // A model service's replica learns its port and its secret, which
        // win over variables of the same name in the spec.
        let mut r = a.clone();
        r.env.insert("PORT".into(), "1".into());
        r.replica = Some(suanli_api::ReplicaOrder {
            service: "chat".into(),
            port: suanli_api::replica_port(7, 2),
            key: "sl_secret".into(),
        });
        let e = task::environment(&r, std::path::Path::new("/w/task-1"), false);
        assert_eq!(e["PORT"], suanli_api::replica_port(7, 2).to_string());
        assert_eq!(e["SUANLI_REPLICA_KEY"], "sl_secret");
        assert_eq!(e["SUANLI_SERVICE"], "chat");
    }

    #[test]
    fn labels_parse() {
        let l = parse_labels("rack=r1,zone=z1").unwrap();
        assert_eq!(l["rack"], "r1");
        assert!(parse_labels("rack").is_err());
    }
}
