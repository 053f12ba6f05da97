//! The pipeline on the embedded default data, checked through DataFusion SQL.

use std::collections::BTreeSet;

use ocean_tests::{column, default_config, repo_root, rows, run, scalar};

fn kg_entities() -> BTreeSet<String> {
    let root = repo_root().join("data/kg");
    let mut ids = BTreeSet::new();
    for line in std::fs::read_to_string(root.join("triples.tsv")).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        ids.insert(f[0].to_owned());
        ids.insert(f[2].to_owned());
    }
    for line in std::fs::read_to_string(root.join("entity_aliases.tsv")).unwrap().lines() {
        ids.insert(line.split('\t').next().unwrap().to_owned());
    }
    ids
}

#[test]
fn embedded_default_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let summary = run(&default_config(out)).unwrap();

    // Every dataset was written and is readable.
    for name in ocean_schemas::DATASETS {
        assert!(out.join(name).is_dir() || name == "tombstones", "{name} missing");
    }
    assert!(out.join("run_config.json").is_file() && out.join("summary.json").is_file());

    // Row counts: records in = generations + rejects of the logs; one score per generation.
    let generations = scalar(out, "select count(*) from generations").unwrap() as usize;
    let log_rejects = scalar(out, "select count(*) from rejects where format <> 'wikidata5m'").unwrap() as usize;
    assert!(generations >= 150, "only {generations} generations");
    assert_eq!(generations + log_rejects, summary.records as usize);
    assert_eq!(summary.generations, generations);
    assert_eq!(scalar(out, "select count(*) from cot_scores").unwrap() as usize, generations);
    let tokens = scalar(out, "select sum(array_length(tokens)) from generations").unwrap();
    assert_eq!(scalar(out, "select count(*) from token_scores").unwrap(), tokens);

    // At least two models, each with an aggregate.
    let models = rows(out, "select model, count(*), avg(value) from cot_scores group by model").unwrap();
    assert!(models >= 2, "{models} models");
    assert!(summary.models.len() >= 3, "models and versions: {:?}", summary.models);

    // Every value finite; V̂ ≤ 0.
    for q in [
        "select count(*) from token_scores where not (abs(behavior_logprob) < 1e300 and abs(log_weight) < 1e300 and abs(contribution) < 1e300 and abs(log_lambda) < 1e300)",
        "select count(*) from token_scores where kg_logprob is not null and not (abs(kg_logprob) < 1e300)",
        "select count(*) from cot_scores where not (abs(value) < 1e300 and abs(weight_sum) < 1e300)",
        "select count(*) from aggregates where not (abs(estimate) < 1e300 and abs(std_error) < 1e300 and abs(ess) < 1e300)",
        "select count(*) from steps where not (abs(value) < 1e300)",
        "select count(*) from cot_scores where value > 0",
        "select count(*) from aggregates where estimate > 0",
        "select count(*) from token_scores where contribution > 0",
    ] {
        assert_eq!(scalar(out, q).unwrap(), 0.0, "{q}");
    }

    // Every linked entity exists in the KG.
    let kg = kg_entities();
    let linked = ocean_tests::sql(out, "select distinct entity_id from mentions").unwrap();
    let mut n_linked = 0;
    for b in &linked {
        let col = arrow::array::AsArray::as_string::<i32>(b.column(0));
        for i in 0..b.num_rows() {
            assert!(kg.contains(col.value(i)), "{} is not in the KG", col.value(i));
            n_linked += 1;
        }
    }
    assert!(n_linked >= 20, "only {n_linked} distinct entities linked");
    assert!(scalar(out, "select count(*) from mentions where part = 'cot' and supported").unwrap() > 0.0);

    // V̂ can be recomputed from token_scores alone: mean over steps of mean contribution.
    let recomputed = column(
        out,
        "select max(abs(c.value - r.v)) from cot_scores c join (
             select cot_id, avg(sv) as v from (
                 select cot_id, step, avg(contribution) as sv from token_scores group by cot_id, step
             ) group by cot_id
         ) r on c.cot_id = r.cot_id",
    )
    .unwrap();
    assert!(recomputed[0].unwrap() < 1e-9, "{recomputed:?}");
    // And the contribution from its parts.
    let parts = scalar(
        out,
        "select max(abs(contribution - exp(coalesce(target_logprob, behavior_logprob) - log_lambda) * behavior_logprob)) from token_scores",
    )
    .unwrap();
    assert!(parts < 1e-9);

    // Aggregates (current state) equal a batch recomputation from cot_scores.
    let diff = scalar(
        out,
        "select max(abs(a.estimate - b.v) + abs(cast(a.n as double) - cast(b.n as double))) from
             (select model, model_version, window_start, estimate, n from aggregates group by model, model_version, window_start, estimate, n having sum(diff) = 1) a
         join (select model, model_version, date_bin(interval '1 day', event_time, timestamp '1970-01-01T00:00:00Z') as ws, avg(value) as v, count(*) as n
               from cot_scores group by model, model_version, ws) b
         on a.model = b.model and a.model_version = b.model_version and a.window_start = b.ws",
    )
    .unwrap();
    assert!(diff < 1e-9, "aggregates differ from recomputation by {diff}");
    let groups = scalar(out, "select count(*) from (select distinct model, model_version, date_bin(interval '1 day', event_time, timestamp '1970-01-01T00:00:00Z') from cot_scores)").unwrap();
    assert_eq!(scalar(out, "select count(*) from aggregates where diff = 1").unwrap(), groups);
}

