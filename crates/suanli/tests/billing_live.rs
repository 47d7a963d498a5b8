//! Billing in the live pool, through the real server binary: a preempted
//! spot task is billed until its preemption, bills without a price book are
//! a clear 409, and the economics report agrees with the node history and
//! the bills.

mod common;

use common::pool::*;
use common::*;
use serde_json::{json, Value};

fn prices_path() -> String {
    format!("{}/../../examples/prices.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_preempted_spot_task_is_billed_only_until_its_preemption() {
    let p = pool("bill", &["--prices", &prices_path()]);
    let r = register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    assert!(r.get("warnings").is_none(), "A100-80G is priced: {r}");
    // The example book prices the models agents report for the current
    // generation.
    let book = suanli_billing::PriceBook::read(std::path::Path::new(&prices_path())).unwrap();
    for m in [
        "H100-80GB-HBM3",
        "H200",
        "H800",
        "B200",
        "A100-SXM4-80GB",
        "Ascend910B",
        "Ascend910C",
    ] {
        assert!(
            book.prices_model_at(suanli_server::store::now_ms(), m),
            "{m}"
        );
    }
    let spot = submit(&p.s, &p.acme, json!({"command": ["x"], "gpus": 8, "class": "spot", "cpu_milli": 2000, "memory_mib": 8192}))["id"]
        .as_i64()
        .unwrap();
    heartbeat(&p.s, &p.agent, "n1", &[(spot, 1, 0)], &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let beta = token_for(&p.s, &p.admin, json!({"scope": "tenant", "tenant": "beta"}));
    let paid = submit(
        &p.s,
        &beta,
        json!({"command": ["x"], "gpus": 8, "class": "guaranteed"}),
    )["id"]
        .as_i64()
        .unwrap();
    assert_eq!(state(&p, spot), "PENDING");
    let t = &job(&p.s, &p.acme, spot)["task_history"][0];
    let (start, end) = (
        t["started_ms"].as_i64().unwrap(),
        t["ended_ms"].as_i64().unwrap(),
    );
    assert!(end - start >= 300, "{t}");
    // The agent confirms the kill later: the interval does not grow.
    std::thread::sleep(std::time::Duration::from_millis(200));
    heartbeat(&p.s, &p.agent, "n1", &[], &[]);
    let month = month_now();
    let (code, b, _) = call(
        "GET",
        &p.s.u(&format!("/v1/bills?period={month}")),
        Some(&p.acme),
        None,
    );
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["currency"], "CNY");
    let inv = &b["invoices"].as_array().unwrap();
    assert_eq!(inv.len(), 1, "a tenant sees only its own invoice");
    let lines = inv[0]["lines"].as_array().unwrap();
    let gpu = lines.iter().find(|l| l["resource"] == "gpu").unwrap();
    assert_eq!(
        (gpu["gpu_model"].as_str(), gpu["class"].as_str()),
        (Some("A100-80G"), Some("spot"))
    );
    assert_eq!(
        gpu["quantity_raw"].as_u64().unwrap(),
        (end - start) as u64 * 8000,
        "{gpu}"
    );
    let cpu = lines.iter().find(|l| l["resource"] == "cpu").unwrap();
    assert_eq!(
        cpu["quantity_raw"].as_u64().unwrap(),
        (end - start) as u64 * 2000
    );
    let total: f64 = inv[0]["total"].as_str().unwrap().parse().unwrap();
    let sum: f64 = lines
        .iter()
        .map(|l| l["amount"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((total - sum).abs() < 1e-9);
    // Isolation and errors.
    assert_eq!(
        call(
            "GET",
            &p.s.u(&format!("/v1/bills?period={month}&tenant=beta")),
            Some(&p.acme),
            None
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "GET",
            &p.s.u("/v1/bills?period=2026-13"),
            Some(&p.acme),
            None
        )
        .0,
        400
    );
    let (_, all, _) = call(
        "GET",
        &p.s.u(&format!("/v1/bills?period={month}")),
        Some(&p.admin),
        None,
    );
    assert_eq!(
        all["invoices"].as_array().unwrap().len(),
        2,
        "admin: every tenant"
    );
    let beta_inv = all["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tenant"] == "beta")
        .unwrap()
        .clone();
    assert_eq!(beta_inv["lines"][0]["class"], "guaranteed", "{beta_inv}");
    let _ = paid;
    // The CLI prints the same invoice.
    let (code, out, err) = cli(
        &p.s.url,
        &p.acme,
        &["bill", "--period", &month, "--format", "csv"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("acme,gpu,A100-80G,spot,")),
        "{out}"
    );
    // A node whose model the book does not price is told so (and the
    // operator, in the server's log): its GPUs would bill at 0.
    let r = register(&p.s, &p.agent, "x1", 8, "Mystery-GPU", 64_000);
    let w = r["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("\"Mystery-GPU\" has no price"), "{r}");
}

#[test]
fn without_a_price_book_bills_are_a_clear_409() {
    let p = pool("nobill", &[]);
    let (code, v, _) = call(
        "GET",
        &p.s.u("/v1/bills?period=2026-11"),
        Some(&p.acme),
        None,
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (409, Some("no_price_book")),
        "{v}"
    );
    let (code, v, _) = call(
        "GET",
        &p.s.u("/v1/reports/economics?period=2026-11"),
        Some(&p.admin),
        None,
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (409, Some("no_price_book")),
        "{v}"
    );
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("a decimal string: {v}"))
        .parse()
        .unwrap()
}

