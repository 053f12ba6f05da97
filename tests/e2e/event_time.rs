//! Event time: the late-record rule against a from-scratch recomputation.
//!
//! Real records of the embedded logs, re-stamped with random event times that mostly move
//! forward with some stragglers, cut into small epochs and scored on two workers with a lateness
//! bound. The rule, recomputed from the lines alone: a record of epoch e is late when its window
//! ends at or before (newest event time of epochs < e) − bound. Checked: exactly those lines are
//! `late` rejects, every other record is scored, and the aggregates count the scored ones per
//! window.

use std::collections::{BTreeMap, BTreeSet};

use ocean_pipeline::synth::SplitMix;
use ocean_tests::{default_config, numeric_rows, repo_root, run, scalar};

#[test]
fn late_records_against_a_recomputation() {
    let template: Vec<serde_json::Value> =
        std::fs::read_to_string(repo_root().join("data/logs/gemma3-prompt-v1.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for seed in [1u64, 2, 3] {
        let mut rng = SplitMix::new(seed);
        let (window, lateness, per_epoch) = (60i64, 90u64, 1 + rng.range(3, 9) as u64);
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let mut clock = 1_790_000_000i64;
        let mut lines = Vec::new();
        let mut created = Vec::new();
        for i in 0..160 {
            let mut r = template[i % template.len()].clone();
            clock += rng.range(0, 40) as i64;
            // One record in six is a straggler, up to 5 minutes old.
            let t = if rng.uniform() < 1.0 / 6.0 { clock - rng.range(0, 300) as i64 } else { clock };
            r["response"]["created"] = t.into();
            r["response"]["id"] = format!("cot-{seed}-{i:04}").into();
            lines.push(r.to_string());
            created.push(t);
        }
        std::fs::write(logs.join("stamped.jsonl"), lines.join("\n") + "\n").unwrap();

        // From scratch: epochs of `per_epoch` lines; the watermark of an epoch is the newest
        // event time of the earlier epochs less the bound.
        let mut late = BTreeSet::new();
        let mut newest_before: Option<i64> = None;
        for (e, chunk) in created.chunks(per_epoch as usize).enumerate() {
            let watermark = newest_before.map(|n| n - lateness as i64);
            for (k, t) in chunk.iter().enumerate() {
                let end = t.div_euclid(window) * window + window;
                if watermark.is_some_and(|w| end <= w) {
                    late.insert(e * per_epoch as usize + k + 1);
                }
            }
            let newest = chunk.iter().copied().max().unwrap();
            newest_before = Some(newest_before.map_or(newest, |n| n.max(newest)));
        }

        let mut config = default_config(&dir.path().join("out"));
        config.source.logs = vec![logs.clone()];
        config.source.epoch_records = per_epoch;
        config.aggregates.window_secs = window as u64;
        config.aggregates.lateness_secs = Some(lateness);
        config.kg_policy = "adjacency".into();
        let summary = run(&config).unwrap();
        let out = &config.sink.out;
        let rejected: BTreeSet<usize> =
            numeric_rows(out, "select line from rejects where reason_code = 'late' order by line")
                .unwrap()
                .into_iter()
                .map(|r| r[0].unwrap() as usize)
                .collect();
        assert!(!late.is_empty() && late.len() < 100, "seed {seed}: the draw should have some late records");
        assert_eq!(rejected, late, "seed {seed}");
        let other_rejects = scalar(out, "select count(*) from rejects where reason_code <> 'late'").unwrap() as usize;
        assert_eq!(summary.cots_scored + late.len() + other_rejects, 160, "seed {seed}");
        // The aggregates count the scored records of each window.
        let mut per_window: BTreeMap<i64, f64> = BTreeMap::new();
        let scored = numeric_rows(out, "select cast(event_time as bigint) from cot_scores").unwrap();
        for r in scored {
            *per_window.entry((r[0].unwrap() as i64 / 1_000_000).div_euclid(window) * window).or_default() += 1.0;
        }
        let aggregates: BTreeMap<i64, f64> =
            numeric_rows(out, "select cast(window_start as bigint), sum(n) from aggregates_current group by 1")
                .unwrap()
                .into_iter()
                .map(|r| ((r[0].unwrap() as i64) / 1_000_000, r[1].unwrap()))
                .collect();
        assert_eq!(aggregates, per_window, "seed {seed}");
    }
}
