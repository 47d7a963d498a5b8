//! # suanli-core: the resource model and the allocation ledger
//!
//! Everything here is pure data and arithmetic: no IO, no clock, no randomness.
//!
//! * [`model`]: GPU models, node specifications, task requests (integers only:
//!   CPU in milli-cores, memory in MiB, GPU as whole devices or a share of one
//!   device in thousandths).
//! * [`ledger`]: the [`Ledger`], the only code that changes who holds which
//!   CPU, memory and GPU milli. Policies read it; they never write it.

pub mod ledger;
pub mod model;

pub use ledger::{shape_index, AllocId, Allocation, Ledger, LedgerError, NodeState};
pub use model::{
    GpuMask, ModelError, ModelId, ModelSet, Models, NodeId, NodeSpec, Request, RequestError,
    MAX_GPUS_PER_NODE, MAX_MODELS, MILLI_PER_GPU,
};
