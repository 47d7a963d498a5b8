//! The loop's writer: one thread that owns one SQLite connection and
//! commits batches of [`Write`]s with prepared statements, in the order
//! they are handed over.
//!
//! Why a thread and not the async pool: sqlx hands every statement (and
//! every row) to its connection's worker thread and back, a thread wake-up
//! each time; a batch of 30,000 starts is ~100,000 statements, and those
//! hand-offs, not SQLite, were 3/4 of the commit (`suanli bench server`).
//! Here a batch is one hand-off and its statements run back to back.
//!
//! Transactions begin IMMEDIATE: the write lock is taken up front, so a
//! concurrent writer (an admin's quota change on the pool) makes the batch
//! wait (busy timeout), never fail half-way with a stale snapshot.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::commit;
use crate::store::sql::FENCE;
use crate::store::{Committing, StoreError, Write};

type Reply = oneshot::Sender<Result<Duration, StoreError>>;

/// Handle to the writer thread; dropping it stops the thread.
pub(crate) struct Writer {
    tx: mpsc::Sender<(Vec<Write>, Reply)>,
    /// The leader epoch every batch checks (0: none); see `Backend::fence`.
    epoch: Arc<AtomicI64>,
}

impl Writer {
    /// Open a second connection to the database at `path` (already
    /// migrated) and start the thread.
    pub(super) fn start(path: &Path) -> Result<Writer, StoreError> {
        // One thread uses this connection: no per-call connection mutex.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        let (tx, rx) = mpsc::channel::<(Vec<Write>, Reply)>();
        let epoch = Arc::new(AtomicI64::new(0));
        let fence = epoch.clone();
        thread::Builder::new()
            .name("suanli-writer".to_string())
            .spawn(move || run(conn, rx, fence))
            .map_err(|e| StoreError::Writer(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { tx, epoch })
    }

    pub(super) fn fence(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Hand `writes` to the thread, to commit in one transaction after the
    /// batches handed over before; the answer resolves once it is durable
    /// (or rolled back).
    pub(super) fn commit(&self, writes: Vec<Write>) -> Committing {
        let (reply, answer) = oneshot::channel();
        // A send to a stopped thread drops the reply: the answer says so.
        let _ = self.tx.send((writes, reply));
        Committing::new(answer)
    }
}

/// Commit batches in order. After a failed batch, the later ones (computed
/// on top of it) are refused unapplied, so that no batch is ever durable
/// without every batch handed over before it.
fn run(mut conn: Connection, rx: mpsc::Receiver<(Vec<Write>, Reply)>, epoch: Arc<AtomicI64>) {
    let mut failed: Option<String> = None;
    while let Ok((writes, reply)) = rx.recv() {
        let r = match &failed {
            Some(why) => Err(StoreError::Writer(format!(
                "not applied: an earlier batch failed ({why})"
            ))),
            None => apply(&mut conn, &writes, epoch.load(Ordering::SeqCst)),
        };
        if let (Err(e), None) = (&r, &failed) {
            failed = Some(e.to_string());
        }
        let _ = reply.send(r);
    }
}

fn apply(conn: &mut Connection, writes: &[Write], epoch: i64) -> Result<Duration, StoreError> {
    let started = std::time::Instant::now();
    if writes.is_empty() {
        return Ok(started.elapsed());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if epoch > 0 {
        let held: Option<i64> = tx.query_row(FENCE, [epoch], |r| r.get(0)).optional()?;
        if held.is_none() {
            return Err(StoreError::Fenced(epoch));
        }
    }
    commit::apply(&tx, writes)?;
    tx.commit()?;
    Ok(started.elapsed())
}
