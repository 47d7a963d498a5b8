//! The pending queue split by job shape, and the walk of the ordered pass
//! over it.
//!
//! Within one pass, once a job of some shape (request, tasks, tenant) fails
//! to be placed and to preempt its way in, every later job of that shape is
//! skipped (the pass's failure memo). Walking a long queue job by job to
//! skip them costs a visit per pending job per pass: 1,000,000 visits per
//! pass with a million jobs queued. Here each shape keeps its own queue in
//! key order and the pass merges the shapes' heads; a shape that failed
//! leaves the merge (until a preemption frees resources and clears the
//! memo). A pass then costs O(shapes + decisions · log shapes)
//! and visits jobs in exactly the order, with exactly the outcomes, of the
//! job-by-job walk (property-tested against it in `tests/jobsim.rs` by
//! `shape_walk_decides_as_the_job_walk`).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use super::{Key, MemoKey};

/// Pending jobs by shape, each shape's keys in queue order.
#[derive(Default)]
pub(super) struct ShapeQueues {
    ids: HashMap<MemoKey, u32>,
    shape_of: Vec<MemoKey>,
    sets: Vec<BTreeSet<Key>>,
    /// Ids whose queue emptied; recycled at the start of the next pass, so
    /// an id never changes shape while a walk runs.
    emptied: Vec<u32>,
    free: Vec<u32>,
}

impl ShapeQueues {
    /// Queue `key` under `shape`; returns the shape's id.
    pub(super) fn insert(&mut self, shape: MemoKey, key: Key) -> u32 {
        let id = match self.ids.get(&shape) {
            Some(&id) => id,
            None => {
                let id = match self.free.pop() {
                    Some(id) => {
                        self.shape_of[id as usize] = shape;
                        id
                    }
                    None => {
                        self.shape_of.push(shape);
                        self.sets.push(BTreeSet::new());
                        (self.sets.len() - 1) as u32
                    }
                };
                self.ids.insert(shape, id);
                id
            }
        };
        self.sets[id as usize].insert(key);
        id
    }

    pub(super) fn remove(&mut self, id: u32, key: &Key) {
        let set = &mut self.sets[id as usize];
        set.remove(key);
        if set.is_empty() {
            self.emptied.push(id);
        }
    }

    /// Forget shapes with no job left (between passes only).
    pub(super) fn recycle(&mut self) {
        for id in std::mem::take(&mut self.emptied) {
            if self.sets[id as usize].is_empty()
                && self.ids.get(&self.shape_of[id as usize]) == Some(&id)
            {
                self.ids.remove(&self.shape_of[id as usize]);
                self.free.push(id);
            }
        }
    }

    fn first_after(&self, id: u32, after: Option<Key>) -> Option<Key> {
        let set = &self.sets[id as usize];
        match after {
            None => set.first().copied(),
            Some(a) => set
                .range((Bound::Excluded(a), Bound::Unbounded))
                .next()
                .copied(),
        }
    }

    /// Shapes ever allocated (the walk's id space).
    fn capacity(&self) -> usize {
        self.sets.len()
    }

    /// Whether `key` is queued under shape `id` (for
    /// [`super::Scheduler::check_indexes`]).
    pub(super) fn holds(&self, id: u32, key: &Key) -> bool {
        self.sets.get(id as usize).is_some_and(|s| s.contains(key))
    }

    /// Total pending jobs over all shapes.
    pub(super) fn total(&self) -> usize {
        self.sets.iter().map(BTreeSet::len).sum()
    }
}

/// One pass's merge of the shapes' queues: keys after the last one visited,
/// smallest first, skipping shapes marked dead.
pub(super) struct ShapeWalk {
    heap: BinaryHeap<Reverse<(Key, u32)>>,
    last: Option<Key>,
    dead: Vec<bool>,
}

impl ShapeWalk {
    pub(super) fn new(q: &ShapeQueues) -> ShapeWalk {
        let mut w = ShapeWalk {
            heap: BinaryHeap::new(),
            last: None,
            dead: vec![false; q.capacity()],
        };
        w.refill(q);
        w
    }

    /// Rebuild the merge from the queues as they are now (after jobs were
    /// queued during the pass, e.g. preempted victims): every live shape's
    /// first key after the last one visited.
    pub(super) fn refill(&mut self, q: &ShapeQueues) {
        self.dead.resize(q.capacity(), false);
        self.heap.clear();
        for id in 0..q.capacity() as u32 {
            if !self.dead[id as usize] {
                if let Some(k) = q.first_after(id, self.last) {
                    self.heap.push(Reverse((k, id)));
                }
            }
        }
    }

    /// The next key (and its shape) after the last one visited.
    pub(super) fn next(&mut self, q: &ShapeQueues) -> Option<(Key, u32)> {
        while let Some(Reverse((k, id))) = self.heap.pop() {
            if self.dead[id as usize] {
                continue;
            }
            let fresh = self.last.is_none_or(|l| k > l) && q.sets[id as usize].contains(&k);
            if fresh {
                self.last = Some(k);
                return Some((k, id));
            }
            // Stale head (the job left the queue): seek the shape again.
            let from = self.last.map_or(k, |l| l.max(k));
            if let Some(n) = q.first_after(id, Some(from)) {
                self.heap.push(Reverse((n, id)));
            }
        }
        None
    }

    /// Shape `id` goes on: its next key after the one just visited joins
    /// the merge.
    pub(super) fn advance(&mut self, q: &ShapeQueues, id: u32) {
        if let Some(n) = q.first_after(id, self.last) {
            self.heap.push(Reverse((n, id)));
        }
    }

    /// The failure memo was cleared: every shape is live again.
    pub(super) fn revive(&mut self) {
        self.dead.fill(false);
    }

    /// Shape `id` failed in this pass: its remaining jobs are skipped.
    pub(super) fn kill(&mut self, id: u32) {
        self.dead[id as usize] = true;
    }
}
