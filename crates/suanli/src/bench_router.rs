//! `suanli bench router`: what the model router costs, and how routing
//! copes with uneven replicas, on real processes (the server binary, an
//! agent with fake GPUs, `suanli mock-llm` replicas run by the agent).
//!
//! 1. **Overhead**: the same open-loop load (`--rate` requests/s for
//!    `--seconds`, each a one-token chat answer, after a one-second warm-up
//!    that is not counted) sent to a replica directly (a `mock-llm` of the
//!    same flags started by the benchmark) and through the router (tenant
//!    token, service lookup, limits, least-outstanding pick, metering, token
//!    rows): the added latency at p50 and p99, from the same run.
//! 2. **Routing**: a service of two replicas whose time to first token is
//!    10 ms and 100 ms (by the parity of their job id), under
//!    `--route-rate` requests/s, on a server routing least-outstanding, then
//!    on one routing round-robin.
//!
//! Latency is measured from the request's scheduled send time (so a
//! client that falls behind counts against the system, not for it) to the
//! whole answer read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde::Serialize;
use suanli_api::{Service, ServiceCreate};

use crate::bench_pool::{stats, LocalPool, Procs, Stats};
use crate::{failure, usage, CliError};

#[derive(Args)]
pub struct BenchRouterArgs {
    /// Requests per second of the overhead run.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds of load per measurement (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second of the routing runs.
    #[arg(long, default_value_t = 100)]
    route_rate: u32,
    /// Where the servers and agents live [default: a new directory under
    /// the system's temp dir, removed at the end].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Fail (exit 1) when the router adds more than this at p50, ms.
    #[arg(long)]
    max_added_p50_ms: Option<f64>,
    /// Fail (exit 1) when the router adds more than this at p99, ms.
    #[arg(long)]
    max_added_p99_ms: Option<f64>,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Run {
    what: String,
    requests: usize,
    errors: usize,
    mean_ms: f64,
    ms: Stats,
}

#[derive(Serialize)]
struct Figures {
    rate: u32,
    seconds: u64,
    direct: Run,
    router: Run,
    added_p50_ms: f64,
    added_p99_ms: f64,
    route_rate: u32,
    least_outstanding: Run,
    round_robin: Run,
}

const BODY: &str =
    r#"{"model":"bench","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;

/// Send `rate` requests/s for `seconds` (plus a 1 s warm-up) to `url` with
/// `token`; latencies of the measured ones.
fn load(url: &str, token: &str, rate: u32, seconds: u64, what: &str) -> Result<Run, CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failure(e.to_string()))?;
    let url: Arc<str> = url.into();
    let auth: Arc<str> = format!("Bearer {token}").into();
    let (lat, errors) = rt.block_on(async move {
        let client: Client<_, Full<Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build_http();
        let warm = u64::from(rate);
        let n = u64::from(rate) * (seconds + 1);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(n as usize);
        for i in 0..n {
            let at = start + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
            tokio::time::sleep_until(at).await;
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            tasks.push(tokio::spawn(async move {
                let req = hyper::Request::post(&*url)
                    .header("authorization", &*auth)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .expect("a valid request");
                let ok = match client.request(req).await {
                    Ok(r) => {
                        let good = r.status().is_success();
                        good && r.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                (i >= warm, ok, at.elapsed().as_secs_f64() * 1e3)
            }));
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        for t in tasks {
            if let Ok((counted, ok, ms)) = t.await {
                if counted {
                    if ok {
                        lat.push(ms);
                    } else {
                        errors += 1;
                    }
                }
            }
        }
        (lat, errors)
    });
    if lat.is_empty() {
        return Err(failure(format!("{what}: every request failed")));
    }
    let mean_ms = lat.iter().sum::<f64>() / lat.len() as f64;
    Ok(Run {
        what: what.to_string(),
        requests: lat.len() + errors,
        errors,
        mean_ms,
        ms: stats(lat),
    })
}

/// A server routing by `route` with service `echo` of `replicas` replicas
/// running `command`, all ready.
fn pool_with_service(
    dir: &Path,
    route: &str,
    replicas: u32,
    command: Vec<String>,
) -> Result<LocalPool, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| failure(format!("{}: {e}", dir.display())))?;
    let config =
        format!("[agents]\nheartbeat_interval_s = 1\nlease_s = 10\n[models]\nroute = {route:?}\n");
    let pool = LocalPool::start(dir, &config, 1, "fake:8xA100-80G", &["--sandbox", "off"])?;
    let mut body = ServiceCreate {
        name: "echo".into(),
        model: "bench".into(),
        command,
        cpu_milli: Some(1000),
        memory_mib: Some(512),
        ..ServiceCreate::default()
    };
    body.scaling.min = Some(replicas);
    body.scaling.max = Some(replicas);
    let _: Service = pool.api.post("/v1/services", &pool.tenant, &body)?;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Service = pool.api.get("/v1/services/echo", &pool.tenant)?;
        let ready = s.replicas.iter().filter(|r| r.state == "ready").count();
        if ready == replicas as usize {
            return Ok(pool);
        }
        if Instant::now() > end {
            return Err(failure(format!(
                "{replicas} replicas not ready within 60 s: {:?} (logs: {})",
                s.last_failure,
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mock_args(exe: &Path, ttft: &str) -> Vec<String> {
    [
        exe.display().to_string(),
        "mock-llm".into(),
        "--model".into(),
        "bench".into(),
        "--ttft-ms".into(),
        ttft.into(),
        "--tokens-per-s".into(),
        "1000000".into(),
    ]
    .into()
}

fn measure(a: &BenchRouterArgs, dir: &Path) -> Result<Figures, CliError> {
    let exe = std::env::current_exe().map_err(|e| failure(e.to_string()))?;
    // 1. Overhead: one replica through the router, and one the benchmark
    //    starts itself, called directly.
    let key = "bench-replica-key";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| failure(e.to_string()))?;
        l.local_addr().map_err(|e| failure(e.to_string()))?.port()
    };
    let direct = std::process::Command::new(&exe)
        .args(&mock_args(&exe, "0")[1..])
        .env("PORT", port.to_string())
        .env("SUANLI_REPLICA_KEY", key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| failure(format!("mock-llm: {e}")))?;
    let _direct = Procs(vec![direct]);
    let health = format!("http://127.0.0.1:{port}/health");
    let end = Instant::now() + Duration::from_secs(10);
    while ureq::get(&health).call().is_err() {
        if Instant::now() > end {
            return Err(failure("the direct mock-llm did not start"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pool = pool_with_service(
        &dir.join("overhead"),
        "least-outstanding",
        1,
        mock_args(&exe, "0"),
    )?;
    let direct_url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let router_url = format!("{}/v1/chat/completions", pool.api.url);
    let direct = load(&direct_url, key, a.rate, a.seconds, "direct")?;
    let router = load(&router_url, &pool.tenant, a.rate, a.seconds, "router")?;
    drop(pool);
    // 2. Routing with uneven replicas: 10 ms and 100 ms to the first token.
    let uneven = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "exec {} mock-llm --model bench --tokens-per-s 1000000 \
             --ttft-ms $(( (SUANLI_JOB_ID % 2) * 90 + 10 ))",
            exe.display()
        ),
    ];
    let mut by_route = Vec::new();
    for route in ["least-outstanding", "round-robin"] {
        let pool = pool_with_service(&dir.join(route), route, 2, uneven.clone())?;
        let url = format!("{}/v1/chat/completions", pool.api.url);
        by_route.push(load(&url, &pool.tenant, a.route_rate, a.seconds, route)?);
    }
    let round_robin = by_route.pop().expect("two runs");
    let least_outstanding = by_route.pop().expect("two runs");
    Ok(Figures {
        rate: a.rate,
        seconds: a.seconds,
        added_p50_ms: router.ms.p50 - direct.ms.p50,
        added_p99_ms: router.ms.p99 - direct.ms.p99,
        direct,
        router,
        route_rate: a.route_rate,
        least_outstanding,
        round_robin,
    })
}

pub fn run(a: BenchRouterArgs) -> Result<(), CliError> {
    if a.rate == 0 || a.rate > 100_000 || a.route_rate == 0 || a.route_rate > 100_000 {
        return Err(usage("--rate and --route-rate must be 1..=100000"));
    }
    if a.seconds == 0 || a.seconds > 3600 {
        return Err(usage("--seconds must be 1..=3600"));
    }
    let (dir, temp) = match &a.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("suanli-bench-router-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| failure(format!("{}: {e}", dir.display())))?;
    let r = measure(&a, &dir);
    if temp && r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let f = r?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&f).expect("figures serialise")
        );
    } else {
        println!(
            "router overhead: {} requests/s for {} s, one-token answers, one replica",
            f.rate, f.seconds
        );
        let row = |r: &Run| {
            println!(
                "{:<18} {:>8} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                r.what, r.requests, r.errors, r.ms.p50, r.ms.p90, r.ms.p99, r.ms.max, r.mean_ms
            )
        };
        let head = || {
            println!(
                "{:<18} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"
            )
        };
        head();
        row(&f.direct);
        row(&f.router);
        println!(
            "added by the router: {:.2} ms at p50, {:.2} ms at p99",
            f.added_p50_ms, f.added_p99_ms
        );
        println!(
            "routing: {} requests/s, two replicas at 10 ms and 100 ms to the first token",
            f.route_rate
        );
        head();
        row(&f.least_outstanding);
        row(&f.round_robin);
    }
    for (limit, got, what) in [
        (a.max_added_p50_ms, f.added_p50_ms, "p50"),
        (a.max_added_p99_ms, f.added_p99_ms, "p99"),
    ] {
        if let Some(max) = limit {
            if got > max {
                return Err(failure(format!(
                    "the router adds {got:.2} ms at {what}, over the limit of {max} ms"
                )));
            }
        }
    }
    Ok(())
}
