//! Where the tests find the real traces: `../shared` beside the repository.

use std::path::{Path, PathBuf};

/// The variable that turns a missing `../shared` from a skip into a failure
/// (`.ci/run` sets it, so CI never passes by skipping).
pub const REQUIRE: &str = "SUANLI_REQUIRE_TRACES";

/// `../shared` when it holds the folder `probe`. When it does not, the
/// test panics if `SUANLI_REQUIRE_TRACES=1`, and otherwise prints why it is
/// skipped (to the raw handle, which the harness does not capture) and gets
/// `None`.
pub fn shared(probe: &str, what: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let missing = p.join(probe);
    if missing.is_dir() {
        return Some(p);
    }
    if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
        panic!(
            "{} not found, and {REQUIRE}=1 requires it ({what} live in ../shared)",
            missing.display()
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {} not found ({what} live in ../shared; set {REQUIRE}=1 to fail instead)",
        missing.display()
    );
    None
}
