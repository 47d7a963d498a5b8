//! Test helpers: where the real traces are (`../shared` beside the
//! repository), and files in temporary directories.
#![allow(dead_code)]

use std::ops::Deref;
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

/// A file written into a fresh temporary directory, which is removed when
/// this is dropped; derefs to the file's path.
pub struct TempFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        TempFile { path, _dir: dir }
    }
}

impl Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}
