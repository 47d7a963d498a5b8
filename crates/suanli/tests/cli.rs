//! The `suanli` binary end to end: outputs, and one-line errors for bad input.

use std::process::Command;

fn suanli(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_suanli"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn synthetic_run_writes_json_curve_and_plot() {
    let tmp = tmpdir();
    let d = tmp.path();
    let (j, c, p) = (d.join("r.json"), d.join("c.csv"), d.join("p.svg"));
    let (code, out, err) = suanli(&[
        "sim",
        "openb",
        "--synthetic",
        "--synthetic-nodes",
        "60",
        "--policy",
        "fgd,bestfit,fgd-sa",
        "--seeds",
        "1..3",
        "--json",
        j.to_str().unwrap(),
        "--curve",
        c.to_str().unwrap(),
        "--plot",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("fgd-sa") && out.contains("alloc@130%"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let exps = v["experiments"].as_array().unwrap();
    assert_eq!(exps.len(), 9);
    for e in exps {
        for k in ["policy", "seed", "pods_submitted", "pods_failed", "wall_ms"] {
            assert!(!e[k].is_null(), "missing {k}");
        }
        assert!(e["alloc_pct_at"]["130"].as_f64().unwrap() > 50.0);
        assert!(e["frag_pct_at"]["100"].is_number());
    }
    let s = v["summary"].as_array().unwrap();
    assert_eq!(s.len(), 3);
    for k in ["alloc_pct_at_130", "alloc_pct_at_100"] {
        for f in ["mean", "std", "min", "max"] {
            assert!(s[0][k][f].is_number(), "{k}.{f}");
        }
    }
    assert!(s[0]["frag_pct_at_130"]["mean"].is_number());
    let csv = std::fs::read_to_string(&c).unwrap();
    assert!(csv.starts_with("policy,arrived_pct,alloc_pct,frag_pct\n"));
    assert!(csv.lines().any(|l| l.starts_with("fgd-sa,100,")));
    let svg = std::fs::read_to_string(&p).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("bestfit"));
}

#[test]
fn default_policy_is_fgd_sa() {
    let (code, out, err) = suanli(&[
        "sim",
        "openb",
        "--synthetic",
        "--synthetic-nodes",
        "30",
        "--seeds",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("fgd-sa "), "{out}");
}

#[test]
fn bad_input_is_a_one_line_error_listing_what_is_valid() {
    let (code, _, err) = suanli(&["sim", "openb", "--synthetic", "--policy", "fgd,fastest"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown policy \"fastest\"")
            && err.contains("bestfit")
            && err.contains("fgd-sa"),
        "{err}"
    );

    let (code, _, err) = suanli(&["sim", "openb", "--synthetic", "--seeds", "51..42"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid --seeds \"51..42\"") && err.contains("A..B"),
        "{err}"
    );

    let (code, _, err) = suanli(&[
        "sim",
        "openb",
        "--nodes",
        "/nope/n.csv",
        "--pods",
        "/nope/p.csv",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no such file: /nope/n.csv"), "{err}");

    let (code, _, err) = suanli(&["sim", "openb"]);
    assert_eq!(code, 2);
    assert!(err.contains("--synthetic"), "{err}");

    let (code, _, err) = suanli(&["sim", "openb", "--synthetic", "--tune", "-1"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn malformed_trace_reports_file_line_column() {
    let tmp = tmpdir();
    let d = tmp.path();
    let n = d.join("n.csv");
    let p = d.join("p.csv");
    std::fs::write(
        &n,
        "sn,cpu_milli,memory_mib,gpu,model\nn1,64000,1024,2,T4\n",
    )
    .unwrap();
    std::fs::write(
        &p,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np1,1000,10,1,1500,\n",
    )
    .unwrap();
    let (code, _, err) = suanli(&[
        "sim",
        "openb",
        "--nodes",
        n.to_str().unwrap(),
        "--pods",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("p.csv:2: column gpu_milli: gpu_milli 1500 is out of range"),
        "{err}"
    );
}

fn example(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/clusters")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn gen_then_sim_jobs_writes_table_json_and_report() {
    let tmp = tmpdir();
    let d = tmp.path().join("jobs");
    std::fs::create_dir_all(&d).unwrap();
    let w = d.join("w.csv");
    let cluster = example("mixed.toml");
    let (code, _, err) = suanli(&[
        "gen",
        "--jobs",
        "1500",
        "--cluster",
        &cluster,
        "--load",
        "1.2",
        "--share",
        "0.2",
        "--pinned",
        "0.3",
        "--diurnal",
        "0.5",
        "--seed",
        "3",
        "--out",
        w.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let jl = d.join("w.jsonl");
    let (code, _, err) = suanli(&["gen", "--jobs", "50", "--out", jl.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let trace = format!("native:{}", w.display());
    let json = d.join("r.json");
    let rep = d.join("report");
    let (code, out, err) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        &cluster,
        "--trace",
        &trace,
        "--policy",
        "fifo,sjf,srtf,las,classes,drf,backfill",
        "--json",
        json.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--tenants",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("jct_mean_s") && out.contains("backfill") && out.contains("carmaker"),
        "{out}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no progress bar off a terminal: {err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 7);
    for r in rs {
        for k in [
            "policy",
            "jobs",
            "jct_mean_s",
            "jct_p50_s",
            "jct_p99_s",
            "wait_mean_s",
            "makespan_s",
            "gpu_util_pct",
            "preemptions",
        ] {
            assert!(!r[k].is_null(), "missing {k}");
        }
        assert_eq!(
            r["jobs"].as_u64().unwrap() + r["rejected"].as_u64().unwrap(),
            1500
        );
    }
    for f in [
        "index.html",
        "series.csv",
        "summary.csv",
        "tenants.csv",
        "utilisation.svg",
        "queue.svg",
        "jct_cdf.svg",
    ] {
        let t = std::fs::read_to_string(rep.join(f)).unwrap();
        assert!(t.len() > 100, "{f} is nearly empty");
    }
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(html.contains("jct_cdf.svg") && html.contains("<td>drf</td>"));
    // --json - prints only JSON.
    let (code, out, _) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        &cluster,
        "--trace",
        &format!("native:{}", jl.display()),
        "--json",
        "-",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["results"][0]["policy"], "fifo");
    assert!(
        v["results"][0]["money"].is_null(),
        "no money without --prices"
    );
    // With a price book: money per policy in the table, JSON and report.
    let prices = format!("{}/../../examples/prices.toml", env!("CARGO_MANIFEST_DIR"));
    let rep = d.join("report-money");
    let json = d.join("money.json");
    let (code, out, err) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        &cluster,
        "--trace",
        &trace,
        "--policy",
        "fifo,backfill",
        "--prices",
        &prices,
        "--start",
        "2026-11-14",
        "--tenants",
        "--json",
        json.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("money (CNY), window 2026-11-14T00:00:00Z") && out.contains("idle_value"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let num = |x: &serde_json::Value| x.as_str().unwrap().parse::<f64>().unwrap();
    for r in v["results"].as_array().unwrap() {
        let m = &r["money"];
        let invoices = m["invoices"].as_array().unwrap();
        assert_eq!(invoices.len(), 3, "one invoice per tenant");
        let billed: f64 = invoices.iter().map(|i| num(&i["total"])).sum();
        assert!((billed - num(&m["revenue"])).abs() < 1e-6, "{m}");
        assert!(num(&m["idle_value"]) > 0.0 && num(&m["revenue"]) > 0.0);
        assert_eq!(m["from"], v["results"][0]["money"]["from"]);
        assert_eq!(
            m["to"], v["results"][0]["money"]["to"],
            "one window for every policy"
        );
    }
    let tenants = std::fs::read_to_string(rep.join("tenants.csv")).unwrap();
    assert!(
        tenants.lines().next().unwrap().ends_with(",bill"),
        "{tenants}"
    );
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(html.contains("<h2>Money</h2>"));
    assert!(
        !err.contains("warning"),
        "the example book prices everything: {err}"
    );
    // What a book does not price is said, never silently left out.
    let thin = d.join("a100-only.toml");
    std::fs::write(
        &thin,
        "currency = \"CNY\"\n[[period]]\nfrom = \"2026-01-01\"\n[period.gpu_hour.A100-80G]\non-demand = \"12\"\n",
    )
    .unwrap();
    let (code, _, err) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        &cluster,
        "--trace",
        &trace,
        "--prices",
        thin.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("GPU-hours of usage have no price in") && err.contains("a100-only.toml"),
        "{err}"
    );
    assert!(
        err.contains("no list price (on-demand or guaranteed) for Ascend910B, H800, T4"),
        "{err}"
    );
}

#[test]
fn sim_jobs_bad_input_is_a_one_line_error() {
    let cluster = example("philly.toml");
    let tmp = tmpdir();
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,abc,1,1,vc\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["--policy".into(), "lottery".into()],
            2,
            "unknown queue policy \"lottery\"".into(),
        ),
        (
            vec!["--placement".into(), "worst".into()],
            2,
            "unknown placement policy".into(),
        ),
        (
            vec!["--arrival-scale".into(), "0".into()],
            2,
            "--arrival-scale".into(),
        ),
    ];
    for (extra, want_code, want) in cases {
        let mut args: Vec<String> = [
            "sim",
            "jobs",
            "--cluster",
            &cluster,
            "--trace",
            &format!("philly:{}", bad.display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, _, err) = suanli(&a);
        assert_eq!(code, want_code, "{err}");
        assert!(err.contains(&want), "{err}");
    }
    let (code, _, err) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        &cluster,
        "--trace",
        &format!("philly:{}", bad.display()),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.csv:2: column duration"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        &cluster,
        "--trace",
        "nokind.csv",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("KIND:PATH"), "{err}");
    let tmp = tmpdir();
    let badtoml = tmp.path().join("c.toml");
    std::fs::write(
        &badtoml,
        "[[group]]\nname='x'\ncount=0\ncpu_cores=1\nmemory_gib=1\n",
    )
    .unwrap();
    let (code, _, err) = suanli(&[
        "sim",
        "jobs",
        "--cluster",
        badtoml.to_str().unwrap(),
        "--trace",
        &format!("philly:{}", bad.display()),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("c.toml") && err.contains("count must be at least 1"),
        "{err}"
    );
    // Price-book errors name the file and where; --start needs --prices.
    let tmp = tmpdir();
    let badbook = tmp.path().join("prices-bad.toml");
    std::fs::write(
        &badbook,
        "currency = \"CNY\"\n[[period]]\nfrom = \"2026-13-01\"\n",
    )
    .unwrap();
    let okbook = format!("{}/../../examples/prices.toml", env!("CARGO_MANIFEST_DIR"));
    for (extra, want) in [
        (
            vec!["--prices", badbook.to_str().unwrap()],
            "prices-bad.toml:period 1",
        ),
        (
            vec!["--prices", "/nonexistent/p.toml"],
            "/nonexistent/p.toml",
        ),
        (
            vec!["--prices", &okbook, "--start", "2026-11-40"],
            "--start",
        ),
        (vec!["--start", "2026-11-01"], "--prices"),
    ] {
        let mut a = vec![
            "sim",
            "jobs",
            "--cluster",
            &cluster,
            "--trace",
            "native:/nonexistent.csv",
        ];
        a.extend(extra);
        let (code, _, err) = suanli(&a);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    let (code, _, err) = suanli(&["gen", "--jobs", "10", "--spot", "1.5"]);
    assert_eq!(code, 2);
    assert!(err.contains("--spot"), "{err}");
}

#[test]
fn bench_jobs_prints_figures() {
    let (code, out, err) = suanli(&[
        "bench",
        "jobs",
        "--policy",
        "fifo,srtf",
        "--synthetic-jobs",
        "3000",
        "--synthetic-gpus",
        "160",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("synthetic: 3000 jobs on 160 GPUs"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("srtf")), "{out}");
}

#[test]
fn bench_billing_prints_figures_and_checks_its_invoices() {
    let (code, out, err) = suanli(&[
        "bench",
        "billing",
        "--nodes",
        "60",
        "--tenants",
        "12",
        "--intervals",
        "5000",
        "--store",
        "3000",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("store: 3000 task rows over 12 months") && out.contains("  read "),
        "{out}"
    );
    assert!(
        out.contains("60 nodes (480 GPUs), 12 tenants, 5000 usage intervals"),
        "{out}"
    );
    assert!(
        out.contains("speed-up: ") && out.contains("same invoices: yes"),
        "{out}"
    );
    let (code, _, err) = suanli(&["bench", "billing", "--tenants", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--tenants"), "{err}");
}

#[test]
fn bench_server_prints_both_figures() {
    let (code, out, err) = suanli(&[
        "bench",
        "server",
        "--seconds",
        "0.3",
        "--clients",
        "4",
        "--nodes",
        "60",
        "--pending",
        "2000",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("submissions: 1 client") && out.contains("4 clients"),
        "{out}"
    );
    assert!(
        out.contains("placement: 60 nodes, 2000 pending") && out.contains("decisions in"),
        "{out}"
    );
    let (code, _, err) = suanli(&["bench", "server", "--clients", "0"]);
    assert_eq!(code, 2, "{err}");
    // JSON for scripts, and the commit-ratio guard of CI: it passes under a
    // generous limit and fails (exit 1, naming the ratio) under an
    // impossible one.
    let place = [
        "bench",
        "server",
        "--no-submit",
        "--nodes",
        "60",
        "--pending",
        "2000",
    ];
    let (code, out, err) =
        suanli(&[&place[..], &["--json", "-", "--max-commit-ratio", "1000"]].concat());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("only JSON on stdout");
    let p = &v["placement"];
    assert!(p["decisions"].as_u64().unwrap() > 0, "{v}");
    assert!(p["commit_rows"].as_u64().unwrap() > p["decisions"].as_u64().unwrap());
    assert!(p["commit_ratio"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v.get("submissions").is_none());
    let (code, _, err) = suanli(&[&place[..], &["--max-commit-ratio", "0.001"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the loop's commit took") && err.contains("limit 0.001x"),
        "{err}"
    );
    let (code, _, err) = suanli(&[&place[..], &["--max-commit-ratio", "0"]].concat());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn server_config_errors_name_file_line_and_column() {
    let tmp = tmpdir();
    let d = tmp.path();
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        "listen = \"127.0.0.1:0\"\n\n[scheduler]\nqueue_policy = \"lottery\"\n",
    )
    .unwrap();
    let (code, _, err) = suanli(&["server", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scheduler.queue_policy") && err.contains("fifo"),
        "{err}"
    );
    std::fs::write(&f, "listen = \"127.0.0.1:0\"\nport = 80\n").unwrap();
    let (code, _, err) = suanli(&["server", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:2:1") && err.contains("unknown field"),
        "{err}"
    );
    let (code, _, err) = suanli(&["server", "--config", "/nonexistent/x.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/x.toml"), "{err}");
}

#[test]
fn bench_loop_measures_an_open_loop_of_submissions_and_heartbeats() {
    let (code, out, err) = suanli(&[
        "bench",
        "loop",
        "--nodes",
        "50",
        "--rate",
        "200",
        "--seconds",
        "1.5",
        "--min-run",
        "0.2",
        "--max-run",
        "0.5",
        "--heartbeat",
        "0.5",
        "--json",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("only JSON on stdout");
    let n = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert!(n("submitted") >= 250.0, "{v}");
    assert_eq!(
        n("submitted"),
        n("started_at_once") + n("queued") + n("refused"),
        "{v}"
    );
    assert_eq!(n("refused"), 0.0, "{v}");
    assert!(
        n("start_p50_ms") > 0.0 && n("start_p99_ms") >= n("start_p50_ms"),
        "{v}"
    );
    assert!(n("heartbeats") > 50.0 && n("completions") > 0.0, "{v}");
    assert!(n("loop_cpu_share") > 0.0, "{v}");
    let (code, _, err) = suanli(&["bench", "loop", "--rate", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = suanli(&["bench", "loop", "--min-run", "9", "--max-run", "1"]);
    assert_eq!(code, 2, "{err}");
}

/// Issue 16's rough edges: a closed pipe ends a printing command quietly,
/// and `--state` takes any case but only states a job can be in.
#[test]
fn a_closed_pipe_is_a_quiet_end_and_states_are_a_closed_set() {
    let d = tmpdir();
    let w = d.path().join("w.csv");
    let (code, _, err) = suanli(&[
        "gen",
        "--jobs",
        "3000",
        "--cluster",
        &example("mixed.toml"),
        "--out",
        w.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // The reader is gone before `sim jobs --json -` prints (`true` reads
    // nothing): the write fails with EPIPE, which used to be a panic.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(sleep 0.3; {} sim jobs --cluster {} --trace native:{} --json -) | true",
            env!("CARGO_BIN_EXE_suanli"),
            example("mixed.toml"),
            w.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // States: any case; PREEMPTED (an event, not a state) and typos refused
    // before any server is asked.
    let (code, _, err) = suanli(&[
        "queue",
        "--state",
        "Preempted",
        "--server",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a preempted job is pending again"), "{err}");
    let (code, _, err) = suanli(&["queue", "--state", "done", "--server", "http://127.0.0.1:9"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pending, running, completed, failed or cancelled"),
        "{err}"
    );
    let (code, _, err) = suanli(&[
        "queue",
        "--state",
        "running",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "x",
    ]);
    assert_eq!(code, 1, "parsed, then the server is unreachable: {err}");
}

#[test]
fn sim_serve_compares_policies_and_names_bad_input() {
    let tmp = tmpdir();
    let d = tmp.path();
    let trace = d.join("t.csv");
    let mut text = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
    for i in 0..600 {
        // A quiet stretch, then a burst.
        let s = if i < 300 { i * 2 } else { 600 + (i - 300) / 10 };
        text.push_str(&format!(
            "2023-11-16 10:{:02}:{:02}.5000000,{},{}\n",
            s / 60,
            s % 60,
            500 + i % 3000,
            1 + i % 200
        ));
    }
    std::fs::write(&trace, text).unwrap();
    let spec = format!("azure-llm:{}", trace.display());
    let (j, rep) = (d.join("r.json"), d.join("report"));
    let (code, out, err) = suanli(&[
        "sim",
        "serve",
        "--trace",
        &spec,
        "--model",
        "llama-2-7b",
        "--gpus",
        "1",
        "--policy",
        "static-peak,static:4,autoscale",
        "--signal",
        "work",
        "--target-inflight",
        "0.5",
        "--json",
        j.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("600 requests")
            && out.contains("static-peak (")
            && out.contains("autoscale (min 1"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[1]["policy"], "static-4");
    for r in rs {
        assert_eq!(r["requests"], 600);
        assert!(r["gpu_hours"].as_f64().unwrap() > 0.0);
        assert!(r["ttft_ms"]["p99"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(v["setup"]["perf"]["model"]["name"], "llama-2-7b");
    for f in [
        "index.html",
        "summary.csv",
        "series.csv",
        "results.json",
        "replicas.svg",
        "ttft_cdf.svg",
    ] {
        assert!(rep.join(f).is_file(), "{f} missing");
    }
    let bad = |args: &[&str], want_code: i32, want: &str| {
        let mut all = vec!["sim", "serve", "--trace", &spec];
        all.extend_from_slice(args);
        let (code, _, err) = suanli(&all);
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    bad(&["--policy", "static:0"], 2, "--policy \"static:0\"");
    bad(&["--policy", "magic"], 2, "expected static-peak");
    bad(&["--min", "9", "--max", "2"], 2, "--min:");
    bad(
        &["--stable-window-s", "1", "--panic-window-s", "5"],
        2,
        "--panic-window-s:",
    );
    bad(&["--target-inflight", "0"], 2, "--target-inflight:");
    bad(&["--gpu-model", "V100"], 2, "--gpu-model");
    bad(
        &[
            "--model",
            "llama-2-70b",
            "--gpu-model",
            "A100-80G",
            "--gpus",
            "1",
        ],
        2,
        "does not fit",
    );
    bad(&["--mfu", "2"], 2, "--mfu");
    bad(&["--route", "fastest"], 2, "fastest");
    bad(&["--signal", "vibes"], 2, "unknown signal");
    bad(&["--start-s", "1e300"], 2, "--start-s");
    bad(&["--mfu", "0.000001"], 2, "--mfu");
    bad(&["--slo-ttft-ms=0"], 2, "--slo-ttft-ms");
    bad(&["--wake-s", "1"], 2, "--wake-s: only with --sleep");
    bad(&["--sleep", "--wake-s=-1"], 2, "--wake-s");
    bad(
        &["--sleep", "--sleep-gpu-share", "2"],
        2,
        "--sleep-gpu-share",
    );
    bad(&["--tick-ms", "0"], 2, "--tick-ms");
    bad(
        &["--sleep-keep-s", "5"],
        2,
        "--sleep-keep-s: only with --sleep",
    );
    std::fs::write(
        &trace,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,12x,3\n",
    )
    .unwrap();
    bad(&[], 1, "t.csv:2: column ContextTokens");
    let (code, _, err) = suanli(&["sim", "serve", "--trace", "pollux:x.csv"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown kind"), "{err}");
}
