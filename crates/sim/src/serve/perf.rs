//! The replica performance model.
//!
//! A replica is one copy of a model served with tensor parallelism over
//! `gpus` GPUs of one model, batching continuously at the iteration level
//! (Orca, OSDI '22; vLLM, SOSP '23): each iteration is either a prefill of
//! newly admitted prompts (which yields their first token) or one decode
//! step for every running request (one token each). Its cost is the
//! roofline of the hardware:
//!
//! * prefill of `T` prompt tokens: `2 · P · T` FLOPs at `mfu` of the
//!   replica's peak (compute-bound);
//! * decode step of a batch of `b` requests holding `C` tokens of context:
//!   the larger of reading the weights and the KV cache (`P · bytes +
//!   C · kv`) at `mbu` of the peak bandwidth, and `2 · P · b` FLOPs at `mfu`
//!   (memory-bound until the batch is large);
//! * plus a fixed `overhead_ms` per iteration (scheduling, kernel launches).
//!
//! A request is admitted when the KV cache can hold its prompt and its
//! output (the simulator knows the output length; a real server pages and
//! preempts instead), at most `max_batch` at once and `max_prefill_tokens`
//! per prefill iteration (a longer prompt goes alone; so does a request
//! larger than the whole cache, which a real server would refuse).
//!
//! Where the numbers come from:
//! * GPU peaks: NVIDIA's datasheets — A100 SXM 80 GB: 312 TFLOPS dense
//!   BF16, 2,039 GB/s; H100 SXM: 989 TFLOPS, 3,350 GB/s, 80 GB; H200 SXM:
//!   989 TFLOPS, 4,800 GB/s, 141 GB.
//! * Models: Llama 2 (Touvron et al., 2023) and its released configurations —
//!   7B: 6.74 B parameters, 32 layers, 32 KV heads; 13B: 13.0 B, 40 layers,
//!   40 KV heads; 70B: 69.0 B, 80 layers, 8 KV heads (grouped-query
//!   attention); head size 128; 16-bit weights and cache, so the cache
//!   takes `2 · layers · kv_heads · 128 · 2` bytes a token.
//! * `max_batch` 256 is vLLM's default `max_num_seqs`.
//! * Assumed, not measured here: `mfu` 0.5 and `mbu` 0.6 (efficiencies
//!   commonly reported for tuned serving stacks; `BENCHMARKS.md` reruns the
//!   comparison at 0.35 / 0.45), 5 ms per iteration, 90% of GPU memory for
//!   weights and cache, and a cold start of 15 s (process, CUDA context,
//!   graph capture) plus the weights read at 2 GB/s per GPU (each GPU loads
//!   its shard from local disk). All are flags of `sim serve`.

use serde::Serialize;

/// A GPU model's peaks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuPeak {
    pub name: &'static str,
    /// Dense 16-bit tensor FLOP/s.
    pub flops: f64,
    /// Memory bandwidth, bytes/s.
    pub bandwidth: f64,
    /// Memory, bytes.
    pub memory: f64,
}

pub const GPUS: &[GpuPeak] = &[
    GpuPeak {
        name: "A100-80G",
        flops: 312e12,
        bandwidth: 2.039e12,
        memory: 80e9,
    },
    GpuPeak {
        name: "H100",
        flops: 989e12,
        bandwidth: 3.35e12,
        memory: 80e9,
    },
    GpuPeak {
        name: "H200",
        flops: 989e12,
        bandwidth: 4.8e12,
        memory: 141e9,
    },
];

/// A model's size and cache footprint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelShape {
    pub name: &'static str,
    pub params: f64,
    pub bytes_per_param: f64,
    /// KV cache bytes per token of context.
    pub kv_bytes_per_token: f64,
}

const fn kv(layers: f64, kv_heads: f64) -> f64 {
    2.0 * layers * kv_heads * 128.0 * 2.0
}

