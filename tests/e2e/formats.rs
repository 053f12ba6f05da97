//! Parquet and Arrow IPC inputs in the generations schema score exactly like the JSONL they
//! came from.

use arrow::datatypes::Float64Type;
use ocean_schemas::{Dataset, Generation};
use ocean_tests::{default_config, run, sql};

fn values(out: &std::path::Path) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    for b in sql(out, "select cot_id, value from cot_scores order by cot_id").unwrap() {
        let ids = arrow::array::AsArray::as_string::<i32>(b.column(0));
        let vals = arrow::array::AsArray::as_primitive::<Float64Type>(b.column(1));
        for i in 0..b.num_rows() {
            v.push((ids.value(i).to_owned(), vals.value(i)));
        }
    }
    v
}

#[test]
fn parquet_and_ipc_inputs_match_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let mut config = default_config(&first);
    config.runtime.workers = 1;
    run(&config).unwrap();
    let baseline = values(&first);

    // Read the written generations back and write them as an Arrow IPC file.
    let file = std::fs::File::open(first.join("generations/epoch=0/part-00000.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for b in reader {
        rows.extend(Generation::from_batch(&b.unwrap()).unwrap());
    }
    let ipc_dir = dir.path().join("ipc");
    std::fs::create_dir(&ipc_dir).unwrap();
    let batch = Generation::to_batch(&rows).unwrap();
    let f = std::fs::File::create(ipc_dir.join("gens.arrow")).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(f, &Generation::schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();

    for (name, logs) in [("from-parquet", first.join("generations")), ("from-ipc", ipc_dir)] {
        let out = dir.path().join(name);
        let mut config = default_config(&out);
        config.source.logs = vec![logs];
        let summary = run(&config).unwrap();
        assert_eq!(summary.rejects, 0, "{name}: {:?}", summary.rejects_by_reason);
        assert_eq!(values(&out), baseline, "{name}");
    }
}
