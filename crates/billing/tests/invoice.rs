//! Invoices: totals, fractional GPUs, price changes inside an interval,
//! running tasks, unpriced usage, bad price books, and a property test that
//! billed GPU usage equals the sum of the run intervals.

use proptest::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;
use suanli_billing::{invoice, parse_time, PriceBook, Resource, Usage};

const H: i64 = 3_600_000;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn book() -> PriceBook {
    PriceBook::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/prices.toml"
        ))
        .unwrap(),
    )
    .unwrap()
}

fn usage(class: &str, gpu_milli: i64, start: i64, end: Option<i64>) -> Usage {
    Usage {
        tenant: "acme".into(),
        job: 1,
        run: 1,
        task: 0,
        gpu_model: Some("A100-80G".into()),
        class: class.into(),
        gpu_milli,
        cpu_milli: 0,
        memory_mib: 0,
        start,
        end,
    }
}

#[test]
fn the_total_is_the_sum_of_the_line_items_and_shares_pay_their_fraction() {
    let b = book();
    let t0 = parse_time("2026-11-02").unwrap();
    let mut u = vec![
        usage("on-demand", 2000, t0, Some(t0 + 3 * H)), // 6 GPU-hours at 12
        usage("on-demand", 250, t0, Some(t0 + 2 * H)),  // 0.5 GPU-hours at 12
        usage("guaranteed", 1000, t0, Some(t0 + H / 3)), // 1/3 GPU-hour at 18
    ];
    u[1].cpu_milli = 1500; // 3 core-hours at 0.08
    u[1].memory_mib = 4096; // 8 GiB-hours at 0.01
    let (from, to) = suanli_billing::parse_month("2026-11").unwrap();
    let inv = invoice(&b, "acme", &u, from, to, to);
    let gpu: Vec<_> = inv
        .lines
        .iter()
        .filter(|l| l.resource == Resource::Gpu)
        .collect();
    assert_eq!(gpu.len(), 2);
    let od = gpu
        .iter()
        .find(|l| l.class.as_deref() == Some("on-demand"))
        .unwrap();
    assert_eq!((od.quantity, od.amount), (d("6.5"), d("78.00")));
    let g = gpu
        .iter()
        .find(|l| l.class.as_deref() == Some("guaranteed"))
        .unwrap();
    assert_eq!(g.amount, d("6.00"), "1/3 h x 18 = 6 exactly, no drift");
    let cpu = inv
        .lines
        .iter()
        .find(|l| l.resource == Resource::Cpu)
        .unwrap();
    assert_eq!((cpu.quantity, cpu.amount), (d("3"), d("0.24")));
    let mem = inv
        .lines
        .iter()
        .find(|l| l.resource == Resource::Memory)
        .unwrap();
    assert_eq!((mem.quantity, mem.amount), (d("8"), d("0.08")));
    assert_eq!(
        inv.total,
        inv.lines.iter().map(|l| l.amount).sum::<Decimal>()
    );
    assert_eq!(inv.total, d("84.32"));
    assert_eq!(inv.currency, "CNY");
    // Another tenant sees nothing of acme's.
    assert!(invoice(&b, "beta", &u, from, to, to).lines.is_empty());
}

#[test]
fn a_price_change_inside_an_interval_splits_it() {
    let b = book();
    let change = parse_time("2026-11-15").unwrap();
    // 10 spot GPU-hours: 4 before the change at 4.80, 6 after at 4.00.
    let u = vec![usage("spot", 1000, change - 4 * H, Some(change + 6 * H))];
    let (from, to) = suanli_billing::parse_month("2026-11").unwrap();
    let inv = invoice(&b, "acme", &u, from, to, to);
    let mut got: Vec<(Decimal, Decimal, Decimal)> = inv
        .lines
        .iter()
        .map(|l| (l.unit_price, l.quantity, l.amount))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (d("4.00"), d("6"), d("24.00")),
            (d("4.80"), d("4"), d("19.20"))
        ]
    );
    assert_eq!(inv.total, d("43.20"));
}

