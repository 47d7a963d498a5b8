//! The OpenAPI document tells the truth: every response of a session that
//! calls every operation (as a tenant, an admin and an agent; valid calls
//! and the usual mistakes) has a documented status, a documented media type
//! and, for JSON, a body that validates against the documented schema
//! (`jsonschema`, JSON Schema 2020-12, which OpenAPI 3.1 uses). The fuzzer
//! (`scripts/fuzz-api --strict`) checks the same with generated requests.

mod common;

use std::collections::BTreeMap;

use common::pool::*;
use common::*;
use serde_json::{json, Value};

/// The served document and what the session met.
struct Checker {
    doc: Value,
    url: String,
    /// (method, template) → statuses seen.
    seen: BTreeMap<(String, String), Vec<u16>>,
    failures: Vec<String>,
}

impl Checker {
    fn new(url: &str) -> Checker {
        let doc: Value = ureq::get(&format!("{url}/openapi.json"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        Checker {
            doc,
            url: url.to_string(),
            seen: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Send a request to `path` (which fills in `template`) and check the
    /// response against the document; returns the status and the body.
    fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        self.call_with(method, template, path, token, &[], body)
    }

    fn call_with(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Value) {
        // As every test client calls (the agent protocol header on agent
        // paths); the body as JSON (Null when it is not).
        let (status, body, ct) =
            call_with(method, &format!("{}{path}", self.url), token, headers, body);
        let what = format!("{method} {path} -> {status}");
        self.seen
            .entry((method.to_string(), template.to_string()))
            .or_default()
            .push(status);
        let op = &self.doc["paths"][template][method.to_lowercase()];
        if op.is_null() {
            self.failures
                .push(format!("{what}: {method} {template} is not documented"));
            return (status, Value::Null);
        }
        let Some(resp_doc) = op["responses"].get(status.to_string()) else {
            self.failures.push(format!(
                "{what}: status {status} is not documented ({body})"
            ));
            return (status, body);
        };
        let content = &resp_doc["content"];
        let Some(media) = content.as_object().filter(|c| !c.is_empty()) else {
            return (status, body);
        };
        let Some(schema) = media.get(&ct).map(|m| &m["schema"]) else {
            self.failures.push(format!(
                "{what}: content type {ct:?} is not documented (documented: {:?})",
                media.keys().collect::<Vec<_>>()
            ));
            return (status, body);
        };
        if ct.ends_with("json") && !schema.is_null() {
            let mut root = schema.clone();
            if let Some(o) = root.as_object_mut() {
                o.insert("components".to_string(), self.doc["components"].clone());
            } else {
                root = json!({"allOf": [schema], "components": self.doc["components"]});
            }
            match jsonschema::validator_for(&root) {
                Ok(v) => {
                    for e in v.iter_errors(&body) {
                        self.failures.push(format!(
                            "{what}: body does not match the schema at {}: {e}",
                            e.instance_path()
                        ));
                    }
                }
                Err(e) => self
                    .failures
                    .push(format!("{what}: the documented schema is invalid: {e}")),
            }
        }
        (status, body)
    }
}

#[test]
fn every_response_matches_the_openapi_document() {
    let p = pool("openapi", &[]);
    let mut c = Checker::new(&p.s.url);
    let (admin, acme) = (p.admin.clone(), p.acme.clone());
    let (a, t) = (Some(admin.as_str()), Some(acme.as_str()));
    // Meta.
    c.call("GET", "/healthz", "/healthz", None, None);
    c.call("GET", "/readyz", "/readyz", None, None);
    c.call("GET", "/metrics", "/metrics", a, None);
    c.call("GET", "/metrics", "/metrics", t, None);
    c.call("GET", "/metrics", "/metrics", None, None);
    // Tenants and quotas.
    c.call("GET", "/v1/tenants", "/v1/tenants", a, None);
    c.call("GET", "/v1/tenants", "/v1/tenants", t, None);
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        a,
        Some(r#"{"name":"gamma","weight":2}"#),
    );
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        a,
        Some(r#"{"name":"gamma"}"#),
    );
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        a,
        Some(r#"{"name":"bad name"}"#),
    );
    c.call("POST", "/v1/tenants", "/v1/tenants", a, Some("{"));
    c.call("GET", "/v1/tenants/{name}", "/v1/tenants/acme", a, None);
    c.call("GET", "/v1/tenants/{name}", "/v1/tenants/acme", t, None);
    c.call("GET", "/v1/tenants/{name}", "/v1/tenants/nobody", a, None);
    let q = "/v1/tenants/{name}/quotas/{model}";
    c.call(
        "PUT",
        q,
        "/v1/tenants/acme/quotas/H200",
        a,
        Some(r#"{"guaranteed":4,"max":16}"#),
    );
    c.call(
        "PUT",
        q,
        "/v1/tenants/acme/quotas/H200",
        a,
        Some(r#"{"guaranteed":4,"max":1}"#),
    );
    c.call(
        "PUT",
        q,
        "/v1/tenants/nobody/quotas/H200",
        a,
        Some(r#"{"guaranteed":1}"#),
    );
    c.call(
        "PUT",
        q,
        "/v1/tenants/acme/quotas/H200",
        t,
        Some(r#"{"guaranteed":1}"#),
    );
    // Tokens and the audit log.
    c.call("GET", "/v1/tokens", "/v1/tokens", a, None);
    c.call("GET", "/v1/tokens", "/v1/tokens", t, None);
    let (_, tok) = c.call(
        "POST",
        "/v1/tokens",
        "/v1/tokens",
        a,
        Some(r#"{"scope":"tenant","tenant":"gamma","name":"ci"}"#),
    );
    c.call(
        "POST",
        "/v1/tokens",
        "/v1/tokens",
        a,
        Some(r#"{"scope":"root"}"#),
    );
    let rv = "/v1/tokens/{id}/revoke";
    let id = tok["id"].as_i64().unwrap();
    c.call(
        "POST",
        rv,
        &format!("/v1/tokens/{id}/revoke"),
        a,
        Some("{}"),
    );
    c.call("POST", rv, "/v1/tokens/999999/revoke", a, Some("{}"));
    c.call("POST", rv, "/v1/tokens/x/revoke", a, Some("{}"));
    c.call("GET", "/v1/audit", "/v1/audit?after=0&limit=10", a, None);
    c.call("GET", "/v1/audit", "/v1/audit?limit=0", a, None);
    c.call("GET", "/v1/audit", "/v1/audit", t, None);
    // A node, through the agent protocol.
    register(&p.s, &p.agent, "n1", 8, "H200", 64_000);
    let node = credential(&p.agent, "n1").unwrap();
    let n = Some(node.as_str());
    let reg = json!({"name": "n2", "cpu_milli": 1000, "memory_mib": 1024, "gpus": []}).to_string();
    c.call(
        "POST",
        "/v1/agents/register",
        "/v1/agents/register",
        n,
        Some(&reg),
    );
    c.call(
        "POST",
        "/v1/agents/register",
        "/v1/agents/register",
        t,
        Some(&reg),
    );
    c.call(
        "POST",
        "/v1/agents/register",
        "/v1/agents/register",
        Some(p.agent.as_str()),
        Some(&reg),
    );
    // Jobs.
    let (_, j) = c.call(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        t,
        Some(r#"{"command":["sleep","60"],"gpus":1,"env":{"A":"b"}}"#),
    );
    let id = j["id"].as_i64().unwrap();
    c.call(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        t,
        Some(r#"{"command":["x"],"gpus":8,"tasks":2}"#),
    );
    c.call(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        t,
        Some(r#"{"command":["x"],"gpus":8,"class":"spot"}"#),
    );
    c.call("POST", "/v1/jobs", "/v1/jobs", t, Some(r#"{"command":[]}"#));
    c.call(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        t,
        Some(r#"{"command":"x"}"#),
    );
    c.call(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        None,
        Some(r#"{"command":["x"]}"#),
    );
    c.call(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        a,
        Some(r#"{"command":["x"]}"#),
    );
    let hb = "/v1/agents/{name}/heartbeat";
    let (_, orders) = c.call(
        "POST",
        hb,
        "/v1/agents/n1/heartbeat",
        n,
        Some(r#"{"running":[],"exited":[]}"#),
    );
    assert_eq!(
        orders["start"].as_array().map(Vec::len),
        Some(1),
        "{orders}"
    );
    let running = json!({"running": [{"job": id, "run": 1, "task": 0}], "exited": []}).to_string();
    c.call("POST", hb, "/v1/agents/n1/heartbeat", n, Some(&running));
    c.call("POST", hb, "/v1/agents/n2/heartbeat", n, Some(&running));
    c.call("POST", hb, "/v1/agents/n1/heartbeat", n, Some("{"));
    let st = "/v1/agents/{name}/tasks/status";
    c.call(
        "POST",
        st,
        "/v1/agents/n1/tasks/status",
        n,
        Some(r#"{"running":[],"exited":[]}"#),
    );
    let lg = "/v1/agents/{name}/logs";
    let push = format!("/v1/agents/n1/logs?job={id}&run=1&task=0&stream=out&offset=0");
    let mut r = ureq::post(&format!("{}{push}", p.s.url))
        .set("Authorization", &format!("Bearer {node}"))
        .set(
            suanli_api::PROTOCOL_HEADER,
            &suanli_api::PROTOCOL.to_string(),
        );
    r = r.set("Content-Type", "application/octet-stream");
    assert_eq!(r.send_bytes(b"hello\n").unwrap().status(), 200);
    c.call(
        "POST",
        lg,
        &format!("/v1/agents/n1/logs?job={id}&run=1&task=0&stream=out&offset=99"),
        n,
        Some("x"),
    );
    c.call(
        "POST",
        lg,
        &format!("/v1/agents/n1/logs?job={id}&run=1&task=0&stream=both&offset=0"),
        n,
        Some("x"),
    );
    let w = "/v1/agents/{name}/wait";
    c.call("GET", w, "/v1/agents/n1/wait?seen=0&timeout_ms=1", n, None);
    c.call("GET", w, "/v1/agents/n1/wait?timeout_ms=0", n, None);
    // Only a node's own credential waits on its orders.
    let (code, _) = c.call("GET", w, "/v1/agents/n2/wait?timeout_ms=1", n, None);
    assert_eq!(code, 403, "another node's wait");
    let (code, _) = c.call("GET", w, "/v1/agents/n1/wait?timeout_ms=1", t, None);
    assert_eq!(code, 403, "a tenant's wait");
    c.call("GET", "/v1/jobs", "/v1/jobs", t, None);
    c.call(
        "GET",
        "/v1/jobs",
        "/v1/jobs?state=PENDING&limit=10",
        t,
        None,
    );
    c.call("GET", "/v1/jobs", "/v1/jobs?state=pending", t, None);
    c.call("GET", "/v1/jobs", "/v1/jobs?limit=0", t, None);
    c.call("GET", "/v1/jobs", "/v1/jobs?tenant=acme", a, None);
    c.call("GET", "/v1/jobs", "/v1/jobs?tenant=acme", t, None);
    c.call("GET", "/v1/jobs/{id}", &format!("/v1/jobs/{id}"), t, None);
    c.call("GET", "/v1/jobs/{id}", "/v1/jobs/424242", t, None);
    c.call("GET", "/v1/jobs/{id}", "/v1/jobs/x", t, None);
    c.call(
        "GET",
        "/v1/jobs/{id}/events",
        &format!("/v1/jobs/{id}/events"),
        t,
        None,
    );
    c.call(
        "GET",
        "/v1/jobs/{id}/logs",
        &format!("/v1/jobs/{id}/logs"),
        t,
        None,
    );
    c.call(
        "GET",
        "/v1/jobs/{id}/logs",
        &format!("/v1/jobs/{id}/logs?task=5"),
        t,
        None,
    );
    c.call(
        "GET",
        "/v1/jobs/{id}/logs",
        &format!("/v1/jobs/{id}/logs?stream=both"),
        t,
        None,
    );
    // Nodes and the pool.
    let (_, pool) = c.call("GET", "/v1/pool", "/v1/pool", t, None);
    assert_eq!(pool["your_running_jobs"], 1, "{pool}");
    assert_eq!(pool["models"][0]["model"], "H200", "{pool}");
    assert!(!pool.to_string().contains("n1"), "no node names: {pool}");
    c.call("GET", "/v1/pool", "/v1/pool", a, None);
    c.call("GET", "/v1/pool", "/v1/pool", n, None);
    c.call("GET", "/v1/nodes", "/v1/nodes", a, None);
    c.call("GET", "/v1/nodes", "/v1/nodes", t, None);
    c.call(
        "POST",
        "/v1/nodes/{name}/drain",
        "/v1/nodes/n1/drain",
        a,
        None,
    );
    c.call(
        "POST",
        "/v1/nodes/{name}/drain",
        "/v1/nodes/nobody/drain",
        a,
        None,
    );
    c.call(
        "POST",
        "/v1/nodes/{name}/undrain",
        "/v1/nodes/n1/undrain",
        a,
        None,
    );
    c.call("DELETE", "/v1/nodes/{name}", "/v1/nodes/n1", a, None);
    // Cancel, then bills and the economics report.
    // A submission named by an idempotency key, and its repeat (200).
    for _ in 0..2 {
        c.call_with(
            "POST",
            "/v1/jobs",
            "/v1/jobs",
            t,
            &[("Idempotency-Key", "openapi-1")],
            Some(r#"{"command":["true"]}"#),
        );
    }
    c.call_with(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        t,
        &[("Idempotency-Key", "openapi-1")],
        Some(r#"{"command":["false"]}"#),
    );
    c.call_with(
        "POST",
        "/v1/jobs",
        "/v1/jobs",
        t,
        &[("Idempotency-Key", "")],
        Some(r#"{"command":["true"]}"#),
    );
    let cancel = "/v1/jobs/{id}/cancel";
    c.call(
        "POST",
        cancel,
        &format!("/v1/jobs/{id}/cancel"),
        t,
        Some("{}"),
    );
    c.call(
        "POST",
        cancel,
        &format!("/v1/jobs/{id}/cancel"),
        t,
        Some("{}"),
    );
    c.call(
        "POST",
        hb,
        "/v1/agents/n1/heartbeat",
        n,
        Some(r#"{"running":[],"exited":[]}"#),
    );
    c.call("DELETE", "/v1/nodes/{name}", "/v1/nodes/n1", a, None);
    c.call("DELETE", "/v1/nodes/{name}", "/v1/nodes/n1", a, None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let month = suanli_billing::month_of(now);
    c.call(
        "GET",
        "/v1/bills",
        &format!("/v1/bills?period={month}"),
        t,
        None,
    );
    c.call(
        "GET",
        "/v1/bills",
        &format!("/v1/bills?period={month}&tenant=acme"),
        a,
        None,
    );
    c.call("GET", "/v1/bills", "/v1/bills?period=2026-13", t, None);
    c.call("GET", "/v1/bills", "/v1/bills", t, None);
    let eco = "/v1/reports/economics";
    c.call(
        "GET",
        eco,
        &format!("/v1/reports/economics?period={month}"),
        a,
        None,
    );
    c.call(
        "GET",
        eco,
        &format!("/v1/reports/economics?period={month}"),
        t,
        None,
    );
    // Model services.
    let svc = r#"{"name":"chat","model":"m1","command":["true"],"gpus":1}"#;
    c.call("POST", "/v1/services", "/v1/services", t, Some(svc));
    c.call("POST", "/v1/services", "/v1/services", t, Some(svc));
    let bad = r#"{"name":"x","model":"m2","command":["true"],"scaling":{"min":9,"max":2}}"#;
    c.call("POST", "/v1/services", "/v1/services", t, Some(bad));
    c.call("POST", "/v1/services", "/v1/services", a, Some(svc));
    c.call("GET", "/v1/services", "/v1/services", t, None);
    c.call("GET", "/v1/services", "/v1/services", a, None);
    let one = "/v1/services/{name}";
    c.call("GET", one, "/v1/services/chat", t, None);
    c.call("GET", one, "/v1/services/chat?tenant=acme", a, None);
    c.call("GET", one, "/v1/services/nope", t, None);
    c.call("PATCH", one, "/v1/services/chat", t, Some(r#"{"max":4}"#));
    c.call("PATCH", one, "/v1/services/chat", t, Some(r#"{"max":0}"#));
    c.call("DELETE", one, "/v1/services/chat", t, None);
    c.call("DELETE", one, "/v1/services/chat", t, None);
    let lim = "/v1/tenants/{name}/limits";
    c.call(
        "PUT",
        lim,
        "/v1/tenants/acme/limits",
        a,
        Some(r#"{"tokens_per_minute":1000}"#),
    );
    c.call("PUT", lim, "/v1/tenants/acme/limits", t, Some(r#"{}"#));
    c.call("GET", "/v1/token-usage", "/v1/token-usage", t, None);
    c.call(
        "GET",
        "/v1/token-usage",
        "/v1/token-usage?from_ms=5&to_ms=1",
        a,
        None,
    );
    // Every documented operation was called at least once.
    let mut missing = Vec::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let k = (method.to_uppercase(), path.clone());
            if !c.seen.contains_key(&k) {
                missing.push(format!("{} {path}", k.0));
            }
        }
    }
    assert!(missing.is_empty(), "operations never called: {missing:?}");
    assert!(
        c.failures.is_empty(),
        "{} response(s) disagree with /openapi.json:\n{}",
        c.failures.len(),
        c.failures.join("\n")
    );
}
