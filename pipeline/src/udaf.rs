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
use datafusion::prelude::SessionContext;
use ocean_operators::ips::{IntervalConfig, KgIpsStats};

/// What a KG-IPS aggregate returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Output {
    Estimate,
    StdError,
}

/// `kg_ips` or `kg_ips_std_error`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KgIps {
    output: Output,
    signature: Signature,
}

impl KgIps {
    fn new(output: Output) -> Self {
        KgIps { output, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for KgIps {
    fn name(&self) -> &str {
        match self.output {
            Output::Estimate => "kg_ips",
            Output::StdError => "kg_ips_std_error",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types.len() {
            1 => Ok(vec![DataType::Float64]),
            3 => Ok(vec![DataType::Utf8, DataType::Int64, DataType::Float64]),
            n => plan_err!("{} takes (value) or (cot_id, step, contribution), got {n} arguments", self.name()),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(match args.exprs.len() {
            1 => Box::new(ValueAccumulator { output: self.output, n: 0.0, sum: 0.0, sum_sq: 0.0 }),
            _ => Box::new(TokenAccumulator { output: self.output, steps: HashMap::new() }),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let name = |s: &str| format_state_name(args.name, s);
        let list = |s: &str, t: DataType| Arc::new(Field::new_list(name(s), Field::new_list_field(t, true), true));
        Ok(if args.input_fields.len() == 1 {
            vec![
                Arc::new(Field::new(name("n"), DataType::Float64, true)),
                Arc::new(Field::new(name("sum"), DataType::Float64, true)),
                Arc::new(Field::new(name("sum_sq"), DataType::Float64, true)),
            ]
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

/// Mean or standard error from N, Σx, Σx², with the estimator's own statistics (the same
/// formulas as `aggregates.estimate` and `aggregates.std_error`).
fn finish(output: Output, n: f64, sum: f64, sum_sq: f64) -> ScalarValue {
    if n <= 0.0 {
        return ScalarValue::Float64(None);
    }
    let stats = KgIpsStats { n, sum, sum_sq, ..KgIpsStats::default() };
    let summary = stats.summarize(false, &IntervalConfig::default());
    ScalarValue::Float64(Some(match output {
        Output::Estimate => summary.estimate,
        Output::StdError => summary.std_error,
    }))
}

/// `kg_ips(value)`.
#[derive(Debug)]
struct ValueAccumulator {
    output: Output,
    n: f64,
    sum: f64,
    sum_sq: f64,
}

impl Accumulator for ValueAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for x in values[0].as_primitive::<Float64Type>().iter().flatten() {
            self.n += 1.0;
            self.sum += x;
            self.sum_sq += x * x;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(finish(self.output, self.n, self.sum, self.sum_sq))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Float64(Some(self.n)),
            ScalarValue::Float64(Some(self.sum)),
            ScalarValue::Float64(Some(self.sum_sq)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (n, s, s2) = (
            states[0].as_primitive::<Float64Type>(),
            states[1].as_primitive::<Float64Type>(),
            states[2].as_primitive::<Float64Type>(),
        );
        for i in 0..n.len() {
            if n.is_valid(i) {
                self.n += n.value(i);
                self.sum += s.value(i);
                self.sum_sq += s2.value(i);
            }
        }
        Ok(())
    }
}

/// `kg_ips(cot_id, step, contribution)`: per (CoT, step) the sum and count of contributions.
#[derive(Debug)]
struct TokenAccumulator {
    output: Output,
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
        Ok(finish(self.output, n, sum, sum_sq))
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

/// Registers `kg_ips` and `kg_ips_std_error` with a session.
pub fn register_all(ctx: &SessionContext) {
    for output in [Output::Estimate, Output::StdError] {
        ctx.register_udaf(AggregateUDF::from(KgIps::new(output)));
    }
}
