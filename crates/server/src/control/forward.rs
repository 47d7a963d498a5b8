//! Followers serve everything: a replica that does not hold the leader
//! lease stores each loop request (a submission, a cancel, an agent's
//! heartbeat, ...) in the store's inbox, where it is durable at once, hints
//! the leader, and waits for the answer the leader writes back.
//!
//! - **Follower** ([`Forwarder`]): `inbox_put` (one insert, committed),
//!   then wait for the answer row, woken by the leader's hint on
//!   [`channels::ANSWERS`] or, if a hint is lost, by polling the row. The
//!   same listener mirrors the leader's wake hints ([`channels::WAKES`])
//!   into this replica's [`Wakes`], so an agent holding a wait call here
//!   learns of its orders as fast as on the leader.
//! - **Leader** ([`intake`]): reads the open requests (woken by
//!   [`channels::INBOX`], polling as the fallback) and hands them to its
//!   loop, which applies each in a batch and writes its answer **in that
//!   batch's transaction** (`Write::Answer`). A request is thus applied
//!   exactly once whoever leads: a deposed leader's batch is refused whole,
//!   answer included, and the next leader finds the request still open.
//!
//! A follower that gets no answer within [`Forwarder::wait`] (no leader for
//! that long) answers 503 [`Gone::Unanswered`]: the request stays in the
//! inbox and is applied when a leader takes over; a submission retried
//! with its idempotency key is then answered with the same job.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use super::driver::Msg;
use super::{Answer, Command, Gone, Wakes};
use crate::store::{channels, now_ms, Note, Store};

/// What a follower stores in the inbox.
#[allow(clippy::large_enum_variant)] // nearly every request is an Ask
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Ask(Command),
    /// A tenant's weight or quotas changed in the store.
    TenantChanged(i64),
}

/// What the leader writes back: the answer, or why the request could not
/// be read (a replica of another version wrote it).
pub type Reply = Result<Answer, String>;

/// Answered requests are kept this long, then forgotten.
const KEEP_ANSWERS_MS: i64 = 10 * 60 * 1000;

/// The follower's side: store, hint, wait.
#[derive(Clone)]
pub struct Forwarder {
    store: Store,
    waiting: Arc<Mutex<HashMap<i64, Arc<Notify>>>>,
    /// Whether hints are heard (PostgreSQL): answers are then polled only
    /// as a fallback.
    hinted: bool,
    /// How long a request waits for its answer.
    pub wait: Duration,
}

/// Unregisters a waiting request however its wait ends.
struct Waiting<'a>(&'a Forwarder, i64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters().remove(&self.1);
    }
}

impl Forwarder {
    /// Start hearing the leader's hints; `mirror` is told of wake hints
    /// while `following()` says this replica does not lead (the leader
    /// wakes its own agents).
    pub async fn start(
        store: Store,
        wakes: Wakes,
        wait: Duration,
        following: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Forwarder {
        let hints = match store.listen(&[channels::ANSWERS, channels::WAKES]).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the leader's hints; polling");
                None
            }
        };
        let f = Forwarder {
            store,
            waiting: Default::default(),
            hinted: hints.is_some(),
            wait,
        };
        if let Some(rx) = hints {
            tokio::spawn(hear(f.clone(), rx, wakes, following));
        }
        f
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, id: i64) {
        if let Some(n) = self.waiters().get(&id) {
            n.notify_one();
        }
    }

    fn wake_every(&self) {
        for n in self.waiters().values() {
            n.notify_one();
        }
    }

    /// Store `f` for the leader and wait for its answer.
    pub async fn ask(&self, f: Forwarded) -> Result<Answer, Gone> {
        let body = serde_json::to_string(&f).map_err(|_| Gone::NotLeader)?;
        let id = match self.store.inbox_put(&body).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store a request for the leader");
                // Not stored: nothing was done.
                return Err(Gone::NotLeader);
            }
        };
        let note = Arc::new(Notify::new());
        self.waiters().insert(id, note.clone());
        let _guard = Waiting(self, id);
        let deadline = Instant::now() + self.wait;
        let poll = if self.hinted {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(20)
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    inbox = id,
                    "no leader answered in time; the request stays stored and is applied \
                     when a leader takes over"
                );
                return Err(Gone::Unanswered);
            }
            tokio::select! {
                _ = note.notified() => {}
                _ = tokio::time::sleep(poll.min(left)) => {}
            }
            match self.store.inbox_answer(id).await {
                Ok(Some(a)) => {
                    return match serde_json::from_str::<Reply>(&a) {
                        Ok(Ok(answer)) => Ok(answer),
                        Ok(Err(why)) => {
                            tracing::warn!(inbox = id, why, "the leader could not read a request");
                            Err(Gone::Unanswered)
                        }
                        Err(e) => {
                            tracing::warn!(inbox = id, error = %e, "unreadable answer");
                            Err(Gone::Unanswered)
                        }
                    };
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(inbox = id, error = %e, "reading an answer; again"),
            }
        }
    }
}

