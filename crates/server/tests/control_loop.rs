//! The scheduling loop's rules, driven through the sans-IO [`Core`] with
//! virtual time: every step's writes are committed into a real store, on
//! each backend (SQLite in a temporary directory, PostgreSQL in a fresh
//! database), so the tests also check what the store ends up saying. No process, no sleep: each test runs in milliseconds.
//!
//! One file on purpose, past 600 lines: one scenario per rule of the loop,
//! sharing the `Pool` harness at the top.

use std::collections::{BTreeMap, BTreeSet};

use suanli_server::control::{
    Answer, Command, Core, IdBlock, LoopConfig, NodeOrders, Registration, Report, Snapshot,
    TaskExit, TaskKey,
};
use suanli_server::store::{Class, NewJob, Store, Task, TaskState};

const T0: i64 = 1_780_000_000_000;

#[macro_use]
mod common;

use common::{Db, Place};

struct Pool {
    core: Core,
    store: Store,
    cfg: LoopConfig,
    now: i64,
    tenant_id: i64,
    _place: Place,
}

on_both_backends!(
    a_repeated_idempotency_key_gives_back_the_first_job_even_after_a_restart,
    a_start_reaches_the_agent_in_the_same_batch_and_the_gang_completes,
    a_silent_node_goes_down_at_its_lease_and_its_job_runs_elsewhere,
    a_gang_lost_with_its_node_is_requeued_without_using_its_retries,
    a_failed_task_is_retried_then_the_job_fails,
    a_timeout_fails_without_retry,
    a_drained_node_gets_no_new_work_and_keeps_its_running_task,
    a_node_is_removed_only_when_empty_and_its_credential_goes_with_it,
    a_gang_with_a_finished_task_survives_a_restart_and_holds_its_nodes,
    a_restart_after_a_models_last_node_was_removed_keeps_its_jobs_pending,
    a_down_node_gives_up_its_unconfirmed_stops_when_removed,
    spot_work_is_preempted_and_its_devices_wait_for_the_kill,
    cancel_stops_the_tasks_and_a_job_not_live_is_refused,
    recovery_rebuilds_the_same_state_from_the_store,
    recovery_refuses_a_device_held_twice,
    a_task_back_from_a_lost_node_keeps_its_devices_until_it_stops,
    a_gang_stopped_at_lease_expiry_keeps_its_devices_until_both_stop,
    another_nodes_task_reported_by_an_agent_is_stopped_there_only,
    nodes_given_orders_outside_their_own_report_are_woken,
    a_batch_needing_more_ids_than_a_block_gets_them_all
);

fn job(gpus: i64, tasks: i64) -> NewJob {
    NewJob {
        name: "j".to_string(),
        command: vec!["x".to_string()],
        tasks,
        cpu_milli: 1000,
        memory_mib: 1024,
        num_gpu: gpus,
        gpu_milli: if gpus > 0 { 1000 } else { 0 },
        gpu_models: Vec::new(),
        class: Class::OnDemand,
        env: BTreeMap::new(),
        workdir: String::new(),
        max_runtime_s: None,
        retries: 1,
        idem_key: None,
        idem_hash: None,
        service: None,
    }
}

type Key = (i64, i64, i64);

fn starts(o: &NodeOrders) -> Vec<Key> {
    o.start
        .iter()
        .map(|s| (s.task.job, s.task.run, s.task.task))
        .collect()
}

fn kills(o: &NodeOrders) -> Vec<Key> {
    o.kill.iter().map(|k| (k.job, k.run, k.task)).collect()
}

impl Pool {
    async fn new(db: Db, cfg: LoopConfig) -> Pool {
        let place = Place::new(db).await;
        let store = place.open().await;
        let t = store.create_tenant("acme", 1.0, "test").await.unwrap();
        let mut p = Pool {
            // From the store, as the driver does: its ids are reserved there.
            core: Core::recover(Snapshot::load(&store).await.unwrap(), &cfg, T0).unwrap(),
            store,
            cfg,
            now: T0,
            tenant_id: t.id,
            _place: place,
        };
        p.step(vec![Command::Tenant {
            tenant: t,
            quotas: Vec::new(),
        }])
        .await;
        p
    }

    async fn step(&mut self, cmds: Vec<Command>) -> Vec<Answer> {
        // Ids from the store, as the driver reserves them.
        for (kind, n) in self.core.ids_to_reserve(&cmds) {
            let first = self.store.reserve_ids(kind, n).await.unwrap();
            self.core.grant_ids(kind, IdBlock::new(first, n));
        }
        let s = self.core.step(cmds, self.now);
        self.store.commit(s.writes.clone()).await.unwrap();
        self.core.scheduler().check_indexes().unwrap();
        s.answers
    }

    async fn one(&mut self, cmd: Command) -> Answer {
        self.step(vec![cmd]).await.pop().unwrap()
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
    }

    async fn register(&mut self, name: &str, gpus: i64) {
        let reg = Registration {
            name: name.to_string(),
            addr: format!("{name}.local"),
            gpu_model: Some("A100-80G".to_string()),
            gpus,
            gpu_memory_mib: 81920,
            cpu_milli: 64_000,
            memory_mib: 256 * 1024,
            labels: BTreeMap::new(),
        };
        match self.one(Command::Register(reg)).await {
            Answer::Registered(Ok(_)) => {}
            a => panic!("register {name}: {a:?}"),
        }
    }

