//! Which replicas a router may send to: readiness probes, eviction, and
//! the requests each holds.
//!
//! A replica takes traffic only once its readiness probe answered (no
//! probe before `initial_delay_ms`, then one every `period_ms`; ready after
//! `success_threshold` answers in a row). It is evicted after
//! `failure_threshold` failed probes in a row (2 by default: a replica that
//! stops answering is out within two probe periods), or at once when a
//! request could not reach it (connection refused or reset before the
//! request was sent): such a request is retried on another replica, since
//! no replica saw it. An evicted replica is still probed and comes back
//! when it answers again. Picking is [`crate::Picker`]'s over the ready
//! replicas and their outstanding requests. Time is passed in; no IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Ms, Picker, Route};

/// A service's readiness probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub initial_delay_ms: Ms,
    pub period_ms: Ms,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            initial_delay_ms: 0,
            period_ms: 1_000,
            success_threshold: 1,
            failure_threshold: 2,
        }
    }
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.period_ms == 0 || self.period_ms > 3_600_000 {
            return Err(format!(
                "period_ms: must be 1..=3600000, got {}",
                self.period_ms
            ));
        }
        if self.initial_delay_ms > 3_600_000 {
            return Err(format!(
                "initial_delay_ms: at most 3600000, got {}",
                self.initial_delay_ms
            ));
        }
        for (name, v) in [
            ("success_threshold", self.success_threshold),
            ("failure_threshold", self.failure_threshold),
        ] {
            if !(1..=100).contains(&v) {
                return Err(format!("{name}: must be 1..=100, got {v}"));
            }
        }
        Ok(())
    }
}

/// Where a replica stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not yet answered its probe: no traffic.
    Starting,
    Ready,
    /// Stopped answering: no traffic, still probed.
    Evicted,
    /// Being stopped (scale-down): no new traffic; it finishes what it
    /// holds.
    Draining,
}

#[derive(Clone, Debug)]
struct Replica {
    health: Health,
    next_probe: Ms,
    oks: u32,
    fails: u32,
    outstanding: u32,
}

/// A router's view of one service's replicas, keyed by replica id.
#[derive(Clone, Debug)]
pub struct Replicas {
    cfg: ProbeConfig,
    replicas: BTreeMap<u64, Replica>,
    picker: Picker,
}

impl Replicas {
    pub fn new(cfg: ProbeConfig, route: Route) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Replicas {
            cfg,
            replicas: BTreeMap::new(),
            picker: Picker::new(route),
        })
    }

    /// A replica was started (its first probe is after the initial delay).
    pub fn add(&mut self, id: u64, now: Ms) {
        self.replicas.entry(id).or_insert(Replica {
            health: Health::Starting,
            next_probe: now.saturating_add(self.cfg.initial_delay_ms),
            oks: 0,
            fails: 0,
            outstanding: 0,
        });
    }

    /// A replica is gone (stopped, or its task ended).
    pub fn remove(&mut self, id: u64) {
        self.replicas.remove(&id);
    }

    /// Send no more requests to `id`: it is being stopped once its
    /// outstanding requests end.
    pub fn drain(&mut self, id: u64) {
        if let Some(r) = self.replicas.get_mut(&id) {
            r.health = Health::Draining;
        }
    }

    /// Every replica and where it stands, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Health, u32)> + '_ {
        self.replicas
            .iter()
            .map(|(&id, r)| (id, r.health, r.outstanding))
    }

    pub fn health(&self, id: u64) -> Option<Health> {
        self.replicas.get(&id).map(|r| r.health)
    }

    pub fn outstanding(&self, id: u64) -> Option<u32> {
        self.replicas.get(&id).map(|r| r.outstanding)
    }

    /// Replicas whose probe is due; each is scheduled one period on.
    pub fn probes_due(&mut self, now: Ms) -> Vec<u64> {
        let period = self.cfg.period_ms;
        let mut due = Vec::new();
        for (&id, r) in &mut self.replicas {
            if r.next_probe <= now {
                due.push(id);
                r.next_probe = now.saturating_add(period);
            }
        }
        due
    }

    /// A probe's outcome (`ok`: it answered 200 in time).
    pub fn probed(&mut self, id: u64, ok: bool) {
        let cfg = &self.cfg;
        let Some(r) = self.replicas.get_mut(&id) else {
            return;
        };
        if r.health == Health::Draining {
            return;
        }
        if ok {
            r.fails = 0;
            r.oks = r.oks.saturating_add(1);
            if r.oks >= cfg.success_threshold {
                r.health = Health::Ready;
            }
        } else {
            r.oks = 0;
            r.fails = r.fails.saturating_add(1);
            if r.fails >= cfg.failure_threshold && r.health == Health::Ready {
                r.health = Health::Evicted;
            }
        }
    }

    /// The replica to send a request to (counted as outstanding until
    /// [`Replicas::finished`]); `None` while no replica is ready.
    pub fn pick(&mut self) -> Option<u64> {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        let view: Vec<Option<u32>> = self
            .replicas
            .values()
            .map(|r| (r.health == Health::Ready).then_some(r.outstanding))
            .collect();
        let i = self.picker.pick(&view)?;
        let id = ids[i];
        let r = self.replicas.get_mut(&id).expect("picked from the map");
        r.outstanding += 1;
        Some(id)
    }

    /// A request sent to `id` ended. `reached`: false when it never reached
    /// the replica (connection refused or reset before the request was
    /// sent), which evicts the replica at once.
    pub fn finished(&mut self, id: u64, reached: bool) {
        if let Some(r) = self.replicas.get_mut(&id) {
            r.outstanding = r.outstanding.saturating_sub(1);
            if !reached && r.health == Health::Ready {
                r.health = Health::Evicted;
                r.oks = 0;
            }
        }
    }

    /// Whether any replica takes traffic.
    pub fn any_ready(&self) -> bool {
        self.replicas.values().any(|r| r.health == Health::Ready)
    }
}

/// Whether a failed request may be sent again: only one that never reached
/// a replica (no replica may have acted on it), and at most `max_attempts`
/// sends in all.
pub fn retryable(reached: bool, attempts: u32, max_attempts: u32) -> bool {
    !reached && attempts < max_attempts
}
