//! What isolates a task from the agent and from the other tasks of the
//! node.
//!
//! Always: a clean environment (the job's variables and Suanli's, a fixed
//! `PATH`, `HOME` = the task's directory; nothing of the agent's, so no
//! join token, credential or cloud key leaks into a task).
//!
//! `Full` (the agent runs as root; the default there): each job attempt
//! running on the node has a user id of its own from a pool
//! (`--task-uids`, no `useradd`: a numeric id needs no passwd entry), so
//! its tasks cannot read the agent's files (the node credential is 0600)
//! nor another job's (`/proc/PID/environ` needs the same user, task
//! directories are 0700); a mount namespace per task with its own `/proc`
//! mounted `hidepid=2` (other users' processes, and so their command
//! lines, are invisible) and its own `/tmp` (a tmpfs); a `/dev/shm` of the
//! job's (a tmpfs the agent mounts under [`LOCKS`]`/shm`, 0700 and owned
//! by the job's id, bound onto each of its tasks' `/dev/shm`): the ranks of
//! a gang on one node share POSIX shared memory as NCCL expects, like the
//! containers of a pod, and no other job reaches it; the node's other
//! GPUs' device files cannot be opened (see [`crate::devices`], through
//! the task's cgroup);
//! no new privileges (setuid binaries do not elevate). When the job's
//! last task on the node ends, every process left under its user id is
//! killed and its `/dev/shm` unmounted before the id is handed to another
//! job.
//!
//! `Off` (not root, or `--sandbox off`): tasks run as the agent's user,
//! with only the clean environment; the agent says so when it starts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How tasks are isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Off,
}

/// The sandbox of one agent: its mode and the pool of task user ids.
#[derive(Debug)]
pub struct Sandbox {
    pub mode: Mode,
    /// Ids `first..=last` of the pool.
    first: u32,
    last: u32,
    /// Ids held by this agent's jobs, each with its lock (see [`LOCKS`]).
    in_use: BTreeMap<u32, Held>,
    /// The id of each job attempt (job, run) running here.
    by_job: HashMap<(i64, i64), u32>,
    /// Where the search for a free id starts: ids are handed out in turn,
    /// not lowest first, so an id is reused as late as possible.
    cursor: u32,
    /// Mount `/proc` with `hidepid=2` (kernels from 5.8 keep such options
    /// per mount; older ones would apply them to the whole node).
    hidepid: bool,
}

/// A user id held by the tasks of one job attempt.
#[derive(Debug)]
struct Held {
    /// The `flock` that keeps other agents off the id.
    _lock: File,
    job: (i64, i64),
    /// Tasks of the job running under it.
    tasks: usize,
    /// The job's `/dev/shm` (a tmpfs mounted here), once made.
    shm: Option<PathBuf>,
    /// Task directories made for the job (its own): handed to root when
    /// the id is released, so a later job under the same id cannot read
    /// what this one left there.
    dirs: Vec<PathBuf>,
}

/// Where task user ids are locked (`uid-N.lock`, `flock`ed while a task
/// holds the id), so that several agents on one machine (`suanli up`)
/// never hand out one id twice; a lock goes with the agent that held it.
pub const LOCKS: &str = "/run/suanli-agent";

/// [`LOCKS`], made root's alone (0700): a task may not open a lock (a
/// read-only descriptor is enough to `flock` it and starve every agent of
/// ids) nor list the jobs' `/dev/shm`s.
fn locks_dir() -> io::Result<&'static Path> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(LOCKS)?;
    std::fs::set_permissions(LOCKS, std::fs::Permissions::from_mode(0o700))?;
    Ok(Path::new(LOCKS))
}

/// Lock id `uid` for this agent; `None` when another agent holds it.
fn lock_uid(uid: u32) -> io::Result<Option<File>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(locks_dir()?.join(format!("uid-{uid}.lock")))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(f))
    } else {
        Ok(None)
    }
}

/// The default pool: ids no distribution hands out to people or services.
pub const DEFAULT_UIDS: (u32, u32) = (200_000, 201_023);

/// `START-END` (inclusive) of `--task-uids`.
pub fn parse_uids(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--task-uids must be START-END with 1000 <= START <= END (found {s:?})");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a < 1000 || a > b || b == u32::MAX {
        return Err(bad());
    }
    Ok((a, b))
}

