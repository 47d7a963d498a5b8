//! `suanli pool`: the pool as a tenant may see it (GET /v1/pool), like
//! Slurm's `sinfo`: per GPU model its ready nodes, GPUs and what is free,
//! and the queue's depth.

use clap::Args;
use suanli_api::PoolView;

use super::output::print_json;
use super::Conn;
use crate::CliError;

#[derive(Args)]
pub struct PoolArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(long)]
    json: bool,
}

/// A GPU count with at most two decimals, as short as it goes.
fn gpus(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn pool(a: PoolArgs) -> Result<(), CliError> {
    let v: PoolView = a.conn.get("/v1/pool")?;
    if a.json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<16} {:>11} {:>11} {:>6} {:>9} {:>18}",
        "GPU MODEL", "NODES READY", "UNAVAILABLE", "GPUS", "GPUS FREE", "MOST FREE ON ONE"
    );
    for m in &v.models {
        println!(
            "{:<16} {:>11} {:>11} {:>6} {:>9} {:>18}",
            m.model.as_deref().unwrap_or("(no GPU)"),
            m.nodes_ready,
            m.nodes_unavailable,
            m.gpus,
            gpus(m.gpus_free),
            m.most_free_on_one_node
        );
    }
    println!(
        "jobs: {} pending, {} running in the pool; yours: {} pending, {} running",
        v.pending_jobs, v.running_jobs, v.your_pending_jobs, v.your_running_jobs
    );
    Ok(())
}
