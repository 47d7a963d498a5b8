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

fn tmpdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("suanli-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn synthetic_run_writes_json_curve_and_plot() {
    let d = tmpdir();
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
    let d = tmpdir();
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
