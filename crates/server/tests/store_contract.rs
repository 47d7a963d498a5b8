//! The store contract: what every [`Backend`] must do, written against the
//! trait alone. Each check is a plain async function taking a fresh
//! [`Store`]; `on_both_backends!` runs all of them on each backend: SQLite, and
//! PostgreSQL on a fresh database of the test cluster (`common`).

use std::collections::BTreeMap;

use suanli_server::store::{
    channels, Class, EventKind, IdKind, JobState, LogAppend, LogKey, NewJob, NewService, Node,
    NodeState, Note, RouterCount, Scope, StoreError, TaskState, TokenRow, TokenScope, Write,
    ROUTER_FORGET_MS,
};

#[macro_use]
mod common;
use common::Place;

// The contract, on each backend.
on_both_backends!(
    tenants_and_quotas,
    tokens,
    jobs_are_scoped_paged_and_filtered,
    a_batch_is_all_or_nothing,
    an_empty_batch_is_fine,
    starts_tasks_and_their_transitions,
    node_states_in_one_batch_keep_the_last,
    usage_follows_task_rows,
    lost_tasks_of_a_down_node_may_still_hold_devices,
    the_lease_has_one_holder_at_a_time,
    a_deposed_leader_cannot_write,
    servers_racing_for_the_lease_elect_one,
    ids_come_from_the_store_once,
    the_inbox_holds_requests_until_answered,
    recent_jobs_and_arrivals,
    task_logs_are_stored_once_in_order,
    task_logs_from_two_replicas_at_once,
    services_replicas_tokens_and_limits,
    routers_exchange_counters,
);

fn job(name: &str, gpus: i64, tasks: i64) -> NewJob {
    NewJob {
        name: name.to_string(),
        command: vec!["run".to_string(), "--x".to_string()],
        tasks,
        cpu_milli: 2000,
        memory_mib: 4096,
        num_gpu: gpus,
        gpu_milli: if gpus > 0 { 1000 } else { 0 },
        gpu_models: vec!["A100-80G".to_string()],
        class: Class::Spot,
        env: [("K".to_string(), "v".to_string())].into(),
        workdir: "/w".to_string(),
        max_runtime_s: Some(60),
        retries: 2,
        idem_key: None,
        idem_hash: None,
        service: None,
    }
}

fn node(id: i64, name: &str, gpus: i64, at: i64) -> Node {
    Node {
        id,
        name: name.to_string(),
        addr: format!("{name}.local"),
        gpu_model: Some("A100-80G".to_string()),
        gpus,
        gpu_memory_mib: 81920,
        cpu_milli: 64_000,
        memory_mib: 1 << 18,
        rack: "r1".to_string(),
        labels: BTreeMap::new(),
        state: NodeState::Ready,
        registered_ms: at,
        last_heartbeat_ms: at,
    }
}

fn insert(id: i64, tenant_id: i64, j: NewJob, at: i64) -> [Write; 2] {
    [
        Write::InsertJob {
            id,
            tenant_id,
            job: j,
            at,
        },
        Write::Event {
            job: id,
            run: 0,
            at,
            kind: EventKind::Submitted,
            detail: String::new(),
        },
    ]
}

async fn tenants_and_quotas(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let a = s.create_tenant("acme", 2.0, "test").await.unwrap();
    let b = s.create_tenant("beta", 1.0, "test").await.unwrap();
    assert_ne!(a.id, b.id);
    assert!(matches!(
        s.create_tenant("acme", 1.0, "test").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.tenant_by_name("acme").await.unwrap(), a);
    assert!(matches!(
        s.tenant_by_name("nobody").await,
        Err(StoreError::NotFound)
    ));
    let names: Vec<String> = s
        .tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    s.set_quota(a.id, "H800", 4000, Some(8000), "test")
        .await
        .unwrap();
    s.set_quota(a.id, "A100-80G", 500, None, "test")
        .await
        .unwrap();
    // Setting again replaces.
    s.set_quota(a.id, "H800", 2000, None, "test").await.unwrap();
    let q = s.quotas(a.id).await.unwrap();
    assert_eq!(q.len(), 2);
    let h = q.iter().find(|q| q.gpu_model == "H800").unwrap();
    assert_eq!((h.guaranteed, h.max), (2.0, None));
    let x = q.iter().find(|q| q.gpu_model == "A100-80G").unwrap();
    assert_eq!((x.guaranteed, x.max), (0.5, None));
    assert!(s.quotas(b.id).await.unwrap().is_empty());
    // Each admin write recorded itself, in its own transaction: the
    // refused duplicate left no entry.
    let log: Vec<(String, String)> = s
        .audit_log(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.target))
        .collect();
    let e = |a: &str, t: &str| (a.to_string(), t.to_string());
    assert_eq!(
        log,
        [
            e("tenant.create", "tenant acme"),
            e("tenant.create", "tenant beta"),
            e("quota.set", "tenant acme model H800"),
            e("quota.set", "tenant acme model A100-80G"),
            e("quota.set", "tenant acme model H800"),
        ]
    );
}

