//! The operator's economics: capacity from the node history, sold time,
//! revenue as the sum of the invoices, and idle capacity at list price.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::book::PriceBook;
use crate::invoice::{invoice_of, invoices, Invoice, Resource, Usage};
use crate::tokens::{add_tokens, TokenUse};
use crate::{Ms, MS_PER_HOUR};

/// A stretch of time during which a node had `gpus` GPUs of `gpu_model` in
/// one state (the store writes one when a node registers or changes state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpan {
    pub node: String,
    /// `None` for a CPU-only node.
    pub gpu_model: Option<String>,
    pub gpus: i64,
    /// "ready", "draining" or "down". Ready and draining nodes are capacity
    /// (powered, in the pool); down ones are not.
    pub state: String,
    pub start: Ms,
    /// `None`: the node is still in this state (counted up to `now`).
    pub end: Option<Ms>,
}

/// GPU milli × ms per GPU-hour.
const GPU_RAW_PER_HOUR: i128 = 1000 * MS_PER_HOUR as i128;

fn gpu_hours(raw: u128) -> Decimal {
    Decimal::from_i128_with_scale(raw as i128, 0) / Decimal::from(GPU_RAW_PER_HOUR)
}

fn pct(part: u128, whole: u128) -> Option<Decimal> {
    (whole > 0).then(|| {
        (Decimal::from_i128_with_scale(part as i128 * 100, 0)
            / Decimal::from_i128_with_scale(whole as i128, 0))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
    })
}

/// One GPU model's economics over a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelEconomics {
    pub gpu_model: String,
    /// GPU-hours of ready or draining nodes.
    pub capacity_gpu_hours: Decimal,
    /// GPU-hours of nodes that were down (not in the capacity).
    pub down_gpu_hours: Decimal,
    /// GPU-hours billed to tenants (any class, priced or not).
    pub sold_gpu_hours: Decimal,
    /// sold / capacity, in percent (2 decimals); `None` without capacity.
    pub utilisation_pct: Option<Decimal>,
    /// The GPU line items of this model on every tenant's invoice.
    pub revenue: Decimal,
    /// capacity − sold.
    pub idle_gpu_hours: Decimal,
    /// Idle GPU-hours at list price (on-demand, else guaranteed), rounded once.
    pub idle_value: Decimal,
    /// Idle GPU-hours with no list price in the book (not in `idle_value`).
    pub idle_unpriced_gpu_hours: Decimal,
    /// revenue / capacity GPU-hours (2 decimals).
    pub revenue_per_capacity_gpu_hour: Option<Decimal>,
}

/// The operator's view of a period: what the pool could sell, what it sold,
/// what it earned and what idle GPUs were worth at list price.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Economics {
    pub currency: String,
    pub from: Ms,
    pub to: Ms,
    pub models: Vec<ModelEconomics>,
    pub capacity_gpu_hours: Decimal,
    pub down_gpu_hours: Decimal,
    pub sold_gpu_hours: Decimal,
    pub utilisation_pct: Option<Decimal>,
    /// GPU line items of all invoices.
    pub gpu_revenue: Decimal,
    /// CPU and memory line items of all invoices.
    pub other_revenue: Decimal,
    /// The sum of every tenant's invoice total.
    pub revenue: Decimal,
    pub idle_gpu_hours: Decimal,
    pub idle_value: Decimal,
    /// revenue (all resources) / capacity GPU-hours (2 decimals).
    pub revenue_per_capacity_gpu_hour: Option<Decimal>,
    /// Token line items of all invoices (model services).
    pub token_revenue: Decimal,
    /// Per served model: tokens sold against the GPU time its replicas held.
    pub served: Vec<ServedModel>,
    /// Every tenant's invoice, by tenant name.
    pub invoices: Vec<Invoice>,
}

/// One served model over the period: what callers paid for its tokens, and
/// the GPU time its replicas held at the price their owner pays.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServedModel {
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub token_revenue: Decimal,
    pub replica_gpu_hours: Decimal,
    /// The GPU lines of the replicas' usage, as their owner's invoice prices them.
    pub replica_gpu_cost: Decimal,
}

