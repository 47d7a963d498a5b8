//! End to end with real processes: a server and `suanli agent`s started by
//! the test (fake GPU inventories, real child processes), and `suanli up`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{spawn_agent, wait_for};
use common::*;
use serde_json::{json, Value};

struct Pool {
    s: Server,
    admin: String,
    agent_token: String,
    tenant: String,
    agents: Vec<(String, Child)>,
    /// Last, so that it is removed after the server and agents stop.
    dir: TmpDir,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (_, c) in &mut self.agents {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const FAKE_GPUS: &str = "fake:4xA100-80G";

fn pool(name: &str, agents: usize) -> Pool {
    pool_with(name, agents, FAKE_GPUS)
}

fn pool_with(name: &str, agents: usize, gpus: &str) -> Pool {
    pool_beating(name, agents, gpus, 1)
}

/// Agents heartbeat every `heartbeat_s` (lease: 3 heartbeats).
fn pool_beating(name: &str, agents: usize, gpus: &str, heartbeat_s: u64) -> Pool {
    let dir = tmp(name);
    let conf = dir.join("server.toml");
    let prices = format!("{}/../../examples/prices.toml", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        &conf,
        format!(
            "prices = {prices:?}\n[agents]\nheartbeat_interval_s = {heartbeat_s}\nlease_s = {}\n",
            3 * heartbeat_s
        ),
    )
    .unwrap();
    let s = Server::start_with(&dir, &["--config", conf.to_str().unwrap()]);
    let admin = Server::admin(&dir);
    call(
        "POST",
        &s.u("/v1/tenants"),
        Some(&admin),
        Some(r#"{"name":"acme"}"#),
    );
    let agent_token = token_for(&s, &admin, json!({"scope": "agent"}));
    let tenant = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "acme"}));
    let mut p = Pool {
        dir,
        s,
        admin,
        agent_token,
        tenant,
        agents: Vec::new(),
    };
    for i in 0..agents {
        let n = format!("a{i}");
        let c = spawn_agent(&p.dir, &p.s.url, &p.agent_token, &n, gpus);
        p.agents.push((n, c));
    }
    wait_for(Duration::from_secs(20), || {
        let (_, v, _) = call("GET", &p.s.u("/v1/nodes"), Some(&p.admin), None);
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == agents && n.iter().all(|x| x["state"] == "ready"))
    });
    p
}

