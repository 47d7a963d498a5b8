//! `tenant`, `token`, `nodes` (admin).

use clap::Args;
use clap::Subcommand;
use suanli_api::{
    AuditLog, NewTenant, NewToken, NodeList, NodeStateView, QuotaSet, Tenant, TenantList,
    TenantView, TokenList, TokenRequest,
};

use super::output::{or_dash, print_json};
use super::Conn;
use crate::{usage, CliError};

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
    /// Set a tenant's model API rate limits (admin); a limit left out is none.
    SetLimits {
        #[command(flatten)]
        conn: Conn,
        name: String,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens (input + output) per minute.
        #[arg(long)]
        tpm: Option<u64>,
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
            json,
        } => {
            let body = NewTenant {
                name,
                weight: Some(weight),
            };
            let t: Tenant = conn.post("/v1/tenants", &body)?;
            if json {
                print_json(&t);
            } else {
                println!("created tenant {}", t.name);
            }
        }
        TenantCmd::SetQuota {
            conn,
            name,
            model,
            guaranteed,
            max,
            json,
        } => {
            let body = QuotaSet { guaranteed, max };
            let t: TenantView = conn.put(&format!("/v1/tenants/{name}/quotas/{model}"), &body)?;
            if json {
                print_json(&t);
            } else {
                let max = max.map_or("unlimited".to_string(), |m| m.to_string());
                println!("tenant {name}: {model} guaranteed {guaranteed}, max {max}");
            }
        }
        TenantCmd::SetLimits {
            conn,
            name,
            rpm,
            tpm,
        } => {
            let body = suanli_api::RateLimits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
            };
            let _: suanli_api::RateLimits =
                conn.put(&format!("/v1/tenants/{name}/limits"), &body)?;
            let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
            println!(
                "tenant {name}: {} requests/min, {} tokens/min",
                show(rpm),
                show(tpm)
            );
        }
        TenantCmd::List { conn, json } => {
            let v: TenantList = conn.get("/v1/tenants")?;
            if json {
                print_json(&v);
                return Ok(());
            }
            println!(
                "{:>6} {:<20} {:>7}  QUOTAS (model guaranteed/max GPUs)",
                "ID", "NAME", "WEIGHT"
            );
            for t in &v.tenants {
                let quotas: Vec<String> = t
                    .quotas
                    .iter()
                    .map(|q| {
                        let max = q.max.map_or("-".to_string(), |m| m.to_string());
                        format!("{} {}/{max}", q.gpu_model, q.guaranteed)
                    })
                    .collect();
                println!(
                    "{:>6} {:<20} {:>7}  {}",
                    t.id,
                    t.name,
                    t.weight,
                    quotas.join(", ")
                );
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
        #[arg(long, conflicts_with_all = ["admin", "agent", "router"])]
        tenant: Option<String>,
        #[arg(long, conflicts_with_all = ["agent", "router"])]
        admin: bool,
        /// A router token, for `suanli gateway`: the router API and nothing
        /// else (it sees every service's replica secret and records tokens).
        #[arg(long, conflicts_with = "agent")]
        router: bool,
        /// An agent token: a join token (it only registers nodes that have
        /// no live credential, each registration answering that node's
        /// own credential), or with --node, one node's credential.
        #[arg(long)]
        agent: bool,
        /// With --agent: the node this token is the credential of.
        #[arg(long, requires = "agent")]
        node: Option<String>,
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
            router,
            node,
            name,
            json,
        } => {
            let scope = match (&tenant, admin, agent, router) {
                (Some(_), false, false, false) => "tenant",
                (None, true, false, false) => "admin",
                (None, false, true, false) => "agent",
                (None, false, false, true) => "router",
                _ => {
                    return Err(usage(
                        "token create needs one of --tenant NAME, --admin, --agent, --router",
                    ))
                }
            };
            let body = TokenRequest {
                scope: scope.to_string(),
                tenant,
                node,
                name,
            };
            let t: NewToken = conn.post("/v1/tokens", &body)?;
            if json {
                print_json(&t);
            } else {
                println!("{}", t.token);
            }
        }
        TokenCmd::List { conn, json } => {
            let v: TokenList = conn.get("/v1/tokens")?;
            if json {
                print_json(&v);
                return Ok(());
            }
            println!(
                "{:>6} {:<7} {:<16} {:<16} {:<20} {:<8}",
                "ID", "SCOPE", "TENANT", "NODE", "NAME", "REVOKED"
            );
            for t in &v.tokens {
                println!(
                    "{:>6} {:<7} {:<16} {:<16} {:<20} {:<8}",
                    t.id,
                    t.scope.as_str(),
                    or_dash(t.tenant.as_deref()),
                    or_dash(t.node.as_deref()),
                    t.name,
                    t.revoked
                );
            }
        }
        TokenCmd::Revoke { conn, id } => {
            conn.post_empty(&format!("/v1/tokens/{id}/revoke"))?;
            println!("revoked token {id}");
        }
    }
    Ok(())
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
    /// Take a node out of the pool and revoke its agent's credential
    /// (refused while it holds live tasks: drain it first). Stop its agent
    /// first: one that still has a join token registers the node again.
    Remove { name: String },
}

