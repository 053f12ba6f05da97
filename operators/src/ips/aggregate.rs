//! Live aggregation of per-CoT KG-IPS terms into V̂ per (model, version, segment, window).
//!
//! Sums are kept per group by [`running_sums`], an operator that holds each group's running
//! [`StatSums`] and, at each time, adds that time's chains (+sums) and retractions (−sums) in
//! O(1) per update and emits −(the sums it last emitted), +(the new sums). Not `count_total`
//! over sums as the difference type: that re-accumulates a group's old total from its trace, and
//! float addition in another order (after the trace compacts) gave an old total one ulp off the
//! one emitted before, so the retraction did not cancel it and a stale `aggregates` row stayed
//! in the current state (seen as a flaky test). Minima and
//! maxima cannot be subtracted, and an exact minimum under retractions needs every value: a
//! reduce over the chains' exact extremes keeps one arranged record per chain, the one part of
//! the aggregates whose memory grew with the input. So the extremes are rounded *outward* to a
//! grid of 2⁶ steps per binade (down for minima, up for maxima: at most 1.6 % wider, see
//! [`Extremes::rounded`]) before they are arranged: equal levels consolidate, a group keeps at
//! most one record per level it has seen (a few hundred), and a reduce per (group, extreme)
//! reads that many. The intervals that use the range (empirical Bernstein, sub-Gaussian,
//! anytime) stay valid with a wider range; `min_weight`/`max_weight` are reported on that grid.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, ExchangeData};
use ocean_schemas::{Aggregate, CotScore, Generation, F64};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use super::stats::{CotStats, IntervalConfig, KgIpsStats, Summary, WeightStats};
use crate::text::fnv1a;
use crate::{Coll, Time};

/// Mantissa bits the rounding of extremes keeps: 2⁶ steps per binade, a relative step of
/// 2⁻⁶ ≈ 1.6 %.
const EXTREME_BITS: u32 = 6;

/// `x` on the grid of [`EXTREME_BITS`] mantissa bits, rounded up (toward +∞) or down; zero,
/// infinities and NaN unchanged.
fn round_outward(x: f64, up: bool) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let mask: u64 = (1 << (52 - EXTREME_BITS)) - 1;
    let bits = x.to_bits();
    if bits & mask == 0 {
        return x;
    }
    let toward_zero = bits & !mask;
    // A carry out of the mantissa moves to the next binade, which is the next grid point.
    let away_from_zero = toward_zero + mask + 1;
    f64::from_bits(if (x > 0.0) == up { away_from_zero } else { toward_zero })
}

impl From<&CotScore> for CotStats {
    fn from(s: &CotScore) -> Self {
        CotStats {
            value: s.value.0,
            weight_mass: s.weight_mass.0,
            weights: WeightStats {
                n_tokens: f64::from(s.n_tokens),
                n_entity_tokens: f64::from(s.n_entity_tokens),
                weight_sum: s.weight_sum.0,
                weight_sq_sum: s.weight_sq_sum.0,
                entity_weight_sum: s.entity_weight_sum.0,
                entity_weight_sq_sum: s.entity_weight_sq_sum.0,
                min_weight: s.min_weight.0,
                max_weight: s.max_weight.0,
            },
        }
    }
}

/// Window start (µs) of an event time, for windows of `window_us` µs aligned to the epoch.
pub fn window_start(event_time: i64, window_us: i64) -> i64 {
    event_time.div_euclid(window_us.max(1)) * window_us.max(1)
}

/// An aggregate's group: model, version, segment and window start (µs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    /// The behaviour model.
    pub model: String,
    /// Its version.
    pub model_version: String,
    /// The segment, if configured.
    pub segment: Option<String>,
    /// Window start, µs since the Unix epoch.
    pub window_start: i64,
}

impl GroupKey {
    /// A stable 64-bit hash of the group (FNV-1a over its fields): the key of the arranged
    /// extremes, so that they do not hold the group's strings. Two groups colliding would share
    /// extremes; at 64 bits that is not expected to happen.
    pub fn hash64(&self) -> u64 {
        let segment = self.segment.as_deref().map_or(&[0xff_u8][..], str::as_bytes);
        let window = self.window_start.to_le_bytes();
        fnv1a(&[self.model.as_bytes(), &[0], self.model_version.as_bytes(), &[0], segment, &[0], &window])
    }

    /// The group a generation's score will have (see [`GroupKey::of`]), with segments from the
    /// `request.metadata` key `segment_by`.
    pub fn of_generation(g: &Generation, segment_by: Option<&str>, window_us: i64) -> Self {
        GroupKey {
            model: g.model.clone(),
            model_version: g.model_version.clone(),
            segment: segment_by.and_then(|key| g.metadata_value(key)),
            window_start: window_start(g.event_time, window_us),
        }
    }

