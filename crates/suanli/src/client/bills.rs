//! `bill` and `report economics`.

use clap::{Args, Subcommand};
use suanli_api::{BillQuery, Bills, EconomicsQuery, EconomicsReport};

use super::output::{or_dash, print_json, two_decimals, Format};
use super::{query, Conn};
use crate::CliError;

#[derive(Args)]
pub struct BillArgs {
    #[command(flatten)]
    conn: Conn,
    /// A month, YYYY-MM (UTC).
    #[arg(long)]
    period: String,
    /// One tenant (admin; a tenant token sees only its own).
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// `suanli bill --period 2026-11`: invoices with line items and totals.
pub fn bill(a: BillArgs) -> Result<(), CliError> {
    let q = BillQuery {
        period: a.period,
        tenant: a.tenant,
    };
    let v: Bills = a.conn.get(&format!("/v1/bills?{}", query(&q)))?;
    let cur = &v.currency;
    match a.format {
        Format::Json => print_json(&v),
        Format::Csv => {
            // `model`: the GPU model of a GPU line, the served model of a
            // token line.
            println!("tenant,resource,model,class,quantity,unit,unit_price,amount,currency");
            for inv in &v.invoices {
                for l in &inv.lines {
                    println!(
                        "{},{},{},{},{},{},{},{},{cur}",
                        inv.tenant,
                        l.resource,
                        or_dash(l.gpu_model.as_deref().or(l.model.as_deref())),
                        or_dash(l.class.as_deref()),
                        l.quantity,
                        l.unit,
                        l.unit_price,
                        l.amount
                    );
                }
            }
        }
        Format::Table => {
            for inv in &v.invoices {
                println!(
                    "invoice: tenant {}, period {} ({cur})",
                    inv.tenant, v.period
                );
                println!(
                    "  {:<13} {:<14} {:<11} {:>16} {:<10} {:>10} {:>12}",
                    "RESOURCE", "MODEL", "CLASS", "QUANTITY", "UNIT", "PRICE", "AMOUNT"
                );
                for l in &inv.lines {
                    let q: f64 = l.quantity.parse().unwrap_or(0.0);
                    println!(
                        "  {:<13} {:<14} {:<11} {:>16.6} {:<10} {:>10} {:>12}",
                        l.resource,
                        or_dash(l.gpu_model.as_deref().or(l.model.as_deref())),
                        or_dash(l.class.as_deref()),
                        q,
                        l.unit,
                        l.unit_price,
                        l.amount
                    );
                }
                println!("  {:>94}", format!("total {} {cur}", inv.total));
                if inv.unpriced_tokens > 0 {
                    println!(
                        "  note: {} tokens of served models have no token price in the book",
                        inv.unpriced_tokens
                    );
                }
                if inv.unpriced_gpu_raw > 0 {
                    println!(
                        "  note: some GPU usage has no price in the book (model or class missing)"
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ReportCmd {
    /// The operator's economics for a month (admin): capacity and sold
    /// GPU-hours by model, utilisation, revenue, idle capacity at list price.
    Economics(EconomicsArgs),
}

#[derive(Args)]
pub struct EconomicsArgs {
    #[command(flatten)]
    conn: Conn,
    /// A month, YYYY-MM (UTC).
    #[arg(long)]
    period: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn report(c: ReportCmd) -> Result<(), CliError> {
    match c {
        ReportCmd::Economics(a) => economics(a),
    }
}

/// One row of the economics table: a model's figures, or the totals.
struct Row<'a> {
    name: &'a str,
    capacity: &'a str,
    down: &'a str,
    sold: &'a str,
    util: Option<&'a str>,
    revenue: &'a str,
    idle: &'a str,
    idle_value: &'a str,
    per_capacity: Option<&'a str>,
}

impl Row<'_> {
    fn csv(&self, cur: &str) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{cur}",
            self.name,
            self.capacity,
            self.down,
            self.sold,
            or_dash(self.util),
            self.revenue,
            self.idle,
            self.idle_value,
            or_dash(self.per_capacity)
        )
    }
    fn table(&self) -> String {
        format!(
            "{:<14} {:>14} {:>10} {:>12} {:>7} {:>12} {:>12} {:>12} {:>10}",
            self.name,
            two_decimals(self.capacity),
            two_decimals(self.down),
            two_decimals(self.sold),
            or_dash(self.util),
            self.revenue,
            two_decimals(self.idle),
            self.idle_value,
            or_dash(self.per_capacity)
        )
    }
}

/// `suanli report economics --period 2026-11`.
fn economics(a: EconomicsArgs) -> Result<(), CliError> {
    let q = EconomicsQuery { period: a.period };
    let v: EconomicsReport = a
        .conn
        .get(&format!("/v1/reports/economics?{}", query(&q)))?;
    if a.format == Format::Json {
        print_json(&v);
        return Ok(());
    }
    let cur = v.currency.as_str();
    let mut rows: Vec<Row> = v
        .models
        .iter()
        .map(|m| Row {
            name: &m.gpu_model,
            capacity: &m.capacity_gpu_hours,
            down: &m.down_gpu_hours,
            sold: &m.sold_gpu_hours,
            util: m.utilisation_pct.as_deref(),
            revenue: &m.revenue,
            idle: &m.idle_gpu_hours,
            idle_value: &m.idle_value,
            per_capacity: m.revenue_per_capacity_gpu_hour.as_deref(),
        })
        .collect();
    rows.push(Row {
        name: "TOTAL",
        capacity: &v.capacity_gpu_hours,
        down: &v.down_gpu_hours,
        sold: &v.sold_gpu_hours,
        util: v.utilisation_pct.as_deref(),
        revenue: &v.revenue,
        idle: &v.idle_gpu_hours,
        idle_value: &v.idle_value,
        per_capacity: v.revenue_per_capacity_gpu_hour.as_deref(),
    });
    if a.format == Format::Csv {
        println!(
            "gpu_model,capacity_gpu_hours,down_gpu_hours,sold_gpu_hours,utilisation_pct,revenue,\
             idle_gpu_hours,idle_value,revenue_per_capacity_gpu_hour,currency"
        );
        for r in &rows {
            println!("{}", r.csv(cur));
        }
        return Ok(());
    }
    println!(
        "economics: period {} ({cur}), counted up to {}",
        v.period,
        suanli_billing::format_time(v.now_ms)
    );
    println!(
        "{:<14} {:>14} {:>10} {:>12} {:>7} {:>12} {:>12} {:>12} {:>10}",
        "GPU MODEL",
        "CAPACITY GPU-H",
        "DOWN GPU-H",
        "SOLD GPU-H",
        "UTIL %",
        "REVENUE",
        "IDLE GPU-H",
        "IDLE VALUE",
        "REV/CAP-H"
    );
    for r in &rows {
        println!("{}", r.table());
    }
    println!(
        "revenue {cur}: GPU {} + CPU and memory {} + tokens {} = {}; idle GPUs at list price: {}",
        v.gpu_revenue, v.other_revenue, v.token_revenue, v.revenue, v.idle_value
    );
    if !v.served.is_empty() {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>13} {:>13} {:>13}",
            "SERVED MODEL",
            "REQUESTS",
            "INPUT TOK",
            "OUTPUT TOK",
            "TOKEN REV",
            "REPLICA GPU-H",
            "REPLICA COST"
        );
        for m in &v.served {
            println!(
                "{:<24} {:>9} {:>12} {:>12} {:>13} {:>13} {:>13}",
                m.model,
                m.requests,
                m.input_tokens,
                m.output_tokens,
                m.token_revenue,
                two_decimals(&m.replica_gpu_hours),
                m.replica_gpu_cost
            );
        }
    }
    for m in &v.models {
        let h = two_decimals(&m.idle_unpriced_gpu_hours);
        if h != "0.00" {
            println!(
                "note: {h} idle GPU-hours of {} have no list price (on-demand or guaranteed) in the book",
                m.gpu_model
            );
        }
    }
    if !v.invoices.is_empty() {
        let by: Vec<String> = v
            .invoices
            .iter()
            .map(|i| format!("{} {}", i.tenant, i.total))
            .collect();
        println!("by tenant: {}", by.join(", "));
    }
    Ok(())
}
