//! `suanli server --config FILE`: the server's settings in TOML. Every field
//! is optional; command-line flags override the file. Unknown fields are an
//! error naming the file, line and column.
//!
//! ```toml
//! # Directory of the store (suanli.db) and of admin.token.
//! data_dir = "suanli-data"
//! # The store on PostgreSQL instead of SQLite in data_dir (also --store and
//! # SUANLI_STORE). TLS: add ?sslmode=verify-full&sslrootcert=/path/ca.pem.
//! # store = "postgres://suanli:PASSWORD@db.example:5432/suanli"
//! # Address to listen on; port 0 picks a free port (the bound address is printed).
//! listen = "127.0.0.1:8420"
//! # Log lines as "human" text or "json" (one object per line).
//! log_format = "human"
//! # A tracing filter: "info", "warn", "info,suanli_server=debug", ...
//! log_level = "info"
//! # Price book for invoices (see examples/prices.toml); none: no /v1/bills.
//! prices = "examples/prices.toml"
//!
//! [scheduler]
//! # Queue policy: fifo, sjf, srtf, las, classes, drf, backfill.
//! queue_policy = "classes"
//! # Placement policy (see `suanli sim openb --help` for the names).
//! placement = "fgd-sa"
//! # Jobs checkpoint every this many seconds of run time; a preempted job
//! # resumes from its last checkpoint (0: it resumes where it stopped).
//! checkpoint_s = 0
//!
//! [models]
//! # The largest request body of the model API (/v1/chat/completions, ...).
//! max_body_mib = 8
//! # How long a request waits for a ready replica (a service scaling from zero).
//! hold_s = 300
//! # Which ready replica takes a request: least-outstanding or round-robin.
//! route = "least-outstanding"
//!
//! [agents]
//! # How often agents report (told to them when they register).
//! heartbeat_interval_s = 5
//! # A node whose agent has not reported for this long is down; its tasks are
//! # requeued (or failed once the job's retries are used).
//! lease_s = 20
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::control::LoopConfig;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub listen: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub prices: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on an address other than loopback.
    pub insecure_http: Option<bool>,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub agents: AgentsSection,
    #[serde(default)]
    pub models: ModelsSection,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    pub max_body_mib: Option<u64>,
    pub hold_s: Option<u64>,
    pub route: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    pub heartbeat_interval_s: Option<u64>,
    pub lease_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    pub queue_policy: Option<String>,
    pub placement: Option<String>,
    pub checkpoint_s: Option<u64>,
}

/// Log output format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Everything the server needs, resolved from defaults, file and flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// A PostgreSQL URL; None: SQLite in `data_dir`.
    pub store: Option<String>,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    pub scheduler: LoopConfig,
    pub prices: Option<PathBuf>,
    /// (certificate chain, private key), PEM: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub router: crate::services::RouterConfig,
}

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub listen: Option<SocketAddr>,
    pub log_format: Option<String>,
    pub queue_policy: Option<String>,
    pub prices: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_http: bool,
}

pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// Parse a config text; errors read `line:column: message`.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, col)
            })
            .unwrap_or((1, 1));
        format!("{line}:{col}: {}", e.message())
    })
}