    /// The group of a scored chain of thought for windows of `window_us` µs.
    pub fn of(s: &CotScore, window_us: i64) -> Self {
        GroupKey {
            model: s.model.clone(),
            model_version: s.model_version.clone(),
            segment: s.segment.clone(),
            window_start: window_start(s.event_time, window_us),
        }
    }
}

/// The additive part of [`KgIpsStats`], as a differential difference type: N, Σ V, Σ V²,
/// Σ W, Σ W², Σ VW, tokens, entity tokens, Σ w, Σ w², Σ w (entity), Σ w² (entity), and for
/// the grounded fraction: Σ of it over chains with mentions, and their number.
///
/// Float sums under additions and retractions are exact up to rounding; a group whose N
/// returns to 0 may keep residues of order 1e-16 in the other sums, so readers treat N = 0 as
/// empty (see [`AggregateScores`]). A value is zero only when every sum is exactly 0, so that
/// a re-scored chain (−old, +new at one time, N unchanged) is never mistaken for no change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StatSums(pub [f64; 14]);

impl StatSums {
    /// One chain of thought's sums, with its grounded fraction (none without mentions).
    pub fn of(c: &CotStats, grounded_fraction: Option<f64>) -> Self {
        let w = &c.weights;
        StatSums([
            1.0,
            c.value,
            c.value * c.value,
            c.weight_mass,
            c.weight_mass * c.weight_mass,
            c.value * c.weight_mass,
            w.n_tokens,
            w.n_entity_tokens,
            w.weight_sum,
            w.weight_sq_sum,
            w.entity_weight_sum,
            w.entity_weight_sq_sum,
            grounded_fraction.unwrap_or(0.0),
            if grounded_fraction.is_some() { 1.0 } else { 0.0 },
        ])
    }

    /// The mean grounded fraction over chains with mentions (none without such chains).
    pub fn grounded_fraction(&self) -> Option<f64> {
        (self.0[13] > 0.5).then(|| self.0[12] / self.0[13])
    }

    /// N.
    pub fn n(&self) -> f64 {
        self.0[0]
    }

    /// The statistics with these sums and the given extremes.
    pub fn stats(&self, extremes: &Extremes) -> KgIpsStats {
        let s = &self.0;
        KgIpsStats {
            n: s[0],
            sum: s[1],
            sum_sq: s[2],
            mass_sum: s[3],
            mass_sq_sum: s[4],
            value_mass_sum: s[5],
            min_value: extremes.0[0].0,
            max_value: extremes.0[1].0,
            weights: WeightStats {
                n_tokens: s[6],
                n_entity_tokens: s[7],
                weight_sum: s[8],
                weight_sq_sum: s[9],
                entity_weight_sum: s[10],
                entity_weight_sq_sum: s[11],
                min_weight: extremes.0[2].0,
                max_weight: extremes.0[3].0,
            },
        }
    }
}

impl Eq for StatSums {}
impl PartialOrd for StatSums {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for StatSums {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| a.total_cmp(b))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }
}
impl Hash for StatSums {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for x in &self.0 {
            x.to_bits().hash(state);
        }
    }
}
impl IsZero for StatSums {
    fn is_zero(&self) -> bool {
        self.0.iter().all(|x| *x == 0.0)
    }
}
impl Semigroup for StatSums {
    fn plus_equals(&mut self, rhs: &Self) {
        for (a, b) in self.0.iter_mut().zip(&rhs.0) {
            *a += b;
        }
    }
}
impl Monoid for StatSums {
    fn zero() -> Self {
        StatSums([0.0; 14])
    }
}
impl Abelian for StatSums {
    fn negate(&mut self) {
        for a in &mut self.0 {
            *a = -*a;
        }
    }
}
impl Multiply<isize> for StatSums {
    type Output = StatSums;
    fn multiply(mut self, rhs: &isize) -> StatSums {
        let k = *rhs as f64;
        for a in &mut self.0 {
            *a *= k;
        }
        self
    }
}

/// The extremes of a set of chains: min V_i, max V_i, min token weight, max token weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Extremes(pub [F64; 4]);

impl Extremes {
    /// One chain's extremes.
    pub fn of(c: &CotStats) -> Self {
        Extremes([F64(c.value), F64(c.value), F64(c.weights.min_weight), F64(c.weights.max_weight)])
    }