async fn tokens(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    assert_eq!(s.token_count().await.unwrap(), 0);
    let t = s.create_tenant("acme", 1.0, "test").await.unwrap();
    let scope = Scope::Tenant {
        id: t.id,
        name: "acme".to_string(),
    };
    let admin = s
        .insert_token("h-admin", &Scope::Admin, "root", ("test", "token.create"))
        .await
        .unwrap();
    let tenant = s
        .insert_token("h-acme", &scope, "ci", ("test", "token.create"))
        .await
        .unwrap();
    s.insert_token("h-join", &Scope::Join, "", ("test", "token.create"))
        .await
        .unwrap();
    let n1 = Scope::Node {
        name: "n1".to_string(),
    };
    let cred = s
        .insert_token("h-n1", &n1, "", ("test", "token.create"))
        .await
        .unwrap();
    assert_eq!(s.token_count().await.unwrap(), 4);
    assert_eq!(s.scope_of("h-acme").await.unwrap(), Some((tenant, scope)));
    assert_eq!(
        s.scope_of("h-join").await.unwrap().map(|s| s.1),
        Some(Scope::Join)
    );
    assert_eq!(s.scope_of("h-n1").await.unwrap(), Some((cred, n1.clone())));
    // One live credential per node: a second is a conflict until the
    // first is revoked.
    assert!(matches!(
        s.insert_token("h-n1-again", &n1, "", ("test", "token.create"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    s.revoke_token(cred, "test").await.unwrap();
    s.insert_token("h-n1-again", &n1, "", ("test", "token.create"))
        .await
        .unwrap();
    assert_eq!(s.scope_of("h-n1").await.unwrap(), None);
    assert_eq!(
        s.scope_of("h-n1-again").await.unwrap().map(|s| s.1),
        Some(n1)
    );
    let listed = s.tokens().await.unwrap();
    let nodes: Vec<Option<&str>> = listed.iter().map(|t| t.node.as_deref()).collect();
    assert_eq!(nodes, [None, None, None, Some("n1"), Some("n1")]);
    assert_eq!(s.scope_of("unknown").await.unwrap(), None);
    // A gateway's token (the scope the tokens table gained in a later
    // migration on both backends).
    let router = s
        .insert_token("h-router", &Scope::Router, "gw", ("test", "token.create"))
        .await
        .unwrap();
    assert_eq!(
        s.scope_of("h-router").await.unwrap(),
        Some((router, Scope::Router))
    );
    s.revoke_token(router, "test").await.unwrap();
    assert_eq!(s.scope_of("h-router").await.unwrap(), None);
    s.revoke_token(tenant, "test").await.unwrap();
    assert_eq!(s.scope_of("h-acme").await.unwrap(), None, "revoked");
    let audited = s.audit_log(0, 100).await.unwrap().len();
    assert!(matches!(
        s.revoke_token(tenant, "test").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.audit_log(0, 100).await.unwrap().len(),
        audited,
        "a refused revoke is not recorded"
    );
    let list = s.tokens().await.unwrap();
    let by_id = |id| list.iter().find(|t| t.id == id).unwrap();
    assert_eq!(
        (by_id(admin).scope, by_id(admin).revoked),
        (TokenScope::Admin, false)
    );
    assert_eq!(
        (
            by_id(tenant).scope,
            by_id(tenant).tenant.as_deref(),
            by_id(tenant).revoked
        ),
        (TokenScope::Tenant, Some("acme"), true)
    );
}

async fn jobs_are_scoped_paged_and_filtered(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let a = s.create_tenant("acme", 1.0, "test").await.unwrap();
    let b = s.create_tenant("beta", 1.0, "test").await.unwrap();
    assert_eq!(s.max_job_id().await.unwrap(), 0);
    let mut w = Vec::new();
    for id in 1..=5 {
        let t = if id % 2 == 1 { a.id } else { b.id };
        w.extend(insert(id, t, job(&format!("j{id}"), 1, 1), 1000 + id));
    }
    w.push(Write::JobState {
        job: 3,
        state: JobState::Cancelled,
        ended: Some(2000),
    });
    s.commit(w.clone()).await.unwrap();
    assert_eq!(s.max_job_id().await.unwrap(), 5);
    let j = s.job(1, Some(a.id)).await.unwrap();
    assert_eq!(j.tenant, "acme");
    assert_eq!(j.state, JobState::Pending);
    assert_eq!(j.class, Class::Spot);
    assert_eq!(j.command, ["run", "--x"]);
    assert_eq!(j.env["K"], "v");
    assert_eq!((j.max_runtime_s, j.retries, j.run), (Some(60), 2, 0));
    assert_eq!(j.submitted_ms, 1001);
    // Another tenant's job does not exist for this one.
    assert!(matches!(
        s.job(2, Some(a.id)).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.job(2, None).await.is_ok());
    let ids = |v: Vec<suanli_server::store::Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.jobs(Some(a.id), None, 0, 100).await.unwrap()),
        [1, 3, 5]
    );
    assert_eq!(ids(s.jobs(None, None, 0, 2).await.unwrap()), [1, 2]);
    assert_eq!(ids(s.jobs(None, None, 2, 2).await.unwrap()), [3, 4]);
    assert_eq!(
        ids(s.jobs(None, Some(JobState::Pending), 0, 100).await.unwrap()),
        [1, 2, 4, 5]
    );
    assert_eq!(
        ids(s
            .jobs(Some(a.id), Some(JobState::Cancelled), 0, 100)
            .await
            .unwrap()),
        [3]
    );
    let c = s.job(3, None).await.unwrap();
    assert_eq!((c.state, c.ended_ms), (JobState::Cancelled, Some(2000)));
    // The live jobs, through their own index, paged; an ended job is not
    // among them.
    let live = |state, after, limit| s.live_jobs(state, after, limit);
    assert_eq!(
        ids(live(JobState::Pending, 0, 100).await.unwrap()),
        [1, 2, 4, 5]
    );
    assert_eq!(ids(live(JobState::Pending, 2, 2).await.unwrap()), [4, 5]);
    assert!(live(JobState::Running, 0, 100).await.unwrap().is_empty());
    s.commit(vec![Write::StartJob {
        job: 4,
        run: 1,
        at: 3000,
        tasks: vec![],
    }])
    .await
    .unwrap();
    assert_eq!(ids(live(JobState::Running, 0, 100).await.unwrap()), [4]);
    assert_eq!(
        ids(live(JobState::Pending, 0, 100).await.unwrap()),
        [1, 2, 5]
    );
    let ev = s.events(1).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].kind, ev[0].at_ms), (EventKind::Submitted, 1001));
}

async fn a_batch_is_all_or_nothing(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let a = s.create_tenant("acme", 1.0, "test").await.unwrap();
    s.commit(insert(1, a.id, job("a", 0, 1), 10).to_vec())
        .await
        .unwrap();
    // The second insert reuses id 1: the whole batch fails, the first
    // insert and the event included.
    let mut w = insert(2, a.id, job("b", 0, 1), 20).to_vec();
    w.extend(insert(1, a.id, job("dup", 0, 1), 20));
    assert!(s.commit(w.clone()).await.is_err());
    assert!(matches!(s.job(2, None).await, Err(StoreError::NotFound)));
    assert!(s.events(2).await.unwrap().is_empty());
    assert_eq!(s.job(1, None).await.unwrap().name, "a");
    assert_eq!(s.events(1).await.unwrap().len(), 1);
    // A batch handed over after the failed one was computed on top of it:
    // it is refused unapplied (the loop stops; a restart recovers from
    // what is durable).
    let later = s.commit(insert(3, a.id, job("c", 0, 1), 30).to_vec()).await;
    assert!(
        matches!(&later, Err(StoreError::Writer(m)) if m.contains("earlier batch failed")),
        "{later:?}"
    );
    assert!(matches!(s.job(3, None).await, Err(StoreError::NotFound)));
}

async fn an_empty_batch_is_fine(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    s.commit(vec![]).await.unwrap();
}

async fn starts_tasks_and_their_transitions(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let a = s.create_tenant("acme", 1.0, "test").await.unwrap();
    let mut w = vec![
        Write::UpsertNode(node(1, "n1", 8, 100)),
        Write::UpsertNode(node(2, "n2", 8, 100)),
    ];
    w.extend(insert(1, a.id, job("gang", 4, 2), 100));
    w.push(Write::StartJob {
        job: 1,
        run: 1,
        at: 200,
        tasks: vec![(1, 0b1111), (2, 0b1111_0000)],
    });
    s.commit(w.clone()).await.unwrap();
    assert_eq!(s.max_node_id().await.unwrap(), 2);
    let j = s.job(1, None).await.unwrap();
    assert_eq!(
        (j.state, j.run, j.started_ms),
        (JobState::Running, 1, Some(200))
    );
    let active = s.active_tasks().await.unwrap();
    assert_eq!(active.len(), 2);
    assert_eq!((active[1].node, active[1].gpus), (2, 0b1111_0000));
    assert!(active.iter().all(|t| t.state == TaskState::Assigned));
    assert_eq!(s.task_node(1, 1, 1).await.unwrap(), Some(2));
    assert_eq!(s.task_node(1, 1, 9).await.unwrap(), None);
    assert_eq!(s.node_id("n2").await.unwrap(), Some(2));
    // A transition applies only from the states it names.
    let to = |task, from: &'static [TaskState], to, at| Write::TaskState {
        job: 1,
        run: 1,
        task,
        node: None,
        from,
        to,
        at,
        exit_code: None,
        reason: String::new(),
    };
    s.commit(vec![
        to(Some(0), &[TaskState::Assigned], TaskState::Running, None),
        to(Some(0), &[TaskState::Assigned], TaskState::Lost, Some(250)),
    ])
    .await
    .unwrap();
    let v = s.job_tasks(1).await.unwrap();
    assert_eq!(
        v[0].state,
        TaskState::Running,
        "the second write did not apply"
    );
    assert_eq!(
        (v[0].node.as_str(), v[0].gpus.as_slice()),
        ("n1", &[0, 1, 2, 3][..])
    );
    // Every task of the attempt at once, then the kill is confirmed.
    s.commit(vec![to(
        None,
        &[TaskState::Assigned, TaskState::Running],
        TaskState::Killing,
        Some(300),
    )])
    .await
    .unwrap();
    let killing = s.killing_tasks().await.unwrap();
    assert_eq!(killing.len(), 2);
    assert!(s.active_tasks().await.unwrap().is_empty());
    // A transition scoped to a node leaves another node's task alone.
    s.commit(vec![Write::TaskState {
        job: 1,
        run: 1,
        task: Some(1),
        node: Some(1),
        from: &[TaskState::Killing],
        to: TaskState::Killed,
        at: None,
        exit_code: None,
        reason: String::new(),
    }])
    .await
    .unwrap();
    assert_eq!(s.job_tasks(1).await.unwrap()[1].state, TaskState::Killing);
    s.commit(vec![Write::TaskState {
        job: 1,
        run: 1,
        task: Some(1),
        node: Some(2),
        from: &[TaskState::Killing],
        to: TaskState::Killed,
        at: None,
        exit_code: Some(137),
        reason: "killed".to_string(),
    }])
    .await
    .unwrap();
    let v = s.job_tasks(1).await.unwrap();
    assert_eq!(
        (v[1].state, v[1].ended_ms),
        (TaskState::Killed, Some(300)),
        "at: None keeps the end"
    );
    assert_eq!(
        (v[1].exit_code, v[1].reason.as_str()),
        (Some(137), "killed")
    );
    assert_eq!(s.killing_tasks().await.unwrap().len(), 1);
}

