//! A task's CPU, memory, process and GPU device limits through cgroups,
//! v1 or v2:
//! one group per task, under the agent's own group, the task's process
//! moved in before it executes (so nothing it runs escapes the limits), a
//! memory kill told apart from other kills, the group removed after.
//!
//! v1 (controllers mounted one per directory, e.g. `/sys/fs/cgroup/memory`):
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, no swap past
//! it, where swap accounting exists), `cpu.cfs_quota_us` over a 100 ms
//! period, `pids.max`, `devices.deny` (the other GPUs' device files, see
//! [`crate::devices`]); a memory kill shows in `memory.oom_control`
//! (`oom_kill`). v2 (one unified hierarchy): `memory.max`,
//! `memory.swap.max` = 0, `cpu.max`, `pids.max`, a device filter program;
//! `memory.events` (`oom_kill`). In v2 a group with controllers for its children may hold
//! no process, so the agent first moves itself into a leaf (`agent`) and
//! enables the controllers for its children.
//!
//! Needs root (or a delegated hierarchy); without it, tasks run unlimited
//! and the agent says so.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::devices::{self, DevNo};

/// Processes one task may have (fork bombs stop here).
pub const PIDS_MAX: u64 = 32_768;

/// The CFS period for CPU quotas, µs.
const PERIOD_US: u64 = 100_000;

/// Where task groups are made.
#[derive(Clone, Debug)]
pub enum Cgroups {
    /// Per controller (memory, cpu, pids, devices): the agent's own group's
    /// directory.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
        devices: Option<PathBuf>,
    },
    /// The agent's own group in the unified hierarchy (the agent itself
    /// moved into its `agent` child).
    V2 { base: PathBuf },
}

/// The limits of one task.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// 0: no memory limit.
    pub memory_mib: u64,
    /// 0: no CPU quota.
    pub cpu_milli: u64,
    /// Character devices it may not open (the node's other GPUs).
    pub deny: Vec<DevNo>,
}

/// One task's groups (one per controller in v1, one in v2).
#[derive(Debug)]
pub struct TaskGroup {
    dirs: Vec<PathBuf>,
    /// The directory whose events tell a memory kill.
    memory: PathBuf,
    v2: bool,
}