/// A fixed `PATH` for tasks (the agent's own is not passed on).
pub const TASK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Sandbox {
    /// `want`: `auto` (full when root and it works here, else off), `full`
    /// (an error if it cannot be had) or `off`. Full is tried once with a
    /// real process before any task runs.
    pub fn new(want: &str, uids: (u32, u32)) -> Result<Sandbox, String> {
        let mut s = Sandbox {
            mode: Mode::Off,
            first: uids.0,
            last: uids.1,
            in_use: BTreeMap::new(),
            by_job: HashMap::new(),
            cursor: uids.0,
            hidepid: kernel_at_least(5, 8),
        };
        match want {
            "off" => return Ok(s),
            "auto" | "full" => {}
            w => return Err(format!("--sandbox must be auto, full or off (found {w:?})")),
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let probe = if root {
            s.mode = Mode::Full;
            s.probe()
        } else {
            Err("the agent does not run as root".to_string())
        };
        match (probe, want) {
            (Ok(()), _) => {
                if !s.hidepid {
                    eprintln!(
                        "suanli-agent: WARNING: kernel older than 5.8: tasks can see other \
                         tasks' processes (hidepid would apply to the whole node)"
                    );
                }
                Ok(s)
            }
            (Err(e), "full") => Err(format!("--sandbox full is not possible here: {e}")),
            (Err(e), _) => {
                s.mode = Mode::Off;
                eprintln!(
                    "suanli-agent: WARNING: tasks are not sandboxed ({e}): they run as this \
                     agent's user, can read its files and see every process of the node; only \
                     their environment is cleaned. Run the agent as root for per-task users, \
                     hidden processes and private /tmp."
                );
                Ok(s)
            }
        }
    }

    /// Run `/bin/true` in the sandbox as the pool's first id.
    fn probe(&mut self) -> Result<(), String> {
        let mut c = Command::new("/bin/true");
        c.env_clear();
        let uid = self.first;
        self.prepare(&mut c, uid);
        match c.status() {
            Ok(st) if st.success() => Ok(()),
            Ok(st) => Err(format!("a sandboxed /bin/true ended with {st}")),
            Err(e) => Err(format!("cannot start a sandboxed process: {e}")),
        }
    }

    /// The user id of a task of job attempt `job` (`None` when the agent
    /// runs tasks as itself): the job's, if another of its tasks runs here,
    /// else a free one, locked for this agent, cleared of any process left
    /// under it, with a fresh `/dev/shm` for the job.
    pub fn take_uid(&mut self, job: (i64, i64)) -> Result<Option<u32>, String> {
        if self.mode == Mode::Off {
            return Ok(None);
        }
        if let Some(&u) = self.by_job.get(&job) {
            self.in_use.get_mut(&u).expect("held").tasks += 1;
            return Ok(Some(u));
        }
        let n = self.last - self.first + 1;
        for k in 0..n {
            let u = self.first + (self.cursor - self.first + k) % n;
            if self.in_use.contains_key(&u) {
                continue;
            }
            match lock_uid(u) {
                Ok(Some(lock)) => {
                    kill_user(u);
                    let shm = mount_shm(u)?;
                    self.in_use.insert(
                        u,
                        Held {
                            _lock: lock,
                            job,
                            tasks: 1,
                            shm: Some(shm),
                            dirs: Vec::new(),
                        },
                    );
                    self.by_job.insert(job, u);
                    self.cursor = if u == self.last { self.first } else { u + 1 };
                    return Ok(Some(u));
                }
                Ok(None) => continue, // another agent's
                Err(e) => return Err(format!("cannot lock a task user id in {LOCKS}: {e}")),
            }
        }
        Err(format!(
            "every task user id of {}-{} is in use (--task-uids)",
            self.first, self.last
        ))
    }

    /// A task under `uid` ended. After the job's last task here: kill
    /// whatever still runs under the id (a process that left the task's
    /// process group included), unmount the job's `/dev/shm`, hand the id
    /// back.
    pub fn release_uid(&mut self, uid: u32) {
        let Some(h) = self.in_use.get_mut(&uid) else {
            return;
        };
        h.tasks = h.tasks.saturating_sub(1);
        if h.tasks > 0 {
            return;
        }
        kill_user(uid);
        if let Some(shm) = &h.shm {
            unmount_shm(shm);
        }
        for d in &h.dirs {
            // Root's now (0700): nothing in it is reachable by the id.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::os::unix::fs::chown(d, Some(0), Some(0));
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        }
        self.by_job.remove(&h.job);
        self.in_use.remove(&uid);
    }

    /// Kill every process running under an id of the pool (left by an
    /// earlier run of the agent, whose tasks all ended with it).
    pub fn sweep(&self) {
        if self.mode == Mode::Off {
            return;
        }
        let mut uids = BTreeSet::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
            if let Some(u) = uid.filter(|u| (self.first..=self.last).contains(u)) {
                uids.insert(u);
            }
        }
        for u in uids {
            // Only ids no live agent holds: another agent on this machine
            // may be running a task under one.
            if let Ok(Some(_lock)) = lock_uid(u) {
                eprintln!(
                    "suanli-agent: killing the processes of task user {u}, left by a previous run"
                );
                kill_user(u);
            }
        }
        // Job `/dev/shm`s of ids no live agent holds.
        for e in std::fs::read_dir(Path::new(LOCKS).join("shm"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(u) = name.strip_prefix("uid-").and_then(|u| u.parse().ok()) else {
                continue;
            };
            if let Ok(Some(_lock)) = lock_uid(u) {
                unmount_shm(&e.path());
            }
        }
    }

    /// Make the task's directory its own (0700), and set up `c` to enter
    /// the sandbox as `uid` just before it executes.
    pub fn own_dir(&mut self, dir: &Path, uid: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(dir, Some(uid), Some(uid))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some(h) = self.in_use.get_mut(&uid) {
            h.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    /// Set `c` up to enter the sandbox as `uid` (full mode) right before it
    /// executes: its own mount namespace, `/proc` with `hidepid=2`, a
    /// private `/tmp` and `/dev/shm`, no new privileges, then the user id (groups
    /// dropped). The mounts need root, so they precede the id change.
    pub fn prepare(&self, c: &mut Command, uid: u32) {
        if self.mode == Mode::Off {
            return;
        }
        let proc_ = CString::new("proc").expect("no NUL");
        let proc_dir = CString::new("/proc").expect("no NUL");
        let hide = CString::new(if self.hidepid { "hidepid=2" } else { "" }).expect("no NUL");
        let tmpfs = CString::new("tmpfs").expect("no NUL");
        let tmp = CString::new("/tmp").expect("no NUL");
        let tmp_opts = CString::new("mode=1777").expect("no NUL");
        let shm = CString::new("/dev/shm").expect("no NUL");
        let has_shm = Path::new("/dev/shm").is_dir();
        let var_tmp = CString::new("/var/tmp").expect("no NUL");
        let has_var_tmp = Path::new("/var/tmp").is_dir();
        // The job's own /dev/shm, bound in; a fresh tmpfs if it has none.
        let job_shm = self
            .in_use
            .get(&uid)
            .and_then(|h| h.shm.as_ref())
            .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL in a path"));
        let root = CString::new("/").expect("no NUL");
        // SAFETY: the closure runs in the forked child before exec and
        // only makes system calls (no allocation, no locks): the strings
        // were built above, in the parent.
        unsafe {
            c.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                // Its own mounts, and its own System V IPC and POSIX
                // message queues (no object of another job's is reachable).
                check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC))?;
                check(libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    proc_.as_ptr(),
                    proc_dir.as_ptr(),
                    proc_.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    hide.as_ptr().cast(),
                ))?;
                check(libc::mount(
                    tmpfs.as_ptr(),
                    tmp.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    tmp_opts.as_ptr().cast(),
                ))?;
                if has_var_tmp {
                    check(libc::mount(
                        tmpfs.as_ptr(),
                        var_tmp.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        tmp_opts.as_ptr().cast(),
                    ))?;
                }
                match (&job_shm, has_shm) {
                    (Some(src), true) => check(libc::mount(
                        src.as_ptr(),
                        shm.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?,
                    (None, true) => check(libc::mount(
                        tmpfs.as_ptr(),
                        shm.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        tmp_opts.as_ptr().cast(),
                    ))?,
                    (_, false) => {}
                }
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(uid))?;
                check(libc::setuid(uid))?;
                Ok(())
            });
        }
    }
}