async fn node_states_in_one_batch_keep_the_last(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    s.commit(vec![
        Write::UpsertNode(node(1, "n1", 8, 100)),
        Write::UpsertNode(node(2, "n2", 4, 100)),
    ])
    .await
    .unwrap();
    let st = |node, state, at| Write::NodeState { node, state, at };
    s.commit(vec![
        st(1, NodeState::Draining, 200),
        st(2, NodeState::Down, 150),
        st(1, NodeState::Ready, 300),
        Write::Heartbeat { node: 2, at: 400 },
    ])
    .await
    .unwrap();
    let n = s.nodes().await.unwrap();
    assert_eq!(
        (n[0].state, n[1].state),
        (NodeState::Ready, NodeState::Down)
    );
    assert_eq!(n[1].last_heartbeat_ms, 400);
    // Re-registering with another inventory updates the row in place.
    let mut again = node(2, "n2", 2, 500);
    again.addr = "10.0.0.2".to_string();
    s.commit(vec![Write::UpsertNode(again)]).await.unwrap();
    let n = s.nodes().await.unwrap();
    assert_eq!(
        (n[1].gpus, n[1].addr.as_str(), n[1].state),
        (2, "10.0.0.2", NodeState::Ready)
    );
    assert_eq!(n[1].registered_ms, 100, "the first registration is kept");
    let spans = s.node_spans(0, 1000).await.unwrap();
    let n1: Vec<(&str, i64)> = spans
        .iter()
        .filter(|x| x.node == "n1")
        .map(|x| (x.state.as_str(), x.start))
        .collect();
    assert_eq!(n1, [("ready", 100), ("draining", 200), ("ready", 300)]);
}

