//! The serving simulator: a request trace against replicas of one model
//! service, on a virtual clock in microseconds.
//!
//! Requests arrive from the trace; the router (`suanli_serve::Picker`)
//! sends each to a ready replica, or holds it while none is ready. Each
//! replica runs iterations as [`super::perf`] prices them. Every tick
//! (`tick_ms`, 1 s by default) the autoscaler (`suanli_serve::Autoscaler`, the live router's own)
//! sees the requests in flight and the replica count and answers how many
//! replicas the service wants: new ones start cold and take traffic once
//! ready; removed ones that were starting stop at once, ready ones stop
//! taking traffic and stop when their last request is answered. A replica
//! holds its GPUs from launch to stop, which is what GPU-hours count.
//!
//! With [`Sleep`] (vLLM's sleep mode, level 1: weights offloaded to host
//! memory, the KV cache dropped, the process, CUDA context and graphs
//! kept), a removed replica sleeps instead of stopping: it gives its GPUs
//! back but for a share (`gpu_share`: what a sleeping process keeps, and
//! the price of getting the GPU back), and a scale-up wakes a sleeping
//! replica (`wake_us`: the weights copied back) before it starts one cold.
//! A replica asleep for `keep_us` stops.
//!
//! Events at one instant run in the order they were scheduled, so a run is
//! a function of its inputs (no randomness, no wall clock but `wall_s`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use serde::Serialize;
use suanli_serve::{Autoscaler, Picker, Route, ScaleConfig};

use super::perf::Perf;
use super::trace::{Request, RequestTrace};

/// How many replicas a run has.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// A fixed count, ready from the start (provisioned ahead).
    Static(u32),
    /// The autoscaler with these settings; `min` replicas ready at the start.
    Autoscale(ScaleConfig),
}

impl Policy {
    pub fn name(&self) -> String {
        match self {
            Policy::Static(n) => format!("static-{n}"),
            Policy::Autoscale(c) => format!(
                "autoscale (min {}, max {}, target {})",
                c.min, c.max, c.target_inflight
            ),
        }
    }
}

/// What the autoscaler is fed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// Requests in flight (held, queued at a replica, or served): what the
    /// live router measures.
    #[default]
    Requests,
    /// Seconds of replica time the requests in flight still need: the
    /// prefill of every prompt not yet prefilled, plus each running
    /// request's remaining tokens times its share of its replica's decode
    /// step. `target_inflight` is then in seconds per replica.
    Work,
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "requests" => Ok(Signal::Requests),
            "work" => Ok(Signal::Work),
            _ => Err(format!("unknown signal {s:?}: expected requests or work")),
        }
    }
}

/// Replicas sleep instead of stopping (see the module).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sleep {
    /// From asleep to ready.
    pub wake_us: u64,
    /// Asleep this long, a replica stops.
    pub keep_us: u64,
    /// The share of its GPUs a sleeping replica is charged for, in [0, 1].
    pub gpu_share: f64,
}

/// What every policy of one comparison shares.
#[derive(Clone, Debug)]
pub struct ServeParams {
    pub perf: Perf,
    pub route: Route,
    /// The time-to-first-token objective, ms.
    pub slo_ttft_ms: f64,
    pub tick_ms: u64,
    /// What the autoscaler measures.
    pub signal: Signal,
    /// Requests one replica holds at most (queued and served); the router
    /// holds the rest until a replica has room, as Knative's container
    /// concurrency and Ray Serve's `max_ongoing_requests` do, so a burst
    /// spreads over the replicas that become ready during it.
    pub replica_max_inflight: u32,
    /// Price of one GPU-hour, for the cost column.
    pub price_gpu_hour: f64,
    /// Scaled-down replicas sleep instead of stopping.
    pub sleep: Option<Sleep>,
}

/// Percentiles of a latency, ms (nearest rank).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(sorted: &[f64]) -> Self {
        if sorted.is_empty() {
            return Percentiles::default();
        }
        let at =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }
}

/// One point of a run's time series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ServePoint {
    pub t_s: f64,
    /// Replicas holding GPUs (starting, ready or draining).
    pub replicas: u32,
    pub inflight: u32,
}

/// A run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ServeResult {
    pub policy: String,
    pub requests: usize,
    pub ttft_ms: Percentiles,
    pub e2e_ms: Percentiles,
    pub slo_ttft_ms: f64,
    /// Requests whose first token came within the objective, %.
    pub slo_attainment_pct: f64,
    pub gpu_hours: f64,
    pub cost: f64,
    pub replicas_peak: u32,
    pub replicas_mean: f64,
    /// Replicas started (cold starts, and the ones ready at the start).
    pub launches: u32,
    /// Sleeping replicas woken.
    pub wakes: u32,
    pub span_s: f64,
    pub wall_s: f64,
    #[serde(skip)]
    pub series: Vec<ServePoint>,
    #[serde(skip)]
    pub ttft_sorted: Vec<f64>,
}