pub const MODELS: &[ModelShape] = &[
    ModelShape {
        name: "llama-2-7b",
        params: 6.74e9,
        bytes_per_param: 2.0,
        kv_bytes_per_token: kv(32.0, 32.0),
    },
    ModelShape {
        name: "llama-2-13b",
        params: 13.0e9,
        bytes_per_param: 2.0,
        kv_bytes_per_token: kv(40.0, 40.0),
    },
    ModelShape {
        name: "llama-2-70b",
        params: 69.0e9,
        bytes_per_param: 2.0,
        kv_bytes_per_token: kv(80.0, 8.0),
    },
];

/// One replica's performance: the hardware, the model and the assumptions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Perf {
    pub gpu: GpuPeak,
    pub model: ModelShape,
    /// GPUs per replica (tensor parallel).
    pub gpus: u32,
    pub mfu: f64,
    pub mbu: f64,
    pub overhead_ms: f64,
    /// Fraction of GPU memory for weights and cache.
    pub memory_fraction: f64,
    pub max_batch: u32,
    pub max_prefill_tokens: u32,
    /// Fixed part of a cold start, ms.
    pub start_ms: f64,
    /// Weight loading, bytes/s per GPU.
    pub load_bandwidth: f64,
}

impl Perf {
    /// The defaults for a GPU and a model by name; errors list the names.
    pub fn new(gpu: &str, model: &str, gpus: u32) -> Result<Perf, String> {
        let g = GPUS.iter().find(|g| g.name == gpu).ok_or_else(|| {
            let names: Vec<_> = GPUS.iter().map(|g| g.name).collect();
            format!(
                "--gpu-model {gpu:?}: unknown; expected one of {}",
                names.join(", ")
            )
        })?;
        let m = MODELS.iter().find(|m| m.name == model).ok_or_else(|| {
            let names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
            format!(
                "--model {model:?}: unknown; expected one of {}",
                names.join(", ")
            )
        })?;
        let p = Perf {
            gpu: g.clone(),
            model: m.clone(),
            gpus,
            mfu: 0.5,
            mbu: 0.6,
            overhead_ms: 5.0,
            memory_fraction: 0.9,
            max_batch: 256,
            max_prefill_tokens: 8192,
            start_ms: 15_000.0,
            load_bandwidth: 2e9,
        };
        p.validate()?;
        Ok(p)
    }

