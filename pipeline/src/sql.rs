//! SQL over an output folder: every dataset is a table (or a current-state view) of a DataFusion
//! `SessionContext`.

use std::path::Path;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use ocean_schemas::{Aggregate, CotScore, Dataset, Generation, Mention, Reject, Step, TokenScore, Tombstone, DATASETS};

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

/// The schema of dataset `name`.
fn schema_of(name: &str) -> Option<SchemaRef> {
    Some(match name {
        n if n == Generation::NAME => Generation::schema(),
        n if n == Mention::NAME => Mention::schema(),
        n if n == Step::NAME => Step::schema(),
        n if n == TokenScore::NAME => TokenScore::schema(),
        n if n == CotScore::NAME => CotScore::schema(),
        n if n == Aggregate::NAME => Aggregate::schema(),
        n if n == Reject::NAME => Reject::schema(),
        n if n == Tombstone::NAME => Tombstone::schema(),
        _ => return None,
    })
}

/// Datasets whose rows a tombstone can replace: registered raw as `<name>_log`, and under their
/// name as the current state.
const VERSIONED: [&str; 5] = [Generation::NAME, Mention::NAME, Step::NAME, TokenScore::NAME, CotScore::NAME];

/// The current-state view of a versioned dataset (see schemas/README.md, `tombstones`).
pub fn current_view_sql(name: &str) -> String {
    let which = match name {
        n if n == Generation::NAME => " and t.retracted",
        // A re-scoring after a change of triples only leaves the non-entity token rows standing.
        n if n == TokenScore::NAME => " and (r.is_entity or not coalesce(t.entity_tokens_only, false))",
        _ => "",
    };
    format!(
        "create view {name} as select r.* from {name}_log r where not exists \
         (select 1 from tombstones t where t.cot_id = r.cot_id and t.epoch > r.epoch{which})"
    )
}

fn has_parts(dir: &Path) -> bool {
    fn walk(dir: &Path) -> bool {
        std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                p.extension().is_some_and(|x| x == "parquet")
            }
        })
    }
    walk(dir)
}

/// A session with every dataset found under `out` registered (hive partition column `epoch`):
/// versioned datasets as their current state under their name and raw as `<name>_log`;
/// `aggregates` (the changelog), its view `aggregates_current`, `rejects` and `tombstones`;
/// and the KG-IPS aggregate functions of [`crate::udaf`]. A dataset with no part yet is an
/// empty table.
pub async fn session(out: &Path) -> Result<SessionContext> {
    // Strings as plain Utf8 (not Utf8View), so query results have the datasets' own types.
    let config = SessionConfig::new().set_bool("datafusion.execution.parquet.schema_force_view_types", false);
    let ctx = SessionContext::new_with_config(config);
    crate::udaf::register_all(&ctx);
    let mut found = 0;
    for name in DATASETS {
        let dir = out.join(name);
        found += usize::from(dir.is_dir());
        let table = if VERSIONED.contains(&name) { format!("{name}_log") } else { name.to_owned() };
        let schema = schema_of(name).expect("every dataset has a schema");
        if has_parts(&dir) {
            let options = ParquetReadOptions::default()
                .schema(&schema)
                .table_partition_cols(vec![("epoch".to_owned(), DataType::UInt64)]);
            ctx.register_parquet(&table, &format!("{}/", dir.display()), options).await?;
        } else {
            let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new("epoch", DataType::UInt64, false)));
            let empty = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
            ctx.register_table(&table, Arc::new(empty))?;
        }
    }
    if found == 0 {
        return Err(Error::Config(format!(
            "{} holds no Ocean datasets (run `ocean run --out {}` first)",
            out.display(),
            out.display()
        )));
    }
    for name in VERSIONED {
        ctx.sql(&current_view_sql(name)).await?;
    }
    ctx.sql(&aggregates_current_sql()).await?;
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
