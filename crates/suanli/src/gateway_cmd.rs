//! `suanli gateway --server URL`: the model API's router outside the
//! server, for scale-out (several gateways behind a load balancer).
//!
//! It runs the server's own router code (`suanli_server::services`: the
//! proxy, the controller following replicas and probing them, the token
//! writer) on a [`RouterSource`] that asks the server instead of a
//! database: services, replicas, tokens and callers' tokens go through
//! `/v1/routers/...` with a router token (`suanli token create --router`:
//! the router API and nothing else, so a gateway on the network's edge
//! holds no admin power). The gateway never scales: it
//! shares its counters with the server (requests in flight per service,
//! requests and tokens per tenant), so the leader scales on every router's
//! requests — a request held at a gateway wakes a service at zero — and
//! every router's rate limits count every router's traffic.
//!
//! The server calls are blocking (`Conn`, the CLI's client: server lists,
//! fail-over, TLS) and run on tokio's blocking pool. A caller's token is
//! checked once and remembered for [`OWNER_TTL`] (a revoked token stops
//! working at a gateway within that time).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use suanli_server::services::{
    Exchange, RouterConfig, RouterServices, RouterSource, Services, TokenOwner,
};
use suanli_server::store::{ReplicaRow, RouterCount, TokenRow};

use crate::client::Conn;
use crate::{failure, usage, CliError};

/// How long a caller's token is trusted without asking the server again.
pub const OWNER_TTL: Duration = Duration::from_secs(10);
/// How long an unknown token is remembered as unknown.
const UNKNOWN_TTL: Duration = Duration::from_secs(2);
/// Tokens remembered at most, valid and unknown apart (past it, expired
/// entries go; unknown ones all go if none expired).
const MAX_OWNERS: usize = 100_000;
/// Token rows per call to the server.
const TOKEN_ROWS_PER_CALL: usize = 2_000;

#[derive(Args)]
pub struct GatewayArgs {
    /// Address to listen on for the model API [default: 127.0.0.1:8430].
    #[arg(long, default_value = "127.0.0.1:8430")]
    listen: SocketAddr,
    /// The largest request body, MiB.
    #[arg(long, default_value_t = 8)]
    max_body_mib: u64,
    /// How long a request may wait for a ready replica, s.
    #[arg(long, default_value_t = 300)]
    hold_s: u64,
    /// How the router picks a replica: least-outstanding or round-robin.
    #[arg(long, default_value = "least-outstanding")]
    route: String,
    /// Log format.
    #[arg(long, value_parser = ["human", "json"], default_value = "human")]
    log_format: String,
    /// Log level (an env-filter directive, e.g. info or debug).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Allow plain HTTP on an address other than loopback (callers' tokens
    /// then travel in clear: put TLS in front, or use a network you trust).
    #[arg(long)]
    insecure_http: bool,
    #[command(flatten)]
    conn: Conn,
}

struct Remote {
    conn: Conn,
    /// Tokens known valid (a tenant's or not), by hash.
    owners: Mutex<HashMap<String, (TokenOwner, Instant)>>,
    /// Tokens known unknown, by hash (kept apart: a flood of made-up
    /// tokens cannot push out the valid ones).
    unknown: Mutex<HashMap<String, Instant>>,
    /// Lookups at the server at once, at most.
    lookups: tokio::sync::Semaphore,
}

/// Token lookups the gateway asks the server at once, at most.
const MAX_LOOKUPS: usize = 16;

fn text(e: CliError) -> String {
    e.msg
}

impl Remote {
    async fn blocking<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Result<T, CliError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(conn).map_err(text))
            .await
            .map_err(|e| format!("the server call stopped: {e}"))?
    }
}

#[async_trait::async_trait]
impl RouterSource for Remote {
    async fn services(&self) -> Result<RouterServices, String> {
        self.blocking(|c| c.get::<RouterServices>("/v1/routers/services"))
            .await
    }

    async fn replicas(&self, services: &[i64]) -> Result<HashMap<i64, Vec<ReplicaRow>>, String> {
        if services.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = services.to_vec();
        let v = self
            .blocking(move |c| {
                c.post::<_, Vec<(i64, Vec<ReplicaRow>)>>("/v1/routers/replicas", &ids)
            })
            .await?;
        Ok(v.into_iter().collect())
    }

    async fn orphan_replicas(&self) -> Result<Vec<i64>, String> {
        // The leader stops them; a gateway never leads.
        Ok(Vec::new())
    }

    async fn record_tokens(&self, rows: &[TokenRow]) -> Result<(), String> {
        for chunk in rows.chunks(TOKEN_ROWS_PER_CALL) {
            let chunk = chunk.to_vec();
            self.blocking(move |c| c.post_no_content("/v1/routers/tokens", &chunk))
                .await?;
        }
        Ok(())
    }

