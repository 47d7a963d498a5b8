//! Invoices and the operator's economics report. Money and quantities are
//! exact decimals, sent as text (e.g. `"1234.50"`), never as floats.

use serde::{Deserialize, Serialize};

/// `GET /v1/bills`: the invoices of a month.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bills {
    pub currency: String,
    /// `YYYY-MM` (UTC).
    pub period: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub invoices: Vec<Invoice>,
}

/// One tenant's invoice: the total is the sum of the lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invoice {
    pub tenant: String,
    pub currency: String,
    pub from: i64,
    pub to: i64,
    pub lines: Vec<LineItem>,
    /// Decimal text.
    pub total: String,
    /// GPU usage with no price in the book, in GPU milli × ms: shown so
    /// that nothing is silently free.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub unpriced_gpu_raw: u128,
    /// Tokens of served models with no token price in the book.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub unpriced_tokens: u128,
}

/// One priced line: a resource (and GPU model and class) at one price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineItem {
    /// `gpu`, `cpu`, `memory`, `input_tokens` or `output_tokens`.
    pub resource: String,
    pub gpu_model: Option<String>,
    /// The served model, for token lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub class: Option<String>,
    /// GPU-hours, core-hours or GiB-hours (decimal text).
    pub quantity: String,
    /// The exact integer quantity: milli × ms (GPU, CPU) or MiB × ms.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub quantity_raw: u128,
    pub unit: String,
    pub unit_price: String,
    /// Rounded once, half to even, to 2 decimals.
    pub amount: String,
}

/// One GPU model's economics over a period (decimals as text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelEconomics {
    pub gpu_model: String,
    /// GPU-hours of ready or draining nodes.
    pub capacity_gpu_hours: String,
    /// GPU-hours of nodes that were down (not capacity).
    pub down_gpu_hours: String,
    pub sold_gpu_hours: String,
    /// sold / capacity in percent; absent without capacity.
    pub utilisation_pct: Option<String>,
    pub revenue: String,
    pub idle_gpu_hours: String,
    /// Idle GPU-hours at list price.
    pub idle_value: String,
    /// Idle GPU-hours with no list price (not in `idle_value`).
    pub idle_unpriced_gpu_hours: String,
    pub revenue_per_capacity_gpu_hour: Option<String>,
}

/// `GET /v1/reports/economics` (admin): what the pool could sell, sold,
/// earned, and what its idle GPUs were worth at list price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EconomicsReport {
    pub period: String,
    /// When the report was made: open spans and running tasks count up to here.
    pub now_ms: i64,
    pub currency: String,
    pub from: i64,
    pub to: i64,
    pub models: Vec<ModelEconomics>,
    pub capacity_gpu_hours: String,
    pub down_gpu_hours: String,
    pub sold_gpu_hours: String,
    pub utilisation_pct: Option<String>,
    pub gpu_revenue: String,
    pub other_revenue: String,
    /// The sum of every tenant's invoice total.
    pub revenue: String,
    pub idle_gpu_hours: String,
    pub idle_value: String,
    pub revenue_per_capacity_gpu_hour: Option<String>,
    /// Token lines of every invoice (model services).
    #[serde(default)]
    pub token_revenue: String,
    /// Per served model: tokens sold against its replicas' GPU time.
    #[serde(default)]
    pub served: Vec<ServedModel>,
    /// Every tenant's invoice.
    pub invoices: Vec<Invoice>,
}

/// A served model's month: tokens and what callers paid for them, against
/// the GPU-hours its replicas held and what they cost their owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServedModel {
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub token_revenue: String,
    pub replica_gpu_hours: String,
    pub replica_gpu_cost: String,
}

/// `GET /v1/bills?...`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct BillQuery {
    /// A month, `YYYY-MM` (UTC).
    #[cfg_attr(
        feature = "openapi",
        param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$")
    )]
    pub period: String,
    /// Admin only: one tenant (default: every tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub tenant: Option<String>,
}

/// `GET /v1/reports/economics?...`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EconomicsQuery {
    /// A month, `YYYY-MM` (UTC).
    #[cfg_attr(
        feature = "openapi",
        param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$")
    )]
    pub period: String,
}
