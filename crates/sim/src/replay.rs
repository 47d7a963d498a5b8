//! Replay mode: a fixed submission order and node ranking read from files, so
//! a policy can be compared digit for digit with another simulator's run (e.g.
//! `shared/specs/openb-seed42/`), or two policy versions on identical input.
//!
//! Order file: lines `index pod_name` (`#` comments), where `NAME-tuned-I` is a
//! copy of pod `NAME`. Rank file: CSV with a `node,rank` header (lower rank wins
//! a tie).

use std::collections::HashMap;
use std::path::Path;

use suanli_core::NodeId;

use crate::fill::Plan;
use crate::openb::{Csv, TraceError};

fn err(path: &Path, line: usize, message: String) -> TraceError {
    TraceError {
        file: path.to_path_buf(),
        line,
        column: None,
        message,
    }
}

/// Build a [`Plan`] from an order file and a rank file, resolving names
/// against the pod and node lists.
pub fn load_plan(
    order_file: &Path,
    rank_file: &Path,
    pod_names: &[String],
    node_names: &[String],
) -> Result<Plan, TraceError> {
    let pod_ix: HashMap<&str, usize> = pod_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let text = std::fs::read_to_string(order_file)
        .map_err(|e| err(order_file, 0, format!("cannot read: {e}")))?;
    let mut order = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| err(order_file, i + 1, "expected `index pod_name`".into()))?;
        let base = name.split("-tuned-").next().unwrap_or(name);
        let ix = pod_ix
            .get(base)
            .ok_or_else(|| err(order_file, i + 1, format!("unknown pod {base:?}")))?;
        order.push(*ix);
    }
    let node_ix: HashMap<&str, usize> = node_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut csv = Csv::open(rank_file, &["node", "rank"])?;
    let mut ranked: Vec<(u64, NodeId)> = Vec::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        let (name, rank) = (row.str("node"), row.str("rank"));
        let rank: u64 = rank
            .parse()
            .map_err(|_| row.err("rank", format!("bad rank {rank:?}")))?;
        let n = node_ix
            .get(name)
            .ok_or_else(|| row.err("node", format!("unknown node {name:?}")))?;
        ranked.push((rank, *n as NodeId));
    }
    if ranked.len() != node_names.len() {
        return Err(err(
            rank_file,
            0,
            format!(
                "ranks {} nodes, node list has {}",
                ranked.len(),
                node_names.len()
            ),
        ));
    }
    ranked.sort();
    Ok(Plan {
        order,
        rank: ranked.into_iter().map(|(_, n)| n).collect(),
    })
}