/// Hear hints: answers wake their waiting requests, wakes are mirrored; a
/// lost connection wakes everything (hints may have been missed).
async fn hear(
    f: Forwarder,
    mut rx: mpsc::Receiver<Note>,
    wakes: Wakes,
    following: impl Fn() -> bool,
) {
    while let Some(note) = rx.recv().await {
        match note {
            Note::Hint { channel, payload } if channel == channels::ANSWERS => {
                for id in payload.split(',').filter_map(|s| s.parse::<i64>().ok()) {
                    f.wake(id);
                }
            }
            Note::Hint { payload, .. } => {
                if following() {
                    if let Ok(names) = serde_json::from_str::<Vec<String>>(&payload) {
                        wakes.poke(&names);
                    }
                }
            }
            Note::Missed => {
                f.wake_every();
                if following() {
                    wakes.wake_all();
                }
            }
        }
    }
}

/// The leader's side: hand every open inbox request to the loop (`tx`),
/// each once per term, until the loop's channel closes or the task is
/// aborted (the term ended). Also forgets old answers. It holds the loop's
/// sender weakly: the loop still stops when its last handle is dropped.
pub(super) async fn intake(store: Store, loop_tx: mpsc::WeakSender<Msg>) {
    const PAGE: i64 = 4096;
    let mut hints = match store.listen(&[channels::INBOX]).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for followers' hints; polling");
            None
        }
    };
    let poll = if hints.is_some() {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(20)
    };
    // Requests handed to the loop and not yet answered in the store (their
    // batch is being committed).
    let mut sent: HashSet<i64> = HashSet::new();
    let mut forgot = Instant::now();
    loop {
        match store.inbox_open(0, PAGE).await {
            Ok(rows) => {
                let Some(tx) = loop_tx.upgrade() else {
                    return;
                };
                let open: HashSet<i64> = rows.iter().map(|(id, _)| *id).collect();
                for (id, body) in rows {
                    if !sent.insert(id) {
                        continue;
                    }
                    let msg = match serde_json::from_str::<Forwarded>(&body) {
                        Ok(f) => Msg::Inbox(id, f),
                        Err(e) => Msg::InboxUnreadable(id, e.to_string()),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                if (open.len() as i64) < PAGE {
                    sent.retain(|id| open.contains(id));
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the inbox; again"),
        }
        if forgot.elapsed() > Duration::from_secs(60) {
            forgot = Instant::now();
            if let Err(e) = store.inbox_forget(now_ms() - KEEP_ANSWERS_MS).await {
                tracing::debug!(error = %e, "forgetting old inbox answers");
            }
        }
        match &mut hints {
            Some(rx) => {
                tokio::select! {
                    n = rx.recv() => if n.is_none() { hints = None },
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            None => tokio::time::sleep(poll).await,
        }
        if loop_tx.strong_count() == 0 {
            return;
        }
    }
}
