//! The billing crate's results as wire types ([`suanli_api::bills`]):
//! decimals become their exact text.

use suanli_billing::{Economics, Invoice, LineItem, ModelEconomics, Resource};

pub fn invoice(i: &Invoice) -> suanli_api::Invoice {
    suanli_api::Invoice {
        tenant: i.tenant.clone(),
        currency: i.currency.clone(),
        from: i.from,
        to: i.to,
        lines: i.lines.iter().map(line).collect(),
        total: i.total.to_string(),
        unpriced_gpu_raw: i.unpriced_gpu_raw,
        unpriced_tokens: i.unpriced_tokens,
    }
}

fn line(l: &LineItem) -> suanli_api::LineItem {
    suanli_api::LineItem {
        resource: match l.resource {
            Resource::Gpu => "gpu",
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::InputTokens => "input_tokens",
            Resource::OutputTokens => "output_tokens",
        }
        .to_string(),
        gpu_model: l.gpu_model.clone(),
        model: l.model.clone(),
        class: l.class.clone(),
        quantity: l.quantity.to_string(),
        quantity_raw: l.quantity_raw,
        unit: l.unit.to_string(),
        unit_price: l.unit_price.to_string(),
        amount: l.amount.to_string(),
    }
}

fn model(m: &ModelEconomics) -> suanli_api::ModelEconomics {
    suanli_api::ModelEconomics {
        gpu_model: m.gpu_model.clone(),
        capacity_gpu_hours: m.capacity_gpu_hours.to_string(),
        down_gpu_hours: m.down_gpu_hours.to_string(),
        sold_gpu_hours: m.sold_gpu_hours.to_string(),
        utilisation_pct: m.utilisation_pct.map(|d| d.to_string()),
        revenue: m.revenue.to_string(),
        idle_gpu_hours: m.idle_gpu_hours.to_string(),
        idle_value: m.idle_value.to_string(),
        idle_unpriced_gpu_hours: m.idle_unpriced_gpu_hours.to_string(),
        revenue_per_capacity_gpu_hour: m.revenue_per_capacity_gpu_hour.map(|d| d.to_string()),
    }
}

pub fn economics(period: String, now_ms: i64, e: &Economics) -> suanli_api::EconomicsReport {
    suanli_api::EconomicsReport {
        period,
        now_ms,
        currency: e.currency.clone(),
        from: e.from,
        to: e.to,
        models: e.models.iter().map(model).collect(),
        capacity_gpu_hours: e.capacity_gpu_hours.to_string(),
        down_gpu_hours: e.down_gpu_hours.to_string(),
        sold_gpu_hours: e.sold_gpu_hours.to_string(),
        utilisation_pct: e.utilisation_pct.map(|d| d.to_string()),
        gpu_revenue: e.gpu_revenue.to_string(),
        other_revenue: e.other_revenue.to_string(),
        revenue: e.revenue.to_string(),
        idle_gpu_hours: e.idle_gpu_hours.to_string(),
        idle_value: e.idle_value.to_string(),
        revenue_per_capacity_gpu_hour: e.revenue_per_capacity_gpu_hour.map(|d| d.to_string()),
        token_revenue: e.token_revenue.to_string(),
        served: e
            .served
            .iter()
            .map(|m| suanli_api::ServedModel {
                model: m.model.clone(),
                requests: m.requests,
                input_tokens: m.input_tokens,
                output_tokens: m.output_tokens,
                token_revenue: m.token_revenue.to_string(),
                replica_gpu_hours: m.replica_gpu_hours.to_string(),
                replica_gpu_cost: m.replica_gpu_cost.to_string(),
            })
            .collect(),
        invoices: e.invoices.iter().map(invoice).collect(),
    }
}
