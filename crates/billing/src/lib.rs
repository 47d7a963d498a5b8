//! # suanli-billing: prices and invoices
//!
//! A [`PriceBook`] lists prices in periods that start at an effective time,
//! so prices can change mid-month. Each period has:
//! - a price per GPU-hour by GPU model and class (guaranteed, on-demand,
//!   spot); a GPU share pays its fraction;
//! - a price per CPU core-hour;
//! - a price per memory GiB-hour;
//! - per served model, a price per million input and output tokens
//!   (model services, `tokens.rs`).
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
//!
//! Layout: `time.rs` (civil dates in UTC), `book.rs` ([`PriceBook`]),
//! `invoice.rs` ([`Usage`] → [`Invoice`]), `tokens.rs` ([`TokenUse`] →
//! token lines on an invoice), `economics.rs` ([`NodeSpan`]s and
//! usage → [`Economics`]).

mod book;
mod economics;
mod invoice;
mod time;
mod tokens;

pub use book::*;
pub use economics::*;
pub use invoice::*;
pub use time::{format_time, month_of, parse_month, parse_time};
pub use tokens::*;

/// Milliseconds since the Unix epoch (UTC).
pub type Ms = i64;

const MS_PER_HOUR: i64 = 3_600_000;