impl ServeResult {
    /// Whether the p99 time to first token meets the objective.
    pub fn meets_slo(&self) -> bool {
        self.ttft_ms.p99 <= self.slo_ttft_ms
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(u32),
    IterDone(u32),
    Ready(u32),
    Tick,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Draining,
    Asleep,
    Stopped,
}

struct Run {
    req: u32,
    left: u32,
    ctx: u64,
}

struct Replica {
    state: State,
    /// When the current state began.
    since: u64,
    /// GPU-microseconds charged so far (per GPU of the replica).
    charged: f64,
    /// Asleep when it asleep since (a waking replica goes back to sleep
    /// when no longer wanted).
    slept: bool,
    /// When the current start or wake ends (an earlier `Ready` event of a
    /// wake that was called off is stale).
    ready_at: u64,
    waiting: VecDeque<u32>,
    prefill: Vec<u32>,
    running: Vec<Run>,
    busy: bool,
    kv: u64,
}

impl Replica {
    fn outstanding(&self) -> usize {
        self.waiting.len() + self.prefill.len() + self.running.len()
    }
    fn holds_gpus(&self) -> bool {
        !matches!(self.state, State::Stopped | State::Asleep)
    }
    /// The share of its GPUs the replica is charged for in its state.
    fn weight(&self, sleep: Option<&Sleep>) -> f64 {
        match self.state {
            State::Stopped => 0.0,
            State::Asleep => sleep.map_or(0.0, |s| s.gpu_share),
            _ => 1.0,
        }
    }
    fn active(&self) -> bool {
        matches!(self.state, State::Starting | State::Ready)
    }
}

struct Sim<'a> {
    p: &'a ServeParams,
    reqs: &'a [Request],
    kv_cap: u64,
    cold_us: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    reps: Vec<Replica>,
    held: VecDeque<u32>,
    picker: Picker,
    first: Vec<u64>,
    done: Vec<u64>,
    inflight: u32,
    arrived: usize,
    scaler: Option<Autoscaler>,
    launches: u32,
    wakes: u32,
    peak: u32,
    series: Vec<ServePoint>,
}

