//! # suanli-billing: prices and invoices
//!
//! A [`PriceBook`] lists prices in periods that start at an effective time,
//! so prices can change mid-month. Each period has:
//! - a price per GPU-hour by GPU model and class (guaranteed, on-demand,
//!   spot); a GPU share pays its fraction;
//! - a price per CPU core-hour;
//! - a price per memory GiB-hour.
//!
//! [`invoice`] turns usage intervals (one per task per attempt, from the
//! store or the simulator) into line items by (resource, GPU model, class,
//! unit price).
//!
//! **Exactness.** Quantities are integers: GPU milli × milliseconds, CPU milli
//! × milliseconds, MiB × milliseconds. An interval that spans a price change
//! is split at the change, to the millisecond. A line item's amount is its
//! integer quantity × its unit price, divided by the unit in exact decimal
//! arithmetic ([`rust_decimal`], 28 significant digits). It is **rounded
//! once**, half to even, to the currency's minor unit (2 decimals). The
//! total is the sum of the rounded line items, so it always equals what the
//! invoice shows.

use std::collections::BTreeMap;
use std::str::FromStr;

use jiff::civil::{self, DateTime};
use jiff::fmt::strtime;
use jiff::SignedDuration;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
pub type Ms = i64;

const MS_PER_HOUR: i64 = 3_600_000;

/// The Unix epoch, as a civil datetime in UTC.
const EPOCH: DateTime = civil::date(1970, 1, 1).to_datetime(civil::Time::midnight());

/// Whether `s` has exactly the shape of `pattern`, where `9` stands for one
/// ASCII digit and any other character for itself. jiff's `strptime` is
/// lenient (it skips blanks, takes a sign or fewer digits); checking the
/// shape first keeps the accepted forms exactly the documented ones.
fn has_shape(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'9' => c.is_ascii_digit(),
            _ => c == p,
        })
}

/// A civil datetime in UTC → milliseconds since the epoch.
fn ms_of(dt: DateTime) -> Ms {
    // Civil datetimes span years -9999..=9999, far inside i64 milliseconds.
    dt.duration_since(EPOCH).as_millis() as Ms
}

/// Milliseconds since the epoch → civil datetime in UTC (clamped to jiff's
/// years -9999..=9999; every time [`parse_time`] reads is inside).
fn civil_of(t: Ms) -> DateTime {
    EPOCH.saturating_add(SignedDuration::from_millis(t))
}

/// `2026-11-15` or `2026-11-15T08:00:00Z` → milliseconds (UTC).
pub fn parse_time(s: &str) -> Result<Ms, String> {
    let bad = |why: &dyn std::fmt::Display| {
        format!("{s:?}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC){why}")
    };
    let parsed = if has_shape(s, "9999-99-99") {
        civil::Date::strptime("%Y-%m-%d", s).map(|d| d.to_datetime(civil::Time::midnight()))
    } else if has_shape(s, "9999-99-99T99:99:99Z") && !s.ends_with(":60Z") {
        // (jiff reads a leap second as :59; it is refused, as ever.)
        DateTime::strptime("%Y-%m-%dT%H:%M:%SZ", s)
    } else {
        return Err(bad(&""));
    };
    parsed.map(ms_of).map_err(|e| bad(&format_args!(": {e}")))
}

/// `2026-11` → [start, end) of that month, UTC.
pub fn parse_month(s: &str) -> Result<(Ms, Ms), String> {
    let bad = || format!("period {s:?}: expected YYYY-MM");
    if !has_shape(s, "9999-99") {
        return Err(bad());
    }
    let tm = strtime::parse("%Y-%m", s).map_err(|e| format!("{}: {e}", bad()))?;
    let (Some(y), Some(m)) = (tm.year(), tm.month()) else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y) {
        return Err(format!("{}: years 1970 to 9999", bad()));
    }
    let first = civil::Date::new(y, m, 1).map_err(|e| format!("{}: {e}", bad()))?;
    let start = ms_of(first.to_datetime(civil::Time::midnight()));
    // The end is computed from the month's length, not as the next month's
    // first day, which for 9999-12 is past jiff's last year.
    Ok((start, start + i64::from(first.days_in_month()) * 86_400_000))
}

