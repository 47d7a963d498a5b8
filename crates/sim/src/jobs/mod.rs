//! The job-level simulator: a cluster description ([`cluster`]), workloads and
//! their readers ([`workload`]), a synthetic generator ([`gen`]), the
//! discrete-event engine ([`engine`]) that drives the scheduler core of
//! `suanli_sched::scheduler`, money ([`money`]: the live pool's invoices and
//! economics for a simulated schedule), and reports ([`report`]).

pub mod churn;
pub mod cluster;
pub mod engine;
pub mod gen;
pub mod money;
pub mod report;
pub mod workload;

pub use churn::{NodeChange, NodeEvent};
pub use cluster::Cluster;
pub use engine::{simulate, SimEvent, SimParams, SimResult};
pub use money::Meter;
pub use workload::{Job, Workload, TRACE_KINDS};
