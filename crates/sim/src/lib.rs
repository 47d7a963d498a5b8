//! # suanli-sim: trace readers, experiments and reports
//!
//! * [`openb`]: readers for the openb node and pod CSVs (Alibaba
//!   cluster-trace-gpu-v2023); errors name file, line and column.
//! * [`fill`]: the openb placement experiment — shuffle, tune to a load ratio,
//!   submit one by one through a placement policy, measure allocation and
//!   fragmentation after every pod; plus the replay mode that takes a fixed
//!   order and node ranking.
//! * [`report`]: summaries over seeds, tables, JSON, curve CSV and SVG charts.
//! * [`jobs`]: the job-level discrete-event simulator (time, tenants, quotas,
//!   queue policies, gangs, preemption) and its readers, generator and reports.
//! * [`serve`]: the serving simulator — an LLM request trace against an
//!   autoscaled or static model service, replicas priced by a roofline model.
//! * [`synthetic`]: a seeded generator of a heterogeneous cluster and workload,
//!   for demos and machines without the traces.
//!
//! The same `suanli-sched` policies run here and in the live pool.

pub mod fill;
pub mod jobs;
pub mod openb;
pub mod replay;
pub mod report;
pub mod serve;
pub mod synthetic;

pub use openb::{OpenbPod, OpenbTrace, TraceError};
