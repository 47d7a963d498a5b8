//! Real agents for the end-to-end tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `suanli agent` joining `url` as node `name` with a fake GPU inventory
/// (`gpus`, e.g. `fake:4xA100-80G`), 16 CPUs and 64 GiB; its log goes to
/// `DIR/NAME.log`, its work dir is `DIR/agents/NAME`.
pub fn spawn_agent(dir: &Path, url: &str, token: &str, name: &str, gpus: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    // The join token from a file (the agent saves its node's credential in
    // its work dir and uses that from then on).
    let join = dir.join(format!("{name}.join"));
    std::fs::write(&join, token).unwrap();
    Command::new(env!("CARGO_BIN_EXE_suanli"))
        // A secret of the agent's own environment: no task may see it.
        .env("AWS_SECRET_ACCESS_KEY", "agent-secret-key")
        .args(["agent", "--server", url, "--join-token-file"])
        .arg(&join)
        .args(["--name", name])
        .args([
            "--gpus",
            gpus,
            "--cpus",
            "16",
            "--memory-gib",
            "64",
            "--grace-s",
            "1",
        ])
        .arg("--work-dir")
        .arg(dir.join("agents").join(name))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Wait until `ok`, at most `limit`.
pub fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
