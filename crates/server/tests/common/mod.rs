//! What the store tests share: each test's store on each backend, SQLite in
//! a temporary directory and PostgreSQL in a fresh database of the test
//! cluster.
#![allow(dead_code)] // each test file uses part of it

use suanli_server::store::Store;

/// The test cluster's URL (`SUANLI_TEST_POSTGRES`, set by
/// `scripts/throwaway-postgres`). Unset: the PostgreSQL tests are skipped
/// with a printed reason, except where `SUANLI_REQUIRE_POSTGRES` is set (in
/// CI, which starts its own cluster), where that is a failure.
pub const URL: &str = "SUANLI_TEST_POSTGRES";
pub const REQUIRE: &str = "SUANLI_REQUIRE_POSTGRES";

/// Whether the PostgreSQL tests run here (see [`URL`]).
pub fn postgres_available() -> bool {
    if std::env::var_os(URL).is_some() {
        return true;
    }
    if std::env::var_os(REQUIRE).is_some() {
        panic!("{REQUIRE} is set but {URL} is not: start one with scripts/throwaway-postgres");
    }
    eprintln!("skipped: {URL} is not set (scripts/throwaway-postgres starts a cluster)");
    false
}

/// A new, empty database on the test cluster, or None (skip).
pub async fn postgres_url() -> Option<String> {
    if !postgres_available() {
        return None;
    }
    let url = std::env::var(URL).expect("checked");
    Some(
        suanli_server::store::postgres::scratch_database(&url, "suanli_test")
            .await
            .unwrap_or_else(|e| panic!("{URL}: cannot create a test database: {e}")),
    )
}

/// A backend.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Where one test's store lives; [`Place::open`] opens it (again).
pub struct Place {
    pub dir: tempfile::TempDir,
    url: Option<String>,
}

impl Place {
    /// A new, empty place (PostgreSQL: call only where available).
    pub async fn new(db: Db) -> Place {
        let url = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(postgres_url().await.expect("a test cluster")),
        };
        Place {
            dir: tempfile::tempdir().unwrap(),
            url,
        }
    }

    pub async fn open(&self) -> Store {
        match &self.url {
            None => Store::open(self.dir.path()).await.unwrap(),
            Some(url) => Store::connect(url).await.unwrap(),
        }
    }
}

/// Tests `async fn NAME(db: Db)`, run as `sqlite::NAME` and
/// `postgres::NAME` (the latter skipped without a test cluster).
#[allow(unused_macros)] // not every test file runs on both backends
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::common::Db::Sqlite).await
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if super::common::postgres_available() {
                    super::$name(super::common::Db::Postgres).await
                }
            })+
        }
    };
}
