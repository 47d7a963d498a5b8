//! The `suanli` binary: thin glue. Flags are parsed (clap), validated once into
//! settings, then handed to the libraries.

mod agent_cmd;
mod bench_billing;
mod bench_loop;
mod bench_pool;
mod bench_router;
mod bench_server;
mod bench_start;
mod client;
mod gateway_cmd;
mod jobs_cmd;
mod mock_llm;
mod openb_cmd;
mod serve_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "suanli",
    version,
    about = "Suanli: run a multi-tenant GPU compute pool"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate: replay traces through the scheduler core.
    #[command(subcommand)]
    Sim(SimCmd),
    /// Benchmarks that print figures (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Generate a synthetic workload in the native format.
    Gen(jobs_cmd::GenArgs),
    /// Run the control-plane server: store, API, scheduling loop.
    Server(ServerArgs),
    /// Submit a job: suanli submit [--gpus N | --gpu-share F] ... -- CMD ARGS...
    Submit(client::SubmitArgs),
    /// List jobs (yours; all for an admin token).
    Queue(client::QueueArgs),
    /// Inspect a job.
    #[command(subcommand)]
    Job(client::JobCmd),
    /// Cancel a job.
    Cancel(client::JobIdArgs),
    /// Manage tenants (admin).
    #[command(subcommand)]
    Tenant(client::TenantCmd),
    /// Model services: deploy a model server, called OpenAI-style at /v1/chat/completions.
    #[command(subcommand)]
    Service(client::ServiceCmd),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(client::TokenCmd),
    /// The pool by GPU model: ready nodes, GPUs, what is free now, and the queue's depth.
    Pool(client::PoolArgs),
    /// List nodes; `nodes drain NAME`, `nodes undrain NAME`, `nodes remove NAME` (admin).
    Nodes(client::NodesArgs),
    /// What admins did: tokens, tenants, quotas, drains, removals, node claims (admin).
    Audit(client::AuditArgs),
    /// A task's output: suanli logs JOB [--task I] [--stderr] [--follow].
    Logs(client::LogsArgs),
    /// Run the node agent: register this machine's GPUs and run tasks.
    Agent(agent_cmd::AgentArgs),
    /// A whole pool on this machine: a server, N agents, a demo tenant.
    Up(agent_cmd::UpArgs),
    /// The model API's router outside the server (scale-out): suanli gateway --server URL --listen ADDR (router token).
    Gateway(gateway_cmd::GatewayArgs),
    /// A small OpenAI-compatible model server for tests and demos (port from --port or $PORT).
    MockLlm(mock_llm::MockLlmArgs),
    /// Invoices for a month: suanli bill --period 2026-11 [--tenant T] [--format table|csv|json].
    Bill(client::BillArgs),
    /// Operator reports: suanli report economics --period 2026-11 [--format table|csv|json].
    #[command(subcommand)]
    Report(client::ReportCmd),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML settings (every field documented in crates/server/src/config.rs); flags override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Directory of the store (suanli.db) and admin.token [default: suanli-data].
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// The store on PostgreSQL: postgres://USER:PASSWORD@HOST:PORT/DB (TLS:
    /// ?sslmode=verify-full&sslrootcert=CA.pem) [default: SQLite in the data
    /// dir]. A password here shows in `ps`: prefer SUANLI_STORE or the config file.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Address to listen on; port 0 picks a free port (the bound address is printed) [default: 127.0.0.1:8420].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, value_parser = ["human", "json"])]
    log_format: Option<String>,
    /// Queue policy [default: classes].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(suanli_sched::scheduler::QUEUE_POLICY_NAMES))]
    queue_policy: Option<String>,
    /// Price book (TOML, see examples/prices.toml) for invoices.
    #[arg(long)]
    prices: Option<std::path::PathBuf>,
    /// Issue a new admin token into DATA_DIR/admin.token and exit (the way
    /// back in when every admin token was lost or revoked).
    #[arg(long)]
    reset_admin: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// Allow plain HTTP on an address other than loopback (tokens then
    /// travel in clear: only on a network you trust).
    #[arg(long)]
    insecure_http: bool,
}

fn server(a: ServerArgs) -> Result<(), CliError> {
    use suanli_server::config;
    let file = match &a.config {
        Some(p) => config::read_file(p).map_err(usage)?,
        None => config::FileConfig::default(),
    };
    let reset_admin = a.reset_admin;
    let s = config::resolve(
        file,
        config::Overrides {
            data_dir: a.data_dir,
            store: a.store.or_else(|| std::env::var("SUANLI_STORE").ok()),
            listen: a.listen,
            log_format: a.log_format,
            queue_policy: a.queue_policy,
            prices: a.prices,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            insecure_http: a.insecure_http,
        },
    )
    .map_err(usage)?;
    let prices = match &s.prices {
        Some(p) => Some(std::sync::Arc::new(
            suanli_billing::PriceBook::read(p).map_err(usage)?,
        )),
        None => None,
    };
    suanli_server::init_logging(s.log_format, &s.log_level).map_err(usage)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| failure(format!("cannot start the runtime: {e}")))?;
    if reset_admin {
        let path = rt
            .block_on(suanli_server::reset_admin(&s.data_dir, s.store.as_deref()))
            .map_err(|e| failure(format!("{e:#}")))?;
        println!("a new admin token is in {}", path.display());
        return Ok(());
    }
    rt.block_on(suanli_server::serve(suanli_server::ServerConfig {
        data_dir: s.data_dir,
        store: s.store,
        listen: s.listen,
        scheduler: s.scheduler,
        prices,
        tls: s.tls,
        router: s.router,
    }))
    .map_err(|e| failure(format!("{e:#}")))
}

