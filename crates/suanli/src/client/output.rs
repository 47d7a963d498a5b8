//! How the client prints: tables for people, CSV for spreadsheets, JSON
//! (the protocol's types, pretty-printed) for programs.

use serde::Serialize;
use suanli_api::Job;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("answers serialise")
    );
}

/// A job's GPUs per task: `-`, a count, or a share such as `0.25`.
pub fn gpus_of(j: &Job) -> String {
    gpus_text(j.num_gpu, j.gpu_milli)
}

/// GPUs per task (or replica) from whole devices and milli per device.
pub fn gpus_text(num_gpu: i64, gpu_milli: i64) -> String {
    if num_gpu == 0 {
        "-".into()
    } else if gpu_milli < 1000 {
        format!("{:.2}", gpu_milli as f64 / 1000.0)
    } else {
        num_gpu.to_string()
    }
}

/// A job's GPUs in all (tasks x per task): `-`, or a count such as `16`
/// or `0.5`.
pub fn total_gpus(j: &Job) -> String {
    if j.num_gpu == 0 {
        return "-".into();
    }
    let milli = j.tasks * j.num_gpu * j.gpu_milli;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{:.2}", milli as f64 / 1000.0)
    }
}

/// An optional text, `-` when absent.
pub fn or_dash(s: Option<&str>) -> &str {
    s.unwrap_or("-")
}

/// A decimal text with two decimals (hours in tables), as is if unreadable.
pub fn two_decimals(s: &str) -> String {
    s.parse::<f64>()
        .map_or_else(|_| s.to_string(), |f| format!("{f:.2}"))
}
