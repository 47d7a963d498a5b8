//! `service create|list|show|update|delete`: model services; `tenant
//! limits` sets a tenant's model API rate limits (in admin.rs's group).

use clap::{Args, Subcommand};
use suanli_api::{Class, ScalingUpdate, Service, ServiceCreate, ServiceList};

use super::output::{gpus_text, print_json};
use super::{parse_duration, parse_env, parse_mem, Conn};
use crate::{usage, CliError};

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Deploy a model server: suanli service create NAME --model M [--gpus N] ... -- CMD ARGS...
    /// (the command listens on $PORT and requires Authorization: Bearer $SUANLI_REPLICA_KEY).
    Create(CreateArgs),
    /// Your services (every tenant's for the admin).
    List(ListArgs),
    /// A service, its settings and its replicas.
    Show(NameArgs),
    /// Change a service's scaling or readiness settings.
    Update(UpdateArgs),
    /// Delete a service: its replicas stop and give their GPUs back.
    Delete(NameArgs),
}

/// Scaling and readiness flags, shared by create and update.
#[derive(Args)]
pub struct ScalingArgs {
    /// Replicas kept however idle (0: scale to zero) [create default: 0].
    #[arg(long)]
    min: Option<u32>,
    /// Replicas never exceeded [create default: 8].
    #[arg(long)]
    max: Option<u32>,
    /// Requests in flight per replica the autoscaler aims at [create default: 4].
    #[arg(long)]
    target_inflight: Option<f64>,
    /// A larger count is taken once wished this long (e.g. 30s) [create default: 0].
    #[arg(long, value_name = "DURATION")]
    up_delay: Option<String>,
    /// A smaller count is taken at the largest wish of this long [create default: 30s].
    #[arg(long, value_name = "DURATION")]
    down_delay: Option<String>,
    /// With --min 0: idle this long → zero replicas [create default: 2m].
    #[arg(long, value_name = "DURATION")]
    idle: Option<String>,
    /// The readiness probe's path (200 = ready) [create default: /health].
    #[arg(long)]
    ready_path: Option<String>,
    /// No probe before this long after a replica starts (model loading) [create default: 0].
    #[arg(long, value_name = "DURATION")]
    ready_delay: Option<String>,
    /// A replica not ready (or not answering) this long is replaced [create default: 10m].
    #[arg(long, value_name = "DURATION")]
    start_timeout: Option<String>,
}

impl ScalingArgs {
    fn update(&self) -> Result<ScalingUpdate, CliError> {
        let secs = |flag: &str, v: &Option<String>| -> Result<Option<u64>, CliError> {
            v.as_deref()
                .map(|s| {
                    parse_duration(s).map_err(|_| {
                        usage(format!(
                            "--{flag} {s:?}: expected seconds or a number with s, m, h or d"
                        ))
                    })
                })
                .transpose()
        };
        Ok(ScalingUpdate {
            min: self.min,
            max: self.max,
            target_inflight: self.target_inflight,
            up_delay_s: secs("up-delay", &self.up_delay)?,
            down_delay_s: secs("down-delay", &self.down_delay)?,
            idle_s: secs("idle", &self.idle)?,
            ready_path: self.ready_path.clone(),
            ready_delay_s: secs("ready-delay", &self.ready_delay)?,
            start_timeout_s: secs("start-timeout", &self.start_timeout)?,
        })
    }
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: Conn,
    name: String,
    /// The model name callers send in `model`.
    #[arg(long)]
    model: String,
    /// Whole GPUs per replica.
    #[arg(long, conflicts_with = "gpu_share")]
    gpus: Option<u32>,
    /// A fraction of one GPU per replica, e.g. 0.5.
    #[arg(long)]
    gpu_share: Option<f64>,
    /// Allowed GPU models, comma-separated (default: any).
    #[arg(long, value_name = "A,B")]
    gpu_model: Option<String>,
    /// CPU cores per replica.
    #[arg(long, default_value_t = 1.0)]
    cpu: f64,
    /// Memory per replica: MiB, or with a K/M/G/T suffix.
    #[arg(long, default_value = "1G")]
    mem: String,
    /// The replicas' class: on-demand (may preempt spot batch work),
    /// guaranteed or spot.
    #[arg(long, default_value = "on-demand", value_parser = |s: &str| s.parse::<Class>())]
    class: Class,
    /// Callable by every tenant (each pays for its own tokens).
    #[arg(long)]
    public: bool,
    /// Environment variable for the replicas, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[command(flatten)]
    scaling: ScalingArgs,
    #[arg(long)]
    json: bool,
    /// The model server's command (after --).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    conn: Conn,
    name: String,
    /// The service's tenant (the admin only).
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    conn: Conn,
    name: String,
    /// The service's tenant (the admin only).
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    scaling: ScalingArgs,
    #[arg(long)]
    json: bool,
}

