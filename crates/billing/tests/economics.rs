//! Operator economics: capacity from node spans, sold GPU-hours from usage,
//! idle capacity at list price (split at price changes), revenue equal to
//! the sum of the invoices, and a property test that capacity = sold + idle.

use proptest::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;
use suanli_billing::{economics, invoice, invoices, parse_time, NodeSpan, PriceBook, Usage};

const H: i64 = 3_600_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn book() -> PriceBook {
    PriceBook::parse(
        r#"
currency = "CNY"
[[period]]
from = "2026-11-01"
cpu_core_hour = "0.10"
[period.gpu_hour.A100]
guaranteed = "15"
on-demand = "10"
spot = "4"
[period.gpu_hour.X1]
spot = "2"
[[period]]
from = "2026-11-01T10:00:00Z"
[period.gpu_hour.A100]
on-demand = "20"
spot = "4"
"#,
    )
    .unwrap()
}

fn span(node: &str, model: &str, gpus: i64, state: &str, start: i64, end: Option<i64>) -> NodeSpan {
    NodeSpan {
        node: node.into(),
        gpu_model: Some(model.into()),
        gpus,
        state: state.into(),
        start,
        end,
    }
}

fn usage(tenant: &str, model: &str, class: &str, milli: i64, start: i64, end: i64) -> Usage {
    Usage {
        tenant: tenant.into(),
        job: 1,
        run: 1,
        task: 0,
        gpu_model: Some(model.into()),
        class: class.into(),
        gpu_milli: milli,
        cpu_milli: 0,
        memory_mib: 0,
        start,
        end: Some(end),
    }
}

#[test]
fn capacity_sold_idle_and_revenue_of_one_node() {
    let b = book();
    let t0 = parse_time("2026-11-01").unwrap();
    // One 8-GPU node up for 10 hours (before the price change at 10:00).
    let spans = [span("n1", "A100", 8, "ready", t0, Some(t0 + 10 * H))];
    // 2 GPUs for 5 hours on demand at 10, plus CPU.
    let mut u = vec![usage("acme", "A100", "on-demand", 2000, t0, t0 + 5 * H)];
    u[0].cpu_milli = 4000; // 20 core-hours at 0.10 = 2.00
    let e = economics(&b, &spans, &u, t0, t0 + 24 * H, t0 + 24 * H);
    assert_eq!(e.models.len(), 1);
    let m = &e.models[0];
    assert_eq!(m.capacity_gpu_hours, d("80"));
    assert_eq!(m.sold_gpu_hours, d("10"));
    assert_eq!(m.idle_gpu_hours, d("70"));
    assert_eq!(m.utilisation_pct, Some(d("12.5")));
    assert_eq!(m.revenue, d("100"));
    assert_eq!(m.idle_value, d("700")); // 70 idle GPU-hours at the on-demand 10
    assert_eq!(m.revenue_per_capacity_gpu_hour, Some(d("1.25")));
    assert_eq!(e.gpu_revenue, d("100"));
    assert_eq!(e.other_revenue, d("2"));
    assert_eq!(e.revenue, d("102"));
    assert_eq!(e.revenue_per_capacity_gpu_hour, Some(d("1.28"))); // 102 / 80 = 1.275, half to even
    assert_eq!(e.invoices.len(), 1);
    assert_eq!(e.invoices[0].total, e.revenue);
}

#[test]
fn down_time_is_not_capacity_and_draining_is() {
    let b = book();
    let t0 = parse_time("2026-11-01").unwrap();
    let spans = [
        span("n1", "A100", 4, "ready", t0, Some(t0 + H)),
        span("n1", "A100", 4, "draining", t0 + H, Some(t0 + 2 * H)),
        span("n1", "A100", 4, "down", t0 + 2 * H, Some(t0 + 5 * H)),
        span("n1", "A100", 4, "ready", t0 + 5 * H, None), // still up: counted to now
    ];
    let now = t0 + 6 * H;
    let e = economics(&b, &spans, &[], t0, t0 + 24 * H, now);
    let m = &e.models[0];
    assert_eq!(m.capacity_gpu_hours, d("12")); // 4 × (1 + 1 + 1)
    assert_eq!(m.down_gpu_hours, d("12")); // 4 × 3
    assert_eq!(m.utilisation_pct, Some(d("0")));
    // 12 idle GPU-hours, all before the change at 10:00, at 10.
    assert_eq!(m.idle_value, d("120"));
    assert_eq!(e.revenue, d("0"));
}

