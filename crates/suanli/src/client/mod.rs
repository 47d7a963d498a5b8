//! The CLI client of the control plane, one module per command group:
//! `jobs.rs` (`submit`, `queue`, `job show`, `cancel`, `logs`), `admin.rs`
//! (`tenant`, `token`, `nodes`), `bills.rs` (`bill`, `report economics`),
//! `pool.rs` (`pool`: the pool by GPU model, for tenants), `services.rs`
//! (`service`: model services);
//! `output.rs` renders tables, CSV and JSON. Requests and answers are the
//! protocol's own types ([`suanli_api`]); nothing indexes JSON by string.
//!
//! The server and token come from `--server` / `--token`, else
//! `SUANLI_SERVER` / `SUANLI_TOKEN`, else `~/.config/suanli/config.toml`
//! (`server = "..."`, `token = "..."`). The server may be a comma-separated
//! list of replicas: a request goes to the one that answered last and moves
//! on when a replica cannot be reached or answers 503 (it does not run the
//! scheduling loop), for up to [`FAILOVER`] (a leader takeover). A request
//! the server may have acted on is sent again only if it is safe to repeat:
//! GET, PUT, DELETE, or a submission, which carries an idempotency key; a
//! 503 `not_leader` says nothing was done, so any request moves on.
//!
//! Exit codes: 0 success; 1 the server could not be reached or failed; 2 an
//! invalid command line; 3 the server refused the request (4xx: unknown job,
//! quota, permission, validation), with its problem detail printed.

mod admin;
mod bills;
mod jobs;
mod output;
mod pool;
mod services;

pub use admin::{audit, nodes, tenant, token, AuditArgs, NodesArgs, TenantCmd, TokenCmd};
pub use bills::{bill, report, BillArgs, ReportCmd};
pub use jobs::{
    cancel, job, logs, queue, submit, JobCmd, JobIdArgs, LogsArgs, QueueArgs, SubmitArgs,
};
pub use pool::{pool, PoolArgs};
pub use services::{service, ServiceCmd};

use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{failure, usage, CliError};

#[derive(Args, Clone)]
pub struct Conn {
    /// Server URL, or several replicas' URLs separated by commas (env
    /// SUANLI_SERVER; default from ~/.config/suanli/config.toml).
    #[arg(long, global = true)]
    server: Option<String>,
    /// API token (env SUANLI_TOKEN; default from ~/.config/suanli/config.toml).
    #[arg(long, global = true)]
    token: Option<String>,
    /// PEM certificates to trust for an HTTPS server (env SUANLI_CA;
    /// default: the system's roots).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// The HTTP client, built once per command (`logs --follow` and paged
    /// reads make many calls).
    #[arg(skip)]
    client: std::sync::OnceLock<ureq::Agent>,
    /// The replica that answered last (an index into the server list).
    #[arg(skip)]
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// How long a request keeps trying the replicas of a server list (a leader
/// takeover takes the lease's TTL, 6 s by default, and a little more).
pub const FAILOVER: std::time::Duration = std::time::Duration::from_secs(30);

fn config_value(key: &str) -> Option<String> {
    let home = std::env::var_os("HOME")?;
    let p = std::path::Path::new(&home).join(".config/suanli/config.toml");
    let text = std::fs::read_to_string(p).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

/// A problem document from the server as an error: exit code 3 for a
/// refusal (4xx), 1 for a server failure; its detail and field are shown.
fn refused(code: u16, r: ureq::Response) -> CliError {
    let p: Option<suanli_api::Problem> = r.into_json().ok();
    let detail = p.as_ref().map_or("request failed", |p| p.detail.as_str());
    let field = p
        .as_ref()
        .and_then(|p| p.field.as_deref())
        .map_or(String::new(), |f| format!(" (field {f})"));
    let msg = format!("server: {code} {detail}{field}");
    if (400..500).contains(&code) {
        CliError { code: 3, msg }
    } else {
        failure(msg)
    }
}

/// No body (for POSTs whose meaning is in the path).
#[derive(Serialize)]
struct Empty {}

impl Conn {
    fn resolve(&self) -> Result<(String, String), CliError> {
        let server = self
            .server
            .clone()
            .or_else(|| std::env::var("SUANLI_SERVER").ok())
            .or_else(|| config_value("server"))
            .ok_or_else(|| usage("no server: pass --server URL or set SUANLI_SERVER"))?;
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("SUANLI_TOKEN").ok())
            .or_else(|| config_value("token"))
            .ok_or_else(|| usage("no token: pass --token T or set SUANLI_TOKEN"))?;
        Ok((server, token))
    }

    /// The replicas of the server list, and the token.
    fn replicas(&self) -> Result<(Vec<String>, String), CliError> {
        let (server, token) = self.resolve()?;
        let list: Vec<String> = server
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            return Err(usage(format!("--server {server:?}: no URL in it")));
        }
        Ok((list, token))
    }

