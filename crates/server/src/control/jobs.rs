//! Jobs in the loop: submission, cancellation, the pass's decisions as
//! writes, and what a task's end means for its job (the gang completes,
//! fails, or is retried).

use suanli_sched::scheduler::Decision;

use super::core::{Core, LiveTask, TaskSt};
use super::{Refusal, TaskExit};
use crate::store::{EventKind, Job, JobState, NewJob, TaskState, Write};

impl Core {
    /// Remember a submission's idempotency key (see [`Refusal::Replayed`]).
    pub(super) fn remember_key(
        &mut self,
        at: i64,
        tenant_id: i64,
        key: String,
        job: i64,
        hash: Option<String>,
    ) {
        self.idem.insert((tenant_id, key.clone()), (job, hash));
        self.idem_order.push_back((at, tenant_id, key, job));
    }

    /// Forget the keys older than the window.
    pub(super) fn forget_keys(&mut self, now: i64) {
        while let Some((at, ..)) = self.idem_order.front() {
            if *at >= now - super::IDEMPOTENCY_WINDOW_MS {
                break;
            }
            let (_, tenant, key, job) = self.idem_order.pop_front().expect("a front");
            // Unless the key names a later job now.
            let k = (tenant, key);
            if self.idem.get(&k).map(|v| v.0) == Some(job) {
                self.idem.remove(&k);
            }
        }
    }

