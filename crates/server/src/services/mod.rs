//! Model services, live: the router's view of every service (its replicas
//! and their health, requests in flight, the autoscaler), kept by the
//! controller and read by the OpenAI-style proxy. The decisions are
//! `suanli_serve`'s (no IO there); this module is the IO around them.
//!
//! - `controller.rs`: every half second, reads the services and their
//!   replica jobs from the store, probes replicas, replaces failed ones
//!   and, on the replica that runs the scheduling loop, scales: submits
//!   replica jobs (the same scheduler places them, the same agents run
//!   them) and drains then cancels surplus ones, which gives their GPUs
//!   back to the queue.
//! - `proxy.rs`: `/v1/chat/completions`, `/v1/completions`, `/v1/models`:
//!   tenant tokens, the service by `model`, rate limits, least-outstanding
//!   routing, requests held while a service scales from zero, retries of
//!   requests that reached no replica, streams passed through untouched and
//!   metered.
//! - `tokens.rs`: answered requests' tokens become usage rows, written in
//!   batches (never one commit per request).
//! - `source.rs`: where the router reads services and replicas and writes
//!   tokens and counters: the store (`suanli server`) or a server's router
//!   API (`suanli gateway`, the same code); routers share their counters,
//!   so the leader scales on every router's requests and each router's
//!   rate limits count every router's traffic.

mod controller;
mod proxy;
mod source;
mod tokens;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use suanli_serve::{Autoscaler, Limiter, Limits, ProbeConfig, Replicas, Route, ScaleConfig};
use tokio::sync::watch;

use crate::control::Control;
use crate::store::{ServiceRow, Store, TokenRow};
use suanli_api::{ReplicaView, ServiceSpec};

pub use proxy::routes;
pub use source::{
    Exchange, RouterServices, RouterSource, StoreSource, TokenOwner, FRESH_MS, MAX_ROUTER_ROWS,
};

/// How the router behaves.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The largest request body (default 8 MiB, for long prompts).
    pub max_body_bytes: usize,
    /// How long a request waits for a ready replica (a service scaling from
    /// zero holds its first requests this long at most).
    pub hold: Duration,
    /// Sends of one request at most (a request that reached no replica is
    /// sent again to another).
    pub max_attempts: u32,
    /// How often the controller looks at every service.
    pub tick: Duration,
    /// A probe not answered within this is a failure.
    pub probe_timeout: Duration,
    /// Token rows are written at least this often.
    pub flush_every: Duration,
    pub route: Route,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_body_bytes: 8 << 20,
            hold: Duration::from_secs(300),
            max_attempts: 3,
            tick: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(2),
            flush_every: Duration::from_millis(200),
            route: Route::LeastOutstanding,
        }
    }
}

/// The live services, shared by the controller and the proxy handlers.
#[derive(Clone)]
pub struct Services(Arc<Inner>);

struct Inner {
    source: Arc<dyn RouterSource>,
    /// The scheduling loop's handle: `None` in a gateway (it never scales).
    control: Option<Control>,
    /// This router's name among the routers sharing counters.
    router_id: String,
    cfg: RouterConfig,
    start: Instant,
    reg: Mutex<Registry>,
    limiter: Mutex<Limiter>,
    tokens: tokens::Sink,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Wakes the controller before its next tick (a request met a service
    /// with no replica).
    poke: tokio::sync::Notify,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<i64, Svc>,
    limits: HashMap<i64, Limits>,
    /// The store's services were read at least once.
    loaded: bool,
    /// Per tenant: requests let in and tokens charged by this router.
    tenant_counts: HashMap<i64, (u64, u64)>,
    /// Per (router, tenant): the other routers' counts last applied.
    peer_tenants: HashMap<(String, i64), (u64, u64)>,
    /// The other routers reporting at the last exchange.
    peers: HashSet<String>,
}

/// One replica the router may send to.
#[derive(Clone, Debug)]
struct Endpoint {
    run: i64,
    /// `host:port`.
    authority: String,
    node: String,
    /// When it started running (router clock), and its last good probe.
    since: u64,
    last_ok: u64,
}

struct Svc {
    row: ServiceRow,
    scaler: Autoscaler,
    replicas: Replicas,
    endpoints: HashMap<i64, Endpoint>,
    /// Replica jobs waiting for GPUs.
    pending: BTreeSet<i64>,
    /// Replicas taking no new request, with when that began.
    draining: HashMap<i64, u64>,
    /// Replica jobs this router cancelled (their end is no failure).
    stopping: HashSet<i64>,
    /// Requests of this service in the router (held or sent).
    inflight: u32,
    /// Requests let in by this router so far.
    requests: u64,
    /// Requests in flight at the other routers (their last fresh counts).
    peer_inflight: u32,
    /// Per other router: its request count last seen.
    peer_requests: HashMap<String, u64>,
    desired: u32,
    /// Bumped when a replica becomes ready (held requests look again).
    ready: watch::Sender<u64>,
    last_failure: Option<String>,
    /// Replica failures in a row (the next start waits 2^n s, at most 5 min).
    failures: u32,
    retry_at: u64,
}

fn scale_config(s: &ServiceSpec) -> ScaleConfig {
    ScaleConfig {
        min: s.min,
        max: s.max,
        target_inflight: s.target_inflight,
        up_delay_ms: s.up_delay_s.saturating_mul(1000),
        down_delay_ms: s.down_delay_s.saturating_mul(1000),
        idle_ms: s.idle_s.saturating_mul(1000),
        ..ScaleConfig::default()
    }
}

fn probe_config(s: &ServiceSpec) -> ProbeConfig {
    ProbeConfig {
        initial_delay_ms: s.ready_delay_s.saturating_mul(1000),
        ..ProbeConfig::default()
    }
}

impl Svc {
    fn new(row: ServiceRow, route: Route) -> Result<Svc, String> {
        let scaler = Autoscaler::new(scale_config(&row.spec)).map_err(|e| e.to_string())?;
        let replicas = Replicas::new(probe_config(&row.spec), route)?;
        Ok(Svc {
            row,
            scaler,
            replicas,
            endpoints: HashMap::new(),
            pending: BTreeSet::new(),
            draining: HashMap::new(),
            stopping: HashSet::new(),
            inflight: 0,
            requests: 0,
            peer_inflight: 0,
            peer_requests: HashMap::new(),
            desired: 0,
            ready: watch::channel(0).0,
            last_failure: None,
            failures: 0,
            retry_at: 0,
        })
    }