    /// Send a request to the replicas, failing over as the module says.
    /// `repeatable`: the request may be sent again after the server may
    /// have received it.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&dyn ErasedBody>,
        headers: &[(&str, &str)],
        repeatable: bool,
    ) -> Result<ureq::Response, CliError> {
        use std::sync::atomic::Ordering;
        let (servers, token) = self.replicas()?;
        let http = self.http()?;
        let body = body.map(|b| b.json());
        let deadline = std::time::Instant::now() + FAILOVER;
        let mut k = self.current.load(Ordering::Relaxed) % servers.len();
        let mut tried = 0usize;
        loop {
            let server = &servers[k];
            let mut req = http
                .request(method, &format!("{server}{path}"))
                .set("Authorization", &format!("Bearer {token}"));
            for (h, v) in headers {
                req = req.set(h, v);
            }
            let res = match &body {
                Some(b) => req.set("Content-Type", "application/json").send_string(b),
                None => req.call(),
            };
            let last = match res {
                Ok(r) => {
                    self.current.store(k, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(ureq::Error::Status(503, r)) if servers.len() > 1 => {
                    // `not_leader`: nothing was done, any request may go
                    // on; another 503 may have acted.
                    let text = r.into_string().unwrap_or_default();
                    let p: Option<suanli_api::Problem> = serde_json::from_str(&text).ok();
                    let untouched = p.as_ref().is_some_and(|p| p.code == "not_leader");
                    let e = failure(format!(
                        "server: 503 {}",
                        p.map_or(text.clone(), |p| p.detail)
                    ));
                    if !(untouched || repeatable) {
                        return Err(e);
                    }
                    e
                }
                Err(ureq::Error::Status(code, r)) => return Err(refused(code, r)),
                Err(ureq::Error::Transport(t)) => {
                    let unsent = t.kind() == ureq::ErrorKind::ConnectionFailed;
                    let e = failure(format!("cannot reach {server}: {t}"));
                    if servers.len() == 1 || !(unsent || repeatable) {
                        return Err(e);
                    }
                    e
                }
            };
            tried += 1;
            k = (k + 1) % servers.len();
            if std::time::Instant::now() >= deadline {
                return Err(last);
            }
            if tried.is_multiple_of(servers.len()) {
                // Every replica refused: a takeover is under way.
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }

    fn http(&self) -> Result<ureq::Agent, CliError> {
        if let Some(a) = self.client.get() {
            return Ok(a.clone());
        }
        let ca = self
            .ca
            .clone()
            .or_else(|| std::env::var_os("SUANLI_CA").map(std::path::PathBuf::from))
            .or_else(|| config_value("ca").map(std::path::PathBuf::from));
        let a = suanli_agent::http_client(ca.as_deref(), std::time::Duration::from_secs(60))
            .map_err(usage)?;
        Ok(self.client.get_or_init(|| a).clone())
    }

    /// GET raw bytes; returns them with the `x-next-offset`, `x-job-state`
    /// and `x-job-run` headers.
    fn get_bytes(&self, path: &str) -> Result<(Vec<u8>, u64, String, i64), CliError> {
        match self.call("GET", path, None, &[], true) {
            Ok(r) => {
                let next = r
                    .header(suanli_api::NEXT_OFFSET_HEADER)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let state = r
                    .header(suanli_api::JOB_STATE_HEADER)
                    .unwrap_or("")
                    .to_string();
                let run = r
                    .header(suanli_api::JOB_RUN_HEADER)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut buf)
                    .map_err(|e| failure(format!("{path}: {e}")))?;
                Ok((buf, next, state, run))
            }
            Err(e) => Err(e),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&dyn ErasedBody>,
    ) -> Result<ureq::Response, CliError> {
        let repeatable = matches!(method, "GET" | "PUT" | "DELETE");
        self.call(method, path, body, &[], repeatable)
    }

    /// POST a submission with an idempotency key: safe to send again, to
    /// this replica or another, whatever happened to the first attempt.
    pub fn post_once<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        key: &str,
    ) -> Result<T, CliError> {
        let r = self.call(
            "POST",
            path,
            Some(&Body(body)),
            &[("Idempotency-Key", key)],
            true,
        )?;
        Conn::read(path, r)
    }

    fn read<T: DeserializeOwned>(path: &str, r: ureq::Response) -> Result<T, CliError> {
        r.into_json::<T>()
            .map_err(|e| failure(format!("{path}: an answer this client cannot read: {e}")))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let r = self.send("GET", path, None)?;
        Conn::read(path, r)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let r = self.send("POST", path, Some(&Body(body)))?;
        Conn::read(path, r)
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let r = self.send("PUT", path, Some(&Body(body)))?;
        Conn::read(path, r)
    }

    /// A PATCH (of absolute values: safe to send again).
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let r = self.call("PATCH", path, Some(&Body(body)), &[], true)?;
        Conn::read(path, r)
    }

    /// A POST with a body whose answer has none (204).
    pub fn post_no_content<B: Serialize>(&self, path: &str, body: &B) -> Result<(), CliError> {
        self.send("POST", path, Some(&Body(body))).map(|_| ())
    }

    /// A POST whose answer has no body (204).
    pub fn post_empty(&self, path: &str) -> Result<(), CliError> {
        self.send("POST", path, Some(&Body(&Empty {}))).map(|_| ())
    }

    /// A DELETE whose answer has no body (204).
    pub fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send("DELETE", path, None).map(|_| ())
    }
}

