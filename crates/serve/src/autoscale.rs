//! How many replicas a service wants.
//!
//! The signal is the number of requests in flight (held by the router while
//! no replica is ready, queued at a replica, or being served), sampled by the
//! caller at every tick (the live router and the simulator tick every
//! second). The rules follow the autoscalers this field converged on
//! (Knative's KPA, which AIBrix and KServe use; Ray Serve's delays):
//!
//! * **Stable window** (60 s): the average in flight over the window, divided
//!   by the per-replica target and rounded up, is the replica count wanted.
//! * **Panic window** (6 s): when the short average asks for at least
//!   `panic_threshold` (2×) the replicas the service has, the service
//!   panics for one stable window: it follows the short average and never
//!   scales down meanwhile, so a burst is met in seconds, not a minute.
//! * **Tolerance band** (10%): a wish within the band of the current count
//!   changes nothing, so noise does not restart replicas.
//! * **Up and down delays**: a larger count is taken only once it was
//!   wished for the whole up delay (its smallest wish in that time); a
//!   smaller one only at the largest wish of the down delay (30 s), so a
//!   lull shorter than the delay keeps the replicas.
//! * **Scale to zero** (`min` = 0): after `idle_ms` with nothing in flight
//!   and no request, the service goes to zero at once (the idle period
//!   already is the delay). A request to a service at zero asks for one
//!   replica at once, whatever the up delay: the router holds that request
//!   (and any other that arrives meanwhile) until the replica is ready, so
//!   concurrent first requests share one scale-up.
//!
//! `min` and `max` bound every answer.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::Ms;

/// A service's scaling settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleConfig {
    /// Replicas kept however idle the service is (0: scale to zero).
    pub min: u32,
    /// Replicas started or ready never exceeded (replicas draining after a
    /// scale-down finish their requests beyond it).
    pub max: u32,
    /// Requests in flight one replica should carry.
    pub target_inflight: f64,
    pub stable_window_ms: Ms,
    pub panic_window_ms: Ms,
    /// Panic when the panic window wants this many times the replicas held.
    pub panic_threshold: f64,
    pub up_delay_ms: Ms,
    pub down_delay_ms: Ms,
    /// A wish within this fraction of the current count changes nothing.
    pub tolerance: f64,
    /// With `min` = 0: nothing in flight and no request for this long → 0.
    pub idle_ms: Ms,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            min: 0,
            max: 8,
            target_inflight: 4.0,
            stable_window_ms: 60_000,
            panic_window_ms: 6_000,
            panic_threshold: 2.0,
            up_delay_ms: 0,
            down_delay_ms: 30_000,
            tolerance: 0.1,
            idle_ms: 120_000,
        }
    }
}

/// A setting out of range, named by its field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct ScaleError {
    pub field: &'static str,
    pub why: String,
}

fn bad(field: &'static str, why: impl Into<String>) -> ScaleError {
    ScaleError {
        field,
        why: why.into(),
    }
}

/// The most replicas a service may ask for.
pub const MAX_REPLICAS: u32 = 10_000;

/// The longest window, delay or idle period: one year.
pub const MAX_DURATION_MS: Ms = 365 * 86_400_000;

impl ScaleConfig {
    pub fn validate(&self) -> Result<(), ScaleError> {
        if self.max == 0 || self.max > MAX_REPLICAS {
            return Err(bad(
                "max",
                format!("must be 1..={MAX_REPLICAS}, got {}", self.max),
            ));
        }
        if self.min > self.max {
            return Err(bad(
                "min",
                format!("must not exceed max ({}), got {}", self.max, self.min),
            ));
        }
        if !(self.target_inflight.is_finite() && self.target_inflight > 0.0) {
            return Err(bad(
                "target_inflight",
                format!("must be a positive number, got {}", self.target_inflight),
            ));
        }
        for (field, v) in [
            ("stable_window_ms", self.stable_window_ms),
            ("panic_window_ms", self.panic_window_ms),
            ("up_delay_ms", self.up_delay_ms),
            ("down_delay_ms", self.down_delay_ms),
            ("idle_ms", self.idle_ms),
        ] {
            if v > MAX_DURATION_MS {
                return Err(bad(field, "must be at most one year"));
            }
        }
        if self.stable_window_ms == 0 {
            return Err(bad("stable_window_ms", "must be positive"));
        }
        if self.panic_window_ms == 0 || self.panic_window_ms > self.stable_window_ms {
            return Err(bad(
                "panic_window_ms",
                "must be positive and at most the stable window",
            ));
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold >= 1.0) {
            return Err(bad(
                "panic_threshold",
                format!("must be at least 1, got {}", self.panic_threshold),
            ));
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            return Err(bad(
                "tolerance",
                format!("must be in [0, 1), got {}", self.tolerance),
            ));
        }
        if self.min == 0 && self.idle_ms == 0 {
            return Err(bad("idle_ms", "must be positive when min is 0"));
        }
        Ok(())
    }
}

/// One tick's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaling {
    /// Replicas the service should have now.
    pub desired: u32,
    /// Whether the service is panicking (following the short window).
    pub panic: bool,
    /// Average in flight over the stable window.
    pub stable_avg: f64,
    /// Average in flight over the panic window.
    pub panic_avg: f64,
}

