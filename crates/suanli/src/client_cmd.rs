//! The CLI client of the control plane: `submit`, `queue`, `job show`,
//! `cancel`, `tenant`, `token`. The server and token come from `--server` /
//! `--token`, else `SUANLI_SERVER` / `SUANLI_TOKEN`, else
//! `~/.config/suanli/config.toml` (`server = "..."`, `token = "..."`).
//!
//! Exit codes: 0 success; 1 the server could not be reached or failed; 2 an
//! invalid command line; 3 the server refused the request (4xx: unknown job,
//! quota, permission, validation), with its problem detail printed.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::{failure, usage, CliError};

#[derive(Args, Clone)]
pub struct Conn {
    /// Server URL (env SUANLI_SERVER; default from ~/.config/suanli/config.toml).
    #[arg(long, global = true)]
    server: Option<String>,
    /// API token (env SUANLI_TOKEN; default from ~/.config/suanli/config.toml).
    #[arg(long, global = true)]
    token: Option<String>,
}

fn config_value(key: &str) -> Option<String> {
    let home = std::env::var_os("HOME")?;
    let p = std::path::Path::new(&home).join(".config/suanli/config.toml");
    let text = std::fs::read_to_string(p).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

/// A problem document from the server as an error: exit code 3 for a
/// refusal (4xx), 1 for a server failure; its detail and field are shown.
fn refused(code: u16, r: ureq::Response) -> CliError {
    let v: Value = r.into_json().unwrap_or(Value::Null);
    let detail = v["detail"].as_str().unwrap_or("request failed");
    let field = v["field"]
        .as_str()
        .map_or(String::new(), |f| format!(" (field {f})"));
    let msg = format!("server: {code} {detail}{field}");
    if (400..500).contains(&code) {
        CliError { code: 3, msg }
    } else {
        failure(msg)
    }
}

impl Conn {
    fn resolve(&self) -> Result<(String, String), CliError> {
        let server = self
            .server
            .clone()
            .or_else(|| std::env::var("SUANLI_SERVER").ok())
            .or_else(|| config_value("server"))
            .ok_or_else(|| usage("no server: pass --server URL or set SUANLI_SERVER"))?;
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("SUANLI_TOKEN").ok())
            .or_else(|| config_value("token"))
            .ok_or_else(|| usage("no token: pass --token T or set SUANLI_TOKEN"))?;
        Ok((server.trim_end_matches('/').to_string(), token))
    }

    /// GET raw bytes; returns them with the `x-next-offset` and
    /// `x-job-state` headers.
    fn get_bytes(&self, path: &str) -> Result<(Vec<u8>, u64, String), CliError> {
        let (server, token) = self.resolve()?;
        let url = format!("{server}{path}");
        match ureq::get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(r) => {
                let next = r
                    .header("x-next-offset")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let state = r.header("x-job-state").unwrap_or("").to_string();
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut buf)
                    .map_err(|e| failure(format!("{url}: {e}")))?;
                Ok((buf, next, state))
            }
            Err(ureq::Error::Status(code, r)) => Err(refused(code, r)),
            Err(e) => Err(failure(format!("cannot reach {server}: {e}"))),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let (server, token) = self.resolve()?;
        let url = format!("{server}{path}");
        let req = ureq::request(method, &url).set("Authorization", &format!("Bearer {token}"));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => {
                if r.status() == 204 {
                    return Ok(Value::Null);
                }
                r.into_json::<Value>()
                    .map_err(|e| failure(format!("{url}: unreadable response: {e}")))
            }
            Err(ureq::Error::Status(code, r)) => Err(refused(code, r)),
            Err(e) => Err(failure(format!("cannot reach {server}: {e}"))),
        }
    }
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    conn: Conn,
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
    #[arg(long, default_value = "on-demand")]
    class: String,
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

/// `90m` → 5400 s; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<u64, CliError> {
    let bad = || {
        usage(format!(
            "--time {s:?}: expected seconds or a number with s, m, h or d"
        ))
    };
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        Some('d') => (&t[..t.len() - 1], 86400.0),
        _ => (t, 1.0),
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = (x * mult).round();
    if !(secs.is_finite() && secs >= 1.0) {
        return Err(bad());
    }
    Ok(secs as u64)
}

