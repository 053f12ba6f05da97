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
    for flag in
        ["--logs", "--kg", "--out", "--batch-input", "--config", "--workers", "--window", "--smoothing", "--json"]
    {
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
