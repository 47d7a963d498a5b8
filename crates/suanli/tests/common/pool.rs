//! A server with two tenants (acme, beta), an agent token and acme's
//! token: the fixture of the loop and billing tests.

use serde_json::json;

use super::*;

pub struct Pool {
    pub s: Server,
    pub admin: String,
    pub agent: String,
    pub acme: String,
    /// Last, so that it is removed after the server stops.
    pub dir: TmpDir,
}

pub fn pool(name: &str, flags: &[&str]) -> Pool {
    pool_configured(name, None, flags)
}

/// [`pool`] with a server config file of this text.
pub fn pool_configured(name: &str, config: Option<&str>, flags: &[&str]) -> Pool {
    let dir = tmp(name);
    let conf = dir.join("server.toml");
    let mut flags: Vec<&str> = flags.to_vec();
    if let Some(text) = config {
        std::fs::write(&conf, text).unwrap();
        flags.extend(["--config", conf.to_str().unwrap()]);
    }
    let s = Server::start_with(&dir, &flags);
    let admin = Server::admin(&dir);
    for t in ["acme", "beta"] {
        let (code, v, _) = call(
            "POST",
            &s.u("/v1/tenants"),
            Some(&admin),
            Some(&json!({"name": t}).to_string()),
        );
        assert_eq!(code, 201, "{v}");
    }
    let agent = token_for(&s, &admin, json!({"scope": "agent"}));
    let acme = token_for(&s, &admin, json!({"scope": "tenant", "tenant": "acme"}));
    Pool {
        dir,
        s,
        admin,
        agent,
        acme,
    }
}

pub fn events(p: &Pool, id: i64) -> Vec<String> {
    let (_, v, _) = call(
        "GET",
        &p.s.u(&format!("/v1/jobs/{id}/events")),
        Some(&p.admin),
        None,
    );
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

pub fn state(p: &Pool, id: i64) -> String {
    job(&p.s, &p.admin, id)["state"]
        .as_str()
        .unwrap()
        .to_string()
}
