//! Shared harness of Ocean's end-to-end tests: paths to the embedded data, runs, SQL helpers.

use std::path::{Path, PathBuf};

use anyhow::Result;
use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use ocean_pipeline::{RunConfig, RunSummary};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// A run configuration over the embedded default data, writing to `out`.
pub fn default_config(out: &Path) -> RunConfig {
    let mut config = RunConfig::default();
    config.source.logs = vec![repo_root().join("data/logs")];
    config.kg.dir = repo_root().join("data/kg");
    config.sink.out = out.to_owned();
    config.runtime.workers = 2;
    config
}

/// Runs the pipeline.
pub fn run(config: &RunConfig) -> Result<RunSummary> {
    Ok(ocean_pipeline::run(config)?)
}

/// Runs a query over an output folder.
pub fn sql(out: &Path, query: &str) -> Result<Vec<RecordBatch>> {
    Ok(ocean_pipeline::sql::query_blocking(out, query)?)
}

/// The single number a query returns, as f64 (from any int or float column type).
pub fn scalar(out: &Path, query: &str) -> Result<f64> {
    let batches = sql(out, query)?;
    let batch = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| anyhow::anyhow!("no rows: {query}"))?;
    anyhow::ensure!(batch.num_rows() == 1 && batch.num_columns() == 1, "not a scalar: {query}");
    number(batch.column(0).as_ref(), 0).ok_or_else(|| anyhow::anyhow!("null result: {query}"))
}

/// Row `i` of a numeric column as f64 (None when null).
pub fn number(col: &dyn Array, i: usize) -> Option<f64> {
    if col.is_null(i) {
        return None;
    }
    let casted = arrow::compute::cast(col, &arrow::datatypes::DataType::Float64).ok()?;
    Some(casted.as_primitive::<Float64Type>().value(i))
}

/// All values of the first column as f64.
pub fn column(out: &Path, query: &str) -> Result<Vec<Option<f64>>> {
    let mut v = Vec::new();
    for b in sql(out, query)? {
        for i in 0..b.num_rows() {
            v.push(number(b.column(0).as_ref(), i));
        }
    }
    Ok(v)
}

/// Number of rows a query returns.
pub fn rows(out: &Path, query: &str) -> Result<usize> {
    Ok(sql(out, query)?.iter().map(RecordBatch::num_rows).sum())
}

/// Every row of a query whose columns are all numeric or boolean, as f64 (true = 1, null = None).
pub fn numeric_rows(out: &Path, query: &str) -> Result<Vec<Vec<Option<f64>>>> {
    let mut table = Vec::new();
    for b in sql(out, query)? {
        let columns: Vec<arrow::array::ArrayRef> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Float64))
            .collect::<std::result::Result<_, _>>()?;
        for i in 0..b.num_rows() {
            table.push(
                columns.iter().map(|c| (!c.is_null(i)).then(|| c.as_primitive::<Float64Type>().value(i))).collect(),
            );
        }
    }
    Ok(table)
}
