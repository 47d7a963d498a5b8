//! Resource model: GPU models, nodes and requests, all in integers.

use std::fmt;

/// Thousandths of one GPU: a whole device is 1000 milli.
pub const MILLI_PER_GPU: u16 = 1000;
/// Most GPUs one node may have (16-card servers exist; openb has at most 8).
pub const MAX_GPUS_PER_NODE: usize = 16;
/// Most distinct GPU models a pool may name (a [`ModelSet`] is a 64-bit mask).
pub const MAX_MODELS: usize = 64;

/// Index of a node in the cluster (dense, `0..nodes`).
pub type NodeId = u32;

/// A GPU model interned in a [`Models`] registry.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub u8);

/// A set of GPU models; the empty set means "any model".
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelSet(pub u64);

impl ModelSet {
    pub const ANY: ModelSet = ModelSet(0);

    pub fn single(m: ModelId) -> ModelSet {
        ModelSet(1u64 << m.0)
    }
    pub fn with(self, m: ModelId) -> ModelSet {
        ModelSet(self.0 | (1u64 << m.0))
    }
    pub fn is_any(self) -> bool {
        self.0 == 0
    }
    /// Does this restriction accept a node of `model` (None = node without GPUs)?
    pub fn accepts(self, model: Option<ModelId>) -> bool {
        match model {
            None => self.is_any(),
            Some(m) => self.is_any() || self.0 & (1u64 << m.0) != 0,
        }
    }
}

/// A set of GPU device indices of one node (bit i = device i).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GpuMask(pub u16);

impl GpuMask {
    pub fn single(i: usize) -> GpuMask {
        GpuMask(1 << i)
    }
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }
    pub fn contains(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_GPUS_PER_NODE).filter(move |&i| self.contains(i))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("GPU model name is empty")]
    Empty,
    #[error("GPU model name {0:?} contains '|' or ',' or whitespace")]
    BadChar(String),
    #[error("more than {MAX_MODELS} distinct GPU models")]
    TooMany,
}

/// Registry of GPU model names (e.g. `A100-80G`, `Ascend910B`, `T4`).
#[derive(Clone, Debug, Default)]
pub struct Models {
    names: Vec<String>,
}

impl Models {
    pub fn new() -> Models {
        Models::default()
    }
    /// Returns the id of `name`, registering it on first use.
    pub fn intern(&mut self, name: &str) -> Result<ModelId, ModelError> {
        if name.is_empty() {
            return Err(ModelError::Empty);
        }
        if name.contains(['|', ',']) || name.chars().any(char::is_whitespace) {
            return Err(ModelError::BadChar(name.to_string()));
        }
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return Ok(ModelId(i as u8));
        }
        if self.names.len() >= MAX_MODELS {
            return Err(ModelError::TooMany);
        }
        self.names.push(name.to_string());
        Ok(ModelId((self.names.len() - 1) as u8))
    }
    pub fn get(&self, name: &str) -> Option<ModelId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| ModelId(i as u8))
    }
    pub fn name(&self, id: ModelId) -> &str {
        &self.names[id.0 as usize]
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What a node has when empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Number of GPU devices (0..=MAX_GPUS_PER_NODE).
    pub gpus: u8,
    /// GPU model; `None` exactly when `gpus == 0`.
    pub model: Option<ModelId>,
}

/// What one task asks for. Build it with [`Request::new`], which validates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Number of GPU devices; 0 for a CPU-only task.
    pub num_gpu: u8,
    /// Milli of each device: 1..=1000 when `num_gpu == 1`, exactly 1000 when
    /// `num_gpu >= 2`, 0 when `num_gpu == 0`.
    pub gpu_milli: u16,
    /// Accepted GPU models (empty = any).
    pub models: ModelSet,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("num_gpu {0} exceeds the maximum of {MAX_GPUS_PER_NODE} GPUs per node")]
    TooManyGpus(u32),
    #[error("gpu_milli {0} is out of range: a GPU task takes 1..=1000 milli of each device")]
    MilliRange(u32),
    #[error("num_gpu {num_gpu} with gpu_milli {gpu_milli}: a multi-GPU task takes whole devices (gpu_milli 1000)")]
    MultiShare { num_gpu: u32, gpu_milli: u32 },
    #[error("gpu_milli {0} without GPUs: a CPU-only task (num_gpu 0) must have gpu_milli 0")]
    MilliWithoutGpu(u32),
}

impl Request {
    pub fn new(
        cpu_milli: u64,
        memory_mib: u64,
        num_gpu: u32,
        gpu_milli: u32,
        models: ModelSet,
    ) -> Result<Request, RequestError> {
        if num_gpu as usize > MAX_GPUS_PER_NODE {
            return Err(RequestError::TooManyGpus(num_gpu));
        }
        if num_gpu == 0 {
            if gpu_milli != 0 {
                return Err(RequestError::MilliWithoutGpu(gpu_milli));
            }
        } else if gpu_milli == 0 || gpu_milli > MILLI_PER_GPU as u32 {
            return Err(RequestError::MilliRange(gpu_milli));
        } else if num_gpu >= 2 && gpu_milli != MILLI_PER_GPU as u32 {
            return Err(RequestError::MultiShare { num_gpu, gpu_milli });
        }
        Ok(Request {
            cpu_milli,
            memory_mib,
            num_gpu: num_gpu as u8,
            gpu_milli: gpu_milli as u16,
            models,
        })
    }
    /// Total GPU milli requested (`num_gpu × gpu_milli`).
    pub fn total_gpu_milli(&self) -> u64 {
        self.num_gpu as u64 * self.gpu_milli as u64
    }
    /// A share of one device (one GPU, less than 1000 milli).
    pub fn is_share(&self) -> bool {
        self.num_gpu == 1 && self.gpu_milli < MILLI_PER_GPU
    }
    pub fn is_cpu_only(&self) -> bool {
        self.num_gpu == 0
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={}m mem={}Mi gpu={}x{}m",
            self.cpu_milli, self.memory_mib, self.num_gpu, self.gpu_milli
        )
    }
}
