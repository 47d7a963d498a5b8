//! # suanli-serve: model services without IO
//!
//! What decides how a model service behaves, written once and driven by
//! two clocks: the serving simulator (`suanli sim serve`, virtual time) and
//! the live router (wall clock).
//!
//! * [`autoscale`]: how many replicas a service wants, from the requests in
//!   flight: a stable and a panic window, a tolerance band, up and down
//!   delays, scale to zero after an idle period.
//! * [`health`]: which replicas take traffic — readiness probes, eviction
//!   of a replica that stops answering, retries of requests that never
//!   reached one, outstanding requests per replica.
//! * [`limits`]: per-tenant requests- and tokens-per-minute limits as
//!   token buckets, with the wait a refusal names (`Retry-After`).
//! * [`meter`]: the tokens a response delivered, from the OpenAI `usage`
//!   field of a whole answer or of a server-sent event stream (a stream cut
//!   off midway included).
//! * [`route`]: which ready replica takes a request (least outstanding
//!   requests, or round robin as the baseline).
//!
//! Time is integer milliseconds passed in by the caller; nothing here reads
//! a clock, draws a random number or does IO.

pub mod autoscale;
pub mod health;
pub mod limits;
pub mod meter;
pub mod route;

pub use autoscale::{Autoscaler, ScaleConfig, ScaleError, Scaling};
pub use health::{retryable, Health, ProbeConfig, Replicas};
pub use limits::{Limiter, Limits, Refused};
pub use meter::{usage_of_body, Metered, StreamMeter, Usage};
pub use route::{Picker, Route, RouteError};

/// Milliseconds on the caller's clock.
pub type Ms = u64;