fn wait_state(p: &Pool, id: i64, want: &str, limit_s: u64) -> Value {
    let t = Instant::now();
    loop {
        let last = job(&p.s, &p.tenant, id);
        if last["state"] == want {
            return last;
        }
        assert!(
            t.elapsed() < Duration::from_secs(limit_s),
            "job {id} not {want}: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logs(p: &Pool, id: i64, extra: &[&str]) -> String {
    let (code, out, err) = cli(
        &p.s.url,
        &p.tenant,
        &[&["logs", &id.to_string()][..], extra].concat(),
    );
    assert_eq!(code, 0, "{err}");
    out
}

fn events(p: &Pool, id: i64) -> Vec<(String, String)> {
    let (_, v, _) = call(
        "GET",
        &p.s.u(&format!("/v1/jobs/{id}/events")),
        Some(&p.tenant),
        None,
    );
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Whether this test runs as root, which `what` needs. CI runs as root
/// (`SUANLI_REQUIRE_TRACES` marks CI): there, not being root is a failure;
/// elsewhere the test is skipped, saying so.
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

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

#[test]
fn tasks_run_with_their_devices_logs_and_gang_rendezvous() {
    let p = pool("e2e", 2);
    // Devices and logs.
    let id = submit(&p.s, &p.tenant, json!({"command": sh("echo dev=$CUDA_VISIBLE_DEVICES job=$SUANLI_JOB_ID; echo oops >&2"), "gpus": 2}))["id"]
        .as_i64()
        .unwrap();
    let j = wait_state(&p, id, "COMPLETED", 20);
    let devs: Vec<String> = j["task_history"][0]["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        logs(&p, id, &[]),
        format!("dev={} job={id}\n", devs.join(","))
    );
    assert_eq!(logs(&p, id, &["--stderr"]), "oops\n");
    // A gang across both agents (4 GPUs each: one task per node).
    let g = submit(&p.s, &p.tenant, json!({"command": sh("echo $RANK/$WORLD_SIZE@$MASTER_ADDR:$MASTER_PORT"), "gpus": 4, "tasks": 2}))["id"]
        .as_i64()
        .unwrap();
    let j = wait_state(&p, g, "COMPLETED", 20);
    let nodes: Vec<&str> = j["task_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["node"].as_str().unwrap())
        .collect();
    assert_ne!(nodes[0], nodes[1], "{j}");
    let l0 = logs(&p, g, &["--task", "0"]);
    let l1 = logs(&p, g, &["--task", "1"]);
    assert!(l0.starts_with("0/2@127.0.0.1:"), "{l0}");
    assert!(l1.starts_with("1/2@127.0.0.1:"), "{l1}");
    assert_eq!(
        l0.split(':').nth(1),
        l1.split(':').nth(1),
        "one rendezvous port"
    );
    // Many one-GPU jobs at once: each sees exactly its assigned device, and
    // no device is held by two tasks whose runs overlap.
    let ids: Vec<i64> = (0..12)
        .map(|_| {
            submit(
                &p.s,
                &p.tenant,
                json!({"command": sh("echo $CUDA_VISIBLE_DEVICES; sleep 0.5"), "gpus": 1}),
            )["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let mut runs = Vec::new();
    for id in &ids {
        let j = wait_state(&p, *id, "COMPLETED", 30);
        let t = &j["task_history"][0];
        let dev = t["gpus"][0].as_i64().unwrap();
        assert_eq!(logs(&p, *id, &[]).trim(), dev.to_string(), "job {id}");
        runs.push((
            t["node"].as_str().unwrap().to_string(),
            dev,
            t["started_ms"].as_i64().unwrap(),
            t["ended_ms"].as_i64().unwrap(),
        ));
    }
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            let overlap = a.2 < b.3 && b.2 < a.3;
            assert!(
                !(overlap && a.0 == b.0 && a.1 == b.1),
                "device shared: {a:?} {b:?}"
            );
        }
    }
    // A command that cannot start fails with the reason, after its retry.
    let bad = submit(
        &p.s,
        &p.tenant,
        json!({"command": ["/no/such/program"], "retries": 0}),
    )["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, bad, "FAILED", 20);
    assert!(
        logs(&p, bad, &["--stderr"]).contains("cannot start"),
        "{:?}",
        events(&p, bad)
    );
}

/// Removes a directory when dropped (a failed assertion included).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn alive(pid: i32) -> bool {
    // A zombie (state Z) is dead; so is a missing process.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

/// Issue 14's moves of a tenant's job against the agent and another
/// tenant's task, on an agent running as root (the full sandbox).
#[test]
fn a_task_reaches_neither_the_agent_nor_another_task() {
    if !root("the full sandbox") {
        return;
    }
    // Four GPU device files (char devices no driver answers: opening one
    // the task may use fails with ENXIO, any other with EPERM), outside
    // /tmp, which tasks see privately.
    let devs = Path::new("/run").join(format!("suanli-test-gpus-{}", std::process::id()));
    std::fs::create_dir_all(&devs).unwrap();
    let _cleanup = RemoveOnDrop(devs.clone());
    for i in 0..4u32 {
        let f = std::ffi::CString::new(format!("{}/nvidia{i}", devs.display())).unwrap();
        // SAFETY: mknod of a path in a directory this test made.
        let r = unsafe {
            libc::mknod(
                f.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(195, 200 + i),
            )
        };
        assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    }
    let p = pool_with(
        "sandbox",
        1,
        &format!("fake:4xA100-80G,devices={}/nvidia", devs.display()),
    );
    // The victim: another tenant's secret in its environment, running.
    let victim = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh("sleep 30"), "gpus": 1, "env": {"WANDB_API_KEY": "victim-secret"}}),
    )["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, victim, "RUNNING", 20);
    std::thread::sleep(Duration::from_millis(500));
    let script = r#"
        echo "uid=$(id -u)"
        echo "agent-env=$(env | grep -c -e AWS_SECRET -e SUANLI_JOIN -e SUANLI_TOKEN)"
        echo "victim-env=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '
' | grep -c victim-secret)"
        echo "agent-cmdline=$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -c 'agent --serve[r]')"
        echo "others=$(for d in /proc/[0-9]*; do [ -O $d ] || echo x; done | wc -l)"
        cat ../../../../node.token >/dev/null 2>&1 && echo credential=read || echo credential=denied
        ls ../../../../jobs/ >/dev/null 2>&1 && echo listing=yes || echo listing=no
        echo mine > /tmp/left-by-attacker
        echo mine > /dev/shm/left-by-attacker
        echo "mine=$SUANLI_GPUS"
        echo "cuda=$CUDA_VISIBLE_DEVICES"
        for i in 0 1 2 3; do
            ( : < DEVS/nvidia$i ) 2>&1 | grep -q 'not permitted' && echo "gpu$i=denied" || echo "gpu$i=opened"
        done
    "#
    .replace("DEVS", &devs.display().to_string());
    let attacker = submit(&p.s, &p.tenant, json!({"command": sh(&script), "gpus": 1}))["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, attacker, "COMPLETED", 20);
    let out = logs(&p, attacker, &[]);
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .to_string()
    };
    assert_ne!(field("uid"), "0", "{out}");
    assert_eq!(field("agent-env"), "0", "{out}");
    assert_eq!(field("victim-env"), "0", "{out}");
    assert_eq!(field("agent-cmdline"), "0", "{out}");
    assert_eq!(
        field("others"),
        "0",
        "only its own processes are visible: {out}"
    );
    assert_eq!(field("credential"), "denied", "{out}");
    assert_eq!(field("listing"), "no", "{out}");
    // Its own GPU's device file only (the victim holds another).
    let mine: u32 = field("mine").parse().unwrap();
    assert_eq!(field("cuda"), "0", "CUDA sees its one GPU as device 0");
    for i in 0..4 {
        let want = if i == mine { "opened" } else { "denied" };
        assert_eq!(field(&format!("gpu{i}")), want, "GPU {i}: {out}");
    }
    // A later task does not find what the attacker left in /tmp.
    let later = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh("test -e /tmp/left-by-attacker && echo tmp=shared || echo tmp=private; \
            test -e /dev/shm/left-by-attacker && echo shm=shared || echo shm=private")}),
    )["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, later, "COMPLETED", 20);
    assert_eq!(logs(&p, later, &[]), "tmp=private\nshm=private\n");
    assert!(!Path::new("/dev/shm/left-by-attacker").exists());
    // The two ranks of a gang on this node share their job's user id and
    // /dev/shm (NCCL's shared memory between ranks), as a pod's containers do.
    let gang = r#"
        if [ "$RANK" = 0 ]; then echo hi > /dev/shm/from-rank0; fi
        for i in $(seq 100); do [ -e /dev/shm/from-rank0 ] && break; sleep 0.1; done
        echo "uid=$(id -u) seen=$(cat /dev/shm/from-rank0 2>&1)"
        sleep 0.5
    "#;
    let g = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh(gang), "tasks": 2, "gpus": 1, "retries": 0}),
    )["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, g, "COMPLETED", 30);
    let (r0, r1) = (logs(&p, g, &[]), logs(&p, g, &["--task", "1"]));
    assert!(r0.contains("seen=hi"), "{r0}");
    assert_eq!(r0, r1, "same user id, same /dev/shm");
    // The victim ran untouched all along.
    let v = job(&p.s, &p.tenant, victim);
    assert_eq!(v["state"], "RUNNING", "{v}");
}