    async fn token_owner(&self, token_hash: &str) -> Result<TokenOwner, String> {
        let cached = || {
            let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((o, at)) = owners.get(token_hash) {
                if at.elapsed() < OWNER_TTL {
                    return Some(o.clone());
                }
            }
            let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            unknown
                .get(token_hash)
                .filter(|at| at.elapsed() < UNKNOWN_TTL)
                .map(|_| TokenOwner::Unknown)
        };
        if let Some(o) = cached() {
            return Ok(o);
        }
        let _turn = self
            .lookups
            .acquire()
            .await
            .map_err(|e| format!("token lookups: {e}"))?;
        // Another request may have asked while this one waited its turn.
        if let Some(o) = cached() {
            return Ok(o);
        }
        let body = serde_json::json!({ "token_hash": token_hash });
        let o = self
            .blocking(move |c| c.post::<_, TokenOwner>("/v1/routers/token-owner", &body))
            .await?;
        let now = Instant::now();
        if o == TokenOwner::Unknown {
            let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            if unknown.len() >= MAX_OWNERS {
                unknown.retain(|_, at| at.elapsed() < UNKNOWN_TTL);
                if unknown.len() >= MAX_OWNERS {
                    unknown.clear();
                }
            }
            unknown.insert(token_hash.to_string(), now);
        } else {
            let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            if owners.len() >= MAX_OWNERS {
                owners.retain(|_, (_, at)| at.elapsed() < OWNER_TTL);
            }
            owners.insert(token_hash.to_string(), (o.clone(), now));
        }
        Ok(o)
    }

    async fn exchange(&self, ex: &Exchange) -> Result<Vec<RouterCount>, String> {
        let ex = ex.clone();
        self.blocking(move |c| c.post::<_, Vec<RouterCount>>("/v1/routers/exchange", &ex))
            .await
    }
}

pub fn run(a: GatewayArgs) -> Result<(), CliError> {
    if !a.listen.ip().is_loopback() && !a.insecure_http {
        return Err(usage(format!(
            "--listen {}: plain HTTP on a network address sends callers' tokens in clear; \
             pass --insecure-http to allow it (behind a TLS terminator, or on a network you trust)",
            a.listen
        )));
    }
    if a.max_body_mib == 0 || a.max_body_mib > 1024 {
        return Err(usage(format!(
            "--max-body-mib: must be 1..=1024, got {}",
            a.max_body_mib
        )));
    }
    if a.hold_s == 0 || a.hold_s > 3600 {
        return Err(usage(format!(
            "--hold-s: must be 1..=3600, got {}",
            a.hold_s
        )));
    }
    let format = if a.log_format == "json" {
        suanli_server::config::LogFormat::Json
    } else {
        suanli_server::config::LogFormat::Human
    };
    suanli_server::init_logging(format, &a.log_level).map_err(usage)?;
    let route = a
        .route
        .parse()
        .map_err(|e| usage(format!("--route: {e}")))?;
    // The server must answer, and the token must be an admin's, before the
    // gateway listens.
    let probe: Result<RouterServices, CliError> = a.conn.get("/v1/routers/services");
    probe.map_err(|e| {
        failure(format!(
            "the server refused the gateway ({e}); a gateway needs a router token \
             (suanli token create --router)"
        ))
    })?;
    let cfg = RouterConfig {
        max_body_bytes: (a.max_body_mib as usize) << 20,
        hold: Duration::from_secs(a.hold_s),
        route,
        ..RouterConfig::default()
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let id = format!(
        "gateway {host}:{}:{}:{:08x}",
        std::process::id(),
        a.listen,
        rand::random::<u32>()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| failure(format!("cannot start the runtime: {e}")))?;
    let remote = Remote {
        conn: a.conn,
        owners: Mutex::new(HashMap::new()),
        unknown: Mutex::new(HashMap::new()),
        lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
    };
    rt.block_on(async move {
        let services = Services::with_source(Arc::new(remote), None, id.clone(), cfg.clone());
        services.start();
        let app = suanli_server::services::routes(cfg.max_body_bytes)
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .with_state(services.clone());
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| failure(format!("cannot listen on {}: {e}", a.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| failure(format!("listen: {e}")))?;
        eprintln!("gateway listening on {addr} ({id})");
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::stop_signal())
            .await
            .map_err(|e| failure(format!("serve: {e}")))?;
        // The last answers' tokens reach the server before the gateway ends.
        services.flush().await;
        Ok(())
    })
}
