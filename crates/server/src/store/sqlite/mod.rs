//! The SQLite backend (the embedded default): WAL, synchronous=FULL,
//! foreign keys, busy timeout, migrations from `migrations/` embedded at
//! build time. Reads and admin writes are the shared SQL of `sql.rs` over
//! an async pool (sqlx); the loop's batches go through `writer.rs`, one
//! thread with its own connection.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Sqlite;

mod commit;
mod writer;

use super::sql::{Commit, SqlStore};
use super::*;

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

/// SQLite's clock in ms since the Unix epoch (its Julian day numbers have
/// sub-millisecond precision).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

impl SqlStore<Sqlite> {
    /// Open (creating if needed) `DIR/suanli.db` and bring its schema up to date.
    pub async fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let url = format!("sqlite://{}", dir.join("suanli.db").display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let writer = writer::Writer::start(&dir.join("suanli.db"))?;
        Ok(SqlStore {
            pool,
            writer: Box::new(writer),
            now_sql: NOW_MS,
            signals: None,
        })
    }
}

impl Commit for writer::Writer {
    fn commit(&self, writes: Vec<Write>) -> Committing {
        writer::Writer::commit(self, writes)
    }
    fn fence(&self, epoch: i64) {
        writer::Writer::fence(self, epoch)
    }
}