/// The month (`YYYY-MM`, UTC) that contains `t`.
pub fn month_of(t: Ms) -> String {
    civil_of(t).strftime("%Y-%m").to_string()
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), the form [`parse_time`] reads.
pub fn format_time(t: Ms) -> String {
    civil_of(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Service classes, as jobs name them.
pub const CLASSES: [&str; 3] = ["guaranteed", "on-demand", "spot"];

/// Prices in force from `from` until the next period's `from`.
#[derive(Clone, Debug, PartialEq)]
pub struct PricePeriod {
    pub from: Ms,
    /// (GPU model, class) → price per GPU-hour.
    pub gpu_hour: BTreeMap<(String, String), Decimal>,
    pub cpu_core_hour: Decimal,
    pub mem_gib_hour: Decimal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PriceBook {
    pub currency: String,
    /// Sorted by `from`, strictly increasing.
    pub periods: Vec<PricePeriod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBook {
    currency: String,
    #[serde(rename = "period")]
    periods: Vec<FilePeriod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeriod {
    from: String,
    #[serde(default)]
    cpu_core_hour: Option<String>,
    #[serde(default)]
    mem_gib_hour: Option<String>,
    #[serde(default)]
    gpu_hour: BTreeMap<String, BTreeMap<String, String>>,
}

fn price(what: &str, s: &str) -> Result<Decimal, String> {
    let d =
        Decimal::from_str(s.trim()).map_err(|e| format!("{what}: {s:?} is not a decimal ({e})"))?;
    if d.is_sign_negative() {
        return Err(format!("{what}: {s:?} is negative"));
    }
    Ok(d)
}

impl PriceBook {
    /// Parse the TOML price book (see `examples/prices.toml`). Errors name
    /// the line and column, or the period and field.
    pub fn parse(text: &str) -> Result<PriceBook, String> {
        let f: FileBook = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                    )
                })
                .unwrap_or((1, 1));
            format!("{line}:{col}: {}", e.message())
        })?;
        if f.currency.trim().is_empty() {
            return Err("currency must be named (e.g. \"CNY\")".to_string());
        }
        if f.periods.is_empty() {
            return Err("a price book needs at least one [[period]]".to_string());
        }
        let mut periods = Vec::new();
        for (i, p) in f.periods.iter().enumerate() {
            let at = |field: &str| format!("period {} ({}) {field}", i + 1, p.from);
            let from = parse_time(&p.from).map_err(|e| format!("{}: {e}", at("from")))?;
            let mut gpu_hour = BTreeMap::new();
            for (model, by_class) in &p.gpu_hour {
                for (class, v) in by_class {
                    if !CLASSES.contains(&class.as_str()) {
                        return Err(format!(
                            "{}: class must be one of {} (found {class:?})",
                            at(&format!("gpu_hour.{model}")),
                            CLASSES.join(", ")
                        ));
                    }
                    let d = price(&at(&format!("gpu_hour.{model}.{class}")), v)?;
                    gpu_hour.insert((model.clone(), class.clone()), d);
                }
            }
            let opt = |v: &Option<String>, f: &str| -> Result<Decimal, String> {
                v.as_deref().map_or(Ok(Decimal::ZERO), |s| price(&at(f), s))
            };
            periods.push(PricePeriod {
                from,
                gpu_hour,
                cpu_core_hour: opt(&p.cpu_core_hour, "cpu_core_hour")?,
                mem_gib_hour: opt(&p.mem_gib_hour, "mem_gib_hour")?,
            });
        }
        if periods.windows(2).any(|w| w[0].from >= w[1].from) {
            return Err("periods must be in increasing order of `from`".to_string());
        }
        Ok(PriceBook {
            currency: f.currency,
            periods,
        })
    }

    pub fn read(path: &std::path::Path) -> Result<PriceBook, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        PriceBook::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Index of the period in force at `t` (None before the first).
    fn period_at(&self, t: Ms) -> Option<usize> {
        self.periods.iter().rposition(|p| p.from <= t)
    }

    /// [start, end) cut at every price change inside it: (from, to, period
    /// in force) for each piece.
    fn segments(&self, start: Ms, end: Ms) -> Vec<(Ms, Ms, Option<usize>)> {
        let mut cuts = vec![start];
        cuts.extend(
            self.periods
                .iter()
                .map(|p| p.from)
                .filter(|&f| f > start && f < end),
        );
        cuts.push(end);
        cuts.windows(2)
            .map(|w| (w[0], w[1], self.period_at(w[0])))
            .collect()
    }

    /// The list price of a GPU-hour of `model` in period `pi`: its on-demand
    /// price, else its guaranteed price, else none.
    fn list_price(&self, pi: usize, model: &str) -> Option<Decimal> {
        let p = &self.periods[pi];
        ["on-demand", "guaranteed"]
            .iter()
            .find_map(|c| p.gpu_hour.get(&(model.to_string(), c.to_string())).copied())
    }
}