fn node(p: &Pool, name: &str) -> Value {
    let (_, v, _) = call("GET", &p.s.u("/v1/nodes"), Some(&p.admin), None);
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap()
        .clone()
}

#[test]
fn the_economics_report_counts_capacity_from_node_history_and_revenue_from_the_bills() {
    let conf_dir = tmp("econ-conf");
    let conf = conf_dir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "prices = {:?}\n[agents]\nheartbeat_interval_s = 1\nlease_s = 2\n",
            prices_path()
        ),
    )
    .unwrap();
    let p = pool("econ", &["--config", conf.to_str().unwrap()]);
    register(&p.s, &p.agent, "n1", 8, "A100-80G", 64_000);
    register(&p.s, &p.agent, "n2", 4, "A100-80G", 64_000);
    let id = submit(
        &p.s,
        &p.acme,
        json!({"command": ["x"], "gpus": 2, "cpu_milli": 1000}),
    )["id"]
        .as_i64()
        .unwrap();
    let placed_on = job(&p.s, &p.admin, id)["task_history"][0]["node"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(placed_on, "n1", "a 2-GPU job on the fullest-fit node");
    heartbeat(&p.s, &p.agent, "n1", &[(id, 1, 0)], &[]);
    // n2 is drained (still capacity), then its agent goes silent: after the
    // lease it is down from its last heartbeat, which is not capacity.
    heartbeat(&p.s, &p.agent, "n2", &[], &[]);
    let (code, v, _) = call("POST", &p.s.u("/v1/nodes/n2/drain"), Some(&p.admin), None);
    assert_eq!(code, 200, "{v}");
    let t = std::time::Instant::now();
    while node(&p, "n2")["state"] != "down" {
        assert!(t.elapsed().as_secs() < 10, "n2 never went down");
        heartbeat(&p.s, &p.agent, "n1", &[(id, 1, 0)], &[]);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    heartbeat(&p.s, &p.agent, "n1", &[], &[(id, 1, 0, 0)]);
    assert_eq!(state(&p, id), "COMPLETED");
    let task = job(&p.s, &p.admin, id)["task_history"][0].clone();
    let ran = task["ended_ms"].as_i64().unwrap() - task["started_ms"].as_i64().unwrap();
    let (n1, n2) = (node(&p, "n1"), node(&p, "n2"));
    let month = month_now();
    let (code, e, _) = call(
        "GET",
        &p.s.u(&format!("/v1/reports/economics?period={month}")),
        Some(&p.admin),
        None,
    );
    assert_eq!(code, 200, "{e}");
    let now = e["now_ms"].as_i64().unwrap();
    let hours = |ms_gpus: i64| ms_gpus as f64 / 3_600_000.0;
    let reg = |n: &Value| n["registered_ms"].as_i64().unwrap();
    let n2_last = n2["last_heartbeat_ms"].as_i64().unwrap();
    let m = &e["models"][0];
    assert_eq!(m["gpu_model"], "A100-80G");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-6);
    let capacity = hours(8 * (now - reg(&n1)) + 4 * (n2_last - reg(&n2)));
    assert!(
        close(num(&m["capacity_gpu_hours"]), capacity),
        "{m} vs {capacity}"
    );
    assert!(
        close(num(&m["down_gpu_hours"]), hours(4 * (now - n2_last))),
        "{m}"
    );
    assert!(close(num(&m["sold_gpu_hours"]), hours(2 * ran)), "{m}");
    assert!(close(num(&m["idle_gpu_hours"]), capacity - hours(2 * ran)));
    let util = (hours(2 * ran) / capacity * 100.0 * 100.0).round() / 100.0;
    assert!(close(num(&m["utilisation_pct"]), util), "{m} vs {util}");
    // Revenue is what the bills say, to the cent.
    let (_, b, _) = call(
        "GET",
        &p.s.u(&format!("/v1/bills?period={month}")),
        Some(&p.admin),
        None,
    );
    let billed: f64 = b["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| num(&i["total"]))
        .sum();
    assert!((num(&e["revenue"]) - billed).abs() < 1e-9, "{e} vs {b}");
    assert_eq!(
        e["invoices"].as_array().unwrap().len(),
        1,
        "only acme used the pool"
    );
    // The idle value is the idle hours at the on-demand list price, 12 CNY.
    let idle_value = ((capacity - hours(2 * ran)) * 12.0 * 100.0).round() / 100.0;
    assert!((num(&m["idle_value"]) - idle_value).abs() < 0.011, "{m}");
    // Admin only, and a bad period is named.
    let (code, _, _) = call(
        "GET",
        &p.s.u(&format!("/v1/reports/economics?period={month}")),
        Some(&p.acme),
        None,
    );
    assert_eq!(code, 403);
    let (code, v, _) = call(
        "GET",
        &p.s.u("/v1/reports/economics?period=2026-1"),
        Some(&p.admin),
        None,
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("period"), "{v}");
    // n1 comes back with other GPUs: the finished task stays billed as the
    // A100 it ran on, and the new inventory is new capacity.
    register(&p.s, &p.agent, "n1", 4, "H800", 64_000);
    let (_, b2, _) = call(
        "GET",
        &p.s.u(&format!("/v1/bills?period={month}")),
        Some(&p.acme),
        None,
    );
    assert_eq!(
        b2["invoices"][0]["lines"], b["invoices"][0]["lines"],
        "{b2}"
    );
    let (_, e2, _) = call(
        "GET",
        &p.s.u(&format!("/v1/reports/economics?period={month}")),
        Some(&p.admin),
        None,
    );
    let models: Vec<&str> = e2["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["gpu_model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["A100-80G", "H800"], "{e2}");
    // The CLI: a table with the model and a total; CSV with exact figures.
    let (code, out, err) = cli(
        &p.s.url,
        &p.admin,
        &["report", "economics", "--period", &month],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("A100-80G") && out.contains("TOTAL"), "{out}");
    assert!(out.contains("by tenant: acme"), "{out}");
    let (code, out, err) = cli(
        &p.s.url,
        &p.admin,
        &["report", "economics", "--period", &month, "--format", "csv"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().nth(1).unwrap().starts_with("A100-80G,"),
        "{out}"
    );
    let (code, _, err) = cli(
        &p.s.url,
        &p.admin,
        &["report", "economics", "--period", &month, "--format", "xml"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--format"), "{err}");
    let _ = std::fs::remove_dir_all(conf.parent().unwrap());
}
