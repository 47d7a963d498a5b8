//! The allocation ledger: the only writer of "who holds what".
//!
//! **Invariants** (checked on every call, and by [`Ledger::check`]):
//! * no device ever has more than 1000 milli allocated, nothing is ever negative;
//! * a node's free CPU, memory and per-device milli equal its capacity minus the
//!   sum of the live allocations on it;
//! * `release` returns exactly what `allocate` took.

use std::collections::HashMap;

use crate::model::{GpuMask, NodeId, NodeSpec, Request, MAX_GPUS_PER_NODE, MILLI_PER_GPU};

/// Handle of one live allocation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId(pub u64);

/// What one allocation holds on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub node: NodeId,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpus: GpuMask,
    /// Milli taken from each device in `gpus`.
    pub gpu_milli: u16,
}

/// The free resources of one node, plus a version that changes whenever they do
/// (policies key their memoised scores on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub cpu_free: u64,
    pub mem_free: u64,
    gpu_free: [u16; MAX_GPUS_PER_NODE],
    gpus: u8,
    /// Live GPU allocations on the node by shape: index 0 counts shares of
    /// one device (< 1000 milli), index k counts allocations of k whole devices.
    pub gpu_tasks: [u32; MAX_GPUS_PER_NODE + 1],
    /// Incremented on every change of this node.
    pub version: u32,
    /// Closed to new placements (a draining or lost node): `fits` is false,
    /// but existing allocations stay and explicit allocations (recovery,
    /// re-taking a tentatively released task) are still accepted.
    closed: bool,
}

impl NodeState {
    pub fn empty(spec: &NodeSpec) -> NodeState {
        let mut gpu_free = [0; MAX_GPUS_PER_NODE];
        gpu_free[..spec.gpus as usize].fill(MILLI_PER_GPU);
        NodeState {
            cpu_free: spec.cpu_milli,
            mem_free: spec.memory_mib,
            gpu_free,
            gpus: spec.gpus,
            gpu_tasks: [0; MAX_GPUS_PER_NODE + 1],
            version: 0,
            closed: false,
        }
    }

    /// Closed to new placements (see [`Ledger::set_closed`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Free milli of each device, by device index.
    pub fn gpu_left(&self) -> &[u16] {
        &self.gpu_free[..self.gpus as usize]
    }
    pub fn total_gpu_left(&self) -> u32 {
        self.gpu_left().iter().map(|&l| l as u32).sum()
    }
    pub fn fully_free(&self) -> u32 {
        self.gpu_left()
            .iter()
            .filter(|&&l| l == MILLI_PER_GPU)
            .count() as u32
    }

    /// Can `req` be placed on this node now (CPU, memory, GPU model, devices)?
    pub fn fits(&self, spec: &NodeSpec, req: &Request) -> bool {
        if self.closed {
            return false;
        }
        if req.cpu_milli > self.cpu_free || req.memory_mib > self.mem_free {
            return false;
        }
        if req.num_gpu == 0 {
            return true;
        }
        if spec.gpus == 0 || !req.models.accepts(spec.model) {
            return false;
        }
        let m = req.gpu_milli;
        let ok = self.gpu_left().iter().filter(|&&l| l >= m).count();
        ok >= req.num_gpu as usize
    }

    /// The devices the simple policies take: a share takes the device with the
    /// least free milli that still fits (lowest index on ties); whole-device
    /// requests take the lowest-index fully free devices. Assumes `fits`.
    pub fn default_gpus(&self, req: &Request) -> GpuMask {
        if req.num_gpu == 0 {
            return GpuMask::default();
        }
        if req.is_share() {
            let mut best: Option<(u16, usize)> = None;
            for (i, &l) in self.gpu_left().iter().enumerate() {
                if l >= req.gpu_milli && best.is_none_or(|(bl, _)| l < bl) {
                    best = Some((l, i));
                }
            }
            return best.map_or(GpuMask::default(), |(_, i)| GpuMask::single(i));
        }
        self.lowest_free(req.num_gpu as usize)
    }

    /// What-if: add back what `a` holds, on a copy of a node's state (the
    /// ledger's own states are only reachable read-only). Used to ask "would
    /// this fit if those tasks were preempted?".
    pub fn credit(&mut self, a: &Allocation) {
        self.cpu_free += a.cpu_milli;
        self.mem_free += a.memory_mib;
        for d in a.gpus.iter() {
            self.gpu_free[d] += a.gpu_milli;
        }
    }

