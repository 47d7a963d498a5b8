//! The price book: effective-dated periods of prices, read from TOML.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::time::parse_time;
use crate::Ms;

/// Service classes, as jobs name them.
pub const CLASSES: [&str; 3] = ["guaranteed", "on-demand", "spot"];

/// Prices in force from `from` until the next period's `from`.
#[derive(Clone, Debug, PartialEq)]
pub struct PricePeriod {
    pub from: Ms,
    /// (GPU model, class) → price per GPU-hour.
    pub gpu_hour: BTreeMap<(String, String), Decimal>,
    pub cpu_core_hour: Decimal,
    pub mem_gib_hour: Decimal,
    /// Served model → prices per million input and output tokens.
    pub tokens: BTreeMap<String, crate::tokens::TokenPrice>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PriceBook {
    pub currency: String,
    /// Sorted by `from`, strictly increasing.
    pub periods: Vec<PricePeriod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBook {
    currency: String,
    #[serde(rename = "period")]
    periods: Vec<FilePeriod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeriod {
    from: String,
    #[serde(default)]
    cpu_core_hour: Option<String>,
    #[serde(default)]
    mem_gib_hour: Option<String>,
    #[serde(default)]
    gpu_hour: BTreeMap<String, BTreeMap<String, String>>,
    /// Served model → `{ input = "..", output = ".." }` per million tokens.
    #[serde(default)]
    tokens: BTreeMap<String, FileTokens>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTokens {
    input: String,
    output: String,
}

fn price(what: &str, s: &str) -> Result<Decimal, String> {
    let d =
        Decimal::from_str(s.trim()).map_err(|e| format!("{what}: {s:?} is not a decimal ({e})"))?;
    if d.is_sign_negative() {
        return Err(format!("{what}: {s:?} is negative"));
    }
    Ok(d)
}

impl PriceBook {
    /// Parse the TOML price book (see `examples/prices.toml`). Errors name
    /// the line and column, or the period and field.
    pub fn parse(text: &str) -> Result<PriceBook, String> {
        let f: FileBook = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                    )
                })
                .unwrap_or((1, 1));
            format!("{line}:{col}: {}", e.message())
        })?;
        if f.currency.trim().is_empty() {
            return Err("currency must be named (e.g. \"CNY\")".to_string());
        }
        if f.periods.is_empty() {
            return Err("a price book needs at least one [[period]]".to_string());
        }
        let mut periods = Vec::new();
        for (i, p) in f.periods.iter().enumerate() {
            let at = |field: &str| format!("period {} ({}) {field}", i + 1, p.from);
            let from = parse_time(&p.from).map_err(|e| format!("{}: {e}", at("from")))?;
            let mut gpu_hour = BTreeMap::new();
            for (model, by_class) in &p.gpu_hour {
                for (class, v) in by_class {
                    if !CLASSES.contains(&class.as_str()) {
                        return Err(format!(
                            "{}: class must be one of {} (found {class:?})",
                            at(&format!("gpu_hour.{model}")),
                            CLASSES.join(", ")
                        ));
                    }
                    let d = price(&at(&format!("gpu_hour.{model}.{class}")), v)?;
                    gpu_hour.insert((model.clone(), class.clone()), d);
                }
            }
            let opt = |v: &Option<String>, f: &str| -> Result<Decimal, String> {
                v.as_deref().map_or(Ok(Decimal::ZERO), |s| price(&at(f), s))
            };
            let mut tokens = BTreeMap::new();
            for (model, t) in &p.tokens {
                let price_of =
                    |side: &str, v: &str| price(&at(&format!("tokens.{model}.{side}")), v);
                tokens.insert(
                    model.clone(),
                    crate::tokens::TokenPrice {
                        input: price_of("input", &t.input)?,
                        output: price_of("output", &t.output)?,
                    },
                );
            }
            periods.push(PricePeriod {
                from,
                gpu_hour,
                tokens,
                cpu_core_hour: opt(&p.cpu_core_hour, "cpu_core_hour")?,
                mem_gib_hour: opt(&p.mem_gib_hour, "mem_gib_hour")?,
            });
        }
        if periods.windows(2).any(|w| w[0].from >= w[1].from) {
            return Err("periods must be in increasing order of `from`".to_string());
        }
        Ok(PriceBook {
            currency: f.currency,
            periods,
        })
    }

    pub fn read(path: &std::path::Path) -> Result<PriceBook, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        PriceBook::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Index of the period in force at `t` (None before the first).
    pub fn period_at(&self, t: Ms) -> Option<usize> {
        self.periods.iter().rposition(|p| p.from <= t)
    }

    /// [start, end) cut at every price change inside it: (from, to, period
    /// in force) for each piece.
    pub fn segments(&self, start: Ms, end: Ms) -> Vec<(Ms, Ms, Option<usize>)> {
        let mut cuts = vec![start];
        cuts.extend(
            self.periods
                .iter()
                .map(|p| p.from)
                .filter(|&f| f > start && f < end),
        );
        cuts.push(end);
        cuts.windows(2)
            .map(|w| (w[0], w[1], self.period_at(w[0])))
            .collect()
    }

    /// Whether the period in force at `t` prices GPUs of `model` (in any
    /// class).
    pub fn prices_model_at(&self, t: Ms, model: &str) -> bool {
        self.period_at(t)
            .is_some_and(|pi| self.periods[pi].gpu_hour.keys().any(|(m, _)| m == model))
    }

    /// The list price of a GPU-hour of `model` in period `pi`: its on-demand
    /// price, else its guaranteed price, else none.
    pub(crate) fn list_price(&self, pi: usize, model: &str) -> Option<Decimal> {
        let p = &self.periods[pi];
        ["on-demand", "guaranteed"]
            .iter()
            .find_map(|c| p.gpu_hour.get(&(model.to_string(), c.to_string())).copied())
    }
}
