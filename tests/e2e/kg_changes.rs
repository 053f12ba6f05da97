//! KG changes from files (`ocean run --kg-changes`): a run on a KG with triples and aliases
//! missing, then given them (and some retractions) as a change file — text lines or Parquet
//! rows, with times — ends where a run on the changed KG from scratch does: every score, row and
//! aggregate.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;

use ocean_pipeline::synth::SplitMix;
use ocean_tests::{default_config, numeric_rows, repo_root, run, scalar};

#[test]
fn kg_change_files_end_where_a_fresh_run_does() {
    let kg = repo_root().join("data/kg");
    let triples: Vec<String> =
        std::fs::read_to_string(kg.join("triples.tsv")).unwrap().lines().map(str::to_owned).collect();
    let aliases: Vec<String> =
        std::fs::read_to_string(kg.join("entity_aliases.tsv")).unwrap().lines().map(str::to_owned).collect();
    for seed in [1u64, 2] {
        let mut rng = SplitMix::new(seed);
        let dir = tempfile::tempdir().unwrap();
        // KG1: 200 triples and 30 alias lines missing. Changes: add them, retract 50 others.
        let (kept, added) = take_some(&triples, 200, 0.1, &mut rng);
        let (kept_aliases, added_aliases) = take_some(&aliases, 30, 0.05, &mut rng);
        let retracted: Vec<String> = kept.iter().filter(|_| rng.uniform() < 0.03).take(50).cloned().collect();
        let write_kg = |name: &str, triples: &[String], aliases: &[String]| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("triples.tsv"), triples.join("\n") + "\n").unwrap();
            std::fs::write(d.join("entity_aliases.tsv"), aliases.join("\n") + "\n").unwrap();
            // Relation aliases too: disambiguation reads them, and KG changes move its votes.
            std::fs::copy(kg.join("relation_aliases.tsv"), d.join("relation_aliases.tsv")).unwrap();
            d
        };
        let kg1 = write_kg("kg1", &kept, &kept_aliases);
        let after: Vec<String> = kept.iter().filter(|t| !retracted.contains(t)).chain(&added).cloned().collect();
        let kg2 = write_kg("kg2", &after, &aliases);
        // The changes: added triples at three times, aliases without a time (they hold from when
        // the file is read), a triple added at +10 s and retracted at +20 s — the retraction
        // listed first, so only applying changes in time order keeps it from being a reject —
        // a row that is no change and the retraction of a triple the KG lacks (2 rejects).
        let t0 = 1_795_000_000i64;
        let mut rows: Vec<Change> = Vec::new();
        for (i, t) in added.iter().enumerate() {
            let f: Vec<&str> = t.split('\t').collect();
            rows.push(Change::triple(1, [f[0], f[1], f[2]], Some(t0 + (i % 3) as i64)));
        }
        for line in &added_aliases {
            let mut fields = line.split('\t');
            let entity = fields.next().unwrap();
            for alias in fields {
                rows.push(Change::alias(1, entity, alias, None));
            }
        }
        let (h, t) = (added[0].split('\t').next().unwrap(), added[1].split('\t').next().unwrap());
        rows.push(Change::triple(-1, [h, "P4711", t], Some(t0 + 20)));
        rows.push(Change::triple(1, [h, "P4711", t], Some(t0 + 10)));
        rows.push(Change::triple(0, ["Qnot", "Pa", "Qchange"], None));
        rows.push(Change::triple(-1, ["Qnowhere", "P17", "Qnever"], None));
        // Seed 1 as text lines (seconds), seed 2 as Parquet (a timestamp column).
        let path = if seed == 1 { write_text(dir.path(), &rows) } else { write_parquet(dir.path(), &rows) };
        let retractions: String = retracted.iter().map(|t| format!("-\ttriple\t{t}\n")).collect();
        let path2 = dir.path().join("retractions.tsv");
        std::fs::write(&path2, retractions).unwrap();

        let config = |kg: &std::path::Path, out: &str| {
            let mut c = default_config(&dir.path().join(out));
            c.kg.dir = kg.to_owned();
            c.kg_policy = "adjacency".into();
            // The same entity universe for μ's smoothing in both runs.
            c.policy.entities = aliases.len() as u64;
            c
        };
        let mut changed = config(&kg1, "changed");
        changed.source.kg_changes = vec![path, path2];
        let summary = run(&changed).unwrap();
        // One input epoch per distinct time of the first file (none, 3 times of the additions,
        // +10 s, +20 s), then one for the second file, in consecutive epochs.
        let times: Vec<Option<i64>> = summary.kg_changes.iter().map(|c| c.time_us).collect();
        let s = |x: i64| Some((t0 + x) * 1_000_000);
        assert_eq!(times, vec![None, s(0), s(1), s(2), s(10), s(20), None], "seed {seed}");
        let epochs: Vec<u64> = summary.kg_changes.iter().map(|c| c.epoch).collect();
        assert!(epochs.windows(2).all(|w| w[1] == w[0] + 1), "seed {seed}: {epochs:?}");
        let applied: usize = summary.kg_changes.iter().map(|c| c.applied).sum();
        assert_eq!(applied, rows.len() - 2 + retracted.len(), "seed {seed}");
        run(&config(&kg2, "fresh")).unwrap();
        let (a, b) = (dir.path().join("changed"), dir.path().join("fresh"));
        for q in [
            "select cot_id, round(value, 9), grounded_fraction, n_mentions, n_supported from cot_scores order by 1",
            "select cot_id, part, mention_index, entity_id, supported from mentions order by 1, 2, 3",
            "select cot_id, token_index, round(contribution, 9) from token_scores order by 1, 2",
            "select model, model_version, n, round(estimate, 9), round(ci_low, 9) from aggregates_current order by 1, 2",
        ] {
            let (x, y) = (numeric_or_text(&a, q), numeric_or_text(&b, q));
            let first = x.lines().zip(y.lines()).find(|(l, r)| l != r);
            assert!(x == y, "seed {seed}: {q}: first difference {first:?}");
        }
        // Changes of triples alone re-wrote only the entity tokens' rows of the chains they
        // touched (the view above kept the rest); the alias changes re-wrote every row.
        let partial = |only: bool| {
            scalar(&a, &format!("select count(*) from tombstones where not retracted and entity_tokens_only = {only}"))
                .unwrap()
        };
        assert!(partial(true) > 0.0 && partial(false) > 0.0, "seed {seed}: {} / {}", partial(true), partial(false));
        // The changes matter: without them the scores differ.
        run(&config(&kg1, "unchanged")).unwrap();
        let q = "select cot_id, round(value, 9), n_supported from cot_scores order by 1";
        assert_ne!(numeric_or_text(&dir.path().join("unchanged"), q), numeric_or_text(&b, q), "seed {seed}");
        // The bad line and the retraction of an absent triple are rejects; the rest applied.
        let bad = scalar(&a, "select count(*) from rejects where format in ('wikidata5m', 'kg-changes')").unwrap();
        assert_eq!(bad, 2.0, "seed {seed}");
        assert!(numeric_rows(&a, "select count(*) from cot_scores").unwrap()[0][0] > Some(100.0));
    }
}