    async fn submit(&mut self, j: NewJob) -> i64 {
        let cmd = Command::Submit {
            tenant_id: self.tenant_id,
            tenant: "acme".to_string(),
            job: j,
        };
        match self.one(cmd).await {
            Answer::Submitted(Ok(j)) => j.id,
            a => panic!("submit: {a:?}"),
        }
    }

    /// A heartbeat: the tasks running, and exits as (key, exit code).
    async fn hb(&mut self, node: &str, running: &[Key], exited: &[(Key, i64)]) -> NodeOrders {
        let report = Report {
            running: running
                .iter()
                .map(|&(job, run, task)| TaskKey { job, run, task })
                .collect(),
            exited: exited
                .iter()
                .map(|&((job, run, task), code)| TaskExit {
                    job,
                    run,
                    task,
                    exit_code: Some(code),
                    signal: None,
                    reason: String::new(),
                    timeout: false,
                    not_started: false,
                })
                .collect(),
        };
        let cmd = Command::Heartbeat {
            node: node.to_string(),
            report,
            full: true,
        };
        match self.one(cmd).await {
            Answer::Orders(Ok(o)) => o,
            a => panic!("heartbeat {node}: {a:?}"),
        }
    }

    async fn drain(&mut self, node: &str, drain: bool) -> String {
        let cmd = Command::Drain {
            node: node.to_string(),
            drain,
            actor: "test".to_string(),
        };
        match self.one(cmd).await {
            Answer::Drained(Ok(s)) => s.to_string(),
            a => panic!("drain {node}: {a:?}"),
        }
    }

    async fn state(&self, id: i64) -> String {
        self.store.job(id, None).await.unwrap().state.to_string()
    }

    async fn events(&self, id: i64) -> Vec<String> {
        let ev = self.store.events(id).await.unwrap();
        ev.into_iter().map(|e| e.kind.to_string()).collect()
    }

    /// (run, task, node name, state) of every task of a job.
    async fn tasks(&self, id: i64) -> Vec<(i64, i64, String, String)> {
        let t = self.store.job_tasks(id).await.unwrap();
        t.into_iter()
            .map(|t| (t.run, t.index, t.node, t.state.to_string()))
            .collect()
    }

    async fn node_state(&self, name: &str) -> String {
        let n = self.store.nodes().await.unwrap();
        n.into_iter()
            .find(|n| n.name == name)
            .unwrap()
            .state
            .to_string()
    }
}

async fn a_start_reaches_the_agent_in_the_same_batch_and_the_gang_completes(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    // Submission and heartbeat in one batch: the pass runs before the orders
    // are computed, so the start is in this very answer.
    let cmds = vec![
        Command::Submit {
            tenant_id: p.tenant_id,
            tenant: "acme".to_string(),
            job: job(4, 2),
        },
        Command::Heartbeat {
            node: "n1".to_string(),
            report: Report::default(),
            full: true,
        },
    ];
    let a = p.step(cmds).await;
    let (Answer::Submitted(Ok(j)), Answer::Orders(Ok(o))) = (&a[0], &a[1]) else {
        panic!("{a:?}")
    };
    let id = j.id;
    // The answer is the job as committed: started by this batch's pass.
    assert_eq!((j.state.as_str(), j.run), ("RUNNING", 1));
    assert_eq!(starts(o), vec![(id, 1, 0), (id, 1, 1)]);
    assert_eq!(o.start[0].master_addr, "n1.local");
    assert_eq!(
        o.start[0].task.mask & o.start[1].task.mask,
        0,
        "no device twice"
    );
    assert_eq!(p.state(id).await, "RUNNING");
    // Confirmed, then the rank-1 task ends first: the job waits for rank 0.
    let o = p.hb("n1", &[(id, 1, 0), (id, 1, 1)], &[]).await;
    assert!(o.start.is_empty(), "started tasks are not ordered again");
    p.hb("n1", &[(id, 1, 0)], &[((id, 1, 1), 0)]).await;
    assert_eq!(p.state(id).await, "RUNNING");
    p.hb("n1", &[], &[((id, 1, 0), 0)]).await;
    assert_eq!(p.state(id).await, "COMPLETED");
    assert_eq!(p.core.scheduler().allocated_gpu_milli(), 0);
    assert_eq!(p.events(id).await, ["SUBMITTED", "STARTED", "COMPLETED"]);
}

async fn a_silent_node_goes_down_at_its_lease_and_its_job_runs_elsewhere(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let id = p.submit(job(8, 1)).await;
    let o = p.hb("n1", &[], &[]).await;
    assert_eq!(starts(&o), vec![(id, 1, 0)]);
    p.hb("n1", &[(id, 1, 0)], &[]).await;
    let last = p.now;
    p.register("n2", 8).await;
    // n2 keeps reporting; n1 falls silent. Just inside the lease: still up.
    p.advance(20_000);
    p.hb("n2", &[], &[]).await;
    assert_eq!(p.node_state("n1").await, "ready");
    assert_eq!(p.state(id).await, "RUNNING");
    // One ms past the lease: down, the task lost as of the last heartbeat,
    // and the job (one retry left) started again on n2 in the same batch.
    p.advance(1);
    let o = p.hb("n2", &[], &[]).await;
    assert_eq!(p.node_state("n1").await, "down");
    assert_eq!(starts(&o), vec![(id, 2, 0)]);
    assert_eq!(
        p.events(id).await,
        ["SUBMITTED", "STARTED", "RETRYING", "STARTED"]
    );
    let t = p.store.job_tasks(id).await.unwrap();
    assert_eq!((t[0].state, t[0].ended_ms), (TaskState::Lost, Some(last)));
    // The agent comes back still running the old attempt: it is told to
    // stop it, and the node takes work again.
    p.advance(5_000);
    let o = p.hb("n1", &[(id, 1, 0)], &[]).await;
    assert_eq!(kills(&o), vec![(id, 1, 0)]);
    assert_eq!(p.node_state("n1").await, "ready");
    let o = p.hb("n1", &[], &[]).await;
    assert!(o.kill.is_empty());
}

