//! Tokens sold by model services, priced per million input and per million
//! output tokens of each served model (`[period.tokens.MODEL]` in the
//! book). The caller's tenant pays for its tokens; the service's owner pays
//! the GPU time its replicas hold, as any job's (see `invoice.rs`).
//!
//! Exactness as for GPU time: the quantity is an integer (tokens), the
//! amount of a line is tokens × price / 1,000,000, rounded once, half to
//! even, to 2 decimals.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::book::PriceBook;
use crate::invoice::{Invoice, LineItem, Resource};
use crate::Ms;

/// Tokens one tenant bought of one model within one price period (`at`
/// names the period: any time inside it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUse {
    pub tenant: String,
    pub model: String,
    pub at: Ms,
    pub requests: u64,
    pub input: u64,
    pub output: u64,
}

/// Prices of one served model, per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPrice {
    pub input: Decimal,
    pub output: Decimal,
}

const PER: i64 = 1_000_000;

/// Add `tenant`'s token lines of `uses` to its invoice (and to its total).
/// Tokens of a model with no price in force are counted in
/// `unpriced_tokens`, never silently free.
pub fn add_tokens(book: &PriceBook, inv: &mut Invoice, uses: &[TokenUse]) {
    let mut q: BTreeMap<(Resource, String, Decimal), u128> = BTreeMap::new();
    for u in uses.iter().filter(|u| u.tenant == inv.tenant) {
        let price = book
            .period_at(u.at)
            .and_then(|pi| book.periods[pi].tokens.get(&u.model).copied());
        let Some(p) = price else {
            inv.unpriced_tokens += u128::from(u.input) + u128::from(u.output);
            continue;
        };
        for (r, n, price) in [
            (Resource::InputTokens, u.input, p.input),
            (Resource::OutputTokens, u.output, p.output),
        ] {
            if n > 0 {
                *q.entry((r, u.model.clone(), price)).or_default() += u128::from(n);
            }
        }
    }
    let per = Decimal::from(PER);
    for ((resource, model, unit_price), raw) in q {
        let raw_d = Decimal::from_i128_with_scale(raw as i128, 0);
        let amount = (raw_d * unit_price / per)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
        inv.total += amount;
        inv.lines.push(LineItem {
            resource,
            gpu_model: None,
            model: Some(model),
            class: None,
            quantity: raw_d / per,
            quantity_raw: raw,
            unit: "1M tokens",
            unit_price,
            amount,
        });
    }
}
