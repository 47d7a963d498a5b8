//! Which replica runs the scheduling loop: the holder of the store's leader
//! lease (`Backend::lease`), one at a time.
//!
//! A replica tries to take the lease while it has expired (every sixth of
//! its TTL); once it holds it, it fences its store with the lease's epoch
//! (every batch the loop commits first checks, in its transaction, that the
//! epoch is still the lease's), recovers the loop from the store and runs
//! it behind its [`Control`], and renews the lease every third of the TTL.
//! It stops leading when a renewal finds another holder, when it cannot
//! renew for a whole TTL, or when the store refuses a batch as stale (it
//! was stopped or cut off past its lease, and another took over): the loop
//! is detached (calls answer 503, clients go to another replica), the
//! refusal is counted, and the replica goes back to waiting for the lease.
//! A store failure of any other kind stops the server (crash-only: a restart
//! recovers from the store).
//!
//! Each term opens its own store (`Opener`): the writer of a deposed term
//! refuses everything after its refused batch, by design.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::{Control, LoopConfig};
use crate::store::{Store, StoreError};

/// Opens a new handle on the store (a new writer) for each term.
pub type Opener =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<Store>> + Send>> + Send + Sync>;

/// A name for this replica in the lease: host, process, and a random part
/// (a restarted process is another holder).
pub fn replica_name(listen: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    let nonce: u32 = rand::random();
    format!("{host}:{}:{listen}:{nonce:08x}", std::process::id())
}

/// Run for as long as the server does: wait for the lease, lead, and again.
/// `store` answers the lease calls; `open` gives each term its own store.
/// With `only_server` (SQLite, whose file one server holds) a live lease is
/// taken at once: it can only be a previous run's. Returns only on a store
/// failure the loop cannot go on from, or a state that fails recovery.
pub async fn keep_lease(
    store: Store,
    open: Opener,
    control: Control,
    cfg: LoopConfig,
    me: String,
    only_server: bool,
) -> anyhow::Result<()> {
    let ttl = cfg.leader_lease_ms.max(1000) as i64;
    let try_every = Duration::from_millis(ttl as u64 / 6);
    loop {
        let epoch = match bounded(ttl, store.lease(&me, None, ttl, only_server)).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                tokio::time::sleep(try_every).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leader lease; trying again");
                tokio::time::sleep(try_every).await;
                continue;
            }
        };
        let taken = Instant::now();
        // Renewed from now on, recovery included (a big store takes a
        // while to read): `lost` says when it is not.
        let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
        let renewer = tokio::spawn(renew(store.clone(), me.clone(), epoch, ttl, lost_tx));
        let term = match open().await {
            Ok(t) => t,
            Err(e) => {
                // The database is unreachable: give the lease up to expiry.
                renewer.abort();
                tracing::warn!(error = %e, epoch, "cannot open the store to lead; waiting");
                tokio::time::sleep(try_every).await;
                continue;
            }
        };
        term.fence(epoch);
        let mut task = match control.lead(term, &cfg).await {
            Ok(t) => t,
            Err(e) => {
                renewer.abort();
                // A state that fails its checks (or a store that fails
                // while it is read): crash-only, a restart tries again.
                return Err(e);
            }
        };
        control.metrics.set_leader(true, epoch);
        tracing::info!(
            epoch,
            replica = %me,
            recovered_in_ms = taken.elapsed().as_millis() as u64,
            "took the leader lease: this replica runs the scheduling loop"
        );
        let ended = tokio::select! {
            r = &mut task => Some(r),
            _ = lost.wait_for(|l| *l) => None,
        };
        renewer.abort();
        control.follow();
        control.metrics.set_leader(false, epoch);
        let ended = match ended {
            Some(r) => Some(r),
            // Deposed: the loop, its sender gone, lands what it handed to
            // the store (a batch of a stale term is refused there, and
            // counted here) and stops.
            None => {
                match tokio::time::timeout(Duration::from_millis(ttl as u64), &mut task).await {
                    Ok(r) => Some(r),
                    Err(_) => {
                        task.abort();
                        None
                    }
                }
            }
        };
        match ended {
            None => {}
            Some(Ok(Err(e))) if fenced(&e) => {
                control.metrics.stale_write_refused();
                tracing::warn!(
                    epoch,
                    "a batch was refused: another replica took the lease while this one \
                     was stopped or cut off; its decisions stand, this replica follows"
                );
            }
            Some(Ok(Err(e))) => return Err(e),
            Some(Ok(Ok(()))) => {}
            Some(Err(e)) => return Err(anyhow::anyhow!("the scheduling loop panicked: {e}")),
        }
    }
}

/// Renew the lease `epoch` every third of its TTL; set `lost` when another
/// holds it, or when no renewal succeeded for a whole TTL.
async fn renew(
    store: Store,
    me: String,
    epoch: i64,
    ttl: i64,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let every = Duration::from_millis(ttl as u64 / 3);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match bounded(ttl, store.lease(&me, Some(epoch), ttl, false)).await {
            Ok(Some(_)) => renewed = Instant::now(),
            Ok(None) => {
                tracing::warn!(epoch, "another replica holds the leader lease");
                break;
            }
            Err(e) if renewed.elapsed() < Duration::from_millis(ttl as u64) => {
                tracing::warn!(error = %e, epoch, "cannot renew the leader lease; retrying");
            }
            Err(e) => {
                tracing::warn!(error = %e, epoch, "no renewal for a whole lease; stepping down");
                break;
            }
        }
    }
    let _ = lost.send(true);
}

/// A lease call that gives up after a third of the TTL (a database that
/// hangs must not keep a replica from noticing it lost the lease).
async fn bounded<T>(
    ttl: i64,
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(Duration::from_millis(ttl as u64 / 3), f).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Writer("the lease call timed out".to_string())),
    }
}

fn fenced(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<StoreError>(), Some(StoreError::Fenced(_))))
}
