//! Several server replicas on one PostgreSQL database, with real processes:
//! the leader is SIGKILLed while clients submit and agents run the work,
//! or stopped (SIGSTOP) past its lease and resumed. Every acknowledged
//! submission exists once and finishes, no device is held by two tasks at
//! any instant, no second is billed twice, and a stale leader's writes are
//! refused. Needs a PostgreSQL cluster (`SUANLI_TEST_POSTGRES`; skipped
//! without one, a failure in CI).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const URL: &str = "SUANLI_TEST_POSTGRES";
const REQUIRE: &str = "SUANLI_REQUIRE_POSTGRES";
/// The leader lease's default TTL (`LoopConfig::leader_lease_ms`).
const TTL: Duration = Duration::from_secs(6);

/// A fresh database on the test cluster, or None (skipped).
fn database() -> Option<String> {
    let Ok(cluster) = std::env::var(URL) else {
        if std::env::var_os(REQUIRE).is_some() {
            panic!("{REQUIRE} is set but {URL} is not: start one with scripts/throwaway-postgres");
        }
        eprintln!("skipped: {URL} is not set (scripts/throwaway-postgres starts a cluster)");
        return None;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    Some(
        rt.block_on(suanli_server::store::postgres::scratch_database(
            &cluster,
            "suanli_failover",
        ))
        .unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One server replica: its port and data dir are kept across restarts.
struct Replica {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self, db: &str, conf: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_suanli"))
            .env("SUANLI_STORE", db)
            .args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(conf)
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Up once /healthz answers (a follower listens at once).
        let t0 = Instant::now();
        while ureq::get(&format!("{}/healthz", self.url()))
            .call()
            .is_err()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "replica did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it says it leads.
    fn leads(&self) -> bool {
        match ureq::get(&format!("{}/readyz", self.url()))
            .timeout(Duration::from_millis(500))
            .call()
        {
            Ok(r) => r
                .into_json::<serde_json::Value>()
                .is_ok_and(|v| v["role"] == "leader"),
            Err(_) => false,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pool: replicas on one database, a tenant, agents on every replica.
struct Cluster {
    db: String,
    conf: std::path::PathBuf,
    replicas: Vec<Replica>,
    admin: String,
    tenant: String,
    _agents: Agents,
    _dir: TmpDir,
}

fn cluster(name: &str, replicas: usize, agents: usize, node_lease_s: u64) -> Option<Cluster> {
    cluster_with(name, replicas, agents, 1, node_lease_s)
}

/// A cluster whose agents are asked to report every `heartbeat_s`.
fn cluster_with(
    name: &str,
    replicas: usize,
    agents: usize,
    heartbeat_s: u64,
    node_lease_s: u64,
) -> Option<Cluster> {
    let db = database()?;
    let dir = tmp(name);
    let conf = dir.join("server.toml");
    std::fs::write(
        &conf,
        format!("[agents]\nheartbeat_interval_s = {heartbeat_s}\nlease_s = {node_lease_s}\n"),
    )
    .unwrap();
    let mut rs: Vec<Replica> = (0..replicas)
        .map(|i| {
            let d = dir.join(format!("r{i}"));
            std::fs::create_dir_all(&d).unwrap();
            Replica {
                port: free_port(),
                dir: d,
                child: None,
            }
        })
        .collect();
    // The first bootstraps the admin token and leads.
    rs[0].start(&db, &conf);
    let t0 = Instant::now();
    while !rs[0].leads() {
        assert!(t0.elapsed() < TTL * 2, "the first replica never led");
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in &mut rs[1..] {
        r.start(&db, &conf);
    }
    let admin = Server::admin(&rs[0].dir);
    let url = rs[0].url();
    let (code, v, _) = call(
        "POST",
        &format!("{url}/v1/tenants"),
        Some(&admin),
        Some(&json!({"name": "acme"}).to_string()),
    );
    assert_eq!(code, 201, "{v}");
    let token = |body: serde_json::Value| {
        let (code, v, _) = call(
            "POST",
            &format!("{url}/v1/tokens"),
            Some(&admin),
            Some(&body.to_string()),
        );
        assert_eq!(code, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    let tenant = token(json!({"scope": "tenant", "tenant": "acme"}));
    let join = token(json!({"scope": "agent"}));
    let all: Vec<String> = rs.iter().map(Replica::url).collect();
    let all = all.join(",");
    let join_file = dir.join("join.token");
    std::fs::write(&join_file, &join).unwrap();
    let mut children = Vec::new();
    for i in 0..agents {
        let name = format!("n{i}");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        children.push(
            Command::new(env!("CARGO_BIN_EXE_suanli"))
                .args(["agent", "--server", &all, "--join-token-file"])
                .arg(&join_file)
                .args(["--name", &name, "--gpus", "fake:8xA100-80G"])
                .args(["--cpus", "64", "--memory-gib", "256", "--grace-s", "1"])
                .args(["--sandbox", "off"])
                .arg("--work-dir")
                .arg(dir.join("agents").join(&name))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
    }
    let c = Cluster {
        db,
        conf,
        replicas: rs,
        admin,
        tenant,
        _agents: Agents(children),
        _dir: dir,
    };
    // Every agent registered.
    let t0 = Instant::now();
    loop {
        let (code, v, _) = call(
            "GET",
            &format!("{}/v1/nodes", c.replicas[0].url()),
            Some(&c.admin),
            None,
        );
        if code == 200 && v["nodes"].as_array().is_some_and(|n| n.len() == agents) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "agents: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(c)
}

impl Cluster {
    fn servers(&self) -> String {
        let urls: Vec<String> = self.replicas.iter().map(Replica::url).collect();
        urls.join(",")
    }

    fn leader(&self) -> Option<usize> {
        (0..self.replicas.len())
            .find(|&i| self.replicas[i].child.is_some() && self.replicas[i].leads())
    }

    /// Wait for a replica other than `not` to lead; how long it took.
    fn takeover(&self, not: usize, since: Instant) -> Duration {
        loop {
            if let Some(i) = self.leader() {
                if i != not {
                    return since.elapsed();
                }
            }
            assert!(since.elapsed() < TTL * 4, "no replica took over");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metric(&self, i: usize, name: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.replicas[i].url()))
            .set("Authorization", &format!("Bearer {}", self.admin))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// `suanli submit` through the CLI, with every replica's URL: the job id if
/// it was acknowledged.
fn submit(servers: &str, token: &str, name: &str) -> Option<i64> {
    let out = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["submit", "--server", servers, "--token", token])
        .args(["--gpus", "1", "--name", name, "--", "sleep", "0.2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "submit {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    text.trim()
        .strip_prefix("submitted job ")
        .and_then(|s| s.parse().ok())
}

/// What the store says, read directly.
struct Rows {
    jobs: Vec<(i64, String, Option<String>, String)>,
    tasks: Vec<TaskRow>,
}

/// (job, run, idx, node, gpus mask, started, ended)
type TaskRow = (i64, i64, i64, i64, i64, i64, Option<i64>);
/// Who held a device: (from, until, job).
type Holds = Vec<(i64, i64, i64)>;

fn rows(db: &str) -> Rows {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(db).await.unwrap();
        let jobs = sqlx::query_as("SELECT id, name, idem_key, state FROM jobs ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
        let tasks = sqlx::query_as(
            "SELECT job_id, run, idx, node_id, gpus, started_ms, ended_ms FROM tasks \
             ORDER BY job_id, run, idx",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        Rows { jobs, tasks }
    })
}

/// No device is held by two tasks at any instant, and no task's attempts
/// overlap (no second billed twice), from the stored task intervals.
fn check_intervals(r: &Rows) {
    let mut by_device: BTreeMap<(i64, u32), Holds> = BTreeMap::new();
    let mut by_task: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
    for &(job, run, idx, node, mask, start, end) in &r.tasks {
        let end = end.unwrap_or(i64::MAX);
        for d in 0..16 {
            if mask & (1 << d) != 0 {
                by_device
                    .entry((node, d))
                    .or_default()
                    .push((start, end, job));
            }
        }
        let _ = run;
        by_task.entry((job, idx)).or_default().push((start, end));
    }
    for ((node, d), mut v) in by_device {
        v.sort();
        for w in v.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "node {node} device {d} held by job {} until {} and by job {} from {}",
                w[0].2,
                w[0].1,
                w[1].2,
                w[1].0
            );
        }
    }
    for ((job, idx), mut v) in by_task {
        v.sort();
        for w in v.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "job {job} task {idx}: attempts overlap: {v:?}"
            );
        }
    }
}

/// Wait until every stored job is over; they must all have completed.
fn all_complete(c: &Cluster, within: Duration) -> Rows {
    let t0 = Instant::now();
    loop {
        let r = rows(&c.db);
        let live = r
            .jobs
            .iter()
            .filter(|j| j.3 == "PENDING" || j.3 == "RUNNING")
            .count();
        if live == 0 {
            for j in &r.jobs {
                assert_eq!(j.3, "COMPLETED", "job {} ({})", j.0, j.1);
            }
            return r;
        }
        assert!(
            t0.elapsed() < within,
            "{live} of {} jobs still live",
            r.jobs.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_leader_killed_five_times_loses_nothing_and_doubles_nothing() {
    let Some(mut c) = cluster("failover", 3, 4, 20) else {
        return;
    };
    let servers = c.servers();
    // 4 clients, 500 submissions each, through the CLI.
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let (servers, tenant) = (servers.clone(), c.tenant.clone());
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| submit(&servers, &tenant, &format!("c{k}-{i}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut takeovers = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(3));
        let old = c.leader().expect("a leader");
        c.replicas[old].signal(libc::SIGKILL);
        let killed = Instant::now();
        c.replicas[old].kill();
        takeovers.push(c.takeover(old, killed));
        let (db, conf) = (c.db.clone(), c.conf.clone());
        c.replicas[old].start(&db, &conf);
    }
    let acked: Vec<Option<i64>> = clients
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    eprintln!("takeovers: {takeovers:?}");
    for t in &takeovers {
        assert!(*t <= TTL + Duration::from_secs(2), "takeover took {t:?}");
    }
    let ids: Vec<i64> = acked.iter().flatten().copied().collect();
    let failed = acked.len() - ids.len();
    assert!(failed <= 10, "{failed} of 2000 submissions failed");
    let r = all_complete(&c, Duration::from_secs(240));
    // Every acknowledged job exists, once; no key made two jobs.
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "one id acknowledged twice");
    let stored: HashMap<i64, &str> = r.jobs.iter().map(|j| (j.0, j.1.as_str())).collect();
    for id in &ids {
        assert!(
            stored.contains_key(id),
            "acknowledged job {id} is not stored"
        );
    }
    let mut keys = HashSet::new();
    let mut names = HashSet::new();
    for j in &r.jobs {
        let key = j.2.as_ref().expect("the CLI sends a key");
        assert!(keys.insert(key.clone()), "key {key} made two jobs");
        assert!(names.insert(j.1.clone()), "job name {} twice", j.1);
    }
    assert!(r.jobs.len() <= 2000 && r.jobs.len() >= ids.len());
    check_intervals(&r);
    eprintln!(
        "{} jobs acknowledged, {} stored, {failed} submissions failed; takeovers {:?}",
        ids.len(),
        r.jobs.len(),
        takeovers
    );
}

#[test]
fn a_stopped_leader_resumed_after_a_takeover_cannot_write() {
    // Nodes are down after 5 s of silence: the stale leader, resumed, sees
    // its nodes silent and tries to write that down.
    let Some(mut c) = cluster("stale-leader", 2, 2, 5) else {
        return;
    };
    let servers = c.servers();
    let old = c.leader().expect("a leader");
    // Read-your-writes across replicas: a job acknowledged by the leader
    // is there at once on the other replica.
    let follower = 1 - old;
    for i in 0..10 {
        let id = submit(&c.replicas[old].url(), &c.tenant, &format!("before-{i}")).unwrap();
        let (code, v, _) = call(
            "GET",
            &format!("{}/v1/jobs/{id}", c.replicas[follower].url()),
            Some(&c.tenant),
            None,
        );
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["name"], format!("before-{i}"));
    }
    let f = c.replicas[follower].url();
    let (code, v, _) = call("GET", &format!("{f}/readyz"), None, None);
    assert_eq!((code, v["role"].as_str()), (200, Some("follower")), "{v}");
    c.replicas[old].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // A submission to the follower while no replica leads: stored at once,
    // applied (and answered) when a leader takes over.
    let during = {
        let (f, tenant) = (f.clone(), c.tenant.clone());
        std::thread::spawn(move || {
            let body = json!({"name": "during", "command": ["true"], "gpus": 1});
            let r = call(
                "POST",
                &format!("{f}/v1/jobs"),
                Some(&tenant),
                Some(&body.to_string()),
            );
            (r, stopped.elapsed())
        })
    };
    let took = c.takeover(old, stopped);
    let ((code, v, _), answered) = during.join().unwrap();
    assert_eq!(code, 201, "{v}");
    eprintln!("a submission stored while no replica led was answered after {answered:?}");
    // Past the nodes' lease as the stale leader sees it.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed()));
    c.replicas[old].signal(libc::SIGCONT);
    let t0 = Instant::now();
    while c.metric(old, "suanli_stale_writes_refused_total") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no stale write refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!c.replicas[old].leads(), "the stale leader stepped down");
    for i in 0..10 {
        assert!(submit(&servers, &c.tenant, &format!("after-{i}")).is_some());
    }
    let r = all_complete(&c, Duration::from_secs(60));
    assert_eq!(r.jobs.len(), 21);
    check_intervals(&r);
    eprintln!("takeover after SIGSTOP: {took:?}");
    c.replicas[old].kill();
}

/// Everything through a follower: the admin's writes, submissions (and
/// refusals), cancels, listings with why-pending, and an agent that knows
/// only the follower, whose reports reach the leader through the inbox and
/// whose held wait call is woken by the leader's hints.
#[test]
fn a_follower_serves_every_request() {
    // Agents report every 30 s: a job that starts within a second was
    // pushed (through the follower's mirror of the leader's wakes).
    let Some(c) = cluster_with("followers", 2, 0, 30, 90) else {
        return;
    };
    let leader = c.leader().expect("a leader");
    let (l, f) = (c.replicas[leader].url(), c.replicas[1 - leader].url());
    let (code, v, _) = call("GET", &format!("{f}/readyz"), None, None);
    assert_eq!((code, v["role"].as_str()), (200, Some("follower")), "{v}");
    // The admin, through the follower: a tenant with a quota, its token.
    let (code, v, _) = call(
        "POST",
        &format!("{f}/v1/tenants"),
        Some(&c.admin),
        Some(&json!({"name": "beta"}).to_string()),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v, _) = call(
        "PUT",
        &format!("{f}/v1/tenants/beta/quotas/A100-80G"),
        Some(&c.admin),
        Some(&json!({"guaranteed": 0, "max": 2}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v, _) = call(
        "POST",
        &format!("{f}/v1/tokens"),
        Some(&c.admin),
        Some(&json!({"scope": "tenant", "tenant": "beta"}).to_string()),
    );
    assert_eq!(code, 201, "{v}");
    let beta = v["token"].as_str().unwrap().to_string();
    let (code, v, _) = call(
        "POST",
        &format!("{f}/v1/tokens"),
        Some(&c.admin),
        Some(&json!({"scope": "agent"}).to_string()),
    );
    assert_eq!(code, 201, "{v}");
    let join = c._dir.join("join-follower.token");
    std::fs::write(&join, v["token"].as_str().unwrap()).unwrap();
    // An agent that knows only the follower.
    let log = std::fs::File::create(c._dir.join("nf.log")).unwrap();
    let _agent = Agents(vec![Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["agent", "--server", &f, "--join-token-file"])
        .arg(&join)
        .args(["--name", "nf", "--gpus", "fake:8xA100-80G"])
        .args(["--cpus", "64", "--memory-gib", "256", "--grace-s", "1"])
        .args(["--sandbox", "off"])
        .arg("--work-dir")
        .arg(c._dir.join("agents").join("nf"))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()]);
    let t0 = Instant::now();
    loop {
        let (code, v, _) = call("GET", &format!("{f}/v1/nodes"), Some(&c.admin), None);
        if code == 200 && v["nodes"].as_array().is_some_and(|n| n.len() == 1) {
            assert_eq!(v["nodes"][0]["state"], "ready", "{v}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "agent: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the agent settle into its held wait call.
    std::thread::sleep(Duration::from_secs(2));
    // A submission through the follower: acknowledged with its id, seen by
    // the leader at once, started within a second, completed.
    let submit_to = |server: &str, body: serde_json::Value| {
        call(
            "POST",
            &format!("{server}/v1/jobs"),
            Some(&beta),
            Some(&body.to_string()),
        )
    };
    let sent = Instant::now();
    let (code, v, _) = submit_to(
        &f,
        json!({"name": "first", "command": ["sh", "-c", "echo out-of-first; sleep 0.3"], "gpus": 1}),
    );
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (code, v, _) = call("GET", &format!("{l}/v1/jobs/{id}"), Some(&beta), None);
    assert_eq!((code, v["name"].as_str()), (200, Some("first")), "{v}");
    let state = |id: i64| {
        let (_, v, _) = call("GET", &format!("{f}/v1/jobs/{id}"), Some(&beta), None);
        v["state"].as_str().unwrap_or_default().to_string()
    };
    let mut started = None;
    while state(id) != "COMPLETED" {
        if started.is_none() && state(id) != "PENDING" {
            started = Some(sent.elapsed());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "job {id}: {}",
            state(id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = started.unwrap_or(sent.elapsed());
    eprintln!("submitted through the follower to started: {started:?}");
    assert!(
        started < Duration::from_secs(3),
        "the agent was not woken through the follower: {started:?}"
    );
    // Its output, pushed by the agent to the follower, is read through the
    // leader: logs live in the database, not on a replica.
    let t0 = Instant::now();
    loop {
        let (code, out, err) = cli(&l, &beta, &["logs", &id.to_string()]);
        if out == "out-of-first\n" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "logs through the leader: {code} {out:?} {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Refusals come back as they are: over the quota's max is pending with
    // a reason; never satisfiable is 422.
    let (code, v, _) = submit_to(&f, json!({"name": "huge", "command": ["true"], "gpus": 16}));
    assert_eq!(
        (code, v["code"].as_str()),
        (422, Some("unsatisfiable")),
        "{v}"
    );
    let (code, v, _) = submit_to(
        &f,
        json!({"name": "long", "command": ["sleep", "300"], "gpus": 2}),
    );
    assert_eq!(code, 201, "{v}");
    let long = v["id"].as_i64().unwrap();
    let (code, v, _) = submit_to(&f, json!({"name": "over", "command": ["true"], "gpus": 1}));
    assert_eq!(code, 201, "{v}");
    let over = v["id"].as_i64().unwrap();
    let t0 = Instant::now();
    while state(long) != "RUNNING" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "long: {}",
            state(long)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, v, _) = call(
        "GET",
        &format!("{f}/v1/jobs?state=PENDING"),
        Some(&beta),
        None,
    );
    assert_eq!(code, 200, "{v}");
    let reason = v["jobs"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(v["jobs"][0]["id"], over, "{v}");
    assert!(
        reason.contains("quota"),
        "why pending, via the follower: {reason}"
    );
    // A cancel through the follower stops the running job.
    let (code, v, _) = call(
        "POST",
        &format!("{f}/v1/jobs/{long}/cancel"),
        Some(&beta),
        None,
    );
    assert_eq!(code, 200, "{v}");
    let t0 = Instant::now();
    while state(over) != "COMPLETED" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "over: {}",
            state(over)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(long), "CANCELLED");
    check_intervals(&rows(&c.db));
}

/// `suanli up --store postgres://...`, as a user runs it: started, its
/// printed `submit` line pasted into a shell, the job completed with its
/// output; stopped (SIGTERM) and started again on the same database and
/// data dir, the job is still there; a data dir that never held this
/// database's admin token is refused with what to do.
#[test]
fn up_runs_the_demo_pool_on_postgres() {
    let Some(db) = database() else {
        return;
    };
    let dir = tmp("up-pg");
    /// `suanli up` until dropped (SIGTERM, as Ctrl-C).
    struct Up(Child);
    impl Drop for Up {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
    let up = |dir: &Path| -> (Up, Vec<String>) {
        use std::io::BufRead;
        let mut c = Command::new(env!("CARGO_BIN_EXE_suanli"))
            .args([
                "up",
                "--agents",
                "2",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .arg("--store")
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = c.stdout.take().unwrap();
        let up = Up(c);
        let mut printed = Vec::new();
        for l in std::io::BufReader::new(out).lines() {
            let l = l.unwrap();
            let end = l.contains("Ctrl-C");
            printed.push(l);
            if end {
                break;
            }
        }
        (up, printed)
    };
    let sh = |dir: &Path, cmd: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(". {}/env && {cmd}", dir.display()))
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let suanli = env!("CARGO_BIN_EXE_suanli");
    let completed = |dir: &Path, id: i64| {
        let t = Instant::now();
        loop {
            let (_, out) = sh(dir, &format!("{suanli} job show {id} --json"));
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if v["state"] == "COMPLETED" {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "job {id}: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (first, printed) = up(&dir);
    let example = printed
        .iter()
        .find(|l| l.contains(" submit "))
        .unwrap_or_else(|| panic!("no example in {printed:?}"))
        .trim()
        .to_string();
    assert!(
        !dir.join("suanli.db").exists(),
        "the store is the database, not a file"
    );
    // Agents may still be registering.
    let t = Instant::now();
    let id = loop {
        let (ok, out) = sh(&dir, &example);
        if ok {
            break out
                .trim()
                .strip_prefix("submitted job ")
                .and_then(|x| x.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("{out}"));
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    completed(&dir, id);
    let t = Instant::now();
    while !sh(&dir, &format!("{suanli} logs {id}"))
        .1
        .starts_with("hello from GPU ")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no output of job {id}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(first);
    // Again, on the same database and data dir: the job and its output are
    // there, and the pool runs the next one.
    let (_second, _) = up(&dir);
    let (ok, out) = sh(&dir, &format!("{suanli} logs {id}"));
    assert!(ok && out.starts_with("hello from GPU "), "{out}");
    let t = Instant::now();
    let next = loop {
        let (ok, out) = sh(&dir, &example);
        if ok {
            break out
                .trim()
                .strip_prefix("submitted job ")
                .and_then(|x| x.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("{out}"));
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(next > id, "{next} after {id}");
    completed(&dir, next);
    drop(_second);
    // A fresh data dir on a database that has an admin already.
    let other = tmp("up-pg-other");
    let o = Command::new(suanli)
        .args([
            "up",
            "--agents",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&other)
        .arg("--store")
        .arg(&db)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--reset-admin"), "{err}");
}
