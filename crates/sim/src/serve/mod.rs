//! The serving simulator (`suanli sim serve`): a request trace ([`trace`])
//! against replicas of one model service priced by a roofline performance
//! model ([`perf`]), scaled by the live autoscaler's own code
//! (`suanli_serve`), on a virtual clock ([`engine`]); tables, JSON and
//! charts ([`report`]).

pub mod engine;
pub mod perf;
pub mod report;
pub mod trace;

pub use engine::{
    simulate, static_peak, Percentiles, Policy, ServeParams, ServeResult, Signal, Sleep,
};
pub use perf::Perf;
pub use trace::{Request, RequestTrace};
