//! Token lines: per model and price period, rounded once, unpriced tokens
//! shown, bad token prices named; the economics put token revenue beside
//! the replicas' GPU cost.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use suanli_billing::{
    add_tokens, economics_with_services, invoice, parse_time, PriceBook, Resource, TokenUse, Usage,
};

const H: i64 = 3_600_000;

const BOOK: &str = r#"
currency = "CNY"
[[period]]
from = "2026-01-01"
[period.gpu_hour.A100-80G]
on-demand = "12.00"
[period.tokens.llama]
input = "0.30"
output = "0.60"
[[period]]
from = "2026-01-15"
[period.gpu_hour.A100-80G]
on-demand = "12.00"
[period.tokens.llama]
input = "0.25"
output = "0.50"
"#;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn uses(tenant: &str, model: &str, at: i64, input: u64, output: u64) -> TokenUse {
    TokenUse {
        tenant: tenant.into(),
        model: model.into(),
        at,
        requests: 1,
        input,
        output,
    }
}

#[test]
fn tokens_are_priced_per_million_by_the_period_they_fell_in() {
    let book = PriceBook::parse(BOOK).unwrap();
    let jan = parse_time("2026-01-01").unwrap();
    let mid = parse_time("2026-01-15").unwrap();
    let feb = parse_time("2026-02-01").unwrap();
    let mut inv = invoice(&book, "acme", &[], jan, feb, feb);
    let t = [
        uses("acme", "llama", jan + H, 1_000_000, 500_000),
        uses("acme", "llama", mid + H, 3_000_001, 0),
        uses("acme", "mystery", mid + H, 7, 8),
        uses("beta", "llama", jan + H, 9_000_000, 9_000_000),
    ];
    add_tokens(&book, &mut inv, &t);
    let line = |r: Resource, price: &str| {
        inv.lines
            .iter()
            .find(|l| l.resource == r && l.unit_price == d(price))
            .unwrap_or_else(|| panic!("no {r:?} line at {price}: {inv:?}"))
            .clone()
    };
    let a = line(Resource::InputTokens, "0.30");
    assert_eq!(
        (a.quantity_raw, a.amount, a.unit),
        (1_000_000, d("0.30"), "1M tokens")
    );
    assert_eq!(a.model.as_deref(), Some("llama"));
    assert_eq!(line(Resource::OutputTokens, "0.60").amount, d("0.30"));
    // 3,000,001 × 0.25 / 1e6 = 0.75000025 → 0.75, rounded once.
    let b = line(Resource::InputTokens, "0.25");
    assert_eq!((b.quantity_raw, b.amount), (3_000_001, d("0.75")));
    // No output line for zero tokens; another tenant's tokens are not here.
    assert_eq!(inv.lines.len(), 3, "{inv:?}");
    assert_eq!(inv.total, d("1.35"));
    // A model without a token price is shown, not free.
    assert_eq!(inv.unpriced_tokens, 15);
}

#[test]
fn bad_token_prices_are_named() {
    let bad = BOOK.replace("input = \"0.30\"", "input = \"-1\"");
    let e = PriceBook::parse(&bad).unwrap_err();
    assert!(
        e.contains("tokens.llama.input") && e.contains("negative"),
        "{e}"
    );
    let bad = BOOK.replace("output = \"0.60\"", "outptu = \"0.60\"");
    let e = PriceBook::parse(&bad).unwrap_err();
    assert!(e.contains("outptu"), "{e}");
}

#[test]
fn economics_put_token_revenue_beside_the_replicas_gpu_cost() {
    let book = PriceBook::parse(BOOK).unwrap();
    let jan = parse_time("2026-01-01").unwrap();
    let feb = parse_time("2026-02-01").unwrap();
    // Job 7 is a replica of "llama" (2 GPU-hours), job 8 a batch job.
    let u = |job: i64, hours: i64| Usage {
        tenant: "ops".into(),
        job,
        run: 1,
        task: 0,
        gpu_model: Some("A100-80G".into()),
        class: "on-demand".into(),
        gpu_milli: 1000,
        cpu_milli: 0,
        memory_mib: 0,
        start: jan,
        end: Some(jan + hours * H),
    };
    let usage = [u(7, 2), u(8, 5)];
    let tokens = [uses("acme", "llama", jan + H, 2_000_000, 1_000_000)];
    let replicas: BTreeMap<i64, String> = [(7, "llama".to_string())].into();
    let e = economics_with_services(&book, &[], &usage, &tokens, &replicas, jan, feb, feb);
    assert_eq!(e.token_revenue, d("1.20"));
    assert_eq!(e.gpu_revenue, d("84.00"));
    assert_eq!(e.revenue, d("85.20"));
    let s = &e.served[0];
    assert_eq!(
        (
            s.model.as_str(),
            s.requests,
            s.input_tokens,
            s.output_tokens
        ),
        ("llama", 1, 2_000_000, 1_000_000)
    );
    assert_eq!(
        (s.token_revenue, s.replica_gpu_hours, s.replica_gpu_cost),
        (d("1.20"), d("2"), d("24.00"))
    );
    // The caller's invoice carries the tokens; the owner's the GPU time.
    let acme = e.invoices.iter().find(|i| i.tenant == "acme").unwrap();
    assert_eq!(acme.total, d("1.20"));
}