    /// Replicas counted against the wish: pending, starting, ready or
    /// evicted; not those draining or being stopped.
    fn current(&self) -> u32 {
        let live = self
            .endpoints
            .keys()
            .chain(self.pending.iter())
            .filter(|j| !self.draining.contains_key(j) && !self.stopping.contains(j))
            .count();
        live as u32
    }

    fn views(&self) -> Vec<ReplicaView> {
        let mut v: Vec<ReplicaView> = self
            .pending
            .iter()
            .map(|&job| ReplicaView {
                job,
                state: "pending".into(),
                node: None,
                outstanding: 0,
            })
            .collect();
        for (id, health, outstanding) in self.replicas.iter() {
            let job = id as i64;
            let state = match health {
                suanli_serve::Health::Starting => "starting",
                suanli_serve::Health::Ready => "ready",
                suanli_serve::Health::Evicted => "evicted",
                suanli_serve::Health::Draining => "draining",
            };
            v.push(ReplicaView {
                job,
                state: state.into(),
                node: self.endpoints.get(&job).map(|e| e.node.clone()),
                outstanding,
            });
        }
        v.sort_by_key(|r| r.job);
        v
    }
}

/// What the API shows of a service beyond its stored row.
#[derive(Clone, Debug, Default)]
pub struct LiveView {
    pub desired: Option<u32>,
    pub replicas: Vec<ReplicaView>,
    pub last_failure: Option<String>,
}

impl Services {
    /// The services of `store`; `start` runs the controller.
    pub fn new(store: Store, control: Control, router_id: String, cfg: RouterConfig) -> Services {
        Services::with_source(Arc::new(StoreSource(store)), Some(control), router_id, cfg)
    }

    /// A router on `source`; with `control` it may scale (when it leads),
    /// without (a gateway) it only routes.
    pub fn with_source(
        source: Arc<dyn RouterSource>,
        control: Option<Control>,
        router_id: String,
        cfg: RouterConfig,
    ) -> Services {
        let tokens = tokens::Sink::new(source.clone(), cfg.flush_every);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build_http();
        Services(Arc::new(Inner {
            source,
            control,
            router_id,
            cfg,
            start: Instant::now(),
            reg: Mutex::new(Registry::default()),
            limiter: Mutex::new(Limiter::new()),
            tokens,
            client,
            poke: tokio::sync::Notify::new(),
        }))
    }

    /// Run the controller until the process ends.
    pub fn start(&self) {
        let me = self.clone();
        tokio::spawn(async move { controller::run(me).await });
    }

    /// Milliseconds on the router's monotonic clock.
    fn now(&self) -> u64 {
        self.0.start.elapsed().as_millis() as u64
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        self.0.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Look again at the store's services now (after a create, update or
    /// delete through this replica).
    pub fn changed(&self) {
        self.reg().loaded = false;
        self.0.poke.notify_one();
    }

    /// The live state of service `id`, if this replica routes it.
    pub fn live(&self, id: i64) -> LiveView {
        let reg = self.reg();
        match reg.by_id.get(&id) {
            Some(s) => LiveView {
                desired: Some(s.desired),
                replicas: s.views(),
                last_failure: s.last_failure.clone(),
            },
            None => LiveView::default(),
        }
    }

    /// Write the token rows still buffered (at shutdown).
    pub async fn flush(&self) {
        self.0.tokens.flush().await;
    }

    /// Where this router reads and writes (the store, in a server).
    pub fn source(&self) -> &dyn RouterSource {
        &*self.0.source
    }

    pub fn max_body_bytes(&self) -> usize {
        self.0.cfg.max_body_bytes
    }

    fn record(&self, row: TokenRow) {
        self.0.tokens.send(row);
    }
}

impl Services {
    /// Whether this router scales (it runs in the server replica that
    /// leads the scheduling loop).
    fn leading(&self) -> bool {
        self.0.control.as_ref().is_some_and(|c| c.leading())
    }
}
