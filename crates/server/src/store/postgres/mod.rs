//! The PostgreSQL backend, for a control plane that outgrows one machine:
//! `suanli server --store postgres://USER:PASS@HOST:PORT/DB` (TLS through
//! `sslmode` and `sslrootcert` in the URL). Reads and admin writes are the
//! shared SQL of `sql.rs` over an sqlx pool; the loop's batches go through
//! `writer.rs`, one task with its own connection, as array statements
//! (`commit.rs`). Migrations from `migrations-postgres/`, embedded at build
//! time, run under PostgreSQL's advisory lock (sqlx takes it), each in its
//! own transaction, so servers of different versions starting together do
//! not race.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Postgres};

mod commit;
mod signals;
mod writer;

use super::sql::SqlStore;
use super::StoreError;

/// The PostgreSQL store.
pub type PgStore = SqlStore<Postgres>;

/// The database server's clock in ms since the Unix epoch (the time of the
/// statement, not of its transaction).
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

impl SqlStore<Postgres> {
    /// Connect to the database at `url` and bring its schema up to date.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let opts = PgConnectOptions::from_str(url)?.application_name("suanli-server");
        // A lock held by a stopped or cut-off server (the leader row, its
        // batch's rows) must not stall everyone for the hours TCP takes to
        // notice: reads and admin writes give up on a lock after 5 s, and
        // the loop's writer, whose transactions never wait on their
        // client, is ended by the server when idle in one for 5 s.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone().options([("lock_timeout", "5s")]))
            .await?;
        // Migrations wait for each other (and for a replica's queries)
        // without a lock timeout, on a connection of their own.
        let m = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations-postgres").run(&m).await?;
        m.close().await;
        let conn = opts
            .options([("idle_in_transaction_session_timeout", "5s")])
            .connect()
            .await?;
        Ok(SqlStore {
            pool: pool.clone(),
            writer: Box::new(writer::Writer::start(conn)),
            now_sql: NOW_MS,
            signals: Some(Box::new(signals::PgSignals { pool })),
        })
    }
}

/// Create a new, empty database named `PREFIX_<pid>_<nanos>_<n>` on the
/// server that `url` names (its user must be allowed to create databases)
/// and return the URL of the new database: for tests and benchmarks, each
/// of which wants a store of its own.
pub async fn scratch_database(url: &str, prefix: &str) -> Result<String, StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 63 {
        return Err(StoreError::Refused(format!(
            "database name {name:?}: letters, digits and _ only, at most 63"
        )));
    }
    let opts = PgConnectOptions::from_str(url)?;
    let mut conn = opts.connect().await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = match base.rsplit_once('/') {
        Some((host, _db)) if host.contains("://") && !host.ends_with('/') => host,
        _ => base,
    };
    Ok(format!("{base}/{name}{query}"))
}