/// `suanli nodes`: list the pool's nodes (admin); `nodes drain|undrain|remove NAME`.
pub fn nodes(a: NodesArgs) -> Result<(), CliError> {
    if let Some(c) = a.cmd {
        let (verb, name) = match c {
            NodeCmd::Drain { name } => ("drain", name),
            NodeCmd::Undrain { name } => ("undrain", name),
            NodeCmd::Remove { name } => {
                a.conn.delete(&format!("/v1/nodes/{name}"))?;
                println!("{name} removed");
                return Ok(());
            }
        };
        #[derive(serde::Serialize)]
        struct NoBody {}
        let v: NodeStateView = a
            .conn
            .post(&format!("/v1/nodes/{name}/{verb}"), &NoBody {})?;
        if a.json {
            print_json(&v);
        } else {
            println!("{} {}", v.node, v.state);
        }
        return Ok(());
    }
    let v: NodeList = a.conn.get("/v1/nodes")?;
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
    for n in &v.nodes {
        let used = n.gpu_milli_allocated as f64 / 1000.0;
        let cpu = n.node.cpu_milli as f64 / 1000.0;
        let cpu_used = n.cpu_milli_allocated as f64 / 1000.0;
        let ago = (now - n.node.last_heartbeat_ms).max(0) / 1000;
        println!(
            "{:<20} {:<9} {:<14} {:>9} {:>9} {:>5} {}s ago",
            n.node.name,
            n.node.state.as_str(),
            or_dash(n.node.gpu_model.as_deref()),
            format!("{used}/{}", n.node.gpus),
            format!("{cpu_used}/{cpu}"),
            n.jobs,
            ago
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Conn,
    /// Entries after this id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    #[arg(long)]
    json: bool,
}

/// `suanli audit`: the audit log, oldest first (admin).
pub fn audit(a: AuditArgs) -> Result<(), CliError> {
    let mut after = a.after;
    let mut all = Vec::new();
    loop {
        let page: AuditLog = a.conn.get(&format!("/v1/audit?after={after}"))?;
        let Some(last) = page.entries.last() else {
            break;
        };
        after = last.id;
        all.extend(page.entries);
    }
    if a.json {
        print_json(&AuditLog { entries: all });
        return Ok(());
    }
    println!(
        "{:>6} {:<24} {:<22} {:<14} {:<28} DETAIL",
        "ID", "AT (UTC)", "ACTOR", "ACTION", "TARGET"
    );
    for e in &all {
        println!(
            "{:>6} {:<24} {:<22} {:<14} {:<28} {}",
            e.id,
            suanli_billing::format_time(e.at_ms),
            e.actor,
            e.action,
            e.target,
            e.detail
        );
    }
    Ok(())
}
