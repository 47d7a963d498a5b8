//! # suanli-server: the control plane (in progress)
//!
//! `suanli server` keeps the pool's durable state in SQLite or PostgreSQL
//! ([`store`]) and
//! serves the tenant API ([`http`]) with per-tenant tokens ([`auth`]). This
//! first increment has tenants, tokens (admin, tenant, agent; revocable),
//! and job submission, listing, cancellation and event history with tenant
//! isolation. The scheduling loop, quotas, nodes and agents come next
//! (issue 4 and 5).

pub mod auth;
pub mod config;
pub mod control;
pub mod http;
pub mod services;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use store::{Scope, Store};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// A PostgreSQL URL; None: SQLite in `data_dir`.
    pub store: Option<String>,
    pub listen: SocketAddr,
    pub scheduler: control::LoopConfig,
    /// Price book for invoices (`/v1/bills`).
    pub prices: Option<std::sync::Arc<suanli_billing::PriceBook>>,
    /// (certificate chain, private key), PEM: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The model API's router.
    pub router: services::RouterConfig,
}

/// On an empty store: create an admin token and write it to
/// `DATA_DIR/admin.token` (mode 0600). Returns the path when it did.
pub async fn bootstrap(store: &Store, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let (secret, hash) = auth::new_token();
    let path = dir.join("admin.token");
    write_private(&path, &format!("{secret}\n"))?;
    store
        .insert_token(
            &hash,
            &Scope::Admin,
            "bootstrap",
            ("server (first start)", "admin.bootstrap"),
        )
        .await?;
    Ok(Some(path))
}

/// Issue a new admin token into `DIR/admin.token` (0600), whatever tokens
/// exist: the way back in when every admin token was lost or revoked. Run
/// on the server machine (it needs the data directory); the running
/// server, if any, accepts the token at once.
pub async fn reset_admin(dir: &Path, url: Option<&str>) -> anyhow::Result<PathBuf> {
    if url.is_none() && !dir.join("suanli.db").exists() {
        anyhow::bail!(
            "{}: no store here (is --data-dir right?)",
            dir.join("suanli.db").display()
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let store = open_store(dir, url).await?;
    let (secret, hash) = auth::new_token();
    let path = dir.join("admin.token");
    write_private(&path, &format!("{secret}\n"))?;
    store
        .insert_token(
            &hash,
            &Scope::Admin,
            "reset-admin",
            ("server machine", "admin.reset"),
        )
        .await?;
    Ok(path)
}

/// The store: PostgreSQL at `url`, else SQLite in `dir`. Errors name it
/// (without the password).
pub async fn open_store(dir: &Path, url: Option<&str>) -> anyhow::Result<Store> {
    match url {
        Some(url) => Store::connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("store {}: {e}", store::redact_url(url))),
        None => Store::open(dir)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("suanli.db").display())),
    }
}

