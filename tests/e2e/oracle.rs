//! The live aggregates against a batch recomputation: random splits of the embedded logs into
//! epochs, random retractions, and at every epoch the incremental `aggregates` changelog (as of
//! that epoch) equals DataFusion SQL over the Parquet output of a from-scratch run on the
//! records live at that epoch, to 1e-9 relative.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ocean_pipeline::synth::SplitMix;
use ocean_tests::{default_config, numeric_rows, repo_root, run};

const WINDOW_SECS: u64 = 600;

/// A log line with its response id.
#[derive(Clone)]
struct Line {
    id: String,
    text: String,
}

fn embedded_lines() -> Vec<Line> {
    let mut lines = Vec::new();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(repo_root().join("data/logs")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        for text in std::fs::read_to_string(f).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            lines.push(Line { id: v["response"]["id"].as_str().unwrap().to_owned(), text: text.to_owned() });
        }
    }
    lines
}

fn write_lines(path: &Path, lines: &[Line]) {
    let text: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
    std::fs::write(path, text).unwrap();
}

/// (model, version, window start µs) → (n, estimate, std_error). (`date_bin` gives ns; the
/// queries divide by 1000.)
type Groups = BTreeMap<(String, String, i64), (f64, f64, f64)>;

fn groups(out: &Path, query: &str) -> Groups {
    let keys =
        ocean_tests::sql(out, &format!("select model, model_version from ({query}) order by model, model_version, w"))
            .unwrap();
    let nums =
        numeric_rows(out, &format!("select w, n, estimate, std_error from ({query}) order by model, model_version, w"))
            .unwrap();
    let mut names = Vec::new();
    for b in &keys {
        let (m, v) = (b.column(0).as_any().downcast_ref::<arrow::array::StringArray>().unwrap(), b.column(1));
        let v = v.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        for i in 0..b.num_rows() {
            names.push((m.value(i).to_owned(), v.value(i).to_owned()));
        }
    }
    assert_eq!(names.len(), nums.len());
    names
        .into_iter()
        .zip(nums)
        .map(|((m, v), r)| ((m, v, r[0].unwrap() as i64), (r[1].unwrap(), r[2].unwrap(), r[3].unwrap())))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Standard errors of a group whose mean is `estimate`, computed from running sums (ΣV, ΣV²)
/// that chains were added to and retracted from on one side, and summed afresh on the other:
/// the variance from sums loses about ε·V̄² to cancellation and keeps a residue of ε·V² of every
/// large value once added and later retracted, so the two may differ by more than the 1e-9 of
/// the estimates; 1e-6 relative, plus the cancellation term for groups of nearly equal values.
fn close_se(a: f64, b: f64, estimate: f64) -> bool {
    let cancellation = 1e-12 * estimate * estimate / a.abs().max(b.abs()).max(1e-300);
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-12) + cancellation
}