/// One task's use of resources over one attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub tenant: String,
    pub job: i64,
    pub run: i64,
    pub task: i64,
    /// GPU model, for GPU tasks.
    pub gpu_model: Option<String>,
    pub class: String,
    /// GPU milli the task holds (1000 per whole GPU, 250 for a quarter).
    pub gpu_milli: i64,
    pub cpu_milli: i64,
    pub memory_mib: i64,
    pub start: Ms,
    /// `None`: still running (billed up to the invoice's `now`).
    pub end: Option<Ms>,
}

/// What a line item prices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Gpu,
    Cpu,
    Memory,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineItem {
    pub resource: Resource,
    pub gpu_model: Option<String>,
    pub class: Option<String>,
    /// GPU-hours, core-hours or GiB-hours, as a decimal (exact quotient to
    /// 28 significant digits; shown rounded).
    pub quantity: Decimal,
    /// The exact integer quantity: milli × ms (GPU, CPU) or MiB × ms (memory).
    pub quantity_raw: u128,
    pub unit: &'static str,
    pub unit_price: Decimal,
    /// Rounded once, half to even, to 2 decimals.
    pub amount: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Invoice {
    pub tenant: String,
    pub currency: String,
    pub from: Ms,
    pub to: Ms,
    pub lines: Vec<LineItem>,
    pub total: Decimal,
    /// GPU usage with no price in the book (model/class missing), in GPU milli × ms;
    /// shown so that nothing is silently free.
    pub unpriced_gpu_raw: u128,
}

type LineKey = (Resource, Option<String>, Option<String>, Decimal);

/// The invoice of `tenant` for [from, to): usage clipped to the period (and
/// to `now` for running tasks), split at price changes.
pub fn invoice(
    book: &PriceBook,
    tenant: &str,
    usage: &[Usage],
    from: Ms,
    to: Ms,
    now: Ms,
) -> Invoice {
    invoice_of(
        book,
        tenant,
        usage.iter().filter(|u| u.tenant == tenant),
        from,
        to,
        now,
    )
}

/// The invoices of `tenants` (in that order; one with no usage has no lines),
/// grouping the usage by tenant once: linear in the usage, however many
/// tenants there are.
pub fn invoices(
    book: &PriceBook,
    tenants: &[&str],
    usage: &[Usage],
    from: Ms,
    to: Ms,
    now: Ms,
) -> Vec<Invoice> {
    let mut by: BTreeMap<&str, Vec<&Usage>> = tenants.iter().map(|t| (*t, Vec::new())).collect();
    for u in usage {
        if let Some(v) = by.get_mut(u.tenant.as_str()) {
            v.push(u);
        }
    }
    tenants
        .iter()
        .map(|t| invoice_of(book, t, by[t].iter().copied(), from, to, now))
        .collect()
}

fn invoice_of<'a>(
    book: &PriceBook,
    tenant: &str,
    usage: impl Iterator<Item = &'a Usage>,
    from: Ms,
    to: Ms,
    now: Ms,
) -> Invoice {
    let mut q: BTreeMap<LineKey, u128> = BTreeMap::new();
    let mut unpriced = 0u128;
    for u in usage {
        let end = u.end.unwrap_or(now).min(to);
        let start = u.start.max(from);
        if end <= start {
            continue;
        }
        for (a, b, pi) in book.segments(start, end) {
            let Some(pi) = pi else {
                if u.gpu_milli > 0 {
                    unpriced += (b - a) as u128 * u.gpu_milli as u128;
                }
                continue;
            };
            let p = &book.periods[pi];
            let ms = (b - a) as u128;
            if u.gpu_milli > 0 {
                let model = u.gpu_model.clone().unwrap_or_default();
                match p.gpu_hour.get(&(model.clone(), u.class.clone())) {
                    Some(&price) => {
                        *q.entry((Resource::Gpu, Some(model), Some(u.class.clone()), price))
                            .or_default() += ms * u.gpu_milli as u128;
                    }
                    None => unpriced += ms * u.gpu_milli as u128,
                }
            }
            if u.cpu_milli > 0 {
                *q.entry((Resource::Cpu, None, None, p.cpu_core_hour))
                    .or_default() += ms * u.cpu_milli as u128;
            }
            if u.memory_mib > 0 {
                *q.entry((Resource::Memory, None, None, p.mem_gib_hour))
                    .or_default() += ms * u.memory_mib as u128;
            }
        }
    }
    let mut lines = Vec::new();
    let mut total = Decimal::ZERO;
    for ((resource, gpu_model, class, unit_price), raw) in q {
        // milli × ms per GPU-hour (or core-hour); MiB × ms per GiB-hour.
        let (per_unit, unit) = match resource {
            Resource::Gpu => (1000u128 * MS_PER_HOUR as u128, "GPU-hour"),
            Resource::Cpu => (1000u128 * MS_PER_HOUR as u128, "core-hour"),
            Resource::Memory => (1024u128 * MS_PER_HOUR as u128, "GiB-hour"),
        };
        let raw_d = Decimal::from_i128_with_scale(raw as i128, 0);
        let per = Decimal::from_i128_with_scale(per_unit as i128, 0);
        let quantity = raw_d / per;
        // Multiply before dividing: the amount is exact up to the division.
        let amount = (raw_d * unit_price / per)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
        total += amount;
        lines.push(LineItem {
            resource,
            gpu_model,
            class,
            quantity,
            quantity_raw: raw,
            unit,
            unit_price,
            amount,
        });
    }
    Invoice {
        tenant: tenant.to_string(),
        currency: book.currency.clone(),
        from,
        to,
        lines,
        total,
        unpriced_gpu_raw: unpriced,
    }
}

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
    /// Every tenant's invoice, by tenant name.
    pub invoices: Vec<Invoice>,
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
    let tenants: std::collections::BTreeSet<&str> =
        usage.iter().map(|u| u.tenant.as_str()).collect();
    let tenants: Vec<&str> = tenants.into_iter().collect();
    let invoices = invoices(book, &tenants, usage, from, to.min(now), now);
    let mut gpu_revenue_by_model: BTreeMap<String, Decimal> = BTreeMap::new();
    let (mut gpu_revenue, mut other_revenue, mut revenue) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for inv in &invoices {
        revenue += inv.total;
        for l in &inv.lines {
            if l.resource == Resource::Gpu {
                gpu_revenue += l.amount;
                *gpu_revenue_by_model
                    .entry(l.gpu_model.clone().unwrap_or_default())
                    .or_default() += l.amount;
            } else {
                other_revenue += l.amount;
            }
        }
    }
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
        invoices,
    }
}