/// Mount a fresh tmpfs for the `/dev/shm` of the job under `uid`, owned
/// by it and closed to everyone else (0700).
fn mount_shm(uid: u32) -> Result<PathBuf, String> {
    let dir = Path::new(LOCKS).join("shm").join(format!("uid-{uid}"));
    let fail = |e: io::Error| format!("cannot make the job's /dev/shm at {}: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(fail)?;
    unmount_all(&dir); // left by an agent that died
    let c = |s: &str| CString::new(s).expect("no NUL");
    let target = CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
    let opts = c(&format!("mode=0700,uid={uid},gid={uid}"));
    // SAFETY: valid C strings; mount reads them only during the call.
    let r = unsafe {
        libc::mount(
            c("tmpfs").as_ptr(),
            target.as_ptr(),
            c("tmpfs").as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            opts.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    Ok(dir)
}

/// Unmount every mount stacked on `dir`.
fn unmount_all(dir: &Path) {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
    // SAFETY: a valid C string; umount2 only reads it.
    while unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {}
}

/// Unmount a job's `/dev/shm` (its contents go with it) and remove the
/// mount point.
fn unmount_shm(dir: &Path) {
    unmount_all(dir);
    let _ = std::fs::remove_dir(dir);
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r.trim().split(|c: char| !c.is_ascii_digit());
    let v = (
        it.next().and_then(|x| x.parse::<u32>().ok()).unwrap_or(0),
        it.next().and_then(|x| x.parse::<u32>().ok()).unwrap_or(0),
    );
    v >= (major, minor)
}

/// Kill every process of user `uid`: a child that becomes `uid` and
/// signals everything it may (`kill(-1)`: exactly that user's processes,
/// itself included).
pub fn kill_user(uid: u32) {
    let mut c = Command::new("/bin/true");
    c.env_clear();
    // SAFETY: only system calls in the child before exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            libc::kill(-1, libc::SIGKILL);
            Ok(())
        });
    }
    let _ = c.status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges_are_checked() {
        assert_eq!(parse_uids("200000-200009"), Ok((200_000, 200_009)));
        for bad in ["", "5", "10-20", "300000-200000", "a-b", "1000-4294967295"] {
            assert!(parse_uids(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unsandboxed_agent_hands_out_no_ids() {
        let mut s = Sandbox::new("off", DEFAULT_UIDS).unwrap();
        assert_eq!(s.mode, Mode::Off);
        assert_eq!(s.take_uid((1, 1)), Ok(None));
        assert!(Sandbox::new("maybe", DEFAULT_UIDS).is_err());
    }

    #[test]
    fn ids_are_handed_out_once_until_released() {
        let mut s = Sandbox {
            mode: Mode::Full,
            first: 300_000,
            last: 300_001,
            in_use: BTreeMap::new(),
            by_job: HashMap::new(),
            cursor: 300_000,
            hidepid: true,
        };
        if unsafe { libc::geteuid() } != 0 {
            return; // locks live in /run, and ids are changed by root
        }
        let a = s.take_uid((1, 1)).unwrap().unwrap();
        let b = s.take_uid((2, 1)).unwrap().unwrap();
        assert_ne!(a, b);
        assert!(s.take_uid((3, 1)).is_err(), "the pool is exhausted");
        // A second task of job 1 shares its id (and its /dev/shm).
        assert_eq!(s.take_uid((1, 1)), Ok(Some(a)));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("task-0");
        std::fs::create_dir(&dir).unwrap();
        s.own_dir(&dir, a).unwrap();
        let shm = Path::new(LOCKS).join("shm").join(format!("uid-{a}"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().uid(), a);
        let m = std::fs::metadata(&shm).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (a, 0o700));
        s.release_uid(a);
        assert!(
            lock_uid(a).unwrap().is_none(),
            "one task of job 1 still runs"
        );
        assert!(shm.exists());
        // Another agent on this machine sees both ids taken.
        assert!(lock_uid(a).unwrap().is_none());
        s.release_uid(a);
        // A process forked meanwhile by another test of this binary holds a
        // copy of the lock's descriptor until it executes: wait for that.
        let t = std::time::Instant::now();
        while lock_uid(a).unwrap().is_none() {
            assert!(t.elapsed().as_secs() < 5, "released");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            !shm.exists(),
            "the job's /dev/shm is gone with its last task"
        );
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (0, 0o700),
            "the job's directory is root's now"
        );
        let locks = std::fs::metadata(LOCKS).unwrap();
        assert_eq!(locks.mode() & 0o777, 0o700, "tasks cannot reach the locks");
        assert_eq!(s.take_uid((4, 1)), Ok(Some(a)));
        s.release_uid(a);
        s.release_uid(b);
    }
}