#[test]
fn intervals_are_clipped_to_the_period_and_running_tasks_to_now() {
    let b = book();
    let (from, to) = suanli_billing::parse_month("2026-11").unwrap();
    // Started in October, still running "now" (2 h into November).
    let u = vec![usage("on-demand", 1000, from - 5 * H, None)];
    let inv = invoice(&b, "acme", &u, from, to, from + 2 * H);
    assert_eq!(inv.lines[0].quantity, d("2"));
    // A model or class the book does not price is reported, not billed as free.
    let mut x = usage("on-demand", 1000, from, Some(from + H));
    x.gpu_model = Some("V100".into());
    let inv = invoice(&b, "acme", &[x], from, to, to);
    assert!(inv.lines.is_empty());
    assert_eq!(inv.unpriced_gpu_raw, 1000 * H as u128);
}

#[test]
fn bad_price_books_are_refused_with_where() {
    let e = PriceBook::parse("currency = \"CNY\"\n[[period]]\nfrom = \"2026-01-01\"\nbogus = 1\n")
        .unwrap_err();
    assert!(e.starts_with("4:1:"), "{e}");
    let e = PriceBook::parse("currency = \"CNY\"\n[[period]]\nfrom = \"2026-01-01\"\n[period.gpu_hour.A100]\nvip = \"1\"\n").unwrap_err();
    assert!(e.contains("class must be one of"), "{e}");
    let e = PriceBook::parse(
        "currency = \"CNY\"\n[[period]]\nfrom = \"2026-01-01\"\ncpu_core_hour = \"-1\"\n",
    )
    .unwrap_err();
    assert!(e.contains("negative"), "{e}");
    let e = PriceBook::parse("currency = \"CNY\"\n[[period]]\nfrom = \"2026-02-01\"\n[[period]]\nfrom = \"2026-01-01\"\n").unwrap_err();
    assert!(e.contains("increasing"), "{e}");
    let e = PriceBook::parse("currency = \"CNY\"\n[[period]]\nfrom = \"yesterday\"\n").unwrap_err();
    assert!(e.contains("period 1") && e.contains("YYYY-MM-DD"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Billed GPU usage (priced and unpriced) equals the sum of the run
    /// intervals clipped to the period, however price changes cut them; and
    /// the total equals the sum of the line items.
    #[test]
    fn billed_gpu_time_equals_the_sum_of_run_intervals(
        runs in prop::collection::vec((0i64..1000, 1i64..500, prop::sample::select(vec![250i64, 500, 1000, 2000, 8000]), 0usize..3), 1..40),
        cuts in prop::collection::btree_set(1i64..1500, 0..6),
    ) {
        let base = parse_time("2026-11-01").unwrap();
        let unit = 60_000i64; // minutes
        let mut text = String::from("currency = \"CNY\"\n");
        let mut froms = vec![base];
        froms.extend(cuts.iter().map(|c| base + c * unit));
        for (i, f) in froms.iter().enumerate() {
            let secs = f / 1000;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            // Render the time back as YYYY-MM-DDTHH:MM:SSZ (days since 2026-11-01).
            let day0 = base / 86_400_000; // 2026-11-01
            let dd = days - day0 + 1;
            prop_assume!((1..=30).contains(&dd));
            text += &format!("[[period]]\nfrom = \"2026-11-{dd:02}T{:02}:{:02}:{:02}Z\"\n[period.gpu_hour.A100-80G]\nspot = \"{}.{}\"\non-demand = \"12\"\n",
                rem / 3600, rem % 3600 / 60, rem % 60, 3 + i, i * 7 % 100);
        }
        let b = PriceBook::parse(&text).unwrap();
        let classes = ["spot", "on-demand", "guaranteed"];
        let usage: Vec<Usage> = runs.iter().enumerate().map(|(i, &(s, len, g, c))| {
            let mut u = usage(classes[c], g, base + s * unit, Some(base + (s + len) * unit));
            u.task = i as i64;
            u
        }).collect();
        let (from, to) = (base, base + 1200 * unit);
        let inv = invoice(&b, "acme", &usage, from, to, to);
        let billed: u128 = inv.lines.iter().filter(|l| l.resource == Resource::Gpu).map(|l| l.quantity_raw).sum::<u128>() + inv.unpriced_gpu_raw;
        let expect: u128 = usage.iter().map(|u| {
            let (a, z) = (u.start.max(from), u.end.unwrap().min(to));
            if z > a { (z - a) as u128 * u.gpu_milli as u128 } else { 0 }
        }).sum();
        prop_assert_eq!(billed, expect);
        prop_assert_eq!(inv.total, inv.lines.iter().map(|l| l.amount).sum::<Decimal>());
    }
}
