//! Which GPU device files a task may open: only those of the GPUs it was
//! given. `CUDA_VISIBLE_DEVICES` is a convention a task can ignore; the
//! kernel's device check cannot be.
//!
//! A GPU is a character device (`/dev/nvidiaN`: major 195, minor N). Each
//! task's cgroup denies the device numbers of the node's other GPUs, and
//! nothing else (the task keeps `/dev/null`, `/dev/nvidiactl`,
//! `/dev/nvidia-uvm` and the rest, which hold no tenant's state):
//!
//! - cgroup v1: one `c MAJOR:MINOR rwm` line per device written to the
//!   task group's `devices.deny` (the devices controller);
//! - cgroup v2 (no devices controller there): a `BPF_PROG_TYPE_CGROUP_DEVICE`
//!   program, built here instruction by instruction, loaded with `bpf(2)`
//!   and attached to the task's group with `BPF_F_ALLOW_MULTI` (so it runs
//!   beside a program systemd may have attached above). It answers 0
//!   (denied) for a character device on the list and 1 otherwise.
//!
//! Opening a denied device fails with `EPERM` before any driver is asked.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// A character device's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

/// The number of the character device at `path` (an error names the file
/// when it is missing or not a character device).
pub fn char_device(path: &Path) -> Result<DevNo, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_char_device() {
        return Err(format!("{} is not a character device", path.display()));
    }
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    Ok(DevNo {
        major: libc::major(rdev),
        minor: libc::minor(rdev),
    })
}