    /// The extremes of the union.
    pub fn merge(&self, o: &Extremes) -> Extremes {
        let (a, b) = (&self.0, &o.0);
        Extremes([a[0].min(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].max(b[3])])
    }

    /// The extremes rounded outward on the grid (see the module docs): minima down, maxima up,
    /// so the result bounds the exact extremes and is at most 2⁻⁶ relatively wider.
    pub fn rounded(&self) -> Extremes {
        let [min_v, max_v, min_w, max_w] = self.0.map(|x| x.0);
        Extremes([
            F64(round_outward(min_v, false)),
            F64(round_outward(max_v, true)),
            F64(round_outward(min_w, false)),
            F64(round_outward(max_w, true)),
        ])
    }
}

/// A key's sums to add, times a multiplicity.
type SumUpdate<K> = ((K, StatSums), isize);

/// Each key's running sums: the input's records `((key, sums), t, d)` add `d × sums` to `key`
/// at `t`. At each time (once the input frontier has passed it) the operator adds the time's
/// updates, in a fixed order (sorted), to the sums it holds and emits, for each key touched,
/// −(the sums it emitted last) and +(the new sums) — so every retraction cancels its addition
/// exactly, whatever the order of float additions. A key whose N falls to 0 is emitted no more
/// and forgotten (with its float residues).
pub fn running_sums<'scope, K>(updates: Coll<'scope, (K, StatSums)>) -> Coll<'scope, (K, StatSums)>
where
    K: ExchangeData + Hash + Hashable<Output = u64>,
{
    let route = Exchange::new(|((k, _), _, _): &((K, StatSums), Time, isize)| k.hashed());
    updates
        .inner
        .unary_frontier(route, "RunningSums", |_cap, _info| {
            let mut pending: BTreeMap<Time, (Capability<Time>, Vec<SumUpdate<K>>)> = BTreeMap::new();
            let mut current: HashMap<K, StatSums> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for (kv, t, d) in data.drain(..) {
                        pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new())).1.push((kv, d));
                    }
                });
                while let Some(t) = pending.keys().next().copied().filter(|t| !frontier.less_equal(t)) {
                    let (cap, mut updates) = pending.remove(&t).expect("a pending time");
                    updates.sort();
                    let mut touched: BTreeMap<K, StatSums> = BTreeMap::new();
                    for ((k, sums), d) in updates {
                        let acc = touched.entry(k).or_insert_with(StatSums::zero);
                        acc.plus_equals(&sums.multiply(&d));
                    }
                    let mut session = output.session(&cap);
                    for (k, delta) in touched {
                        let old = current.remove(&k);
                        let mut new = old.unwrap_or_else(StatSums::zero);
                        new.plus_equals(&delta);
                        if let Some(old) = old {
                            session.give(((k.clone(), old), t, -1));
                        }
                        if new.n() > 0.5 {
                            session.give(((k.clone(), new), t, 1));
                            current.insert(k, new);
                        }
                    }
                }
            }
        })
        .as_collection()
}

/// The extremes per key of chains' (rounded) extremes: one reduce per (key, extreme) over the
/// levels present, then the four gathered per key.
fn extremes_by<'scope, K>(chains: Coll<'scope, (K, Extremes)>) -> Coll<'scope, (K, Extremes)>
where
    K: ExchangeData + Hash,
{
    chains
        .flat_map(|(key, e)| {
            let r = e.rounded();
            (0..4u8).map(move |i| ((key.clone(), i), r.0[usize::from(i)]))
        })
        .reduce_named("ExtremeLevels", |(_, i), levels: &[(&F64, isize)], out| {
            // Levels come sorted: even extremes are minima, odd ones maxima.
            let level = if i % 2 == 0 { levels.first() } else { levels.last() };
            out.extend(level.map(|(v, _)| ((*i, **v), 1)));
        })
        .map(|((key, _), level)| (key, level))
        .reduce_named("Extremes", |_, levels: &[(&(u8, F64), isize)], out| {
            let mut e = Extremes([F64(f64::NAN); 4]);
            for ((i, v), _) in levels {
                e.0[usize::from(*i)] = *v;
            }
            out.push((e, 1));
        })
}

/// What a scored chain of thought adds to the aggregates: its group, its sums and its extremes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CotSummary {
    /// The aggregate group.
    pub group: GroupKey,
    /// The chain's sums.
    pub sums: StatSums,
    /// The chain's extremes.
    pub extremes: Extremes,
}

impl CotSummary {
    /// The summary of a scored chain of thought.
    pub fn of(score: &CotScore, window_us: i64) -> Self {
        let stats = CotStats::from(score);
        CotSummary {
            group: GroupKey::of(score, window_us),
            sums: StatSums::of(&stats, score.grounded_fraction.map(|g| g.0)),
            extremes: Extremes::of(&stats),
        }
    }
}

