//! Who is calling: [`Caller`] (a bearer token → its scope), the guards each
//! resource uses ([`admin`], [`job_scope`]), and [`AgentCaller`], which also
//! checks the agent protocol version.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::Problem;
use super::state::AppState;
use crate::auth::hash_token;
use crate::store::Scope;

/// The caller, from `Authorization: Bearer <token>`: its scope and token id.
pub struct Caller(pub Scope, pub i64);

impl Caller {
    /// Who acted, for the audit log: `token 3 (admin)`.
    pub fn actor(&self) -> String {
        let scope = match &self.0 {
            Scope::Admin => "admin".to_string(),
            Scope::Tenant { name, .. } => format!("tenant {name}"),
            Scope::Join => "join".to_string(),
            Scope::Node { name } => format!("node {name}"),
            Scope::Router => "router".to_string(),
        };
        format!("token {} ({scope})", self.1)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Caller, Problem> {
        let unauth = |d: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", d);
        let h = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauth("missing Authorization: Bearer <token>"))?;
        let t = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauth("expected Authorization: Bearer <token>"))?;
        match st.store.scope_of(&hash_token(t.trim())).await? {
            Some((id, s)) => Ok(Caller(s, id)),
            None => Err(unauth("unknown or revoked token")),
        }
    }
}

/// An agent, speaking this server's protocol version: with a join token
/// (which may only register) or with a node's credential.
pub enum AgentCaller {
    /// With the join token's id.
    Join(i64),
    Node(String),
}

impl AgentCaller {
    /// The caller speaks for node `name` (403 otherwise): a node's agent
    /// never acts on, or learns about, another node.
    pub fn speaks_for(&self, name: &str) -> Result<(), Problem> {
        match self {
            AgentCaller::Node(n) if n == name => Ok(()),
            AgentCaller::Node(n) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this credential is node {n:?}'s; it cannot act for node {:?}",
                    name.chars().take(64).collect::<String>()
                ),
            )),
            AgentCaller::Join(_) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a join token can only register a node; the agent then speaks with its node's credential",
            )),
        }
    }
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<AgentCaller, Problem> {
        let c = Caller::from_request_parts(parts, st).await?;
        let who = match c.0 {
            Scope::Join => AgentCaller::Join(c.1),
            Scope::Node { name } => AgentCaller::Node(name),
            _ => return Err(Problem::forbidden()),
        };
        let theirs = parts
            .headers
            .get(suanli_api::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok());
        let ours = suanli_api::PROTOCOL;
        match theirs.map(|v| v.trim().parse::<u32>()) {
            Some(Ok(v)) if v == ours => Ok(who),
            found => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "protocol_mismatch",
                format!(
                    "this server speaks agent protocol {ours}; the agent sent {}: run an agent of the server's version",
                    match found {
                        None => format!("no {} header (an agent older than protocol 1)", suanli_api::PROTOCOL_HEADER),
                        Some(Ok(v)) => format!("protocol {v}"),
                        Some(Err(_)) => format!("an unreadable {} header", suanli_api::PROTOCOL_HEADER),
                    }
                ),
            )),
        }
    }
}

pub fn admin(c: &Caller) -> Result<(), Problem> {
    match c.0 {
        Scope::Admin => Ok(()),
        _ => Err(Problem::forbidden()),
    }
}

/// Tenant filter for job queries: a tenant sees its own, the admin all.
pub fn job_scope(c: &Caller) -> Result<Option<i64>, Problem> {
    match &c.0 {
        Scope::Admin => Ok(None),
        Scope::Tenant { id, .. } => Ok(Some(*id)),
        Scope::Join | Scope::Node { .. } | Scope::Router => Err(Problem::forbidden()),
    }
}
