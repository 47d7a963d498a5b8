//! `suanli mock-llm` as a real process: the OpenAI shapes the router relies
//! on, streaming with usage, the API key, injected failures, readiness.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Mock {
    child: Child,
    url: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Mock {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_suanli"));
    cmd.arg("mock-llm")
        .args(args)
        .env("PORT", port.to_string())
        .env_remove("SUANLI_REPLICA_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let m = Mock {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mock-llm never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

/// (status, body text)
fn call(method: &str, url: &str, key: Option<&str>, body: Option<Value>) -> (u16, String) {
    let mut req = agent().request(method, url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The `data:` payloads of an event stream.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an event: {e:?}"))
                .to_string()
        })
        .collect()
}

#[test]
fn answers_whole_and_streamed_with_usage() {
    let m = start(
        &[
            "--model",
            "m1",
            "--ttft-ms",
            "150",
            "--tokens-per-s",
            "1000",
        ],
        &[],
    );
    let (code, body) = call("GET", &format!("{}/health", m.url), None, None);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = call("GET", &format!("{}/v1/models", m.url), None, None);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], "m1");

    // Whole answer: usage counts words of the prompt and max_tokens.
    let t = Instant::now();
    let (code, body) = call(
        "POST",
        &format!("{}/v1/completions", m.url),
        None,
        Some(json!({"model": "m1", "prompt": "one two three four", "max_tokens": 5})),
    );
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9})
    );
    assert_eq!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        5
    );

    // Streamed chat with the usage chunk.
    let (code, body) = call(
        "POST",
        &format!("{}/v1/chat/completions", m.url),
        None,
        Some(json!({
            "model": "m1",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there you"}],
            "max_tokens": 7,
            "stream": true,
            "stream_options": {"include_usage": true},
        })),
    );
    assert_eq!(code, 200, "{body}");
    let evs = events(&body);
    assert_eq!(evs.len(), 7 + 1 + 1, "{evs:?}");
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = evs[..8]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks[..7]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text.split_whitespace().count(), 7);
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "length");
    assert!(chunks[..6]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(chunks[7]["usage"]["prompt_tokens"], 5);
    assert_eq!(chunks[7]["usage"]["completion_tokens"], 7);
    // Without include_usage no usage chunk, as OpenAI does.
    let (_, body) = call(
        "POST",
        &format!("{}/v1/completions", m.url),
        None,
        Some(json!({"model": "m1", "prompt": "x", "max_tokens": 3, "stream": true})),
    );
    assert_eq!(events(&body).len(), 3 + 1);

    // Bad requests are OpenAI-style errors, not panics.
    for (path, body, want) in [
        (
            "/v1/completions",
            json!({"model": "other", "prompt": "x"}),
            404,
        ),
        ("/v1/completions", json!({"model": "m1"}), 400),
        (
            "/v1/chat/completions",
            json!({"model": "m1", "messages": [], "max_tokens": 0}),
            400,
        ),
        ("/v1/chat/completions", json!({"messages": []}), 400),
    ] {
        let (code, text) = call("POST", &format!("{}{path}", m.url), None, Some(body));
        assert_eq!(code, want, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].is_string(), "{text}");
    }
}

#[test]
fn the_replica_key_is_required_when_set() {
    let m = start(&[], &[("SUANLI_REPLICA_KEY", "s3cret")]);
    let req = json!({"model": "mock", "prompt": "x", "max_tokens": 1});
    let url = format!("{}/v1/completions", m.url);
    assert_eq!(call("POST", &url, None, Some(req.clone())).0, 401);
    assert_eq!(call("POST", &url, Some("s3cre"), Some(req.clone())).0, 401);
    assert_eq!(
        call("POST", &url, Some("s3cretX"), Some(req.clone())).0,
        401
    );
    assert_eq!(
        call("GET", &format!("{}/v1/models", m.url), None, None).0,
        401
    );
    assert_eq!(call("POST", &url, Some("s3cret"), Some(req)).0, 200);
    // The probe needs no key.
    assert_eq!(call("GET", &format!("{}/health", m.url), None, None).0, 200);
}

#[test]
fn failures_and_readiness_can_be_injected() {
    let m = start(
        &[
            "--fail-rate",
            "1",
            "--ready-delay-ms",
            "800",
            "--ttft-ms",
            "0",
        ],
        &[],
    );
    assert_eq!(call("GET", &format!("{}/health", m.url), None, None).0, 503);
    let (code, text) = call(
        "POST",
        &format!("{}/v1/completions", m.url),
        None,
        Some(json!({"model": "mock", "prompt": "x"})),
    );
    assert_eq!(code, 500, "{text}");
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(call("GET", &format!("{}/health", m.url), None, None).0, 200);
    // Half the requests fail, drawn from the seed: some of each.
    let m = start(&["--fail-rate", "0.5", "--ttft-ms", "0"], &[]);
    let codes: Vec<u16> = (0..40)
        .map(|_| {
            call(
                "POST",
                &format!("{}/v1/completions", m.url),
                None,
                Some(json!({"model": "mock", "prompt": "x", "max_tokens": 1})),
            )
            .0
        })
        .collect();
    let failed = codes.iter().filter(|&&c| c == 500).count();
    assert!((8..=32).contains(&failed), "{failed} of 40 failed");
    assert!(codes.iter().all(|&c| c == 200 || c == 500));
}

#[test]
fn bad_flags_are_named() {
    for (args, want) in [
        (vec!["--port", "1", "--fail-rate", "2"], "--fail-rate"),
        (vec!["--port", "1", "--tokens-per-s", "0"], "--tokens-per-s"),
        (vec!["--port", "1", "--model", ""], "--model"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
            .arg("mock-llm")
            .args(&args)
            .env_remove("PORT")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // No port at all.
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .arg("mock-llm")
        .env_remove("PORT")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--port"));
}

#[test]
fn a_cut_stream_is_metered_from_its_continuous_usage() {
    use std::io::Read;
    let m = start(&["--ttft-ms", "0", "--tokens-per-s", "50"], &[]);
    let resp = agent()
        .post(&format!("{}/v1/chat/completions", m.url))
        .send_json(json!({
            "model": "mock",
            "messages": [{"role": "user", "content": "a b c"}],
            "max_tokens": 200,
            "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true},
        }))
        .unwrap();
    // Read about half a second of it (25 tokens at 50/s), then hang up.
    let mut reader = resp.into_reader();
    let mut meter = suanli_serve::StreamMeter::new();
    let mut buf = [0u8; 512];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        meter.feed(&buf[..n]);
    }
    drop(reader);
    let r = meter.metered();
    assert!(!r.complete && !r.estimated, "{r:?}");
    assert_eq!(r.usage.prompt_tokens, 3);
    assert!((5..=60).contains(&r.usage.completion_tokens), "{r:?}");
}