/// How scored chains of thought are aggregated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateConfig {
    /// Window width in µs.
    pub window_us: i64,
    /// Self-normalized estimate (Σ V_i / Σ W_i) instead of the mean.
    pub self_normalized: bool,
    /// Interval level and reliability thresholds.
    pub intervals: IntervalConfig,
    /// The estimator label written to every row.
    pub label: String,
}

/// An `aggregates` row (time and diff 0) from a group's key and statistics.
pub fn aggregate_row(group: &GroupKey, stats: &KgIpsStats, config: &AggregateConfig) -> Aggregate {
    let summary = stats.summarize(config.self_normalized, &config.intervals);
    let (interval, ci_method) = summary.interval();
    let Summary { estimate, variance, std_error, bernstein, sub_gaussian, anytime, ess, entity_ess, reliable, .. } =
        summary;
    let finite = |x: f64| x.is_finite().then_some(F64(x));
    let w = &stats.weights;
    Aggregate {
        model: group.model.clone(),
        model_version: group.model_version.clone(),
        segment: group.segment.clone(),
        window_start: group.window_start,
        window_end: group.window_start.saturating_add(config.window_us),
        n: stats.n.round().max(0.0) as u64,
        estimate: F64(estimate),
        variance: F64(variance),
        std_error: F64(std_error),
        ci_low: finite(interval.0),
        ci_high: finite(interval.1),
        ci_method: ci_method.to_owned(),
        bernstein_low: finite(bernstein.0),
        bernstein_high: finite(bernstein.1),
        subgaussian_low: finite(sub_gaussian.0),
        subgaussian_high: finite(sub_gaussian.1),
        anytime_low: finite(anytime.0),
        anytime_high: finite(anytime.1),
        ess: F64(ess),
        entity_ess: F64(entity_ess),
        min_weight: F64(if w.min_weight.is_finite() { w.min_weight } else { 1.0 }),
        max_weight: F64(if w.max_weight.is_finite() { w.max_weight } else { 1.0 }),
        n_tokens: w.n_tokens.round().max(0.0) as u64,
        n_entity_tokens: w.n_entity_tokens.round().max(0.0) as u64,
        reliable,
        estimator: config.label.clone(),
        time: 0,
        diff: 0,
    }
}

/// The sums and extremes per (model, version) over all windows and segments, for a run's
/// summary (the extremes bound the conservative intervals).
pub fn model_totals<'scope>(
    summaries: Coll<'scope, CotSummary>,
) -> Coll<'scope, ((String, String), (StatSums, Extremes))> {
    let sums =
        running_sums(summaries.clone().map(|s| ((s.group.model.clone(), s.group.model_version.clone()), s.sums)));
    let extremes = extremes_by(summaries.map(|s| ((s.group.model, s.group.model_version), s.extremes)));
    sums.join_map(extremes, |model, sums, extremes| (model.clone(), (*sums, *extremes)))
}

/// Aggregates scored chains of thought.
pub trait AggregateScores<'scope> {
    /// One [`Aggregate`] per non-empty (model, version, segment, window). The rows' `time` and
    /// `diff` are 0 here: the caller fills them from the collection's updates.
    fn aggregate_scores(self, config: AggregateConfig) -> Coll<'scope, Aggregate>;
}

