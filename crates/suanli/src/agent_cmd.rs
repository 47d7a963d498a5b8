//! `suanli agent` (the node agent) and `suanli up` (a whole pool on this
//! machine: a server and N agents as child processes, a demo tenant, and
//! env files for the CLI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use suanli_api::{NewTenant, NewToken, ScalingUpdate, ServiceCreate, TokenRequest};

use crate::{failure, usage, CliError};

/// A flag that SIGINT and SIGTERM set (through `signal-hook`, whose handler
/// only stores to the atomic).
fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| failure(format!("cannot handle signal {sig}: {e}")))?;
    }
    Ok(stop)
}

#[derive(Args)]
pub struct AgentArgs {
    /// The server's URL, e.g. http://10.0.0.1:8420, or several replicas'
    /// URLs separated by commas (the agent moves to the next when one
    /// cannot be reached or does not run the scheduling loop).
    #[arg(long)]
    server: String,
    /// A file holding a join token (`suanli token create --agent`), used to
    /// register when this node has no saved credential
    /// (`WORK_DIR/node.token`). Also `SUANLI_JOIN_TOKEN`.
    #[arg(long, value_name = "FILE")]
    join_token_file: Option<PathBuf>,
    /// The join token itself (visible to every user of this machine in
    /// `ps`: prefer --join-token-file or SUANLI_JOIN_TOKEN).
    #[arg(long)]
    join_token: Option<String>,
    /// Node name [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Labels, e.g. rack=r1,zone=z1 (`rack` groups gangs).
    #[arg(long, default_value = "")]
    labels: String,
    /// GPUs: auto (NVML), none, or fake:COUNTxMODEL (e.g. fake:8xA100-80G).
    #[arg(long, default_value = "auto")]
    gpus: String,
    /// Where tasks run and their logs are written.
    #[arg(long, default_value = "suanli-agent")]
    work_dir: PathBuf,
    /// Address other nodes reach this one at (MASTER_ADDR of gangs).
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// CPU cores to offer [default: all of this machine's].
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory to offer, GiB [default: all of this machine's].
    #[arg(long)]
    memory_gib: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL when stopping a task.
    #[arg(long, default_value_t = 10.0)]
    grace_s: f64,
    /// Task isolation: auto (full when the agent runs as root, else off
    /// with a warning), full (refuse to start without it), off.
    #[arg(long, default_value = "auto")]
    sandbox: String,
    /// PEM certificates to trust for an HTTPS server (a private CA or a
    /// self-signed server) [env: SUANLI_CA; default: the system's roots].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// User ids handed to tasks, one per running task (full sandbox).
    #[arg(long, default_value = "200000-201023", value_name = "START-END")]
    task_uids: String,
    /// Learn of work only at the periodic heartbeat, instead of holding a
    /// wait call the server answers as soon as this node has new orders
    /// (for comparison: `suanli bench start-latency`).
    #[arg(long)]
    poll_only: bool,
}

/// The join token: from --join-token-file, --join-token or
/// `SUANLI_JOIN_TOKEN` (then removed from this process's environment, so
/// nothing the agent starts inherits it); none is fine when the node has a
/// saved credential.
fn join_token(a: &AgentArgs) -> Result<Option<String>, CliError> {
    let from_env = std::env::var("SUANLI_JOIN_TOKEN").ok();
    // SAFETY: called before the agent starts any thread or process.
    unsafe { std::env::remove_var("SUANLI_JOIN_TOKEN") };
    let t = match (&a.join_token_file, &a.join_token) {
        (Some(_), Some(_)) => {
            return Err(usage("give --join-token-file or --join-token, not both"))
        }
        (Some(f), None) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| usage(format!("--join-token-file {}: {e}", f.display())))?,
        ),
        (None, Some(t)) => Some(t.clone()),
        (None, None) => from_env,
    };
    let t = t.map(|t| t.trim().to_string());
    if t.as_deref() == Some("") {
        return Err(usage("the join token is empty"));
    }
    Ok(t)
}

