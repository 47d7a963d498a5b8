//! Pushing work to agents: one sequence number per node, bumped after the
//! loop commits a batch that gave the node new orders (a start or a stop).
//! An agent holds a wait call (`GET /v1/agents/{name}/wait`) on its node's
//! number and heartbeats as soon as it changes, so it learns of work in
//! milliseconds instead of at its next poll. The orders themselves still
//! come only from heartbeats, from committed rows, and leases are
//! unchanged: a wait is not a heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// The nodes' order sequences, shared by the loop's driver (which bumps
/// them) and the wait handlers (which watch them).
#[derive(Clone)]
pub struct Wakes {
    inner: Arc<Inner>,
}

struct Inner {
    /// Node name → its sequence. Only names the loop gave orders to, or
    /// that a node's own credential waited on, are ever inserted, so the
    /// map is bounded by the nodes registered.
    nodes: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Set once at shutdown: every wait answers at once, so the server's
    /// graceful stop does not wait out the holds.
    closed: watch::Sender<bool>,
}

impl Default for Wakes {
    fn default() -> Self {
        Wakes {
            inner: Arc::new(Inner {
                nodes: Mutex::new(HashMap::new()),
                closed: watch::channel(false).0,
            }),
        }
    }
}

impl Wakes {
    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // The map holds plain counters: a panic elsewhere cannot leave it
        // inconsistent.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// New orders for these nodes are durable: wake their waiting agents.
    pub fn poke<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let mut m = self.nodes();
        for n in names {
            m.entry(n.clone())
                .or_insert_with(|| watch::channel(0).0)
                .send_modify(|s| *s = s.wrapping_add(1));
        }
    }

    /// Wait until node `name`'s sequence differs from `seen`, the timeout
    /// passes or the server shuts down; the sequence then.
    pub async fn wait(&self, name: &str, seen: u64, timeout: Duration) -> u64 {
        let mut rx = {
            let mut m = self.nodes();
            match m.get(name) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(0);
                    m.insert(name.to_string(), tx);
                    rx
                }
            }
        };
        let mut closed = self.inner.closed.subscribe();
        let changed = async {
            // Err: the sender is gone, which never happens while the map
            // holds it; answer with what is known.
            let _ = rx.wait_for(|s| *s != seen).await;
        };
        tokio::select! {
            _ = changed => {}
            _ = closed.wait_for(|c| *c) => {}
            _ = tokio::time::sleep(timeout) => {}
        }
        let s = *rx.borrow();
        s
    }

    /// The server is stopping: answer every wait now and from now on.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poke_wakes_the_node_and_only_it() {
        let w = Wakes::default();
        let a = "a".to_string();
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("a", 0, Duration::from_secs(30)).await })
        };
        let other = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("b", 0, Duration::from_millis(200)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.poke([&a]);
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(other.await.unwrap(), 0, "b timed out unchanged");
        // A stale `seen` answers at once; the current one holds.
        assert_eq!(w.wait("a", 0, Duration::from_secs(30)).await, 1);
        let t = std::time::Instant::now();
        assert_eq!(w.wait("a", 1, Duration::from_millis(50)).await, 1);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn closing_answers_every_wait() {
        let w = Wakes::default();
        let held = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("a", 0, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.close();
        let r = tokio::time::timeout(Duration::from_secs(5), held).await;
        assert_eq!(r.expect("answered at close").unwrap(), 0);
        let r = tokio::time::timeout(Duration::from_secs(5), w.wait("a", 0, Duration::MAX));
        assert_eq!(r.await.expect("answered after close"), 0);
    }
}
