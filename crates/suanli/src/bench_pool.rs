//! What the benchmarks on real processes share: a local pool (the server
//! binary and agent binaries with fake GPUs, in a directory), a small JSON
//! client, latency percentiles, and the processes stopped however the
//! benchmark ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use suanli_api::{NewTenant, NewToken, NodeState, TokenRequest};

use crate::{failure, CliError};

#[derive(Serialize, Clone, Copy, Debug)]
pub struct Stats {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Percentiles by nearest rank (`xs` not empty).
pub fn stats(mut xs: Vec<f64>) -> Stats {
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| xs[(((p * xs.len() as f64).ceil() as usize).max(1) - 1).min(xs.len() - 1)];
    Stats {
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        max: *xs.last().expect("at least one sample"),
    }
}

/// Processes killed however the benchmark ends, last started first.
pub struct Procs(pub Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            // SAFETY: sending a signal touches no memory of ours.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in self.0.iter_mut().rev() {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Api {
    pub url: String,
    pub http: ureq::Agent,
}

impl Api {
    pub fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        tok: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.http
            .post(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {tok}"))
            .send_json(body)
            .map_err(|e| failure(format!("POST {path}: {e}")))?
            .into_json()
            .map_err(|e| failure(format!("POST {path}: {e}")))
    }

    pub fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        tok: &str,
    ) -> Result<T, CliError> {
        self.http
            .get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {tok}"))
            .call()
            .map_err(|e| failure(format!("GET {path}: {e}")))?
            .into_json()
            .map_err(|e| failure(format!("GET {path}: {e}")))
    }
}

/// A server and its agents in `dir`, with tenant `bench` (the admin's
/// token is in `dir/server/admin.token`).
pub struct LocalPool {
    pub api: Api,
    /// Tenant `bench`'s token.
    pub tenant: String,
    /// The server and agents, stopped when the pool is dropped.
    _procs: Procs,
}

impl LocalPool {
    /// Start a server with `config` (TOML) in `dir`, then `agents` agents
    /// of `gpus` (e.g. `fake:8xA100-80G`) with `agent_args` added, and wait
    /// until every node is ready.
    pub fn start(
        dir: &Path,
        config: &str,
        agents: usize,
        gpus: &str,
        agent_args: &[&str],
    ) -> Result<LocalPool, CliError> {
        let exe: PathBuf = std::env::current_exe().map_err(|e| failure(e.to_string()))?;
        let conf = dir.join("server.toml");
        std::fs::write(&conf, config).map_err(|e| failure(e.to_string()))?;
        let mut procs = Procs(Vec::new());
        let mut server = Command::new(&exe)
            .args(["server", "--listen", "127.0.0.1:0", "--config"])
            .arg(&conf)
            .arg("--data-dir")
            .arg(dir.join("server"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failure(format!("cannot start the server: {e}")))?;
        let mut lines = BufReader::new(server.stderr.take().expect("piped")).lines();
        procs.0.push(server);
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(x) = l.strip_prefix("listening on ") {
                        break x.to_string();
                    }
                }
                _ => return Err(failure("the server exited before listening")),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let api = Api {
            url: format!("http://{addr}"),
            http: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        };
        let admin = std::fs::read_to_string(dir.join("server").join("admin.token"))
            .map_err(|e| failure(e.to_string()))?
            .trim()
            .to_string();
        let _: serde::de::IgnoredAny = api.post(
            "/v1/tenants",
            &admin,
            &NewTenant {
                name: "bench".to_string(),
                weight: None,
            },
        )?;
        let token = |scope: &str, tenant: Option<&str>| -> Result<String, CliError> {
            let req = TokenRequest {
                scope: scope.to_string(),
                tenant: tenant.map(str::to_string),
                node: None,
                name: None,
            };
            Ok(api.post::<_, NewToken>("/v1/tokens", &admin, &req)?.token)
        };
        let agent_tok = token("agent", None)?;
        let tenant = token("tenant", Some("bench"))?;
        for i in 0..agents {
            let name = format!("a{i}");
            let log = std::fs::File::create(dir.join(format!("{name}.log")))
                .map_err(|e| failure(e.to_string()))?;
            let mut c = Command::new(&exe);
            c.env("SUANLI_JOIN_TOKEN", &agent_tok)
                .args(["agent", "--server", &api.url, "--name", &name])
                .args(["--gpus", gpus, "--cpus", "16", "--memory-gib", "64"])
                .args(agent_args)
                .arg("--work-dir")
                .arg(dir.join(&name))
                .stdout(Stdio::null())
                .stderr(Stdio::from(log));
            procs.0.push(
                c.spawn()
                    .map_err(|e| failure(format!("agent {name}: {e}")))?,
            );
        }
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let l: suanli_api::NodeList = api.get("/v1/nodes", &admin)?;
            if l.nodes.len() == agents && l.nodes.iter().all(|n| n.node.state == NodeState::Ready) {
                break;
            }
            if Instant::now() > end {
                return Err(failure(format!(
                    "the agents did not register within 30 s (logs: {})",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(LocalPool {
            api,
            tenant,
            _procs: procs,
        })
    }
}
