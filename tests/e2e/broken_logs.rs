//! A log file with broken lines finishes, and every broken line is in `rejects` with its reason.

use std::io::Write;

use ocean_tests::{default_config, repo_root, run, scalar, sql};

#[test]
fn broken_lines_become_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let sample = std::fs::read_to_string(repo_root().join("data/logs/smollm2-prompt-v1.jsonl")).unwrap();
    let good: Vec<&str> = sample.lines().take(4).collect();
    let mut f = std::fs::File::create(logs.join("mixed.jsonl")).unwrap();
    let mut positive = serde_json::from_str::<serde_json::Value>(good[1]).unwrap();
    positive["response"]["choices"][0]["logprobs"]["content"][0]["logprob"] = serde_json::json!(0.7);
    let mut mismatch = serde_json::from_str::<serde_json::Value>(good[2]).unwrap();
    mismatch["response"]["choices"][0]["message"]["content"] = serde_json::json!("something else");
    let mut duplicate = serde_json::from_str::<serde_json::Value>(good[0]).unwrap();
    duplicate["request"]["metadata"]["note"] = serde_json::json!("same id");
    writeln!(f, "{}", good[0]).unwrap(); // line 1
    writeln!(f, "{{\"truncated\": ").unwrap(); // 2: invalid JSON
    writeln!(f, "{}", positive).unwrap(); // 3: positive logprob
    writeln!(f).unwrap(); // 4: blank, not a record
    writeln!(f, "{}", mismatch).unwrap(); // 5: tokens do not match content
    f.write_all(b"{\"id\": \"\xff\xfe\"}\n").unwrap(); // 6: invalid UTF-8
    writeln!(f, "{}", good[3]).unwrap(); // 7
    writeln!(f, "{{\"hello\": \"world\"}}").unwrap(); // 8: unknown format
    writeln!(f, "{}", duplicate).unwrap(); // 9: duplicate id
    writeln!(f, "{}", "x".repeat(100_000)).unwrap(); // 10: oversized (limit below)
    drop(f);

    let mut config = default_config(&dir.path().join("out"));
    config.source.logs = vec![logs];
    config.source.max_line_bytes = 65_536;
    let summary = run(&config).unwrap();
    let out = dir.path().join("out");
    assert_eq!(summary.generations, 2);
    assert_eq!(summary.records, 9);
    assert_eq!(scalar(&out, "select count(*) from cot_scores").unwrap(), 2.0);

    let batches =
        sql(&out, "select line, reason_code from rejects where format <> 'wikidata5m' order by line").unwrap();
    let mut got = Vec::new();
    for b in &batches {
        let lines = arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(b.column(0));
        let codes = arrow::array::AsArray::as_string::<i32>(b.column(1));
        for i in 0..b.num_rows() {
            got.push((lines.value(i), codes.value(i).to_owned()));
        }
    }
    let want: Vec<(u64, String)> = [
        (2, "invalid_json"),
        (3, "bad_logprob"),
        (5, "token_mismatch"),
        (6, "invalid_utf8"),
        (8, "unknown_format"),
        (9, "duplicate_id"),
        (10, "oversized"),
    ]
    .iter()
    .map(|(l, c)| (*l, c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(summary.rejects_by_reason.values().sum::<usize>(), summary.rejects);
    // The raw bytes are kept, truncated, with the full length.
    assert_eq!(scalar(&out, "select raw_bytes from rejects where reason_code = 'oversized'").unwrap(), 100_000.0);
    assert!(scalar(&out, "select length(raw) from rejects where reason_code = 'oversized'").unwrap() <= 4096.0);
}
