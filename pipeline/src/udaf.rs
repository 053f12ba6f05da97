//! DataFusion aggregate functions for KG-IPS, so analysts get Ocean's estimate by any grouping.
//!
//! * `kg_ips(value)` over `cot_scores`: V̂ = the mean of the per-CoT terms (whatever estimator
//!   variant wrote them, see `cot_scores.estimator`).
//! * `kg_ips(cot_id, step, contribution)` over `token_scores`: Eq. 3 from the tokens, i.e. the
//!   mean over chains of thought of the mean over steps of the mean contribution per step. Every
//!   token of a chain must fall in the same group (group by columns of `cot_scores` joined on
//!   `cot_id`, or by `cot_id` itself).
//! * `kg_ips_std_error(…)`, same arguments: the sample standard deviation of the per-CoT terms
//!   over √N, as in `aggregates.std_error`.
//! * `kg_ips_ci_low(…)` / `kg_ips_ci_high(…)`, same arguments plus an optional confidence level
//!   (a literal, default 0.95): the normal interval V̂ ± z·SE.
//! * Comparisons of two arms, unpaired: `kg_ips_diff(value, in_a)` = V̂_A − V̂_B, where `in_a`
//!   (boolean) puts the row's chain in arm A (true) or arm B (false, null rows skipped);
//!   `kg_ips_diff_std_error(value, in_a)` = √(SE_A² + SE_B²); `kg_ips_diff_ci_low` /
//!   `kg_ips_diff_ci_high(value, in_a [, confidence])` its normal interval. Paired comparisons
//!   are `kg_ips_ci_low`/`_high` over per-question differences (README, "Comparisons").
//!
//! The intervals here are the normal ones whatever the weights: whether they can be trusted is
//! `aggregates.reliable`, and `ocean compare` picks the conservative interval when an arm is not.
//!
//! Nulls are skipped. Both take their state through DataFusion's partial aggregation: sums for
//! the one-argument form, per-(CoT, step) sums and counts for the token form.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;
use ocean_operators::ips::stats::normal_quantile;
use ocean_operators::ips::{IntervalConfig, KgIpsStats, Summary};

/// What a KG-IPS aggregate returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Estimate,
    StdError,
    CiLow,
    CiHigh,
}

impl Output {
    const ALL: [Output; 4] = [Output::Estimate, Output::StdError, Output::CiLow, Output::CiHigh];

    fn is_interval(self) -> bool {
        matches!(self, Output::CiLow | Output::CiHigh)
    }
}

/// The form of a KG-IPS aggregate's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Form {
    /// (value) or (cot_id, step, contribution), one arm.
    OneArm,
    /// (value, in_a): the difference of two arms.
    Difference,
}

/// `kg_ips`, `kg_ips_std_error`, `kg_ips_ci_low`, `kg_ips_ci_high` and their `kg_ips_diff…`
/// counterparts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KgIps {
    output: Output,
    form: Form,
    signature: Signature,
}

impl KgIps {
    fn new(output: Output, form: Form) -> Self {
        KgIps { output, form, signature: Signature::user_defined(Volatility::Immutable) }
    }

    /// Arguments before the optional confidence level: 1 (value), 3 (token form) or 2 (diff).
    fn data_args(&self, n: usize) -> Option<usize> {
        let optional = usize::from(self.output.is_interval());
        let forms: &[usize] = match self.form {
            Form::OneArm => &[1, 3],
            Form::Difference => &[2],
        };
        forms.iter().copied().find(|k| n == *k || n == k + optional)
    }
}

/// The confidence level of an interval aggregate: its last argument when there is one (a
/// literal in (0, 1)), else 0.95.
fn confidence_of(args: &AccumulatorArgs, data_args: usize, name: &str) -> Result<f64> {
    let Some(expr) = args.exprs.get(data_args) else {
        return Ok(0.95);
    };
    match expr.downcast_ref::<Literal>().map(|l| l.value()) {
        Some(&ScalarValue::Float64(Some(c))) if c > 0.0 && c < 1.0 => Ok(c),
        _ => plan_err!("{name}: the confidence level must be a literal in (0, 1), e.g. 0.95"),
    }
}

