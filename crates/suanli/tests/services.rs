//! Model services end to end with real processes: a server, a real agent
//! (fake GPU inventory) and `suanli mock-llm` replicas started by the
//! agent as the service's tasks; callers speak OpenAI-style to the server.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::agent::{spawn_agent, wait_for};
use common::*;
use serde_json::{json, Value};

/// The tests here run one at a time: each times replicas' cold starts and
/// probes on a 2-core machine, which the other's processes would slow.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

struct Fixture {
    beta: String,
    agent: Child,
    /// Last: the server stops, then its directory goes.
    p: pool::Pool,
}

impl std::ops::Deref for Fixture {
    type Target = pool::Pool;
    fn deref(&self) -> &pool::Pool {
        &self.p
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Tenants acme and beta, and one agent with two (fake) GPUs.
fn fixture(name: &str) -> Fixture {
    let prices = format!("{}/../../examples/prices.toml", env!("CARGO_MANIFEST_DIR"));
    let conf = format!(
        "prices = {prices:?}\n[agents]\nheartbeat_interval_s = 1\nlease_s = 3\n[models]\nhold_s = 60\n"
    );
    let p = pool::pool_configured(name, Some(&conf), &[]);
    let beta = token_for(&p.s, &p.admin, json!({"scope": "tenant", "tenant": "beta"}));
    let agent = spawn_agent(&p.dir, &p.s.url, &p.agent, "n0", "fake:2xA100-80G");
    wait_for(Duration::from_secs(20), || {
        let (_, v, _) = call("GET", &p.s.u("/v1/nodes"), Some(&p.admin), None);
        v["nodes"].as_array().is_some_and(|n| n.len() == 1)
    });
    Fixture { beta, agent, p }
}

/// A chat request; returns (status, body text, headers of interest).
fn chat(
    f: &Fixture,
    token: &str,
    model: &str,
    stream: bool,
    words: usize,
) -> (u16, String, Option<String>) {
    chat_at(&f.s.url, token, model, stream, words)
}

/// [`chat`] to the router at `base` (the server's, or a gateway's).
fn chat_at(
    base: &str,
    token: &str,
    model: &str,
    stream: bool,
    words: usize,
) -> (u16, String, Option<String>) {
    let body = json!({
        "model": model,
        "stream": stream,
        "max_tokens": words,
        "messages": [{"role": "user", "content": "one two three four five"}],
    });
    let r = ureq::post(&format!("{base}/v1/chat/completions"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json")
        .timeout(Duration::from_secs(90))
        .send_string(&body.to_string());
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("chat: {e}"),
    };
    let status = resp.status();
    let retry = resp.header("retry-after").map(str::to_string);
    (status, resp.into_string().unwrap(), retry)
}

/// The tokens an answer reports: a whole body's usage, or a stream's last
/// usage chunk.
fn reported(text: &str, stream: bool) -> (i64, i64) {
    let usage = if stream {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|v| v.get("usage").cloned().filter(|u| !u.is_null()))
            .expect("a usage chunk")
    } else {
        serde_json::from_str::<Value>(text).unwrap()["usage"].clone()
    };
    (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    )
}

fn service(f: &Fixture, token: &str, name: &str) -> Value {
    let (code, v, _) = call(
        "GET",
        &f.s.u(&format!("/v1/services/{name}")),
        Some(token),
        None,
    );
    assert_eq!(code, 200, "{v}");
    v
}

fn ready_replicas(v: &Value) -> usize {
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "ready")
        .count()
}

fn token_usage(f: &Fixture, token: &str) -> (i64, i64, i64) {
    let (code, v, _) = call("GET", &f.s.u("/v1/token-usage"), Some(token), None);
    assert_eq!(code, 200, "{v}");
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0, 0), |a, r| {
            (
                a.0 + r["requests"].as_i64().unwrap(),
                a.1 + r["input_tokens"].as_i64().unwrap(),
                a.2 + r["output_tokens"].as_i64().unwrap(),
            )
        })
}