async fn a_gang_lost_with_its_node_is_requeued_without_using_its_retries(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let id = p
        .submit(NewJob {
            retries: 0,
            ..job(2, 2)
        })
        .await;
    let o = p.hb("n1", &[], &[]).await;
    assert_eq!(starts(&o).len(), 2);
    p.hb("n1", &[(id, 1, 0), (id, 1, 1)], &[]).await;
    let last = p.now;
    p.advance(20_001);
    // Both tasks of the gang were on the node: the first loss requeues
    // the job, the second is already stopped. No panic, one RETRYING.
    p.step(Vec::new()).await;
    assert_eq!(p.state(id).await, "PENDING");
    assert_eq!(p.events(id).await, ["SUBMITTED", "STARTED", "RETRYING"]);
    assert_eq!(p.store.job(id, None).await.unwrap().interrupted, 1);
    let t = p.store.job_tasks(id).await.unwrap();
    assert_eq!(t[0].state, TaskState::Lost);
    assert_eq!(t[0].ended_ms, Some(last));
    assert_ne!(t[1].state, TaskState::Running);
    assert_eq!(
        t[1].ended_ms,
        Some(last),
        "billing ends at the last heartbeat"
    );
    assert_eq!(p.core.scheduler().allocated_gpu_milli(), 0);
    // Later steps are quiet: it waits for a node.
    p.advance(60_000);
    p.step(Vec::new()).await;
    assert_eq!(p.state(id).await, "PENDING");
    // A job that keeps losing its node stops after MAX_INTERRUPTIONS.
    for k in 2..=suanli_server::control::MAX_INTERRUPTIONS + 1 {
        let o = p.hb("n1", &[], &[]).await; // the agent is back
        let run = starts(&o)[0].1;
        p.hb("n1", &[(id, run, 0), (id, run, 1)], &[]).await;
        p.advance(20_001);
        p.step(Vec::new()).await;
        let want = if k <= suanli_server::control::MAX_INTERRUPTIONS {
            "PENDING"
        } else {
            "FAILED"
        };
        assert_eq!(p.state(id).await, want, "loss {k}");
    }
}

async fn a_failed_task_is_retried_then_the_job_fails(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 4).await;
    let id = p.submit(job(1, 1)).await; // retries: 1
    assert_eq!(starts(&p.hb("n1", &[], &[]).await), vec![(id, 1, 0)]);
    // Exit code 1: requeued and started again in the same answer.
    let o = p.hb("n1", &[], &[((id, 1, 0), 1)]).await;
    assert_eq!(starts(&o), vec![(id, 2, 0)]);
    p.hb("n1", &[(id, 2, 0)], &[]).await;
    // A confirmed task the agent stops reporting is lost: not the job's
    // fault, so attempt 3 runs (the one retry went to attempt 1's failure).
    let o = p.hb("n1", &[], &[]).await;
    assert_eq!(starts(&o), vec![(id, 3, 0)]);
    // A second failure of its own: no retry left.
    p.hb("n1", &[], &[((id, 3, 0), 1)]).await;
    assert_eq!(p.state(id).await, "FAILED");
    assert_eq!(
        p.events(id).await,
        [
            "SUBMITTED",
            "STARTED",
            "RETRYING",
            "STARTED",
            "RETRYING",
            "STARTED",
            "FAILED"
        ]
    );
    let t = p.tasks(id).await;
    assert_eq!(t[0].3, "EXITED");
    assert_eq!(t[1].3, "LOST");
    assert_eq!(t[2].3, "EXITED");
    // A task that could not start fails its job at once, retries or not.
    let never = p.submit(job(1, 1)).await;
    let o = p.hb("n1", &[], &[]).await;
    assert_eq!(starts(&o), vec![(never, 1, 0)]);
    let report = Report {
        running: Vec::new(),
        exited: vec![TaskExit {
            job: never,
            run: 1,
            task: 0,
            exit_code: Some(127),
            signal: None,
            reason: "cannot start \"nope\": No such file or directory".to_string(),
            timeout: false,
            not_started: true,
        }],
    };
    p.one(Command::Heartbeat {
        node: "n1".to_string(),
        report,
        full: false,
    })
    .await;
    assert_eq!(p.state(never).await, "FAILED");
}

