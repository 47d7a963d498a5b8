//! Node churn in the job simulator: nodes that fail and return, drain and
//! undrain, as the live pool sees them (lease expiry, agent restart, admin
//! drain). From a cluster-events file, from a failure model per node group
//! (`mtbf_h`/`mttr_h` in the cluster file), or both.
//!
//! What a change does, in the engine as in the live loop: a node that goes
//! **down** is closed to placements and every job with a task there is
//! stopped and queued again (its work since the last checkpoint lost, as a
//! preemption); **up** reopens it; **drain** closes it to new placements
//! while its jobs run on; **undrain** reopens it. Capacity that DRF shares
//! and utilisation are measured against follows: a closed node's GPUs are
//! nobody's share, a down node's are not offered.

use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use suanli_sched::Time;

use super::Cluster;
use crate::openb::Csv;

/// A change of one node's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeChange {
    Down,
    Up,
    Drain,
    Undrain,
}

impl NodeChange {
    pub fn parse(s: &str) -> Option<NodeChange> {
        Some(match s {
            "down" => NodeChange::Down,
            "up" => NodeChange::Up,
            "drain" => NodeChange::Drain,
            "undrain" => NodeChange::Undrain,
            _ => return None,
        })
    }
}

/// `node` (an index into the cluster's nodes) changes at `at` (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    pub at: Time,
    pub node: usize,
    pub change: NodeChange,
}

/// Read a cluster-events file: CSV with `time_s,node,event` (`event` one of
/// down, up, drain, undrain; `node` a node name of the cluster, e.g.
/// `a100-3`). Sorted by time, file order within one time.
pub fn read_events(path: &Path, cluster: &Cluster) -> Result<Vec<NodeEvent>, String> {
    let mut csv = Csv::open(path, &["time_s", "node", "event"]).map_err(|e| e.to_string())?;
    let by_name: std::collections::HashMap<&str, usize> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut out = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row.map_err(|e| e.to_string())?;
        let t = row.str("time_s");
        let secs: f64 = t
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                row.err("time_s", format!("expected seconds >= 0, found {t:?}"))
                    .to_string()
            })?;
        let name = row.str("node");
        let node = *by_name.get(name).ok_or_else(|| {
            row.err(
                "node",
                format!("no node {name:?} in the cluster (names are GROUP-INDEX, e.g. a100-0)"),
            )
            .to_string()
        })?;
        let ev = row.str("event");
        let change = NodeChange::parse(ev).ok_or_else(|| {
            row.err(
                "event",
                format!("expected down, up, drain or undrain, found {ev:?}"),
            )
            .to_string()
        })?;
        out.push(NodeEvent {
            at: (secs * 1000.0).round() as Time,
            node,
            change,
        });
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

/// Draw an exponential duration of mean `mean_ms` (at least 1 ms).
pub fn exponential(rng: &mut ChaCha8Rng, mean_ms: f64) -> Time {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    ((-u.ln() * mean_ms).round() as Time).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_sorted_and_bad_rows_are_named() {
        let c = Cluster::parse(
            "[[group]]\nname='a'\ncount=2\ngpu_model='A100'\ngpus=8\ncpu_cores=8\nmemory_gib=64\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ev.csv");
        std::fs::write(
            &p,
            "time_s,node,event\n60,a-1,down\n30,a-0,drain\n90.5,a-1,up\n",
        )
        .unwrap();
        let ev = read_events(&p, &c).unwrap();
        assert_eq!(
            ev,
            [
                NodeEvent {
                    at: 30_000,
                    node: 0,
                    change: NodeChange::Drain
                },
                NodeEvent {
                    at: 60_000,
                    node: 1,
                    change: NodeChange::Down
                },
                NodeEvent {
                    at: 90_500,
                    node: 1,
                    change: NodeChange::Up
                },
            ]
        );
        for (text, want) in [
            (
                "time_s,node,event\n1,a-9,down\n",
                "ev.csv:2: column node: no node \"a-9\"",
            ),
            (
                "time_s,node,event\n-1,a-0,down\n",
                "ev.csv:2: column time_s",
            ),
            (
                "time_s,node,event\n1,a-0,explode\n",
                "ev.csv:2: column event",
            ),
            ("time,node,event\n", "header lacks column \"time_s\""),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_events(&p, &c).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn exponential_draws_have_the_mean() {
        use rand::SeedableRng;
        let mut r = ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let m: f64 = (0..n)
            .map(|_| exponential(&mut r, 1000.0) as f64)
            .sum::<f64>()
            / n as f64;
        assert!((m - 1000.0).abs() < 30.0, "{m}");
    }
}