    /// Every setting in range, and the weights fit with room for a cache.
    pub fn validate(&self) -> Result<(), String> {
        let frac = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(format!("--{name}: must be in (0, 1], got {v}"))
            }
        };
        frac("mfu", self.mfu)?;
        frac("mbu", self.mbu)?;
        if self.mfu < 0.01 || self.mbu < 0.01 {
            return Err(format!(
                "--mfu and --mbu: at least 0.01, got {} and {}",
                self.mfu, self.mbu
            ));
        }
        frac("memory-fraction", self.memory_fraction)?;
        if !(1..=64).contains(&self.gpus) {
            return Err(format!("--gpus: must be 1..=64, got {}", self.gpus));
        }
        if !(self.overhead_ms.is_finite() && (0.0..=10_000.0).contains(&self.overhead_ms)) {
            return Err(format!(
                "--overhead-ms: must be 0..=10000, got {}",
                self.overhead_ms
            ));
        }
        if !(self.start_ms.is_finite() && (0.0..=3_600_000.0).contains(&self.start_ms)) {
            return Err(format!(
                "--start-s: must be 0..=3600, got {}",
                self.start_ms / 1e3
            ));
        }
        if !(self.load_bandwidth.is_finite() && self.load_bandwidth >= 0.01e9) {
            return Err(format!(
                "--load-gbps: must be at least 0.01, got {}",
                self.load_bandwidth / 1e9
            ));
        }
        if self.max_batch > 100_000 || self.max_prefill_tokens > 100_000_000 {
            return Err("--max-batch or the prefill budget: implausibly large".into());
        }
        if self.max_batch == 0 || self.max_prefill_tokens == 0 {
            return Err("--max-batch and the prefill budget must be positive".into());
        }
        if self.kv_capacity_tokens() < 1.0 {
            return Err(format!(
                "{} does not fit on {} × {} with room for a KV cache ({:.0} GB of weights, {:.0} GB usable)",
                self.model.name,
                self.gpus,
                self.gpu.name,
                self.weight_bytes() / 1e9,
                self.gpus as f64 * self.gpu.memory * self.memory_fraction / 1e9
            ));
        }
        Ok(())
    }

    pub fn weight_bytes(&self) -> f64 {
        self.model.params * self.model.bytes_per_param
    }

    /// Tokens of context the replica's KV cache holds.
    pub fn kv_capacity_tokens(&self) -> f64 {
        let free = self.gpus as f64 * self.gpu.memory * self.memory_fraction - self.weight_bytes();
        (free / self.model.kv_bytes_per_token).floor()
    }

    fn flops(&self) -> f64 {
        self.gpus as f64 * self.gpu.flops * self.mfu
    }

    fn bandwidth(&self) -> f64 {
        self.gpus as f64 * self.gpu.bandwidth * self.mbu
    }

    /// Microseconds to prefill `tokens` prompt tokens.
    pub fn prefill_us(&self, tokens: u64) -> u64 {
        let s = 2.0 * self.model.params * tokens as f64 / self.flops();
        us(s + self.overhead_ms / 1e3)
    }

    /// Microseconds for one decode step of `batch` requests holding
    /// `context` tokens in all.
    pub fn decode_us(&self, batch: u64, context: u64) -> u64 {
        let mem = (self.weight_bytes() + context as f64 * self.model.kv_bytes_per_token)
            / self.bandwidth();
        let compute = 2.0 * self.model.params * batch as f64 / self.flops();
        us(mem.max(compute) + self.overhead_ms / 1e3)
    }

    /// Microseconds from launch to ready.
    pub fn cold_start_us(&self) -> u64 {
        let load = self.weight_bytes() / self.gpus as f64 / self.load_bandwidth;
        us(self.start_ms / 1e3 + load)
    }
}

fn us(s: f64) -> u64 {
    (s * 1e6).round().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roofline_figures_of_a_70b_on_four_a100() {
        let p = Perf::new("A100-80G", "llama-2-70b", 4).unwrap();
        // 2 · 69e9 · 2048 / (4 · 312e12 · 0.5) = 0.452923 s, + 5 ms.
        assert_eq!(p.prefill_us(2048), 457_923);
        // 138 GB / (4 · 2.039e12 · 0.6) = 28.2 ms, + 5 ms, at batch 1.
        assert_eq!(p.decode_us(1, 0), 33_200);
        // 327,680 bytes a token of cache.
        assert_eq!(p.model.kv_bytes_per_token, 327_680.0);
        // (4 · 80 · 0.9 − 138) GB / 327,680 B.
        assert_eq!(p.kv_capacity_tokens(), 457_763.0);
        // 15 s + 34.5 GB / 2 GB/s.
        assert_eq!(p.cold_start_us(), 32_250_000);
        // Decode turns compute-bound at large batches.
        assert!(p.decode_us(256, 0) > p.decode_us(1, 0));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(Perf::new("V100", "llama-2-7b", 1)
            .unwrap_err()
            .contains("--gpu-model"));
        assert!(Perf::new("H100", "gpt-9", 1)
            .unwrap_err()
            .contains("--model"));
        assert!(Perf::new("A100-80G", "llama-2-70b", 1)
            .unwrap_err()
            .contains("does not fit"));
        assert!(Perf::new("H100", "llama-2-7b", 0)
            .unwrap_err()
            .contains("--gpus"));
        let mut p = Perf::new("H100", "llama-2-7b", 1).unwrap();
        p.mfu = 1.5;
        assert!(p.validate().unwrap_err().contains("--mfu"));
    }
}
