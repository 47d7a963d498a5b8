//! The scheduling loop through the real server binary: agents register and
//! receive assignments, gangs start together, completion and failure with
//! retries, quota limits and why-pending reasons, spot preemption with kill
//! orders before reuse of a device, restart with running jobs, a refused
//! start on a corrupt store, and metrics.

mod common;

use common::pool::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn a_gang_runs_across_two_agents_and_completes() {
    let p = pool("gang", &[]);
    register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    register(&p.s, &p.agent, "n2", 8, "A100-80G", 64_000);
    let j = submit(
        &p.s,
        &p.acme,
        json!({"name": "ddp", "command": ["torchrun", "train.py"], "gpus": 8, "tasks": 2,
        "env": {"LR": "0.1"}, "max_runtime_s": 3600}),
    );
    let id = j["id"].as_i64().unwrap();
    assert_eq!(state(&p, id), "RUNNING");
    let h1 = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    let h2 = heartbeat(&p.s, &p.agent, "n2", &[], &[]);
    let mut all = starts(&h1);
    all.extend(starts(&h2));
    all.sort();
    assert_eq!(all, vec![(id, 1, 0), (id, 1, 1)], "{h1} {h2}");
    let a = if starts(&h1).is_empty() {
        &h2["start"][0]
    } else {
        &h1["start"][0]
    };
    assert_eq!(a["gpus"], json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(a["tasks"], 2);
    assert_eq!(a["env"]["LR"], "0.1");
    assert_eq!(a["max_runtime_s"], 3600);
    let master = [&h1, &h2]
        .iter()
        .flat_map(|h| h["start"].as_array().unwrap().iter())
        .map(|a| a["master_addr"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(master[0], master[1], "one MASTER_ADDR for the gang");
    assert!(master[0].starts_with("10.0.0."), "{master:?}");
    // The agents confirm; assignments are not repeated once running.
    let (n_of_0, n_of_1) = if starts(&h1).contains(&(id, 1, 0)) {
        ("n1", "n2")
    } else {
        ("n2", "n1")
    };
    let h = heartbeat(&p.s, &p.agent, n_of_0, &[(id, 1, 0)], &[]);
    assert!(starts(&h).is_empty(), "{h}");
    heartbeat(&p.s, &p.agent, n_of_1, &[(id, 1, 1)], &[]);
    let v = job(&p.s, &p.acme, id);
    assert!(
        v["task_history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "RUNNING"),
        "{v}"
    );
    // Task 0 ends first: the job runs until the whole gang is done.
    heartbeat(&p.s, &p.agent, n_of_0, &[], &[(id, 1, 0, 0)]);
    assert_eq!(state(&p, id), "RUNNING");
    heartbeat(&p.s, &p.agent, n_of_1, &[], &[(id, 1, 1, 0)]);
    assert_eq!(state(&p, id), "COMPLETED");
    assert_eq!(events(&p, id), ["SUBMITTED", "STARTED", "COMPLETED"]);
    let (_, nodes, _) = call("GET", &p.s.u("/v1/nodes"), Some(&p.admin), None);
    for n in nodes["nodes"].as_array().unwrap() {
        assert_eq!(n["gpu_milli_allocated"], 0, "{n}");
    }
}

#[test]
fn a_job_waits_for_nodes_it_could_run_on_and_only_one_no_node_could_ever_hold_is_refused() {
    let p = pool("waits", &[]);
    let reason = |id: i64| {
        job(&p.s, &p.acme, id)["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // No node has joined yet: accepted, PENDING, saying why.
    let early = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 8}));
    assert_eq!(early["state"], "PENDING", "{early}");
    let early = early["id"].as_i64().unwrap();
    assert!(
        reason(early).starts_with(
            "nodes: no node has joined the pool yet (each task needs 8 GPUs (any model)"
        ),
        "{}",
        reason(early)
    );
    // The first node starts it.
    register(&p.s, &p.agent, "n1", 8, "H200", 64_000);
    assert_eq!(state(&p, early), "RUNNING");
    call(
        "POST",
        &p.s.u(&format!("/v1/jobs/{early}/cancel")),
        Some(&p.acme),
        Some("{}"),
    );
    heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    // Beyond every shape the pool has had: refused, saying why.
    let (code, v, _) = call(
        "POST",
        &p.s.u("/v1/jobs"),
        Some(&p.acme),
        Some(&json!({"command": ["x"], "gpus": 8, "tasks": 2}).to_string()),
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (422, Some("unsatisfiable")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("room for at most 1 of them"),
        "{v}"
    );
    // The only node drained: a job it could hold waits for it.
    assert_eq!(
        call("POST", &p.s.u("/v1/nodes/n1/drain"), Some(&p.admin), None).0,
        200
    );
    let w = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 4}))["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, w), "PENDING");
    assert!(
        reason(w)
            .starts_with("nodes: no ready node can hold it (each task needs 4 GPUs (any model)"),
        "{}",
        reason(w)
    );
    // The node is removed (its shape stays known): still accepted, still
    // waiting; a node that joins later runs it.
    heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert_eq!(
        call("DELETE", &p.s.u("/v1/nodes/n1"), Some(&p.admin), None).0,
        204
    );
    let w2 = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 8}));
    assert_eq!(w2["state"], "PENDING", "{w2}");
    register(&p.s, &p.agent, "n2", 8, "H200", 64_000);
    assert_eq!(state(&p, w), "RUNNING");
    assert_eq!(
        state(&p, w2.get("id").unwrap().as_i64().unwrap()),
        "PENDING"
    );
    assert!(
        reason(w2["id"].as_i64().unwrap()).starts_with("resources: no node has 8 GPUs (any model)")
    );
}