#[test]
fn incremental_aggregates_equal_sql_over_a_batch_run() {
    let all = embedded_lines();
    for seed in 0..3u64 {
        let mut rng = SplitMix::new(seed);
        let self_normalized = seed == 2;
        let dir = tempfile::tempdir().unwrap();
        // Shuffle, split into 3 log files (epochs 0–2), pick 2 retraction files (epochs 3–4).
        let mut lines = all.clone();
        for i in (1..lines.len()).rev() {
            lines.swap(i, rng.range(0, i));
        }
        let cut1 = rng.range(20, lines.len() / 2);
        let cut2 = rng.range(cut1 + 1, lines.len() - 10);
        let parts = [&lines[..cut1], &lines[cut1..cut2], &lines[cut2..]];
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        for (i, p) in parts.iter().enumerate() {
            write_lines(&logs.join(format!("part-{i}.jsonl")), p);
        }
        let mut retractions: Vec<Vec<String>> = Vec::new();
        for r in 0..2 {
            let mut ids: Vec<String> = lines.iter().filter(|_| rng.uniform() < 0.15).map(|l| l.id.clone()).collect();
            ids.push(format!("no-such-cot-{r}"));
            std::fs::write(dir.path().join(format!("retract-{r}.txt")), ids.join("\n")).unwrap();
            retractions.push(ids);
        }

        let mut config = default_config(&dir.path().join("live"));
        config.source.logs = vec![logs.clone()];
        config.source.retract = (0..2).map(|r| dir.path().join(format!("retract-{r}.txt"))).collect();
        config.source.epoch_per_file = true;
        config.aggregates.window_secs = WINDOW_SECS;
        config.estimator.self_normalized = self_normalized;
        let summary = run(&config).unwrap();
        assert_eq!(summary.epochs, 5);
        let live_out = config.sink.out.clone();

        let mut retracted: Vec<String> = Vec::new();
        for epoch in 0..5usize {
            if epoch >= 3 {
                retracted.extend(retractions[epoch - 3].iter().cloned());
            }
            // The changelog as of this epoch.
            let as_of = format!(
                "select model, model_version, arrow_cast(window_start, 'Int64') as w, n, estimate, std_error \
                 from aggregates where time <= {epoch} \
                 group by model, model_version, window_start, n, estimate, std_error having sum(diff) > 0"
            );
            let incremental = groups(&live_out, &as_of);

            // A from-scratch run over the records live at this epoch.
            let batch_dir = dir.path().join(format!("batch-{epoch}"));
            std::fs::create_dir_all(batch_dir.join("logs")).unwrap();
            let live: Vec<Line> = parts[..=epoch.min(2)]
                .iter()
                .flat_map(|p| p.iter())
                .filter(|l| !retracted.contains(&l.id))
                .cloned()
                .collect();
            write_lines(&batch_dir.join("logs/live.jsonl"), &live);
            let mut batch = default_config(&batch_dir.join("out"));
            batch.source.logs = vec![batch_dir.join("logs")];
            run(&batch).unwrap();
            let estimate = if self_normalized {
                "sum(c.value) / sum(c.weight_mass)".to_owned()
            } else {
                "kg_ips(t.cot_id, t.step, t.contribution)".to_owned()
            };
            // Token-level UDAF over token_scores joined to cot_scores; SE from cot_scores.value.
            let sql = format!(
                "select c.model, c.model_version, \
                   arrow_cast(date_bin(interval '{WINDOW_SECS} seconds', c.event_time, timestamp '1970-01-01T00:00:00Z'), 'Int64') / 1000 as w, \
                   count(distinct c.cot_id) as n, {estimate} as estimate, max(se.std_error) as std_error \
                 from token_scores t join cot_scores c using (cot_id) \
                 join (select model, model_version, date_bin(interval '{WINDOW_SECS} seconds', event_time, timestamp '1970-01-01T00:00:00Z') as ws, \
                         kg_ips_std_error(value) as std_error, sum(value) as sv, sum(weight_mass) as sm, \
                         sum(value * value) as svv, sum(value * weight_mass) as svm, sum(weight_mass * weight_mass) as smm, count(*) as k \
                       from cot_scores group by 1, 2, 3) se \
                   on se.model = c.model and se.model_version = c.model_version \
                   and se.ws = date_bin(interval '{WINDOW_SECS} seconds', c.event_time, timestamp '1970-01-01T00:00:00Z') \
                 group by 1, 2, 3"
            );
            let mut recomputed = groups(&batch.sink.out, &sql);
            if self_normalized {
                // Delta-method standard error from the same sums, in SQL.
                let se_sql = format!(
                    "select model, model_version, \
                       arrow_cast(date_bin(interval '{WINDOW_SECS} seconds', event_time, timestamp '1970-01-01T00:00:00Z'), 'Int64') / 1000 as w, \
                       count(*) as n, sum(value) / sum(weight_mass) as estimate, \
                       case when count(*) > 1 then sqrt(greatest(sum(value * value) - 2 * (sum(value) / sum(weight_mass)) * sum(value * weight_mass) \
                         + power(sum(value) / sum(weight_mass), 2) * sum(weight_mass * weight_mass), 0) / (count(*) - 1) \
                         / power(sum(weight_mass) / count(*), 2) / count(*)) else 0 end as std_error \
                     from cot_scores group by 1, 2, 3"
                );
                recomputed = groups(&batch.sink.out, &se_sql);
            }
            assert_eq!(
                incremental.keys().collect::<Vec<_>>(),
                recomputed.keys().collect::<Vec<_>>(),
                "seed {seed} epoch {epoch}: groups"
            );
            for (key, (n, est, se)) in &incremental {
                let (bn, best, bse) = recomputed[key];
                assert_eq!(*n, bn, "seed {seed} epoch {epoch} {key:?}: n");
                assert!(close(*est, best), "seed {seed} epoch {epoch} {key:?}: estimate {est} vs {best}");
                assert!(close_se(*se, bse, best), "seed {seed} epoch {epoch} {key:?}: std_error {se} vs {bse}");
            }
        }
        // The current-state views (rows not hidden by a tombstone) hold exactly the live chains,
        // with the values of the from-scratch run over them.
        let current = |out: &Path, q: &str| numeric_rows(out, q).unwrap();
        let last = dir.path().join("batch-4/out");
        for q in [
            "select count(*), sum(value), sum(n_tokens) from cot_scores",
            "select count(*), sum(contribution) from token_scores",
            "select count(*) from generations",
            "select count(*), sum(cast(supported as int)) from mentions",
        ] {
            let (live, batch) = (current(&live_out, q), current(&last, q));
            for (a, b) in live[0].iter().zip(&batch[0]) {
                assert!(close(a.unwrap(), b.unwrap()), "seed {seed}: {q}: {live:?} vs {batch:?}");
            }
        }
        // Unknown retractions are rejects, and the written generations are the live ones.
        let rejects =
            numeric_rows(&live_out, "select count(*) from rejects where reason_code = 'unknown_retraction'").unwrap();
        assert!(rejects[0][0].unwrap() >= 2.0);
    }
}
