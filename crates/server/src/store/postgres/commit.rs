//! The PostgreSQL write path: one batch of [`Write`]s applied in order
//! inside one transaction (opened by [`super::writer`]). Every statement is
//! a round trip, so runs of one kind of write (each job or node at most
//! once in a run, so their order within it does not matter) become one
//! statement over arrays (`UNNEST`), and events and audit entries
//! (append-only, read by no other write) are inserted last, in order. A
//! batch of 4,096 starts is a handful of statements. Every node change also
//! records the node's history (`node_spans`), as in SQLite.
//!
//! An `UPDATE t ... FROM UNNEST(...) v WHERE t.id = v.id` also says
//! `t.id = ANY ($1)`: the planner cannot size an array parameter, and
//! without it hash-joins the whole table (a scan of every job per batch);
//! with it, it looks the rows up in the primary key.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use crate::store::{JobState, NewJob, NodeState, StoreError, TaskState, Write};

/// Apply `writes` in order on `tx` (inside a transaction).
pub(super) async fn apply(tx: &mut PgConnection, writes: &[Write]) -> Result<(), StoreError> {
    let mut events: Vec<&Write> = Vec::new();
    let mut audits: Vec<&Write> = Vec::new();
    let mut hints: Vec<&Write> = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        let w = &writes[i];
        match w {
            Write::Audit { .. } => {
                audits.push(w);
                i += 1;
                continue;
            }
            Write::Answer { .. } | Write::Notify { .. } => {
                hints.push(w);
                i += 1;
                continue;
            }
            Write::Event { .. } => {
                events.push(w);
                i += 1;
                continue;
            }
            Write::UpsertNode(_) | Write::RemoveNode { .. } | Write::Interrupted { .. } => {
                apply_one(tx, w).await?;
                i += 1;
                continue;
            }
            _ => {}
        }
        // A run of one kind (events set aside), each job or node at most once.
        let kind = std::mem::discriminant(w);
        let mut run: Vec<&Write> = Vec::new();
        let mut keys = HashSet::new();
        while i < writes.len() {
            match &writes[i] {
                e @ Write::Event { .. } => events.push(e),
                a @ Write::Audit { .. } => audits.push(a),
                h @ (Write::Answer { .. } | Write::Notify { .. }) => hints.push(h),
                x if std::mem::discriminant(x) == kind && keys.insert(key_of(x)) => run.push(x),
                _ => break,
            }
            i += 1;
        }
        match w {
            Write::InsertJob { .. } => insert_jobs(tx, &run).await?,
            Write::StartJob { .. } => start_jobs(tx, &run).await?,
            Write::NodeState { .. } => node_states(tx, &run).await?,
            Write::JobState { .. } => job_states(tx, &run).await?,
            Write::TaskState { .. } => task_states(tx, &run).await?,
            Write::Heartbeat { .. } => heartbeats(tx, &run).await?,
            _ => unreachable!("handled above"),
        }
    }
    insert_events(tx, &events).await?;
    insert_audits(tx, &audits).await?;
    answers_and_hints(tx, &hints).await
}

