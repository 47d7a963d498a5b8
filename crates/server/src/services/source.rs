//! Where a router learns what it routes and writes what it counts.
//!
//! The router inside `suanli server` reads its own store
//! ([`StoreSource`]); `suanli gateway` runs the same router code on a
//! [`RouterSource`] that calls a server's router API (`/v1/routers/...`,
//! admin token; `crate::http::routers`), so a gateway needs no database and
//! sees exactly what the server's own router sees. Several routers behave
//! as one through [`RouterSource::exchange`]: each writes its counters
//! (requests in flight and so far per service; requests and tokens so far
//! per tenant) and reads everyone else's, so the leader scales on the sum
//! and every router charges its rate limits with every router's traffic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use suanli_api::RateLimits;

use crate::store::{ReplicaRow, RouterCount, Scope, ServiceRow, Store, TokenRow};

/// What a router's token is, for the model API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TokenOwner {
    /// A tenant's token: the caller pays.
    Tenant { id: i64, name: String },
    /// A valid token that is not a tenant's (admin, agent).
    NotTenant,
    /// Unknown or revoked.
    Unknown,
}

/// The services and the tenants' limits (`GET /v1/routers/services`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouterServices {
    pub services: Vec<ServiceRow>,
    pub limits: Vec<(i64, RateLimits)>,
}

/// A router's counters (`POST /v1/routers/exchange`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Exchange {
    pub router: String,
    pub rows: Vec<RouterCount>,
}

/// The most rows one exchange or token batch may carry.
pub const MAX_ROUTER_ROWS: usize = 50_000;

/// A router's counters older than this are not counted (a router that
/// stopped reporting no longer holds requests).
pub const FRESH_MS: i64 = 5_000;

/// What the router needs from the pool's state.
#[async_trait::async_trait]
pub trait RouterSource: Send + Sync {
    /// Live services and every tenant's limits.
    async fn services(&self) -> Result<RouterServices, String>;
    /// The live replica jobs of these services.
    async fn replicas(&self, services: &[i64]) -> Result<HashMap<i64, Vec<ReplicaRow>>, String>;
    /// Live replica jobs of deleted services (the leader stops them).
    async fn orphan_replicas(&self) -> Result<Vec<i64>, String>;
    /// Record answered requests (each request id once).
    async fn record_tokens(&self, rows: &[TokenRow]) -> Result<(), String>;
    /// Whose token this is, by its hash (`suanli_api::token::hash_token`):
    /// the secret itself never leaves the router.
    async fn token_owner(&self, token_hash: &str) -> Result<TokenOwner, String>;
    /// Write this router's counters; answer the other routers' fresh ones.
    async fn exchange(&self, ex: &Exchange) -> Result<Vec<RouterCount>, String>;
}

/// The server's own store.
pub struct StoreSource(pub Store);

#[async_trait::async_trait]
impl RouterSource for StoreSource {
    async fn services(&self) -> Result<RouterServices, String> {
        let services = self
            .0
            .services()
            .services(None)
            .await
            .map_err(|e| e.to_string())?;
        let limits = self
            .0
            .services()
            .limits()
            .await
            .map_err(|e| e.to_string())?;
        Ok(RouterServices { services, limits })
    }

    async fn replicas(&self, services: &[i64]) -> Result<HashMap<i64, Vec<ReplicaRow>>, String> {
        // One read for all, whatever the number of services.
        let mut out: HashMap<i64, Vec<ReplicaRow>> =
            services.iter().map(|&id| (id, Vec::new())).collect();
        for (service, row) in self
            .0
            .services()
            .all_live_replicas()
            .await
            .map_err(|e| e.to_string())?
        {
            if let Some(v) = out.get_mut(&service) {
                v.push(row);
            }
        }
        Ok(out)
    }

    async fn orphan_replicas(&self) -> Result<Vec<i64>, String> {
        self.0
            .services()
            .orphan_replicas()
            .await
            .map_err(|e| e.to_string())
    }

    async fn record_tokens(&self, rows: &[TokenRow]) -> Result<(), String> {
        self.0
            .services()
            .record_tokens(rows)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn token_owner(&self, token_hash: &str) -> Result<TokenOwner, String> {
        match self.0.scope_of(token_hash).await {
            Ok(Some((_, Scope::Tenant { id, name }))) => Ok(TokenOwner::Tenant { id, name }),
            Ok(Some(_)) => Ok(TokenOwner::NotTenant),
            Ok(None) => Ok(TokenOwner::Unknown),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn exchange(&self, ex: &Exchange) -> Result<Vec<RouterCount>, String> {
        let now = crate::store::now_ms();
        self.0
            .services()
            .exchange_counts(&ex.router, &ex.rows, now, now - FRESH_MS)
            .await
            .map_err(|e| e.to_string())
    }
}
