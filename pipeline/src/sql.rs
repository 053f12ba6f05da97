//! SQL over an output folder: every dataset is a table of a DataFusion `SessionContext`.

use std::path::Path;

use arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use ocean_schemas::{Aggregate, Dataset, DATASETS};

use crate::error::{Error, Result};

/// The view `aggregates_current`: the current state of the `aggregates` changelog, the rows
/// whose diffs sum to a positive count (every column but `time` and `diff`, which become the
/// latest `time` and the net `count`).
pub fn aggregates_current_sql() -> String {
    let columns: Vec<String> =
        Aggregate::fields().iter().map(|f| f.name().clone()).filter(|name| name != "time" && name != "diff").collect();
    let columns = columns.join(", ");
    format!(
        "create view aggregates_current as select {columns}, max(time) as time, sum(diff) as count \
         from aggregates group by {columns} having sum(diff) > 0"
    )
}

/// A session with every dataset found under `out` registered as a table of its name, the view
/// `aggregates_current` (the current state of the `aggregates` changelog) and the KG-IPS
/// aggregate functions of [`crate::udaf`].
pub async fn session(out: &Path) -> Result<SessionContext> {
    // Strings as plain Utf8 (not Utf8View), so query results have the datasets' own types.
    let config = SessionConfig::new().set_bool("datafusion.execution.parquet.schema_force_view_types", false);
    let ctx = SessionContext::new_with_config(config);
    crate::udaf::register_all(&ctx);
    let mut found = 0;
    for name in DATASETS {
        let dir = out.join(name);
        if dir.is_dir() {
            let path = format!("{}/", dir.display());
            ctx.register_parquet(name, &path, ParquetReadOptions::default()).await?;
            found += 1;
        }
    }
    if out.join("aggregates").is_dir() {
        ctx.sql(&aggregates_current_sql()).await?;
    }
    if found == 0 {
        return Err(Error::Config(format!(
            "{} holds no Ocean datasets (run `ocean run --out {}` first)",
            out.display(),
            out.display()
        )));
    }
    Ok(ctx)
}

/// Runs one SQL statement over the datasets under `out`.
pub async fn query(out: &Path, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = session(out).await?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// [`query`] on a runtime of its own, for callers that are not async.
pub fn query_blocking(out: &Path, sql: &str) -> Result<Vec<RecordBatch>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(out, e))?;
    rt.block_on(query(out, sql))
}

/// The batches as a text table.
pub fn format_table(batches: &[RecordBatch]) -> Result<String> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}