/// Inbox answers (one statement), then the hints, sent by PostgreSQL when
/// the transaction commits: which requests are answered, and the batch's
/// own hints. A payload stays under NOTIFY's 8,000 bytes.
async fn answers_and_hints(tx: &mut PgConnection, hints: &[&Write]) -> Result<(), StoreError> {
    let (mut ids, mut bodies, mut ats) = (Vec::new(), Vec::new(), Vec::new());
    let mut notes: Vec<(&str, String)> = Vec::new();
    for w in hints {
        match w {
            Write::Answer { inbox, body, at } => {
                ids.push(*inbox);
                bodies.push(body.as_str());
                ats.push(*at);
            }
            Write::Notify { channel, payload } => notes.push((channel, payload.clone())),
            _ => unreachable!("answers and hints"),
        }
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE inbox SET answer = v.answer, answered_ms = v.at \
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[]) AS v(id, answer, at) \
             WHERE inbox.id = v.id AND inbox.id = ANY($1)",
        )
        .bind(&ids)
        .bind(&bodies)
        .bind(&ats)
        .execute(&mut *tx)
        .await?;
        let mut payload = String::new();
        for id in &ids {
            if payload.len() > 7_900 {
                notes.push((
                    crate::store::channels::ANSWERS,
                    std::mem::take(&mut payload),
                ));
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(&id.to_string());
        }
        notes.push((crate::store::channels::ANSWERS, payload));
    }
    if !notes.is_empty() {
        let (chans, payloads): (Vec<&str>, Vec<String>) = notes.into_iter().unzip();
        sqlx::query("SELECT pg_notify(c, p) FROM UNNEST($1::TEXT[], $2::TEXT[]) AS v(c, p)")
            .bind(&chans)
            .bind(&payloads)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The row a write of a run changes: a job, or a node.
fn key_of(w: &Write) -> i64 {
    match w {
        Write::InsertJob { id, .. } => *id,
        Write::StartJob { job, .. } | Write::JobState { job, .. } => *job,
        Write::TaskState { job, .. } => *job,
        Write::NodeState { node, .. } | Write::Heartbeat { node, .. } => *node,
        _ => 0,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("strings serialise")
}

async fn insert_jobs(tx: &mut PgConnection, run: &[&Write]) -> Result<(), StoreError> {
    let n = run.len();
    let mut c = JobColumns::with_capacity(n);
    for w in run {
        let Write::InsertJob {
            id,
            tenant_id,
            job: j,
            at,
        } = w
        else {
            unreachable!("a run of job inserts")
        };
        c.id.push(*id);
        c.tenant.push(*tenant_id);
        c.name.push(j.name.clone());
        c.command.push(json(&j.command));
        c.tasks.push(j.tasks);
        c.cpu.push(j.cpu_milli);
        c.mem.push(j.memory_mib);
        c.num_gpu.push(j.num_gpu);
        c.gpu_milli.push(j.gpu_milli);
        c.models.push(json(&j.gpu_models));
        c.class.push(j.class.as_str());
        c.env.push(json(&j.env));
        c.workdir.push(j.workdir.clone());
        c.max_runtime.push(j.max_runtime_s);
        c.retries.push(j.retries);
        c.at.push(*at);
        c.idem.push(j.idem_key.clone());
        c.idem_hash.push(j.idem_hash.clone());
    }
    sqlx::query(&format!(
        "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, \
         gpu_milli, gpu_models, class, env, workdir, max_runtime_s, retries, submitted_ms, idem_key, \
         idem_hash, state) \
         SELECT *, '{}' FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
         $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], \
         $11::text[], $12::text[], $13::text[], $14::bigint[], $15::bigint[], $16::bigint[], \
         $17::text[], $18::text[])",
        JobState::Pending.as_str()
    ))
    .bind(c.id)
    .bind(c.tenant)
    .bind(c.name)
    .bind(c.command)
    .bind(c.tasks)
    .bind(c.cpu)
    .bind(c.mem)
    .bind(c.num_gpu)
    .bind(c.gpu_milli)
    .bind(c.models)
    .bind(c.class)
    .bind(c.env)
    .bind(c.workdir)
    .bind(c.max_runtime)
    .bind(c.retries)
    .bind(c.at)
    .bind(c.idem)
    .bind(c.idem_hash)
    .execute(&mut *tx)
    .await?;
    // A model service's replicas: recorded with the job, in its transaction.
    for w in run {
        if let Write::InsertJob {
            id,
            job: NewJob {
                service: Some(s), ..
            },
            ..
        } = w
        {
            sqlx::query("INSERT INTO replicas (job_id, service_id) VALUES ($1, $2)")
                .bind(id)
                .bind(s)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

/// The columns of a run of job inserts, as arrays.
struct JobColumns {
    id: Vec<i64>,
    tenant: Vec<i64>,
    name: Vec<String>,
    command: Vec<String>,
    tasks: Vec<i64>,
    cpu: Vec<i64>,
    mem: Vec<i64>,
    num_gpu: Vec<i64>,
    gpu_milli: Vec<i64>,
    models: Vec<String>,
    class: Vec<&'static str>,
    env: Vec<String>,
    workdir: Vec<String>,
    max_runtime: Vec<Option<i64>>,
    retries: Vec<i64>,
    at: Vec<i64>,
    idem: Vec<Option<String>>,
    idem_hash: Vec<Option<String>>,
}

impl JobColumns {
    fn with_capacity(n: usize) -> JobColumns {
        JobColumns {
            id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            command: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
            mem: Vec::with_capacity(n),
            num_gpu: Vec::with_capacity(n),
            gpu_milli: Vec::with_capacity(n),
            models: Vec::with_capacity(n),
            class: Vec::with_capacity(n),
            env: Vec::with_capacity(n),
            workdir: Vec::with_capacity(n),
            max_runtime: Vec::with_capacity(n),
            retries: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            idem: Vec::with_capacity(n),
            idem_hash: Vec::with_capacity(n),
        }
    }
}

/// Job starts: each job's row, and a row per task (with the GPU model it
/// runs on, kept should the node's inventory change later).
async fn start_jobs(tx: &mut PgConnection, run: &[&Write]) -> Result<(), StoreError> {
    let (mut jid, mut jrun, mut jat) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tjob, mut trun, mut tidx, mut tnode, mut tmask, mut tat) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for w in run {
        let Write::StartJob {
            job,
            run,
            at,
            tasks,
        } = w
        else {
            unreachable!("a run of job starts")
        };
        jid.push(*job);
        jrun.push(*run);
        jat.push(*at);
        for (i, (node, mask)) in tasks.iter().enumerate() {
            tjob.push(*job);
            trun.push(*run);
            tidx.push(i as i64);
            tnode.push(*node);
            tmask.push(*mask);
            tat.push(*at);
        }
    }
    sqlx::query(&format!(
        "UPDATE jobs SET state = '{}', run = v.run, started_ms = v.at \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, run, at) \
         WHERE jobs.id = v.id AND jobs.id = ANY ($1)",
        JobState::Running.as_str()
    ))
    .bind(jid)
    .bind(jrun)
    .bind(jat)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO tasks (job_id, run, idx, node_id, gpus, started_ms, state, gpu_model) \
         SELECT v.job, v.run, v.idx, v.node, v.gpus, v.at, '{}', n.gpu_model \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
         $6::bigint[]) AS v(job, run, idx, node, gpus, at) \
         LEFT JOIN nodes n ON n.id = v.node",
        TaskState::Assigned.as_str()
    ))
    .bind(tjob)
    .bind(trun)
    .bind(tidx)
    .bind(tnode)
    .bind(tmask)
    .bind(tat)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn job_states(tx: &mut PgConnection, run: &[&Write]) -> Result<(), StoreError> {
    let (mut id, mut state, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for w in run {
        let Write::JobState {
            job,
            state: s,
            ended: e,
        } = w
        else {
            unreachable!("a run of job states")
        };
        id.push(*job);
        state.push(s.as_str());
        ended.push(*e);
    }
    sqlx::query(
        "UPDATE jobs SET state = v.state, ended_ms = v.ended \
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS v(id, state, ended) \
         WHERE jobs.id = v.id AND jobs.id = ANY ($1)",
    )
    .bind(id)
    .bind(state)
    .bind(ended)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Task transitions of distinct jobs: each moves the tasks of one attempt
/// (one task, or those on one node, or all) that are in one of its `from`
/// states.
async fn task_states(tx: &mut PgConnection, run: &[&Write]) -> Result<(), StoreError> {
    let n = run.len();
    let mut job = Vec::with_capacity(n);
    let mut jrun = Vec::with_capacity(n);
    let mut task = Vec::with_capacity(n);
    let mut node = Vec::with_capacity(n);
    let mut from = Vec::with_capacity(n);
    let mut to = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut code = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    for w in run {
        let Write::TaskState {
            job: j,
            run: r,
            task: t,
            node: nd,
            from: f,
            to: s,
            at: a,
            exit_code,
            reason: why,
        } = w
        else {
            unreachable!("a run of task states")
        };
        job.push(*j);
        jrun.push(*r);
        task.push(*t);
        node.push(*nd);
        from.push(f.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
        to.push(s.as_str());
        at.push(*a);
        code.push(*exit_code);
        reason.push(why.as_str());
    }
    sqlx::query(
        "UPDATE tasks SET state = v.to_state, ended_ms = COALESCE(v.at, tasks.ended_ms), \
         exit_code = COALESCE(v.code, tasks.exit_code), \
         reason = CASE WHEN v.reason = '' THEN tasks.reason ELSE v.reason END \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], \
         $6::text[], $7::bigint[], $8::bigint[], $9::text[]) \
         AS v(job, run, idx, node, from_states, to_state, at, code, reason) \
         WHERE tasks.job_id = v.job AND tasks.job_id = ANY ($1) AND tasks.run = v.run \
         AND (v.idx IS NULL OR tasks.idx = v.idx) AND (v.node IS NULL OR tasks.node_id = v.node) \
         AND tasks.state = ANY (string_to_array(v.from_states, ','))",
    )
    .bind(job)
    .bind(jrun)
    .bind(task)
    .bind(node)
    .bind(from)
    .bind(to)
    .bind(at)
    .bind(code)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn heartbeats(tx: &mut PgConnection, run: &[&Write]) -> Result<(), StoreError> {
    let (mut id, mut at) = (Vec::new(), Vec::new());
    for w in run {
        let Write::Heartbeat { node, at: a } = w else {
            unreachable!("a run of heartbeats")
        };
        id.push(*node);
        at.push(*a);
    }
    sqlx::query(
        "UPDATE nodes SET last_heartbeat_ms = v.at \
         FROM UNNEST($1::bigint[], $2::bigint[]) AS v(id, at) \
         WHERE nodes.id = v.id AND nodes.id = ANY ($1)",
    )
    .bind(id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_events(tx: &mut PgConnection, events: &[&Write]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let (mut job, mut run, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut kind, mut detail) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for w in events {
        let Write::Event {
            job: j,
            run: r,
            at: a,
            kind: k,
            detail: d,
        } = w
        else {
            unreachable!("events")
        };
        job.push(*j);
        run.push(*r);
        at.push(*a);
        kind.push(k.as_str());
        detail.push(d.as_str());
    }
    // In order: ids follow the batch's order, as the history reads them.
    sqlx::query(
        "INSERT INTO job_events (job_id, run, at_ms, kind, detail) \
         SELECT job, run, at, kind, detail FROM UNNEST($1::bigint[], $2::bigint[], \
         $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY AS v(job, run, at, kind, detail, k) \
         ORDER BY k",
    )
    .bind(job)
    .bind(run)
    .bind(at)
    .bind(kind)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_audits(tx: &mut PgConnection, audits: &[&Write]) -> Result<(), StoreError> {
    if audits.is_empty() {
        return Ok(());
    }
    let (mut at, mut actor, mut action, mut target, mut detail) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for w in audits {
        let Write::Audit {
            at: a,
            actor: who,
            action: what,
            target: t,
            detail: d,
        } = w
        else {
            unreachable!("audit entries")
        };
        at.push(*a);
        actor.push(who.as_str());
        action.push(*what);
        target.push(t.as_str());
        detail.push(d.as_str());
    }
    sqlx::query(
        "INSERT INTO audit (at_ms, actor, action, target, detail) \
         SELECT at, actor, action, target, detail FROM UNNEST($1::bigint[], $2::text[], \
         $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS v(at, actor, action, target, \
         detail, k) ORDER BY k",
    )
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A write that is not batched: a few single-row statements.
async fn apply_one(tx: &mut PgConnection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::UpsertNode(n) => {
            sqlx::query(
                "INSERT INTO nodes (id, name, addr, gpu_model, gpus, gpu_memory_mib, cpu_milli, \
                 memory_mib, rack, labels, state, registered_ms, last_heartbeat_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, \
                 gpu_model = excluded.gpu_model, gpus = excluded.gpus, \
                 gpu_memory_mib = excluded.gpu_memory_mib, cpu_milli = excluded.cpu_milli, \
                 memory_mib = excluded.memory_mib, rack = excluded.rack, \
                 labels = excluded.labels, state = excluded.state, \
                 last_heartbeat_ms = excluded.last_heartbeat_ms, removed_ms = NULL",
            )
            .bind(n.id)
            .bind(&n.name)
            .bind(&n.addr)
            .bind(&n.gpu_model)
            .bind(n.gpus)
            .bind(n.gpu_memory_mib)
            .bind(n.cpu_milli)
            .bind(n.memory_mib)
            .bind(&n.rack)
            .bind(json(&n.labels))
            .bind(n.state.as_str())
            .bind(n.registered_ms)
            .bind(n.last_heartbeat_ms)
            .execute(&mut *tx)
            .await?;
            node_spans(tx, &[(n.id, n.state, n.last_heartbeat_ms)]).await?;
        }
        Write::RemoveNode { node, name, at } => {
            sqlx::query("UPDATE nodes SET state = 'down', removed_ms = $1 WHERE id = $2")
                .bind(at)
                .bind(node)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE node_spans SET end_ms = GREATEST($1, start_ms) \
                 WHERE node_id = $2 AND end_ms IS NULL",
            )
            .bind(at)
            .bind(node)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE node = $2 AND revoked_ms IS NULL")
                .bind(at)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE tasks SET state = 'KILLED', \
                 reason = 'node removed before its agent confirmed the stop' \
                 WHERE node_id = $1 AND state = 'KILLING'",
            )
            .bind(node)
            .execute(&mut *tx)
            .await?;
        }
        Write::Interrupted { job } => {
            sqlx::query("UPDATE jobs SET interrupted = interrupted + 1 WHERE id = $1")
                .bind(job)
                .execute(&mut *tx)
                .await?;
        }
        _ => unreachable!("batched by apply"),
    }
    Ok(())
}

/// State changes of distinct nodes: the node rows, and their history.
async fn node_states(tx: &mut PgConnection, run: &[&Write]) -> Result<(), StoreError> {
    let changes: Vec<(i64, NodeState, i64)> = run
        .iter()
        .map(|w| match w {
            Write::NodeState { node, state, at } => (*node, *state, *at),
            _ => unreachable!("a run of node states"),
        })
        .collect();
    let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
    let states: Vec<&str> = changes.iter().map(|c| c.1.as_str()).collect();
    sqlx::query(
        "UPDATE nodes SET state = v.state FROM UNNEST($1::bigint[], $2::text[]) AS v(id, state) \
         WHERE nodes.id = v.id AND nodes.id = ANY ($1)",
    )
    .bind(ids)
    .bind(states)
    .execute(&mut *tx)
    .await?;
    node_spans(tx, &changes).await
}

/// A node's inventory (model, GPUs) and its open span (start, state, model,
/// GPUs), if any.
type Open = (
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// A node's id, then [`Open`], as one row.
type OpenRow = (
    i64,
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// Record that each `(node, state, at)` of distinct nodes holds from `at`:
/// close the node's open span and open a new one (with the node's stored
/// inventory), unless nothing changed. The usual change (the open span began
/// before it) is done set-wise; the others go through [`odd_span`].
async fn node_spans(
    tx: &mut PgConnection,
    changes: &[(i64, NodeState, i64)],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
    let rows: Vec<OpenRow> = sqlx::query_as(
        "SELECT n.id, n.gpu_model, n.gpus, s.start_ms, s.state, s.gpu_model, s.gpus \
             FROM nodes n LEFT JOIN node_spans s ON s.node_id = n.id AND s.end_ms IS NULL \
             WHERE n.id = ANY ($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let now: HashMap<i64, Open> = rows
        .into_iter()
        .map(|(id, model, gpus, start, st, m, g)| (id, (model, gpus, start, st, m, g)))
        .collect();
    let (mut c_at, mut c_node, mut c_start) = (Vec::new(), Vec::new(), Vec::new());
    let (mut o_node, mut o_at, mut o_state, mut o_model, mut o_gpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &(node, state, at) in changes {
        let Some(row) = now.get(&node) else {
            continue; // no such node: nothing to record
        };
        let (model, gpus, start, st, m, g) = row;
        match start {
            Some(start) if *start < at => {
                if st.as_deref() == Some(state.as_str()) && m == model && *g == Some(*gpus) {
                    continue; // nothing changed
                }
                c_at.push(at);
                c_node.push(node);
                c_start.push(*start);
                o_node.push(node);
                o_at.push(at);
                o_state.push(state.as_str());
                o_model.push(model.clone());
                o_gpus.push(*gpus);
            }
            _ => odd_span(tx, node, state, at, row).await?,
        }
    }
    if !c_node.is_empty() {
        sqlx::query(
            "UPDATE node_spans SET end_ms = v.at \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS v(at, node, start) \
             WHERE node_spans.node_id = v.node AND node_spans.node_id = ANY ($2) \
             AND node_spans.start_ms = v.start",
        )
        .bind(c_at)
        .bind(c_node)
        .bind(c_start)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO node_spans (node_id, start_ms, state, gpu_model, gpus) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
             $5::bigint[])",
        )
        .bind(o_node)
        .bind(o_at)
        .bind(o_state)
        .bind(o_model)
        .bind(o_gpus)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// [`node_spans`] for a change the usual path does not cover: a second
/// change in the open span's millisecond, or one dated before the open span
/// (a lost node is down from its last heartbeat, which can precede a drain).
/// Later spans are replaced, so the spans of a node never overlap.
async fn odd_span(
    tx: &mut PgConnection,
    node: i64,
    state: NodeState,
    at: i64,
    row: &Open,
) -> Result<(), StoreError> {
    let (model, gpus, start, st, m, g) = row;
    if *start == Some(at) {
        if st.as_deref() == Some(state.as_str()) && m == model && *g == Some(*gpus) {
            return Ok(()); // nothing changed
        }
        // Two changes in one millisecond: the later one stands.
        sqlx::query(
            "UPDATE node_spans SET state = $1, gpu_model = $2, gpus = $3 \
             WHERE node_id = $4 AND start_ms = $5",
        )
        .bind(state.as_str())
        .bind(model)
        .bind(gpus)
        .bind(node)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        return Ok(());
    }
    // No open span, or one that starts after `at`: spans from `at` on are
    // replaced, the one covering `at` ends there.
    sqlx::query("DELETE FROM node_spans WHERE node_id = $1 AND start_ms >= $2")
        .bind(node)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE node_spans SET end_ms = $1 WHERE node_id = $2 AND (end_ms IS NULL OR end_ms > $1)",
    )
    .bind(at)
    .bind(node)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO node_spans (node_id, start_ms, end_ms, state, gpu_model, gpus) \
         VALUES ($1, $2, NULL, $3, $4, $5)",
    )
    .bind(node)
    .bind(at)
    .bind(state.as_str())
    .bind(model)
    .bind(gpus)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
