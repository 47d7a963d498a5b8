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
    let db = database()?;
    let dir = tmp(name);
    let conf = dir.join("server.toml");
    std::fs::write(
        &conf,
        format!("[agents]\nheartbeat_interval_s = 1\nlease_s = {node_lease_s}\n"),
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
    // What needs the loop is refused there, saying nothing was done.
    let f = c.replicas[follower].url();
    for (path, token, body) in [
        ("/v1/jobs", &c.tenant, json!({"command": ["true"]})),
        ("/v1/tenants", &c.admin, json!({"name": "beta"})),
    ] {
        let (code, v, _) = call(
            "POST",
            &format!("{f}{path}"),
            Some(token),
            Some(&body.to_string()),
        );
        assert_eq!((code, v["code"].as_str()), (503, Some("not_leader")), "{v}");
    }
    let (code, v, _) = call("GET", &format!("{f}/readyz"), None, None);
    assert_eq!((code, v["role"].as_str()), (200, Some("follower")), "{v}");
    c.replicas[old].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let took = c.takeover(old, stopped);
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
    assert_eq!(r.jobs.len(), 20);
    check_intervals(&r);
    eprintln!("takeover after SIGSTOP: {took:?}");
    c.replicas[old].kill();
}