/// Run one policy over a trace.
pub fn simulate(
    trace: &RequestTrace,
    params: &ServeParams,
    policy: &Policy,
) -> Result<ServeResult, String> {
    let wall = std::time::Instant::now();
    params.perf.validate()?;
    if params.replica_max_inflight == 0 {
        return Err("--replica-max-inflight: must be positive".into());
    }
    if params.tick_ms == 0 {
        return Err("--tick-ms: must be positive".into());
    }
    if let Some(z) = &params.sleep {
        if !(z.gpu_share.is_finite() && (0.0..=1.0).contains(&z.gpu_share)) {
            return Err(format!(
                "--sleep-gpu-share: must be within 0..=1, got {}",
                z.gpu_share
            ));
        }
    }
    if !(params.slo_ttft_ms.is_finite() && params.slo_ttft_ms > 0.0) {
        return Err(format!(
            "--slo-ttft-ms: must be positive, got {}",
            params.slo_ttft_ms
        ));
    }
    let scaler = match policy {
        Policy::Static(0) => return Err("static: at least one replica".into()),
        Policy::Static(_) => None,
        Policy::Autoscale(c) => {
            Some(Autoscaler::new(c.clone()).map_err(|e| format!("autoscale {e}"))?)
        }
    };
    let n = trace.requests.len();
    let mut s = Sim {
        p: params,
        reqs: &trace.requests,
        kv_cap: params.perf.kv_capacity_tokens() as u64,
        cold_us: params.perf.cold_start_us(),
        heap: BinaryHeap::new(),
        seq: 0,
        reps: Vec::new(),
        held: VecDeque::new(),
        picker: Picker::new(params.route),
        first: vec![u64::MAX; n],
        done: vec![u64::MAX; n],
        inflight: 0,
        arrived: 0,
        scaler,
        launches: 0,
        wakes: 0,
        peak: 0,
        series: Vec::new(),
    };
    let initial = match policy {
        Policy::Static(k) => *k,
        Policy::Autoscale(c) => c.min,
    };
    for _ in 0..initial {
        s.launch(0, true);
    }
    for (i, r) in trace.requests.iter().enumerate() {
        s.push(r.at_us, Ev::Arrive(i as u32));
    }
    s.push(0, Ev::Tick);
    while let Some(Reverse((t, _, ev))) = s.heap.pop() {
        match ev {
            Ev::Arrive(i) => s.arrive(t, i),
            Ev::IterDone(r) => s.iter_done(t, r as usize),
            Ev::Ready(r) => s.ready(t, r as usize),
            Ev::Tick => s.tick(t),
        }
    }
    if let Some(i) = s.done.iter().position(|&d| d == u64::MAX) {
        return Err(format!("request {i} was never answered (a simulator bug)"));
    }
    // The run ends with its last answer: replicas stop there.
    let end = s.done.iter().copied().max().unwrap_or(0);
    let keep = params.sleep.as_ref().map_or(u64::MAX, |z| z.keep_us);
    for r in 0..s.reps.len() {
        let rep = &s.reps[r];
        let at = match rep.state {
            State::Stopped => continue,
            State::Asleep => end.min(rep.since.saturating_add(keep)),
            _ => end,
        };
        s.stop(at.max(rep.since), r);
    }
    let gpu_us: f64 = s
        .reps
        .iter()
        .map(|r| r.charged * params.perf.gpus as f64)
        .sum();
    let gpu_hours = gpu_us / 3.6e9;
    let mut ttft: Vec<f64> = (0..n)
        .map(|i| (s.first[i] - trace.requests[i].at_us) as f64 / 1e3)
        .collect();
    let mut e2e: Vec<f64> = (0..n)
        .map(|i| (s.done[i] - trace.requests[i].at_us) as f64 / 1e3)
        .collect();
    ttft.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    let met = ttft.iter().filter(|&&t| t <= params.slo_ttft_ms).count();
    let span_s = end as f64 / 1e6;
    Ok(ServeResult {
        policy: policy.name(),
        requests: n,
        ttft_ms: Percentiles::of(&ttft),
        e2e_ms: Percentiles::of(&e2e),
        slo_ttft_ms: params.slo_ttft_ms,
        slo_attainment_pct: 100.0 * met as f64 / n.max(1) as f64,
        gpu_hours,
        cost: gpu_hours * params.price_gpu_hour,
        replicas_peak: s.peak,
        replicas_mean: if span_s > 0.0 {
            gpu_hours * 3600.0 / params.perf.gpus as f64 / span_s
        } else {
            0.0
        },
        launches: s.launches,
        wakes: s.wakes,
        span_s,
        wall_s: wall.elapsed().as_secs_f64(),
        series: s.series,
        ttft_sorted: ttft,
    })
}