#[derive(Default)]
struct ModelAcc {
    capacity: u128,
    down: u128,
    sold: u128,
    /// Per price period (None = before the first): capacity and sold raw.
    by_period: BTreeMap<Option<usize>, (u128, u128)>,
}

/// The economics of [from, to) (clipped to `now` for open spans and running
/// tasks). Revenue is the sum of the tenants' invoices from [`invoice`], so
/// the report and the bills always agree to the cent.
pub fn economics(
    book: &PriceBook,
    spans: &[NodeSpan],
    usage: &[Usage],
    from: Ms,
    to: Ms,
    now: Ms,
) -> Economics {
    economics_with_services(book, spans, usage, &[], &BTreeMap::new(), from, to, now)
}

/// [`economics`] with model services: `tokens` (each tenant's, priced onto
/// its invoice) and `replicas` (job id → served model: the jobs that ran a
/// service's replicas, whose GPU time is the model's cost).
#[allow(clippy::too_many_arguments)]
pub fn economics_with_services(
    book: &PriceBook,
    spans: &[NodeSpan],
    usage: &[Usage],
    tokens: &[TokenUse],
    replicas: &BTreeMap<i64, String>,
    from: Ms,
    to: Ms,
    now: Ms,
) -> Economics {
    #[derive(PartialEq)]
    enum Kind {
        Capacity,
        Down,
        Sold,
    }
    let mut acc: BTreeMap<String, ModelAcc> = BTreeMap::new();
    // `milli` GPU milli of `model` over [start, end), clipped to the period and now.
    let mut add = |model: &Option<String>, milli: i64, start: Ms, end: Option<Ms>, kind: Kind| {
        let Some(model) = model else { return };
        let (a, b) = (start.max(from), end.unwrap_or(now).min(to).min(now));
        if milli <= 0 || b <= a {
            return;
        }
        let m = acc.entry(model.clone()).or_default();
        for (x, y, pi) in book.segments(a, b) {
            let raw = (y - x) as u128 * milli as u128;
            match kind {
                Kind::Down => m.down += raw,
                Kind::Capacity => {
                    m.capacity += raw;
                    m.by_period.entry(pi).or_default().0 += raw;
                }
                Kind::Sold => {
                    m.sold += raw;
                    m.by_period.entry(pi).or_default().1 += raw;
                }
            }
        }
    };
    for s in spans {
        let kind = if s.state == "down" {
            Kind::Down
        } else {
            Kind::Capacity
        };
        add(&s.gpu_model, s.gpus * 1000, s.start, s.end, kind);
    }
    for u in usage {
        add(&u.gpu_model, u.gpu_milli, u.start, u.end, Kind::Sold);
    }
    let tenants: std::collections::BTreeSet<&str> = usage
        .iter()
        .map(|u| u.tenant.as_str())
        .chain(tokens.iter().map(|t| t.tenant.as_str()))
        .collect();
    let tenants: Vec<&str> = tenants.into_iter().collect();
    let mut invoices = invoices(book, &tenants, usage, from, to.min(now), now);
    for inv in &mut invoices {
        add_tokens(book, inv, tokens);
    }
    let mut gpu_revenue_by_model: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut token_revenue_by_model: BTreeMap<String, Decimal> = BTreeMap::new();
    let (mut gpu_revenue, mut other_revenue, mut token_revenue, mut revenue) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for inv in &invoices {
        revenue += inv.total;
        for l in &inv.lines {
            match l.resource {
                Resource::Gpu => {
                    gpu_revenue += l.amount;
                    *gpu_revenue_by_model
                        .entry(l.gpu_model.clone().unwrap_or_default())
                        .or_default() += l.amount;
                }
                Resource::InputTokens | Resource::OutputTokens => {
                    token_revenue += l.amount;
                    *token_revenue_by_model
                        .entry(l.model.clone().unwrap_or_default())
                        .or_default() += l.amount;
                }
                Resource::Cpu | Resource::Memory => other_revenue += l.amount,
            }
        }
    }
    let served = served(
        book,
        usage,
        tokens,
        replicas,
        &token_revenue_by_model,
        (from, to.min(now), now),
    );
    let mut models = Vec::new();
    let (mut cap, mut down, mut sold, mut idle) = (0u128, 0u128, 0u128, 0u128);
    let mut idle_value = Decimal::ZERO;
    for (model, m) in acc {
        let mut value = Decimal::ZERO;
        let mut unpriced = 0u128;
        for (pi, (c, s)) in &m.by_period {
            let idle_raw = c.saturating_sub(*s);
            match pi.and_then(|pi| book.list_price(pi, &model)) {
                Some(p) => value += Decimal::from_i128_with_scale(idle_raw as i128, 0) * p,
                None => unpriced += idle_raw,
            }
        }
        let value = (value / Decimal::from(GPU_RAW_PER_HOUR))
            .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
        let idle_raw = m.capacity.saturating_sub(m.sold);
        let rev = gpu_revenue_by_model
            .get(&model)
            .copied()
            .unwrap_or_default();
        cap += m.capacity;
        down += m.down;
        sold += m.sold;
        idle += idle_raw;
        idle_value += value;
        models.push(ModelEconomics {
            capacity_gpu_hours: gpu_hours(m.capacity),
            down_gpu_hours: gpu_hours(m.down),
            sold_gpu_hours: gpu_hours(m.sold),
            utilisation_pct: pct(m.sold, m.capacity),
            revenue: rev,
            idle_gpu_hours: gpu_hours(idle_raw),
            idle_value: value,
            idle_unpriced_gpu_hours: gpu_hours(unpriced),
            revenue_per_capacity_gpu_hour: per_hour(rev, m.capacity),
            gpu_model: model,
        });
    }
    Economics {
        currency: book.currency.clone(),
        from,
        to,
        models,
        capacity_gpu_hours: gpu_hours(cap),
        down_gpu_hours: gpu_hours(down),
        sold_gpu_hours: gpu_hours(sold),
        utilisation_pct: pct(sold, cap),
        gpu_revenue,
        other_revenue,
        revenue,
        idle_gpu_hours: gpu_hours(idle),
        idle_value,
        revenue_per_capacity_gpu_hour: per_hour(revenue, cap),
        token_revenue,
        served,
        invoices,
    }
}

