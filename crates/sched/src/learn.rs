//! The target workload learned from arrivals, for the fragmentation-aware
//! policies: what the pool will be asked for next, estimated from what it
//! was asked for last. The same code runs in the simulators and in the
//! live pool (inside [`crate::scheduler::Scheduler::submit`]).
//!
//! - **Decay by count of arrivals**: the estimate is the typical workload
//!   ([`Workload::typical`]'s 95% rule) of the last `window` jobs, each
//!   weighted by its task count. A job falls out of it `window` arrivals
//!   later: recent demand, not a whole history, shapes the target.
//! - **Bounded memory**: the window's shapes and a count per distinct shape
//!   (at most `window` of each).
//! - **Deterministic**: the estimate is recomputed at fixed arrival numbers
//!   (1, 2, 4, ... up to `refresh`, then every `refresh`), from the window
//!   alone; so it is a function of the arrival sequence only, and a restart
//!   rebuilds it exactly from the last `window + refresh` jobs
//!   ([`Learner::replay`]).
//! - **Stable**: probabilities are rounded to 1/100, and the policy is
//!   told only when the rounded estimate changed (each change drops the
//!   policy's memoised scores).

use std::collections::{HashMap, VecDeque};

use suanli_core::Request;

use crate::frag::{Shape, Workload};

/// How the fragmentation-aware policies get their target workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The workload they were built with, never changed (the reference
    /// simulator's method: the typical workload of the whole trace).
    Given,
    /// Learned online from arrivals.
    Learned(LearnParams),
}

impl Default for Target {
    /// Learned, with the default parameters.
    fn default() -> Self {
        Target::Learned(LearnParams::default())
    }
}

impl Target {
    /// `learned` or `trace` (the given workload), as the CLI spells them.
    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "learned" => Ok(Target::Learned(LearnParams::default())),
            "trace" | "given" => Ok(Target::Given),
            _ => Err(format!("--target must be learned or trace (found {s:?})")),
        }
    }
}

/// The learner's two knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnParams {
    /// Jobs the estimate looks back over.
    pub window: usize,
    /// Arrivals between two estimates, once past the first ones.
    pub refresh: u64,
}

impl Default for LearnParams {
    fn default() -> Self {
        LearnParams {
            window: 4096,
            refresh: 256,
        }
    }
}

/// The typical workload of the last jobs (see the module doc).
#[derive(Clone, Debug)]
pub struct Learner {
    params: LearnParams,
    /// (shape, tasks) of the last `window` jobs, oldest first.
    ring: VecDeque<(Shape, u32)>,
    /// Tasks per shape over `ring`.
    counts: HashMap<Shape, u64>,
    /// Arrivals ever (the next one is number `seen + 1`).
    seen: u64,
    current: Workload,
}

impl Learner {
    pub fn new(params: LearnParams) -> Learner {
        Learner {
            params: LearnParams {
                window: params.window.max(1),
                refresh: params.refresh.max(1),
            },
            ring: VecDeque::new(),
            counts: HashMap::new(),
            seen: 0,
            current: Workload::default(),
        }
    }

    /// The current estimate.
    pub fn workload(&self) -> &Workload {
        &self.current
    }

    /// Arrivals observed, ever.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// A job of `tasks` copies of `req` arrived. True when the estimate
    /// changed (the policy must be told).
    pub fn observe(&mut self, req: &Request, tasks: u32) -> bool {
        let shape = Shape::of(req);
        self.ring.push_back((shape, tasks));
        *self.counts.entry(shape).or_default() += tasks as u64;
        if self.ring.len() > self.params.window {
            let (old, n) = self.ring.pop_front().expect("non-empty");
            let c = self.counts.get_mut(&old).expect("counted");
            *c -= n as u64;
            if *c == 0 {
                self.counts.remove(&old);
            }
        }
        self.seen += 1;
        let due = if self.seen <= self.params.refresh {
            self.seen.is_power_of_two() || self.seen == self.params.refresh
        } else {
            self.seen.is_multiple_of(self.params.refresh)
        };
        if !due {
            return false;
        }
        let next = Workload::from_counts(
            self.counts.iter().map(|(s, n)| (*s, *n)),
            crate::frag::TYPICAL_THRESHOLD_PCT,
        )
        .rounded(100);
        if next == self.current {
            return false;
        }
        self.current = next;
        true
    }

