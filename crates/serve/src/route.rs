//! Which ready replica takes a request.
//!
//! `LeastOutstanding` sends it to the replica with the fewest requests
//! outstanding (sent and not yet answered), as AIBrix's least-request and
//! Envoy's least-request balancers do; ties go round the replicas so equal
//! ones share the load. `RoundRobin` is the baseline it is measured against:
//! each ready replica in turn, whatever it holds.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the router picks a replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    #[default]
    LeastOutstanding,
    RoundRobin,
}

/// A routing name that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown routing {0:?}: expected least-outstanding or round-robin")]
pub struct RouteError(pub String);

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::LeastOutstanding => "least-outstanding",
            Route::RoundRobin => "round-robin",
        }
    }
}

impl FromStr for Route {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Self, RouteError> {
        match s {
            "least-outstanding" => Ok(Route::LeastOutstanding),
            "round-robin" => Ok(Route::RoundRobin),
            _ => Err(RouteError(s.to_string())),
        }
    }
}

/// A router's choice state (where the last choice was).
#[derive(Clone, Debug, Default)]
pub struct Picker {
    route: Route,
    next: usize,
}

impl Picker {
    pub fn new(route: Route) -> Self {
        Picker { route, next: 0 }
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// The replica to send to: `outstanding[i]` is `Some(n)` for a ready
    /// replica holding `n` requests, `None` for one that takes no traffic
    /// (starting, draining, evicted). `None` when no replica is ready.
    pub fn pick(&mut self, outstanding: &[Option<u32>]) -> Option<usize> {
        let len = outstanding.len();
        if len == 0 {
            return None;
        }
        let start = self.next % len;
        let order = (0..len).map(|k| (start + k) % len);
        let chosen = match self.route {
            Route::RoundRobin => order.into_iter().find(|&i| outstanding[i].is_some()),
            Route::LeastOutstanding => {
                let mut best: Option<(u32, usize)> = None;
                for i in order {
                    if let Some(n) = outstanding[i] {
                        if best.is_none_or(|(b, _)| n < b) {
                            best = Some((n, i));
                        }
                    }
                }
                best.map(|(_, i)| i)
            }
        }?;
        self.next = chosen + 1;
        Some(chosen)
    }
}