/// Each served model's tokens and revenue, and its replicas' GPU time and
/// cost (`(from, to, now)` as the invoices clip usage).
fn served(
    book: &PriceBook,
    usage: &[Usage],
    tokens: &[TokenUse],
    replicas: &BTreeMap<i64, String>,
    revenue: &BTreeMap<String, Decimal>,
    (from, to, now): (Ms, Ms, Ms),
) -> Vec<ServedModel> {
    let mut by: BTreeMap<String, ServedModel> = BTreeMap::new();
    for t in tokens {
        let m = by.entry(t.model.clone()).or_default();
        m.requests += t.requests;
        m.input_tokens += t.input;
        m.output_tokens += t.output;
    }
    for model in replicas.values() {
        by.entry(model.clone()).or_default();
    }
    for (model, m) in &mut by {
        m.model = model.clone();
        m.token_revenue = revenue.get(model).copied().unwrap_or_default();
        let held = usage
            .iter()
            .filter(|u| replicas.get(&u.job).is_some_and(|r| r == model));
        let inv = invoice_of(book, "", held, from, to, now);
        let mut raw = inv.unpriced_gpu_raw;
        for l in inv.lines.iter().filter(|l| l.resource == Resource::Gpu) {
            raw += l.quantity_raw;
            m.replica_gpu_cost += l.amount;
        }
        m.replica_gpu_hours = gpu_hours(raw);
    }
    by.into_values().collect()
}

fn per_hour(amount: Decimal, capacity_raw: u128) -> Option<Decimal> {
    (capacity_raw > 0).then(|| {
        (amount * Decimal::from(GPU_RAW_PER_HOUR)
            / Decimal::from_i128_with_scale(capacity_raw as i128, 0))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
    })
}