async fn a_timeout_fails_without_retry(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 4).await;
    let id = p.submit(job(1, 1)).await;
    p.hb("n1", &[], &[]).await;
    let report = Report {
        running: Vec::new(),
        exited: vec![TaskExit {
            job: id,
            run: 1,
            task: 0,
            exit_code: None,
            signal: Some(9),
            reason: "max runtime".to_string(),
            timeout: true,
            not_started: false,
        }],
    };
    p.one(Command::Heartbeat {
        node: "n1".to_string(),
        report,
        full: false,
    })
    .await;
    assert_eq!(p.state(id).await, "FAILED");
}

async fn a_drained_node_gets_no_new_work_and_keeps_its_running_task(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let a = p.submit(job(4, 1)).await;
    p.hb("n1", &[], &[]).await;
    p.hb("n1", &[(a, 1, 0)], &[]).await;
    assert_eq!(p.drain("n1", true).await, "draining");
    let Answer::Submitted(Ok(jb)) = p
        .one(Command::Submit {
            tenant_id: p.tenant_id,
            tenant: "acme".to_string(),
            job: job(4, 1),
        })
        .await
    else {
        panic!()
    };
    assert_eq!(
        (jb.state.as_str(), jb.run),
        ("PENDING", 0),
        "nowhere to start"
    );
    let b = jb.id;
    let o = p.hb("n1", &[(a, 1, 0)], &[]).await;
    assert!(o.start.is_empty() && o.kill.is_empty(), "{o:?}");
    assert_eq!(
        (p.state(a).await, p.state(b).await),
        ("RUNNING".to_string(), "PENDING".to_string())
    );
    assert_eq!(p.node_state("n1").await, "draining");
    // Re-registering keeps it draining.
    p.register("n1", 8).await;
    assert_eq!(p.node_state("n1").await, "draining");
    assert_eq!(p.drain("n1", false).await, "ready");
    let o = p.hb("n1", &[(a, 1, 0)], &[]).await;
    assert_eq!(starts(&o), vec![(b, 1, 0)]);
    // A down node cannot be undrained; draining it is a no-op.
    p.advance(20_001);
    p.step(Vec::new()).await;
    assert_eq!(p.drain("n1", true).await, "down");
    let Answer::Drained(r) = p
        .one(Command::Drain {
            node: "n1".to_string(),
            drain: false,
            actor: "test".to_string(),
        })
        .await
    else {
        panic!()
    };
    assert!(r.is_err(), "{r:?}");
}

async fn a_node_is_removed_only_when_empty_and_its_credential_goes_with_it(db: Db) {
    use suanli_server::store::Scope;
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    p.register("n2", 8).await;
    let n1 = Scope::Node {
        name: "n1".to_string(),
    };
    let cred = p
        .store
        .insert_token("h-n1", &n1, "", ("test", "node.claim"))
        .await
        .unwrap();
    let remove = |node: &str| Command::RemoveNode {
        node: node.to_string(),
        actor: "token 1 (admin)".to_string(),
    };
    let a = p.submit(job(8, 1)).await;
    let b = p.submit(job(8, 1)).await;
    p.hb("n1", &[], &[]).await;
    p.hb("n2", &[], &[]).await;
    let on_n1 = p.store.task_node(a, 1, 0).await.unwrap().unwrap();
    let (busy, other, job_there) = if on_n1 == p.store.node_id("n1").await.unwrap().unwrap() {
        ("n1", "n2", a)
    } else {
        ("n2", "n1", b)
    };
    // A node holding a live task is not removed.
    let Answer::Removed(r) = p.one(remove(busy)).await else {
        panic!()
    };
    assert!(
        matches!(&r, Err(suanli_server::control::Refusal::Conflict(m)) if m.contains("live task")),
        "{r:?}"
    );
    let Answer::Removed(r) = p.one(remove("nope")).await else {
        panic!()
    };
    assert!(
        matches!(r, Err(suanli_server::control::Refusal::NotFound)),
        "{r:?}"
    );
    // Drained, its task ends: now it goes.
    p.drain(busy, true).await;
    p.hb(busy, &[], &[((job_there, 1, 0), 0)]).await;
    let Answer::Removed(r) = p.one(remove(busy)).await else {
        panic!()
    };
    r.unwrap();
    let names: Vec<String> = p
        .store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec![other.to_string()]);
    // Its reports are refused; the other node is untouched.
    let Answer::Orders(r) = p
        .one(Command::Heartbeat {
            node: busy.to_string(),
            report: Report::default(),
            full: true,
        })
        .await
    else {
        panic!()
    };
    assert!(r.is_err(), "{r:?}");
    // Removing n1 revoked n1's credential, in the same transaction.
    if busy == "n1" {
        assert_eq!(p.store.scope_of("h-n1").await.unwrap(), None);
    } else {
        assert_eq!(
            p.store.scope_of("h-n1").await.unwrap().map(|s| s.0),
            Some(cred)
        );
    }
    let log = p.store.audit_log(0, 100).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.target.clone()
        ),
        ("token 1 (admin)", "node.remove", format!("node {busy}"))
    );
    assert!(log.iter().any(|e| e.action == "node.drain"), "{log:?}");
    // A restart does not bring it back, and the name registers again with
    // its old id (the task rows still name it).
    let old_id = p.store.task_node(job_there, 1, 0).await.unwrap().unwrap();
    let snap = Snapshot::load(&p.store).await.unwrap();
    assert_eq!(snap.nodes.len(), 1);
    p.core = Core::recover(snap, &p.cfg, p.now).unwrap();
    assert_eq!(p.core.node_count(), 1);
    p.register(busy, 4).await;
    assert_eq!(p.store.node_id(busy).await.unwrap(), Some(old_id));
    assert_eq!(p.node_state(busy).await, "ready");
    let c = p.submit(job(4, 1)).await;
    let o = p.hb(busy, &[], &[]).await;
    assert_eq!(starts(&o), vec![(c, 1, 0)], "back in the pool");
}