    /// A learner that has seen `first` arrivals before `jobs` (the last
    /// jobs, oldest first, as (request, tasks)), then those: after a
    /// restart, with the last `window + refresh` jobs, the same estimate as
    /// the learner that saw them live.
    pub fn replay<'a>(
        params: LearnParams,
        first: u64,
        jobs: impl IntoIterator<Item = (&'a Request, u32)>,
    ) -> Learner {
        let mut l = Learner::new(params);
        l.seen = first;
        for (r, t) in jobs {
            l.observe(r, t);
        }
        l
    }

    /// How many of the last jobs [`Learner::replay`] needs.
    pub fn replay_len(&self) -> usize {
        self.params.window + self.params.refresh as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use suanli_core::ModelSet;

    fn req(cpu: u64, n: u32, m: u32) -> Request {
        Request::new(cpu, 0, n, m, ModelSet::ANY).unwrap()
    }

    #[test]
    fn the_estimate_follows_recent_arrivals_and_forgets_old_ones() {
        let p = LearnParams {
            window: 8,
            refresh: 4,
        };
        let mut l = Learner::new(p);
        // Estimates at arrivals 1, 2, 4, then 8, 12, ...
        assert!(l.observe(&req(1000, 1, 500), 1));
        assert_eq!(l.workload().pods.len(), 1);
        assert!(
            !l.observe(&req(1000, 1, 500), 1),
            "2: same shape, same estimate"
        );
        assert!(
            !l.observe(&req(2000, 2, 1000), 1),
            "3: not an estimate point"
        );
        assert!(l.observe(&req(2000, 2, 1000), 3), "4: a new shape");
        let w = l.workload().clone();
        assert_eq!(w.pods.len(), 2);
        // Tasks weigh: 4 tasks of the 2-GPU shape against 2 of the share.
        let big = w.pods.iter().find(|t| t.num_gpu == 2).unwrap();
        assert!((big.p - 0.67).abs() < 1e-9, "{w:?}");
        // Eight arrivals of a third shape push both out of the window.
        for _ in 0..8 {
            l.observe(&req(4000, 8, 1000), 1);
        }
        let w = l.workload();
        assert_eq!(w.pods.len(), 1);
        assert_eq!((w.pods[0].num_gpu, w.pods[0].p), (8, 1.0));
    }

    #[test]
    fn a_replay_of_the_last_jobs_rebuilds_the_same_estimate() {
        let p = LearnParams {
            window: 16,
            refresh: 8,
        };
        let shapes = [
            req(1000, 1, 500),
            req(2000, 1, 1000),
            req(8000, 4, 1000),
            req(500, 0, 0),
        ];
        let jobs: Vec<(Request, u32)> = (0..1000u32)
            .map(|i| (shapes[((i * 7) ^ (i / 5)) as usize % 4], 1 + i % 3))
            .collect();
        let mut live = Learner::new(p);
        for n in 0..jobs.len() {
            live.observe(&jobs[n].0, jobs[n].1);
            // Rebuilt at every point from the last window + refresh jobs.
            let from = (n + 1).saturating_sub(live.replay_len());
            let again =
                Learner::replay(p, from as u64, jobs[from..=n].iter().map(|(r, t)| (r, *t)));
            assert_eq!(
                again.workload(),
                live.workload(),
                "after {} arrivals",
                n + 1
            );
            assert_eq!(again.seen(), live.seen());
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("trace"), Ok(Target::Given));
        assert!(matches!(Target::parse("learned"), Ok(Target::Learned(_))));
        assert!(Target::parse("guess")
            .unwrap_err()
            .contains("learned or trace"));
    }
}
