//! Per-tenant request and token rate limits (requests per minute, tokens
//! per minute), as token buckets.
//!
//! Each limit is a bucket holding at most one minute's allowance and
//! refilled continuously at allowance/60 s. A request is let in when its
//! tenant's request bucket has a whole request and its token bucket is not
//! in debt; its tokens are known only once it is answered (the `usage` of
//! the response), so they are charged then and may take the token bucket
//! below zero (as Envoy AI Gateway charges token limits after the
//! response): the tenant's next requests wait until the debt is refilled.
//! Several routers share limits by charging each other's traffic
//! ([`Limiter::charge_shared`]; a debt from it is at most a minute's
//! allowance).
//! A refusal says how long to wait (`Retry-After`, whole seconds, at least 1).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Ms;

/// A tenant's limits; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

/// Why a request waits, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Which limit: "requests_per_minute" or "tokens_per_minute".
    pub limit: &'static str,
    /// Seconds until a retry can succeed (the `Retry-After` header).
    pub retry_after_s: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Milli-units (a thousandth of a request or token), so refills of a
    /// fraction per millisecond stay exact in integers.
    level: i128,
    at: Ms,
}

impl Bucket {
    fn full(per_minute: u64, now: Ms) -> Self {
        Bucket {
            level: per_minute as i128 * 1000,
            at: now,
        }
    }

    /// Refill up to `now`: per_minute·1000 milli-units per 60,000 ms.
    fn refill(&mut self, per_minute: u64, now: Ms) {
        if now > self.at {
            let cap = per_minute as i128 * 1000;
            let add = per_minute as i128 * (now - self.at) as i128 / 60;
            self.level = (self.level + add).min(cap);
            self.at = now;
        }
    }

    /// Milliseconds until the level reaches `need` milli-units.
    fn wait_ms(&self, per_minute: u64, need: i128) -> u64 {
        if self.level >= need || per_minute == 0 {
            return 0;
        }
        let deficit = need - self.level;
        // The refill is per_minute / 60 milli-units a millisecond.
        let ms = (deficit * 60 + per_minute as i128 - 1) / per_minute as i128;
        ms.min(u64::MAX as i128) as u64
    }
}

/// Every tenant's buckets.
#[derive(Debug, Default)]
pub struct Limiter {
    requests: HashMap<String, Bucket>,
    tokens: HashMap<String, Bucket>,
}

/// The tenant's bucket (full when first seen), refilled up to `now`.
fn refilled<'a>(
    buckets: &'a mut HashMap<String, Bucket>,
    tenant: &str,
    per_minute: u64,
    now: Ms,
) -> &'a mut Bucket {
    let b = buckets
        .entry(tenant.to_string())
        .or_insert_with(|| Bucket::full(per_minute, now));
    b.refill(per_minute, now);
    b
}

fn retry_s(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Let a request of `tenant` in now, or say how long to wait. A request
    /// let in takes one request from its bucket.
    pub fn admit(&mut self, tenant: &str, limits: Limits, now: Ms) -> Result<(), Refused> {
        if let Some(tpm) = limits.tokens_per_minute {
            let b = refilled(&mut self.tokens, tenant, tpm, now);
            if b.level <= 0 || tpm == 0 {
                return Err(Refused {
                    limit: "tokens_per_minute",
                    retry_after_s: if tpm == 0 {
                        60
                    } else {
                        retry_s(b.wait_ms(tpm, 1))
                    },
                });
            }
        }
        if let Some(rpm) = limits.requests_per_minute {
            let b = refilled(&mut self.requests, tenant, rpm, now);
            if b.level < 1000 || rpm == 0 {
                return Err(Refused {
                    limit: "requests_per_minute",
                    retry_after_s: if rpm == 0 {
                        60
                    } else {
                        retry_s(b.wait_ms(rpm, 1000))
                    },
                });
            }
            b.level -= 1000;
        }
        Ok(())
    }

    /// Charge what another router sharing the limits let in (requests) and
    /// charged (tokens) since last told. Its debt is floored at one
    /// minute's allowance: a router long unseen cannot block the tenant
    /// here for longer than the window its limits speak of (this router's
    /// own charges are not floored).
    pub fn charge_shared(
        &mut self,
        tenant: &str,
        limits: Limits,
        requests: u64,
        tokens: u64,
        now: Ms,
    ) {
        let floor = |per_minute: u64| -(per_minute as i128) * 1000;
        if let (Some(rpm), true) = (limits.requests_per_minute, requests > 0) {
            let b = refilled(&mut self.requests, tenant, rpm, now);
            b.level = (b.level - requests as i128 * 1000).max(floor(rpm).min(b.level));
        }
        if let (Some(tpm), true) = (limits.tokens_per_minute, tokens > 0) {
            let b = refilled(&mut self.tokens, tenant, tpm, now);
            b.level = (b.level - tokens as i128 * 1000).max(floor(tpm).min(b.level));
        }
    }

    /// Charge the tokens a request of `tenant` used (prompt and completion).
    pub fn charge(&mut self, tenant: &str, limits: Limits, tokens: u64, now: Ms) {
        if let Some(tpm) = limits.tokens_per_minute {
            let b = refilled(&mut self.tokens, tenant, tpm, now);
            b.level -= tokens as i128 * 1000;
        }
    }
}