#[test]
fn a_price_change_splits_idle_capacity_and_spans_are_clipped_to_the_period() {
    let b = book();
    let t0 = parse_time("2026-11-01").unwrap();
    // Up from 10 hours before the period (clipped) to 12:00; the list price
    // changes at 10:00.
    let spans = [span(
        "n1",
        "A100",
        1,
        "ready",
        t0 - 10 * H,
        Some(t0 + 12 * H),
    )];
    // A spot task 09:00–11:00 (4 per hour both sides).
    let u = [usage("lab", "A100", "spot", 1000, t0 + 9 * H, t0 + 11 * H)];
    let e = economics(&b, &spans, &u, t0, t0 + 24 * H, t0 + 24 * H);
    let m = &e.models[0];
    assert_eq!(m.capacity_gpu_hours, d("12"));
    assert_eq!(m.sold_gpu_hours, d("2"));
    assert_eq!(m.revenue, d("8"));
    // Idle: 9 hours at 10 before the change, 1 hour at 20 after it.
    assert_eq!(m.idle_gpu_hours, d("10"));
    assert_eq!(m.idle_value, d("110"));
}

#[test]
fn a_model_without_a_list_price_reports_its_idle_hours_unpriced() {
    let b = book();
    let t0 = parse_time("2026-11-01").unwrap();
    let spans = [span("x", "X1", 2, "ready", t0, Some(t0 + H))];
    let u = [usage("lab", "X1", "spot", 500, t0, t0 + H)];
    let e = economics(&b, &spans, &u, t0, t0 + H, t0 + H);
    let m = &e.models[0];
    assert_eq!(m.idle_gpu_hours, d("1.5"));
    assert_eq!(m.idle_value, d("0"));
    assert_eq!(m.idle_unpriced_gpu_hours, d("1.5"));
    assert_eq!(m.revenue, d("1")); // half a GPU-hour of spot at 2
}

#[test]
fn revenue_is_the_sum_of_every_tenants_invoice() {
    let b = book();
    let t0 = parse_time("2026-11-01").unwrap();
    let spans = [span("n1", "A100", 8, "ready", t0, None)];
    let u = [
        usage(
            "a",
            "A100",
            "guaranteed",
            1000,
            t0 + H / 7,
            t0 + 13 * H + 11,
        ),
        usage("b", "A100", "on-demand", 333, t0 + 3, t0 + 17 * H / 3),
        usage("b", "A100", "spot", 2000, t0 + 5 * H, t0 + 23 * H),
        usage("c", "A100", "on-demand", 1000, t0 + 9 * H, t0 + 11 * H),
    ];
    let (from, to, now) = (t0, t0 + 24 * H, t0 + 30 * H);
    let e = economics(&b, &spans, &u, from, to, now);
    let sum: Decimal = ["a", "b", "c"]
        .iter()
        .map(|t| invoice(&b, t, &u, from, to, now).total)
        .sum();
    assert_eq!(e.revenue, sum);
    assert_eq!(e.gpu_revenue + e.other_revenue, e.revenue);
    let by_model: Decimal = e.models.iter().map(|m| m.revenue).sum();
    assert_eq!(by_model, e.gpu_revenue);
    // Grouped invoices equal one invoice per tenant; a tenant with no usage
    // gets an empty one.
    let all = invoices(&b, &["c", "a", "idle", "b"], &u, from, to, now);
    assert_eq!(all[0], invoice(&b, "c", &u, from, to, now));
    assert_eq!(all[1], invoice(&b, "a", &u, from, to, now));
    assert!(all[2].lines.is_empty() && all[2].total.is_zero());
    assert_eq!(all[3], invoice(&b, "b", &u, from, to, now));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Tasks packed onto one node never exceed its capacity, so capacity is
    /// exactly sold + idle, and utilisation is sold / capacity.
    #[test]
    fn capacity_is_sold_plus_idle(
        tasks in proptest::collection::vec((0i64..20 * H, 1i64..5 * H, 1i64..=1000), 0..8),
        up in 1i64..30,
    ) {
        let b = book();
        let t0 = parse_time("2026-11-01").unwrap();
        // 8 GPUs; at most 8 tasks of at most one GPU each: never oversold.
        let spans = [span("n1", "A100", 8, "ready", t0, Some(t0 + up * H))];
        let u: Vec<Usage> = tasks
            .iter()
            .map(|&(s, len, milli)| {
                let s = (t0 + s).min(t0 + up * H);
                usage("t", "A100", "spot", milli, s, (s + len).min(t0 + up * H))
            })
            .collect();
        let e = economics(&b, &spans, &u, t0, t0 + 40 * H, t0 + 40 * H);
        let sold: i128 = u.iter().map(|x| (x.end.unwrap() - x.start) as i128 * x.gpu_milli as i128).sum();
        let m = &e.models[0];
        prop_assert_eq!(m.sold_gpu_hours, Decimal::from(sold) / Decimal::from(1000 * H));
        prop_assert_eq!(m.capacity_gpu_hours, m.sold_gpu_hours + m.idle_gpu_hours);
        prop_assert_eq!(m.capacity_gpu_hours, Decimal::from(8 * up));
    }
}
