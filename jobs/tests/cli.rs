//! The `ocean` binary as a user runs it: help, run, sql, and clear errors.

use std::process::Command;

fn ocean() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocean"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("ocean should start");
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_documents_commands_and_flags() {
    let help = stdout(ocean().arg("--help"));
    assert!(help.contains("run") && help.contains("sql"), "{help}");
    let run = stdout(ocean().args(["run", "--help"]));
    for flag in [
        "--logs",
        "--kg",
        "--out",
        "--batch-input",
        "--config",
        "--workers",
        "--window",
        "--smoothing",
        "--json",
        "--retract",
        "--segment-by",
        "--clip",
        "--self-normalized",
        "--per-token",
        "--confidence",
        "--processes",
        "--process",
        "--hostfile",
        "--epoch-records",
    ] {
        assert!(run.contains(flag), "run --help lacks {flag}");
    }
    assert!(stdout(ocean().args(["sql", "--help"])).contains("--out"));
}

#[test]
fn run_then_sql_one_row_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let summary = stdout(ocean().args(["run", "--out"]).arg(&out).args(["--workers", "2"]));
    for needle in
        ["records in", "rejects", "CoTs scored", "SmolLM2-135M-Instruct", "gemma-3-270m", "datasets written to"]
    {
        assert!(summary.contains(needle), "summary lacks {needle}:\n{summary}");
    }
    let table = stdout(
        ocean()
            .args(["sql", "select model, count(*), avg(value) from cot_scores group by model order by model", "--out"])
            .arg(&out),
    );
    let data_rows = table.lines().filter(|l| l.starts_with("| ") && !l.contains("count(")).count();
    assert_eq!(data_rows, 2, "{table}");
    assert!(table.contains("SmolLM2-135M-Instruct") && table.contains("gemma-3-270m"), "{table}");
}

#[test]
fn clear_errors() {
    let out = ocean().args(["sql", "select 1", "--out", "/nonexistent/ocean-out"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no Ocean datasets"));
    let out = ocean().args(["run", "--kg", "/nonexistent/kg", "--out", "/tmp/unused"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn synth_run_with_variants_segments_and_retractions() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    let printed = stdout(
        ocean()
            .args(["synth", "logs", "--replications", "2", "--n", "6", "--scenario", "mild", "target", "--out"])
            .arg(&synth),
    );
    assert!(printed.contains("synth-mild") && printed.contains("true V"), "{printed}");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(synth.join("truth.json")).unwrap()).unwrap();
    assert_eq!(truth["records"], 24);
    // Retract one logged chain, and name one that does not exist.
    std::fs::write(dir.path().join("gone.txt"), "# deleted\nsynth-mild-0000-00001\nno-such-id\n").unwrap();
    let out = dir.path().join("run");
    let summary = stdout(
        ocean()
            .args(["run", "--logs"])
            .arg(synth.join("logs"))
            .arg("--kg")
            .arg(synth.join("kg"))
            .arg("--retract")
            .arg(dir.path().join("gone.txt"))
            .args(["--segment-by", "scenario", "--clip", "50", "--self-normalized", "--window", "3600", "--out"])
            .arg(&out),
    );
    assert!(summary.contains("kg-ips+clip(50)+sn") && summary.contains("retracted       1"), "{summary}");
    assert!(summary.contains("unknown_retraction: 1"), "{summary}");
    let table = stdout(
        ocean()
            .args([
                "sql",
                "select segment, sum(n) n, min(estimator) e from aggregates_current group by segment order by segment",
                "--out",
            ])
            .arg(&out),
    );
    assert!(table.contains("| mild    | 11 |") && table.contains("| target  | 12 |"), "{table}");
    // The changelog retracted the mild aggregate of replication 0 and added its new state.
    let changes = stdout(
        ocean()
            .args(["sql", "select count(*) c from aggregates where diff = -1 and segment = 'mild'", "--out"])
            .arg(&out),
    );
    assert!(changes.contains("| 1 "), "{changes}");
    let bench = stdout(ocean().args(["bench", "estimator", "--cots", "20", "--tokens", "30", "--repeats", "1"]));
    let bench: serde_json::Value = serde_json::from_str(bench.trim()).unwrap();
    assert_eq!(bench["total_tokens"], 600);
    assert!(bench.get("tokens_per_second").is_some_and(serde_json::Value::is_f64), "{bench}");
}

/// The datasets of a run, as text: every table's rows in a canonical order (floats rounded to
/// 12 significant digits, since sums over another partition of the work may differ in the
/// last bits).
fn dataset_digest(out: &std::path::Path) -> String {
    let queries = [
        "select cot_id, model, model_version, n_steps, n_tokens, n_entity_tokens, n_mentions, n_supported, \
         round(value, 9), round(weight_mass, 9) from cot_scores order by cot_id",
        "select cot_id, token_index, step, is_entity, round(contribution, 9) from token_scores \
         where token_index % 7 = 0 order by cot_id, token_index",
        "select count(*), round(sum(contribution), 6) from token_scores",
        "select cot_id, part, mention_index, entity_id, supported, context_size from mentions order by cot_id, part, mention_index",
        "select cot_id, step, char_start, char_end, round(value, 9) from steps order by cot_id, step",
        "select cot_id, source, line from generations order by cot_id",
        "select model, model_version, n, round(estimate, 9), round(std_error, 9), reliable from aggregates_current \
         order by model, model_version",
        "select reason_code, count(*) from rejects group by reason_code order by reason_code",
    ];
    queries.iter().map(|q| stdout(ocean().args(["sql", q, "--out"]).arg(out))).collect::<Vec<_>>().join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn one_worker_two_workers_and_two_processes_write_the_same_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, workers: &str| {
        let out = dir.path().join(name);
        stdout(ocean().args(["run", "--epoch-records", "64", "--workers", workers, "--out"]).arg(&out));
        out
    };
    let one = dataset_digest(&run("one", "1"));
    let two = dataset_digest(&run("two", "2"));
    assert_eq!(one, two, "1 worker vs 2 workers");

    // Two processes of one worker each on loopback, writing into one folder.
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let out = dir.path().join("cluster");
    let spawn = |process: &str| {
        ocean()
            .args(["run", "--epoch-records", "64", "--workers", "1", "--processes", "2", "--process", process])
            .arg("--hostfile")
            .arg(&hostfile)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ocean should start")
    };
    // Process 0 clears the output folder before it connects, and process 1 writes nothing
    // before both are connected, so the start order does not matter.
    let first = spawn("1");
    let second = spawn("0");
    for child in [first, second] {
        let result = child.wait_with_output().unwrap();
        assert!(result.status.success(), "a cluster process failed: {}", String::from_utf8_lossy(&result.stderr));
    }
    assert!(one.contains("SmolLM2-135M-Instruct") && one.contains("token_mismatch"), "{one}");
    assert_eq!(one, dataset_digest(&out), "1 worker vs 2 processes");
}