pub fn agent(a: AgentArgs) -> Result<(), CliError> {
    let spec = suanli_agent::GpuSpec::parse(&a.gpus).map_err(usage)?;
    let labels = suanli_agent::parse_labels(&a.labels).map_err(usage)?;
    if !(a.grace_s.is_finite() && a.grace_s >= 0.0) {
        return Err(usage("--grace-s must be >= 0"));
    }
    let gpus = suanli_agent::discover_gpus(&spec).map_err(failure)?;
    let (cpu, mem) = suanli_agent::discover_host();
    let cpu_milli = match a.cpus {
        Some(c) if c.is_finite() && c > 0.0 => (c * 1000.0).round() as u64,
        Some(c) => return Err(usage(format!("--cpus must be > 0 (found {c})"))),
        None => cpu,
    };
    let memory_mib = match a.memory_gib {
        Some(g) if g.is_finite() && g > 0.0 => (g * 1024.0).round() as u64,
        Some(g) => return Err(usage(format!("--memory-gib must be > 0 (found {g})"))),
        None => mem,
    };
    let join_token = join_token(&a)?;
    let task_uids = suanli_agent::sandbox::parse_uids(&a.task_uids).map_err(usage)?;
    let stop = stop_flag()?;
    suanli_agent::run(
        suanli_agent::AgentConfig {
            server: a.server,
            join_token,
            name: a.name.unwrap_or_else(suanli_agent::hostname),
            addr: a.addr,
            labels,
            gpus,
            cpu_milli,
            memory_mib,
            work_dir: a.work_dir,
            grace: Duration::from_secs_f64(a.grace_s),
            sandbox: a.sandbox,
            task_uids,
            ca: a
                .ca
                .or_else(|| std::env::var_os("SUANLI_CA").map(PathBuf::from)),
            push: !a.poll_only,
        },
        &stop,
    )
    .map_err(failure)
}

#[derive(Args)]
pub struct UpArgs {
    /// Local agents to start.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// GPUs each agent declares.
    #[arg(long, default_value = "fake:8xA100-80G")]
    gpus_per_agent: String,
    /// Data directory of the server, the agents and the env files.
    #[arg(long, default_value = "suanli-data")]
    data_dir: PathBuf,
    /// Address of the server.
    #[arg(long, default_value = "127.0.0.1:8420")]
    listen: String,
    /// Run the pool on this PostgreSQL database (env SUANLI_STORE), e.g.
    /// postgres://USER:PASSWORD@HOST:5432/DB [default: SQLite in the data dir].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Price book for bills and the economics report [default: the example
    /// book, written to DATA_DIR/prices.toml].
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Do not create the demo model service (`chat`, model `demo`: a
    /// `suanli mock-llm` replica on a quarter of a GPU, scaled from zero).
    #[arg(long)]
    no_demo_service: bool,
}

/// The example price book (examples/prices.toml), for `suanli up`.
const EXAMPLE_PRICES: &str = include_str!("../../../examples/prices.toml");

/// Children stopped (SIGTERM, then SIGKILL) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            // SAFETY: sending a signal touches no memory of ours.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        for c in self.0.iter_mut().rev() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

/// POST as the admin; `None` if it already exists (409).
fn post<B: Serialize, T: serde::de::DeserializeOwned>(
    url: &str,
    token: &str,
    body: &B,
) -> Result<Option<T>, CliError> {
    match ureq::post(url)
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body)
    {
        Ok(r) => r
            .into_json()
            .map(Some)
            .map_err(|e| failure(format!("{url}: {e}"))),
        Err(ureq::Error::Status(409, _)) => Ok(None),
        Err(e) => Err(failure(format!("{url}: {e}"))),
    }
}

/// `DATA_DIR/up-tokens.json`: the agents' and the demo tenant's tokens.
#[derive(Serialize, Deserialize)]
struct UpTokens {
    agent: String,
    demo: String,
}

/// Write a file only its owner can read (mode 0600): it holds a token.
fn write_secret(path: &Path, text: &str) -> Result<(), CliError> {
    suanli_agent::write_secret(path, text).map_err(|e| failure(format!("{}: {e}", path.display())))
}

fn write_env(path: &Path, server: &str, token: &str) -> Result<(), CliError> {
    write_secret(
        path,
        &format!("export SUANLI_SERVER={server}\nexport SUANLI_TOKEN={token}\n"),
    )
}