#[derive(Subcommand)]
enum SimCmd {
    /// The openb GPU-packing experiment (USENIX ATC '23, "Beware of Fragmentation").
    Openb(openb_cmd::OpenbArgs),
    /// Job-level simulation over time: queue policies, quotas, gangs, preemption.
    Jobs(jobs_cmd::SimJobsArgs),
    /// A model service over a request trace: autoscaled against static provisioning.
    Serve(serve_cmd::SimServeArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Speed of the openb experiment: memoised vs unmemoised FGD, and the full grid.
    Openb(openb_cmd::BenchArgs),
    /// Speed of the job simulator: a trace replay (vs memo-off baseline) and a synthetic scale test.
    Jobs(jobs_cmd::BenchJobsArgs),
    /// Speed of the control plane: durable submissions/s and placement decisions/s.
    Server(bench_server::BenchServerArgs),
    /// The live loop under open-loop load: submission -> durable start decision, CPU share.
    Loop(bench_loop::BenchLoopArgs),
    /// Speed of the economics report: a month of a large pool, vs a per-tenant scan baseline.
    Billing(bench_billing::BenchBillingArgs),
    /// Submit -> process running and cancel -> SIGTERM on a real server and agents: pushed work vs polling.
    StartLatency(bench_start::BenchStartArgs),
    /// The model router's added latency against calling a replica directly, and least-outstanding vs round-robin with uneven replicas.
    Router(bench_router::BenchRouterArgs),
}

/// Exit codes: 0 success, 1 runtime failure (e.g. unreadable trace, server
/// unreachable), 2 invalid command line, 3 request refused by the server.
fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that print and end (not the server, agents, `up` or the
    // benchmarks, which write to sockets and must see EPIPE as an error)
    // stop quietly when their reader goes away, as `suanli queue | head`
    // expects, instead of panicking in `println!`.
    if !matches!(
        cli.cmd,
        Cmd::Server(_)
            | Cmd::Agent(_)
            | Cmd::Up(_)
            | Cmd::Bench(_)
            | Cmd::MockLlm(_)
            | Cmd::Gateway(_)
    ) {
        // SAFETY: restoring the default disposition of one signal, before
        // any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let r = match cli.cmd {
        Cmd::Sim(SimCmd::Openb(a)) => openb_cmd::run(a),
        Cmd::Bench(BenchCmd::Openb(a)) => openb_cmd::bench(a),
        Cmd::Sim(SimCmd::Jobs(a)) => jobs_cmd::sim(a),
        Cmd::Sim(SimCmd::Serve(a)) => serve_cmd::sim(a),
        Cmd::Bench(BenchCmd::Jobs(a)) => jobs_cmd::bench(a),
        Cmd::Bench(BenchCmd::Server(a)) => bench_server::run(a),
        Cmd::Bench(BenchCmd::Loop(a)) => bench_loop::run(a),
        Cmd::Bench(BenchCmd::Billing(a)) => bench_billing::run(a),
        Cmd::Bench(BenchCmd::StartLatency(a)) => bench_start::run(a),
        Cmd::Bench(BenchCmd::Router(a)) => bench_router::run(a),
        Cmd::Gen(a) => jobs_cmd::gen(a),
        Cmd::Server(a) => server(a),
        Cmd::Submit(a) => client::submit(a),
        Cmd::Queue(a) => client::queue(a),
        Cmd::Job(c) => client::job(c),
        Cmd::Cancel(a) => client::cancel(a),
        Cmd::Tenant(c) => client::tenant(c),
        Cmd::Service(c) => client::service(c),
        Cmd::Token(c) => client::token(c),
        Cmd::Pool(a) => client::pool(a),
        Cmd::Nodes(a) => client::nodes(a),
        Cmd::Audit(a) => client::audit(a),
        Cmd::Logs(a) => client::logs(a),
        Cmd::Agent(a) => agent_cmd::agent(a),
        Cmd::Up(a) => agent_cmd::up(a),
        Cmd::MockLlm(a) => mock_llm::run(a),
        Cmd::Gateway(a) => gateway_cmd::run(a),
        Cmd::Bill(a) => client::bill(a),
        Cmd::Report(c) => client::report(c),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.code)
        }
    }
}

/// Resolves at SIGINT or SIGTERM (the graceful end of a long-running
/// command's HTTP server: `mock-llm`, `gateway`).
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub msg: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

pub fn usage(msg: impl Into<String>) -> CliError {
    CliError {
        code: 2,
        msg: msg.into(),
    }
}

pub fn failure(msg: impl Into<String>) -> CliError {
    CliError {
        code: 1,
        msg: msg.into(),
    }
}