#[test]
fn a_service_scales_from_zero_routes_meters_limits_and_gives_its_gpus_back() {
    let _serial = serial();
    let f = fixture("services");
    let bin = TaskVisible::binary();
    let bin = bin.path.to_str().unwrap();
    let (code, out, err) = cli(
        &f.s.url,
        &f.acme,
        &[
            "service",
            "create",
            "chat",
            "--model",
            "demo",
            "--gpus",
            "1",
            "--max",
            "2",
            "--target-inflight",
            "1",
            "--idle",
            "4s",
            "--down-delay",
            "1s",
            "--",
            bin,
            "mock-llm",
            "--model",
            "demo",
            "--ttft-ms",
            "30",
            "--tokens-per-s",
            "100",
            "--seed",
            "7",
            "--ready-delay-ms",
            "300",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Nothing runs before a request: min is 0.
    std::thread::sleep(Duration::from_millis(1500));
    let v = service(&f, &f.acme, "chat");
    assert_eq!(v["replicas"].as_array().unwrap().len(), 0, "{v}");

    // The first request is held through the cold start, then answered.
    let t = Instant::now();
    let (code, text, _) = chat(&f, &f.acme, "demo", false, 8);
    assert_eq!(code, 200, "{text}");
    let mut sent = reported(&text, false);
    let mut requests = 1;
    eprintln!("first request at zero answered in {:?}", t.elapsed());

    // A stream passes through, ends with [DONE], and reports its usage.
    let (code, text, _) = chat(&f, &f.acme, "demo", true, 6);
    assert_eq!(code, 200, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let u = reported(&text, true);
    sent = (sent.0 + u.0, sent.1 + u.1);
    requests += 1;

    // Another tenant can neither call nor see the private service.
    let (code, text, _) = chat(&f, &f.beta, "demo", false, 4);
    assert_eq!(code, 404, "{text}");
    let (_, models, _) = call("GET", &f.s.u("/v1/models"), Some(&f.beta), None);
    assert_eq!(models["data"].as_array().unwrap().len(), 0, "{models}");
    let (_, models, _) = call("GET", &f.s.u("/v1/models"), Some(&f.acme), None);
    assert_eq!(models["data"][0]["id"], "demo", "{models}");
    let (code, _, _) = call("GET", &f.s.u("/v1/services/chat"), Some(&f.beta), None);
    assert_eq!(code, 404);

    // The replica itself refuses a caller without the service's key (a
    // task of another tenant on the network).
    let v = service(&f, &f.acme, "chat");
    let job = v["replicas"][0]["job"].as_i64().unwrap();
    let run = job_of(&f, job)["run"].as_i64().unwrap();
    let port = suanli_api::replica_port(job, run);
    let direct = ureq::post(&format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .send_string(&json!({"model": "demo", "messages": []}).to_string());
    match direct {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 401),
        other => panic!("the replica answered a caller without its key: {other:?}"),
    }

    // A load step: 6 concurrent streams; the service grows to its max (2)
    // and never past it.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (url, token, peak, stop) = (
            f.s.u("/v1/services/chat"),
            f.acme.clone(),
            peak.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, v, _) = call("GET", &url, Some(&token), None);
                let n = v["replicas"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|r| r["state"] != "draining").count());
                peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let answers: Vec<(u16, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                sc.spawn(|| {
                    let (c, t, _) = chat(&f, &f.acme, "demo", true, 200);
                    (c, t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, t) in &answers {
        assert_eq!(*c, 200, "{t}");
        let u = reported(t, true);
        sent = (sent.0 + u.0, sent.1 + u.1);
        requests += 1;
    }
    wait_for(Duration::from_secs(20), || {
        ready_replicas(&service(&f, &f.acme, "chat")) == 2
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(
        peak.load(std::sync::atomic::Ordering::Relaxed) <= 2,
        "more replicas than max"
    );

    // A replica killed: evicted within two probe periods (1 s each), and
    // requests sent meanwhile succeed on the other replica (one that met
    // the dead replica's closed port never reached it, so it is retried).
    let v = service(&f, &f.acme, "chat");
    let victim = v["replicas"][0]["job"].as_i64().unwrap();
    kill_replica(victim);
    let t = Instant::now();
    let answers: Vec<(u16, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    let (c, t, _) = chat(&f, &f.acme, "demo", false, 5);
                    (c, t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, t) in &answers {
        assert_eq!(*c, 200, "{t}");
        let u = reported(t, false);
        sent = (sent.0 + u.0, sent.1 + u.1);
        requests += 1;
    }
    wait_for(Duration::from_secs(3), || {
        let v = service(&f, &f.acme, "chat");
        !v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["job"] == victim && r["state"] == "ready")
    });
    assert!(
        t.elapsed() < Duration::from_millis(2_900),
        "evicted after {:?}",
        t.elapsed()
    );

    // Billed tokens equal the usage the answers reported, each once.
    wait_for(Duration::from_secs(5), || {
        token_usage(&f, &f.acme) == (requests, sent.0, sent.1)
    });
    assert_eq!(token_usage(&f, &f.beta), (0, 0, 0));
    // The caller's invoice prices them (examples/prices.toml: demo at 1.00
    // and 2.00 per million), beside the GPU time its replicas held.
    let period = month_now();
    let (code, bills, _) = call(
        "GET",
        &f.s.u(&format!("/v1/bills?period={period}")),
        Some(&f.acme),
        None,
    );
    assert_eq!(code, 200, "{bills}");
    let lines = bills["invoices"][0]["lines"].as_array().unwrap().clone();
    let tokens = |r: &str| {
        lines
            .iter()
            .find(|l| l["resource"] == r && l["model"] == "demo")
            .unwrap_or_else(|| panic!("no {r} line: {bills}"))["quantity_raw"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((tokens("input_tokens"), tokens("output_tokens")), sent);
    assert!(lines.iter().any(|l| l["resource"] == "gpu"), "{bills}");
    // The operator sees the model's token revenue against its replicas' GPU time.
    let (code, eco, _) = call(
        "GET",
        &f.s.u(&format!("/v1/reports/economics?period={period}")),
        Some(&f.admin),
        None,
    );
    assert_eq!(code, 200, "{eco}");
    let served = &eco["served"][0];
    assert_eq!(served["model"], "demo", "{eco}");
    assert_eq!(
        (
            served["input_tokens"].as_i64(),
            served["output_tokens"].as_i64()
        ),
        (Some(sent.0), Some(sent.1))
    );
    assert!(
        served["replica_gpu_hours"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );

    // A stream the caller cuts off midway is billed for what went out: at
    // least what the caller saw, less than the whole answer (200 tokens at
    // 100 tokens/s).
    let (before_requests, _, before_out) = token_usage(&f, &f.acme);
    let seen = read_part_of_a_stream(&f, 5);
    wait_for(Duration::from_secs(10), || {
        token_usage(&f, &f.acme).0 == before_requests + 1
    });
    let billed = token_usage(&f, &f.acme).2 - before_out;
    assert!(
        billed >= seen && billed < 200,
        "billed {billed} output tokens of a stream cut after {seen}"
    );

    // A tokens-per-minute limit: once spent, 429 with Retry-After.
    let (code, v, _) = call(
        "PUT",
        &f.s.u("/v1/tenants/acme/limits"),
        Some(&f.admin),
        Some(&json!({"tokens_per_minute": 30}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    std::thread::sleep(Duration::from_millis(2500));
    let mut limited = None;
    for _ in 0..10 {
        let (code, text, retry) = chat(&f, &f.acme, "demo", false, 20);
        if code == 429 {
            limited = Some((text, retry));
            break;
        }
        assert_eq!(code, 200, "{text}");
    }
    let (text, retry) = limited.expect("no 429 past the tokens-per-minute limit");
    assert!(text.contains("tokens_per_minute"), "{text}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    call(
        "PUT",
        &f.s.u("/v1/tenants/acme/limits"),
        Some(&f.admin),
        Some(&json!({}).to_string()),
    );

    // Idle: the service goes to zero and a batch job needing both GPUs runs.
    let batch = submit(
        &f.s,
        &f.acme,
        json!({"command": ["sleep", "30"], "gpus": 2}),
    );
    let id = batch["id"].as_i64().unwrap();
    wait_for(Duration::from_secs(30), || {
        job_of(&f, id)["state"] == "RUNNING"
    });
    wait_for(Duration::from_secs(5), || {
        service(&f, &f.acme, "chat")["replicas"]
            .as_array()
            .unwrap()
            .is_empty()
    });

    // min 1 keeps a replica up without traffic; deleting the service stops it.
    let (code, _, err) = cli(&f.s.url, &f.acme, &["cancel", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &f.s.url,
        &f.acme,
        &["service", "update", "chat", "--min", "1"],
    );
    assert_eq!(code, 0, "{err}");
    wait_for(Duration::from_secs(20), || {
        ready_replicas(&service(&f, &f.acme, "chat")) == 1
    });
    let kept = service(&f, &f.acme, "chat")["replicas"][0]["job"]
        .as_i64()
        .unwrap();
    let (code, out, err) = cli(&f.s.url, &f.acme, &["service", "delete", "chat"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(Duration::from_secs(10), || {
        job_of(&f, kept)["state"] == "CANCELLED"
    });
    let (code, text, _) = chat(&f, &f.acme, "demo", false, 3);
    assert_eq!(code, 404, "{text}");
}

/// SIGKILL the process of replica job `job` (found by its environment).
fn kill_replica(job: i64) {
    let want = format!("SUANLI_JOB_ID={job}");
    let mut killed = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let has = |hay: &[u8], needle: &[u8]| hay.split(|&b| b == 0).any(|w| w == needle);
        if has(&env, want.as_bytes()) && has(&cmd, b"mock-llm") {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "replica job {job}'s process");
}

fn job_of(f: &Fixture, id: i64) -> Value {
    job(&f.s, &f.admin, id)
}

/// The `suanli` binary at a path a sandboxed task can run: tasks get a
/// private `/tmp` (and `/var/tmp`), so a build under /tmp (a fresh clone
/// there) is copied out, world-readable, and removed afterwards.
struct TaskVisible {
    path: std::path::PathBuf,
    copy: Option<std::path::PathBuf>,
}

impl TaskVisible {
    fn binary() -> TaskVisible {
        let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_suanli"));
        if !(bin.starts_with("/tmp") || bin.starts_with("/var/tmp")) {
            return TaskVisible {
                path: bin,
                copy: None,
            };
        }
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::path::PathBuf::from(format!("/var/lib/suanli-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("suanli");
        std::fs::copy(&bin, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TaskVisible {
            path,
            copy: Some(dir),
        }
    }
}

impl Drop for TaskVisible {
    fn drop(&mut self) {
        if let Some(d) = &self.copy {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Start a 200-token stream, read `chunks` content chunks, then close the
/// connection; returns the completion tokens the last usage read reported.
fn read_part_of_a_stream(f: &Fixture, chunks: usize) -> i64 {
    use std::io::BufRead;
    let body = json!({
        "model": "demo",
        "stream": true,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "one two three"}],
    });
    let resp = ureq::post(&f.s.u("/v1/chat/completions"))
        .set("Authorization", &format!("Bearer {}", f.acme))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    let mut lines = std::io::BufReader::new(resp.into_reader()).lines();
    let (mut read, mut seen) = (0, 0);
    while read < chunks {
        let line = lines.next().expect("the stream ended early").unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(n) = v["usage"]["completion_tokens"].as_i64() {
            seen = n;
        }
        read += 1;
    }
    // Dropping the reader closes the connection mid-stream.
    drop(lines);
    seen
}

/// `suanli gateway` against the fixture's server; returns it and its URL.
fn spawn_gateway(f: &Fixture, token: &str) -> (Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["gateway", "--listen", "127.0.0.1:0", "--server", &f.s.url])
        .env("SUANLI_TOKEN", token)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    // Keep reading (and echoing) what it says, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            eprintln!("gateway: {l}");
        }
    });
    let addr = line
        .strip_prefix("gateway listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("the gateway did not start: {line}"))
        .to_string();
    (child, format!("http://{addr}"))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_gateway_routes_with_the_server_s_state_and_shares_its_counters() {
    let _serial = serial();
    let f = fixture("gateway");
    let bin = TaskVisible::binary();
    let bin = bin.path.to_str().unwrap();

    // A gateway needs a router token: a tenant's is refused at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["gateway", "--listen", "127.0.0.1:0", "--server", &f.s.url])
        .env("SUANLI_TOKEN", &f.acme)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("router token"), "{err}");
    // A router token opens the router API and nothing else.
    let router = token_for(&f.s, &f.admin, json!({"scope": "router"}));
    for path in ["/v1/tenants", "/v1/jobs", "/v1/nodes", "/v1/services"] {
        let (code, v, _) = call("GET", &f.s.u(path), Some(&router), None);
        assert_eq!(code, 403, "{path}: {v}");
    }
    let (code, _, _) = call("GET", &f.s.u("/v1/routers/services"), Some(&router), None);
    assert_eq!(code, 200);
    // So are the router API's calls, and a gateway may not write a
    // server's counters.
    let (code, _, _) = call("GET", &f.s.u("/v1/routers/services"), Some(&f.acme), None);
    assert_eq!(code, 403);
    // A node agent's token neither.
    let (code, _, _) = call(
        "GET",
        &f.s.u("/v1/routers/services"),
        Some(&f.p.agent),
        None,
    );
    assert_eq!(code, 403);
    // Bad flags are named, before the gateway asks the server anything.
    for (args, want) in [
        (&["--listen", "0.0.0.0:0"][..], "--insecure-http"),
        (&["--max-body-mib", "0"][..], "--max-body-mib"),
        (&["--hold-s", "0"][..], "--hold-s"),
        (&["--route", "fastest"][..], "--route"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
            .args(["gateway", "--server", &f.s.url])
            .args(args)
            .env("SUANLI_TOKEN", &f.admin)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, v, _) = call(
        "POST",
        &f.s.u("/v1/routers/exchange"),
        Some(&f.admin),
        Some(&json!({"router": "server x", "rows": []}).to_string()),
    );
    assert_eq!(code, 400, "{v}");
    for (row, why) in [
        (
            json!({"kind": "service", "id": 1, "inflight": -1, "requests": 0, "tokens": 0, "at_ms": 0, "router": ""}),
            "negative",
        ),
        (
            json!({"kind": "service", "id": 1, "inflight": 2_000_000, "requests": 0, "tokens": 0, "at_ms": 0, "router": ""}),
            "at most",
        ),
        (
            json!({"kind": "job", "id": 1, "inflight": 0, "requests": 0, "tokens": 0, "at_ms": 0, "router": ""}),
            "service or tenant",
        ),
    ] {
        let (code, v, _) = call(
            "POST",
            &f.s.u("/v1/routers/exchange"),
            Some(&f.admin),
            Some(&json!({"router": "gateway x", "rows": [row]}).to_string()),
        );
        assert_eq!(code, 400, "{v}");
        assert!(v.to_string().contains(why), "{v}");
    }
    // Whose token: asked by hash, never by secret.
    let (code, v, _) = call(
        "POST",
        &f.s.u("/v1/routers/token-owner"),
        Some(&f.admin),
        Some(&json!({"token_hash": suanli_api::token::hash_token(&f.acme)}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["kind"].as_str(), v["name"].as_str()),
        (Some("tenant"), Some("acme"))
    );
    let (code, v, _) = call(
        "POST",
        &f.s.u("/v1/routers/tokens"),
        Some(&f.admin),
        Some(&json!([{"request_id": "r1", "tenant_id": 1, "service_id": 1, "model": "m",
            "at_ms": 4_000_000_000_000i64, "input_tokens": 1, "output_tokens": 1, "estimated": false}]).to_string()),
    );
    assert_eq!(code, 400, "{v}");

    let (code, out, err) = cli(
        &f.s.url,
        &f.acme,
        &[
            "service",
            "create",
            "chat",
            "--model",
            "demo",
            "--gpus",
            "1",
            "--max",
            "1",
            "--idle",
            "60s",
            "--",
            bin,
            "mock-llm",
            "--model",
            "demo",
            "--ttft-ms",
            "10",
            "--tokens-per-s",
            "500",
            "--seed",
            "3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (gw, gurl) = spawn_gateway(&f, &router);
    let _gw = Killed(gw);
    let (code, _, _) = call("GET", &format!("{gurl}/healthz"), None, None);
    assert_eq!(code, 200);

    // The service is at zero; the first request reaches the gateway, which
    // holds it: the server's leader sees it among the gateway's counters,
    // starts a replica, and the gateway (probing it itself) sends it there.
    let t = Instant::now();
    let (code, text, _) = chat_at(&gurl, &f.acme, "demo", false, 5);
    assert_eq!(code, 200, "{text}");
    eprintln!(
        "first request at zero, through the gateway: {:?}",
        t.elapsed()
    );
    let mut sent = reported(&text, false);
    let (code, text, _) = chat_at(&gurl, &f.acme, "demo", true, 7);
    assert_eq!(code, 200, "{text}");
    let u = reported(&text, true);
    sent = (sent.0 + u.0, sent.1 + u.1);

    // The same isolation as the server's router.
    let (code, text, _) = chat_at(&gurl, &f.beta, "demo", false, 3);
    assert_eq!(code, 404, "{text}");
    let (code, text, _) = chat_at(&gurl, "sl_not_a_token", "demo", false, 3);
    assert_eq!(code, 401, "{text}");
    let (code, text, _) = chat_at(&gurl, &f.admin, "demo", false, 3);
    assert_eq!(code, 403, "{text}");
    let (_, models, _) = call("GET", &format!("{gurl}/v1/models"), Some(&f.beta), None);
    assert_eq!(models["data"].as_array().unwrap().len(), 0, "{models}");

    // The gateway's tokens reach the server's usage rows, each once.
    wait_for(Duration::from_secs(10), || {
        token_usage(&f, &f.acme) == (2, sent.0, sent.1)
    });

    // Limits are shared: acme's tokens-per-minute limit, used up through
    // the server's router, is also full at the gateway. (Counters travel
    // at each router's tick, up to two ticks after the usage rows: let
    // the traffic above reach every router before the limit exists.)
    std::thread::sleep(Duration::from_millis(1500));
    let (code, v, _) = call(
        "PUT",
        &f.s.u("/v1/tenants/acme/limits"),
        Some(&f.admin),
        Some(&json!({"tokens_per_minute": 40}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    // Both routers read the new limit (every 2 s).
    std::thread::sleep(Duration::from_millis(2500));
    let mut at_server = 0;
    loop {
        let (code, text, _) = chat(&f, &f.acme, "demo", false, 30);
        if code == 429 {
            break;
        }
        assert_eq!(code, 200, "{text}");
        at_server += 1;
        assert!(at_server < 5, "the server never refused");
    }
    // 35 tokens each against 40 a minute: the second one goes into debt.
    assert_eq!(at_server, 2);
    // One exchange later (a tick), the gateway's first request for acme
    // since the limit is refused: its own bucket is full, but it was
    // charged with what the server's router let in.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, text, retry) = chat_at(&gurl, &f.acme, "demo", false, 3);
    assert_eq!(code, 429, "{text}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));
    // Another tenant is not limited by acme's use.
    let (code, _, _) = chat_at(&gurl, &f.beta, "demo", false, 3);
    assert_eq!(code, 404);
}