#[test]
fn a_failed_task_retries_then_fails_the_job() {
    let p = pool("retry", &[]);
    register(&p.s, &p.agent, "n1", 4, "A100-80G", 64_000);
    let id = submit(
        &p.s,
        &p.acme,
        json!({"command": ["false"], "gpus": 1, "retries": 1}),
    )["id"]
        .as_i64()
        .unwrap();
    let h = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert_eq!(starts(&h), vec![(id, 1, 0)]);
    heartbeat(&p.s, &p.agent, "n1", &[], &[(id, 1, 0, 1)]);
    // Requeued and started again at once: attempt 2.
    let h = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert_eq!(starts(&h), vec![(id, 2, 0)]);
    heartbeat(&p.s, &p.agent, "n1", &[(id, 2, 0)], &[]);
    // A task the agent confirmed and then stops reporting is lost: not the
    // job's fault, so it runs again without using up its retry.
    let h = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert_eq!(state(&p, id), "RUNNING");
    assert_eq!(starts(&h), vec![(id, 3, 0)]);
    assert_eq!(job(&p.s, &p.acme, id)["interrupted"], 1);
    // Its second failure of its own ends it.
    heartbeat(&p.s, &p.agent, "n1", &[], &[(id, 3, 0, 2)]);
    assert_eq!(state(&p, id), "FAILED");
    assert_eq!(
        events(&p, id),
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
    let v = job(&p.s, &p.acme, id);
    let t = v["task_history"].as_array().unwrap();
    assert_eq!(
        (t[0]["state"].as_str(), t[0]["exit_code"].as_i64()),
        (Some("EXITED"), Some(1))
    );
    assert_eq!(t[1]["state"], "LOST");
    assert_eq!(t[2]["exit_code"], 2);
    // By default a job is not retried after its own failure.
    let once = submit(&p.s, &p.acme, json!({"command": ["false"], "gpus": 1}))["id"]
        .as_i64()
        .unwrap();
    let h = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert_eq!(starts(&h), vec![(once, 1, 0)]);
    heartbeat(&p.s, &p.agent, "n1", &[], &[(once, 1, 0, 1)]);
    assert_eq!(state(&p, once), "FAILED");
    assert_eq!(job(&p.s, &p.acme, once)["retries"], 0);
}

#[test]
fn quotas_limit_tenants_and_pending_jobs_say_why() {
    let p = pool("quota", &["--queue-policy", "fifo"]);
    register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    register(&p.s, &p.agent, "n2", 8, "A100-80G", 64_000);
    let (code, v, _) = call(
        "PUT",
        &p.s.u("/v1/tenants/acme/quotas/A100-80G"),
        Some(&p.admin),
        Some(r#"{"guaranteed": 4, "max": 8}"#),
    );
    assert_eq!(code, 200, "{v}");
    // Alone over the maximum: refused at submission.
    let (code, v, _) = call(
        "POST",
        &p.s.u("/v1/jobs"),
        Some(&p.acme),
        Some(&json!({"command": ["x"], "gpus": 8, "tasks": 2}).to_string()),
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (422, Some("unsatisfiable")),
        "{v}"
    );
    let a = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 8}))["id"]
        .as_i64()
        .unwrap();
    let b = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 4}))["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, a), "RUNNING");
    let vb = job(&p.s, &p.acme, b);
    assert_eq!(vb["state"], "PENDING");
    assert_eq!(
        vb["reason"], "quota: tenant acme uses 8/8 A100-80G GPUs and this job needs 4 more",
        "{vb}"
    );
    // beta has no quota: a 2-node gang waits for GPUs, and FIFO keeps a
    // small job behind it.
    let beta = token_for(&p.s, &p.admin, json!({"scope": "tenant", "tenant": "beta"}));
    let g = submit(
        &p.s,
        &beta,
        json!({"command": ["x"], "gpus": 8, "tasks": 2}),
    )["id"]
        .as_i64()
        .unwrap();
    let small = submit(&p.s, &beta, json!({"command": ["x"], "gpus": 1}))["id"]
        .as_i64()
        .unwrap();
    let (_, q, _) = call("GET", &p.s.u("/v1/jobs?state=PENDING"), Some(&beta), None);
    let reasons: Vec<(i64, String)> = q["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_i64().unwrap(),
                j["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons, vec![
        (g, "resources: only 1 of the gang's 2 tasks fit now (each needs 8 GPUs (any model), 1 CPU and 1024 MiB); running jobs hold the rest".to_string()),
        (small, "priority: waiting behind higher-priority jobs (1 of them yours)".to_string()),
    ]);
    // The admin is told the full count; beta is not told of acme's job.
    assert_eq!(
        job(&p.s, &p.admin, small)["reason"],
        "priority: waiting behind 2 higher-priority jobs"
    );
    assert_eq!(call("GET", &p.s.u("/metrics"), Some(&beta), None).0, 403);
    // Raising the quota lets acme's job start... once FIFO's head moves:
    // the admin cancels the blocking gang.
    call(
        "PUT",
        &p.s.u("/v1/tenants/acme/quotas/A100-80G"),
        Some(&p.admin),
        Some(r#"{"guaranteed": 4, "max": 16}"#),
    );
    call(
        "POST",
        &p.s.u(&format!("/v1/jobs/{g}/cancel")),
        Some(&p.admin),
        Some("{}"),
    );
    assert_eq!(state(&p, b), "RUNNING");
    assert_eq!(state(&p, small), "RUNNING");
}

#[test]
fn spot_work_is_preempted_and_its_devices_are_handed_over_only_after_the_kill() {
    let p = pool("spot", &[]);
    register(&p.s, &p.agent, "n1", 8, "H800", 64_000);
    let spot = submit(
        &p.s,
        &p.acme,
        json!({"command": ["x"], "gpus": 8, "class": "spot"}),
    )["id"]
        .as_i64()
        .unwrap();
    let h = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert_eq!(starts(&h), vec![(spot, 1, 0)]);
    heartbeat(&p.s, &p.agent, "n1", &[(spot, 1, 0)], &[]);
    let beta = token_for(&p.s, &p.admin, json!({"scope": "tenant", "tenant": "beta"}));
    let paid = submit(
        &p.s,
        &beta,
        json!({"command": ["x"], "gpus": 8, "class": "guaranteed"}),
    )["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, paid), "RUNNING");
    assert_eq!(state(&p, spot), "PENDING");
    // The spot task is still alive on the agent: kill first, no start yet.
    let h = heartbeat(&p.s, &p.agent, "n1", &[(spot, 1, 0)], &[]);
    assert_eq!(kills(&h), vec![(spot, 1, 0)]);
    assert!(starts(&h).is_empty(), "devices still busy: {h}");
    // Once it is gone, the new task starts.
    let h = heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    assert!(kills(&h).is_empty(), "{h}");
    assert_eq!(starts(&h), vec![(paid, 1, 0)]);
    assert_eq!(events(&p, spot), ["SUBMITTED", "STARTED", "PREEMPTED"]);
    let v = job(&p.s, &p.acme, spot);
    assert_eq!(v["task_history"][0]["state"], "KILLED");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("resources: no node has 8 GPUs (any model)"),
        "{v}"
    );
}

fn metrics(s: &Server, admin: &str) -> String {
    assert_eq!(call("GET", &s.u("/metrics"), None, None).0, 401);
    ureq::get(&s.u("/metrics"))
        .set("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

#[test]
fn restart_restores_running_jobs_and_metrics_report_them() {
    let p = pool("restart", &[]);
    register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    let a = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 6}))["id"]
        .as_i64()
        .unwrap();
    let share = submit(&p.s, &p.acme, json!({"command": ["x"], "gpu_share": 0.5}))["id"]
        .as_i64()
        .unwrap();
    heartbeat(&p.s, &p.agent, "n1", &[(a, 1, 0)], &[]);
    let m = metrics(&p.s, &p.admin);
    assert!(m.contains("suanli_jobs{state=\"RUNNING\"} 2"), "{m}");
    assert!(
        m.contains("suanli_gpus_capacity{model=\"A100-80G\"} 8"),
        "{m}"
    );
    assert!(
        m.contains("suanli_gpus_allocated{model=\"A100-80G\"} 6.5"),
        "{m}"
    );
    assert!(m.contains("suanli_scheduling_latency_seconds_count"), "{m}");
    let Pool {
        dir,
        s,
        admin,
        agent,
        acme,
    } = p;
    drop(s);
    let s = Server::start(&dir);
    let p = Pool {
        dir,
        s,
        admin,
        agent,
        acme,
    };
    assert_eq!(state(&p, a), "RUNNING");
    assert_eq!(state(&p, share), "RUNNING");
    // The restored jobs hold their devices: 1.5 GPUs are left.
    let b = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 2}))["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, b), "PENDING");
    let c = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 1}))["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, c), "RUNNING");
    let m = metrics(&p.s, &p.admin);
    assert!(
        m.contains("suanli_gpus_allocated{model=\"A100-80G\"} 7.5"),
        "{m}"
    );
    assert!(m.contains("suanli_jobs{state=\"RUNNING\"} 3"), "{m}");
    assert!(m.contains("suanli_jobs{state=\"PENDING\"} 1"), "{m}");
    // Ended jobs are counted from the loop's durable batches.
    let cancel = call(
        "POST",
        &p.s.u(&format!("/v1/jobs/{b}/cancel")),
        Some(&p.acme),
        None,
    );
    assert_eq!(cancel.0, 200, "{cancel:?}");
    let m = metrics(&p.s, &p.admin);
    assert!(m.contains("suanli_jobs{state=\"PENDING\"} 0"), "{m}");
    assert!(
        m.contains("suanli_jobs_ended_total{state=\"CANCELLED\"} 1"),
        "{m}"
    );
    // The unconfirmed share task is still to start; the confirmed one is not repeated.
    let h = heartbeat(&p.s, &p.agent, "n1", &[(a, 1, 0)], &[]);
    let mut st = starts(&h);
    st.sort();
    assert_eq!(st, vec![(share, 1, 0), (c, 1, 0)]);
    let devs: Vec<Value> = h["start"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["gpus"].clone())
        .collect();
    assert!(
        devs.iter().all(|d| d
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.as_i64().unwrap() >= 6)),
        "{devs:?}"
    );
}

