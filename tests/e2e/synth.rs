//! KG-IPS against synthetic logs with a known value: `ocean synth logs` → `ocean run` → SQL.
//!
//! 200 seeded replications of 200 chains of thought per scenario (mild weights, a target policy,
//! heavy-tailed weights), one aggregate each. Checked: the mean estimate is within 3 standard
//! errors of the exact V; reliable 95 % intervals cover V in at least 94 % of replications; in the
//! heavy-tailed scenario the estimate is flagged unreliable instead of given a narrow interval
//! that misses, and its fallback interval (`ci_method` empirical-bernstein) covers V in at least
//! 95 % of replications; the Bernstein and sub-Gaussian intervals cover at least as often as
//! their level.

use ocean_pipeline::synth::{synth_logs, SynthConfig};
use ocean_tests::{numeric_rows, run};

/// What one scenario's replications show.
#[derive(Debug)]
struct Coverage {
    reps: usize,
    mean: f64,
    se_of_mean: f64,
    reliable: usize,
    reliable_covered: usize,
    reliable_missed: usize,
    normal_covered: usize,
    /// Rows whose own interval (`ci_low`, `ci_high`: normal or the fallback) covers V.
    row_covered: usize,
    bernstein_covered: usize,
    subgaussian_covered: usize,
    anytime_covered: usize,
}

fn coverage(out: &std::path::Path, model: &str, v: f64) -> Coverage {
    let query = format!(
        "select estimate, std_error, ci_low, ci_high, reliable, bernstein_low, bernstein_high, \
         subgaussian_low, subgaussian_high, anytime_low, anytime_high from aggregates \
         where model = '{model}' and diff = 1"
    );
    let rows = numeric_rows(out, &query).unwrap();
    let reps = rows.len();
    let estimates: Vec<f64> = rows.iter().map(|r| r[0].unwrap()).collect();
    let mean = estimates.iter().sum::<f64>() / reps as f64;
    let var = estimates.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (reps as f64 - 1.0);
    let covers = |lo: Option<f64>, hi: Option<f64>| matches!((lo, hi), (Some(l), Some(h)) if l <= v && v <= h);
    let mut c = Coverage {
        reps,
        mean,
        se_of_mean: (var / reps as f64).sqrt(),
        reliable: 0,
        reliable_covered: 0,
        reliable_missed: 0,
        normal_covered: 0,
        row_covered: 0,
        bernstein_covered: 0,
        subgaussian_covered: 0,
        anytime_covered: 0,
    };
    for r in &rows {
        let (est, se) = (r[0].unwrap(), r[1].unwrap());
        if covers(Some(est - 1.959964 * se), Some(est + 1.959964 * se)) {
            c.normal_covered += 1;
        }
        if r[4] == Some(1.0) {
            c.reliable += 1;
            if covers(r[2], r[3]) {
                c.reliable_covered += 1;
            } else {
                c.reliable_missed += 1;
            }
        } else {
            assert!(r[2].is_some() && r[3].is_some(), "an unreliable estimate still has a (fallback) interval");
        }
        c.row_covered += usize::from(covers(r[2], r[3]));
        c.bernstein_covered += usize::from(covers(r[5], r[6]));
        c.subgaussian_covered += usize::from(covers(r[7], r[8]));
        c.anytime_covered += usize::from(covers(r[9], r[10]));
    }
    c
}

#[test]
fn estimates_and_intervals_against_the_exact_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig { out: dir.path().join("synth"), ..SynthConfig::default() };
    assert!(config.replications >= 200);
    let truth = synth_logs(&config, |_, _| {}).unwrap();

    let mut run_config = ocean_pipeline::RunConfig::default();
    run_config.source.logs = vec![config.out.join("logs")];
    run_config.kg.dir = config.out.join("kg");
    run_config.sink.out = dir.path().join("run");
    run_config.policy.smoothing = config.smoothing;
    run_config.runtime.workers = 2;
    let summary = run(&run_config).unwrap();
    assert_eq!(summary.rejects, 0, "{:?}", summary.rejects_by_reason);
    assert_eq!(summary.cots_scored, truth.records);
    let out = &run_config.sink.out;

    for (name, t) in &truth.scenarios {
        let c = coverage(out, &t.model, t.value);
        eprintln!("{name}: V = {:.6}, {c:?}, sd(ln π0 − ln μ) = {:.3}", t.value, t.log_ratio_sd);
        let reps = c.reps as f64;
        assert_eq!(c.reps, config.replications, "{name}: one aggregate per replication");
        assert!((c.mean - t.value).abs() <= 3.0 * c.se_of_mean, "{name}: mean estimate off: {c:?} vs {}", t.value);
        // A reliable interval that misses V happens at most as often as a 94 % interval allows.
        assert!(c.reliable_missed as f64 <= 0.06 * reps, "{name}: {c:?}");
        assert!(c.bernstein_covered as f64 >= 0.94 * reps, "{name}: {c:?}");
        assert!(c.subgaussian_covered as f64 >= 0.94 * reps, "{name}: {c:?}");
        assert!(c.anytime_covered as f64 >= 0.95 * reps, "{name}: {c:?}");
        if name == "heavy" {
            // σ = 2: the plain normal interval under-covers, and the output says so.
            assert!(t.log_ratio_sd > 1.8, "{name}: the weights should spread with sd ≈ 2");
            assert!((c.normal_covered as f64) < 0.94 * reps, "{name}: not heavy enough to test the flag: {c:?}");
            assert!(c.reliable as f64 <= 0.1 * reps, "{name}: {c:?}");
            // Every row's own interval (mostly the empirical-Bernstein fallback) covers V.
            assert!(c.row_covered as f64 >= 0.95 * reps, "{name}: {c:?}");
        } else {
            assert!(c.reliable as f64 >= 0.95 * reps, "{name}: {c:?}");
            assert!(c.reliable_covered as f64 >= 0.94 * c.reliable as f64, "{name}: {c:?}");
        }
    }
}