/// A service's autoscaler: its samples and recent wishes.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    cfg: ScaleConfig,
    samples: VecDeque<(Ms, f64)>,
    wishes: VecDeque<(Ms, u32)>,
    panic_until: Option<Ms>,
    last_busy: Option<Ms>,
}

impl Autoscaler {
    pub fn new(cfg: ScaleConfig) -> Result<Self, ScaleError> {
        cfg.validate()?;
        Ok(Autoscaler {
            cfg,
            samples: VecDeque::new(),
            wishes: VecDeque::new(),
            panic_until: None,
            last_busy: None,
        })
    }

    pub fn config(&self) -> &ScaleConfig {
        &self.cfg
    }

    /// New settings (a `service update`); the samples, the recent wishes
    /// (so the delays still hold) and a panic under way are kept.
    pub fn reconfigure(&mut self, cfg: ScaleConfig) -> Result<(), ScaleError> {
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// A request arrived: the service is not idle.
    pub fn note_request(&mut self, now: Ms) {
        self.last_busy = Some(self.last_busy.map_or(now, |t| t.max(now)));
    }

    /// Whether the service has been idle long enough to go to zero.
    fn idle(&self, now: Ms, inflight: u32) -> bool {
        inflight == 0
            && self
                .last_busy
                .is_none_or(|t| now.saturating_sub(t) >= self.cfg.idle_ms)
    }

    /// One sample and the replica count wanted. `inflight`: requests in
    /// flight now; `current`: replicas the service has (starting or ready,
    /// not those already draining). Called every tick, and also at once
    /// when a request reaches a service with no replica.
    pub fn tick(&mut self, now: Ms, inflight: u32, current: u32) -> Scaling {
        self.tick_load(now, inflight as f64, inflight > 0, current)
    }

    /// [`Autoscaler::tick`] on another measure of outstanding work, in the
    /// unit of `target_inflight` (the simulator's `work` signal: seconds of
    /// replica time the outstanding requests still need). `busy`: whether
    /// any request is in flight (a service with one is never idle, and at
    /// zero it wakes).
    pub fn tick_load(&mut self, now: Ms, load: f64, busy: bool, current: u32) -> Scaling {
        let load = if load.is_finite() { load.max(0.0) } else { 0.0 };
        let inflight = u32::from(busy);
        if busy {
            self.note_request(now);
        }
        let cfg = &self.cfg;
        self.samples.push_back((now, load));
        let stable_from = now.saturating_sub(cfg.stable_window_ms);
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t <= stable_from && t < now)
        {
            self.samples.pop_front();
        }
        let panic_from = now.saturating_sub(cfg.panic_window_ms);
        let (mut sum, mut n, mut psum, mut pn) = (0.0f64, 0u64, 0.0f64, 0u64);
        for &(t, v) in &self.samples {
            sum += v;
            n += 1;
            if t > panic_from || t == now {
                psum += v;
                pn += 1;
            }
        }
        let stable_avg = sum / n.max(1) as f64;
        let panic_avg = psum / pn.max(1) as f64;
        let want = |avg: f64| -> u32 {
            let w = (avg / cfg.target_inflight).ceil();
            if w >= MAX_REPLICAS as f64 {
                MAX_REPLICAS
            } else {
                w as u32
            }
        };
        let (want_stable, want_panic) = (want(stable_avg), want(panic_avg));
        if current > 0 && want_panic as f64 >= cfg.panic_threshold * current as f64 {
            self.panic_until = Some(now + cfg.stable_window_ms);
        }
        let panic = self.panic_until.is_some_and(|t| t > now);
        let mut raw = if panic {
            want_panic.max(current)
        } else {
            want_stable
        };
        if current > 0 && (raw as f64 - current as f64).abs() <= cfg.tolerance * current as f64 {
            raw = current;
        }
        let idle = self.idle(now, inflight);
        let floor = if cfg.min > 0 {
            cfg.min
        } else if idle {
            0
        } else {
            1
        };
        // Idle for the idle period: zero, whatever the windows remember.
        let raw = if idle && cfg.min == 0 {
            0
        } else {
            raw.clamp(floor, cfg.max)
        };
        let keep = cfg.up_delay_ms.max(cfg.down_delay_ms);
        self.wishes.push_back((now, raw));
        while self.wishes.front().is_some_and(|&(t, _)| t + keep < now) {
            self.wishes.pop_front();
        }
        let within = |delay: Ms| {
            let from = now.saturating_sub(delay);
            self.wishes
                .iter()
                .filter(move |&&(t, _)| t >= from)
                .map(|&(_, w)| w)
        };
        let desired = if current == 0 && inflight > 0 {
            // A request waits: one replica at once, more when wished for.
            raw.max(1)
        } else if raw > current {
            within(cfg.up_delay_ms).min().unwrap_or(raw).max(current)
        } else if raw < current {
            if raw == 0 && idle {
                0
            } else {
                within(cfg.down_delay_ms).max().unwrap_or(raw).min(current)
            }
        } else {
            current
        };
        Scaling {
            desired: desired.clamp(floor.min(cfg.max), cfg.max),
            panic,
            stable_avg,
            panic_avg,
        }
    }
}