/// A task's CPU and memory requests are its limits (cgroups), and a task
/// that outgrows its memory ends with that reason.
#[test]
fn a_task_is_held_to_its_cpu_and_memory_requests() {
    if !root("cgroups") {
        return;
    }
    let p = pool("cgroup", 1);
    // The limits, as the task sees them (v1: per controller; v2: unified).
    let script = r#"
        m=$(grep -E '[:,]memory[:,]' /proc/self/cgroup | cut -d: -f3)
        c=$(grep -E ':(cpu,cpuacct|cpu|cpuacct,cpu):' /proc/self/cgroup | cut -d: -f3)
        u=$(grep '^0::' /proc/self/cgroup | cut -d: -f3)
        if [ -n "$m" ] && [ -e /sys/fs/cgroup/memory$m/memory.limit_in_bytes ]; then
            echo "mem=$(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes)"
            echo "cpu=$(cat /sys/fs/cgroup/cpu$c/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu$c/cpu.cfs_period_us)"
        else
            echo "mem=$(cat /sys/fs/cgroup$u/memory.max)"
            echo "cpu=$(cat /sys/fs/cgroup$u/cpu.max)"
        fi
    "#;
    let id = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh(script), "memory_mib": 96, "cpu_milli": 1500}),
    )["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, id, "COMPLETED", 20);
    let out = logs(&p, id, &[]);
    assert!(out.contains(&format!("mem={}\n", 96 << 20)), "{out}");
    assert!(out.contains("cpu=150000 100000\n"), "{out}");
    // Outgrowing the request: killed by the kernel, and the reason says so.
    let hog = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh("head -c 400M /dev/zero | tail > /dev/null"), "memory_mib": 64, "retries": 0}),
    )["id"]
        .as_i64()
        .unwrap();
    let j = wait_state(&p, hog, "FAILED", 30);
    let reason = j["task_history"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("killed: memory limit (64 MiB)"), "{j}");
    // The ended tasks' groups are removed.
    let prefix = format!("suanli-{}-task-", p.agents[0].1.id());
    fn find(d: &std::path::Path, prefix: &str, depth: u32, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(prefix) {
                out.push(e.path().display().to_string());
            } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                find(&e.path(), prefix, depth - 1, out);
            }
        }
    }
    let left = || {
        let mut out = Vec::new();
        find(std::path::Path::new("/sys/fs/cgroup"), &prefix, 4, &mut out);
        out
    };
    let t = Instant::now();
    while !left().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", left());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn work_and_cancels_are_pushed_to_agents_between_heartbeats() {
    // Heartbeats every 60 s: anything faster is the push.
    let p = pool_beating("push", 2, FAKE_GPUS, 60);
    for _ in 0..3 {
        let t = Instant::now();
        let id = submit(
            &p.s,
            &p.tenant,
            json!({"command": sh("echo started; exec sleep 300"), "gpus": 4}),
        )["id"]
            .as_i64()
            .unwrap();
        wait_for(Duration::from_secs(5), || {
            logs(&p, id, &[]).contains("started")
        });
        // The agent confirms the start at once too.
        wait_for(Duration::from_secs(5), || {
            job(&p.s, &p.tenant, id)["task_history"][0]["state"] == "RUNNING"
        });
        let started = t.elapsed();
        let (code, _, err) = cli(&p.s.url, &p.tenant, &["cancel", &id.to_string()]);
        assert_eq!(code, 0, "{err}");
        wait_for(Duration::from_secs(5), || {
            job(&p.s, &p.tenant, id)["task_history"][0]["state"] == "KILLED"
        });
        eprintln!(
            "started and confirmed in {started:?}, killed in {:?}",
            t.elapsed() - started
        );
    }
}

