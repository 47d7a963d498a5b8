//! Hints between replicas over PostgreSQL's LISTEN/NOTIFY: a follower that
//! stored a request tells the leader, the leader tells followers which
//! requests it answered and which nodes it gave orders to. Hints only
//! shorten waits: every listener also polls the rows the hint is about, so
//! a lost hint (a notification dropped with its connection) costs latency,
//! never correctness. A listener that reconnected says so ([`Note::Missed`]).

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::store::sql::Signals;
use crate::store::{Note, StoreError};

pub(super) struct PgSignals {
    pub(super) pool: PgPool,
}

#[async_trait::async_trait]
impl Signals for PgSignals {
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self, channels: &[&str]) -> Result<mpsc::Receiver<Note>, StoreError> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen_all(channels.iter().copied()).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let note = match l.try_recv().await {
                    Ok(Some(n)) => Note::Hint {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    },
                    // The connection was lost; the next call makes a new
                    // one and listens again.
                    Ok(None) => Note::Missed,
                    Err(e) => {
                        tracing::debug!(error = %e, "listening for hints; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Note::Missed
                    }
                };
                if tx.send(note).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }
}