async fn a_gang_with_a_finished_task_survives_a_restart_and_holds_its_nodes(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    p.register("n2", 8).await;
    let g = p.submit(job(8, 2)).await;
    let o1 = p.hb("n1", &[], &[]).await;
    let o2 = p.hb("n2", &[], &[]).await;
    assert_eq!(starts(&o1).len() + starts(&o2).len(), 2);
    p.hb("n1", &[(g, 1, 0)], &[]).await;
    p.hb("n2", &[(g, 1, 1)], &[]).await;
    // Task 0 (on n1) is done; task 1 runs on.
    let (done, other) = if starts(&o1) == vec![(g, 1, 0)] {
        ("n1", "n2")
    } else {
        ("n2", "n1")
    };
    let (t_done, t_other) = if done == "n1" { (0, 1) } else { (1, 0) };
    p.hb(done, &[], &[((g, 1, t_done), 0)]).await;
    assert_eq!(p.state(g).await, "RUNNING");
    // The gang still holds its devices there: the node is not removed.
    let Answer::Removed(r) = p
        .one(Command::RemoveNode {
            node: done.to_string(),
            actor: "test".to_string(),
        })
        .await
    else {
        panic!()
    };
    assert!(r.is_err(), "{r:?}");
    // A restart rebuilds it (the finished task's devices included).
    let snap = Snapshot::load(&p.store).await.unwrap();
    p.core = Core::recover(snap, &p.cfg, p.now).unwrap();
    p.core.scheduler().check_indexes().unwrap();
    assert_eq!(p.core.scheduler().allocated_gpu_milli(), 16_000);
    p.hb(other, &[], &[((g, 1, t_other), 0)]).await;
    assert_eq!(p.state(g).await, "COMPLETED");
    assert_eq!(p.core.scheduler().allocated_gpu_milli(), 0);
}

async fn a_restart_after_a_models_last_node_was_removed_keeps_its_jobs_pending(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    // h1: the pool's only node of a second model.
    let reg = Registration {
        name: "h1".to_string(),
        addr: "h1.local".to_string(),
        gpu_model: Some("H800".to_string()),
        gpus: 8,
        gpu_memory_mib: 81920,
        cpu_milli: 64_000,
        memory_mib: 256 * 1024,
        labels: BTreeMap::new(),
    };
    assert!(matches!(
        p.one(Command::Register(reg)).await,
        Answer::Registered(Ok(_))
    ));
    let on_h800 = || NewJob {
        gpu_models: vec!["H800".to_string()],
        ..job(8, 1)
    };
    // Drained, h1 takes no work: a job for it waits.
    p.drain("h1", true).await;
    let waiting = p.submit(on_h800()).await;
    assert_eq!(p.state(waiting).await, "PENDING");
    let Answer::Removed(r) = p
        .one(Command::RemoveNode {
            node: "h1".to_string(),
            actor: "test".to_string(),
        })
        .await
    else {
        panic!()
    };
    r.unwrap();
    // The restart knows H800 from the job alone: the job keeps waiting.
    let snap = Snapshot::load(&p.store).await.unwrap();
    p.core = Core::recover(snap, &p.cfg, p.now).unwrap();
    p.core.scheduler().check_indexes().unwrap();
    p.step(Vec::new()).await;
    assert_eq!(p.state(waiting).await, "PENDING");
    assert_eq!(p.core.scheduler().capacity_gpu_milli(), 8_000);
}

async fn a_down_node_gives_up_its_unconfirmed_stops_when_removed(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let a = p
        .submit(NewJob {
            retries: 0,
            ..job(8, 1)
        })
        .await;
    p.hb("n1", &[], &[]).await;
    p.hb("n1", &[(a, 1, 0)], &[]).await;
    // The agent dies: the task is lost with the node, whose devices stay
    // held (the agent may come back still running it).
    p.advance(20_001);
    p.step(Vec::new()).await;
    assert_eq!(p.node_state("n1").await, "down");
    assert_eq!(p.store.killing_tasks().await.unwrap().len(), 1);
    let Answer::Removed(r) = p
        .one(Command::RemoveNode {
            node: "n1".to_string(),
            actor: "test".to_string(),
        })
        .await
    else {
        panic!()
    };
    r.unwrap();
    assert!(p.store.killing_tasks().await.unwrap().is_empty());
    let snap = Snapshot::load(&p.store).await.unwrap();
    assert!(snap.nodes.is_empty() && snap.killing.is_empty(), "{snap:?}");
    Core::recover(snap, &p.cfg, p.now).unwrap();
}

