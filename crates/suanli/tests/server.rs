//! The control-plane server, as a real process on 127.0.0.1 with a temporary
//! data directory: bootstrap, tenants and tokens, job submit/list/cancel,
//! tenant isolation endpoint by endpoint, bad input as 4xx problem
//! documents, and durability across a restart.
//!
//! Longer than most files on purpose: it is a table of cases (every
//! endpoint × every kind of caller), read top to bottom.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn tenants_tokens_jobs_isolation_and_restart() {
    let dir = tmp("main");
    let s = Server::start(&dir);
    let admin_path = dir.join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&admin_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin = std::fs::read_to_string(&admin_path)
        .unwrap()
        .trim()
        .to_string();
    assert!(admin.len() >= 64, "a 256-bit token");
    let u = |p: &str| format!("{}{p}", s.url);
    assert_eq!(call("GET", &u("/healthz"), None, None).0, 200);

    for t in ["acme", "beta"] {
        let (code, v, _) = call(
            "POST",
            &u("/v1/tenants"),
            Some(&admin),
            Some(&json!({"name": t}).to_string()),
        );
        assert_eq!(code, 201, "{v}");
    }
    let (code, v, ct) = call(
        "POST",
        &u("/v1/tenants"),
        Some(&admin),
        Some(r#"{"name":"acme"}"#),
    );
    assert_eq!((code, v["code"].as_str()), (409, Some("conflict")));
    assert_eq!(ct, "application/problem+json");
    let acme = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "acme"}));
    let beta = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "beta"}));
    let agent = token_for(&s, &admin, json!({"scope": "agent"}));
    register(&s, &agent, "n1", 8, "A100-80G", 64_000);

    // Submit, list, get, events.
    let job = json!({"name": "train", "command": ["python", "train.py"], "gpus": 2, "tasks": 2, "class": "spot"});
    let (code, j, _) = call("POST", &u("/v1/jobs"), Some(&acme), Some(&job.to_string()));
    assert_eq!(code, 201, "{j}");
    // Answered after the pass that started it was committed, as committed.
    assert_eq!(
        (j["state"].as_str(), j["tenant"].as_str(), j["run"].as_i64()),
        (Some("RUNNING"), Some("acme"), Some(1))
    );
    let id = j["id"].as_i64().unwrap();
    let j = common::job(&s, &acme, id);
    assert_eq!(j["state"], "RUNNING", "{j}");
    assert_eq!(j["task_history"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["tasks"], 2, "the gang size is not shadowed: {j}");
    let (_, l, _) = call("GET", &u("/v1/jobs"), Some(&acme), None);
    assert_eq!(l["jobs"].as_array().unwrap().len(), 1);
    let (code, _, _) = call("GET", &u(&format!("/v1/jobs/{id}")), Some(&acme), None);
    assert_eq!(code, 200);

    // Isolation: beta can neither read, list, cancel nor see the events of
    // acme's job, and gets "not found" rather than "forbidden".
    let (_, l, _) = call("GET", &u("/v1/jobs"), Some(&beta), None);
    assert_eq!(l["jobs"].as_array().unwrap().len(), 0);
    for (m, p) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
        ("GET", format!("/v1/jobs/{id}/events")),
    ] {
        let (code, v, _) = call(
            m,
            &u(&p),
            Some(&beta),
            if m == "POST" { Some("{}") } else { None },
        );
        assert_eq!(code, 404, "{m} {p}: {v}");
    }
    let (code, _, _) = call("GET", &u("/v1/jobs?tenant=acme"), Some(&beta), None);
    assert_eq!(code, 403);
    // Tenants cannot call admin endpoints; agents cannot call tenant or admin ones.
    for t in [&acme, &agent] {
        assert_eq!(call("GET", &u("/v1/tenants"), Some(t), None).0, 403);
        assert_eq!(call("GET", &u("/v1/tokens"), Some(t), None).0, 403);
        assert_eq!(
            call(
                "POST",
                &u("/v1/tokens"),
                Some(t),
                Some(r#"{"scope":"admin"}"#)
            )
            .0,
            403
        );
    }
    assert_eq!(
        call("POST", &u("/v1/jobs"), Some(&agent), Some(&job.to_string())).0,
        403
    );
    assert_eq!(call("GET", &u("/v1/jobs"), Some(&agent), None).0, 403);
    assert_eq!(call("GET", &u("/v1/nodes"), Some(&agent), None).0, 403);
    // Tenants (and the admin) cannot call agent endpoints, nor list or drain nodes.
    for t in [&acme, &admin] {
        let reg = json!({"name": "evil", "cpu_milli": 1000, "memory_mib": 1024}).to_string();
        assert_eq!(
            call("POST", &u("/v1/agents/register"), Some(t), Some(&reg)).0,
            403
        );
        assert_eq!(
            call("POST", &u("/v1/agents/n1/heartbeat"), Some(t), Some("{}")).0,
            403
        );
        assert_eq!(
            call(
                "POST",
                &u("/v1/agents/n1/tasks/status"),
                Some(t),
                Some("{}")
            )
            .0,
            403
        );
    }
    assert_eq!(call("GET", &u("/v1/nodes"), Some(&acme), None).0, 403);
    assert_eq!(
        call("POST", &u("/v1/nodes/n1/drain"), Some(&acme), Some("{}")).0,
        403
    );
    assert_eq!(call("GET", &u("/v1/jobs"), None, None).0, 401);
    assert_eq!(call("GET", &u("/v1/jobs"), Some("sl_forged"), None).0, 401);

    // Revocation.
    let (_, toks, _) = call("GET", &u("/v1/tokens"), Some(&admin), None);
    let beta_id = toks["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "beta")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert!(
        toks.to_string().find(&beta).is_none(),
        "secrets are never listed"
    );
    assert_eq!(
        call(
            "POST",
            &u(&format!("/v1/tokens/{beta_id}/revoke")),
            Some(&admin),
            Some("{}")
        )
        .0,
        204
    );
    assert_eq!(call("GET", &u("/v1/jobs"), Some(&beta), None).0, 401);

    // Bad input: 4xx problem documents naming the field, never 5xx.
    let bad: &[(&str, u16, &str)] = &[
        ("{", 400, "bad_json"),
        (r#"{"command":"python"}"#, 400, "bad_body"),
        (r#"{"command":[]}"#, 400, "invalid_field"),
        (r#"{"command":["sh","a\u0000b"]}"#, 400, "invalid_field"),
        (
            r#"{"command":["x"],"env":{"K":"a\u0000b"}}"#,
            400,
            "invalid_field",
        ),
        (r#"{"command":["x"],"gpus":-1}"#, 400, "invalid_field"),
        (r#"{"command":["x"],"gpus":999}"#, 400, "invalid_field"),
        (r#"{"command":["x"],"gpu_share":1.5}"#, 400, "invalid_field"),
        (r#"{"command":["x"],"cpu_milli":-5}"#, 400, "invalid_field"),
        (r#"{"command":["x"],"class":"vip"}"#, 400, "invalid_field"),
        (r#"{"command":["x"],"bogus":1}"#, 400, "bad_body"),
        (r#"{"command":["x"],"tasks":1e30}"#, 400, "bad_body"),
        (
            r#"{"command":["x"],"gpus":1,"gpu_models":["Z9"]}"#,
            400,
            "invalid_field",
        ),
        (
            r#"{"command":["x"],"env":{"1X":"y"}}"#,
            400,
            "invalid_field",
        ),
        (
            r#"{"command":["x"],"max_runtime_s":0}"#,
            400,
            "invalid_field",
        ),
        (r#"{"command":["x"],"retries":-1}"#, 400, "invalid_field"),
        (
            r#"{"command":["x"],"cpu_milli":9000000}"#,
            422,
            "unsatisfiable",
        ),
        (
            r#"{"command":["x"],"gpus":8,"tasks":10000}"#,
            422,
            "unsatisfiable",
        ),
    ];
    for (body, want, code_name) in bad {
        let (code, v, ct) = call("POST", &u("/v1/jobs"), Some(&acme), Some(body));
        assert_eq!(
            (code, v["code"].as_str()),
            (*want, Some(*code_name)),
            "{body}: {v}"
        );
        assert_eq!(ct, "application/problem+json", "{body}");
    }
    let (_, v, _) = call(
        "POST",
        &u("/v1/jobs"),
        Some(&acme),
        Some(r#"{"command":["x"],"gpus":-1}"#),
    );
    assert_eq!(v["field"], "gpus");
    let (_, v, _) = call(
        "POST",
        &u("/v1/jobs"),
        Some(&acme),
        Some(r#"{"command":["x"],"gpus":1,"gpu_models":["Z9"]}"#),
    );
    assert_eq!(v["field"], "gpu_models");
    assert!(v["detail"].as_str().unwrap().contains("A100-80G"), "{v}");
    // Bad registrations.
    for body in [
        json!({"name": "x", "cpu_milli": 0, "memory_mib": 1}),
        json!({"name": "x", "cpu_milli": 1000, "memory_mib": 1, "gpus": [{"index": 0, "model": "A"}, {"index": 1, "model": "B"}]}),
        json!({"name": "x", "cpu_milli": 1000, "memory_mib": 1, "gpus": [{"index": 3, "model": "A"}]}),
        json!({"name": "bad name", "cpu_milli": 1000, "memory_mib": 1}),
    ] {
        let (code, v, _) = call(
            "POST",
            &u("/v1/agents/register"),
            Some(&agent),
            Some(&body.to_string()),
        );
        assert_eq!(
            (code, v["code"].as_str()),
            (400, Some("invalid_field")),
            "{body}: {v}"
        );
    }
    // A credential made for a node that never registered: 404, not orders.
    let ghost = token_for(&s, &admin, json!({"scope": "agent", "node": "ghost"}));
    let (code, _, _) = call(
        "POST",
        &u("/v1/agents/ghost/heartbeat"),
        Some(&ghost),
        Some("{}"),
    );
    assert_eq!(code, 404);
    // An agent of another protocol version (or one too old to say) is
    // refused clearly, naming both versions; the token is checked first.
    let url = u("/v1/agents/register");
    let reg = json!({"name": "old", "cpu_milli": 1000, "memory_mib": 1}).to_string();
    for header in [None, Some("0"), Some("x")] {
        let mut r = ureq::post(&url)
            .set("Authorization", &format!("Bearer {agent}"))
            .set("Content-Type", "application/json");
        if let Some(h) = header {
            r = r.set(suanli_api::PROTOCOL_HEADER, h);
        }
        let resp = match r.send_string(&reg) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(resp.status(), 400);
        let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
        assert_eq!(v["code"], "protocol_mismatch", "{v}");
        let d = v["detail"].as_str().unwrap();
        assert!(
            d.contains(&format!("protocol {}", suanli_api::PROTOCOL)),
            "{d}"
        );
    }
    let (code, v, _) = call("POST", &url, Some(&acme), Some(&reg));
    assert_eq!((code, v["code"].as_str()), (403, Some("forbidden")));
    // A huge body: the server answers 413 from the declared length, without
    // reading the body (a raw request: a client still sending would see the
    // connection close under it).
    let resp = raw_post(&s.url, "/v1/jobs", &acme, 200_000);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.contains("body_too_large") && resp.contains("application/problem+json"),
        "{resp}"
    );
    assert_eq!(
        call("GET", &u("/v1/jobs?state=DONE"), Some(&acme), None).0,
        400
    );
    assert_eq!(call("GET", &u("/v1/nope"), Some(&acme), None).0, 404);
    let (code, v, ct) = call("GET", &u("/v1/jobs/abc"), Some(&acme), None);
    assert_eq!((code, v["code"].as_str()), (400, Some("bad_path")));
    assert_eq!(ct, "application/problem+json");
    let (code, _, _) = call(
        "GET",
        &u("/v1/jobs/99999999999999999999"),
        Some(&acme),
        None,
    );
    assert_eq!(code, 400);

    // Quotas: set by the admin only, validated, visible to the tenant itself.
    let q = r#"{"guaranteed": 8, "max": 16}"#;
    let (code, v, _) = call(
        "PUT",
        &u("/v1/tenants/acme/quotas/A100-80G"),
        Some(&admin),
        Some(q),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["quotas"][0],
        json!({"gpu_model": "A100-80G", "guaranteed": 8.0, "max": 16.0})
    );
    assert_eq!(
        call(
            "PUT",
            &u("/v1/tenants/acme/quotas/A100-80G"),
            Some(&acme),
            Some(q)
        )
        .0,
        403
    );
    let (code, v, _) = call(
        "PUT",
        &u("/v1/tenants/acme/quotas/H800"),
        Some(&admin),
        Some(r#"{"guaranteed": 8, "max": 4}"#),
    );
    assert_eq!((code, v["field"].as_str()), (400, Some("max")));
    let (code, v, _) = call(
        "PUT",
        &u("/v1/tenants/acme/quotas/H800"),
        Some(&admin),
        Some(r#"{"guaranteed": -1}"#),
    );
    assert_eq!((code, v["field"].as_str()), (400, Some("guaranteed")));
    assert_eq!(
        call(
            "PUT",
            &u("/v1/tenants/nobody/quotas/H800"),
            Some(&admin),
            Some(q)
        )
        .0,
        404
    );
    let (code, v, _) = call("GET", &u("/v1/tenants/acme"), Some(&acme), None);
    assert_eq!((code, v["quotas"][0]["max"].as_f64()), (200, Some(16.0)));
    let beta2 = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "beta"}));
    let (code, _, _) = call("GET", &u("/v1/tenants/acme"), Some(&beta2), None);
    assert_eq!(code, 404, "a tenant cannot read another's quotas");

    // Cancel, then it cannot be cancelled again.
    let (code, v, _) = call(
        "POST",
        &u(&format!("/v1/jobs/{id}/cancel")),
        Some(&acme),
        Some("{}"),
    );
    assert_eq!((code, v["state"].as_str()), (200, Some("CANCELLED")));
    let (code, v, _) = call(
        "POST",
        &u(&format!("/v1/jobs/{id}/cancel")),
        Some(&acme),
        Some("{}"),
    );
    assert_eq!((code, v["code"].as_str()), (409, Some("not_cancellable")));

    // Pagination (the node is drained so the jobs stay pending).
    let (code, v, _) = call("POST", &u("/v1/nodes/n1/drain"), Some(&admin), Some("{}"));
    assert_eq!(code, 200, "{v}");
    for i in 0..5 {
        let b = json!({"name": format!("j{i}"), "command": ["true"]});
        assert_eq!(
            call("POST", &u("/v1/jobs"), Some(&acme), Some(&b.to_string())).0,
            201
        );
    }
    let (_, p1, _) = call("GET", &u("/v1/jobs?limit=4"), Some(&acme), None);
    assert_eq!(p1["jobs"].as_array().unwrap().len(), 4);
    let c = p1["next_cursor"].as_i64().unwrap();
    let (_, p2, _) = call(
        "GET",
        &u(&format!("/v1/jobs?limit=4&cursor={c}")),
        Some(&acme),
        None,
    );
    assert_eq!(p2["jobs"].as_array().unwrap().len(), 2);
    let (_, pend, _) = call("GET", &u("/v1/jobs?state=PENDING"), Some(&admin), None);
    assert_eq!(pend["jobs"].as_array().unwrap().len(), 5);

    // Restart: every job and event is still there; no new admin token.
    drop(s);
    let s = Server::start(&dir);
    let u = |p: &str| format!("{}{p}", s.url);
    let (_, l, _) = call("GET", &u("/v1/jobs"), Some(&acme), None);
    assert_eq!(l["jobs"].as_array().unwrap().len(), 6);
    let (_, ev, _) = call(
        "GET",
        &u(&format!("/v1/jobs/{id}/events")),
        Some(&acme),
        None,
    );
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["SUBMITTED", "STARTED", "CANCELLED"]);
    assert_eq!(std::fs::read_to_string(&admin_path).unwrap().trim(), admin);
    assert_eq!(
        call("GET", &u("/v1/jobs"), Some(&beta), None).0,
        401,
        "revocation is durable"
    );
}

#[test]
fn the_cli_drives_the_server() {
    let dir = tmp("cli");
    let s = Server::start(&dir);
    let admin = std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let (code, _, err) = cli(&s.url, &admin, &["tenant", "create", "acme"]);
    assert_eq!(code, 0, "{err}");
    let agent = token_for(&s, &admin, json!({"scope": "agent"}));
    register(&s, &agent, "h1", 8, "H800", 64_000);
    let (code, out, err) = cli(&s.url, &admin, &["nodes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("h1") && out.contains("ready") && out.contains("0/8"),
        "{out}"
    );
    let (code, out, err) = cli(&s.url, &admin, &["nodes", "drain", "h1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("draining"), "{out}");
    let (code, _, err) = cli(
        &s.url,
        &admin,
        &[
            "tenant",
            "set-quota",
            "acme",
            "--model",
            "H800",
            "--guaranteed",
            "4",
            "--max",
            "8",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&s.url, &admin, &["tenant", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("H800 4/8"), "{out}");
    let (code, out, err) = cli(
        &s.url,
        &admin,
        &["token", "create", "--tenant", "acme", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let tok: Value = serde_json::from_str(&out).unwrap();
    let acme = tok["token"].as_str().unwrap().to_string();
    let (code, out, err) = cli(
        &s.url,
        &acme,
        &[
            "submit",
            "--gpus",
            "2",
            "--tasks",
            "2",
            "--cpu",
            "4",
            "--mem",
            "16G",
            "--class",
            "spot",
            "--gpu-model",
            "H800",
            "--name",
            "train",
            "--env",
            "LR=0.1",
            "--time",
            "90m",
            "--retries",
            "2",
            "--workdir",
            "/data/run1",
            "--json",
            "--",
            "python",
            "train.py",
            "--lr",
            "0.1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let j: Value = serde_json::from_str(&out).unwrap();
    let id = j["id"].as_i64().unwrap().to_string();
    assert_eq!(
        (j["memory_mib"].as_i64(), j["cpu_milli"].as_i64()),
        (Some(16_384), Some(4_000))
    );
    assert_eq!(j["command"], json!(["python", "train.py", "--lr", "0.1"]));
    assert_eq!(
        (&j["env"], &j["max_runtime_s"], &j["retries"], &j["workdir"]),
        (
            &json!({"LR": "0.1"}),
            &json!(5400),
            &json!(2),
            &json!("/data/run1")
        )
    );
    let (code, _, err) = cli(&s.url, &acme, &["submit", "--time", "soon", "--", "x"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&s.url, &acme, &["submit", "--env", "NOEQUALS", "--", "x"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = cli(&s.url, &acme, &["job", "show", &id, "--json"]);
    assert_eq!(code, 0);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["state"], "PENDING");
    assert_eq!(j["events"][0]["kind"], "SUBMITTED");
    let (code, out, _) = cli(&s.url, &acme, &["queue"]);
    assert_eq!(code, 0);
    assert!(out.contains("train") && out.contains("PENDING"), "{out}");
    assert!(
        out.contains("nodes: no ready node can hold it (each task needs 2 GPUs (H800)"),
        "the node is draining: {out}"
    );
    let (code, out, err) = cli(&s.url, &admin, &["nodes", "undrain", "h1"]);
    assert_eq!((code, out.contains("ready")), (0, true), "{err}");
    let (code, out, _) = cli(&s.url, &acme, &["queue"]);
    assert_eq!(code, 0);
    assert!(out.contains("RUNNING"), "{out}");
    let (code, out, _) = cli(&s.url, &acme, &["job", "show", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("task 1 on h1") && out.contains("STARTED"),
        "{out}"
    );
    let (code, out, _) = cli(&s.url, &acme, &["cancel", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("CANCELLED"), "{out}");
    // Refused by the server: exit 3 with its detail; bad flags: exit 2;
    // unreachable server: exit 1.
    let (code, _, err) = cli(&s.url, &acme, &["cancel", "999"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = cli(&s.url, &acme, &["tenant", "list"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = cli(&s.url, &acme, &["submit", "--mem", "lots", "--", "x"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(&s.url, &acme, &["submit", "--gpus", "99", "--", "x"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("field gpus"), "{err}");
    let (code, _, err) = cli("http://127.0.0.1:1", &acme, &["queue"]);
    assert_eq!(code, 1, "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["queue"])
        .env_remove("SUANLI_SERVER")
        .env_remove("SUANLI_TOKEN")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn openapi_documents_every_route_and_every_documented_route_exists() {
    let dir = tmp("openapi");
    let s = Server::start(&dir);
    let (code, doc, _) = call("GET", &s.u("/openapi.json"), None, None);
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/metrics",
        "/v1/tenants",
        "/v1/tenants/{name}",
        "/v1/tenants/{name}/quotas/{model}",
        "/v1/tokens",
        "/v1/tokens/{id}/revoke",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/events",
        "/v1/nodes",
        "/v1/nodes/{name}/drain",
        "/v1/nodes/{name}/undrain",
        "/v1/agents/register",
        "/v1/agents/{name}/heartbeat",
        "/v1/agents/{name}/tasks/status",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // Every documented operation is routed: without a token it is refused
    // (401) or served, never "no such route" (404) or "wrong method" (405).
    for (p, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            let path = p
                .replace("{id}", "1")
                .replace("{name}", "x")
                .replace("{model}", "m");
            let body = (m != "get").then_some("{}");
            let (code, v, _) = call(&m.to_uppercase(), &s.u(&path), None, body);
            assert!([200, 401].contains(&code), "{m} {p}: {code} {v}");
        }
    }
    // Request bodies and problem documents are described.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for k in [
        "JobSubmit",
        "Job",
        "Problem",
        "NodeRegistration",
        "Orders",
        "Report",
        "TaskExit",
        "JobState",
        "LogPushed",
        "Bills",
        "EconomicsReport",
    ] {
        assert!(schemas.contains_key(k), "schema {k} missing");
    }
    // Errors are problem documents, and say so.
    let errors = &doc["paths"]["/v1/jobs"]["post"]["responses"];
    for code in ["400", "401", "403", "413", "415", "422", "503"] {
        assert_eq!(
            errors[code]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{code}"
        );
    }
    // The wire's spellings, exactly.
    assert_eq!(schemas["JobState"]["enum"][0], "PENDING");
    assert_eq!(schemas["Class"]["enum"][1], "on-demand");
}

/// Nobody can lock the pool's admins out: the last live admin token cannot
/// be revoked (409), and `suanli server --reset-admin` on the server
/// machine issues a new one that the running server accepts at once.
#[test]
fn the_last_admin_cannot_be_revoked_and_reset_admin_recovers() {
    let dir = tmp("lockout");
    let s = Server::start(&dir);
    let admin = Server::admin(&dir);
    let u = |p: &str| format!("{}{p}", s.url);
    let admin_ids = |token: &str| -> Vec<i64> {
        let (code, v, _) = call("GET", &u("/v1/tokens"), Some(token), None);
        assert_eq!(code, 200, "{v}");
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["scope"] == "admin" && t["revoked"] == false)
            .map(|t| t["id"].as_i64().unwrap())
            .collect()
    };
    let revoke = |token: &str, id: i64| {
        call(
            "POST",
            &u(&format!("/v1/tokens/{id}/revoke")),
            Some(token),
            Some("{}"),
        )
    };
    let first = admin_ids(&admin);
    assert_eq!(first.len(), 1);
    let (code, v, _) = revoke(&admin, first[0]);
    assert_eq!((code, v["code"].as_str()), (409, Some("refused")), "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("last live admin"),
        "{v}"
    );
    // With a second admin, the first can go; then the second is the last.
    let second = token_for(&s, &admin, json!({"scope": "admin"}));
    assert_eq!(revoke(&second, first[0]).0, 204);
    assert_eq!(call("GET", &u("/v1/tokens"), Some(&admin), None).0, 401);
    let ids = admin_ids(&second);
    assert_eq!(ids.len(), 1);
    assert_eq!(revoke(&second, ids[0]).0, 409);
    // Lost anyway (say the file was deleted): reset on the server machine.
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["server", "--reset-admin", "--data-dir"])
        .arg(&*dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fresh = Server::admin(&dir);
    assert_ne!(fresh, admin);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(admin_ids(&fresh).len(), 2, "the running server accepts it");
    let (_, log, _) = call("GET", &u("/v1/audit"), Some(&fresh), None);
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["actor"].as_str(), last["action"].as_str()),
        (Some("server machine"), Some("admin.reset")),
        "{log}"
    );
    // A wrong data directory is an error, not a new empty store.
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["server", "--reset-admin", "--data-dir"])
        .arg(dir.join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no store here"));
    assert!(!dir.join("nowhere").exists());
}

/// Store contention never stops the server (issue 16: node drains beside
/// admin writes once made the loop's commit fail with SQLite's 517,
/// "database is locked", and the server exit). The loop's writer takes the
/// write lock up front (BEGIN IMMEDIATE) and both connections wait for it.
/// 1,000 drains and undrains with heartbeats, while another client creates
/// 500 tenants and 500 tokens and a third submits 300 jobs: every call
/// succeeds and the server is alive at the end.
#[test]
fn store_contention_never_stops_the_server() {
    let dir = tmp("contention");
    let s = std::sync::Arc::new(Server::start(&dir));
    let admin = Server::admin(&dir);
    let agent = token_for(&s, &admin, json!({"scope": "agent"}));
    let (code, v, _) = call(
        "POST",
        &s.u("/v1/tenants"),
        Some(&admin),
        Some(r#"{"name":"load"}"#),
    );
    assert_eq!(code, 201, "{v}");
    let tenant = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "load"}));
    for n in 0..4 {
        register(&s, &agent, &format!("c{n}"), 8, "A100-80G", 64_000);
    }
    let drains = {
        let (s, admin, agent) = (s.clone(), admin.clone(), agent.clone());
        std::thread::spawn(move || {
            for i in 0..1000 {
                let node = format!("c{}", i % 4);
                let verb = if (i / 4) % 2 == 0 { "drain" } else { "undrain" };
                let (code, v, _) = call(
                    "POST",
                    &s.u(&format!("/v1/nodes/{node}/{verb}")),
                    Some(&admin),
                    Some("{}"),
                );
                assert_eq!(code, 200, "{verb} {node} (round {i}): {v}");
                heartbeat(&s, &agent, &node, &[], &[]);
            }
        })
    };
    let admin_writes = {
        let (s, admin) = (s.clone(), admin.clone());
        std::thread::spawn(move || {
            for i in 0..500 {
                let body = json!({"name": format!("t{i}")}).to_string();
                let (code, v, _) = call("POST", &s.u("/v1/tenants"), Some(&admin), Some(&body));
                assert_eq!(code, 201, "tenant {i}: {v}");
                token_for(
                    &s,
                    &admin,
                    json!({"scope": "tenant", "tenant": format!("t{i}")}),
                );
            }
        })
    };
    let submits = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                let body =
                    json!({"name": format!("j{i}"), "command": ["true"], "gpus": 1}).to_string();
                let (code, v, _) = call("POST", &s.u("/v1/jobs"), Some(&tenant), Some(&body));
                assert_eq!(code, 201, "job {i}: {v}");
            }
        })
    };
    drains.join().expect("drains");
    admin_writes.join().expect("admin writes");
    submits.join().expect("submissions");
    assert_eq!(call("GET", &s.u("/healthz"), None, None).0, 200);
    let (code, v, _) = call("GET", &s.u("/v1/jobs?limit=1000"), Some(&admin), None);
    assert_eq!(code, 200, "{v}");
}

/// Node-bound agents (issue 14): a join token only registers, and only a
/// node without a live credential; a node's credential speaks for that
/// node alone. Another node's agent cannot end, read or write anything of
/// this node's, and a stranger with the join token cannot take it over.
#[test]
fn an_agent_speaks_for_its_own_node_only() {
    let dir = tmp("nodebound");
    let s = Server::start(&dir);
    let admin = std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let u = |p: &str| format!("{}{p}", s.url);
    call(
        "POST",
        &u("/v1/tenants"),
        Some(&admin),
        Some(r#"{"name":"acme"}"#),
    );
    let acme = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "acme"}));
    let join = token_for(&s, &admin, json!({"scope": "agent"}));
    register(&s, &join, "n1", 1, "A100-80G", 8_000);
    register(&s, &join, "n2", 1, "A100-80G", 8_000);
    let n1 = credential(&join, "n1").expect("a credential for n1");
    let n2 = credential(&join, "n2").expect("a credential for n2");
    assert_ne!(n1, n2);
    assert_ne!(n1, join);
    // A victim's job with a secret, started on n1.
    let body = json!({"command": ["train"], "gpus": 1, "env": {"HF_TOKEN": "secret-of-acme"}});
    let id = submit(&s, &acme, body)["id"].as_i64().unwrap();
    let mut on = "";
    for (node, cred) in [("n1", &n1), ("n2", &n2)] {
        let (code, v, _) = call(
            "POST",
            &u(&format!("/v1/agents/{node}/heartbeat")),
            Some(cred),
            Some(r#"{"running":[],"exited":[]}"#),
        );
        assert_eq!(code, 200, "{v}");
        if !v["start"].as_array().unwrap().is_empty() {
            on = node;
        }
    }
    assert!(!on.is_empty(), "the job started somewhere");
    let (victim, attacker) = if on == "n1" {
        (("n1", &n1), ("n2", &n2))
    } else {
        (("n2", &n2), ("n1", &n1))
    };
    let (vnode, vcred) = victim;
    let (anode, acred) = attacker;
    let exit = json!({"running": [], "exited": [{"job": id, "run": 1, "task": 0, "exit_code": 0, "signal": null}]}).to_string();
    // The attacker's credential, on the victim's node: every call is 403,
    // and the answer never carries the victim's orders.
    for (path, body) in [
        (
            format!("/v1/agents/{vnode}/heartbeat"),
            r#"{"running":[],"exited":[]}"#.to_string(),
        ),
        (format!("/v1/agents/{vnode}/tasks/status"), exit.clone()),
    ] {
        let (code, v, _) = call("POST", &u(&path), Some(acred), Some(&body));
        assert_eq!(code, 403, "{path}: {v}");
        assert!(!v.to_string().contains("secret-of-acme"), "{v}");
    }
    let (code, v, _) = call(
        "POST",
        &u(&format!(
            "/v1/agents/{vnode}/logs?job={id}&run=1&task=0&stream=stdout&offset=0"
        )),
        Some(acred),
        Some("injected line"),
    );
    assert_eq!(code, 403, "{v}");
    // Registering the victim's name with the attacker's credential: 403.
    let reg = json!({"name": vnode, "cpu_milli": 1000, "memory_mib": 1024}).to_string();
    let (code, v, _) = call("POST", &u("/v1/agents/register"), Some(acred), Some(&reg));
    assert_eq!(code, 403, "{v}");
    // Reporting the victim's task as exited on its own node changes nothing.
    let (code, _, _) = call(
        "POST",
        &u(&format!("/v1/agents/{anode}/tasks/status")),
        Some(acred),
        Some(&exit),
    );
    assert_eq!(code, 200);
    assert_eq!(job(&s, &acme, id)["state"], "RUNNING");
    // The join token: no heartbeat, no status, no logs, and no takeover of
    // a node that has a live credential (409), whatever the inventory.
    for path in [
        format!("/v1/agents/{vnode}/heartbeat"),
        format!("/v1/agents/{vnode}/tasks/status"),
    ] {
        let (code, v, _) = call(
            "POST",
            &u(&path),
            Some(&join),
            Some(r#"{"running":[],"exited":[]}"#),
        );
        assert_eq!(code, 403, "{path}: {v}");
    }
    let takeover = json!({"name": vnode, "cpu_milli": 1000, "memory_mib": 1024,
        "credential_sha256": suanli_api::token::new_token().1})
    .to_string();
    let (code, v, _) = call(
        "POST",
        &u("/v1/agents/register"),
        Some(&join),
        Some(&takeover),
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (409, Some("node_claimed")),
        "{v}"
    );
    assert_eq!(job(&s, &acme, id)["state"], "RUNNING");
    // The victim's own agent still works, and re-registers with its credential.
    let (code, v, _) = call(
        "POST",
        &u(&format!("/v1/agents/{vnode}/tasks/status")),
        Some(vcred),
        Some(&exit),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(job(&s, &acme, id)["state"], "COMPLETED");
    let full = json!({"name": vnode, "cpu_milli": 8000, "memory_mib": 1 << 20,
        "gpus": [{"index": 0, "model": "A100-80G", "memory_mib": 81920}], "labels": {"rack": "r1"},
        "addr": "10.0.0.2"})
    .to_string();
    let (code, v, _) = call("POST", &u("/v1/agents/register"), Some(vcred), Some(&full));
    assert_eq!(code, 200, "{v}");
    // The admin sees one live credential per node and revokes one: it is
    // refused at once (401), and the join token may then claim the name.
    let (_, list, _) = call("GET", &u("/v1/tokens"), Some(&admin), None);
    let creds: Vec<&Value> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["node"] == vnode && t["revoked"] == false)
        .collect();
    assert_eq!(creds.len(), 1, "{list}");
    let cid = creds[0]["id"].as_i64().unwrap();
    assert_eq!(
        call(
            "POST",
            &u(&format!("/v1/tokens/{cid}/revoke")),
            Some(&admin),
            None
        )
        .0,
        204
    );
    let (code, _, _) = call(
        "POST",
        &u(&format!("/v1/agents/{vnode}/heartbeat")),
        Some(vcred),
        Some("{}"),
    );
    assert_eq!(code, 401);
    // The join token claims the name again, with a new credential's hash;
    // the same claim twice (an answer lost on the way) is one claim; a
    // claim without a hash, or with another, is refused.
    let mut claim: Value = serde_json::from_str(&full).unwrap();
    let (code, v, _) = call(
        "POST",
        &u("/v1/agents/register"),
        Some(&join),
        Some(&claim.to_string()),
    );
    assert_eq!(
        (code, v["field"].as_str()),
        (400, Some("credential_sha256")),
        "{v}"
    );
    let (fresh, hash) = suanli_api::token::new_token();
    claim["credential_sha256"] = json!(hash);
    for _ in 0..2 {
        let (code, v, _) = call(
            "POST",
            &u("/v1/agents/register"),
            Some(&join),
            Some(&claim.to_string()),
        );
        assert_eq!(code, 200, "{v}");
    }
    claim["credential_sha256"] = json!(suanli_api::token::new_token().1);
    let (code, v, _) = call(
        "POST",
        &u("/v1/agents/register"),
        Some(&join),
        Some(&claim.to_string()),
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (409, Some("node_claimed")),
        "{v}"
    );
    let (code, v, _) = call(
        "POST",
        &u(&format!("/v1/agents/{vnode}/heartbeat")),
        Some(&fresh),
        Some(r#"{"running":[],"exited":[]}"#),
    );
    assert_eq!(code, 200, "{v}");
    // An admin-made credential for a node that has one is refused too.
    let (code, v, _) = call(
        "POST",
        &u("/v1/tokens"),
        Some(&admin),
        Some(&json!({"scope": "agent", "node": anode}).to_string()),
    );
    assert_eq!(code, 409, "{v}");
    // Every admin action and node claim is in the audit log, with its
    // actor; only the admin reads it.
    call(
        "POST",
        &u(&format!("/v1/nodes/{anode}/drain")),
        Some(&admin),
        Some("{}"),
    );
    assert_eq!(call("GET", &u("/v1/audit"), Some(&acme), None).0, 403);
    let (code, log, _) = call("GET", &u("/v1/audit"), Some(&admin), None);
    assert_eq!(code, 200, "{log}");
    let entries: Vec<(String, String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |action: &str, target: &str| {
        entries
            .iter()
            .any(|e| e.1 == action && e.2.contains(target) && e.0.starts_with("token "))
    };
    assert!(has("tenant.create", "tenant acme"), "{entries:?}");
    assert!(has("token.create", "(agent join)"), "{entries:?}");
    assert!(
        has("node.claim", "node n1") && has("node.claim", "node n2"),
        "{entries:?}"
    );
    assert!(has("token.revoke", &format!("token {cid}")), "{entries:?}");
    assert!(has("node.drain", &format!("node {anode}")), "{entries:?}");
    let (code, out, err) = cli(&s.url, &admin, &["audit"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("node.claim") && out.contains("token.revoke"),
        "{out}"
    );
    // A read past 2^63 - 1 is bad input (it was a 503 from the seek).
    let (code, v, _) = call(
        "GET",
        &u(&format!("/v1/jobs/{id}/logs?offset=9223372036854775808")),
        Some(&acme),
        None,
    );
    assert_eq!((code, v["field"].as_str()), (400, Some("offset")), "{v}");
    // Tenants and the admin cannot use agent endpoints at all.
    for t in [&acme, &admin] {
        let (code, _, _) = call(
            "POST",
            &u(&format!("/v1/agents/{vnode}/heartbeat")),
            Some(t),
            Some("{}"),
        );
        assert_eq!(code, 403);
    }
    // Removing the attacker's node (drained above, no task) revokes its
    // credential; only the admin may (a node with live tasks is refused:
    // control_loop.rs).
    let path = u(&format!("/v1/nodes/{anode}"));
    assert_eq!(call("DELETE", &path, Some(&acme), None).0, 403);
    let (code, out, err) = cli(&s.url, &admin, &["nodes", "remove", anode]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(call("DELETE", &path, Some(&admin), None).0, 404);
    let (code, _, _) = call(
        "POST",
        &u(&format!("/v1/agents/{anode}/heartbeat")),
        Some(acred),
        Some(r#"{"running":[],"exited":[]}"#),
    );
    assert_eq!(code, 401, "the removed node's credential is revoked");
    let (_, log, _) = call("GET", &u("/v1/audit"), Some(&admin), None);
    let last = log["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["target"].as_str()),
        (Some("node.remove"), Some(format!("node {anode}").as_str())),
        "{log}"
    );
}

/// TLS (issue 14, item 5): the server serves HTTPS with the given
/// certificate; the CLI and the agent trust it through `--ca` and refuse it
/// without; plain HTTP is refused on a non-loopback address unless asked.
#[test]
fn https_with_a_private_ca_and_no_plain_http_off_loopback() {
    let dir = tmp("tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let s = Server::start_with(
        &dir,
        &[
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let https = s.url.replacen("http://", "https://", 1);
    let admin = Server::admin(&dir);
    let run = |args: &[&str], ca: Option<&std::path::Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_suanli"));
        c.args(args)
            .env("SUANLI_SERVER", &https)
            .env("SUANLI_TOKEN", &admin)
            .env("HOME", "/nonexistent");
        if let Some(ca) = ca {
            c.env("SUANLI_CA", ca);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // Trusted through the CA file: the admin's calls work.
    let (code, out, err) = run(&["tenant", "create", "acme"], Some(&cert_pem));
    assert_eq!(code, Some(0), "{out}{err}");
    // Without it, the certificate is not trusted: no call goes through.
    let (code, _, err) = run(&["nodes"], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    assert!(ureq::get(&s.u("/healthz")).call().is_err());
    // An agent over HTTPS, trusting the CA.
    let (_, join, _) = run(&["token", "create", "--agent"], Some(&cert_pem));
    let join_file = dir.join("join");
    std::fs::write(&join_file, join.trim()).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["agent", "--server", &https, "--join-token-file"])
        .arg(&join_file)
        .args([
            "--name",
            "tls1",
            "--gpus",
            "fake:1xA100-80G",
            "--sandbox",
            "off",
            "--ca",
        ])
        .arg(&cert_pem)
        .arg("--work-dir")
        .arg(dir.join("agent"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    loop {
        let (_, out, _) = run(&["nodes"], Some(&cert_pem));
        if out.contains("tls1") && out.contains("ready") {
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    // Plain HTTP off loopback is refused, with what to do; allowed when asked.
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.join("open"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-http"),
        "{err}"
    );
    let mut open = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args([
            "server",
            "--listen",
            "0.0.0.0:0",
            "--insecure-http",
            "--data-dir",
        ])
        .arg(dir.join("open"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(open.stderr.take().unwrap()));
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .expect("listening");
    // Keep reading its stderr, so that it never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    let port = addr.rsplit(':').next().unwrap().to_string();
    assert_eq!(
        call(
            "GET",
            &format!("http://127.0.0.1:{port}/healthz"),
            None,
            None
        )
        .0,
        200
    );
    let _ = open.kill();
    let _ = open.wait();
}

/// SQLite serves one server: a second one on the same store stops at once,
/// saying why, and the lock goes with the first server however it ends.
#[test]
fn a_second_server_on_one_sqlite_store_is_refused() {
    let dir = tmp("one-server");
    let mut first = Server::start(&dir);
    let second = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&*dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another suanli server runs on") && err.contains("--store postgres://"),
        "{err}"
    );
    // SIGKILL: the kernel drops the lock with the process.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let again = Server::start(&dir);
    let (code, _, _) = call("GET", &again.u("/healthz"), None, None);
    assert_eq!(code, 200);
}

/// A submission named by an idempotency key is made once: its repeat (a
/// client retrying) gets the same job back, 200 and marked replayed, also
/// after a restart; keys are per tenant; a malformed key is refused.
#[test]
fn an_idempotency_key_makes_a_job_once() {
    let dir = tmp("idempotency");
    let s = Server::start(&dir);
    let admin = Server::admin(&dir);
    for t in ["acme", "beta"] {
        let (code, _, _) = call(
            "POST",
            &s.u("/v1/tenants"),
            Some(&admin),
            Some(&json!({ "name": t }).to_string()),
        );
        assert_eq!(code, 201);
    }
    let acme = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "acme"}));
    let beta = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "beta"}));
    let body = json!({"command": ["true"]}).to_string();
    let post = |s: &Server, tok: &str, key: &str| {
        let r = ureq::post(&s.u("/v1/jobs"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set("Idempotency-Key", key)
            .set("Content-Type", "application/json")
            .send_string(&body);
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let replayed = r.header("idempotent-replayed").map(str::to_string);
        let code = r.status();
        let v: Value = r.into_json().unwrap();
        (code, v, replayed)
    };
    let (code, first, replayed) = post(&s, &acme, "run-42");
    assert_eq!((code, replayed), (201, None), "{first}");
    let (code, again, replayed) = post(&s, &acme, "run-42");
    assert_eq!((code, replayed.as_deref()), (200, Some("true")), "{again}");
    assert_eq!(again["id"], first["id"]);
    // The same key for another request: 422, nothing made.
    let other = ureq::post(&s.u("/v1/jobs"))
        .set("Authorization", &format!("Bearer {acme}"))
        .set("Idempotency-Key", "run-42")
        .set("Content-Type", "application/json")
        .send_string(&json!({"command": ["false"]}).to_string());
    match other {
        Err(ureq::Error::Status(422, r)) => {
            let v: Value = r.into_json().unwrap();
            assert_eq!(v["code"], "idempotency_key_reused", "{v}");
        }
        r => panic!("expected 422: {r:?}"),
    }
    // Another tenant's same key makes its own job.
    let (code, theirs, _) = post(&s, &beta, "run-42");
    assert_eq!(code, 201);
    assert_ne!(theirs["id"], first["id"]);
    // Malformed keys are refused, naming the header.
    for bad in ["", &"x".repeat(256), "a b"] {
        let (code, v, _) = post(&s, &acme, bad);
        assert_eq!(code, 400, "{bad:?}: {v}");
        assert_eq!(v["field"], "Idempotency-Key", "{v}");
    }
    // After a restart the key still names the first job.
    drop(s);
    let s = Server::start(&dir);
    let (code, again, _) = post(&s, &acme, "run-42");
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (_, page, _) = call("GET", &s.u("/v1/jobs"), Some(&acme), None);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "{page}");
}

/// Logs a server kept in files before they moved into the store are still
/// served; once the store has bytes of a stream, they are what is read.
#[test]
fn logs_kept_in_files_by_an_older_server_are_still_read() {
    let dir = tmp("legacy-logs");
    let s = Server::start(&dir);
    let admin = Server::admin(&dir);
    let (code, _, err) = cli(&s.url, &admin, &["tenant", "create", "acme"]);
    assert_eq!(code, 0, "{err}");
    let acme = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "acme"}));
    let v = submit(&s, &acme, json!({"name": "old", "command": ["true"]}));
    let id = v["id"].as_i64().unwrap();
    let old = dir.join("logs").join(id.to_string()).join("0");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("0.out"), b"from before the upgrade\n").unwrap();
    let read = |q: &str| {
        let r = ureq::get(&format!("{}/v1/jobs/{id}/logs?{q}", s.url))
            .set("Authorization", &format!("Bearer {acme}"))
            .call()
            .unwrap();
        r.into_string().unwrap()
    };
    assert_eq!(read("run=0"), "from before the upgrade\n");
    assert_eq!(read("run=0&offset=5"), "before the upgrade\n");
    assert_eq!(read("run=0&stream=err"), "");
    // Another tenant sees none of it.
    let (code, _, err) = cli(&s.url, &admin, &["tenant", "create", "beta"]);
    assert_eq!(code, 0, "{err}");
    let beta = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "beta"}));
    let (code, _, _) = call(
        "GET",
        &format!("{}/v1/jobs/{id}/logs?run=0", s.url),
        Some(&beta),
        None,
    );
    assert_eq!(code, 404);
}
