//! The loop's writer on PostgreSQL: one task that owns one connection and
//! commits batches of [`Write`]s in the order they are handed over, each in
//! one transaction. After a failed batch, the later ones (computed on top
//! of it) are refused unapplied, so no batch is ever durable without every
//! batch handed over before it; a lost connection fails the batch (the
//! server stops, and a restart recovers from the store).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, oneshot};

use super::commit;
use crate::store::sql::{Commit, FENCE};
use crate::store::{Committing, StoreError, Write};

type Reply = oneshot::Sender<Result<Duration, StoreError>>;

/// Handle to the writer task; dropping it stops the task.
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<(Vec<Write>, Reply)>,
    /// The leader epoch every batch checks (0: none); see `Backend::fence`.
    epoch: Arc<AtomicI64>,
}

impl Writer {
    pub(super) fn start(conn: PgConnection) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let epoch = Arc::new(AtomicI64::new(0));
        tokio::spawn(run(conn, rx, epoch.clone()));
        Writer { tx, epoch }
    }
}

impl Commit for Writer {
    fn commit(&self, writes: Vec<Write>) -> Committing {
        let (reply, answer) = oneshot::channel();
        // A send to a stopped task drops the reply: the answer says so.
        let _ = self.tx.send((writes, reply));
        Committing::new(answer)
    }

    fn fence(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }
}

async fn run(
    mut conn: PgConnection,
    mut rx: mpsc::UnboundedReceiver<(Vec<Write>, Reply)>,
    epoch: Arc<AtomicI64>,
) {
    let mut failed: Option<String> = None;
    while let Some((writes, reply)) = rx.recv().await {
        let r = match &failed {
            Some(why) => Err(StoreError::Writer(format!(
                "not applied: an earlier batch failed ({why})"
            ))),
            None => apply(&mut conn, &writes, epoch.load(Ordering::SeqCst)).await,
        };
        if let (Err(e), None) = (&r, &failed) {
            failed = Some(e.to_string());
        }
        let _ = reply.send(r);
    }
    let _ = conn.close().await;
}

async fn apply(
    conn: &mut PgConnection,
    writes: &[Write],
    epoch: i64,
) -> Result<Duration, StoreError> {
    let started = Instant::now();
    if writes.is_empty() {
        return Ok(started.elapsed());
    }
    let mut tx = conn.begin().await?;
    if epoch > 0 {
        let held: Option<i64> = sqlx::query_scalar(FENCE)
            .bind(epoch)
            .fetch_optional(&mut *tx)
            .await?;
        if held.is_none() {
            return Err(StoreError::Fenced(epoch));
        }
    }
    commit::apply(&mut tx, writes).await?;
    tx.commit().await?;
    Ok(started.elapsed())
}