async fn spot_work_is_preempted_and_its_devices_wait_for_the_kill(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let spot = p
        .submit(NewJob {
            class: Class::Spot,
            ..job(8, 1)
        })
        .await;
    assert_eq!(starts(&p.hb("n1", &[], &[]).await), vec![(spot, 1, 0)]);
    p.hb("n1", &[(spot, 1, 0)], &[]).await;
    let paid = p.submit(job(8, 1)).await;
    assert_eq!(p.state(spot).await, "PENDING");
    assert_eq!(p.state(paid).await, "RUNNING");
    // The spot task still runs on the agent: kill it first, start nothing
    // on its devices until the agent stops reporting it.
    let o = p.hb("n1", &[(spot, 1, 0)], &[]).await;
    assert_eq!(kills(&o), vec![(spot, 1, 0)]);
    assert!(o.start.is_empty(), "{o:?}");
    let o = p.hb("n1", &[], &[]).await;
    assert!(o.kill.is_empty());
    assert_eq!(starts(&o), vec![(paid, 1, 0)]);
    assert_eq!(p.events(spot).await, ["SUBMITTED", "STARTED", "PREEMPTED"]);
    let t = p.tasks(spot).await;
    assert_eq!(t[0].3, "KILLED");
}

async fn cancel_stops_the_tasks_and_a_job_not_live_is_refused(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let id = p.submit(job(1, 1)).await;
    p.hb("n1", &[], &[]).await;
    p.hb("n1", &[(id, 1, 0)], &[]).await;
    // Another tenant cannot see it.
    let a = p
        .one(Command::Cancel {
            id,
            tenant: Some(p.tenant_id + 1),
        })
        .await;
    assert!(matches!(a, Answer::Cancelled(Err(_))), "{a:?}");
    let a = p.one(Command::Cancel { id, tenant: None }).await;
    assert!(matches!(a, Answer::Cancelled(Ok(()))), "{a:?}");
    assert_eq!(p.state(id).await, "CANCELLED");
    let o = p.hb("n1", &[(id, 1, 0)], &[]).await;
    assert_eq!(kills(&o), vec![(id, 1, 0)]);
    let a = p.one(Command::Cancel { id, tenant: None }).await;
    assert!(matches!(a, Answer::Cancelled(Err(_))), "{a:?}");
}

async fn recovery_rebuilds_the_same_state_from_the_store(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    p.register("n2", 8).await;
    let running = p.submit(job(8, 2)).await;
    let spot = p
        .submit(NewJob {
            class: Class::Spot,
            ..job(0, 1)
        })
        .await;
    p.hb("n1", &[], &[]).await;
    p.hb("n2", &[], &[]).await;
    p.hb("n1", &[(running, 1, 0)], &[]).await;
    let cancelled = spot;
    p.one(Command::Cancel {
        id: cancelled,
        tenant: None,
    })
    .await;
    let pending = p.submit(job(8, 1)).await;
    assert_eq!(p.state(pending).await, "PENDING");
    // Rebuild from the store, as a restarted server does.
    let snap = Snapshot::load(&p.store).await.unwrap();
    let mut again = Core::recover(snap, &p.cfg, p.now).unwrap();
    assert_eq!(again.queue_lengths(), p.core.queue_lengths());
    // The learned target workload too (three jobs of two shapes).
    let target = p.core.scheduler().target().unwrap();
    assert_eq!(target.pods.len(), 2, "{target:?}");
    assert_eq!(again.scheduler().target(), Some(target));
    assert_eq!(
        again.scheduler().allocated_gpu_milli(),
        p.core.scheduler().allocated_gpu_milli()
    );
    // Both give n2's agent the same orders (its task is still assigned).
    let hb = |n: &str| Command::Heartbeat {
        node: n.to_string(),
        report: Report::default(),
        full: false,
    };
    let a = p.core.step(vec![hb("n2")], p.now).answers;
    let b = again.step(vec![hb("n2")], p.now).answers;
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let Answer::Orders(Ok(o)) = &b[0] else {
        panic!("{b:?}")
    };
    assert_eq!(starts(o), vec![(running, 1, 1)]);
}

async fn recovery_refuses_a_device_held_twice(db: Db) {
    let cfg = LoopConfig::default();
    let mut p = Pool::new(db, cfg.clone()).await;
    p.register("n1", 8).await;
    let a = p.submit(job(8, 1)).await;
    let mut snap = Snapshot::load(&p.store).await.unwrap();
    // Forge a second running job on the same devices.
    let mut twin = p.store.job(a, None).await.unwrap();
    twin.id = a + 1;
    snap.running.push(twin);
    let t = snap.active_tasks[0].clone();
    snap.active_tasks.push(Task { job: a + 1, ..t });
    let e = Core::recover(snap, &cfg, p.now).err().expect("refused");
    let msg = format!("{e:#}");
    assert!(msg.contains("allocated twice"), "{msg}");
    assert!(msg.contains(&format!("job {}", a + 1)), "{msg}");
}

/// The orders a core gives `node` for a report of `running`, without
/// committing anything (to compare a live core with a recovered one).
fn orders_of(core: &mut Core, node: &str, running: &[Key], now: i64) -> NodeOrders {
    let report = Report {
        running: running
            .iter()
            .map(|&(job, run, task)| TaskKey { job, run, task })
            .collect(),
        exited: Vec::new(),
    };
    let cmd = Command::Heartbeat {
        node: node.to_string(),
        report,
        full: true,
    };
    match core.step(vec![cmd], now).answers.pop() {
        Some(Answer::Orders(Ok(o))) => o,
        a => panic!("{a:?}"),
    }
}