fn per_hour(amount: Decimal, capacity_raw: u128) -> Option<Decimal> {
    (capacity_raw > 0).then(|| {
        (amount * Decimal::from(GPU_RAW_PER_HOUR)
            / Decimal::from_i128_with_scale(capacity_raw as i128, 0))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_months() {
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2026-11-29T00:00:00Z"), Ok(1_795_910_400_000));
        assert_eq!(
            parse_month("2026-11"),
            Ok((1_793_491_200_000, 1_796_083_200_000))
        );
        assert_eq!(
            parse_month("2026-12").unwrap().1,
            parse_time("2027-01-01").unwrap()
        );
        assert!(parse_time("2026-02-30").is_err());
        assert!(parse_time("2026-11-29T25:00:00Z").is_err());
        assert!(parse_month("2026-13").is_err());
        assert!(parse_month("2026-1").is_err());
        for m in ["1970-01", "2024-02", "2026-11", "2026-12", "2100-03"] {
            let (a, b) = parse_month(m).unwrap();
            assert_eq!(month_of(a), m);
            assert_eq!(month_of(b - 1), m);
        }
        for t in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2026-11-29T12:34:56Z",
        ] {
            assert_eq!(format_time(parse_time(t).unwrap()), t);
        }
        assert!(parse_month("26-11").is_err());
    }

    #[test]
    fn times_keep_their_exact_forms_and_range() {
        for bad in [
            "2026-11-5",
            " 2026-11-05",
            "2026-11-05 ",
            "+026-11-05",
            "2026-11-05T8:00:00Z",
            "2026-11-05T08:00:00",
            "2026-11-05T08:00:00+00:00",
            "2026-11-05T08:00:00.5Z",
            "2026-11-05T23:59:60Z",
            "2026-11-05T24:00:00Z",
            "2026-00-05",
            "2025-02-29",
            "",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("expected YYYY-MM-DD"), "{bad:?}: {e}");
        }
        assert_eq!(parse_time("2024-02-29T23:59:59Z").unwrap() % 1000, 0);
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(1_500), "1970-01-01T00:00:01Z");
        assert_eq!(month_of(-1), "1969-12");
        assert_eq!(
            parse_time("9999-12-31T23:59:59Z").unwrap() + 1000,
            parse_month("9999-12").unwrap().1
        );
        for bad in ["1969-12", "2026-00", "2026-1 ", "2026/11", "+2026-11"] {
            let e = parse_month(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("period {bad:?}: expected YYYY-MM")),
                "{e}"
            );
        }
    }
}