async fn usage_follows_task_rows(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let a = s.create_tenant("acme", 1.0, "test").await.unwrap();
    let b = s.create_tenant("beta", 1.0, "test").await.unwrap();
    let mut w = vec![Write::UpsertNode(node(1, "n1", 8, 0))];
    w.extend(insert(1, a.id, job("a", 2, 1), 0));
    w.extend(insert(2, b.id, job("b", 0, 1), 0));
    w.push(Write::StartJob {
        job: 1,
        run: 1,
        at: 1000,
        tasks: vec![(1, 0b11)],
    });
    w.push(Write::StartJob {
        job: 2,
        run: 1,
        at: 1500,
        tasks: vec![(1, 0)],
    });
    w.push(Write::TaskState {
        job: 1,
        run: 1,
        task: Some(0),
        node: None,
        from: &[TaskState::Assigned],
        to: TaskState::Exited,
        at: Some(5000),
        exit_code: Some(0),
        reason: String::new(),
    });
    s.commit(w.clone()).await.unwrap();
    let u = s.usage(None, 0, 10_000).await.unwrap();
    assert_eq!(u.len(), 2);
    assert_eq!(
        (u[0].tenant.as_str(), u[0].start, u[0].end),
        ("acme", 1000, Some(5000))
    );
    assert_eq!(
        (u[0].gpu_milli, u[0].gpu_model.as_deref()),
        (2000, Some("A100-80G"))
    );
    assert_eq!(u[0].class, "spot");
    assert_eq!(
        (u[1].gpu_model.as_deref(), u[1].end),
        (None, None),
        "a CPU task, still running"
    );
    // By tenant, and only intervals overlapping the window.
    assert_eq!(s.usage(Some(b.id), 0, 10_000).await.unwrap().len(), 1);
    assert_eq!(s.usage(None, 5000, 10_000).await.unwrap().len(), 1);
    assert_eq!(s.usage(None, 0, 1000).await.unwrap().len(), 0);
}

async fn lost_tasks_of_a_down_node_may_still_hold_devices(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let a = s.create_tenant("acme", 1.0, "test").await.unwrap();
    let mut w = vec![
        Write::UpsertNode(node(1, "n1", 8, 100)),
        Write::UpsertNode(node(2, "n2", 8, 100)),
    ];
    for (id, n) in [(1, 1), (2, 2)] {
        w.extend(insert(id, a.id, job("j", 8, 1), 100));
        w.push(Write::StartJob {
            job: id,
            run: 1,
            at: 200,
            tasks: vec![(n, 0xFF)],
        });
        w.push(Write::TaskState {
            job: id,
            run: 1,
            task: None,
            node: None,
            from: &[TaskState::Assigned],
            to: TaskState::Lost,
            at: Some(100),
            exit_code: None,
            reason: String::new(),
        });
    }
    // n1 went down as of its last heartbeat (100); n2 is up.
    w.push(Write::NodeState {
        node: 1,
        state: NodeState::Down,
        at: 100,
    });
    s.commit(w.clone()).await.unwrap();
    let k = s.killing_tasks().await.unwrap();
    let held: Vec<(i64, i64, i64)> = k.iter().map(|t| (t.job, t.node, t.gpus)).collect();
    assert_eq!(held, [(1, 1, 0xFF)], "only the down node's lost task");
}

async fn the_lease_has_one_holder_at_a_time(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let l = s.leader().await.unwrap();
    assert_eq!(
        (l.holder.as_str(), l.epoch, l.live),
        ("", 0, false),
        "nobody yet"
    );
    // a takes it for 400 ms of the database's clock; b cannot while it lasts.
    assert_eq!(s.lease("a", None, 400, false).await.unwrap(), Some(1));
    assert_eq!(s.lease("b", None, 400, false).await.unwrap(), None);
    assert!(s.leader().await.unwrap().live);
    // a renews (same epoch); b's renewal of an epoch it never held is
    // refused.
    assert_eq!(s.lease("a", Some(1), 400, false).await.unwrap(), Some(1));
    assert_eq!(s.lease("b", Some(1), 400, false).await.unwrap(), None);
    // Expired: b takes it as epoch 2, and a's renewal is over.
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert!(
        !s.leader().await.unwrap().live,
        "expired by the database's clock"
    );
    assert_eq!(s.lease("b", None, 60_000, false).await.unwrap(), Some(2));
    assert_eq!(s.lease("a", Some(1), 400, false).await.unwrap(), None);
    let l = s.leader().await.unwrap();
    assert_eq!((l.holder.as_str(), l.epoch, l.live), ("b", 2, true));
    // The expiry is the database's time plus the TTL.
    let now = suanli_server::store::now_ms();
    assert!(
        (l.expires_ms - now - 60_000).abs() < 5_000,
        "expires {} vs now {now}",
        l.expires_ms
    );
    // `take_live` (a store only one server can open) takes a live lease.
    assert_eq!(s.lease("c", None, 5000, true).await.unwrap(), Some(3));
}