    /// The `k` lowest-index fully free devices.
    pub fn lowest_free(&self, k: usize) -> GpuMask {
        let mut mask = 0u16;
        let mut n = 0;
        for (i, &l) in self.gpu_left().iter().enumerate() {
            if n == k {
                break;
            }
            if l == MILLI_PER_GPU {
                mask |= 1 << i;
                n += 1;
            }
        }
        GpuMask(mask)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("node {0} does not exist")]
    NoSuchNode(NodeId),
    #[error("allocation {0:?} does not exist")]
    NoSuchAlloc(AllocId),
    #[error("node {node}: {what} requested {want}, free {free}")]
    Insufficient {
        node: NodeId,
        what: &'static str,
        want: u64,
        free: u64,
    },
    #[error("node {node}: device mask {mask:#x} names {count} devices, request wants {want}")]
    DeviceCount {
        node: NodeId,
        mask: u16,
        count: u32,
        want: u8,
    },
    #[error("node {node}: device {device} does not exist")]
    NoSuchDevice { node: NodeId, device: usize },
    #[error("node {node}: GPU model not accepted by the request")]
    ModelMismatch { node: NodeId },
    #[error("ledger corrupt at node {node}: {detail}")]
    Corrupt { node: NodeId, detail: String },
}

/// The authoritative record of allocations on a fixed set of nodes.
#[derive(Clone, Debug)]
pub struct Ledger {
    specs: Vec<NodeSpec>,
    states: Vec<NodeState>,
    allocs: HashMap<AllocId, Allocation>,
    next_id: u64,
    capacity_gpu_milli: u64,
    /// Bumped by every change (a node added, closed or reopened, an
    /// allocation made or released): what was computed from the ledger at
    /// one generation holds as long as it is current.
    generation: u64,
}

impl Ledger {
    pub fn new(specs: Vec<NodeSpec>) -> Ledger {
        let states = specs.iter().map(NodeState::empty).collect();
        let capacity_gpu_milli = specs
            .iter()
            .map(|s| s.gpus as u64 * MILLI_PER_GPU as u64)
            .sum();
        Ledger {
            specs,
            states,
            allocs: HashMap::new(),
            next_id: 0,
            capacity_gpu_milli,
            generation: 0,
        }
    }