pub fn resolve(file: FileConfig, o: Overrides) -> Result<Settings, String> {
    let listen = match (o.listen, file.listen) {
        (Some(a), _) => a,
        (None, Some(s)) => s
            .parse()
            .map_err(|e| format!("listen: {s:?} is not an address like 127.0.0.1:8420 ({e})"))?,
        (None, None) => "127.0.0.1:8420".parse().expect("valid default"),
    };
    let log_format = match o.log_format.or(file.log_format).as_deref() {
        None | Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(x) => return Err(format!("log_format must be human or json (found {x:?})")),
    };
    let mut scheduler = LoopConfig::default();
    if let Some(p) = o.queue_policy.or(file.scheduler.queue_policy) {
        scheduler.queue_policy = suanli_sched::scheduler::parse_queue_policy(&p)
            .map_err(|e| format!("scheduler.queue_policy: {e}"))?;
    }
    if let Some(p) = file.scheduler.placement {
        if !suanli_sched::POLICY_NAMES.contains(&p.as_str()) {
            return Err(format!(
                "scheduler.placement: unknown policy {p:?}; valid: {}",
                suanli_sched::POLICY_NAMES.join(", ")
            ));
        }
        scheduler.placement = p;
    }
    if let Some(c) = file.scheduler.checkpoint_s {
        scheduler.checkpoint_ms = c.saturating_mul(1000);
    }
    if let Some(h) = file.agents.heartbeat_interval_s {
        if !(1..=3600).contains(&h) {
            return Err(format!(
                "agents.heartbeat_interval_s must be 1..=3600 (found {h})"
            ));
        }
        scheduler.heartbeat_interval_s = h;
    }
    if let Some(l) = file.agents.lease_s {
        scheduler.lease_ms = l.saturating_mul(1000);
    }
    if scheduler.lease_ms < 2 * scheduler.heartbeat_interval_s * 1000 {
        return Err(format!(
            "agents.lease_s ({} s) must be at least twice heartbeat_interval_s ({} s)",
            scheduler.lease_ms / 1000,
            scheduler.heartbeat_interval_s
        ));
    }
    let tls = match (o.tls_cert.or(file.tls_cert), o.tls_key.or(file.tls_key)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(
                "tls_cert and tls_key go together (--tls-cert FILE --tls-key FILE)".to_string(),
            )
        }
    };
    let insecure = o.insecure_http || file.insecure_http.unwrap_or(false);
    if tls.is_none() && !listen.ip().is_loopback() && !insecure {
        return Err(format!(
            "listen: {listen} is not a loopback address, and plain HTTP would carry every token \
             in clear: give --tls-cert FILE --tls-key FILE (or, on a network you trust, \
             --insecure-http)"
        ));
    }
    let mut router = crate::services::RouterConfig::default();
    if let Some(m) = file.models.max_body_mib {
        if !(1..=1024).contains(&m) {
            return Err(format!("models.max_body_mib must be 1..=1024 (found {m})"));
        }
        router.max_body_bytes = (m as usize) << 20;
    }
    if let Some(h) = file.models.hold_s {
        if !(1..=3600).contains(&h) {
            return Err(format!("models.hold_s must be 1..=3600 (found {h})"));
        }
        router.hold = std::time::Duration::from_secs(h);
    }
    if let Some(r) = &file.models.route {
        router.route = r.parse().map_err(|e| format!("models.route: {e}"))?;
    }
    let store = o.store.or(file.store);
    if let Some(url) = &store {
        if !crate::store::is_postgres_url(url) {
            return Err(format!(
                "store: {:?} is not a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB); \
                 leave it out for SQLite in data_dir",
                crate::store::redact_url(url)
            ));
        }
    }
    Ok(Settings {
        tls,
        store,
        data_dir: o
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("suanli-data")),
        listen,
        log_format,
        log_level: file.log_level.unwrap_or_else(|| "info".to_string()),
        scheduler,
        prices: o.prices.or(file.prices),
        router,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let f = parse(&example).unwrap();
        let s = resolve(f, Overrides::default()).unwrap();
        assert_eq!(s.listen.port(), 8420);
        assert_eq!(s.scheduler.placement, "fgd-sa");
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("listen = \"x\"\n[scheduler]\nqueue = 3\n").unwrap_err();
        assert!(e.starts_with("3:1:"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
        let e = resolve(parse("listen = \"nope\"").unwrap(), Overrides::default()).unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = resolve(
            parse("[scheduler]\nqueue_policy = \"lottery\"").unwrap(),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.contains("fifo"), "{e}");
    }

    #[test]
    fn a_store_must_be_a_postgres_url_and_its_password_stays_out_of_errors() {
        let f = parse("store = \"mysql://u:secret@h/db\"").unwrap();
        let e = resolve(f, Overrides::default()).unwrap_err();
        assert!(
            e.starts_with("store:") && e.contains("mysql://u:***@h/db"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        let f = parse("store = \"postgres://u:p@h:5432/db\"").unwrap();
        let s = resolve(
            f,
            Overrides {
                store: Some("postgresql://v:q@k/db2".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.store.as_deref(), Some("postgresql://v:q@k/db2"));
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse("listen = \"127.0.0.1:1\"\n[scheduler]\nqueue_policy = \"drf\"").unwrap();
        let s = resolve(
            f,
            Overrides {
                listen: Some("127.0.0.1:2".parse().unwrap()),
                queue_policy: Some("fifo".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(
            s.scheduler.queue_policy,
            suanli_sched::scheduler::QueuePolicy::Fifo
        );
    }
}