/// The live counters a progress display reads end where the summary does.
#[test]
fn progress_counters_match_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let progress = std::sync::Arc::new(ocean_pipeline::Progress::default());
    let summary =
        ocean_pipeline::run_observed(&default_config(dir.path()), Default::default(), std::sync::Arc::clone(&progress))
            .unwrap();
    let s = progress.snapshot();
    assert_eq!(s.records, summary.records);
    assert_eq!(s.cots_committed as usize, summary.cots_scored);
    assert_eq!(s.rejects_committed as usize, summary.rejects);
    // Every input byte of the JSONL logs was read, and the newest record's time is known.
    let input: u64 =
        std::fs::read_dir(repo_root().join("data/logs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!((s.input_bytes, s.bytes), (input, input));
    let newest = scalar(dir.path(), "select cast(max(event_time) as bigint) from generations").unwrap();
    assert_eq!(s.newest_event_us.map(|t| t as f64), Some(newest));
}

/// `ocean eval linking`'s measure on the labelled set (data/gold/mentions.jsonl): the goal of
/// linking F1 ≥ 0.9 holds, the counts add up, the pipeline's grounding agrees with the
/// independent reference wherever linking made no error, and perturbed labels move the counts
/// by exactly what they should.
#[test]
fn linking_meets_its_goal_on_the_labelled_set() {
    use ocean_pipeline::eval::{eval_linking, read_labels, LabelMention};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut config = default_config(out);
    config.kg_policy = "adjacency".into();
    run(&config).unwrap();
    let labels = read_labels(&repo_root().join("data/gold/mentions.jsonl")).unwrap();
    let e = eval_linking(out, &labels).unwrap();
    assert!(e.chains >= 80 && e.mentions >= 300, "{} chains, {} mentions", e.chains, e.mentions);
    assert!(e.f1 >= 0.9, "linking F1 {:.3} below the goal", e.f1);
    assert_eq!(e.cot.tp + e.cot.fn_, e.mentions);
    let kinds = |kind: &str, part: &str| e.errors.iter().filter(|x| x.kind == kind && x.part == part).count();
    assert_eq!(e.cot.fp, kinds("wrong-entity", "cot") + kinds("spurious", "cot"));
    assert_eq!(e.cot.fn_, kinds("wrong-entity", "cot") + kinds("missed", "cot"));
    assert!(e.grounding_steps > 100 && e.grounding_accuracy >= 0.9, "{e:?}");
    assert!(e.clean_chain_grounding_n > 200);
    assert_eq!(e.clean_chain_grounding_accuracy, 1.0, "grounding disagrees with the reference BFS");

    // One right label given another entity, one right label dropped, one label on a span the
    // linker leaves alone.
    let clean: Vec<usize> = (0..labels.len())
        .filter(|&i| {
            let at = format!("{}:{}", labels[i].file, labels[i].line);
            labels[i].cot.len() >= 2 && e.errors.iter().all(|x| x.at != at)
        })
        .collect();
    let (i, j) = (clean[0], clean[1]);
    let mut perturbed = labels.clone();
    perturbed[i].cot[0].entity = "no-such-entity".into();
    perturbed[j].cot.remove(0);
    let end = perturbed[j].cot.last().unwrap().end;
    perturbed[j].cot.push(LabelMention { start: end + 1000, end: end + 1001, surface: "x".into(), entity: "x".into() });
    let p = eval_linking(out, &perturbed).unwrap();
    assert_eq!((p.cot.tp, p.cot.fp, p.cot.fn_), (e.cot.tp - 2, e.cot.fp + 2, e.cot.fn_ + 2));
}