/// A request body, serialised once.
trait ErasedBody {
    fn json(&self) -> String;
}

struct Body<'a, B: Serialize>(&'a B);

impl<B: Serialize> ErasedBody for Body<'_, B> {
    fn json(&self) -> String {
        serde_json::to_string(self.0).expect("request bodies serialise")
    }
}

/// A query string from one of the protocol's query types.
fn query<Q: Serialize>(q: &Q) -> String {
    serde_urlencoded::to_string(q).expect("query types serialise")
}

/// `--env NAME=VALUE` flags as a map.
pub fn parse_env(flags: &[String]) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    flags
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| usage(format!("--env {kv:?}: expected NAME=VALUE")))
        })
        .collect()
}

/// `90m` → 5400 s; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<u64, CliError> {
    let bad = || {
        usage(format!(
            "--time {s:?}: expected seconds or a number with s, m, h or d"
        ))
    };
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        Some('d') => (&t[..t.len() - 1], 86400.0),
        _ => (t, 1.0),
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = (x * mult).round();
    if !(secs.is_finite() && secs >= 1.0) {
        return Err(bad());
    }
    Ok(secs as u64)
}

/// `16G` → 16384 MiB; a bare number is MiB.
pub fn parse_mem(s: &str) -> Result<u64, CliError> {
    let bad = || {
        usage(format!(
            "--mem {s:?}: expected MiB or a number with K, M, G or T"
        ))
    };
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1.0 / 1024.0),
        Some('M' | 'm') => (&t[..t.len() - 1], 1.0),
        Some('G' | 'g') => (&t[..t.len() - 1], 1024.0),
        Some('T' | 't') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    let mib = x * mult;
    if !(mib.is_finite() && mib >= 0.0 && mib <= (1u64 << 30) as f64) {
        return Err(bad());
    }
    Ok(mib.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem("16G").unwrap(), 16_384);
        assert_eq!(parse_mem("512").unwrap(), 512);
        assert_eq!(parse_mem("1.5g").unwrap(), 1536);
        assert_eq!(parse_mem("1T").unwrap(), 1_048_576);
        assert!(parse_mem("-1G").is_err());
        assert!(parse_mem("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("30").unwrap(), 30);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0").is_err());
    }
}
