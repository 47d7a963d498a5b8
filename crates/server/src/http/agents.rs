//! `/v1/agents`: the agent protocol ([`suanli_api::agents`]). Every call
//! needs an agent token and the agent protocol header ([`AgentCaller`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::Json;
use suanli_api::{
    replica_port, Assignment, Job, NodeRegistration, Orders, OrdersChanged, OrdersWait, Registered,
    ReplicaOrder, Report, TaskRef, MAX_WAIT_MS,
};
use suanli_core::MAX_GPUS_PER_NODE;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AgentCaller;
use super::error::{valid_name, Problem};
use super::state::AppState;
use crate::control::Registration;
use crate::store::{mask_devices, Scope, StoreError};
use axum::http::StatusCode;
use suanli_api::Problem as ProblemDoc;

/// Most tasks one report may list.
pub const MAX_REPORT_TASKS: usize = 10_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_agent))
        .routes(routes!(heartbeat))
        .routes(routes!(task_status))
        .routes(routes!(wait_orders))
}

fn validate_registration(b: NodeRegistration) -> Result<Registration, Problem> {
    valid_name("name", &b.name)?;
    if !(1..=100_000_000).contains(&b.cpu_milli) {
        return Err(Problem::invalid(
            "cpu_milli",
            format!("cpu_milli must be 1..=1e8 (found {})", b.cpu_milli),
        ));
    }
    if !(1..=1 << 34).contains(&b.memory_mib) {
        return Err(Problem::invalid(
            "memory_mib",
            format!("memory_mib must be 1..=2^34 (found {})", b.memory_mib),
        ));
    }
    if b.gpus.len() > MAX_GPUS_PER_NODE {
        return Err(Problem::invalid(
            "gpus",
            format!(
                "at most {MAX_GPUS_PER_NODE} GPUs per node (found {})",
                b.gpus.len()
            ),
        ));
    }
    let mut seen = 0u32;
    for g in &b.gpus {
        if !(0..b.gpus.len() as i64).contains(&g.index) || seen & (1 << g.index) != 0 {
            return Err(Problem::invalid(
                "gpus",
                "GPU indexes must be 0..n-1, each once",
            ));
        }
        seen |= 1 << g.index;
        valid_name("gpus", &g.model)?;
        if g.memory_mib.is_some_and(|m| !(0..=1 << 24).contains(&m)) {
            return Err(Problem::invalid("gpus", "GPU memory_mib must be 0..=2^24"));
        }
    }
    if let Some(g) = b.gpus.iter().find(|g| g.model != b.gpus[0].model) {
        return Err(Problem::invalid(
            "gpus",
            format!(
                "a node's GPUs must be one model (found {} and {})",
                b.gpus[0].model, g.model
            ),
        ));
    }
    let labels = b.labels.unwrap_or_default();
    if labels.len() > 64
        || labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 253)
    {
        return Err(Problem::invalid(
            "labels",
            "at most 64 labels, keys 1-63 bytes, values at most 253",
        ));
    }
    let addr = b.addr.unwrap_or_default();
    if addr.len() > 253 {
        return Err(Problem::invalid("addr", "addr is at most 253 bytes"));
    }
    Ok(Registration {
        name: b.name,
        addr,
        gpu_model: b.gpus.first().map(|g| g.model.clone()),
        gpus: b.gpus.len() as i64,
        gpu_memory_mib: b.gpus.first().and_then(|g| g.memory_mib).unwrap_or(0),
        cpu_milli: b.cpu_milli,
        memory_mib: b.memory_mib,
        labels,
    })
}