    pub(super) fn submit(
        &mut self,
        tenant_id: i64,
        tenant: String,
        job: NewJob,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<Job, Refusal> {
        self.tenant_names.entry(tenant_id).or_insert(tenant.clone());
        if let Some(k) = &job.idem_key {
            if let Some((id, hash)) = self.idem.get(&(tenant_id, k.clone())) {
                return Err(if *hash == job.idem_hash {
                    Refusal::Replayed(*id)
                } else {
                    Refusal::KeyReused(*id)
                });
            }
        }
        let id = self.job_ids.peek().ok_or_else(|| {
            Refusal::Conflict("no job id reserved (the loop reserves them before each step)".into())
        })?;
        let j = Job {
            id,
            tenant,
            name: job.name.clone(),
            command: job.command.clone(),
            tasks: job.tasks,
            cpu_milli: job.cpu_milli,
            memory_mib: job.memory_mib,
            num_gpu: job.num_gpu,
            gpu_milli: job.gpu_milli,
            gpu_models: job.gpu_models.clone(),
            class: job.class,
            env: job.env.clone(),
            workdir: job.workdir.clone(),
            max_runtime_s: job.max_runtime_s,
            retries: job.retries,
            run: 0,
            interrupted: 0,
            state: JobState::Pending,
            submitted_ms: now,
            started_ms: None,
            ended_ms: None,
            reason: None,
        };
        let spec = self.spec_of(&j)?;
        self.sched
            .admissible(&spec)
            .map_err(Refusal::Unsatisfiable)?;
        self.job_ids.take();
        if let Some(k) = &job.idem_key {
            self.remember_key(now, tenant_id, k.clone(), id, job.idem_hash.clone());
        }
        w.push(Write::InsertJob {
            id,
            tenant_id,
            job,
            at: now,
        });
        w.push(Write::Event {
            job: id,
            run: 0,
            at: now,
            kind: EventKind::Submitted,
            detail: String::new(),
        });
        let h = self.sched.submit(spec);
        self.track(&j, h);
        self.dirty = true;
        Ok(j)
    }

    /// Cancel a live job of `tenant` (any tenant's for the admin). A job
    /// the loop does not hold is [`Refusal::NotLive`]: the caller asks the
    /// store whether it is absent or over.
    pub(super) fn cancel(
        &mut self,
        id: i64,
        tenant: Option<i64>,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<(), Refusal> {
        let visible = self
            .jobs
            .get(&id)
            .is_some_and(|l| tenant.is_none_or(|t| t == l.tenant_id));
        if !visible {
            return Err(Refusal::NotLive);
        }
        let was_running = !self.jobs[&id].tasks.is_empty();
        self.stop_tasks(id, "cancelled", now, w);
        let l = self.untrack(id).expect("live job");
        self.sched.cancel(l.handle, now as u64);
        transition(
            w,
            (id, l.run),
            JobState::Cancelled,
            Some(now),
            EventKind::Cancelled,
            format!(
                "from {}",
                if was_running {
                    JobState::Running
                } else {
                    JobState::Pending
                }
            ),
            now,
        );
        self.dirty = true;
        Ok(())
    }

    pub(super) fn record_decisions(&mut self, now: i64, w: &mut Vec<Write>) {
        let decisions = self.sched.take_decisions();
        for d in decisions {
            match d {
                Decision::Start { job, placements } => {
                    let id = self.by_handle[&job];
                    let tasks: Vec<(i64, i64)> = placements
                        .iter()
                        .map(|p| (self.node_db[p.node as usize], p.gpus.0 as i64))
                        .collect();
                    let l = self.jobs.get_mut(&id).expect("tracked job");
                    l.run += 1;
                    l.tasks = tasks
                        .iter()
                        .map(|&(node, mask)| LiveTask {
                            node,
                            mask,
                            st: TaskSt::Assigned,
                        })
                        .collect();
                    for (i, t) in tasks.iter().enumerate() {
                        self.on_node.entry(t.0).or_default().insert((id, i as i64));
                        self.poked.insert(t.0);
                    }
                    // The attempt's STARTED event is read from its task rows.
                    w.push(Write::StartJob {
                        job: id,
                        run: l.run,
                        at: now,
                        tasks,
                    });
                }
                Decision::Preempt { job, lost_ms } => {
                    let id = self.by_handle[&job];
                    let run = self.jobs[&id].run;
                    self.stop_tasks(id, "preempted", now, w);
                    if let Some(l) = self.jobs.get_mut(&id) {
                        l.interrupted += 1;
                    }
                    w.push(Write::Interrupted { job: id });
                    transition(
                        w,
                        (id, run),
                        JobState::Pending,
                        None,
                        EventKind::Preempted,
                        format!(
                            "requeued; {:.1} s of work since the last checkpoint lost",
                            lost_ms as f64 / 1000.0
                        ),
                        now,
                    );
                }
            }
        }
    }

    /// Order the agents to stop the current attempt's live tasks.
    pub(super) fn stop_tasks(&mut self, id: i64, reason: &str, now: i64, w: &mut Vec<Write>) {
        let Some(l) = self.jobs.get_mut(&id) else {
            return;
        };
        let run = l.run;
        for (i, t) in std::mem::take(&mut l.tasks).into_iter().enumerate() {
            if matches!(t.st, TaskSt::Assigned | TaskSt::Running) {
                if let Some(set) = self.on_node.get_mut(&t.node) {
                    set.remove(&(id, i as i64));
                }
                self.killing
                    .entry(t.node)
                    .or_default()
                    .insert((id, run, i as i64), t.mask);
                self.poked.insert(t.node);
            }
        }
        w.push(Write::TaskState {
            job: id,
            run,
            task: None,
            node: None,
            from: &[TaskState::Assigned, TaskState::Running],
            to: TaskState::Killing,
            at: Some(now),
            exit_code: None,
            reason: reason.to_string(),
        });
    }

    /// A task of `node` ended (or was lost) at `now`.
    pub(super) fn task_exited(&mut self, node: i64, e: &TaskExit, now: i64, w: &mut Vec<Write>) {
        let code = e.exit_code.unwrap_or(-1);
        let how = match (e.exit_code, e.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "no exit status".to_string(),
        };
        let reason = if e.reason.is_empty() {
            how.clone()
        } else {
            format!("{how}: {}", e.reason)
        };
        let current = self.jobs.get(&e.job).is_some_and(|l| {
            l.run == e.run
                && l.tasks
                    .get(e.task as usize)
                    .is_some_and(|t| t.node == node && t.st != TaskSt::Exited(0))
        });
        if !current {
            // A task of an earlier attempt, or one being killed.
            if let Some(k) = self.killing.get_mut(&node) {
                k.remove(&(e.job, e.run, e.task));
            }
            w.push(Write::TaskState {
                job: e.job,
                run: e.run,
                task: Some(e.task),
                node: Some(node),
                from: &[TaskState::Killing],
                to: TaskState::Killed,
                at: None, // billing ended when the kill was ordered
                exit_code: e.exit_code,
                reason: reason.clone(),
            });
            return;
        }
        let lost = e.exit_code.is_none() && e.signal.is_none();
        w.push(Write::TaskState {
            job: e.job,
            run: e.run,
            task: Some(e.task),
            node: None,
            from: &[TaskState::Assigned, TaskState::Running],
            to: if lost {
                TaskState::Lost
            } else {
                TaskState::Exited
            },
            at: Some(now),
            exit_code: e.exit_code,
            reason: reason.clone(),
        });
        let l = self.jobs.get_mut(&e.job).expect("live");
        l.tasks[e.task as usize].st = TaskSt::Exited(code);
        if let Some(set) = self.on_node.get_mut(&node) {
            set.remove(&(e.job, e.task));
        }
        let l = self.jobs.get_mut(&e.job).expect("live");
        let all_ok = l.tasks.iter().all(|t| t.st == TaskSt::Exited(0));
        let (handle, run, retries) = (l.handle, l.run, l.retries);
        if e.exit_code == Some(0) && !all_ok {
            return; // wait for the rest of the gang
        }
        self.dirty = true;
        if all_ok {
            self.untrack(e.job);
            self.sched.complete(handle, now as u64);
            transition(
                w,
                (e.job, run),
                JobState::Completed,
                Some(now),
                EventKind::Completed,
                String::new(),
                now,
            );
            return;
        }
        // The attempt failed: stop the rest of the gang.
        self.stop_tasks(e.job, "another task of the gang failed", now, w);
        let detail = format!("task {} {reason}", e.task);
        let interrupted = self.jobs[&e.job].interrupted;
        // Lost with its node: not the job's fault, requeued (bounded);
        // its own failure: retried as asked, never when it could not start
        // or ran out of time.
        let again = if lost {
            (interrupted < MAX_INTERRUPTIONS).then(|| {
                format!(
                    "{detail}; requeued (interruption {} of at most {MAX_INTERRUPTIONS})",
                    interrupted + 1
                )
            })
        } else if e.not_started || e.timeout {
            None
        } else {
            let own = run - interrupted;
            (own <= retries).then(|| format!("{detail}; retry {own} of {retries}"))
        };
        if let Some(why) = again {
            if lost {
                self.jobs.get_mut(&e.job).expect("live").interrupted += 1;
                w.push(Write::Interrupted { job: e.job });
            }
            let _lost = self.sched.requeue(handle, now as u64);
            transition(
                w,
                (e.job, run),
                JobState::Pending,
                None,
                EventKind::Retrying,
                why,
                now,
            );
        } else {
            self.untrack(e.job);
            self.sched.complete(handle, now as u64);
            transition(
                w,
                (e.job, run),
                JobState::Failed,
                Some(now),
                EventKind::Failed,
                detail,
                now,
            );
        }
    }
}

/// Times a job is requeued after attempts that ended by no fault of its
/// own (node lost, preempted) before it fails: a job that keeps losing its
/// node (or crashing it) stops.
pub const MAX_INTERRUPTIONS: i64 = 10;

/// A job's state change and the event that records it (always together).
pub(super) fn transition(
    w: &mut Vec<Write>,
    (job, run): (i64, i64),
    state: JobState,
    ended: Option<i64>,
    kind: EventKind,
    detail: String,
    now: i64,
) {
    w.push(Write::JobState { job, state, ended });
    w.push(Write::Event {
        job,
        run,
        at: now,
        kind,
        detail,
    });
}