async fn a_task_back_from_a_lost_node_keeps_its_devices_until_it_stops(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let id = p.submit(job(8, 1)).await;
    p.hb("n1", &[], &[]).await;
    p.hb("n1", &[(id, 1, 0)], &[]).await;
    p.advance(20_001);
    p.step(Vec::new()).await;
    assert_eq!(p.node_state("n1").await, "down");
    assert_eq!(p.state(id).await, "PENDING", "requeued");
    // A server restarted now must answer the returning agent as the live
    // one does.
    let snap = Snapshot::load(&p.store).await.unwrap();
    let mut recovered = Core::recover(snap, &p.cfg, p.now).unwrap();
    p.advance(1_000);
    let again = orders_of(&mut recovered, "n1", &[(id, 1, 0)], p.now);
    // The agent comes back still running attempt 1 on all 8 devices: it is
    // told to stop it, and attempt 2 is not started on those devices yet.
    let o = p.hb("n1", &[(id, 1, 0)], &[]).await;
    assert_eq!(kills(&o), vec![(id, 1, 0)]);
    assert_eq!(o.kill[0].mask, 0xFF);
    assert!(o.start.is_empty(), "{o:?}");
    assert_eq!(again, o, "the recovered core gives the same orders");
    // Once it is gone, attempt 2 starts.
    let o = p.hb("n1", &[], &[]).await;
    assert!(o.kill.is_empty());
    assert_eq!(starts(&o), vec![(id, 2, 0)]);
}

async fn a_gang_stopped_at_lease_expiry_keeps_its_devices_until_both_stop(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    let id = p.submit(job(4, 2)).await;
    p.hb("n1", &[], &[]).await;
    p.hb("n1", &[(id, 1, 0), (id, 1, 1)], &[]).await;
    p.advance(20_001);
    p.step(Vec::new()).await;
    assert_eq!(p.state(id).await, "PENDING");
    // Back with both old tasks: both are stopped, with their devices, and
    // the new attempt waits for them.
    let o = p.hb("n1", &[(id, 1, 0), (id, 1, 1)], &[]).await;
    assert_eq!(kills(&o), vec![(id, 1, 0), (id, 1, 1)]);
    assert_eq!(o.kill[0].mask | o.kill[1].mask, 0xFF);
    assert!(o.start.is_empty(), "{o:?}");
    // One is gone: what the new attempt would need is still partly held.
    let o = p.hb("n1", &[(id, 1, 1)], &[]).await;
    assert_eq!(kills(&o), vec![(id, 1, 1)]);
    assert!(
        o.start.iter().all(|s| s.task.mask & o.kill[0].mask == 0),
        "{o:?}"
    );
    let o = p.hb("n1", &[], &[]).await;
    let mut st = starts(&o);
    st.sort();
    assert_eq!(st, vec![(id, 2, 0), (id, 2, 1)]);
}

async fn another_nodes_task_reported_by_an_agent_is_stopped_there_only(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    p.register("n2", 8).await;
    let id = p.submit(job(8, 1)).await;
    let on = if starts(&p.hb("n1", &[], &[]).await).is_empty() {
        "n2"
    } else {
        "n1"
    };
    let other = if on == "n1" { "n2" } else { "n1" };
    p.hb(on, &[(id, 1, 0)], &[]).await;
    // The other node's agent claims to run it: it is told to stop its own
    // copy (whose devices are unknown: all of them wait), and the owner's
    // task is untouched.
    let o = p.hb(other, &[(id, 1, 0)], &[]).await;
    assert_eq!(kills(&o), vec![(id, 1, 0)]);
    assert_eq!(o.kill[0].mask, 0xFFFF);
    let o = p.hb(on, &[(id, 1, 0)], &[]).await;
    assert!(o.kill.is_empty(), "{o:?}");
    assert_eq!(p.tasks(id).await[0].3, "RUNNING");
    assert_eq!(p.state(id).await, "RUNNING");
    // The store still recovers.
    let snap = Snapshot::load(&p.store).await.unwrap();
    let again = Core::recover(snap, &p.cfg, p.now).unwrap();
    assert_eq!(again.queue_lengths(), (0, 1));
    // Its agent's exit report for the copy does not end the real task.
    p.hb(other, &[], &[((id, 1, 0), 0)]).await;
    assert_eq!(p.tasks(id).await[0].3, "RUNNING");
    assert_eq!(p.state(id).await, "RUNNING");
}

