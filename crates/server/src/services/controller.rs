//! The services' controller: one tick every `RouterConfig::tick` (or at
//! once when a request meets a service without replicas).
//!
//! Each tick reads the services (every few seconds, or after a change) and
//! each service's live replica jobs from the store, then, per service:
//! follows its replicas (a replica job running on a node is probed at
//! `addr:replica_port`, one waiting for GPUs is pending, one that ended
//! unasked is a failure: the next start waits 2^n s, at most 5 min),
//! replaces replicas not ready or not answering for `start_timeout_s`,
//! probes those due, and — on the replica that runs the scheduling loop —
//! asks the autoscaler for a count and submits or stops replica jobs:
//! pending ones are cancelled first, then unready ones; a ready one drains
//! (no new request) and is cancelled once its requests end (or after
//! `DRAIN_GRACE`). A cancelled replica's GPUs go back to the queue.

use std::collections::{HashMap, HashSet};

use http_body_util::BodyExt;
use suanli_api::{JobState, ServiceSpec};

use super::{scale_config, Endpoint, Services, Svc};
use crate::store::{NewJob, ReplicaRow, RouterCount, ServiceRow};

/// Requests in flight one other router may add to a service's count (a
/// bad row cannot ask for more than this).
const MAX_PEER_INFLIGHT: i64 = 1_000_000;
/// How long a draining replica may take to finish its requests.
const DRAIN_GRACE_MS: u64 = 120_000;
/// How often the services are read again without a change through this replica.
const RELOAD_MS: u64 = 2_000;
/// The longest wait before a new start after failures.
const MAX_BACKOFF_MS: u64 = 300_000;