/// One KG change of the test's change file.
struct Change {
    diff: i64,
    triple: Option<[String; 3]>,
    alias: Option<[String; 2]>,
    time: Option<i64>,
}

impl Change {
    fn triple(diff: i64, [h, r, t]: [&str; 3], time: Option<i64>) -> Self {
        Change { diff, triple: Some([h.into(), r.into(), t.into()]), alias: None, time }
    }

    fn alias(diff: i64, entity: &str, alias: &str, time: Option<i64>) -> Self {
        Change { diff, triple: None, alias: Some([entity.into(), alias.into()]), time }
    }
}

/// The changes as text lines (`±<TAB>triple…[<TAB>seconds]`), with a comment and a line that is
/// no change; `changes.tsv` in `dir`.
fn write_text(dir: &std::path::Path, rows: &[Change]) -> std::path::PathBuf {
    let mut text = String::from("# the changes\n");
    for c in rows {
        let sign = match c.diff {
            1 => "+",
            -1 => "-",
            _ => "*",
        };
        let body = match (&c.triple, &c.alias) {
            (Some([h, r, t]), _) => format!("triple\t{h}\t{r}\t{t}"),
            (_, Some([e, a])) => format!("alias\t{e}\t{a}"),
            _ => unreachable!(),
        };
        let time = c.time.map(|t| format!("\t{t}")).unwrap_or_default();
        writeln!(text, "{sign}\t{body}{time}").unwrap();
    }
    let path = dir.join("changes.tsv");
    std::fs::write(&path, text).unwrap();
    path
}

/// The changes as Parquet rows: `diff`, `head`, `relation`, `tail`, `entity`, `alias` (the
/// other kind's columns null) and `time` as a UTC timestamp; `changes.parquet` in `dir`.
fn write_parquet(dir: &std::path::Path, rows: &[Change]) -> std::path::PathBuf {
    let text =
        |f: &dyn Fn(&Change) -> Option<String>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("diff", Arc::new(rows.iter().map(|c| c.diff).collect::<Int64Array>())),
        ("head", text(&|c| c.triple.as_ref().map(|t| t[0].clone()))),
        ("relation", text(&|c| c.triple.as_ref().map(|t| t[1].clone()))),
        ("tail", text(&|c| c.triple.as_ref().map(|t| t[2].clone()))),
        ("entity", text(&|c| c.alias.as_ref().map(|a| a[0].clone()))),
        ("alias", text(&|c| c.alias.as_ref().map(|a| a[1].clone()))),
        (
            "time",
            Arc::new(
                rows.iter()
                    .map(|c| c.time.map(|t| t * 1_000_000))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let path = dir.join("changes.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    path
}

/// `lines` split into (kept, taken): each line taken with probability `p`, at most `at_most`.
fn take_some(lines: &[String], at_most: usize, p: f64, rng: &mut SplitMix) -> (Vec<String>, Vec<String>) {
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for line in lines {
        if taken.len() < at_most && rng.uniform() < p {
            taken.push(line.clone());
        } else {
            kept.push(line.clone());
        }
    }
    (kept, taken)
}

/// The query's result as text (every column cast), for comparing two outputs.
fn numeric_or_text(out: &std::path::Path, q: &str) -> String {
    let batches = ocean_tests::sql(out, q).unwrap();
    ocean_pipeline::sql::format_table(&batches).unwrap()
}
