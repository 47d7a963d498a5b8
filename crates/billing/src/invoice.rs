//! Invoices: usage intervals into exact line items, split at price changes.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::book::PriceBook;
use crate::{Ms, MS_PER_HOUR};

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
    /// Prompt tokens of a served model.
    InputTokens,
    /// Completion tokens of a served model.
    OutputTokens,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineItem {
    pub resource: Resource,
    pub gpu_model: Option<String>,
    /// The served model, for token lines.
    pub model: Option<String>,
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
    /// Tokens of models with no token price in the book.
    pub unpriced_tokens: u128,
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

pub(crate) fn invoice_of<'a>(
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
            Resource::InputTokens | Resource::OutputTokens => {
                unreachable!("token lines are added by tokens::add_tokens")
            }
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
            model: None,
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
        unpriced_tokens: 0,
    }
}
