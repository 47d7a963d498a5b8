//! Helpers shared by the tests that run the real `suanli` binary: a server
//! on 127.0.0.1 with a temporary data dir, HTTP calls, tokens, fake nodes.
#![allow(dead_code)]

pub mod agent;
pub mod pool;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// Start with extra server flags.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_suanli"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let l = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(a) = l.strip_prefix("listening on ") {
                // `ADDR` or `ADDR (https)`.
                break a.split_whitespace().next().unwrap_or_default().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        // SUANLI_TEST_SERVER_LOG=1 shows it (debugging a test).
        let show = std::env::var_os("SUANLI_TEST_SERVER_LOG").is_some();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if show {
                    eprintln!("server: {l}");
                }
            }
        });
        Server {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory, removed with all it holds when dropped (declare
/// it before, or as a struct's last field after, whatever runs in it);
/// derefs to its path.
pub struct TmpDir(tempfile::TempDir);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for TmpDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

/// A fresh temporary directory named after the test.
pub fn tmp(name: &str) -> TmpDir {
    TmpDir(
        tempfile::Builder::new()
            .prefix(&format!("suanli-server-{name}-"))
            .tempdir()
            .unwrap(),
    )
}

/// (status, body as JSON or Null, content type)
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value, String) {
    call_with(method, url, token, &[], body)
}

/// [`call`] with extra request headers.
pub fn call_with(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value, String) {
    let mut r = ureq::request(method, url);
    for (h, v) in headers {
        r = r.set(h, v);
    }
    if let Some(t) = token {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    if url.contains("/v1/agents/") {
        // As every agent does (calls without it are tested apart).
        r = r.set(
            suanli_api::PROTOCOL_HEADER,
            &suanli_api::PROTOCOL.to_string(),
        );
    }
    let res = match body {
        Some(b) => r.set("Content-Type", "application/json").send_string(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let ct = resp.content_type().to_string();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        ct,
    )
}

/// POST declaring a `len`-byte JSON body, send only its first bytes, and
/// return the raw response.
pub fn raw_post(url: &str, path: &str, token: &str, len: usize) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(b"{\"command\":[\"").unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

pub fn token_for(s: &Server, admin: &str, body: Value) -> String {
    let (code, v, _) = call(
        "POST",
        &format!("{}/v1/tokens", s.url),
        Some(admin),
        Some(&body.to_string()),
    );
    assert_eq!(code, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

pub fn cli(server: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(args)
        .env("SUANLI_SERVER", server)
        .env("SUANLI_TOKEN", token)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

impl Server {
    pub fn u(&self, p: &str) -> String {
        format!("{}{p}", self.url)
    }
    pub fn admin(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// Register a node through the agent API: `gpus` devices of `model`.
pub fn register(
    s: &Server,
    agent: &str,
    name: &str,
    gpus: usize,
    model: &str,
    cpu_milli: i64,
) -> Value {
    let devs: Vec<Value> = (0..gpus)
        .map(|i| json!({"index": i, "model": model, "memory_mib": 81920}))
        .collect();
    let body = json!({"name": name, "addr": format!("10.0.0.{}", name.len()), "cpu_milli": cpu_milli,
        "memory_mib": 1 << 20, "gpus": devs, "labels": {"rack": "r1"}});
    // As a real agent: the node's saved credential once it has one, else
    // a new one claimed with the join token.
    let (token, body) = match credential(agent, name) {
        Some(c) => (c, body),
        None => {
            let (secret, hash) = suanli_api::token::new_token();
            let mut body = body;
            body["credential_sha256"] = json!(hash);
            CREDENTIALS
                .lock()
                .unwrap()
                .insert((agent.to_string(), name.to_string()), secret);
            (agent.to_string(), body)
        }
    };
    let (code, v, _) = call(
        "POST",
        &s.u("/v1/agents/register"),
        Some(&token),
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// Node credentials claimed by registrations, by (join token, node): the
/// helpers act as each node's agent, which keeps its own credential.
static CREDENTIALS: std::sync::Mutex<std::collections::BTreeMap<(String, String), String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The credential node `name` claimed with join token `agent`, if any.
pub fn credential(agent: &str, name: &str) -> Option<String> {
    CREDENTIALS
        .lock()
        .unwrap()
        .get(&(agent.to_string(), name.to_string()))
        .cloned()
}

/// A heartbeat: `running` as (job, run, task), `exited` as (job, run, task, exit code).
pub fn heartbeat(
    s: &Server,
    agent: &str,
    node: &str,
    running: &[(i64, i64, i64)],
    exited: &[(i64, i64, i64, i64)],
) -> Value {
    let running: Vec<Value> = running
        .iter()
        .map(|&(job, run, task)| json!({"job": job, "run": run, "task": task}))
        .collect();
    let exited: Vec<Value> = exited
        .iter()
        .map(|&(job, run, task, code)| json!({"job": job, "run": run, "task": task, "exit_code": code, "signal": null}))
        .collect();
    let body = json!({"running": running, "exited": exited});
    let token = credential(agent, node).unwrap_or_else(|| agent.to_string());
    let (code, v, _) = call(
        "POST",
        &s.u(&format!("/v1/agents/{node}/heartbeat")),
        Some(&token),
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{v}");
    v
}

/// (job, run, task) of a heartbeat answer's orders of one kind.
fn orders(hb: &Value, kind: &str) -> Vec<(i64, i64, i64)> {
    hb[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["job"].as_i64().unwrap(),
                a["run"].as_i64().unwrap(),
                a["task"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The tasks a heartbeat answer says to start.
pub fn starts(hb: &Value) -> Vec<(i64, i64, i64)> {
    orders(hb, "start")
}

/// The tasks a heartbeat answer says to stop.
pub fn kills(hb: &Value) -> Vec<(i64, i64, i64)> {
    orders(hb, "kill")
}

pub fn job(s: &Server, token: &str, id: i64) -> Value {
    let (code, v, _) = call("GET", &s.u(&format!("/v1/jobs/{id}")), Some(token), None);
    assert_eq!(code, 200, "{v}");
    v
}

pub fn submit(s: &Server, token: &str, body: Value) -> Value {
    let (code, v, _) = call(
        "POST",
        &s.u("/v1/jobs"),
        Some(token),
        Some(&body.to_string()),
    );
    assert_eq!(code, 201, "{body}: {v}");
    v
}

/// The current month, `YYYY-MM` (UTC): the billing period of what a test runs now.
pub fn month_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    suanli_billing::month_of(now)
}