async fn a_deposed_leader_cannot_write(db: common::Db) {
    let place = Place::new(db).await;
    let (old, new) = (place.open().await, place.open().await);
    let t = old.create_tenant("acme", 1.0, "test").await.unwrap();
    let e1 = old.lease("old", None, 300, false).await.unwrap().unwrap();
    old.fence(e1);
    old.commit(insert(1, t.id, job("a", 0, 1), 1000).to_vec())
        .await
        .unwrap();
    // The old leader stalls past its lease; the new one takes over.
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let e2 = new
        .lease("new", None, 60_000, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e2, e1 + 1);
    new.fence(e2);
    new.commit(insert(2, t.id, job("b", 0, 1), 7000).to_vec())
        .await
        .unwrap();
    // The old leader wakes up and writes: refused, nothing applied, and so
    // is everything it hands over after.
    let stale = old
        .commit(insert(3, t.id, job("c", 0, 1), 7001).to_vec())
        .await;
    assert!(
        matches!(stale, Err(StoreError::Fenced(e)) if e == e1),
        "{stale:?}"
    );
    let later = old
        .commit(insert(4, t.id, job("d", 0, 1), 7002).to_vec())
        .await;
    assert!(later.is_err(), "{later:?}");
    for id in [3, 4] {
        assert!(matches!(new.job(id, None).await, Err(StoreError::NotFound)));
    }
    assert_eq!(new.max_job_id().await.unwrap(), 2);
    // The new leader goes on.
    new.commit(insert(5, t.id, job("e", 0, 1), 7003).to_vec())
        .await
        .unwrap();
}

async fn servers_racing_for_the_lease_elect_one(db: common::Db) {
    let place = Place::new(db).await;
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(place.open().await);
    }
    let races = stores.into_iter().enumerate().map(|(i, s)| {
        tokio::spawn(async move { s.lease(&format!("s{i}"), None, 5000, false).await })
    });
    let mut won = 0;
    for r in races {
        if r.await.unwrap().unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one server leads");
    let l = place.open().await.leader().await.unwrap();
    assert_eq!(l.epoch, 1);
}

async fn ids_come_from_the_store_once(db: common::Db) {
    let place = Place::new(db).await;
    let s = place.open().await;
    // A fresh store: counters start at 1 (an upgraded one starts past
    // MAX(id), see migration 0015).
    let first = s.reserve_ids(IdKind::Job, 10).await.unwrap();
    assert_eq!(first, 1);
    assert_eq!(s.reserve_ids(IdKind::Job, 5).await.unwrap(), 11);
    assert_eq!(s.reserve_ids(IdKind::Node, 3).await.unwrap(), 1);
    assert!(matches!(
        s.reserve_ids(IdKind::Job, 0).await,
        Err(StoreError::Refused(_))
    ));
    // Many handles at once (replicas): blocks never overlap.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let h = place.open().await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.push(h.reserve_ids(IdKind::Job, 100).await.unwrap());
            }
            got
        }));
    }
    let mut starts: Vec<i64> = Vec::new();
    for t in tasks {
        starts.extend(t.await.unwrap());
    }
    starts.sort();
    assert_eq!(starts.len(), 120);
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 100, "blocks overlap: {w:?}");
    }
    assert_eq!(starts[0], 16);
}