#[test]
fn a_corrupt_store_stops_the_server_with_a_clear_message() {
    let p = pool("corrupt", &[]);
    register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    let a = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 4}))["id"]
        .as_i64()
        .unwrap();
    let b = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 4}))["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        (state(&p, a), state(&p, b)),
        ("RUNNING".into(), "RUNNING".into())
    );
    let Pool { dir, s, .. } = p;
    drop(s);
    // Give b's task a's devices, as a bug or a bad manual edit might.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let st = suanli_server::store::sqlite::SqliteStore::open(&dir)
            .await
            .unwrap();
        let mask: i64 = sqlx::query_scalar("SELECT gpus FROM tasks WHERE job_id = ?")
            .bind(a)
            .fetch_one(st.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE tasks SET gpus = ? WHERE job_id = ?")
            .bind(mask)
            .bind(b)
            .execute(st.pool())
            .await
            .unwrap();
    });
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("recovery: job {b}")), "{err}");
    assert!(err.contains("allocated twice"), "{err}");
    assert!(!err.contains("listening on"), "it must not serve: {err}");
}

/// Every job listed by the admin, all pages.
fn all_jobs(s: &Server, admin: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let (code, v, _) = call(
            "GET",
            &s.u(&format!("/v1/jobs?limit=1000&cursor={cursor}")),
            Some(admin),
            None,
        );
        assert_eq!(code, 200, "{v}");
        out.extend(v["jobs"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_i64() {
            Some(c) => cursor = c,
            None => return out,
        }
    }
}

#[test]
fn sigkill_under_concurrent_submissions_loses_no_acknowledged_job() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let p = pool("crash", &[]);
    register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    register(&p.s, &p.agent, "n2", 8, "A100-80G", 64_000);
    let Pool {
        dir,
        s,
        admin,
        acme,
        ..
    } = p;
    let url = Arc::new(Mutex::new(s.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..8 {
        let (url, stop, acked, token) = (url.clone(), stop.clone(), acked.clone(), acme.clone());
        clients.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(5))
                .build();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let name = format!("c{c}-{i}");
                let class = ["spot", "on-demand", "guaranteed"][i % 3];
                let body = json!({"name": name, "command": ["x"], "gpus": i % 3, "class": class});
                let u = format!("{}/v1/jobs", url.lock().unwrap());
                let r = agent
                    .post(&u)
                    .set("Authorization", &format!("Bearer {token}"))
                    .send_json(body);
                match r {
                    Ok(resp) => {
                        assert_eq!(resp.status(), 201);
                        let v: Value = resp.into_json().unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push((name, v["id"].as_i64().unwrap()));
                    }
                    Err(ureq::Error::Status(code, resp)) => {
                        panic!("{code}: {}", resp.into_string().unwrap_or_default())
                    }
                    // The server is down: this submission may or may not exist.
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }));
    }
    let mut s = s;
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        s.child.kill().unwrap(); // SIGKILL
        s.child.wait().unwrap();
        s = Server::start(&dir);
        *url.lock().unwrap() = s.url.clone();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Once more, so the final state is the recovered one.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let s = Server::start(&dir);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "too few submissions to mean anything: {}",
        acked.len()
    );
    let jobs = all_jobs(&s, &admin);
    let mut by_name: HashMap<String, Vec<i64>> = HashMap::new();
    for j in &jobs {
        by_name
            .entry(j["name"].as_str().unwrap().to_string())
            .or_default()
            .push(j["id"].as_i64().unwrap());
    }
    for (name, id) in &acked {
        assert_eq!(
            by_name.get(name),
            Some(&vec![*id]),
            "acknowledged job {name} must exist exactly once"
        );
    }
    assert!(
        by_name.values().all(|ids| ids.len() == 1),
        "no job exists twice"
    );
    // Allocation invariants: no node over capacity, and the nodes' allocated
    // GPUs equal what the RUNNING jobs hold.
    let (_, nodes, _) = call("GET", &s.u("/v1/nodes"), Some(&admin), None);
    let mut allocated = 0;
    for n in nodes["nodes"].as_array().unwrap() {
        let a = n["gpu_milli_allocated"].as_i64().unwrap();
        assert!(a <= n["gpus"].as_i64().unwrap() * 1000, "{n}");
        allocated += a;
    }
    let held: i64 = jobs
        .iter()
        .filter(|j| j["state"] == "RUNNING")
        .map(|j| {
            j["num_gpu"].as_i64().unwrap()
                * j["gpu_milli"].as_i64().unwrap()
                * j["tasks"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(allocated, held);
    assert_eq!(
        allocated, 16_000,
        "the pool is full: spot and paid work fill every GPU"
    );
    // Usage intervals survive the crashes: per task, attempts never overlap,
    // only the current attempt of a RUNNING job is open, and every other
    // interval is closed.
    for j in jobs.iter().filter(|j| j["run"].as_i64() > Some(0)) {
        let d = common::job(&s, &admin, j["id"].as_i64().unwrap());
        let mut last_end = 0;
        for t in d["task_history"].as_array().unwrap() {
            let (a, z) = (t["started_ms"].as_i64().unwrap(), t["ended_ms"].as_i64());
            assert!(a >= last_end, "attempts overlap: {d}");
            let current = j["state"] == "RUNNING" && t["run"] == j["run"];
            assert_eq!(z.is_none(), current, "{d}");
            last_end = z.unwrap_or(i64::MAX);
        }
    }
    eprintln!(
        "{} acknowledged submissions across 5 SIGKILLs, {} jobs stored",
        acked.len(),
        jobs.len()
    );
}

#[test]
fn more_than_64_gpu_models_are_refused_without_harm() {
    let p = pool("models", &[]);
    for i in 0..70 {
        let (code, v, _) = call(
            "PUT",
            &p.s.u(&format!("/v1/tenants/acme/quotas/M{i}")),
            Some(&p.admin),
            Some(r#"{"guaranteed": 1}"#),
        );
        assert_eq!(code, 200, "{v}");
    }
    let devs = json!([{"index": 0, "model": "Late"}]);
    let body = json!({"name": "late", "cpu_milli": 1000, "memory_mib": 1024, "gpus": devs,
        "credential_sha256": suanli_api::token::new_token().1});
    let (code, v, _) = call(
        "POST",
        &p.s.u("/v1/agents/register"),
        Some(&p.agent),
        Some(&body.to_string()),
    );
    assert_eq!((code, v["field"].as_str()), (400, Some("gpus")), "{v}");
    // The refused registration's claim on the name was withdrawn.
    let (_, list, _) = call("GET", &p.s.u("/v1/tokens"), Some(&p.admin), None);
    assert!(
        !list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["node"] == "late" && t["revoked"] == false),
        "{list}"
    );
    // Known models still register, and the server still schedules.
    register(&p.s, &p.agent, "n1", 2, "M3", 8000);
    let id = submit(
        &p.s,
        &p.acme,
        json!({"command": ["x"], "gpus": 1, "gpu_models": ["M3"]}),
    )["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, id), "RUNNING");
}

/// `logs --follow` across a retry (issue 16): the first attempt's output,
/// then the second's from its start (an offset never crosses attempts).
#[test]
fn logs_follow_moves_to_the_next_attempt_of_a_retried_job() {
    let p = pool("logs-retry", &[]);
    register(&p.s, &p.agent, "n1", 4, "A100-80G", 64_000);
    let cred = credential(&p.agent, "n1").unwrap();
    let id = submit(
        &p.s,
        &p.acme,
        json!({"command": ["x"], "gpus": 1, "retries": 1}),
    )["id"]
        .as_i64()
        .unwrap();
    let push = |run: i64, text: &str| {
        let path = format!("/v1/agents/n1/logs?job={id}&run={run}&task=0&stream=out&offset=0");
        let (code, v, _) = call("POST", &p.s.u(&path), Some(&cred), Some(text));
        assert_eq!(code, 200, "{v}");
    };
    assert_eq!(
        starts(&heartbeat(&p.s, &p.agent, "n1", &[], &[])),
        vec![(id, 1, 0)]
    );
    heartbeat(&p.s, &p.agent, "n1", &[(id, 1, 0)], &[]);
    push(1, "one: a longer first line\n");
    let follow = std::process::Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(["logs", &id.to_string(), "--follow"])
        .env("SUANLI_SERVER", &p.s.url)
        .env("SUANLI_TOKEN", &p.acme)
        .env("HOME", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    heartbeat(&p.s, &p.agent, "n1", &[], &[(id, 1, 0, 1)]);
    assert_eq!(
        starts(&heartbeat(&p.s, &p.agent, "n1", &[], &[])),
        vec![(id, 2, 0)]
    );
    push(2, "two\nthree\n");
    std::thread::sleep(std::time::Duration::from_millis(800));
    heartbeat(&p.s, &p.agent, "n1", &[], &[(id, 2, 0, 0)]);
    let o = follow.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert_eq!(out, "one: a longer first line\ntwo\nthree\n", "{err}");
    assert!(err.contains("attempt 2"), "{err}");
}