/// `16G` → 16384 MiB; a bare number is MiB.
pub fn parse_mem(s: &str) -> Result<u64, CliError> {
    let bad = || {
        usage(format!(
            "--mem {s:?}: expected MiB or a number with K, M, G or T"
        ))
    };
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1.0 / 1024.0),
        Some('M' | 'm') => (&t[..t.len() - 1], 1.0),
        Some('G' | 'g') => (&t[..t.len() - 1], 1024.0),
        Some('T' | 't') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    let mib = x * mult;
    if !(mib.is_finite() && mib >= 0.0 && mib <= (1u64 << 30) as f64) {
        return Err(bad());
    }
    Ok(mib.ceil() as u64)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON"));
}

pub fn submit(a: SubmitArgs) -> Result<(), CliError> {
    if !(a.cpu.is_finite() && a.cpu >= 0.0) {
        return Err(usage(format!("--cpu must be >= 0, found {}", a.cpu)));
    }
    let mut body = json!({
        "command": a.command,
        "tasks": a.tasks,
        "cpu_milli": (a.cpu * 1000.0).round() as i64,
        "memory_mib": parse_mem(&a.mem)?,
        "class": a.class,
    });
    if let Some(g) = a.gpus {
        body["gpus"] = json!(g);
    }
    if let Some(s) = a.gpu_share {
        body["gpu_share"] = json!(s);
    }
    if let Some(m) = &a.gpu_model {
        body["gpu_models"] = json!(m.split(',').map(str::trim).collect::<Vec<_>>());
    }
    if let Some(n) = &a.name {
        body["name"] = json!(n);
    }
    if !a.env.is_empty() {
        let mut env = serde_json::Map::new();
        for kv in &a.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| usage(format!("--env {kv:?}: expected NAME=VALUE")))?;
            env.insert(k.to_string(), json!(v));
        }
        body["env"] = Value::Object(env);
    }
    if let Some(w) = &a.workdir {
        body["workdir"] = json!(w);
    }
    if let Some(t) = &a.time {
        body["max_runtime_s"] = json!(parse_duration(t)?);
    }
    if let Some(r) = a.retries {
        body["retries"] = json!(r);
    }
    let v = a.conn.call("POST", "/v1/jobs", Some(body))?;
    if a.json {
        print_json(&v);
    } else {
        println!("submitted job {}", v["id"]);
    }
    Ok(())
}

#[derive(Args)]
pub struct QueueArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only jobs in this state (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED,
    /// PREEMPTED) [default: PENDING and RUNNING].
    #[arg(long)]
    state: Option<String>,
    /// Every job, whatever its state.
    #[arg(long, conflicts_with = "state")]
    all: bool,
    #[arg(long)]
    json: bool,
}