pub(super) async fn run(s: Services) {
    let mut last_load: Option<u64> = None;
    loop {
        let now = s.now();
        let reload =
            !s.reg().loaded || last_load.is_none_or(|t| now.saturating_sub(t) >= RELOAD_MS);
        if reload {
            match load(&s).await {
                Ok(()) => last_load = Some(now),
                Err(e) => tracing::warn!(error = %e, "services: cannot read the store"),
            }
        }
        if let Err(e) = tick(&s).await {
            tracing::warn!(error = %e, "services: tick failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(s.0.cfg.tick) => {}
            _ = s.0.poke.notified() => {}
        }
    }
}

/// Read the services and the tenants' limits; follow changes.
async fn load(s: &Services) -> Result<(), String> {
    let super::RouterServices {
        services: rows,
        limits,
    } = s.0.source.services().await?;
    let leading = s.leading();
    {
        let mut reg = s.reg();
        reg.loaded = true;
        reg.limits = limits
            .into_iter()
            .map(|(t, l)| {
                (
                    t,
                    suanli_serve::Limits {
                        requests_per_minute: l.requests_per_minute,
                        tokens_per_minute: l.tokens_per_minute,
                    },
                )
            })
            .collect();
        let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        reg.by_id.retain(|id, _| ids.contains(id));
        for row in rows {
            match reg.by_id.get_mut(&row.id) {
                Some(svc) if svc.row.updated_ms != row.updated_ms => update(svc, row),
                Some(_) => {}
                None => match Svc::new(row.clone(), s.0.cfg.route) {
                    Ok(svc) => {
                        reg.by_id.insert(row.id, svc);
                    }
                    Err(e) => {
                        tracing::error!(service = row.id, error = %e, "service settings refused")
                    }
                },
            }
        }
    }
    // A deleted service's replicas stop (their GPUs go back to the queue),
    // read from the store: also those of a service deleted through another
    // replica, or just before a crash.
    if let (true, Some(control)) = (leading, &s.0.control) {
        for job in s.0.source.orphan_replicas().await? {
            let _ = control.cancel(job, None).await;
        }
    }
    Ok(())
}

fn update(svc: &mut Svc, row: ServiceRow) {
    if let Err(e) = svc.scaler.reconfigure(scale_config(&row.spec)) {
        tracing::error!(service = row.id, error = %e, "new scaling settings refused");
        return;
    }
    svc.row = row;
}

/// What one service's tick does outside the lock.
#[derive(Default)]
struct Actions {
    probes: Vec<(i64, String)>,
    submit: u32,
    cancel: Vec<i64>,
}

async fn tick(s: &Services) -> Result<(), String> {
    // Every router's counters first: the scaling below counts them.
    if let Err(e) = exchange(s).await {
        tracing::warn!(error = %e, "services: cannot share the router's counters");
    }
    let ids: Vec<i64> = s.reg().by_id.keys().copied().collect();
    let leading = s.leading();
    let mut all = s.0.source.replicas(&ids).await?;
    for id in ids {
        let rows = all.remove(&id).unwrap_or_default();
        let now = s.now();
        let (acts, row) = {
            let mut reg = s.reg();
            let Some(svc) = reg.by_id.get_mut(&id) else {
                continue;
            };
            (step(svc, &rows, now, leading), svc.row.clone())
        };
        for (job, authority) in acts.probes {
            let s2 = s.clone();
            let (path, key) = (row.spec.ready_path.clone(), row.key.clone());
            tokio::spawn(async move {
                let ok = probe(&s2, &authority, &path, &key).await;
                s2.probed(id, job, ok);
            });
        }
        let Some(control) = &s.0.control else {
            continue;
        };
        for job in acts.cancel {
            match control.cancel(job, None).await {
                Ok(Ok(())) | Ok(Err(_)) => {}
                Err(e) => tracing::warn!(job, error = ?e, "cannot stop a replica"),
            }
        }
        for _ in 0..acts.submit {
            let job = replica_job(&row);
            match control.submit(row.tenant_id, row.tenant.clone(), job).await {
                Ok(Ok(j)) => {
                    if let Some(svc) = s.reg().by_id.get_mut(&id) {
                        svc.pending.insert(j.id);
                    }
                }
                Ok(Err(r)) => {
                    let why = format!("cannot start a replica: {}", refusal_text(r));
                    tracing::warn!(service = id, "{why}");
                    if let Some(svc) = s.reg().by_id.get_mut(&id) {
                        svc.last_failure = Some(why);
                        fail(svc, s.now());
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(service = id, error = ?e, "cannot start a replica");
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The job that runs one replica of `row`.
fn replica_job(row: &ServiceRow) -> NewJob {
    let sp: &ServiceSpec = &row.spec;
    NewJob {
        name: format!("{}-replica", row.name),
        command: sp.command.clone(),
        tasks: 1,
        cpu_milli: sp.cpu_milli,
        memory_mib: sp.memory_mib,
        num_gpu: sp.num_gpu,
        gpu_milli: sp.gpu_milli,
        gpu_models: sp.gpu_models.clone(),
        class: sp.class,
        env: sp.env.clone(),
        workdir: sp.workdir.clone(),
        max_runtime_s: None,
        // A failed replica is replaced by the controller (with back-off),
        // not retried by the loop.
        retries: 0,
        idem_key: None,
        idem_hash: None,
        service: Some(row.id),
    }
}

fn refusal_text(r: crate::control::Refusal) -> String {
    use crate::control::Refusal;
    match r {
        Refusal::Unsatisfiable(d) => format!("it can never run on this pool: {d}"),
        Refusal::Invalid { field, detail } => format!("{field}: {detail}"),
        Refusal::Conflict(d) => d,
        other => format!("{other:?}"),
    }
}

/// A failure: the next start waits.
fn fail(svc: &mut Svc, now: u64) {
    svc.failures = svc.failures.saturating_add(1);
    let wait = 1000u64
        .saturating_mul(1 << svc.failures.min(10))
        .min(MAX_BACKOFF_MS);
    svc.retry_at = now + wait;
}

/// Follow the store's replica rows, then decide (pure but for the clock
/// passed in).
fn step(svc: &mut Svc, rows: &[ReplicaRow], now: u64, leading: bool) -> Actions {
    let mut acts = Actions::default();
    let live: HashMap<i64, &ReplicaRow> = rows.iter().map(|r| (r.job, r)).collect();
    let timeout = svc.row.spec.start_timeout_s.saturating_mul(1000);
    // Replicas that ended.
    let known: Vec<i64> = svc
        .endpoints
        .keys()
        .chain(svc.pending.iter())
        .copied()
        .collect();
    for job in known {
        if live.contains_key(&job) {
            continue;
        }
        if !svc.stopping.remove(&job) {
            svc.last_failure = Some(format!(
                "replica job {job} ended (see `suanli job show {job}`)"
            ));
            fail(svc, now);
        }
        svc.endpoints.remove(&job);
        svc.pending.remove(&job);
        svc.draining.remove(&job);
        svc.replicas.remove(job as u64);
    }
    svc.stopping.retain(|j| live.contains_key(j));
    for r in rows {
        let running = r.state == JobState::Running;
        match (running, &r.addr, &r.node) {
            (true, Some(addr), Some(node)) => {
                svc.pending.remove(&r.job);
                let fresh = svc.endpoints.get(&r.job).is_none_or(|e| e.run != r.run);
                if fresh {
                    // A new attempt (or one this router has not seen).
                    svc.replicas.remove(r.job as u64);
                    svc.replicas.add(r.job as u64, now);
                    svc.endpoints.insert(
                        r.job,
                        Endpoint {
                            run: r.run,
                            authority: authority(addr, suanli_api::replica_port(r.job, r.run)),
                            node: node.clone(),
                            since: now,
                            last_ok: now,
                        },
                    );
                    if svc.draining.contains_key(&r.job) {
                        svc.replicas.drain(r.job as u64);
                    }
                }
            }
            _ => {
                // Waiting for GPUs (or requeued after its node was lost).
                if svc.endpoints.remove(&r.job).is_some() {
                    svc.replicas.remove(r.job as u64);
                }
                svc.pending.insert(r.job);
            }
        }
    }
    // Probes.
    for id in svc.replicas.probes_due(now) {
        if let Some(e) = svc.endpoints.get(&(id as i64)) {
            acts.probes.push((id as i64, e.authority.clone()));
        }
    }
    if !leading {
        return acts;
    }
    // Replace replicas that never became ready, or stopped answering, for
    // the start timeout.
    let stuck: Vec<i64> = svc
        .endpoints
        .iter()
        .filter(|(j, e)| {
            !svc.stopping.contains(j)
                && !svc.draining.contains_key(j)
                && svc.replicas.health(**j as u64) != Some(suanli_serve::Health::Ready)
                && now.saturating_sub(e.last_ok.max(e.since)) >= timeout
        })
        .map(|(j, _)| *j)
        .collect();
    for job in stuck {
        svc.last_failure = Some(format!(
            "replica job {job} not ready or not answering its probe for {} s: replaced",
            timeout / 1000
        ));
        fail(svc, now);
        svc.stopping.insert(job);
        svc.replicas.drain(job as u64);
        acts.cancel.push(job);
    }
    // Drained replicas stop.
    let done: Vec<i64> = svc
        .draining
        .iter()
        .filter(|(j, since)| {
            svc.replicas.outstanding(**j as u64).unwrap_or(0) == 0
                || now.saturating_sub(**since) >= DRAIN_GRACE_MS
        })
        .map(|(j, _)| *j)
        .filter(|j| !svc.stopping.contains(j))
        .collect();
    for job in done {
        svc.stopping.insert(job);
        acts.cancel.push(job);
    }
    // Scale, on the requests of every router.
    let current = svc.current();
    let wish = svc
        .scaler
        .tick(now, svc.inflight.saturating_add(svc.peer_inflight), current);
    svc.desired = wish.desired;
    if wish.desired > current {
        if now >= svc.retry_at {
            acts.submit = wish.desired - current;
        }
    } else if wish.desired < current {
        let mut surplus = current - wish.desired;
        // Pending first, then unready, then the ready ones holding least.
        let pending: Vec<i64> = svc
            .pending
            .iter()
            .rev()
            .filter(|j| !svc.stopping.contains(j))
            .copied()
            .collect();
        for job in pending {
            if surplus == 0 {
                break;
            }
            svc.stopping.insert(job);
            acts.cancel.push(job);
            surplus -= 1;
        }
        let mut others: Vec<(bool, u32, i64)> = svc
            .endpoints
            .keys()
            .filter(|j| !svc.stopping.contains(j) && !svc.draining.contains_key(j))
            .map(|&j| {
                let ready = svc.replicas.health(j as u64) == Some(suanli_serve::Health::Ready);
                (ready, svc.replicas.outstanding(j as u64).unwrap_or(0), j)
            })
            .collect();
        others.sort();
        for (ready, _, job) in others {
            if surplus == 0 {
                break;
            }
            if ready {
                svc.replicas.drain(job as u64);
                svc.draining.insert(job, now);
            } else {
                svc.stopping.insert(job);
                svc.replicas.drain(job as u64);
                acts.cancel.push(job);
            }
            surplus -= 1;
        }
    }
    acts
}

fn authority(addr: &str, port: u16) -> String {
    // An IPv6 address needs brackets; a name or IPv4 address does not.
    let host = addr.trim();
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `GET http://authority{path}` with the replica's key: ready on a 200 in time.
async fn probe(s: &Services, authority: &str, path: &str, key: &str) -> bool {
    let Ok(req) = hyper::Request::get(format!("http://{authority}{path}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
    else {
        return false;
    };
    let call = async {
        let resp = s.0.client.request(req).await.ok()?;
        let ok = resp.status() == hyper::StatusCode::OK;
        // Read the (small) body so the connection can be reused.
        let _ = resp.into_body().collect().await;
        Some(ok)
    };
    matches!(
        tokio::time::timeout(s.0.cfg.probe_timeout, call).await,
        Ok(Some(true))
    )
}

impl Services {
    fn probed(&self, service: i64, job: i64, ok: bool) {
        let now = self.now();
        let mut reg = self.reg();
        let Some(svc) = reg.by_id.get_mut(&service) else {
            return;
        };
        let was = svc.replicas.health(job as u64);
        svc.replicas.probed(job as u64, ok);
        if ok {
            if let Some(e) = svc.endpoints.get_mut(&job) {
                e.last_ok = now;
            }
        }
        let is = svc.replicas.health(job as u64);
        if is == Some(suanli_serve::Health::Ready) && was != is {
            svc.failures = 0;
            svc.last_failure = None;
            svc.ready.send_modify(|n| *n += 1);
        }
    }
}

/// Write this router's counters and take in the other routers': their
/// requests in flight per service (counted by the leader's autoscaler, and
/// a request held at another router wakes a service at zero), and the
/// requests and tokens they let in per tenant since last seen (charged to
/// this router's rate limits, so a tenant's limit holds across routers to
/// within one tick of traffic).
async fn exchange(s: &Services) -> Result<(), String> {
    let rows = {
        let reg = s.reg();
        let mut rows: Vec<RouterCount> = reg
            .by_id
            .values()
            .map(|v| RouterCount {
                router: String::new(),
                kind: "service".into(),
                id: v.row.id,
                inflight: i64::from(v.inflight),
                requests: v.requests.min(i64::MAX as u64) as i64,
                tokens: 0,
                at_ms: 0,
            })
            .collect();
        rows.extend(reg.tenant_counts.iter().map(|(&t, &(r, k))| RouterCount {
            router: String::new(),
            kind: "tenant".into(),
            id: t,
            inflight: 0,
            requests: r.min(i64::MAX as u64) as i64,
            tokens: k.min(i64::MAX as u64) as i64,
            at_ms: 0,
        }));
        rows
    };
    let others =
        s.0.source
            .exchange(&super::Exchange {
                router: s.0.router_id.clone(),
                rows,
            })
            .await;
    let now = s.now();
    let mut reg = s.reg();
    let reg = &mut *reg;
    // Counts not refreshed are not counted: a failed exchange forgets the
    // other routers' requests in flight rather than scale on stale ones.
    for svc in reg.by_id.values_mut() {
        svc.peer_inflight = 0;
    }
    let others = others?;
    let routers: HashSet<&str> = others.iter().map(|c| c.router.as_str()).collect();
    let mut charges: Vec<(i64, u64, u64)> = Vec::new();
    for c in &others {
        let (requests, tokens) = (c.requests.max(0) as u64, c.tokens.max(0) as u64);
        // A router seen for the first time (just started, or back after
        // more than `FRESH_MS` unseen): what it counted so far is history.
        let known = reg.peers.contains(&c.router);
        match c.kind.as_str() {
            "service" => {
                let Some(svc) = reg.by_id.get_mut(&c.id) else {
                    continue;
                };
                svc.peer_inflight = svc
                    .peer_inflight
                    .saturating_add(c.inflight.clamp(0, MAX_PEER_INFLIGHT) as u32);
                let seen = svc.peer_requests.insert(c.router.clone(), requests);
                if c.inflight > 0 || seen.is_some_and(|n| requests > n) {
                    svc.scaler.note_request(now);
                }
            }
            "tenant" => {
                let seen = reg
                    .peer_tenants
                    .insert((c.router.clone(), c.id), (requests, tokens));
                let (r0, k0) = match seen {
                    Some((r0, k0)) if r0 <= requests && k0 <= tokens => (r0, k0),
                    // Below the last count seen: the router restarted
                    // under the same name: all of it is new.
                    Some(_) => (0, 0),
                    // A known router's new tenant: new traffic.
                    None if known => (0, 0),
                    None => (requests, tokens),
                };
                charges.push((c.id, requests - r0, tokens - k0));
            }
            _ => {}
        }
    }
    // Forget routers no longer reporting (a restarted one has a new name).
    reg.peer_tenants
        .retain(|(r, _), _| routers.contains(r.as_str()));
    for svc in reg.by_id.values_mut() {
        svc.peer_requests
            .retain(|r, _| routers.contains(r.as_str()));
    }
    reg.peers = routers.iter().map(|r| r.to_string()).collect();
    let mut limiter = s.0.limiter.lock().unwrap_or_else(|p| p.into_inner());
    for (tenant, requests, tokens) in charges {
        if requests == 0 && tokens == 0 {
            continue;
        }
        let limits = reg.limits.get(&tenant).copied().unwrap_or_default();
        tracing::debug!(
            tenant,
            requests,
            tokens,
            ?limits,
            "charged with other routers' traffic"
        );
        limiter.charge_shared(&tenant.to_string(), limits, requests, tokens, now);
    }
    Ok(())
}
