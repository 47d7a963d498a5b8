//! The placement trait and the generic filter → score → pick loop.

use std::collections::HashMap;

use suanli_core::{GpuMask, Ledger, NodeId, NodeSpec, NodeState, Request};

use crate::frag::Workload;

/// A decision: the node and the exact devices a task takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub node: NodeId,
    pub gpus: GpuMask,
}

/// Chooses where a request goes. Implementations may memoise, but their
/// answer must depend only on (request, ledger state, order, own seed).
pub trait PlacementPolicy: Send {
    fn name(&self) -> &'static str;
    /// The best feasible node, visiting nodes in `order` (earlier wins ties),
    /// or `None` when no node can host `req` now.
    fn place(&mut self, ledger: &Ledger, req: &Request, order: &[NodeId]) -> Option<Placement>;
    /// Whether two nodes of one shape with equal free resources always get
    /// the same answer, so that a scheduler may offer only one of them
    /// (the lowest id) for a single task and decide as a full scan would.
    fn same_for_equal_free(&self) -> bool {
        true
    }
    /// A new target workload (see [`crate::learn`]); policies that do not
    /// use one ignore it.
    fn set_target(&mut self, _target: &Workload) {}
}

/// Score of a node for a request; compared lexicographically, higher wins.
/// Reference policies use only `primary` (an integer score as a float).
#[derive(Copy, Clone, Debug, PartialEq, PartialOrd, Default)]
pub struct Score {
    pub primary: f64,
    pub secondary: f64,
}

impl Score {
    pub fn int(v: i64) -> Score {
        Score {
            primary: v as f64,
            secondary: 0.0,
        }
    }
}

/// A filter-and-score policy: rates one feasible node.
pub trait Scorer: Send {
    /// Rate `state` for `req` (called only when `state.fits(spec, req)`), and
    /// choose the devices the request would take there.
    fn score(&self, spec: &NodeSpec, state: &NodeState, req: &Request) -> (Score, GpuMask);
    /// Whether the score depends on the node's shape and free resources
    /// only (see [`PlacementPolicy::same_for_equal_free`]).
    fn same_for_equal_free(&self) -> bool {
        true
    }
    /// Take a new target workload; true when scores depend on it (the
    /// memoised ones are then dropped).
    fn set_target(&mut self, _target: &Workload) -> bool {
        false
    }
}

#[derive(Copy, Clone)]
struct Entry {
    /// `node version + 1` the entry was computed at; 0 = empty.
    stamp: u64,
    score: Score,
    gpus: GpuMask,
}

const EMPTY: Entry = Entry {
    stamp: 0,
    score: Score {
        primary: 0.0,
        secondary: 0.0,
    },
    gpus: GpuMask(0),
};

/// Runs a [`Scorer`] over every feasible node and keeps the best, first in
/// `order` on ties. A node's score for a request shape is recomputed only when
/// the node changed since it was last scored (the ledger bumps a per-node
/// version), which is what makes a 10,000-pod fill take milliseconds.
pub struct ScoredPolicy<S> {
    name: &'static str,
    scorer: S,
    memo: bool,
    classes: HashMap<Request, usize>,
    cache: Vec<Vec<Entry>>,
}

impl<S: Scorer> ScoredPolicy<S> {
    pub fn new(name: &'static str, scorer: S) -> Self {
        ScoredPolicy {
            name,
            scorer,
            memo: true,
            classes: HashMap::new(),
            cache: Vec::new(),
        }
    }
    /// Disable memoisation: every feasible node is scored for every request.
    /// Same decisions, slower; the baseline of the benchmark.
    pub fn without_memo(mut self) -> Self {
        self.memo = false;
        self
    }
    pub fn scorer(&self) -> &S {
        &self.scorer
    }
}

impl<S: Scorer> PlacementPolicy for ScoredPolicy<S> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn same_for_equal_free(&self) -> bool {
        self.scorer.same_for_equal_free()
    }

    fn set_target(&mut self, target: &Workload) {
        if self.scorer.set_target(target) {
            self.cache.clear();
            self.classes.clear();
        }
    }

    fn place(&mut self, ledger: &Ledger, req: &Request, order: &[NodeId]) -> Option<Placement> {
        let specs = ledger.specs();
        let states = ledger.states();
        let mut best: Option<(Score, Placement)> = None;
        let mut consider = |node: NodeId, score: Score, gpus: GpuMask| {
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, Placement { node, gpus }));
            }
        };
        if !self.memo {
            for &n in order {
                let (spec, st) = (&specs[n as usize], &states[n as usize]);
                if st.fits(spec, req) {
                    let (s, g) = self.scorer.score(spec, st, req);
                    consider(n, s, g);
                }
            }
            return best.map(|b| b.1);
        }
        let next = self.classes.len();
        let class = *self.classes.entry(*req).or_insert(next);
        if class == self.cache.len() {
            self.cache.push(vec![EMPTY; specs.len()]);
        }
        let cache = &mut self.cache[class];
        if cache.len() < specs.len() {
            cache.resize(specs.len(), EMPTY); // nodes joined since
        }
        for &n in order {
            let (spec, st) = (&specs[n as usize], &states[n as usize]);
            if !st.fits(spec, req) {
                continue;
            }
            let e = &mut cache[n as usize];
            let stamp = st.version as u64 + 1;
            if e.stamp != stamp {
                let (score, gpus) = self.scorer.score(spec, st, req);
                *e = Entry { stamp, score, gpus };
            }
            consider(n, e.score, e.gpus);
        }
        best.map(|b| b.1)
    }
}