/// The agent's own group path for a v1 controller, or the v2 path (`""`),
/// from `/proc/self/cgroup`.
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroups {
    /// The hierarchy to use: v2 where its memory controller is available
    /// to the agent, else v1 where the memory controller is mounted; an
    /// error says why there is none.
    pub fn detect() -> Result<Cgroups, String> {
        let root = Path::new("/sys/fs/cgroup");
        // v2: the agent's group, with the memory controller available.
        if let Some(p) = own_path("") {
            for mount in [root.to_path_buf(), root.join("unified")] {
                let base = mount.join(p.trim_start_matches('/'));
                let ctrls =
                    std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
                if ctrls.split_whitespace().any(|c| c == "memory") {
                    return Cgroups::setup_v2(base).map_err(|e| format!("cgroup v2: {e}"));
                }
            }
        }
        let dir = |ctrl: &str| -> Option<PathBuf> {
            let m = root.join(ctrl);
            let p = own_path(ctrl)?;
            let d = m.join(p.trim_start_matches('/'));
            d.join("cgroup.procs").exists().then_some(d)
        };
        match dir("memory") {
            Some(memory) => {
                let probe = memory.join(format!("suanli-probe-{}", std::process::id()));
                std::fs::create_dir(&probe).map_err(|e| {
                    format!(
                        "cgroup v1: cannot create a group in {}: {e}",
                        memory.display()
                    )
                })?;
                let _ = std::fs::remove_dir(&probe);
                Ok(Cgroups::V1 {
                    memory,
                    cpu: dir("cpu"),
                    pids: dir("pids"),
                    devices: dir("devices"),
                })
            }
            None => Err("no cgroup memory controller (v1 or v2) is available".to_string()),
        }
    }

    /// v2: move the agent into `base/agent` and enable the controllers for
    /// the children of `base`.
    fn setup_v2(base: PathBuf) -> io::Result<Cgroups> {
        let leaf = base.join("agent");
        if !leaf.exists() {
            std::fs::create_dir(&leaf)?;
        }
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        let have = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        let want: Vec<String> = ["memory", "cpu", "pids"]
            .iter()
            .filter(|c| have.split_whitespace().any(|h| h == **c))
            .map(|c| format!("+{c}"))
            .collect();
        write(&base.join("cgroup.subtree_control"), &want.join(" "))?;
        Ok(Cgroups::V2 { base })
    }

    /// Remove the empty task groups left by agents that died (killed
    /// without a chance to clean up); a group still holding a process is
    /// kept (rmdir refuses it), and so is every group of a live agent.
    pub fn sweep(&self) {
        let dirs: Vec<&PathBuf> = match self {
            Cgroups::V2 { base } => vec![base],
            Cgroups::V1 {
                memory,
                cpu,
                pids,
                devices,
            } => std::iter::once(memory)
                .chain(cpu.iter())
                .chain(pids.iter())
                .chain(devices.iter())
                .collect(),
        };
        for d in dirs {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                // `suanli-PID-task-...`: only the groups of agents no longer
                // running (a live agent's group is empty for a moment
                // between its creation and its task entering it).
                let name = e.file_name().to_string_lossy().to_string();
                let pid = name
                    .strip_prefix("suanli-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
        }
    }

    /// Whether tasks can be kept from other GPUs' device files (v2 always,
    /// where the kernel takes device programs; v1 with a devices controller).
    pub fn devices(&self) -> bool {
        match self {
            Cgroups::V2 { .. } => true,
            Cgroups::V1 { devices, .. } => devices.is_some(),
        }
    }

    /// Make the groups of task `name` with `limits`; on an error, none is
    /// left behind.
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<TaskGroup> {
        let mut g = TaskGroup {
            dirs: Vec::new(),
            memory: PathBuf::new(),
            v2: matches!(self, Cgroups::V2 { .. }),
        };
        match self.fill(&mut g, name, limits) {
            Ok(()) => Ok(g),
            Err(e) => {
                g.remove();
                Err(e)
            }
        }
    }

    fn fill(&self, g: &mut TaskGroup, name: &str, limits: &Limits) -> io::Result<()> {
        let bytes = (limits.memory_mib > 0).then(|| (limits.memory_mib * 1024 * 1024).to_string());
        // Each directory is in `g` as soon as it exists, for `remove`.
        let mut make = |parent: &Path| -> io::Result<PathBuf> {
            let d = parent.join(name);
            match std::fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", d.display()))),
            }
            g.dirs.push(d.clone());
            Ok(d)
        };
        match self {
            Cgroups::V2 { base } => {
                let d = make(base)?;
                if let Some(b) = &bytes {
                    write(&d.join("memory.max"), b)?;
                    let _ = write(&d.join("memory.swap.max"), "0");
                }
                if limits.cpu_milli > 0 {
                    let quota = limits.cpu_milli * PERIOD_US / 1000;
                    let _ = write(&d.join("cpu.max"), &format!("{quota} {PERIOD_US}"));
                }
                let _ = write(&d.join("pids.max"), &PIDS_MAX.to_string());
                if !limits.deny.is_empty() {
                    devices::attach_v2(&d, &limits.deny)?;
                }
                g.memory = d;
            }
            Cgroups::V1 {
                memory,
                cpu,
                pids,
                devices,
            } => {
                let m = make(memory)?;
                if let Some(b) = &bytes {
                    write(&m.join("memory.limit_in_bytes"), b)?;
                    // No swap beyond the limit, where swap is accounted.
                    let _ = write(&m.join("memory.memsw.limit_in_bytes"), b);
                }
                if let (Some(c), true) = (cpu, limits.cpu_milli > 0) {
                    let d = make(c)?;
                    write(&d.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                    let quota = (limits.cpu_milli * PERIOD_US / 1000).max(1000);
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                if let Some(p) = pids {
                    let d = make(p)?;
                    write(&d.join("pids.max"), &PIDS_MAX.to_string())?;
                }
                if let (Some(dv), false) = (devices, limits.deny.is_empty()) {
                    let d = make(dv)?;
                    for rule in devices::v1_rules(&limits.deny) {
                        write(&d.join("devices.deny"), &rule)?;
                    }
                }
                g.memory = m;
            }
        }
        Ok(())
    }
}

impl TaskGroup {
    /// Move the child into the groups right before it executes (as root:
    /// register this before the sandbox drops privileges).
    pub fn enter(&self, c: &mut Command) {
        let files: Vec<CString> = self
            .dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .expect("no NUL in a cgroup path")
            })
            .collect();
        // SAFETY: only open/write/close in the child before exec; the
        // paths were built in the parent.
        unsafe {
            c.pre_exec(move || {
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if !ok {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
    }

    /// SIGKILL every process still in the task's groups: what escaped its
    /// process group (`setsid`, a double fork) dies with the task, not with
    /// the job's last task, so it never keeps a GPU the server hands on.
    pub fn kill_all(&self) {
        for d in &self.dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill with a pid read from the group; at worst the
                // process is gone (ESRCH).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Whether the kernel killed a process of the task for its memory limit.
    pub fn memory_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.memory.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// Remove the groups; false while one still holds a process (a
    /// process killed a moment ago may not be gone yet: try again later).
    pub fn remove(&self) -> bool {
        let mut all = true;
        for d in &self.dirs {
            if d.exists() && std::fs::remove_dir(d).is_err() {
                all = false;
            }
        }
        all
    }
}