impl AggregateUDFImpl for KgIps {
    fn name(&self) -> &str {
        match (self.form, self.output) {
            (Form::OneArm, Output::Estimate) => "kg_ips",
            (Form::OneArm, Output::StdError) => "kg_ips_std_error",
            (Form::OneArm, Output::CiLow) => "kg_ips_ci_low",
            (Form::OneArm, Output::CiHigh) => "kg_ips_ci_high",
            (Form::Difference, Output::Estimate) => "kg_ips_diff",
            (Form::Difference, Output::StdError) => "kg_ips_diff_std_error",
            (Form::Difference, Output::CiLow) => "kg_ips_diff_ci_low",
            (Form::Difference, Output::CiHigh) => "kg_ips_diff_ci_high",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let n = arg_types.len();
        let mut types = match (self.form, self.data_args(n)) {
            (Form::OneArm, Some(1)) => vec![DataType::Float64],
            (Form::OneArm, Some(_)) => vec![DataType::Utf8, DataType::Int64, DataType::Float64],
            (Form::Difference, Some(_)) => vec![DataType::Float64, DataType::Boolean],
            (form, None) => {
                let args = match form {
                    Form::OneArm => "(value) or (cot_id, step, contribution)",
                    Form::Difference => "(value, in_a)",
                };
                let confidence = if self.output.is_interval() { ", optionally with a confidence level" } else { "" };
                return plan_err!("{} takes {args}{confidence}, got {n} arguments", self.name());
            }
        };
        if types.len() < n {
            types.push(DataType::Float64);
        }
        Ok(types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let data_args = self.data_args(args.exprs.len()).unwrap_or(1);
        let confidence = confidence_of(&args, data_args, self.name())?;
        let finish = Finish { output: self.output, confidence };
        Ok(match (self.form, data_args) {
            (Form::OneArm, 1) => Box::new(SumsAccumulator::new(finish, false)),
            (Form::OneArm, _) => Box::new(TokenAccumulator { finish, steps: HashMap::new() }),
            (Form::Difference, _) => Box::new(SumsAccumulator::new(finish, true)),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let name = |s: &str| format_state_name(args.name, s);
        let list = |s: &str, t: DataType| Arc::new(Field::new_list(name(s), Field::new_list_field(t, true), true));
        let floats = |names: &[&str]| -> Vec<FieldRef> {
            names.iter().map(|s| Arc::new(Field::new(name(s), DataType::Float64, true))).collect()
        };
        let data_args = self.data_args(args.input_fields.len()).unwrap_or(1);
        Ok(if self.form == Form::Difference {
            floats(&["n_a", "sum_a", "sum_sq_a", "n_b", "sum_b", "sum_sq_b"])
        } else if data_args == 1 {
            floats(&["n", "sum", "sum_sq"])
        } else {
            vec![
                list("cot_ids", DataType::Utf8),
                list("steps", DataType::Int64),
                list("sums", DataType::Float64),
                list("counts", DataType::Int64),
            ]
        })
    }
}

/// What an accumulator returns from its sums.
#[derive(Debug, Clone, Copy)]
struct Finish {
    output: Output,
    confidence: f64,
}

impl Finish {
    /// The estimator's own summary of N, Σx, Σx² (the same formulas as `aggregates.estimate`
    /// and `aggregates.std_error`), or none for N = 0.
    fn summary(&self, [n, sum, sum_sq]: [f64; 3]) -> Option<Summary> {
        let stats = KgIpsStats { n, sum, sum_sq, ..KgIpsStats::default() };
        let config = IntervalConfig { confidence: self.confidence, ..IntervalConfig::default() };
        (n > 0.0).then(|| stats.summarize(false, &config))
    }

    /// One arm's estimate, standard error or normal interval end.
    fn one(&self, sums: [f64; 3]) -> ScalarValue {
        ScalarValue::Float64(self.summary(sums).map(|s| match self.output {
            Output::Estimate => s.estimate,
            Output::StdError => s.std_error,
            Output::CiLow => s.normal.0,
            Output::CiHigh => s.normal.1,
        }))
    }

    /// The difference of two arms: V̂_A − V̂_B, √(SE_A² + SE_B²) or its normal interval's end.
    fn difference(&self, a: [f64; 3], b: [f64; 3]) -> ScalarValue {
        let (Some(a), Some(b)) = (self.summary(a), self.summary(b)) else {
            return ScalarValue::Float64(None);
        };
        let (d, se) = (a.estimate - b.estimate, (a.std_error.powi(2) + b.std_error.powi(2)).sqrt());
        let z = normal_quantile(0.5 + self.confidence / 2.0);
        ScalarValue::Float64(Some(match self.output {
            Output::Estimate => d,
            Output::StdError => se,
            Output::CiLow => d - z * se,
            Output::CiHigh => d + z * se,
        }))
    }
}

/// Adds the rows of state columns of Float64 sums to `sums`, column by column.
fn merge_sums(sums: &mut [f64], states: &[ArrayRef]) {
    let columns: Vec<_> = states.iter().map(|s| s.as_primitive::<Float64Type>()).collect();
    for i in 0..columns[0].len() {
        if columns[0].is_valid(i) {
            for (sum, column) in sums.iter_mut().zip(&columns) {
                *sum += column.value(i);
            }
        }
    }
}

/// `kg_ips(value)` and its siblings (N, Σx, Σx²), and `kg_ips_diff(value, in_a)` and its
/// siblings (the same sums for arm A, then for arm B).
#[derive(Debug)]
struct SumsAccumulator {
    finish: Finish,
    two_arms: bool,
    sums: [f64; 6],
}

impl SumsAccumulator {
    fn new(finish: Finish, two_arms: bool) -> Self {
        SumsAccumulator { finish, two_arms, sums: [0.0; 6] }
    }

    /// The sums in use: 3 for one arm, 6 for two.
    fn used(&mut self) -> &mut [f64] {
        let n = if self.two_arms { 6 } else { 3 };
        &mut self.sums[..n]
    }
}

impl Accumulator for SumsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let x = values[0].as_primitive::<Float64Type>();
        let in_a = self.two_arms.then(|| values[1].as_boolean());
        for i in 0..x.len() {
            let at = match in_a {
                None => 0,
                Some(a) if a.is_valid(i) => {
                    if a.value(i) {
                        0
                    } else {
                        3
                    }
                }
                Some(_) => continue,
            };
            if x.is_valid(i) {
                let v = x.value(i);
                self.sums[at] += 1.0;
                self.sums[at + 1] += v;
                self.sums[at + 2] += v * v;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let [na, sa, qa, nb, sb, qb] = self.sums;
        Ok(if self.two_arms {
            self.finish.difference([na, sa, qa], [nb, sb, qb])
        } else {
            self.finish.one([na, sa, qa])
        })
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.used().iter().map(|s| ScalarValue::Float64(Some(*s))).collect())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        merge_sums(self.used(), states);
        Ok(())
    }
}

/// `kg_ips(cot_id, step, contribution)`: per (CoT, step) the sum and count of contributions.
#[derive(Debug)]
struct TokenAccumulator {
    finish: Finish,
    steps: HashMap<String, BTreeMap<i64, (f64, i64)>>,
}

impl TokenAccumulator {
    fn add(&mut self, cot: &str, step: i64, sum: f64, count: i64) {
        let entry = match self.steps.get_mut(cot) {
            Some(steps) => steps.entry(step).or_insert((0.0, 0)),
            None => self.steps.entry(cot.to_owned()).or_default().entry(step).or_insert((0.0, 0)),
        };
        entry.0 += sum;
        entry.1 += count;
    }
}

impl Accumulator for TokenAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (cots, steps, contributions) = (
            values[0].as_string::<i32>(),
            values[1].as_primitive::<Int64Type>(),
            values[2].as_primitive::<Float64Type>(),
        );
        for i in 0..cots.len() {
            if cots.is_valid(i) && steps.is_valid(i) && contributions.is_valid(i) {
                self.add(cots.value(i), steps.value(i), contributions.value(i), 1);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (mut n, mut sum, mut sum_sq) = (0.0, 0.0, 0.0);
        for steps in self.steps.values() {
            let value = steps.values().map(|(s, c)| s / *c as f64).sum::<f64>() / steps.len() as f64;
            n += 1.0;
            sum += value;
            sum_sq += value * value;
        }
        Ok(self.finish.one([n, sum, sum_sq]))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.steps.iter().map(|(k, v)| k.capacity() + 48 + v.len() * 40).sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut cots = Vec::new();
        let mut steps = Vec::new();
        let mut sums = Vec::new();
        let mut counts = Vec::new();
        for (cot, by_step) in &self.steps {
            for (step, (sum, count)) in by_step {
                cots.push(ScalarValue::Utf8(Some(cot.clone())));
                steps.push(ScalarValue::Int64(Some(*step)));
                sums.push(ScalarValue::Float64(Some(*sum)));
                counts.push(ScalarValue::Int64(Some(*count)));
            }
        }
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(&cots, &DataType::Utf8)),
            ScalarValue::List(ScalarValue::new_list_nullable(&steps, &DataType::Int64)),
            ScalarValue::List(ScalarValue::new_list_nullable(&sums, &DataType::Float64)),
            ScalarValue::List(ScalarValue::new_list_nullable(&counts, &DataType::Int64)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: Vec<&ListArray> = states.iter().map(|s| s.as_list::<i32>()).collect();
        if lists.len() != 4 {
            return exec_err!("kg_ips: expected 4 state columns, got {}", lists.len());
        }
        for row in 0..lists[0].len() {
            if lists[0].is_null(row) {
                continue;
            }
            let (c, s, x, n) = (lists[0].value(row), lists[1].value(row), lists[2].value(row), lists[3].value(row));
            let (c, s, x, n) = (
                c.as_string::<i32>(),
                s.as_primitive::<Int64Type>(),
                x.as_primitive::<Float64Type>(),
                n.as_primitive::<Int64Type>(),
            );
            for i in 0..c.len() {
                self.add(c.value(i), s.value(i), x.value(i), n.value(i));
            }
        }
        Ok(())
    }
}

/// Registers the KG-IPS aggregate functions (see the module docs) with a session.
pub fn register_all(ctx: &SessionContext) {
    for form in [Form::OneArm, Form::Difference] {
        for output in Output::ALL {
            ctx.register_udaf(AggregateUDF::from(KgIps::new(output, form)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array};
    use arrow::datatypes::Schema;
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;

    /// `select …` over a table `t(value, in_a)` split into two partitions (so partial states
    /// are merged), one Float64 per expression.
    fn query(rows: &[(f64, bool)], select: &str) -> Result<Vec<Option<f64>>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("value", DataType::Float64, false),
            Field::new("in_a", DataType::Boolean, false),
        ]));
        let batch = |rows: &[(f64, bool)]| {
            let values = Float64Array::from_iter_values(rows.iter().map(|r| r.0));
            let arms = BooleanArray::from_iter(rows.iter().map(|r| Some(r.1)));
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values), Arc::new(arms)]).unwrap()
        };
        let (left, right) = rows.split_at(rows.len() / 2);
        let table = MemTable::try_new(Arc::clone(&schema), vec![vec![batch(left)], vec![batch(right)]])?;
        let ctx = SessionContext::new();
        register_all(&ctx);
        ctx.register_table("t", Arc::new(table))?;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let batches = rt.block_on(async { ctx.sql(&format!("select {select} from t")).await?.collect().await })?;
        let b = &batches[0];
        Ok((0..b.num_columns()).map(|i| b.column(i).as_primitive::<Float64Type>().iter().next().flatten()).collect())
    }

    #[test]
    fn intervals_and_differences_by_hand() {
        // A = {−1, −3, −2}, B = {−4, −6}: V̂_A = −2, s²_A = 1, V̂_B = −5, s²_B = 2.
        let rows = [(-1.0, true), (-4.0, false), (-3.0, true), (-6.0, false), (-2.0, true)];
        let got = query(
            &rows,
            "kg_ips(value), kg_ips_ci_low(value), kg_ips_ci_high(value, 0.9), kg_ips_diff(value, in_a), \
             kg_ips_diff_std_error(value, in_a), kg_ips_diff_ci_low(value, in_a), kg_ips_diff_ci_high(value, in_a, 0.5)",
        )
        .unwrap();
        let all: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let mean = all.iter().sum::<f64>() / 5.0;
        let se = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0 / 5.0).sqrt();
        let (se_d, z95, z90, z50) =
            ((1.0f64 / 3.0 + 2.0 / 2.0).sqrt(), normal_quantile(0.975), normal_quantile(0.95), normal_quantile(0.75));
        let want = [mean, mean - z95 * se, mean + z90 * se, 3.0, se_d, 3.0 - z95 * se_d, 3.0 + z50 * se_d];
        for (g, w) in got.iter().zip(want) {
            assert!((g.unwrap() - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        // An empty arm gives null; a confidence that is not a literal in (0, 1) is an error.
        let one_arm = query(&[(-1.0, true), (-2.0, true)], "kg_ips_diff(value, in_a)").unwrap();
        assert_eq!(one_arm, vec![None]);
        assert!(query(&rows, "kg_ips_ci_low(value, 1.5)").is_err());
        assert!(query(&rows, "kg_ips_ci_low(value, value)").is_err());
        assert!(query(&rows, "kg_ips_diff(value)").is_err());
        assert!(query(&rows, "kg_ips_std_error(value, 0.9)").is_err());
    }
}