/// Register (or re-register) a node (agent).
#[utoipa::path(post, path = "/v1/agents/register", tag = "agents", request_body = NodeRegistration, security(("bearer" = [])), responses((status = 200, description = "Registered", body = Registered), (status = 400, description = "Invalid, or another protocol version", body = ProblemDoc), (status = 409, description = "Inventory changed under running tasks, or (join token) the node already has a live credential", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Not an agent token, or another node's credential", body = ProblemDoc)))]
async fn register_agent(
    State(st): State<AppState>,
    who: AgentCaller,
    body: Result<Json<NodeRegistration>, JsonRejection>,
) -> Result<Json<Registered>, Problem> {
    let Json(b) = body?;
    let credential = b.credential_sha256.clone();
    let reg = validate_registration(b)?;
    // A join token claims the node's credential first (atomic: refused
    // while the node has another live one), so that it can never
    // re-register a node another agent holds; the agent generated the
    // credential and sends its hash, so a retry after a lost answer is the
    // same claim, not a lock-out. A node's credential registers only its
    // own node.
    let claimed = match &who {
        AgentCaller::Join(join_id) => {
            let hash = credential
                .filter(|h| suanli_api::token::is_token_hash(h))
                .ok_or_else(|| {
                    Problem::invalid(
                        "credential_sha256",
                        "registering with a join token needs credential_sha256: the SHA-256 (64 \
                     lowercase hex digits) of the credential this agent generated for its node",
                    )
                })?;
            let scope = Scope::Node {
                name: reg.name.clone(),
            };
            match st
                .store
                .insert_token(
                    &hash,
                    &scope,
                    &format!("node {}", reg.name),
                    (&format!("token {join_id} (join)"), "node.claim"),
                )
                .await
            {
                Ok(id) => Some(id),
                Err(StoreError::Conflict(_))
                    if st.store.scope_of(&hash).await?.map(|s| s.1).as_ref() == Some(&scope) =>
                {
                    None // this agent's own claim, made before
                }
                Err(StoreError::Conflict(_)) => {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "node_claimed",
                        format!(
                            "node {:?} already has a live credential: its agent registers with \
                             the credential it saved (WORK_DIR/node.token); to move the name to \
                             another machine, stop the old agent and have an admin revoke that \
                             credential (`suanli token list`, `suanli token revoke ID`)",
                            reg.name
                        ),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        AgentCaller::Node(_) => {
            who.speaks_for(&reg.name)?;
            None
        }
    };
    let node = match st.control.register(reg).await? {
        Ok(n) => n,
        Err(refusal) => {
            // The registration did not happen: the new claim goes too (if
            // this fails, the agent's retry is the same claim).
            if let Some(id) = claimed {
                let actor = "server (the node's registration was refused)";
                if let Err(e) = st.store.revoke_token(id, actor).await {
                    tracing::warn!(error = %e, "could not withdraw a refused node's credential");
                }
            }
            return Err(refusal.into());
        }
    };
    let mut warnings = Vec::new();
    if let (Some(book), Some(model)) = (&st.prices, &node.gpu_model) {
        if !book.prices_model_at(crate::store::now_ms(), model) {
            let w = format!(
                "GPU model {model:?} has no price in the server's price book: its GPUs bill at 0 \
                 (add [period.gpu_hour.{model}] to the book)"
            );
            tracing::warn!(node = %node.name, "{w}");
            warnings.push(w);
        }
    }
    Ok(Json(Registered {
        node,
        heartbeat_interval_s: st.control.heartbeat_interval_s,
        protocol: suanli_api::PROTOCOL,
        warnings,
    }))
}

async fn report(
    st: &AppState,
    name: String,
    report: Report,
    full: bool,
) -> Result<Json<Orders>, Problem> {
    if report.running.len() + report.exited.len() > MAX_REPORT_TASKS {
        return Err(Problem::invalid(
            "running",
            format!("at most {MAX_REPORT_TASKS} tasks per report"),
        ));
    }
    let orders = st.control.report(name, report, full).await??;
    // The loop decided what to start and stop; the store adds what each
    // started task runs (committed before the loop answered).
    let mut jobs: HashMap<i64, (Job, Option<(String, String)>)> = HashMap::new();
    let mut start = Vec::with_capacity(orders.start.len());
    for o in orders.start {
        let t = o.task;
        let (j, replica) = match jobs.entry(t.job) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert((
                st.store.job(t.job, None).await?,
                st.store.services().replica_of(t.job).await?,
            )),
        };
        start.push(Assignment {
            job: t.job,
            run: t.run,
            task: t.task,
            tasks: j.tasks,
            command: j.command.clone(),
            env: j.env.clone(),
            workdir: j.workdir.clone(),
            max_runtime_s: j.max_runtime_s,
            cpu_milli: j.cpu_milli,
            memory_mib: j.memory_mib,
            gpus: mask_devices(t.mask),
            gpu_share: (j.gpu_milli > 0 && j.gpu_milli < 1000).then(|| j.gpu_milli as f64 / 1000.0),
            master_addr: o.master_addr,
            replica: replica.as_ref().map(|(service, key)| ReplicaOrder {
                service: service.clone(),
                port: replica_port(t.job, t.run),
                key: key.clone(),
            }),
        });
    }
    let kill = orders
        .kill
        .into_iter()
        .map(|t| TaskRef {
            job: t.job,
            run: t.run,
            task: t.task,
            gpus: mask_devices(t.mask),
        })
        .collect();
    Ok(Json(Orders { start, kill }))
}

/// Report every running task and the exits since; get tasks to start and to stop (agent).
#[utoipa::path(post, path = "/v1/agents/{name}/heartbeat", tag = "agents", request_body = Report, params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Orders", body = Orders), (status = 404, description = "Unregistered node", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Not this node's credential", body = ProblemDoc)))]
async fn heartbeat(
    State(st): State<AppState>,
    who: AgentCaller,
    Path(name): Path<String>,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<Orders>, Problem> {
    who.speaks_for(&name)?;
    let Json(r) = body?;
    report(&st, name, r, true).await
}

/// Report task exits between heartbeats (agent).
#[utoipa::path(post, path = "/v1/agents/{name}/tasks/status", tag = "agents", request_body = Report, params(("name" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Orders", body = Orders), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Not this node's credential", body = ProblemDoc)))]
async fn task_status(
    State(st): State<AppState>,
    who: AgentCaller,
    Path(name): Path<String>,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Json<Orders>, Problem> {
    who.speaks_for(&name)?;
    let Json(r) = body?;
    if !r.running.is_empty() {
        return Err(Problem::invalid(
            "running",
            "a task-status call reports exits only; use the heartbeat",
        ));
    }
    report(&st, name, r, false).await
}

/// Hold the call until this node gets new orders (then heartbeat to read them), or the timeout passes (agent).
#[utoipa::path(get, path = "/v1/agents/{name}/wait", tag = "agents", params(("name" = String, Path), OrdersWait), security(("bearer" = [])), responses((status = 200, description = "The node's order sequence: changed, or the same after the timeout", body = OrdersChanged), (status = 400, description = "Invalid query, or another protocol version", body = ProblemDoc), (status = 401, description = "Missing, unknown or revoked token", body = ProblemDoc), (status = 403, description = "Not this node's credential", body = ProblemDoc), (status = 429, description = "The node already holds 4 wait calls", body = ProblemDoc)))]
async fn wait_orders(
    State(st): State<AppState>,
    who: AgentCaller,
    Path(name): Path<String>,
    q: Result<Query<OrdersWait>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OrdersChanged>, Problem> {
    who.speaks_for(&name)?;
    let Query(q) = q.map_err(Problem::bad_query)?;
    if q.seen > i64::MAX as u64 {
        return Err(Problem::invalid("seen", "seen must be 0..=2^63-1"));
    }
    if !(1..=MAX_WAIT_MS).contains(&q.timeout_ms) {
        return Err(Problem::invalid(
            "timeout_ms",
            format!(
                "timeout_ms must be 1..={MAX_WAIT_MS} (found {})",
                q.timeout_ms
            ),
        ));
    }
    if !st.control.serves() {
        // Orders come from the leader: this replica would never wake it
        // (a follower mirrors the leader's wake hints).
        return Err(crate::control::Gone::NotLeader.into());
    }
    let timeout = std::time::Duration::from_millis(q.timeout_ms);
    match st.control.wakes.wait(&name, q.seen, timeout).await {
        Ok(seq) => Ok(Json(OrdersChanged { seq })),
        Err(_) => {
            // Only this node's credential can hold its waits: a second
            // holder crowds out the agent's own (it then polls).
            tracing::warn!(node = %name, "wait refused: the node already holds the most wait calls");
            Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_waits",
                format!(
                    "node {name:?} already holds {} wait calls",
                    crate::control::MAX_WAITS_PER_NODE
                ),
            ))
        }
    }
}