fn gpus_of(j: &Value) -> String {
    let n = j["num_gpu"].as_i64().unwrap_or(0);
    let m = j["gpu_milli"].as_i64().unwrap_or(0);
    if n == 0 {
        "-".into()
    } else if m < 1000 {
        format!("{:.2}", m as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

fn list_jobs(conn: &Conn, state: Option<&str>) -> Result<Vec<Value>, CliError> {
    let mut all = Vec::new();
    let mut cursor = 0i64;
    loop {
        let mut path = format!("/v1/jobs?limit=1000&cursor={cursor}");
        if let Some(s) = state {
            path.push_str(&format!("&state={s}"));
        }
        let v = conn.call("GET", &path, None)?;
        all.extend(v["jobs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_i64() {
            Some(c) => cursor = c,
            None => break,
        }
    }
    Ok(all)
}

pub fn queue(a: QueueArgs) -> Result<(), CliError> {
    let mut all = match (&a.state, a.all) {
        (Some(s), _) => list_jobs(&a.conn, Some(s))?,
        (None, true) => list_jobs(&a.conn, None)?,
        (None, false) => {
            let mut v = list_jobs(&a.conn, Some("RUNNING"))?;
            v.extend(list_jobs(&a.conn, Some("PENDING"))?);
            v
        }
    };
    all.sort_by_key(|j| j["id"].as_i64());
    if a.json {
        print_json(&json!({ "jobs": all }));
        return Ok(());
    }
    println!(
        "{:>8} {:<12} {:<20} {:<10} {:>5} {:>6} {:<10} REASON",
        "ID", "TENANT", "NAME", "STATE", "TASKS", "GPUS", "CLASS"
    );
    for j in &all {
        println!(
            "{:>8} {:<12} {:<20} {:<10} {:>5} {:>6} {:<10} {}",
            j["id"].to_string(),
            j["tenant"].as_str().unwrap_or(""),
            j["name"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["tasks"].to_string(),
            gpus_of(j),
            j["class"].as_str().unwrap_or(""),
            j["reason"].as_str().unwrap_or("")
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

pub fn job(c: JobCmd) -> Result<(), CliError> {
    let JobCmd::Show(a) = c;
    let j = a.conn.call("GET", &format!("/v1/jobs/{}", a.id), None)?;
    let ev = a
        .conn
        .call("GET", &format!("/v1/jobs/{}/events", a.id), None)?;
    if a.json {
        let mut j = j;
        j["events"] = ev["events"].clone();
        print_json(&j);
        return Ok(());
    }
    for k in [
        "id",
        "tenant",
        "name",
        "state",
        "class",
        "tasks",
        "cpu_milli",
        "memory_mib",
    ] {
        println!("{k:<12} {}", j[k]);
    }
    println!("{:<12} {}", "gpus", gpus_of(&j));
    println!("{:<12} {}", "command", j["command"]);
    if let Some(r) = j["reason"].as_str() {
        println!("{:<12} {r}", "reason");
    }
    let tasks = j["task_history"].as_array().cloned().unwrap_or_default();
    if !tasks.is_empty() {
        println!("tasks:");
        for t in tasks {
            println!(
                "  attempt {} task {} on {} gpus {} {} {}",
                t["run"],
                t["index"],
                t["node"].as_str().unwrap_or(""),
                t["gpus"],
                t["state"].as_str().unwrap_or(""),
                t["reason"].as_str().unwrap_or("")
            );
        }
    }
    println!("events:");
    for e in ev["events"].as_array().cloned().unwrap_or_default() {
        println!(
            "  {} {} {}",
            e["at_ms"],
            e["kind"].as_str().unwrap_or(""),
            e["detail"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub fn cancel(a: JobIdArgs) -> Result<(), CliError> {
    let v = a.conn.call(
        "POST",
        &format!("/v1/jobs/{}/cancel", a.id),
        Some(json!({})),
    )?;
    if a.json {
        print_json(&v);
    } else {
        println!("job {} {}", v["id"], v["state"].as_str().unwrap_or(""));
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (admin).
    Create {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        #[arg(long)]
        json: bool,
    },
    /// Set a tenant's quota on one GPU model, in GPUs (admin).
    SetQuota {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        guaranteed: f64,
        /// Omit for no maximum.
        #[arg(long)]
        max: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// List tenants (admin).
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
}

pub fn tenant(c: TenantCmd) -> Result<(), CliError> {
    match c {
        TenantCmd::Create {
            conn,
            name,
            weight,
            json: as_json,
        } => {
            let v = conn.call(
                "POST",
                "/v1/tenants",
                Some(json!({"name": name, "weight": weight})),
            )?;
            if as_json {
                print_json(&v);
            } else {
                println!("created tenant {}", v["name"].as_str().unwrap_or(""));
            }
        }
        TenantCmd::SetQuota {
            conn,
            name,
            model,
            guaranteed,
            max,
            json: as_json,
        } => {
            let body = json!({"guaranteed": guaranteed, "max": max});
            let v = conn.call(
                "PUT",
                &format!("/v1/tenants/{name}/quotas/{model}"),
                Some(body),
            )?;
            if as_json {
                print_json(&v);
            } else {
                let max = max.map_or("unlimited".to_string(), |m| m.to_string());
                println!("tenant {name}: {model} guaranteed {guaranteed}, max {max}");
            }
        }
        TenantCmd::List {
            conn,
            json: as_json,
        } => {
            let v = conn.call("GET", "/v1/tenants", None)?;
            if as_json {
                print_json(&v);
            } else {
                println!(
                    "{:>6} {:<20} {:>7}  QUOTAS (model guaranteed/max GPUs)",
                    "ID", "NAME", "WEIGHT"
                );
                for t in v["tenants"].as_array().cloned().unwrap_or_default() {
                    let quotas: Vec<String> = t["quotas"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|q| {
                            let max = q["max"].as_f64().map_or("-".to_string(), |m| m.to_string());
                            let model = q["gpu_model"].as_str().unwrap_or("");
                            format!("{model} {}/{max}", q["guaranteed"].as_f64().unwrap_or(0.0))
                        })
                        .collect();
                    println!(
                        "{:>6} {:<20} {:>7}  {}",
                        t["id"],
                        t["name"].as_str().unwrap_or(""),
                        t["weight"],
                        quotas.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Issue a token (admin): for a tenant, or an admin or agent token.
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, conflicts_with_all = ["admin", "agent"])]
        tenant: Option<String>,
        #[arg(long, conflicts_with = "agent")]
        admin: bool,
        #[arg(long)]
        agent: bool,
        #[arg(long)]
        name: Option<String>,
        /// Print `{"id", "token"}`.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (admin; secrets are never shown).
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id (admin).
    Revoke {
        #[command(flatten)]
        conn: Conn,
        id: i64,
    },
}

pub fn token(c: TokenCmd) -> Result<(), CliError> {
    match c {
        TokenCmd::Create {
            conn,
            tenant,
            admin,
            agent,
            name,
            json: as_json,
        } => {
            let mut body = match (tenant, admin, agent) {
                (Some(t), false, false) => json!({"scope": "tenant", "tenant": t}),
                (None, true, false) => json!({"scope": "admin"}),
                (None, false, true) => json!({"scope": "agent"}),
                _ => {
                    return Err(usage(
                        "token create needs one of --tenant NAME, --admin, --agent",
                    ))
                }
            };
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v = conn.call("POST", "/v1/tokens", Some(body))?;
            if as_json {
                print_json(&v);
            } else {
                println!("{}", v["token"].as_str().unwrap_or(""));
            }
        }
        TokenCmd::List {
            conn,
            json: as_json,
        } => {
            let v = conn.call("GET", "/v1/tokens", None)?;
            if as_json {
                print_json(&v);
            } else {
                println!(
                    "{:>6} {:<7} {:<16} {:<20} {:<8}",
                    "ID", "SCOPE", "TENANT", "NAME", "REVOKED"
                );
                for t in v["tokens"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:>6} {:<7} {:<16} {:<20} {:<8}",
                        t["id"],
                        t["scope"].as_str().unwrap_or(""),
                        t["tenant"].as_str().unwrap_or("-"),
                        t["name"].as_str().unwrap_or(""),
                        t["revoked"]
                    );
                }
            }
        }
        TokenCmd::Revoke { conn, id } => {
            conn.call("POST", &format!("/v1/tokens/{id}/revoke"), Some(json!({})))?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem("16G").unwrap(), 16_384);
        assert_eq!(parse_mem("512").unwrap(), 512);
        assert_eq!(parse_mem("1.5g").unwrap(), 1536);
        assert_eq!(parse_mem("1T").unwrap(), 1_048_576);
        assert!(parse_mem("-1G").is_err());
        assert!(parse_mem("lots").is_err());
    }
}

#[derive(Args)]
pub struct NodesArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<NodeCmd>,
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Stop placing new work on a node; its running tasks continue.
    Drain { name: String },
    /// Place work on a drained node again.
    Undrain { name: String },
}

/// `suanli nodes`: list the pool's nodes (admin); `nodes drain|undrain NAME`.
pub fn nodes(a: NodesArgs) -> Result<(), CliError> {
    if let Some(c) = a.cmd {
        let (verb, name) = match c {
            NodeCmd::Drain { name } => ("drain", name),
            NodeCmd::Undrain { name } => ("undrain", name),
        };
        let v = a
            .conn
            .call("POST", &format!("/v1/nodes/{name}/{verb}"), Some(json!({})))?;
        if a.json {
            print_json(&v);
        } else {
            println!(
                "{} {}",
                v["node"].as_str().unwrap_or(""),
                v["state"].as_str().unwrap_or("")
            );
        }
        return Ok(());
    }
    let v = a.conn.call("GET", "/v1/nodes", None)?;
    if a.json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:<14} {:>9} {:>9} {:>5} {:<10}",
        "NAME", "STATE", "GPU MODEL", "GPUS", "CPU", "JOBS", "HEARTBEAT"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
        let gpus = n["gpus"].as_i64().unwrap_or(0);
        let used = n["gpu_milli_allocated"].as_f64().unwrap_or(0.0) / 1000.0;
        let cpu = n["cpu_milli"].as_f64().unwrap_or(0.0) / 1000.0;
        let cpu_used = n["cpu_milli_allocated"].as_f64().unwrap_or(0.0) / 1000.0;
        let ago = (now - n["last_heartbeat_ms"].as_i64().unwrap_or(now)).max(0) / 1000;
        println!(
            "{:<20} {:<9} {:<14} {:>9} {:>9} {:>5} {}s ago",
            n["name"].as_str().unwrap_or(""),
            n["state"].as_str().unwrap_or(""),
            n["gpu_model"].as_str().unwrap_or("-"),
            format!("{used}/{gpus}"),
            format!("{cpu_used}/{cpu}"),
            n["jobs"].to_string(),
            ago
        );
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
    let stream = if a.stderr { "err" } else { "out" };
    let mut offset = 0u64;
    let mut out = std::io::stdout();
    let path = |offset: u64| {
        let mut p = format!(
            "/v1/jobs/{}/logs?task={}&stream={stream}&offset={offset}",
            a.id, a.task
        );
        if let Some(r) = a.run {
            p.push_str(&format!("&run={r}"));
        }
        p
    };
    let mut print = |data: &[u8]| {
        out.write_all(data)
            .and_then(|_| out.flush())
            .map_err(|e| failure(e.to_string()))
    };
    loop {
        let (data, next, state) = a.conn.get_bytes(&path(offset))?;
        print(&data)?;
        offset = next.max(offset);
        if !a.follow {
            return Ok(());
        }
        if data.is_empty() {
            if matches!(state.as_str(), "COMPLETED" | "FAILED" | "CANCELLED") {
                // The agent pushes the tail right after the exit: one last read.
                std::thread::sleep(std::time::Duration::from_millis(1500));
                let (data, _, _) = a.conn.get_bytes(&path(offset))?;
                return print(&data);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

#[derive(Args)]
pub struct BillArgs {
    #[command(flatten)]
    conn: Conn,
    /// A month, YYYY-MM (UTC).
    #[arg(long)]
    period: String,
    /// One tenant (admin; a tenant token sees only its own).
    #[arg(long)]
    tenant: Option<String>,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    format: String,
}

/// `suanli bill --period 2026-11`: invoices with line items and totals.
pub fn bill(a: BillArgs) -> Result<(), CliError> {
    if !["table", "csv", "json"].contains(&a.format.as_str()) {
        return Err(usage(format!(
            "--format must be table, csv or json (found {:?})",
            a.format
        )));
    }
    let mut path = format!("/v1/bills?period={}", a.period);
    if let Some(t) = &a.tenant {
        path.push_str(&format!("&tenant={t}"));
    }
    let v = a.conn.call("GET", &path, None)?;
    if a.format == "json" {
        print_json(&v);
        return Ok(());
    }
    let cur = v["currency"].as_str().unwrap_or("");
    let s = |x: &Value| x.as_str().map_or_else(|| x.to_string(), str::to_string);
    if a.format == "csv" {
        println!("tenant,resource,gpu_model,class,quantity,unit,unit_price,amount,currency");
    }
    for inv in v["invoices"].as_array().cloned().unwrap_or_default() {
        let tenant = s(&inv["tenant"]);
        if a.format == "table" {
            println!(
                "invoice: tenant {tenant}, period {} ({cur})",
                s(&v["period"])
            );
            println!(
                "  {:<8} {:<14} {:<11} {:>16} {:<10} {:>10} {:>12}",
                "RESOURCE", "GPU MODEL", "CLASS", "QUANTITY", "UNIT", "PRICE", "AMOUNT"
            );
        }
        for l in inv["lines"].as_array().cloned().unwrap_or_default() {
            let q: f64 = s(&l["quantity"]).parse().unwrap_or(0.0);
            let (model, class) = (
                l["gpu_model"].as_str().unwrap_or("-").to_string(),
                l["class"].as_str().unwrap_or("-").to_string(),
            );
            if a.format == "csv" {
                println!(
                    "{tenant},{},{model},{class},{},{},{},{},{cur}",
                    s(&l["resource"]),
                    s(&l["quantity"]),
                    s(&l["unit"]),
                    s(&l["unit_price"]),
                    s(&l["amount"])
                );
            } else {
                println!(
                    "  {:<8} {:<14} {:<11} {:>16.6} {:<10} {:>10} {:>12}",
                    s(&l["resource"]),
                    model,
                    class,
                    q,
                    s(&l["unit"]),
                    s(&l["unit_price"]),
                    s(&l["amount"])
                );
            }
        }
        if a.format == "table" {
            println!("  {:>89}", format!("total {} {cur}", s(&inv["total"])));
            if inv["unpriced_gpu_raw"].as_u64().unwrap_or(0) > 0 {
                println!(
                    "  note: some GPU usage has no price in the book (model or class missing)"
                );
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ReportCmd {
    /// The operator's economics for a month (admin): capacity and sold
    /// GPU-hours by model, utilisation, revenue, idle capacity at list price.
    Economics(EconomicsArgs),
}

#[derive(Args)]
pub struct EconomicsArgs {
    #[command(flatten)]
    conn: Conn,
    /// A month, YYYY-MM (UTC).
    #[arg(long)]
    period: String,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn report(c: ReportCmd) -> Result<(), CliError> {
    match c {
        ReportCmd::Economics(a) => economics(a),
    }
}

/// `suanli report economics --period 2026-11`.
fn economics(a: EconomicsArgs) -> Result<(), CliError> {
    if !["table", "csv", "json"].contains(&a.format.as_str()) {
        return Err(usage(format!(
            "--format must be table, csv or json (found {:?})",
            a.format
        )));
    }
    let v = a.conn.call(
        "GET",
        &format!("/v1/reports/economics?period={}", a.period),
        None,
    )?;
    if a.format == "json" {
        print_json(&v);
        return Ok(());
    }
    let s = |x: &Value| match x {
        Value::Null => "-".to_string(),
        Value::String(t) => t.clone(),
        x => x.to_string(),
    };
    // Hours are exact quotients: two decimals in the table.
    let h = |x: &Value| {
        s(x).parse::<f64>()
            .map_or_else(|_| s(x), |f| format!("{f:.2}"))
    };
    let cur = s(&v["currency"]);
    let fields = [
        "capacity_gpu_hours",
        "down_gpu_hours",
        "sold_gpu_hours",
        "utilisation_pct",
        "revenue",
        "idle_gpu_hours",
        "idle_value",
        "revenue_per_capacity_gpu_hour",
    ];
    let models = v["models"].as_array().cloned().unwrap_or_default();
    if a.format == "csv" {
        println!("gpu_model,{},currency", fields.join(","));
        for m in &models {
            let row: Vec<String> = fields.iter().map(|f| s(&m[*f])).collect();
            println!("{},{},{cur}", s(&m["gpu_model"]), row.join(","));
        }
        let mut total: Vec<String> = fields.iter().map(|f| s(&v[*f])).collect();
        total[4] = s(&v["revenue"]);
        println!("TOTAL,{},{cur}", total.join(","));
        return Ok(());
    }
    println!(
        "economics: period {} ({cur}), counted up to {} ms",
        s(&v["period"]),
        s(&v["now_ms"])
    );
    println!(
        "{:<14} {:>14} {:>10} {:>12} {:>7} {:>12} {:>12} {:>12} {:>10}",
        "GPU MODEL",
        "CAPACITY GPU-H",
        "DOWN GPU-H",
        "SOLD GPU-H",
        "UTIL %",
        "REVENUE",
        "IDLE GPU-H",
        "IDLE VALUE",
        "REV/CAP-H"
    );
    let row = |name: &str, m: &Value, revenue: &Value| {
        println!(
            "{:<14} {:>14} {:>10} {:>12} {:>7} {:>12} {:>12} {:>12} {:>10}",
            name,
            h(&m["capacity_gpu_hours"]),
            h(&m["down_gpu_hours"]),
            h(&m["sold_gpu_hours"]),
            s(&m["utilisation_pct"]),
            s(revenue),
            h(&m["idle_gpu_hours"]),
            s(&m["idle_value"]),
            s(&m["revenue_per_capacity_gpu_hour"])
        );
    };
    for m in &models {
        row(&s(&m["gpu_model"]), m, &m["revenue"]);
    }
    row("TOTAL", &v, &v["revenue"]);
    println!(
        "revenue {cur}: GPU {} + CPU and memory {} = {}; idle GPUs at list price: {}",
        s(&v["gpu_revenue"]),
        s(&v["other_revenue"]),
        s(&v["revenue"]),
        s(&v["idle_value"])
    );
    for m in &models {
        if h(&m["idle_unpriced_gpu_hours"]) != "0.00" {
            println!(
                "note: {} idle GPU-hours of {} have no list price (on-demand or guaranteed) in the book",
                h(&m["idle_unpriced_gpu_hours"]),
                s(&m["gpu_model"])
            );
        }
    }
    let invoices = v["invoices"].as_array().cloned().unwrap_or_default();
    if !invoices.is_empty() {
        let by: Vec<String> = invoices
            .iter()
            .map(|i| format!("{} {}", s(&i["tenant"]), s(&i["total"])))
            .collect();
        println!("by tenant: {}", by.join(", "));
    }
    Ok(())
}
