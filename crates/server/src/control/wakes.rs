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

/// Most wait calls one node may hold at once (its agent holds one).
pub const MAX_WAITS_PER_NODE: usize = 4;

struct Node {
    seq: watch::Sender<u64>,
    /// Wait calls held now.
    waiting: usize,
}

struct Inner {
    /// Node name → its sequence. Only names the loop gave orders to, or
    /// that a node's own credential waited on, are ever inserted, so the
    /// map is bounded by the nodes registered.
    nodes: Mutex<HashMap<String, Node>>,
    /// Where every sequence starts: this server's boot time (ns), so that
    /// an agent's `seen` from before a restart never equals a new
    /// sequence (the agent then heartbeats at once instead of waiting).
    base: u64,
    /// Set once at shutdown: every wait answers at once, so the server's
    /// graceful stop does not wait out the holds.
    closed: watch::Sender<bool>,
}

impl Default for Wakes {
    fn default() -> Self {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Wakes {
            inner: Arc::new(Inner {
                nodes: Mutex::new(HashMap::new()),
                base,
                closed: watch::channel(false).0,
            }),
        }
    }
}

/// A node already holds [`MAX_WAITS_PER_NODE`] wait calls.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyWaits;

/// Counts a held wait; uncounts it however the wait ends.
struct Held<'a>(&'a Wakes, &'a str);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0.nodes().get_mut(self.1) {
            n.waiting -= 1;
        }
    }
}

impl Wakes {
    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Node>> {
        // The map holds plain counters: a panic elsewhere cannot leave it
        // inconsistent.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn node<'m>(&self, m: &'m mut HashMap<String, Node>, name: &str) -> &'m mut Node {
        m.entry(name.to_string()).or_insert_with(|| Node {
            seq: watch::channel(self.inner.base).0,
            waiting: 0,
        })
    }

    /// New orders for these nodes are durable: wake their waiting agents.
    pub fn poke<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let mut m = self.nodes();
        for n in names {
            self.node(&mut m, n)
                .seq
                .send_modify(|s| *s = s.wrapping_add(1));
        }
    }

    /// Answer every wait held now: this replica stopped leading, and its
    /// agents should heartbeat, hear that, and move to another replica.
    pub fn wake_all(&self) {
        for n in self.nodes().values() {
            n.seq.send_modify(|s| *s = s.wrapping_add(1));
        }
    }

    /// Wait until node `name`'s sequence differs from `seen`, the timeout
    /// passes or the server shuts down; the sequence then. Refused when
    /// the node already holds [`MAX_WAITS_PER_NODE`] waits.
    pub async fn wait(
        &self,
        name: &str,
        seen: u64,
        timeout: Duration,
    ) -> Result<u64, TooManyWaits> {
        let mut rx = {
            let mut m = self.nodes();
            let n = self.node(&mut m, name);
            if n.waiting >= MAX_WAITS_PER_NODE {
                return Err(TooManyWaits);
            }
            n.waiting += 1;
            n.seq.subscribe()
        };
        let _held = Held(self, name);
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
        Ok(s)
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
        let base = w.inner.base;
        let a = "a".to_string();
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("a", base, Duration::from_secs(30)).await })
        };
        let other = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("b", base, Duration::from_millis(200)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.poke([&a]);
        assert_eq!(waiter.await.unwrap(), Ok(base + 1));
        assert_eq!(other.await.unwrap(), Ok(base), "b timed out unchanged");
        // A stale `seen` (0: an agent's first call, or one from before a
        // restart) answers at once; the current one holds.
        assert_eq!(w.wait("a", 0, Duration::from_secs(30)).await, Ok(base + 1));
        let t = std::time::Instant::now();
        assert_eq!(
            w.wait("a", base + 1, Duration::from_millis(50)).await,
            Ok(base + 1)
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_node_holds_a_bounded_number_of_waits() {
        let w = Wakes::default();
        let base = w.inner.base;
        let held: Vec<_> = (0..MAX_WAITS_PER_NODE)
            .map(|_| {
                let w = w.clone();
                tokio::spawn(async move { w.wait("a", base, Duration::from_secs(30)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            w.wait("a", base, Duration::from_millis(1)).await,
            Err(TooManyWaits)
        );
        assert!(w.wait("b", base, Duration::from_millis(1)).await.is_ok());
        w.poke([&"a".to_string()]);
        for h in held {
            assert_eq!(h.await.unwrap(), Ok(base + 1));
        }
        // Every ended wait was uncounted.
        assert!(w
            .wait("a", base + 1, Duration::from_millis(1))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn closing_answers_every_wait() {
        let w = Wakes::default();
        let base = w.inner.base;
        let held = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("a", base, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.close();
        let r = tokio::time::timeout(Duration::from_secs(5), held).await;
        assert_eq!(r.expect("answered at close").unwrap(), Ok(base));
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            w.wait("a", base, Duration::from_secs(60)),
        );
        assert_eq!(r.await.expect("answered after close"), Ok(base));
    }
}
