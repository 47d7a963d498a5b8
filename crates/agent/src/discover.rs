//! What the node has: GPUs through NVML (loaded at run time, so a machine
//! without a driver simply has none) or declared fakes, and CPU cores and
//! memory from `/proc`.

use std::path::PathBuf;

/// Which GPUs the node has.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuSpec {
    /// Ask NVML (none if no NVIDIA driver is installed).
    Auto,
    None,
    /// Declared, for development and tests: `fake:8xA100-80G`; with
    /// `,devices=PREFIX` GPU `i` is the character device `PREFIXi` (as
    /// `/dev/nvidiai` is a real one's), which tasks not given it cannot open.
    Fake {
        count: u32,
        model: String,
        devices: Option<String>,
    },
}

impl GpuSpec {
    pub fn parse(s: &str) -> Result<GpuSpec, String> {
        match s {
            "auto" => Ok(GpuSpec::Auto),
            "none" => Ok(GpuSpec::None),
            _ => {
                let bad = || {
                    format!("--gpus {s:?}: expected auto, none or fake:COUNTxMODEL[,devices=PREFIX] (e.g. fake:8xA100-80G)")
                };
                let f = s.strip_prefix("fake:").ok_or_else(bad)?;
                let (f, devices) = match f.split_once(',') {
                    Some((f, d)) => {
                        let prefix = d.strip_prefix("devices=").ok_or_else(bad)?;
                        if !prefix.starts_with('/') {
                            return Err(format!(
                                "--gpus {s:?}: devices= takes an absolute path prefix"
                            ));
                        }
                        (f, Some(prefix.to_string()))
                    }
                    None => (f, None),
                };
                let (n, model) = f.split_once('x').ok_or_else(bad)?;
                let count: u32 = n.parse().map_err(|_| bad())?;
                if !(1..=16).contains(&count) || model.is_empty() {
                    return Err(format!("--gpus {s:?}: 1 to 16 GPUs of a named model"));
                }
                Ok(GpuSpec::Fake {
                    count,
                    model: model.to_string(),
                    devices,
                })
            }
        }
    }
}

/// One GPU device.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub model: String,
    pub memory_mib: u64,
    /// Its character device (`/dev/nvidiaN`), when it has one.
    pub device: Option<PathBuf>,
    /// Declared (`fake:`), not discovered.
    pub fake: bool,
}

/// A GPU model name as the server accepts it: `NVIDIA A100-SXM4-80GB` →
/// `A100-SXM4-80GB`.
pub fn model_name(raw: &str) -> String {
    let s = raw.trim();
    let s = s.strip_prefix("NVIDIA ").unwrap_or(s);
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(63);
    if out.is_empty() {
        "unknown".to_string()
    } else {
        out
    }
}

/// The node's GPUs. NVML is loaded at run time: no driver means no GPUs.
pub fn discover_gpus(spec: &GpuSpec) -> Result<Vec<Gpu>, String> {
    match spec {
        GpuSpec::None => Ok(Vec::new()),
        GpuSpec::Fake {
            count,
            model,
            devices,
        } => Ok((0..*count)
            .map(|i| Gpu {
                index: i,
                model: model_name(model),
                memory_mib: 81_920,
                device: devices.as_ref().map(|p| PathBuf::from(format!("{p}{i}"))),
                fake: true,
            })
            .collect()),
        GpuSpec::Auto => {
            let nvml = match nvml_wrapper::Nvml::init() {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("suanli-agent: no NVIDIA GPUs ({e}); registering a CPU-only node");
                    return Ok(Vec::new());
                }
            };
            let n = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
            let mut gpus = Vec::new();
            for i in 0..n {
                let d = nvml
                    .device_by_index(i)
                    .map_err(|e| format!("NVML device {i}: {e}"))?;
                let name = d.name().map_err(|e| format!("NVML device {i}: {e}"))?;
                let mem = d
                    .memory_info()
                    .map_err(|e| format!("NVML device {i}: {e}"))?;
                // The driver names device files by minor number.
                let device = d
                    .minor_number()
                    .ok()
                    .map(|m| PathBuf::from(format!("/dev/nvidia{m}")));
                gpus.push(Gpu {
                    index: i,
                    model: model_name(&name),
                    memory_mib: mem.total >> 20,
                    device,
                    fake: false,
                });
            }
            if let Some(g) = gpus.iter().find(|g| g.model != gpus[0].model) {
                return Err(format!(
                    "this node has GPUs of two models ({} and {}); a Suanli node is one model",
                    gpus[0].model, g.model
                ));
            }
            Ok(gpus)
        }
    }
}

/// CPU cores (milli) and memory (MiB) of this machine.
pub fn discover_host() -> (u64, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    (cores * 1000, mem_kib / 1024)
}