/// The smallest static count, up to `max`, whose p99 time to first token
/// meets the objective: provisioning for the peak, found by trying.
pub fn static_peak(
    trace: &RequestTrace,
    params: &ServeParams,
    max: u32,
) -> Result<Option<ServeResult>, String> {
    for k in 1..=max {
        let r = simulate(trace, params, &Policy::Static(k))?;
        if r.meets_slo() {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Seconds of replica time the requests in flight still need.
fn work_s(perf: &Perf, reqs: &[Request], held: &VecDeque<u32>, reps: &[Replica]) -> f64 {
    let prefill = |i: &u32| perf.prefill_us(reqs[*i as usize].prompt.max(1) as u64) as f64;
    let mut us: f64 = held.iter().map(prefill).sum();
    for r in reps.iter().filter(|r| r.holds_gpus()) {
        us += r.waiting.iter().map(prefill).sum::<f64>();
        us += r.prefill.iter().map(prefill).sum::<f64>();
        if !r.running.is_empty() {
            let b = r.running.len() as u64;
            let ctx: u64 = r.running.iter().map(|x| x.ctx).sum();
            let share = perf.decode_us(b, ctx) as f64 / b as f64;
            us += r.running.iter().map(|x| x.left as f64 * share).sum::<f64>();
        }
    }
    us / 1e6
}

impl Sim<'_> {
    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    fn launch(&mut self, now: u64, warm: bool) {
        let id = self.reps.len() as u32;
        self.reps.push(Replica {
            state: if warm { State::Ready } else { State::Starting },
            since: now,
            charged: 0.0,
            slept: false,
            ready_at: now + if warm { 0 } else { self.cold_us },
            waiting: VecDeque::new(),
            prefill: Vec::new(),
            running: Vec::new(),
            busy: false,
            kv: 0,
        });
        self.launches += 1;
        if !warm {
            self.push(now + self.cold_us, Ev::Ready(id));
        }
        let holding = self.reps.iter().filter(|r| r.holds_gpus()).count() as u32;
        self.peak = self.peak.max(holding);
    }

    /// Move replica `r` to `state` at `now`, charging the state it leaves.
    fn set(&mut self, now: u64, r: usize, state: State) {
        let w = self.reps[r].weight(self.p.sleep.as_ref());
        let rep = &mut self.reps[r];
        rep.charged += now.saturating_sub(rep.since) as f64 * w;
        rep.since = now;
        rep.state = state;
    }

    fn stop(&mut self, now: u64, r: usize) {
        self.set(now, r, State::Stopped);
    }

    /// A replica no longer wanted: it sleeps when replicas may, else stops.
    fn retire(&mut self, now: u64, r: usize) {
        if self.p.sleep.is_some() {
            self.reps[r].slept = true;
            self.set(now, r, State::Asleep);
        } else {
            self.stop(now, r);
        }
    }

    fn active(&self) -> u32 {
        self.reps.iter().filter(|r| r.active()).count() as u32
    }

    fn pick(&mut self) -> Option<usize> {
        let view: Vec<Option<u32>> = self
            .reps
            .iter()
            .map(|r| {
                let n = r.outstanding() as u32;
                (r.state == State::Ready && n < self.p.replica_max_inflight).then_some(n)
            })
            .collect();
        self.picker.pick(&view)
    }

    fn dispatch(&mut self, now: u64, r: usize, i: u32) {
        self.reps[r].waiting.push_back(i);
        self.start_iter(now, r);
    }

    fn arrive(&mut self, now: u64, i: u32) {
        self.arrived += 1;
        self.inflight += 1;
        if let Some(s) = &mut self.scaler {
            s.note_request(now / 1000);
        }
        match self.pick() {
            Some(r) => self.dispatch(now, r, i),
            None => {
                self.held.push_back(i);
                if self.active() == 0 && self.scaler.is_some() {
                    // A service at zero wakes at once, not at the next tick.
                    let inflight = self.inflight;
                    let want =
                        self.scaler
                            .as_mut()
                            .expect("autoscaled")
                            .tick(now / 1000, inflight, 0);
                    self.apply(now, want.desired);
                }
            }
        }
    }

    fn ready(&mut self, now: u64, r: usize) {
        if self.reps[r].state != State::Starting || now < self.reps[r].ready_at {
            return;
        }
        self.set(now, r, State::Ready);
        self.dispatch_held(now);
    }

    /// Held requests go out while a ready replica has room, oldest first.
    /// They reach their replicas together, so one iteration may take several.
    fn dispatch_held(&mut self, now: u64) {
        let mut touched = Vec::new();
        while !self.held.is_empty() {
            let Some(to) = self.pick() else {
                break;
            };
            let i = self.held.pop_front().expect("not empty");
            self.reps[to].waiting.push_back(i);
            touched.push(to);
        }
        touched.sort_unstable();
        touched.dedup();
        for r in touched {
            self.start_iter(now, r);
        }
    }

    fn tick(&mut self, now: u64) {
        // Sleepers past their keep period stop, charged to the instant it
        // ended (not to this tick).
        if let Some(keep) = self.p.sleep.as_ref().map(|z| z.keep_us) {
            for r in 0..self.reps.len() {
                let at = self.reps[r].since + keep;
                if self.reps[r].state == State::Asleep && at <= now {
                    self.stop(at, r);
                }
            }
        }
        let over = self.arrived == self.reqs.len() && self.inflight == 0;
        if let (Some(s), false) = (&mut self.scaler, over) {
            let current = self.reps.iter().filter(|r| r.active()).count() as u32;
            let want = match self.p.signal {
                Signal::Requests => s.tick(now / 1000, self.inflight, current),
                Signal::Work => {
                    let work = work_s(&self.p.perf, self.reqs, &self.held, &self.reps);
                    let s = self.scaler.as_mut().expect("autoscaled");
                    s.tick_load(now / 1000, work, self.inflight > 0, current)
                }
            };
            self.apply(now, want.desired);
        }
        let replicas = self.reps.iter().filter(|r| r.holds_gpus()).count() as u32;
        self.series.push(ServePoint {
            t_s: now as f64 / 1e6,
            replicas,
            inflight: self.inflight,
        });
        if self.arrived < self.reqs.len() || self.inflight > 0 {
            self.push(now + self.p.tick_ms * 1000, Ev::Tick);
        }
    }

    fn apply(&mut self, now: u64, desired: u32) {
        let mut current = self.active();
        if desired > current {
            // A draining replica is still warm: it takes traffic again
            // before any replica starts cold.
            for r in 0..self.reps.len() {
                if current < desired && self.reps[r].state == State::Draining {
                    self.set(now, r, State::Ready);
                    current += 1;
                }
            }
            // Then sleeping ones wake, the most recently asleep first.
            if let Some(wake) = self.p.sleep.as_ref().map(|z| z.wake_us) {
                let mut asleep: Vec<usize> = (0..self.reps.len())
                    .filter(|&r| self.reps[r].state == State::Asleep)
                    .collect();
                asleep.sort_by_key(|&r| std::cmp::Reverse((self.reps[r].since, r)));
                for r in asleep {
                    if current >= desired {
                        break;
                    }
                    self.set(now, r, State::Starting);
                    self.reps[r].ready_at = now + wake;
                    self.push(now + wake, Ev::Ready(r as u32));
                    self.wakes += 1;
                    current += 1;
                }
                let holding = self.reps.iter().filter(|r| r.holds_gpus()).count() as u32;
                self.peak = self.peak.max(holding);
            }
            for _ in current..desired {
                self.launch(now, false);
            }
            self.dispatch_held(now);
            return;
        }
        let mut surplus = current - desired;
        // Replicas still starting go first, the newest first.
        for r in (0..self.reps.len()).rev() {
            if surplus == 0 {
                return;
            }
            if self.reps[r].state == State::Starting {
                // A waking replica goes back to sleep; a cold one stops.
                if self.reps[r].slept {
                    self.retire(now, r);
                } else {
                    self.stop(now, r);
                }
                surplus -= 1;
            }
        }
        // Then the ready ones holding the fewest requests.
        let mut ready: Vec<usize> = (0..self.reps.len())
            .filter(|&r| self.reps[r].state == State::Ready)
            .collect();
        ready.sort_by_key(|&r| (self.reps[r].outstanding(), std::cmp::Reverse(r)));
        for r in ready.into_iter().take(surplus as usize) {
            if self.reps[r].outstanding() == 0 {
                self.retire(now, r);
            } else {
                self.set(now, r, State::Draining);
            }
        }
    }

    fn start_iter(&mut self, now: u64, r: usize) {
        let perf = &self.p.perf;
        let rep = &mut self.reps[r];
        if rep.busy {
            return;
        }
        let mut tokens = 0u64;
        while let Some(&i) = rep.waiting.front() {
            let q = &self.reqs[i as usize];
            let need = q.prompt as u64 + q.output as u64;
            let alone = rep.running.is_empty() && rep.prefill.is_empty();
            if rep.running.len() + rep.prefill.len() >= perf.max_batch as usize
                || (!rep.prefill.is_empty()
                    && tokens + q.prompt as u64 > perf.max_prefill_tokens as u64)
                || (rep.kv + need > self.kv_cap && !alone)
            {
                break;
            }
            rep.waiting.pop_front();
            rep.kv += need;
            tokens += q.prompt as u64;
            rep.prefill.push(i);
        }
        let dur = if !rep.prefill.is_empty() {
            perf.prefill_us(tokens.max(1))
        } else if !rep.running.is_empty() {
            let ctx: u64 = rep.running.iter().map(|x| x.ctx).sum();
            perf.decode_us(rep.running.len() as u64, ctx)
        } else {
            return;
        };
        rep.busy = true;
        self.push(now + dur, Ev::IterDone(r as u32));
    }

    fn finish(&mut self, now: u64, r: usize, i: u32) {
        let q = &self.reqs[i as usize];
        self.done[i as usize] = now;
        self.inflight -= 1;
        self.reps[r].kv -= q.prompt as u64 + q.output as u64;
    }

    fn iter_done(&mut self, now: u64, r: usize) {
        self.reps[r].busy = false;
        if !self.reps[r].prefill.is_empty() {
            for i in std::mem::take(&mut self.reps[r].prefill) {
                self.first[i as usize] = now;
                let q = self.reqs[i as usize];
                if q.output <= 1 {
                    self.finish(now, r, i);
                } else {
                    self.reps[r].running.push(Run {
                        req: i,
                        left: q.output - 1,
                        ctx: q.prompt as u64 + 1,
                    });
                }
            }
        } else {
            let mut ended = Vec::new();
            self.reps[r].running.retain_mut(|x| {
                x.left -= 1;
                x.ctx += 1;
                if x.left == 0 {
                    ended.push(x.req);
                    false
                } else {
                    true
                }
            });
            for i in ended {
                self.finish(now, r, i);
            }
        }
        if self.reps[r].state == State::Draining && self.reps[r].outstanding() == 0 {
            self.retire(now, r);
        } else {
            self.start_iter(now, r);
        }
        self.dispatch_held(now);
    }
}