async fn the_inbox_holds_requests_until_answered(db: common::Db) {
    let place = Place::new(db).await;
    let (follower, leader) = (place.open().await, place.open().await);
    let hints = follower.listen(&[channels::ANSWERS]).await.unwrap();
    assert_eq!(hints.is_some(), matches!(db, common::Db::Postgres));
    let a = follower.inbox_put(r#"{"ask":1}"#).await.unwrap();
    let b = follower.inbox_put(r#"{"ask":2}"#).await.unwrap();
    assert!(b > a);
    assert_eq!(
        leader.inbox_open(0, 10).await.unwrap(),
        [
            (a, r#"{"ask":1}"#.to_string()),
            (b, r#"{"ask":2}"#.to_string())
        ]
    );
    assert_eq!(leader.inbox_open(a, 10).await.unwrap().len(), 1, "after a");
    assert_eq!(follower.inbox_answer(a).await.unwrap(), None);
    // The answer is written in the leader's batch: with the batch's
    // effects, or not at all.
    let t = leader.create_tenant("acme", 1.0, "test").await.unwrap();
    let mut batch = insert(1, t.id, job("j", 0, 1), 1000).to_vec();
    batch.push(Write::Answer {
        inbox: a,
        body: "\"done\"".to_string(),
        at: 1000,
    });
    leader.commit(batch).await.unwrap();
    assert_eq!(
        follower.inbox_answer(a).await.unwrap().as_deref(),
        Some("\"done\"")
    );
    let mut failing = insert(1, t.id, job("again", 0, 1), 1500).to_vec(); // id 1 is taken
    failing.push(Write::Answer {
        inbox: b,
        body: "\"lost\"".to_string(),
        at: 1500,
    });
    assert!(leader.commit(failing).await.is_err());
    assert_eq!(
        follower.inbox_answer(b).await.unwrap(),
        None,
        "refused with its batch"
    );
    let leader = place.open().await; // a writer refuses all after a failed batch
    leader
        .commit(vec![Write::Answer {
            inbox: b,
            body: "\"ok\"".to_string(),
            at: 2000,
        }])
        .await
        .unwrap();
    assert_eq!(
        follower.inbox_answer(b).await.unwrap().as_deref(),
        Some("\"ok\"")
    );
    assert!(leader.inbox_open(0, 10).await.unwrap().is_empty());
    if let Some(mut rx) = hints {
        // The leader's commit hinted the follower with the answered id.
        let mut heard = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !heard
            .iter()
            .any(|p: &String| p.split(',').any(|x| x == b.to_string()))
        {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(Note::Hint { channel, payload })) => {
                    assert_eq!(channel, channels::ANSWERS);
                    heard.push(payload);
                }
                other => panic!("no hint for {b}: {other:?} (heard {heard:?})"),
            }
        }
    }
    // Old answers are forgotten; open requests never are.
    let c = follower.inbox_put("{}").await.unwrap();
    assert_eq!(leader.inbox_forget(1999).await.unwrap(), 1, "a only");
    assert_eq!(leader.inbox_forget(2001).await.unwrap(), 1, "then b");
    assert!(matches!(
        follower.inbox_answer(b).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        leader.inbox_open(0, 10).await.unwrap().len(),
        1,
        "c stays: {c}"
    );
}

async fn recent_jobs_and_arrivals(db: common::Db) {
    let place = Place::new(db).await;
    let s = place.open().await;
    let t = s.create_tenant("acme", 1.0, "test").await.unwrap();
    // Ids with gaps, as blocks of several leaders leave them.
    for (i, id) in [3, 4, 1030, 1031, 2100].into_iter().enumerate() {
        s.commit(insert(id, t.id, job(&format!("j{i}"), 0, 1), 1000 + i as i64).to_vec())
            .await
            .unwrap();
    }
    let recent: Vec<i64> = s
        .recent_jobs(3)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(recent, [1030, 1031, 2100], "the last three, oldest first");
    assert_eq!(s.jobs_before(1030).await.unwrap(), 2);
    assert_eq!(s.jobs_before(1).await.unwrap(), 0);
}

fn stream(job: i64, task: i64, stream: &'static str) -> LogKey {
    LogKey {
        job,
        run: 0,
        task,
        stream,
    }
}

async fn task_logs_are_stored_once_in_order(db: common::Db) {
    let place = Place::new(db).await;
    let s = place.open().await;
    let (out, err) = (stream(7, 0, "out"), stream(7, 0, "err"));
    const CAP: u64 = 1 << 30;
    assert_eq!(s.log_read(out, 0, 100).await.unwrap(), b"");
    assert_eq!(
        s.log_append(out, 5, b"x", CAP).await.unwrap(),
        LogAppend::Gap(0)
    );
    assert_eq!(
        s.log_append(out, 0, b"hello ", CAP).await.unwrap(),
        LogAppend::To(6)
    );
    // The same push again (a retry) stores nothing; one that overlaps
    // stores only what is new.
    assert_eq!(
        s.log_append(out, 0, b"hello ", CAP).await.unwrap(),
        LogAppend::To(6)
    );
    assert_eq!(
        s.log_append(out, 3, b"lo world", CAP).await.unwrap(),
        LogAppend::To(11)
    );
    assert_eq!(
        s.log_append(out, 12, b"!", CAP).await.unwrap(),
        LogAppend::Gap(11)
    );
    assert_eq!(
        s.log_append(out, 11, b"", CAP).await.unwrap(),
        LogAppend::To(11)
    );
    assert_eq!(s.log_read(out, 0, 100).await.unwrap(), b"hello world");
    assert_eq!(s.log_read(out, 4, 3).await.unwrap(), b"o w");
    assert_eq!(s.log_read(out, 11, 10).await.unwrap(), b"");
    assert_eq!(s.log_read(out, 1 << 40, 10).await.unwrap(), b"");
    // Streams, tasks, runs and jobs are apart.
    assert_eq!(s.log_read(err, 0, 100).await.unwrap(), b"");
    s.log_append(err, 0, b"oops", CAP).await.unwrap();
    assert_eq!(s.log_read(err, 0, 100).await.unwrap(), b"oops");
    assert_eq!(s.log_read(stream(7, 1, "out"), 0, 100).await.unwrap(), b"");
    let run1 = LogKey { run: 1, ..out };
    assert_eq!(s.log_read(run1, 0, 100).await.unwrap(), b"");
    // A big push is kept in rows; reads from any offset see the bytes
    // in order, at most `max` of them.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        s.log_append(out, 11, &big, CAP).await.unwrap(),
        LogAppend::To(11 + big.len() as u64)
    );
    let all = s.log_read(out, 0, 1 << 20).await.unwrap();
    assert_eq!(&all[..11], b"hello world");
    assert_eq!(all.len(), 11 + big.len());
    assert!(all[11..] == big[..], "the big push reads back other bytes");
    for (from, max) in [
        (0u64, 70_000u64),
        (65_000, 1),
        (65_547, 200_000),
        (299_000, 5_000),
    ] {
        let got = s.log_read(out, from, max).await.unwrap();
        let want: Vec<u8> = all
            .iter()
            .skip(from as usize)
            .take(max as usize)
            .copied()
            .collect();
        assert_eq!(got.len(), want.len(), "from {from}, at most {max}");
        assert!(got == want, "other bytes from {from}, at most {max}");
    }
    // Past the cap, pushes succeed (the agent moves on) and keep nothing.
    let capped = stream(8, 0, "out");
    assert_eq!(
        s.log_append(capped, 0, b"0123456789", 4).await.unwrap(),
        LogAppend::To(10)
    );
    assert_eq!(
        s.log_append(capped, 10, b"abc", 4).await.unwrap(),
        LogAppend::To(13)
    );
    assert_eq!(s.log_read(capped, 0, 100).await.unwrap(), b"0123");
}

/// Two replicas take the same pushes at once (an agent that retried on
/// another one while the first was still storing): every byte is stored
/// once, in order.
async fn task_logs_from_two_replicas_at_once(db: common::Db) {
    let place = Place::new(db).await;
    let (a, b) = (place.open().await, place.open().await);
    let k = stream(9, 0, "out");
    let text: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let chunks: Vec<(u64, Vec<u8>)> = {
        let mut at = 0;
        let mut out = Vec::new();
        for (i, c) in text.chunks(97).enumerate() {
            out.push((at, c.to_vec()));
            // Some pushes overlap the one before, as retries do.
            if i % 5 == 0 && at > 10 {
                out.push((
                    at - 10,
                    text[(at - 10) as usize..at as usize + c.len()].to_vec(),
                ));
            }
            at += c.len() as u64;
        }
        out
    };
    let push = |s: suanli_server::store::Store, chunks: Vec<(u64, Vec<u8>)>| async move {
        for (at, c) in chunks {
            loop {
                match s.log_append(k, at, &c, 1 << 30).await.unwrap() {
                    LogAppend::To(_) => break,
                    // The other replica has not stored what comes before yet.
                    LogAppend::Gap(_) => tokio::task::yield_now().await,
                }
            }
        }
    };
    let (x, y) = tokio::join!(
        tokio::spawn(push(a.clone(), chunks.clone())),
        tokio::spawn(push(b.clone(), chunks))
    );
    x.unwrap();
    y.unwrap();
    let mut got = Vec::new();
    loop {
        let more = a.log_read(k, got.len() as u64, 1 << 20).await.unwrap();
        if more.is_empty() {
            break;
        }
        got.extend(more);
    }
    assert_eq!(got.len(), text.len());
    assert!(got == text, "the stream differs from what was pushed");
}

fn spec(min: u32) -> suanli_api::ServiceSpec {
    suanli_api::ServiceSpec {
        command: vec!["serve".into(), "--port".into()],
        env: BTreeMap::new(),
        workdir: String::new(),
        cpu_milli: 1000,
        memory_mib: 1024,
        num_gpu: 1,
        gpu_milli: 1000,
        gpu_models: vec![],
        class: Class::OnDemand,
        min,
        max: 4,
        target_inflight: 2.5,
        up_delay_s: 0,
        down_delay_s: 30,
        idle_s: 60,
        ready_path: "/health".into(),
        ready_delay_s: 0,
        start_timeout_s: 600,
    }
}

async fn services_replicas_tokens_and_limits(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let sv = s.services();
    let a = s.create_tenant("acme", 1.0, "test").await.unwrap();
    let b = s.create_tenant("beta", 1.0, "test").await.unwrap();
    let new = |tenant: i64, name: &str, model: &str, public: bool| NewService {
        tenant_id: tenant,
        name: name.into(),
        model: model.into(),
        public,
        spec: spec(0),
        key: format!("key-{name}"),
    };
    let chat = sv
        .create_service(&new(a.id, "chat", "m1", false), "t")
        .await
        .unwrap();
    assert_eq!(
        (chat.tenant.as_str(), chat.spec.target_inflight),
        ("acme", 2.5)
    );
    // Taken: the name, the tenant's model, a public model.
    let conflict = |r: Result<_, StoreError>| match r {
        Err(StoreError::Conflict(w)) => w,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert!(conflict(
        sv.create_service(&new(a.id, "chat", "m9", false), "t")
            .await
    )
    .contains("service \"chat\""));
    assert!(conflict(
        sv.create_service(&new(a.id, "other", "m1", false), "t")
            .await
    )
    .contains("model \"m1\""));
    // Another tenant may serve its own private "m1"; a public "m2" is one.
    sv.create_service(&new(b.id, "mine", "m1", false), "t")
        .await
        .unwrap();
    sv.create_service(&new(b.id, "pub", "m2", true), "t")
        .await
        .unwrap();
    assert!(
        conflict(sv.create_service(&new(a.id, "pub2", "m2", true), "t").await).contains("public")
    );
    assert_eq!(sv.services(None).await.unwrap().len(), 3);
    assert_eq!(sv.services(Some(a.id)).await.unwrap().len(), 1);
    assert!(matches!(
        sv.service(b.id, "chat").await,
        Err(StoreError::NotFound)
    ));
    // Update, delete; a deleted service's name and model are free again.
    sv.update_service(chat.id, &spec(2), "t").await.unwrap();
    assert_eq!(sv.service(a.id, "chat").await.unwrap().spec.min, 2);
    // Replicas are recorded with their job, in the loop's batch.
    let mut replica = job("chat-replica", 1, 1);
    replica.service = Some(chat.id);
    let mut w = vec![Write::UpsertNode(node(1, "n1", 8, 100))];
    w.extend(insert(1, a.id, replica, 100));
    w.extend(insert(2, a.id, job("batch", 1, 1), 100));
    s.commit(w).await.unwrap();
    let live = sv.live_replicas(chat.id).await.unwrap();
    let all = sv.all_live_replicas().await.unwrap();
    assert_eq!(
        all.iter()
            .filter(|(s, _)| *s == chat.id)
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>(),
        live
    );
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].job, live[0].state, live[0].node.clone()),
        (1, JobState::Pending, None)
    );
    assert_eq!(
        sv.replica_of(1).await.unwrap(),
        Some(("chat".to_string(), "key-chat".to_string()))
    );
    assert_eq!(sv.replica_of(2).await.unwrap(), None);
    s.commit(vec![Write::StartJob {
        job: 1,
        run: 1,
        at: 200,
        tasks: vec![(1, 0b1)],
    }])
    .await
    .unwrap();
    let live = sv.live_replicas(chat.id).await.unwrap();
    assert_eq!(
        (
            live[0].run,
            live[0].state,
            live[0].node.as_deref(),
            live[0].addr.as_deref()
        ),
        (1, JobState::Running, Some("n1"), Some("n1.local"))
    );
    assert!(sv.orphan_replicas().await.unwrap().is_empty());
    s.commit(vec![Write::JobState {
        job: 1,
        state: JobState::Cancelled,
        ended: Some(300),
    }])
    .await
    .unwrap();
    assert!(sv.live_replicas(chat.id).await.unwrap().is_empty());
    // A replica still waiting when its service is deleted is an orphan
    // (the controller stops it); an ended one is not.
    let mut waiting = job("chat-replica", 1, 1);
    waiting.service = Some(chat.id);
    s.commit(insert(3, a.id, waiting, 400).to_vec())
        .await
        .unwrap();
    sv.delete_service(chat.id, "t").await.unwrap();
    assert_eq!(sv.orphan_replicas().await.unwrap(), vec![3]);
    assert!(matches!(
        sv.delete_service(chat.id, "t").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        sv.service(a.id, "chat").await,
        Err(StoreError::NotFound)
    ));
    sv.create_service(&new(a.id, "chat", "m1", false), "t")
        .await
        .unwrap();
    // Tokens: each request id once, summed per tenant and model.
    let row = |id: &str, tenant: i64, model: &str, i: i64, o: i64, at: i64| TokenRow {
        request_id: id.into(),
        tenant_id: tenant,
        service_id: chat.id,
        model: model.into(),
        at_ms: at,
        input_tokens: i,
        output_tokens: o,
        estimated: false,
    };
    let rows = vec![
        row("r1", a.id, "m1", 10, 5, 1000),
        row("r2", a.id, "m1", 7, 3, 2000),
        row("r3", b.id, "m2", 1, 1, 2000),
    ];
    assert_eq!(sv.record_tokens(&rows).await.unwrap(), 3);
    // The same requests again (a retried batch): nothing more.
    assert_eq!(sv.record_tokens(&rows[..2]).await.unwrap(), 0);
    let all = sv.token_sums(None, 0, 10_000).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (
            all[0].tenant.as_str(),
            all[0].requests,
            all[0].input_tokens,
            all[0].output_tokens
        ),
        ("acme", 2, 17, 8)
    );
    let mine = sv.token_sums(Some(b.id), 0, 10_000).await.unwrap();
    assert_eq!((mine.len(), mine[0].model.as_str()), (1, "m2"));
    assert_eq!(
        sv.token_sums(None, 1500, 10_000).await.unwrap()[0].requests,
        1
    );
    // Rate limits.
    assert!(sv.limits().await.unwrap().is_empty());
    let l = suanli_api::RateLimits {
        requests_per_minute: Some(60),
        tokens_per_minute: None,
    };
    sv.set_limits(a.id, l, "t").await.unwrap();
    assert_eq!(sv.limits().await.unwrap(), vec![(a.id, l)]);
}