pub fn service(c: ServiceCmd) -> Result<(), CliError> {
    match c {
        ServiceCmd::Create(a) => create(a),
        ServiceCmd::List(a) => {
            let l: ServiceList = a.conn.get("/v1/services")?;
            if a.json {
                print_json(&l);
            } else {
                table(&l.services);
            }
            Ok(())
        }
        ServiceCmd::Show(a) => {
            let s: Service = a.conn.get(&path(&a.name, a.tenant.as_deref())?)?;
            if a.json {
                print_json(&s);
            } else {
                show(&s);
            }
            Ok(())
        }
        ServiceCmd::Update(a) => {
            let u = a.scaling.update()?;
            let s: Service = a.conn.patch(&path(&a.name, a.tenant.as_deref())?, &u)?;
            if a.json {
                print_json(&s);
            } else {
                println!("updated service {}", s.name);
            }
            Ok(())
        }
        ServiceCmd::Delete(a) => {
            a.conn.delete(&path(&a.name, a.tenant.as_deref())?)?;
            println!("deleted service {}", a.name);
            Ok(())
        }
    }
}

fn path(name: &str, tenant: Option<&str>) -> Result<String, CliError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(usage(format!(
            "service name {name:?}: expected 1 to 63 letters, digits, '.', '_' or '-'"
        )));
    }
    let q = tenant
        .map(|t| format!("?{}", super::query(&[("tenant", t)])))
        .unwrap_or_default();
    Ok(format!("/v1/services/{name}{q}"))
}

fn create(a: CreateArgs) -> Result<(), CliError> {
    if !(a.cpu.is_finite() && a.cpu >= 0.0) {
        return Err(usage(format!("--cpu must be >= 0, found {}", a.cpu)));
    }
    let env = parse_env(&a.env)?;
    let body = ServiceCreate {
        name: a.name,
        model: a.model,
        command: a.command,
        env: (!a.env.is_empty()).then_some(env),
        workdir: a.workdir,
        cpu_milli: Some((a.cpu * 1000.0).round() as i64),
        memory_mib: Some(parse_mem(&a.mem)? as i64),
        gpus: a.gpus.map(i64::from),
        gpu_share: a.gpu_share,
        gpu_models: a
            .gpu_model
            .map(|m| m.split(',').map(|s| s.trim().to_string()).collect()),
        class: Some(a.class.to_string()),
        public: a.public,
        scaling: a.scaling.update()?,
    };
    let s: Service = a.conn.post("/v1/services", &body)?;
    if a.json {
        print_json(&s);
    } else {
        println!(
            "created service {} (model {}): {}..{} replicas, {} requests in flight each",
            s.name, s.model, s.spec.min, s.spec.max, s.spec.target_inflight
        );
    }
    Ok(())
}

fn gpus(s: &Service) -> String {
    gpus_text(s.spec.num_gpu, s.spec.gpu_milli)
}

fn table(l: &[Service]) {
    println!(
        "{:<20} {:<14} {:<24} {:>5} {:>9} {:>6} {:>8}",
        "NAME", "TENANT", "MODEL", "GPUS", "MIN..MAX", "READY", "DESIRED"
    );
    for s in l {
        let ready = s.replicas.iter().filter(|r| r.state == "ready").count();
        println!(
            "{:<20} {:<14} {:<24} {:>5} {:>9} {:>6} {:>8}",
            s.name,
            s.tenant,
            s.model,
            gpus(s),
            format!("{}..{}", s.spec.min, s.spec.max),
            ready,
            s.desired.map_or("-".into(), |d| d.to_string())
        );
    }
}

fn show(s: &Service) {
    let sp = &s.spec;
    println!("service   {} (id {}, tenant {})", s.name, s.id, s.tenant);
    println!(
        "model     {}{}",
        s.model,
        if s.public { " (public)" } else { "" }
    );
    println!("command   {}", sp.command.join(" "));
    println!(
        "replica   {} GPU(s), {} CPU, {} MiB, class {}",
        gpus(s),
        sp.cpu_milli as f64 / 1000.0,
        sp.memory_mib,
        sp.class
    );
    println!(
        "scaling   {}..{} replicas, {} in flight each, up delay {} s, down delay {} s, idle {} s",
        sp.min, sp.max, sp.target_inflight, sp.up_delay_s, sp.down_delay_s, sp.idle_s
    );
    println!(
        "ready     GET {} after {} s; replaced when not ready for {} s",
        sp.ready_path, sp.ready_delay_s, sp.start_timeout_s
    );
    if let Some(d) = s.desired {
        println!("desired   {d}");
    }
    if let Some(f) = &s.last_failure {
        println!("failure   {f}");
    }
    println!(
        "{:<8} {:<10} {:<20} {:>11}",
        "JOB", "STATE", "NODE", "OUTSTANDING"
    );
    for r in &s.replicas {
        println!(
            "{:<8} {:<10} {:<20} {:>11}",
            r.job,
            r.state,
            r.node.as_deref().unwrap_or("-"),
            r.outstanding
        );
    }
}