#[test]
fn cancel_kills_the_process_tree_and_max_runtime_fails_the_job() {
    let p = pool("kill", 1);
    // The task forks a grandchild that would outlive a plain kill of the shell.
    let id = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh("sleep 300 & echo $!; sleep 300"), "gpus": 1}),
    )["id"]
        .as_i64()
        .unwrap();
    wait_state(&p, id, "RUNNING", 20);
    let mut pid = 0;
    wait_for(Duration::from_secs(20), || {
        pid = logs(&p, id, &[]).trim().parse().unwrap_or(0);
        pid > 0
    });
    assert!(alive(pid));
    let (code, _, err) = cli(&p.s.url, &p.tenant, &["cancel", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    wait_for(Duration::from_secs(10), || !alive(pid));
    wait_for(Duration::from_secs(10), || {
        job(&p.s, &p.tenant, id)["task_history"][0]["state"] == "KILLED"
    });
    // Over its maximum run time: stopped and FAILED with that reason, no retry.
    let t = submit(
        &p.s,
        &p.tenant,
        json!({"command": ["sleep", "300"], "max_runtime_s": 1, "retries": 3}),
    )["id"]
        .as_i64()
        .unwrap();
    let j = wait_state(&p, t, "FAILED", 20);
    assert_eq!(j["run"], 1, "a timeout is not retried: {j}");
    let ev = events(&p, t);
    let failed = ev.iter().find(|e| e.0 == "FAILED").unwrap();
    assert!(failed.1.contains("max runtime exceeded (1 s)"), "{ev:?}");
}

#[test]
fn a_killed_agent_loses_its_node_and_the_job_completes_elsewhere() {
    let mut p = pool("lease", 2);
    // A mark of this test's tasks, to find their processes on the machine.
    let mark = format!("lease-{}-{}", std::process::id(), p.s.url);
    let id = submit(
        &p.s,
        &p.tenant,
        json!({"command": sh("echo started; if [ $SUANLI_RUN = 1 ]; then sleep 120; fi; echo done"), "gpus": 4, "retries": 1, "env": {"MARK": mark}}),
    )["id"]
        .as_i64()
        .unwrap();
    let j = wait_state(&p, id, "RUNNING", 20);
    let first = j["task_history"][0]["node"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), || {
        job(&p.s, &p.tenant, id)["task_history"][0]["state"] == "RUNNING"
    });
    // SIGKILL the agent running it: no goodbye, its task keeps running as an orphan.
    let i = p.agents.iter().position(|a| a.0 == first).unwrap();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    p.agents[i].1.kill().unwrap();
    p.agents[i].1.wait().unwrap();
    let j = wait_state(&p, id, "COMPLETED", 40);
    let runs = j["task_history"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{j}");
    assert_eq!(runs[0]["state"], "LOST");
    // Billed until the last heartbeat, which came at most a second before the kill.
    let lost_end = runs[0]["ended_ms"].as_i64().unwrap();
    assert!(
        lost_end <= killed_at && killed_at - lost_end < 2_500,
        "{lost_end} vs {killed_at}"
    );
    let month = month_now();
    let (_, b, _) = call(
        "GET",
        &p.s.u(&format!("/v1/bills?period={month}")),
        Some(&p.tenant),
        None,
    );
    let gpu = b["invoices"][0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["resource"] == "gpu")
        .unwrap()
        .clone();
    let expect: i64 = runs
        .iter()
        .map(|t| (t["ended_ms"].as_i64().unwrap() - t["started_ms"].as_i64().unwrap()) * 4000)
        .sum();
    assert_eq!(gpu["quantity_raw"].as_i64(), Some(expect), "{gpu}");
    assert_ne!(runs[1]["node"].as_str().unwrap(), first);
    assert!(
        events(&p, id)
            .iter()
            .any(|e| e.0 == "RETRYING" && e.1.contains("missed its lease")),
        "{:?}",
        events(&p, id)
    );
    assert_eq!(logs(&p, id, &[]), "started\ndone\n");
    let (_, nodes, _) = call("GET", &p.s.u("/v1/nodes"), Some(&p.admin), None);
    let down = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == first.as_str())
        .unwrap()
        .clone();
    assert_eq!(down["state"], "down", "{down}");
    // The agent restarts: it kills what its previous run left, and the node is ready again.
    let c = spawn_agent(&p.dir, &p.s.url, &p.agent_token, &first, FAKE_GPUS);
    p.agents[i].1 = c;
    wait_for(Duration::from_secs(20), || {
        let (_, v, _) = call("GET", &p.s.u("/v1/nodes"), Some(&p.admin), None);
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == first.as_str() && n["state"] == "ready")
    });
    // Nothing of the lost attempt still runs: the restarted agent killed
    // what its previous run left, unless the other agent's sandbox already
    // had (it clears a task user id of leftovers before reusing it).
    let marked = format!("MARK={mark}\0");
    let orphans = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.windows(marked.len()).any(|w| w == marked.as_bytes()))
            })
            .map(|e| std::fs::read_to_string(e.path().join("status")).unwrap_or_default())
            .collect()
    };
    let t = Instant::now();
    while !orphans().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "left running: {:?}\nagent log: {}",
            orphans(),
            std::fs::read_to_string(p.dir.join(format!("{first}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn up_brings_a_pool_and_its_printed_example_completes() {
    let dir = tmp("up");
    let mut up = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args([
            "up",
            "--agents",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let end = l.contains("Ctrl-C");
        printed.push(l);
        if end {
            break;
        }
    }
    let text = printed.join("\n");
    let example = printed
        .iter()
        .find(|l| l.contains(" submit "))
        .expect(&text)
        .trim()
        .to_string();
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert!(
        env.contains("export SUANLI_SERVER=http://127.0.0.1:")
            && env.contains("export SUANLI_TOKEN=sl_"),
        "{env}"
    );
    assert!(std::fs::read_to_string(dir.join("admin.env"))
        .unwrap()
        .contains("SUANLI_TOKEN"));
    // Paste the example into a shell, as a user would (agents may still be registering).
    let mut out = String::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(". {}/env && {example}", dir.display()))
            .output()
            .unwrap();
        out = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let id: i64 = out
        .trim()
        .strip_prefix("submitted job ")
        .and_then(|x| x.parse().ok())
        .expect(&out);
    let run = |args: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}/env && {} {args}",
                dir.display(),
                env!("CARGO_BIN_EXE_suanli")
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let t = Instant::now();
    loop {
        let v: Value = serde_json::from_str(&run(&format!("job show {id} --json"))).unwrap();
        if v["state"] == "COMPLETED" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        run(&format!("logs {id}")).starts_with("hello from GPU "),
        "{}",
        run(&format!("logs {id}"))
    );
    // The demo model service answers the printed request: scaled from
    // zero, a `mock-llm` replica started by an agent (a sandboxed task,
    // so the binary is at a path such a task can run).
    let curl = printed
        .iter()
        .find(|l| l.contains("/v1/chat/completions"))
        .expect(&text)
        .trim()
        .to_string();
    let has_curl = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .is_ok_and(|o| o.status.success());
    let answer = if has_curl {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(". {}/env && {curl}", dir.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    } else {
        let env = std::fs::read_to_string(dir.join("env")).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")))
                .unwrap()
                .to_string()
        };
        ureq::post(&format!("{}/v1/chat/completions", get("SUANLI_SERVER")))
            .set("Authorization", &format!("Bearer {}", get("SUANLI_TOKEN")))
            .timeout(Duration::from_secs(120))
            .send_string(r#"{"model":"demo","messages":[{"role":"user","content":"hello"}]}"#)
            .unwrap()
            .into_string()
            .unwrap()
    };
    let v: Value = serde_json::from_str(&answer).expect(&answer);
    assert!(v["usage"]["completion_tokens"].as_i64().unwrap() > 0, "{v}");
    assert!(
        run("service show chat").contains("demo"),
        "{}",
        run("service show chat")
    );
    // The printed bill and economics commands work with the demo prices.
    let bill_line = printed
        .iter()
        .find(|l| l.contains(" bill --period "))
        .expect(&text)
        .trim()
        .to_string();
    let bill = bill_line.as_str();
    // The economics line is pasted verbatim into bash (`source` is bash's).
    let econ = printed
        .iter()
        .find(|l| l.contains(" report economics "))
        .expect(&text)
        .trim()
        .to_string();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(". {}/env && {bill}", dir.display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("tenant demo"), "{out}");
    let o = Command::new("bash").arg("-c").arg(&econ).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("A100-80G") && out.contains("by tenant: demo"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every file holding a token is the owner's alone, and each agent has
    // a credential of its own (issue 14).
    use std::os::unix::fs::PermissionsExt;
    let mut creds = Vec::new();
    for f in ["admin.token", "up-tokens.json", "env", "admin.env"]
        .iter()
        .map(|f| dir.join(f))
        .chain((0..2).map(|i| dir.join(format!("agents/local-{i}/node.token"))))
    {
        let meta = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", f.display());
        if f.ends_with("node.token") {
            creds.push(std::fs::read_to_string(&f).unwrap());
        }
    }
    assert_ne!(creds[0], creds[1], "one credential per agent");
    // SIGTERM stops everything.
    unsafe_kill(up.id() as i32);
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}");
    let url = env
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("export SUANLI_SERVER=")
        .to_string();
    assert!(
        ureq::get(&format!("{url}/healthz")).call().is_err(),
        "the server is gone"
    );
}

fn unsafe_kill(pid: i32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}