/// A path of this binary that a sandboxed task can run. Tasks of a root
/// agent run as ids of their own, with a private `/tmp` and `/dev/shm`, and
/// may not enter the directory the binary is in: as root, the binary is
/// copied to [`UP_BIN_DIR`] (root's own, 0755, checked not to be a link
/// nor writable by anyone else, down to `/`; the copy is written to a new
/// file, never through a link, then renamed into place). A non-root agent
/// runs tasks as its own user, who can run the binary where it is.
fn task_visible(exe: &Path) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(exe.to_path_buf());
    }
    let dir = Path::new(UP_BIN_DIR);
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    for d in dir.ancestors() {
        let m = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{}: not a directory of root's that only root may write to",
                d.display()
            ));
        }
    }
    let tmp = dir.join(format!(
        ".suanli.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let copy = || -> std::io::Result<()> {
        let mut from = std::fs::File::open(exe)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.flush()?;
        to.sync_all()?;
        std::fs::rename(&tmp, dir.join("suanli"))
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot copy {} to {}: {e}", exe.display(), dir.display())
    })?;
    Ok(dir.join("suanli"))
}

/// Where `up` (as root) puts the binary its demo service's replicas run.
const UP_BIN_DIR: &str = "/var/lib/suanli-up-bin";

/// Start a server and `--agents` agents, create the demo tenant, print how
/// to use them, and wait for Ctrl-C or SIGTERM.
pub fn up(a: UpArgs) -> Result<(), CliError> {
    suanli_agent::GpuSpec::parse(&a.gpus_per_agent).map_err(usage)?;
    if a.agents > 64 {
        return Err(usage("--agents is at most 64"));
    }
    let stop = stop_flag()?;
    let exe = std::env::current_exe().map_err(|e| failure(e.to_string()))?;
    std::fs::create_dir_all(&a.data_dir)
        .map_err(|e| failure(format!("{}: {e}", a.data_dir.display())))?;
    let dir = std::fs::canonicalize(&a.data_dir).map_err(|e| failure(e.to_string()))?;
    // A local pool: agents report every second, and are down after 10 s.
    let conf = dir.join("up-server.toml");
    let prices = match &a.prices {
        Some(p) => {
            std::fs::canonicalize(p).map_err(|e| usage(format!("--prices {}: {e}", p.display())))?
        }
        None => {
            let p = dir.join("prices.toml");
            if !p.exists() {
                std::fs::write(&p, EXAMPLE_PRICES)
                    .map_err(|e| failure(format!("{}: {e}", p.display())))?;
            }
            p
        }
    };
    std::fs::write(
        &conf,
        format!(
            "prices = {}\n[agents]\nheartbeat_interval_s = 1\nlease_s = 10\n",
            // A TOML string literal, whatever the path holds.
            toml::Value::String(prices.display().to_string())
        ),
    )
    .map_err(|e| failure(format!("{}: {e}", conf.display())))?;
    let mut server = Command::new(&exe);
    server
        .args(["server", "--listen", &a.listen, "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(&dir);
    // Through the environment: a password in the arguments shows in `ps`.
    if let Some(url) = a.store.or_else(|| std::env::var("SUANLI_STORE").ok()) {
        server.env("SUANLI_STORE", url);
    }
    let mut server = server
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failure(format!("cannot start the server: {e}")))?;
    let mut lines = BufReader::new(server.stderr.take().expect("piped")).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(l)) => {
                eprintln!("{l}");
                if let Some(x) = l.strip_prefix("listening on ") {
                    break x.to_string();
                }
            }
            _ => {
                let _ = server.wait();
                return Err(failure("the server stopped before listening (see above)"));
            }
        }
    };
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            eprintln!("{l}");
        }
    });
    let mut children = Children(vec![server]);
    let url = format!("http://{addr}");
    let admin_path = dir.join("admin.token");
    let admin = match std::fs::read_to_string(&admin_path) {
        Ok(t) => t.trim().to_string(),
        // The store had an admin before this data dir (another `up`'s
        // database): its token is elsewhere.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(failure(format!(
                "{}: none here, and the store already has an admin (it was set up from another \
                 data dir): use that --data-dir, or make one here with `suanli server \
                 --reset-admin --data-dir {} --store URL`",
                admin_path.display(),
                dir.display()
            )));
        }
        Err(e) => return Err(failure(format!("{}: {e}", admin_path.display()))),
    };
    // Tokens for the agents and the demo tenant are created once and kept.
    let tokens = dir.join("up-tokens.json");
    let saved: Option<UpTokens> = std::fs::read_to_string(&tokens)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let (agent_tok, demo_tok) = match saved {
        Some(t) => (t.agent, t.demo),
        None => {
            let tenant = NewTenant {
                name: "demo".to_string(),
                weight: None,
            };
            post::<_, serde::de::IgnoredAny>(&format!("{url}/v1/tenants"), &admin, &tenant)?;
            let token = |scope: &str, tenant: Option<&str>| -> Result<String, CliError> {
                let body = TokenRequest {
                    scope: scope.to_string(),
                    tenant: tenant.map(str::to_string),
                    node: None,
                    name: Some("up".to_string()),
                };
                let t: Option<NewToken> = post(&format!("{url}/v1/tokens"), &admin, &body)?;
                t.map(|t| t.token)
                    .ok_or_else(|| failure("the server refused a new token"))
            };
            let saved = UpTokens {
                agent: token("agent", None)?,
                demo: token("tenant", Some("demo"))?,
            };
            let body = serde_json::to_string(&saved).expect("tokens serialise");
            write_secret(&tokens, &body)?;
            (saved.agent, saved.demo)
        }
    };
    for i in 0..a.agents {
        let name = format!("local-{i}");
        let log = std::fs::File::create(dir.join(format!("{name}.log")))
            .map_err(|e| failure(e.to_string()))?;
        let c = Command::new(&exe)
            // The join token through the environment (not visible in
            // `ps`; the agent removes it from its own): each agent
            // registers and keeps its own node credential.
            .env("SUANLI_JOIN_TOKEN", &agent_tok)
            .args(["agent", "--server", &url, "--name", &name])
            .args([
                "--gpus",
                &a.gpus_per_agent,
                "--cpus",
                "32",
                "--memory-gib",
                "256",
            ])
            .args(["--grace-s", "5", "--labels", "rack=local", "--work-dir"])
            .arg(dir.join("agents").join(&name))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| failure(format!("cannot start agent {name}: {e}")))?;
        children.0.push(c);
    }
    write_env(&dir.join("env"), &url, &demo_tok)?;
    write_env(&dir.join("admin.env"), &url, &admin)?;
    let demo_bin = if a.no_demo_service {
        None
    } else {
        match task_visible(&exe) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("suanli up: no demo model service: {e}");
                None
            }
        }
    };
    if let Some(bin) = &demo_bin {
        let svc = ServiceCreate {
            name: "chat".to_string(),
            model: "demo".to_string(),
            command: vec![
                bin.display().to_string(),
                "mock-llm".to_string(),
                "--model".to_string(),
                "demo".to_string(),
            ],
            gpu_share: Some(0.25),
            scaling: ScalingUpdate {
                min: Some(0),
                max: Some(2),
                idle_s: Some(300),
                ..ScalingUpdate::default()
            },
            ..ServiceCreate::default()
        };
        // Already there (a restart on the same data dir): kept as it is.
        post::<_, serde::de::IgnoredAny>(&format!("{url}/v1/services"), &demo_tok, &svc)?;
    }
    let d = dir.display();
    let month = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        suanli_billing::month_of(now)
    };
    println!(
        "Suanli is up: {url} with {} agents ({} each).",
        a.agents, a.gpus_per_agent
    );
    println!("  admin token:   {}", admin_path.display());
    println!("  tenant 'demo': source {d}/env        (admin: source {d}/admin.env)");
    println!("  agent logs:    {d}/local-*.log");
    let cli = exe.display();
    println!("Try:");
    println!("  source {d}/env");
    println!(
        "  {cli} submit --gpus 1 --name hello -- sh -c 'echo hello from GPU $CUDA_VISIBLE_DEVICES'"
    );
    println!("  {cli} queue --all; {cli} logs 1 --follow");
    println!("  {cli} bill --period {month}");
    println!("  (source {d}/admin.env && {cli} report economics --period {month})");
    if demo_bin.is_some() {
        println!(
            "  curl -s $SUANLI_SERVER/v1/chat/completions -H \"Authorization: Bearer $SUANLI_TOKEN\" \
             -H 'Content-Type: application/json' \
             -d '{{\"model\":\"demo\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'"
        );
        println!(
            "  {cli} service show chat   (the demo model service: scales from zero, bills tokens)"
        );
    }
    println!("  prices: {}", prices.display());
    println!("Ctrl-C stops everything.");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(s)) = children.0[0].try_wait() {
            return Err(failure(format!("the server stopped: {s}")));
        }
    }
    eprintln!("stopping...");
    drop(children);
    Ok(())
}
