//! KG changes from files (`ocean run --kg-changes`): a run on a KG with triples and aliases
//! missing, then given them (and some retractions) as a change file, ends where a run on the
//! changed KG from scratch does — every score, row and aggregate.

use std::fmt::Write as _;

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
        let mut changes = String::from("# the changes\n");
        for t in &added {
            writeln!(changes, "+\ttriple\t{t}").unwrap();
        }
        for line in &added_aliases {
            let mut fields = line.split('\t');
            let entity = fields.next().unwrap();
            for alias in fields {
                writeln!(changes, "+\talias\t{entity}\t{alias}").unwrap();
            }
        }
        changes.push_str("not a change\n-\ttriple\tQnowhere\tP17\tQnever\n");
        let path = dir.path().join("changes.tsv");
        std::fs::write(&path, changes).unwrap();
        let retractions: String = retracted.iter().map(|t| format!("-\ttriple\t{t}\n")).collect();
        let path2 = dir.path().join("retractions.tsv");
        std::fs::write(&path2, retractions).unwrap();

        let config = |kg: &std::path::Path, out: &str| {
            let mut c = default_config(&dir.path().join(out));
            c.kg.dir = kg.to_owned();
            c.kg_policy = "adjacency".into();
            // The same entity universe for μ's smoothing in both runs.
            c.policy.entities = 1212;
            c
        };
        let mut changed = config(&kg1, "changed");
        changed.source.kg_changes = vec![path, path2];
        run(&changed).unwrap();
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
