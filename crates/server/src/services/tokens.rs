//! Tokens sold, on their way to the store: the proxy hands each answered
//! request's row over without waiting; one task writes them in batches (at
//! least every `flush_every`, at once past `BATCH` rows), one transaction
//! each, each request id once (`ON CONFLICT DO NOTHING`: a request the
//! router sent twice is one row), to the store or, from a gateway, through
//! the server. A batch that fails is kept and written
//! again (rows are never dropped while the process lives); at shutdown
//! the server flushes what is buffered. What an unclean crash can lose is
//! the last `flush_every` of rows, in the customer's favour.

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use super::RouterSource;
use crate::store::TokenRow;

/// Rows per transaction at most.
const BATCH: usize = 2_000;

enum Msg {
    Row(TokenRow),
    Flush(oneshot::Sender<()>),
}

pub(super) struct Sink(mpsc::UnboundedSender<Msg>);

impl Sink {
    pub(super) fn new(store: Arc<dyn RouterSource>, every: Duration) -> Sink {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, every, rx));
        Sink(tx)
    }

    pub(super) fn send(&self, row: TokenRow) {
        let _ = self.0.send(Msg::Row(row));
    }

    /// Returns once every row sent before the call is written (or the
    /// writer is gone).
    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write(
    store: Arc<dyn RouterSource>,
    every: Duration,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut buf: Vec<TokenRow> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    // When the oldest buffered row must be written by.
    let mut deadline = Instant::now();
    let mut closed = false;
    loop {
        let take = |m: Msg, buf: &mut Vec<TokenRow>, waiting: &mut Vec<oneshot::Sender<()>>| match m
        {
            Msg::Row(r) => buf.push(r),
            Msg::Flush(t) => waiting.push(t),
        };
        let was_empty = buf.is_empty();
        if !closed {
            // A message, or `None` when the oldest row's deadline came.
            let m = if buf.is_empty() && waiting.is_empty() {
                Some(rx.recv().await)
            } else {
                tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(deadline) => None,
                }
            };
            match m {
                Some(Some(m)) => take(m, &mut buf, &mut waiting),
                Some(None) => closed = true,
                None => {}
            }
            while let Ok(m) = rx.try_recv() {
                take(m, &mut buf, &mut waiting);
            }
        }
        if was_empty && !buf.is_empty() {
            deadline = Instant::now() + every;
        }
        let due = !waiting.is_empty() || closed || buf.len() >= BATCH || Instant::now() >= deadline;
        if due && !buf.is_empty() {
            let n = buf.len().min(BATCH);
            match store.record_tokens(&buf[..n]).await {
                Ok(_) => {
                    buf.drain(..n);
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = buf.len(), "cannot record token usage; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if buf.is_empty() {
            for t in waiting.drain(..) {
                let _ = t.send(());
            }
            if closed {
                return;
            }
        }
    }
}
