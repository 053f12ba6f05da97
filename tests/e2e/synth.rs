//! KG-IPS against synthetic logs with a known value: `ocean synth logs` → `ocean run` → SQL,
//! through `ocean synth validate`'s library (`ocean_pipeline::validate`).
//!
//! Fixed N: 200 seeded replications of 200 chains of thought per scenario (mild weights, a target
//! policy, heavy-tailed weights), one aggregate each. Checked: the mean estimate is within 3
//! standard errors of the exact V; reliable 95 % intervals cover V in at least 94 % of
//! replications; in the heavy-tailed scenario the estimate is flagged unreliable instead of given
//! a narrow interval that misses, and its fallback interval (`ci_method` empirical-bernstein)
//! covers V in at least 95 % of replications; the Bernstein, sub-Gaussian and anytime intervals
//! cover at least as often as their level. Comparisons (replication r of one scenario against
//! replication r of another): intervals with both arms reliable cover the true difference in at
//! least 94 % of replications, conservative ones in at least 95 %.
//!
//! Continuous monitoring, smaller than the README's documented run (`ocean synth validate`: 200
//! replications × 50 looks): 40 replications × 10 looks of 100 chains, one dataflow epoch per
//! look. The anytime sequence misses V at some look in at most 5 % of replications; the
//! fixed-N normal interval, checked at every look, misses more often than that.

use ocean_pipeline::validate::{validate, ValidateConfig};

#[test]
fn estimates_and_intervals_against_the_exact_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = ValidateConfig { out: dir.path().to_owned(), epochs: 0, ..ValidateConfig::default() };
    assert!(config.replications >= 200);
    let report = validate(&config, |what| eprintln!("{what}")).unwrap();
    assert_eq!(report.coverage.len(), 3);
    for c in &report.coverage {
        eprintln!("{c:?}");
        let (name, reps) = (&c.scenario, c.replications as f64);
        assert_eq!(c.replications, config.replications, "{name}: one aggregate per replication");
        assert!((c.mean_estimate - c.value).abs() <= 3.0 * c.se_of_mean, "{name}: mean estimate off: {c:?}");
        // A reliable interval that misses V happens at most as often as a 94 % interval allows.
        assert!(c.reliable_missed as f64 <= 0.06 * reps, "{name}: {c:?}");
        assert!(c.bernstein_covered as f64 >= 0.94 * reps, "{name}: {c:?}");
        assert!(c.subgaussian_covered as f64 >= 0.94 * reps, "{name}: {c:?}");
        assert!(c.anytime_covered as f64 >= 0.95 * reps, "{name}: {c:?}");
        if name == "heavy" {
            // σ = 2: the plain normal interval under-covers, and the output says so.
            assert!(c.log_ratio_sd > 1.8, "{name}: the weights should spread with sd ≈ 2");
            assert!((c.normal_covered as f64) < 0.94 * reps, "{name}: not heavy enough to test the flag: {c:?}");
            assert!(c.reliable as f64 <= 0.1 * reps, "{name}: {c:?}");
            // Every row's own interval (mostly the empirical-Bernstein fallback) covers V.
            assert!(c.row_covered as f64 >= 0.95 * reps, "{name}: {c:?}");
        } else {
            assert!(c.reliable as f64 >= 0.95 * reps, "{name}: {c:?}");
        }
    }
    assert_eq!(report.comparisons.len(), 2);
    for c in &report.comparisons {
        eprintln!("{c:?}");
        assert_eq!(c.comparisons, config.replications, "{c:?}");
        assert_eq!(c.paired, c.comparisons, "the arms answer the same 100 questions: {c:?}");
        assert!(c.both_reliable_covered as f64 >= 0.94 * c.both_reliable as f64, "{c:?}");
        assert!(c.conservative_covered as f64 >= 0.95 * c.conservative as f64, "{c:?}");
    }
    // mild − target: both arms reliable almost always; mild − heavy: conservative almost always.
    let (target, heavy) = (&report.comparisons[0], &report.comparisons[1]);
    assert!(target.b == "target" && target.both_reliable as f64 >= 0.9 * config.replications as f64, "{target:?}");
    assert!(heavy.b == "heavy" && heavy.conservative as f64 >= 0.9 * config.replications as f64, "{heavy:?}");
}

#[test]
fn anytime_sequence_under_continuous_monitoring() {
    let dir = tempfile::tempdir().unwrap();
    let config = ValidateConfig {
        out: dir.path().to_owned(),
        replications: 40,
        n: 100,
        epochs: 10,
        fixed: false,
        ..ValidateConfig::default()
    };
    let report = validate(&config, |what| eprintln!("{what}")).unwrap();
    assert_eq!(report.monitoring.len(), 2);
    for m in &report.monitoring {
        eprintln!("{m:?}");
        assert_eq!((m.replications, m.looks), (40, 10), "one row per replication after every look: {m:?}");
        assert!(m.anytime_missed * 20 <= m.replications, "{m:?}");
        assert!(m.normal_missed > m.anytime_missed && m.normal_missed * 20 > m.replications, "{m:?}");
    }
}
