//! The node history the economics report reads: one span per state and
//! inventory, written with each node change, never overlapping. A lost node
//! is down from its last heartbeat even when an admin drained it after that
//! heartbeat (the later spans are replaced), as its tasks' billing says.

use std::collections::BTreeMap;

use suanli_billing::NodeSpan;
use suanli_server::store::{Node, Write};

#[macro_use]
mod common;
use common::{Db, Place};

on_both_backends!(spans_follow_node_changes_and_never_overlap);

fn node(gpus: i64, model: &str, state: &str, at: i64) -> Node {
    Node {
        id: 1,
        name: "n1".into(),
        addr: String::new(),
        gpu_model: Some(model.into()),
        gpus,
        gpu_memory_mib: 0,
        cpu_milli: 1000,
        memory_mib: 1024,
        rack: String::new(),
        labels: BTreeMap::new(),
        state: state.parse().unwrap(),
        registered_ms: 1000,
        last_heartbeat_ms: at,
    }
}

fn span(gpus: i64, model: &str, state: &str, start: i64, end: Option<i64>) -> NodeSpan {
    NodeSpan {
        node: "n1".into(),
        gpu_model: Some(model.into()),
        gpus,
        state: state.into(),
        start,
        end,
    }
}

async fn spans_follow_node_changes_and_never_overlap(db: Db) {
    let place = Place::new(db).await;
    let store = place.open().await;
    let state = |state: &'static str, at| Write::NodeState {
        node: 1,
        state: state.parse().unwrap(),
        at,
    };
    // Registered at 1000; the same registration again changes nothing.
    store
        .commit(vec![Write::UpsertNode(node(8, "A100", "ready", 1000))])
        .await
        .unwrap();
    store
        .commit(vec![Write::UpsertNode(node(8, "A100", "ready", 1200))])
        .await
        .unwrap();
    // Drained at 2000; lost as of its last heartbeat at 1500 (found at 3500).
    store.commit(vec![state("draining", 2000)]).await.unwrap();
    store.commit(vec![state("down", 1500)]).await.unwrap();
    // Back at 5000; re-registered with other GPUs at 6000.
    store.commit(vec![state("ready", 5000)]).await.unwrap();
    store
        .commit(vec![Write::UpsertNode(node(4, "H800", "ready", 6000))])
        .await
        .unwrap();
    // Two changes in one millisecond leave the last one.
    store
        .commit(vec![state("draining", 7000), state("ready", 7000)])
        .await
        .unwrap();
    let spans = store.node_spans(0, i64::MAX).await.unwrap();
    assert_eq!(
        spans,
        vec![
            span(8, "A100", "ready", 1000, Some(1500)),
            span(8, "A100", "down", 1500, Some(5000)),
            span(8, "A100", "ready", 5000, Some(6000)),
            span(4, "H800", "ready", 6000, Some(7000)),
            span(4, "H800", "ready", 7000, None),
        ]
    );
    // The query clips by overlap with [from, to).
    let mid = store.node_spans(1600, 5000).await.unwrap();
    assert_eq!(mid, vec![span(8, "A100", "down", 1500, Some(5000))]);
    // Reopened, the store keeps the history.
    drop(store);
    let store = place.open().await;
    assert_eq!(store.node_spans(0, i64::MAX).await.unwrap(), spans);
}