    pub fn specs(&self) -> &[NodeSpec] {
        &self.specs
    }
    pub fn states(&self) -> &[NodeState] {
        &self.states
    }
    pub fn node(&self, id: NodeId) -> Option<(&NodeSpec, &NodeState)> {
        let i = id as usize;
        Some((self.specs.get(i)?, self.states.get(i)?))
    }
    pub fn len(&self) -> usize {
        self.specs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
    pub fn capacity_gpu_milli(&self) -> u64 {
        self.capacity_gpu_milli
    }
    /// Changes so far (see the field): equal generations, equal ledger.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// GPU milli currently allocated across the cluster.
    pub fn allocated_gpu_milli(&self) -> u64 {
        self.capacity_gpu_milli
            - self
                .states
                .iter()
                .map(|s| s.total_gpu_left() as u64)
                .sum::<u64>()
    }
    /// Add a node (a server joined the pool); returns its id, the next one.
    pub fn add_node(&mut self, spec: NodeSpec) -> NodeId {
        let id = self.specs.len() as NodeId;
        self.capacity_gpu_milli += spec.gpus as u64 * MILLI_PER_GPU as u64;
        self.states.push(NodeState::empty(&spec));
        self.specs.push(spec);
        self.generation += 1;
        id
    }

    /// Close a node to new placements (draining, lost) or reopen it. Its
    /// allocations are untouched.
    pub fn set_closed(&mut self, node: NodeId, closed: bool) -> Result<(), LedgerError> {
        let st = self
            .states
            .get_mut(node as usize)
            .ok_or(LedgerError::NoSuchNode(node))?;
        if st.closed != closed {
            st.closed = closed;
            st.version = st.version.wrapping_add(1);
            self.generation += 1;
        }
        Ok(())
    }

    pub fn allocation(&self, id: AllocId) -> Option<&Allocation> {
        self.allocs.get(&id)
    }
    pub fn live_allocations(&self) -> usize {
        self.allocs.len()
    }

    /// Take `req` on `node`, on exactly the devices in `gpus`. All-or-nothing:
    /// on error nothing changed.
    pub fn allocate(
        &mut self,
        req: &Request,
        node: NodeId,
        gpus: GpuMask,
    ) -> Result<AllocId, LedgerError> {
        let i = node as usize;
        let spec = self.specs.get(i).ok_or(LedgerError::NoSuchNode(node))?;
        let st = &self.states[i];
        if req.cpu_milli > st.cpu_free {
            return Err(LedgerError::Insufficient {
                node,
                what: "cpu_milli",
                want: req.cpu_milli,
                free: st.cpu_free,
            });
        }
        if req.memory_mib > st.mem_free {
            return Err(LedgerError::Insufficient {
                node,
                what: "memory_mib",
                want: req.memory_mib,
                free: st.mem_free,
            });
        }
        if gpus.count() != req.num_gpu as u32 {
            return Err(LedgerError::DeviceCount {
                node,
                mask: gpus.0,
                count: gpus.count(),
                want: req.num_gpu,
            });
        }
        if req.num_gpu > 0 && !req.models.accepts(spec.model) {
            return Err(LedgerError::ModelMismatch { node });
        }
        for d in gpus.iter() {
            if d >= spec.gpus as usize {
                return Err(LedgerError::NoSuchDevice { node, device: d });
            }
            if st.gpu_free[d] < req.gpu_milli {
                return Err(LedgerError::Insufficient {
                    node,
                    what: "gpu_milli",
                    want: req.gpu_milli as u64,
                    free: st.gpu_free[d] as u64,
                });
            }
        }
        let st = &mut self.states[i];
        st.cpu_free -= req.cpu_milli;
        st.mem_free -= req.memory_mib;
        for d in gpus.iter() {
            st.gpu_free[d] -= req.gpu_milli;
        }
        if let Some(shape) = shape_index(req.num_gpu as u32, req.gpu_milli) {
            st.gpu_tasks[shape] += 1;
        }
        st.version = st.version.wrapping_add(1);
        self.generation += 1;
        let id = AllocId(self.next_id);
        self.next_id += 1;
        self.allocs.insert(
            id,
            Allocation {
                node,
                cpu_milli: req.cpu_milli,
                memory_mib: req.memory_mib,
                gpus,
                gpu_milli: req.gpu_milli,
            },
        );
        Ok(id)
    }

    /// Give back everything allocation `id` holds; returns what it held.
    pub fn release(&mut self, id: AllocId) -> Result<Allocation, LedgerError> {
        let a = self
            .allocs
            .remove(&id)
            .ok_or(LedgerError::NoSuchAlloc(id))?;
        let i = a.node as usize;
        let spec = &self.specs[i];
        let st = &mut self.states[i];
        st.cpu_free += a.cpu_milli;
        st.mem_free += a.memory_mib;
        for d in a.gpus.iter() {
            st.gpu_free[d] += a.gpu_milli;
        }
        if let Some(shape) = shape_index(a.gpus.count(), a.gpu_milli) {
            st.gpu_tasks[shape] -= 1;
        }
        st.version = st.version.wrapping_add(1);
        self.generation += 1;
        debug_assert!(st.cpu_free <= spec.cpu_milli && st.mem_free <= spec.memory_mib);
        Ok(a)
    }

    /// Recompute every node's free resources from the live allocations and
    /// compare with the recorded state. Used by tests and by recovery.
    pub fn check(&self) -> Result<(), LedgerError> {
        let mut expect: Vec<NodeState> = self.specs.iter().map(NodeState::empty).collect();
        let mut ids: Vec<_> = self.allocs.keys().copied().collect();
        ids.sort();
        for id in ids {
            let a = &self.allocs[&id];
            let i = a.node as usize;
            let e = &mut expect[i];
            let corrupt = |detail: String| LedgerError::Corrupt {
                node: a.node,
                detail,
            };
            e.cpu_free = e
                .cpu_free
                .checked_sub(a.cpu_milli)
                .ok_or_else(|| corrupt(format!("cpu over-allocated by {id:?}")))?;
            e.mem_free = e
                .mem_free
                .checked_sub(a.memory_mib)
                .ok_or_else(|| corrupt(format!("memory over-allocated by {id:?}")))?;
            for d in a.gpus.iter() {
                if d >= e.gpus as usize {
                    return Err(corrupt(format!("{id:?} holds missing device {d}")));
                }
                e.gpu_free[d] = e.gpu_free[d]
                    .checked_sub(a.gpu_milli)
                    .ok_or_else(|| corrupt(format!("device {d} over 1000 milli with {id:?}")))?;
            }
        }
        for (i, (e, s)) in expect.iter().zip(&self.states).enumerate() {
            if e.cpu_free != s.cpu_free || e.mem_free != s.mem_free || e.gpu_left() != s.gpu_left()
            {
                return Err(LedgerError::Corrupt {
                    node: i as NodeId,
                    detail: format!(
                        "recorded free {:?}/{}/{} differs from allocations {:?}/{}/{}",
                        s.gpu_left(),
                        s.cpu_free,
                        s.mem_free,
                        e.gpu_left(),
                        e.cpu_free,
                        e.mem_free
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Index into [`NodeState::gpu_tasks`] of a GPU allocation's shape: 0 for a
/// share of one device, k for k whole devices, `None` for CPU-only.
pub fn shape_index(num_gpu: u32, gpu_milli: u16) -> Option<usize> {
    match num_gpu {
        0 => None,
        1 if gpu_milli < MILLI_PER_GPU => Some(0),
        k => Some(k as usize),
    }
}