/// The v1 `devices.deny` lines of `deny`.
pub fn v1_rules(deny: &[DevNo]) -> Vec<String> {
    deny.iter()
        .map(|d| format!("c {}:{} rwm", d.major, d.minor))
        .collect()
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// `access_type & 0xffff` of `struct bpf_cgroup_dev_ctx`: a character device.
const DEVCG_DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The device program denying `deny`: with r1 the context
/// (`access_type`, `major`, `minor`: three u32),
///
/// ```text
///   r2 = ctx.access_type & 0xffff; r3 = ctx.major; r4 = ctx.minor
///   if r2 != CHAR goto allow
///   for each (M, m): if r3 == M && r4 == m { r0 = 0; exit }
/// allow: r0 = 1; exit
/// ```
pub fn program(deny: &[DevNo]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 4, 0),
        insn(LDX_MEM_W, 4, 1, 8, 0),
    ];
    // Each device is 4 instructions; the jump skips to `allow`.
    let to_allow = (deny.len() * 4) as i16;
    p.push(insn(JMP_JNE_K, 2, 0, to_allow, DEVCG_DEV_CHAR));
    for d in deny {
        // Offsets count from the next instruction.
        p.push(insn(JMP_JNE_K, 3, 0, 3, d.major as i32));
        p.push(insn(JMP_JNE_K, 4, 0, 2, d.minor as i32));
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) prefix of `union
    // bpf_attr` of the size given; the kernel reads (and for some commands
    // writes) only that many bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load the program denying `deny` and attach it to the cgroup v2 group
/// `dir`. The attachment lives as long as the group.
pub fn attach_v2(dir: &Path, deny: &[DevNo]) -> io::Result<()> {
    let prog = program(deny);
    let license = CString::new("Apache-2.0").expect("no NUL");
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"suanli_device");
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..ProgLoad::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut load).map_err(|e| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let verifier = String::from_utf8_lossy(&log[..end]);
        io::Error::new(
            e.kind(),
            format!("loading the device filter: {e}; {}", verifier.trim()),
        )
    })?;
    // SAFETY: the kernel just returned this descriptor, owned by nobody else.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let group = std::fs::File::open(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let mut attach = ProgAttach {
        target_fd: group.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttach::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("attaching the device filter to {}: {e}", dir.display()),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_checks_each_denied_device_and_allows_the_rest() {
        let deny = [
            DevNo {
                major: 195,
                minor: 1,
            },
            DevNo {
                major: 195,
                minor: 3,
            },
        ];
        let p = program(&deny);
        assert_eq!(p.len(), 4 + 1 + 2 * 4 + 2);
        // The type check jumps over every device block to `allow`.
        assert_eq!(p[4].off, 8);
        assert_eq!(p[4 + 1 + 8].imm, 1, "allow returns 1");
        assert_eq!((p[5].imm, p[6].imm, p[7].imm), (195, 1, 0));
        assert_eq!((p[9].imm, p[10].imm, p[11].imm), (195, 3, 0));
        assert_eq!(p.last().unwrap().code, JMP_EXIT);
        assert_eq!(
            v1_rules(&deny),
            vec!["c 195:1 rwm".to_string(), "c 195:3 rwm".to_string()]
        );
        // No device denied: the program allows everything.
        let p = program(&[]);
        assert_eq!(p[4].off, 0);
        assert_eq!(p[5].imm, 1);
    }

    /// Root, or (outside CI) skip; CI (`SUANLI_REQUIRE_TRACES`) runs as root.
    fn root(what: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert!(
            std::env::var_os("SUANLI_REQUIRE_TRACES").is_none(),
            "{what} needs root"
        );
        eprintln!("skipped: {what} needs root");
        false
    }

    /// Where a cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(Into::into))
                .flatten()
        })
    }

    /// Try to open each device file from a process inside `procs`
    /// (a group's `cgroup.procs`); the shell's error for each.
    fn open_from(procs: &Path, files: &[&Path]) -> String {
        use std::os::unix::process::CommandExt;
        let script: String = files
            .iter()
            .map(|f| format!("( : < {} ) 2>&1; ", f.display()))
            .collect();
        let procs = CString::new(procs.as_os_str().as_encoded_bytes()).unwrap();
        let mut c = std::process::Command::new("/bin/sh");
        c.args(["-c", &script]);
        // SAFETY: only open/write/close before exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let out = c.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Two character devices no driver answers (195:250 and 195:251): an
    /// open that passes the device check fails with ENXIO, one that does
    /// not with EPERM.
    fn fake_gpus(dir: &Path) -> [std::path::PathBuf; 2] {
        let files = [dir.join("gpu-a"), dir.join("gpu-b")];
        for (f, minor) in files.iter().zip([250, 251]) {
            let c = CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a plain mknod of a path we own.
            let r = unsafe {
                libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(195, minor))
            };
            assert_eq!(
                r,
                0,
                "mknod {}: {}",
                f.display(),
                io::Error::last_os_error()
            );
        }
        files
    }

    #[test]
    fn a_v2_device_filter_denies_exactly_its_devices() {
        if !root("attaching a device filter") {
            return;
        }
        let mount = cgroup2_mount().expect("a cgroup2 hierarchy is mounted");
        let group = mount.join(format!("suanli-devtest-{}", std::process::id()));
        std::fs::create_dir(&group).unwrap();
        let tmp = std::env::temp_dir().join(format!("suanli-devtest-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let [a, b] = fake_gpus(&tmp);
        let deny = [char_device(&a).unwrap()];
        assert_eq!(
            deny[0],
            DevNo {
                major: 195,
                minor: 250
            }
        );
        let attached = attach_v2(&group, &deny);
        let out = open_from(&group.join("cgroup.procs"), &[&a, &b]);
        let _ = std::fs::remove_dir(&group);
        let _ = std::fs::remove_dir_all(&tmp);
        attached.unwrap();
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("Operation not permitted"), "{out}");
        assert!(lines[1].contains("No such device"), "{out}");
    }

    #[test]
    fn only_character_devices_are_gpus() {
        assert!(char_device(Path::new("/dev/null")).is_ok());
        let e = char_device(Path::new("/")).unwrap_err();
        assert!(e.contains("not a character device"), "{e}");
        let e = char_device(Path::new("/nonexistent/nvidia0")).unwrap_err();
        assert!(e.contains("/nonexistent/nvidia0"), "{e}");
    }
}