async fn nodes_given_orders_outside_their_own_report_are_woken(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("n1", 8).await;
    p.register("n2", 8).await;
    let submit = |p: &Pool, gpus| Command::Submit {
        tenant_id: p.tenant_id,
        tenant: "acme".to_string(),
        job: job(gpus, 1),
    };
    let step = |p: &mut Pool, cmds| {
        let s = p.core.step(cmds, p.now);
        (s.answers, s.poked, s.writes)
    };
    // A start for a node that did not report: its agent is woken.
    let cmds = vec![submit(&p, 8)];
    let (a, poked, w) = step(&mut p, cmds);
    p.store.commit(w).await.unwrap();
    let Answer::Submitted(Ok(j)) = &a[0] else {
        panic!("{a:?}")
    };
    let (id, node) = (j.id, p.tasks(j.id).await[0].2.clone());
    assert_eq!(poked, vec![node.clone()]);
    // Nothing new: nobody is woken.
    let (_, poked, w) = step(&mut p, vec![]);
    p.store.commit(w).await.unwrap();
    assert!(poked.is_empty(), "{poked:?}");
    // A node whose report is in the batch gets its orders in the answer,
    // not a wake-up.
    let hb = Command::Heartbeat {
        node: node.clone(),
        report: Report::default(),
        full: true,
    };
    let cmds = vec![submit(&p, 8), hb];
    let (a, poked, w) = step(&mut p, cmds);
    p.store.commit(w).await.unwrap();
    let Answer::Submitted(Ok(j2)) = &a[0] else {
        panic!("{a:?}")
    };
    let other = p.tasks(j2.id).await[0].2.clone();
    assert_ne!(other, node);
    assert_eq!(
        poked,
        vec![other.clone()],
        "only the node that did not report"
    );
    // A cancel is a stop order: the running node is woken.
    let (_, poked, w) = step(&mut p, vec![Command::Cancel { id, tenant: None }]);
    p.store.commit(w).await.unwrap();
    assert_eq!(poked, vec![node]);
}

async fn a_repeated_idempotency_key_gives_back_the_first_job_even_after_a_restart(db: Db) {
    use suanli_server::control::{Refusal, IDEMPOTENCY_WINDOW_MS};
    let mut p = Pool::new(db, LoopConfig::default()).await;
    let keyed = |k: &str| NewJob {
        idem_key: Some(k.to_string()),
        idem_hash: None,
        service: None,
        ..job(0, 1)
    };
    let first = p.submit(keyed("k1")).await;
    let submit = |tenant_id: i64, k: &str| Command::Submit {
        tenant_id,
        tenant: "acme".to_string(),
        job: NewJob {
            idem_key: Some(k.to_string()),
            idem_hash: None,
            service: None,
            ..job(0, 1)
        },
    };
    // The same key again: the first job, no second one.
    let again = p.one(submit(p.tenant_id, "k1")).await;
    assert!(
        matches!(again, Answer::Submitted(Err(Refusal::Replayed(id))) if id == first),
        "{again:?}"
    );
    // The same key for another request: refused, naming the first job.
    let other = p
        .one(Command::Submit {
            tenant_id: p.tenant_id,
            tenant: "acme".to_string(),
            job: NewJob {
                idem_key: Some("k1".to_string()),
                idem_hash: Some("another request".to_string()),
                ..job(0, 1)
            },
        })
        .await;
    assert!(
        matches!(other, Answer::Submitted(Err(Refusal::KeyReused(id))) if id == first),
        "{other:?}"
    );
    // Another key, or no key: new jobs.
    let second = p.submit(keyed("k2")).await;
    let third = p.submit(job(0, 1)).await;
    assert!(first < second && second < third);
    // Another tenant's same key is its own.
    let beta = p.store.create_tenant("beta", 1.0, "test").await.unwrap();
    p.one(Command::Tenant {
        tenant: beta.clone(),
        quotas: Vec::new(),
    })
    .await;
    let theirs = p
        .one(Command::Submit {
            tenant_id: beta.id,
            tenant: "beta".to_string(),
            job: keyed("k1"),
        })
        .await;
    assert!(
        matches!(theirs, Answer::Submitted(Ok(ref j)) if j.id > third),
        "{theirs:?}"
    );
    // A restarted server knows the keys from the store.
    let snap = Snapshot::load(&p.store).await.unwrap();
    p.core = Core::recover(snap, &p.cfg, p.now).unwrap();
    let again = p.one(submit(p.tenant_id, "k2")).await;
    assert!(
        matches!(again, Answer::Submitted(Err(Refusal::Replayed(id))) if id == second),
        "{again:?}"
    );
    // A day later the key is forgotten: a new job.
    p.advance(IDEMPOTENCY_WINDOW_MS + 1);
    let later = p.submit(keyed("k1")).await;
    assert!(later > third);
}

/// A batch needing more ids than the blocks in hand hold (and more than a
/// block) gets them all, each once, from the store.
async fn a_batch_needing_more_ids_than_a_block_gets_them_all(db: Db) {
    let mut p = Pool::new(db, LoopConfig::default()).await;
    p.register("first", 8).await;
    p.submit(job(0, 1)).await;
    let mut cmds: Vec<Command> = (0..40)
        .map(|i| {
            Command::Register(Registration {
                name: format!("n{i}"),
                addr: String::new(),
                gpu_model: Some("A100-80G".to_string()),
                gpus: 8,
                gpu_memory_mib: 81920,
                cpu_milli: 64_000,
                memory_mib: 1 << 18,
                labels: BTreeMap::new(),
            })
        })
        .collect();
    cmds.extend((0..1500).map(|_| Command::Submit {
        tenant_id: p.tenant_id,
        tenant: "acme".to_string(),
        job: job(0, 1),
    }));
    let (mut nodes, mut jobs) = (BTreeSet::new(), BTreeSet::new());
    for a in p.step(cmds).await {
        match a {
            Answer::Registered(Ok(n)) => assert!(nodes.insert(n.id), "node id {} twice", n.id),
            Answer::Submitted(Ok(j)) => assert!(jobs.insert(j.id), "job id {} twice", j.id),
            a => panic!("{a:?}"),
        }
    }
    assert_eq!((nodes.len(), jobs.len()), (40, 1500));
    assert_eq!(p.core.node_count(), 41);
}