impl<'scope> AggregateScores<'scope> for Coll<'scope, CotSummary> {
    fn aggregate_scores(self, config: AggregateConfig) -> Coll<'scope, Aggregate> {
        let sums = running_sums(self.clone().map(|s| (s.group, s.sums)));
        let extremes = extremes_by(self.map(|s| (s.group.hash64(), s.extremes)));
        sums.map(|(group, sums)| (group.hash64(), (group, sums)))
            .join_map(extremes, move |_, (group, sums), extremes| aggregate_row(group, &sums.stats(extremes), &config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_epoch() {
        assert_eq!(window_start(125, 100), 100);
        assert_eq!(window_start(-1, 100), -100);
    }

    #[test]
    fn extremes_round_outward_on_the_grid() {
        let step = 1.0 / 64.0;
        for x in [1.0, -1.0, 3.0, 0.75, -0.001, 1e-300, 7.5e12, -123.456] {
            let (down, up) = (round_outward(x, false), round_outward(x, true));
            assert!(down <= x && x <= up, "{x}: {down} {up}");
            assert!((up - down).abs() <= step * x.abs(), "{x}: {down} {up}");
            // Levels are fixed points, so a group keeps few distinct values.
            assert_eq!(round_outward(down, false), down);
            assert_eq!(round_outward(up, true), up);
        }
        // A binade's top rounds up to the next power of two; grid points stay put.
        assert_eq!(round_outward(1.999, true), 2.0);
        assert_eq!(round_outward(1.0 + step, false), 1.0 + step);
        for x in [0.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(round_outward(x, true), x);
        }
        // Chains close together share levels.
        let levels: std::collections::BTreeSet<u64> =
            (0..10_000).map(|i| round_outward(1.0 + f64::from(i) * 1e-4, true).to_bits()).collect();
        assert!(levels.len() <= 65, "{}", levels.len());
    }

    /// The changelog of running sums is exact: every −1 is the record last emitted +1 for its
    /// key (bit for bit, although float sums of the same updates in another order differ), and
    /// the current state agrees with a recomputation, over random additions and retractions of
    /// order-sensitive sums at many times.
    #[test]
    fn running_sums_retract_exactly_what_they_emitted() {
        use differential_dataflow::input::Input;
        use rand::{Rng, SeedableRng};
        use std::sync::{Arc, Mutex};
        use timely::dataflow::operators::Inspect;

        type Log = Vec<((u8, StatSums), Time, isize)>;
        let log: Arc<Mutex<Log>> = Arc::default();
        let sink = Arc::clone(&log);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sums = |rng: &mut rand::rngs::StdRng| {
            let value = -rng.gen_range(0.0..1e3) * 10f64.powi(rng.gen_range(-8..8));
            let c = CotStats { value, weight_mass: rng.gen_range(0.5..2.0), weights: WeightStats::default() };
            StatSums::of(&c, Some(rng.gen_range(0.0..1.0)))
        };
        let mut live: Vec<(u8, StatSums)> = Vec::new();
        let mut plan: Vec<Vec<((u8, StatSums), isize)>> = Vec::new();
        for _ in 0..60 {
            let mut round = Vec::new();
            for _ in 0..rng.gen_range(1..20) {
                if !live.is_empty() && rng.gen_bool(0.4) {
                    let x = live.swap_remove(rng.gen_range(0..live.len()));
                    round.push((x, -1));
                } else {
                    let x = (rng.gen_range(0..3u8), sums(&mut rng));
                    live.push(x);
                    round.push((x, 1));
                }
            }
            plan.push(round);
        }
        let rounds = plan.clone();
        timely::execute_directly(move |worker| {
            let mut input = worker.dataflow::<Time, _, _>(|scope| {
                let (input, coll) = scope.new_collection::<(u8, StatSums), isize>();
                running_sums(coll).inner.inspect(move |x| sink.lock().unwrap().push(*x));
                input
            });
            for (t, round) in rounds.into_iter().enumerate() {
                for (x, d) in round {
                    input.update(x, d);
                }
                input.advance_to(t as Time + 1);
                input.flush();
                worker.step();
            }
        });
        let mut log = log.lock().unwrap().clone();
        log.sort_by_key(|(_, t, d)| (*t, *d));
        let mut emitted: BTreeMap<u8, StatSums> = Default::default();
        for ((k, s), _, d) in log {
            if d < 0 {
                assert_eq!(emitted.remove(&k), Some(s), "key {k}: a retraction of something never emitted");
            } else {
                assert!(emitted.insert(k, s).is_none(), "key {k}: two records at once");
            }
        }
        for k in 0..3u8 {
            let mut want = StatSums::zero();
            for (key, s) in &live {
                if *key == k {
                    want.plus_equals(s);
                }
            }
            match emitted.get(&k) {
                Some(got) => {
                    for (g, w) in got.0.iter().zip(&want.0) {
                        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "key {k}: {g} vs {w}");
                    }
                }
                None => assert!(want.n() < 0.5, "key {k} missing"),
            }
        }
    }

    #[test]
    fn sums_add_and_retract() {
        let c = |v: f64| CotStats { value: v, weight_mass: 1.0, weights: WeightStats::default() };
        let mut s = StatSums::of(&c(-2.0), Some(0.5));
        s.plus_equals(&StatSums::of(&c(-3.0), None));
        let mut neg = StatSums::of(&c(-2.0), Some(0.5));
        neg.negate();
        s.plus_equals(&neg);
        assert_eq!(s, StatSums::of(&c(-3.0), None));
        assert_eq!(s.grounded_fraction(), None);
        // A re-scored chain (−old, +new) is a change although N does not move.
        let mut delta = StatSums::of(&c(-1.0), None);
        delta.plus_equals(&neg);
        assert!(!delta.is_zero() && delta.n() == 0.0);
    }
}