async fn routers_exchange_counters(db: common::Db) {
    let place = Place::new(db).await;
    let s = &place.open().await;
    let sv = s.services();
    let row = |kind: &str, id: i64, inflight: i64, requests: i64, tokens: i64| RouterCount {
        router: String::new(),
        kind: kind.into(),
        id,
        inflight,
        requests,
        tokens,
        at_ms: 0,
    };
    // The first router sees nobody; the second sees the first's rows,
    // stamped with the writer's time.
    let none = sv
        .exchange_counts("gw1", &[row("service", 1, 3, 10, 0)], 1_000, 0)
        .await
        .unwrap();
    assert!(none.is_empty());
    let seen = sv
        .exchange_counts("gw2", &[row("tenant", 7, 0, 4, 90)], 1_100, 0)
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].router.as_str(), seen[0].kind.as_str(), seen[0].id),
        ("gw1", "service", 1)
    );
    assert_eq!(
        (seen[0].inflight, seen[0].requests, seen[0].at_ms),
        (3, 10, 1_000)
    );
    // A new report replaces the router's row; stale rows are not answered.
    sv.exchange_counts("gw1", &[row("service", 1, 0, 12, 0)], 2_000, 0)
        .await
        .unwrap();
    let seen = sv.exchange_counts("gw2", &[], 2_100, 1_500).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].inflight, seen[0].requests), (0, 12));
    let seen = sv.exchange_counts("gw1", &[], 2_200, 1_500).await.unwrap();
    assert!(seen.is_empty(), "gw2 last wrote at 1,100: {seen:?}");
    let seen = sv.exchange_counts("gw1", &[], 2_200, 0).await.unwrap();
    assert_eq!((seen[0].router.as_str(), seen[0].tokens), ("gw2", 90));
    // Routers silent for the forget period are deleted.
    let late = 2_000 + ROUTER_FORGET_MS + 1;
    let seen = sv.exchange_counts("gw3", &[], late, 0).await.unwrap();
    assert!(seen.is_empty(), "{seen:?}");
}
