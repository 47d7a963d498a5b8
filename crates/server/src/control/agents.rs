//! Nodes and their agents in the loop: registration, drain, reports
//! (heartbeats and task exits), leases, and the orders an agent is given.

use std::collections::BTreeSet;

use super::core::{Core, Key, TaskSt};

/// The device mask of a task whose devices are unknown: every device.
const ALL_DEVICES: i64 = 0xFFFF;
use super::{NodeOrders, Refusal, Registration, Report, StartOrder, TaskExit, TaskOrder};
use crate::store::{Node, NodeState, TaskState, Write};

impl Core {
    pub(super) fn register(
        &mut self,
        reg: Registration,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<Node, Refusal> {
        let rack = reg.labels.get("rack").cloned().unwrap_or_default();
        if let Some(&id) = self.node_ids.get(&reg.name) {
            let old = &self.nodes[&id].node;
            let same = old.gpu_model == reg.gpu_model
                && old.gpus == reg.gpus
                && old.cpu_milli == reg.cpu_milli
                && old.memory_mib == reg.memory_mib
                && old.rack == rack;
            let state = if old.state == NodeState::Draining {
                NodeState::Draining
            } else {
                NodeState::Ready
            };
            let node = Node {
                addr: reg.addr,
                labels: reg.labels,
                state,
                last_heartbeat_ms: now,
                gpu_model: reg.gpu_model,
                gpus: reg.gpus,
                gpu_memory_mib: reg.gpu_memory_mib,
                cpu_milli: reg.cpu_milli,
                memory_mib: reg.memory_mib,
                rack,
                ..old.clone()
            };
            let handle = self.nodes[&id].handle;
            if same {
                if self.nodes[&id].node.state == NodeState::Down {
                    self.sched.set_closed(handle, false);
                    self.dirty = true;
                }
                self.nodes.get_mut(&id).expect("node").node = node.clone();
            } else {
                // Live tasks, or a gang's task that ended while its siblings
                // run (the gang holds its devices until it completes).
                let busy = self.on_node.get(&id).is_some_and(|t| !t.is_empty())
                    || !self.sched.jobs_on(self.nodes[&id].handle).is_empty();
                if busy {
                    return Err(Refusal::Conflict(format!(
                        "node {} has running tasks; its inventory cannot change until they end",
                        reg.name
                    )));
                }
                if let Some(r) = self.model_room(&node) {
                    return Err(r);
                }
                // Retire the old scheduler node (closed for good, no longer
                // capacity) and add one with the new inventory, same id.
                self.sched.retire_node(handle);
                self.nodes.remove(&id);
                self.add_node(node.clone())
                    .map_err(|detail| Refusal::Invalid {
                        field: "gpus".into(),
                        detail,
                    })?;
                if node.state != NodeState::Ready {
                    let h = self.nodes[&id].handle;
                    self.sched.set_closed(h, true);
                }
            }
            w.push(Write::UpsertNode(node.clone()));
            return Ok(node);
        }
        // A removed node registering again gets its id (and row) back.
        let id = match self.removed.get(&reg.name) {
            Some(&id) => id,
            None => self.node_ids_free.peek().ok_or_else(|| {
                Refusal::Conflict(
                    "no node id reserved (the loop reserves them before each step)".into(),
                )
            })?,
        };
        let node = Node {
            id,
            name: reg.name,
            addr: reg.addr,
            gpu_model: reg.gpu_model,
            gpus: reg.gpus,
            gpu_memory_mib: reg.gpu_memory_mib,
            cpu_milli: reg.cpu_milli,
            memory_mib: reg.memory_mib,
            rack,
            labels: reg.labels,
            state: NodeState::Ready,
            registered_ms: now,
            last_heartbeat_ms: now,
        };
        if let Some(r) = self.model_room(&node) {
            return Err(r);
        }
        if self.removed.remove(&node.name).is_none() {
            self.node_ids_free.take();
        }
        tracing::info!(node = %node.name, gpus = node.gpus, model = ?node.gpu_model, "node registered");
        self.add_node(node.clone())
            .map_err(|detail| Refusal::Invalid {
                field: "gpus".into(),
                detail,
            })?;
        w.push(Write::UpsertNode(node.clone()));
        Ok(node)
    }

    pub(super) fn drain(
        &mut self,
        name: &str,
        drain: bool,
        actor: &str,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<NodeState, Refusal> {
        let id = *self.node_ids.get(name).ok_or(Refusal::NotFound)?;
        let n = self.nodes.get_mut(&id).expect("node");
        let state = match (n.node.state, drain) {
            (NodeState::Down, false) => {
                return Err(Refusal::Conflict(format!(
                    "node {name} is down; it becomes ready when its agent registers again"
                )))
            }
            (NodeState::Down, true) => return Ok(NodeState::Down),
            (_, true) => NodeState::Draining,
            (_, false) => NodeState::Ready,
        };
        n.node.state = state;
        tracing::info!(node = name, %state, "node state changed by the admin");
        let h = n.handle;
        self.sched.set_closed(h, drain);
        w.push(Write::NodeState {
            node: id,
            state,
            at: now,
        });
        w.push(Write::Audit {
            at: now,
            actor: actor.to_string(),
            action: if drain { "node.drain" } else { "node.undrain" },
            target: format!("node {name}"),
            detail: String::new(),
        });
        self.dirty = true;
        Ok(state)
    }

    /// Take a node out of the pool for good (until an agent registers its
    /// name again): refused while it holds live tasks (drain it and let
    /// them end, or cancel them), or while its running agent has not yet
    /// confirmed stopping the tasks it was ordered to stop. Its agent's
    /// credential is revoked with it; tasks a down node's agent never
    /// confirmed stopping are given up.
    pub(super) fn remove_node(
        &mut self,
        name: &str,
        actor: &str,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<(), Refusal> {
        let id = *self.node_ids.get(name).ok_or(Refusal::NotFound)?;
        // Live tasks here, or the allocation of a gang whose task here has
        // ended while its siblings run elsewhere.
        let live = self
            .on_node
            .get(&id)
            .map_or(0, |t| t.len())
            .max(self.sched.jobs_on(self.nodes[&id].handle).len());
        if live > 0 {
            return Err(Refusal::Conflict(format!(
                "node {name} holds {live} live task(s): drain it and let them end (or cancel \
                 their jobs), then remove it"
            )));
        }
        let stopping = self.killing.get(&id).map_or(0, |k| k.len());
        let down = self.nodes[&id].node.state == NodeState::Down;
        if stopping > 0 && !down {
            return Err(Refusal::Conflict(format!(
                "node {name}'s agent has not yet confirmed stopping {stopping} task(s); try \
                 again after its next heartbeat"
            )));
        }
        let n = self.nodes.remove(&id).expect("node");
        // The scheduler's node stays, retired (handles are never reused;
        // its GPUs leave the capacity); a registration under this name adds
        // a new one.
        self.sched.retire_node(n.handle);
        self.node_ids.remove(name);
        self.killing.remove(&id);
        self.on_node.remove(&id);
        self.removed.insert(name.to_string(), id);
        tracing::info!(node = name, "node removed by the admin");
        w.push(Write::RemoveNode {
            node: id,
            name: name.to_string(),
            at: now,
        });
        w.push(Write::Audit {
            at: now,
            actor: actor.to_string(),
            action: "node.remove",
            target: format!("node {name}"),
            detail: format!(
                "was {}; its agent's credential revoked{}",
                n.node.state,
                if stopping > 0 {
                    format!("; {stopping} unconfirmed stop(s) given up")
                } else {
                    String::new()
                }
            ),
        });
        self.dirty = true;
        Ok(())
    }

    /// An agent's report; answers the node's id.
    pub(super) fn heartbeat(
        &mut self,
        name: &str,
        report: Report,
        full: bool,
        now: i64,
        w: &mut Vec<Write>,
    ) -> Result<i64, Refusal> {
        let node = *self.node_ids.get(name).ok_or(Refusal::NotFound)?;
        let n = self.nodes.get_mut(&node).expect("node");
        n.node.last_heartbeat_ms = now;
        if n.node.state == NodeState::Down {
            // The agent is back: the node takes work again.
            n.node.state = NodeState::Ready;
            let h = n.handle;
            self.sched.set_closed(h, false);
            w.push(Write::NodeState {
                node,
                state: NodeState::Ready,
                at: now,
            });
            self.dirty = true;
        }
        w.push(Write::Heartbeat { node, at: now });
        let mut alive: BTreeSet<Key> = BTreeSet::new();
        for t in &report.running {
            alive.insert((t.job, t.run, t.task));
            let current = self.jobs.get(&t.job).is_some_and(|l| {
                l.run == t.run && l.tasks.get(t.task as usize).is_some_and(|x| x.node == node)
            });
            let killing = self
                .killing
                .get(&node)
                .is_some_and(|k| k.contains_key(&(t.job, t.run, t.task)));
            if !current && !killing {
                // Not a task this node should run, and not one the loop
                // knows it still holds (a task lost with the node is): which
                // devices it uses is unknown, so until the agent stops it
                // none of the node's devices is handed to a new task.
                self.killing
                    .entry(node)
                    .or_default()
                    .insert((t.job, t.run, t.task), ALL_DEVICES);
                w.push(Write::TaskState {
                    job: t.job,
                    run: t.run,
                    task: Some(t.task),
                    // Only this node's row: another node's task stays its own.
                    node: Some(node),
                    from: &[TaskState::Assigned, TaskState::Running, TaskState::Lost],
                    to: TaskState::Killing,
                    at: None,
                    exit_code: None,
                    reason: "not a live task of this node".to_string(),
                });
                continue;
            }
            let Some(l) = self.jobs.get_mut(&t.job) else {
                continue;
            };
            let Some(slot) = l.tasks.get_mut(t.task as usize) else {
                continue;
            };
            if l.run == t.run && slot.node == node && slot.st == TaskSt::Assigned {
                slot.st = TaskSt::Running;
                w.push(Write::TaskState {
                    job: t.job,
                    run: t.run,
                    task: Some(t.task),
                    node: None,
                    from: &[TaskState::Assigned],
                    to: TaskState::Running,
                    at: None,
                    exit_code: None,
                    reason: String::new(),
                });
            }
        }
        for e in &report.exited {
            self.task_exited(node, e, now, w);
        }
        if !full {
            return Ok(node);
        }
        // Kill orders the agent no longer reports running are done.
        if let Some(k) = self.killing.get_mut(&node) {
            let gone: Vec<Key> = k.keys().filter(|t| !alive.contains(t)).copied().collect();
            for (job, run, task) in gone {
                k.remove(&(job, run, task));
                w.push(Write::TaskState {
                    job,
                    run,
                    task: Some(task),
                    node: Some(node),
                    from: &[TaskState::Killing],
                    to: TaskState::Killed,
                    at: None, // billing ended when the kill was ordered
                    exit_code: None,
                    reason: String::new(),
                });
            }
        }
        // Tasks the agent had confirmed but no longer reports are lost.
        let lost: Vec<Key> = self
            .on_node
            .get(&node)
            .into_iter()
            .flatten()
            .filter_map(|&(job, task)| {
                let l = self.jobs.get(&job)?;
                (l.tasks.get(task as usize)?.st == TaskSt::Running).then_some((job, l.run, task))
            })
            .filter(|k| !alive.contains(k))
            .collect();
        for (job, run, task) in lost {
            let e = TaskExit {
                job,
                run,
                task,
                exit_code: None,
                signal: None,
                reason: "lost: the agent no longer runs it".to_string(),
                timeout: false,
                not_started: false,
            };
            self.task_exited(node, &e, now, w);
        }
        Ok(node)
    }

    /// Nodes whose agent missed its lease are down; their live tasks are
    /// lost as of the last heartbeat.
    pub(super) fn expire_leases(&mut self, now: i64, w: &mut Vec<Write>) {
        let expired: Vec<i64> = self
            .nodes
            .values()
            .filter(|n| {
                n.node.state != NodeState::Down && now - n.node.last_heartbeat_ms > self.lease_ms
            })
            .map(|n| n.node.id)
            .collect();
        for id in expired {
            let n = self.nodes.get_mut(&id).expect("node");
            n.node.state = NodeState::Down;
            let (h, last, name) = (n.handle, n.node.last_heartbeat_ms, n.node.name.clone());
            self.sched.set_closed(h, true);
            w.push(Write::NodeState {
                node: id,
                state: NodeState::Down,
                at: last,
            });
            tracing::warn!(node = %name, "node down: no heartbeat within the lease");
            // Read before any exit: the first lost task of a gang may end
            // the job and stop its siblings (which then wait in `killing`).
            let tasks: Vec<(Key, i64)> = self
                .on_node
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|&(job, task)| {
                    let l = self.jobs.get(&job)?;
                    Some(((job, l.run, task), l.tasks.get(task as usize)?.mask))
                })
                .collect();
            for ((job, run, task), mask) in tasks {
                let still_live = self
                    .on_node
                    .get(&id)
                    .is_some_and(|s| s.contains(&(job, task)));
                if !still_live {
                    continue; // stopped with its gang: already in `killing`
                }
                // The agent may come back still running it: its devices stay
                // busy until the agent reports it gone.
                self.killing
                    .entry(id)
                    .or_default()
                    .insert((job, run, task), mask);
                let e = TaskExit {
                    job,
                    run,
                    task,
                    exit_code: None,
                    signal: None,
                    reason: format!("lost: node {name} missed its lease"),
                    timeout: false,
                    not_started: false,
                };
                self.task_exited(id, &e, last, w);
            }
            self.dirty = true;
        }
    }

    /// What the agent of `node` must do now: start its assigned tasks whose
    /// devices no task being stopped still holds, and stop the tasks it was
    /// ordered to stop.
    pub(super) fn orders(&self, node: i64) -> NodeOrders {
        let kill: Vec<TaskOrder> = self
            .killing
            .get(&node)
            .into_iter()
            .flatten()
            .map(|(&(job, run, task), &mask)| TaskOrder {
                job,
                run,
                task,
                mask,
            })
            .collect();
        let busy = kill.iter().fold(0, |m, k| m | k.mask);
        let mut start = Vec::new();
        for &(job, task) in self.on_node.get(&node).into_iter().flatten() {
            let Some(l) = self.jobs.get(&job) else {
                continue;
            };
            let Some(t) = l.tasks.get(task as usize) else {
                continue;
            };
            if t.st != TaskSt::Assigned || t.mask & busy != 0 {
                continue;
            }
            let master = l.tasks.first().map(|t0| t0.node);
            let master_addr = master
                .and_then(|m| self.nodes.get(&m))
                .map_or(String::new(), |n| n.node.addr.clone());
            start.push(StartOrder {
                task: TaskOrder {
                    job,
                    run: l.run,
                    task,
                    mask: t.mask,
                },
                master_addr,
            });
        }
        NodeOrders { node, start, kill }
    }
}