/// Hold `DIR/server.lock` for as long as the server runs: a second server
/// on the same SQLite store is refused (two loops would each believe they
/// own every device). The lock is the kernel's: it goes with the process,
/// however it ends.
fn one_server_per_sqlite_file(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("server.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another suanli server runs on {} ({} is locked): an SQLite store serves one \
             server; for several replicas use --store postgres://...",
            dir.join("suanli.db").display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("{}: cannot lock: {e}", path.display())
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    #[cfg(unix)]
    {
        // `mode` applies only to a new file: an older one is narrowed too.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Send `tracing` output to stderr as human text or JSON lines, filtered by
/// `level` (an env-filter directive such as `info,suanli_server=debug`).
pub fn init_logging(format: config::LogFormat, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("log_level {level:?}: {e}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let r = match format {
        config::LogFormat::Human => b.try_init(),
        config::LogFormat::Json => b.json().try_init(),
    };
    r.map_err(|e| format!("logging: {e}"))
}

/// Run the server until SIGINT or SIGTERM. Prints `listening on ADDR` to
/// stderr once the socket is bound (port 0 picks a free port).
pub async fn serve(cfg: ServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.data_dir.display()))?;
    // SQLite serves one replica: a second server on the same file stops here.
    let _lock = match cfg.store {
        None => Some(one_server_per_sqlite_file(&cfg.data_dir)?),
        Some(_) => None,
    };
    let store = open_store(&cfg.data_dir, cfg.store.as_deref()).await?;
    if let Some(p) = bootstrap(&store, &cfg.data_dir).await? {
        eprintln!("created the admin token: {}", p.display());
    }
    // The loop runs on the replica holding the leader lease (on SQLite,
    // this server, at once).
    let control = control::Control::idle(&cfg.scheduler);
    let me = control::replica_name(&cfg.listen.to_string());
    let open: control::Opener = {
        let (dir, url) = (cfg.data_dir.clone(), cfg.store.clone());
        Box::new(move || {
            let (dir, url) = (dir.clone(), url.clone());
            Box::pin(async move { open_store(&dir, url.as_deref()).await })
        })
    };
    let only_server = cfg.store.is_none();
    if !only_server {
        // A follower serves every request through the store's inbox; an
        // answer is waited for through a takeover (TTL + recovery).
        let wait = std::time::Duration::from_millis(3 * cfg.scheduler.leader_lease_ms.max(1000));
        control.forward_through(store.clone(), wait).await;
    }
    let mut sched = tokio::spawn(control::keep_lease(
        store.clone(),
        open,
        control.clone(),
        cfg.scheduler.clone(),
        me.clone(),
        only_server,
    ));
    // When this server leads at once (SQLite: always; PostgreSQL: when
    // no replica holds a live lease), recover and check the state before
    // accepting any request: a store that fails its checks stops the
    // server here, and no request meets a 503 while it recovers.
    let lead_first = only_server || !store.leader().await?.live;
    let give_up = std::time::Instant::now()
        + std::time::Duration::from_millis(2 * cfg.scheduler.leader_lease_ms);
    if lead_first {
        while !control.leading() && (only_server || std::time::Instant::now() < give_up) {
            if sched.is_finished() {
                return Err(loop_stopped(sched.await));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    tracing::info!(replica = %me, "replica");
    let wakes = control.wakes.clone();
    // Held wait calls answer at once when the server stops.
    let stopping = move || {
        let wakes = wakes.clone();
        async move {
            shutdown().await;
            wakes.close();
        }
    };
    let services = services::Services::new(
        store.clone(),
        control.clone(),
        format!("server {me}"),
        cfg.router.clone(),
    );
    services.start();
    let app = http::router(http::AppState {
        store,
        control,
        data_dir: cfg.data_dir.clone(),
        prices: cfg.prices.clone(),
        services: services.clone(),
    });
    let std_listener = std::net::TcpListener::bind(cfg.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    match &cfg.tls {
        Some((cert, key)) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "TLS: cannot use {} and {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
            eprintln!("listening on {addr} ({scheme})");
            tracing::info!(%addr, scheme, policy = ?cfg.scheduler.queue_policy, "serving");
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                stopping().await;
                h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
            });
            let server = axum_server::from_tcp_rustls(std_listener, tls)
                .handle(handle)
                .serve(app.into_make_service());
            tokio::select! {
                r = server => r?,
                r = &mut sched => return Err(loop_stopped(r)),
            }
        }
        None => {
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            eprintln!("listening on {addr}");
            tracing::info!(%addr, scheme, policy = ?cfg.scheduler.queue_policy, "serving");
            let server = axum::serve(listener, app).with_graceful_shutdown(stopping());
            tokio::select! {
                r = server => r?,
                r = &mut sched => return Err(loop_stopped(r)),
            }
        }
    }
    // Tokens of the last answers are written before the process ends.
    services.flush().await;
    Ok(())
}

/// The loop only ends on its own when the store failed.
fn loop_stopped(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    tracing::error!("the scheduling loop stopped; exiting");
    match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => anyhow::anyhow!("the scheduling loop stopped"),
        Err(e) => anyhow::anyhow!("the scheduling loop panicked: {e}"),
    }
}

async fn shutdown() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
