//! The datasets Ocean writes (DESIGN.md §4): one typed row and one Arrow schema each.

mod aggregate;
mod cot_score;
mod generation;
mod mention;
mod reject;
mod step;
mod token_score;
mod tombstone;

pub use aggregate::Aggregate;
pub use cot_score::CotScore;
pub use generation::{Generation, Token};
pub use mention::Mention;
pub use reject::{Reject, RejectReason, RAW_LIMIT};
pub use step::Step;
pub use token_score::TokenScore;
pub use tombstone::Tombstone;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The names of all datasets, in the order a run writes them.
pub const DATASETS: [&str; 8] = [
    Generation::NAME,
    Mention::NAME,
    Step::NAME,
    TokenScore::NAME,
    CotScore::NAME,
    Aggregate::NAME,
    Reject::NAME,
    Tombstone::NAME,
];

/// A dataset: a row type with a documented Arrow schema.
///
/// Rows convert to and from Arrow record batches by their serde derive, checked against
/// [`Dataset::fields`]; every field carries its documentation as the Arrow field metadata key
/// `doc`, so it travels into every Parquet file.
pub trait Dataset: Serialize + DeserializeOwned + Sized {
    /// The dataset's name: its folder under an output directory and its SQL table name.
    const NAME: &'static str;

    /// The Arrow fields, in column order.
    fn fields() -> Vec<FieldRef>;

    /// The Arrow schema.
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(Self::fields()))
    }

    /// Rows → one record batch (an empty batch for no rows). By default through serde
    /// ([`serde_batch`]); the datasets of one row per token or per chain build their columns
    /// directly (the same batch, several times faster: a run writes ~100 token rows per chain).
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        serde_batch(rows)
    }

    /// Columns whose values are close to random bytes (full-precision log-probabilities): sinks
    /// store them uncompressed, since a codec saves ~5 % of their size for much of its CPU time.
    fn incompressible() -> &'static [&'static str] {
        &[]
    }

    /// One record batch → rows.
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        serde_arrow::from_record_batch(batch).map_err(|source| Error::Rows { dataset: Self::NAME, source })
    }
}

/// Rows → one record batch through serde_arrow, with the documented schema.
pub fn serde_batch<D: Dataset>(rows: &[D]) -> Result<RecordBatch> {
    if rows.is_empty() {
        return Ok(RecordBatch::new_empty(D::schema()));
    }
    let batch =
        serde_arrow::to_record_batch(&D::fields(), &rows).map_err(|source| Error::Rows { dataset: D::NAME, source })?;
    // serde_arrow drops field metadata; put the documented schema back.
    Ok(batch.with_schema(D::schema())?)
}

/// Arrow columns from rows, one field at a time, for the datasets that build their batches
/// directly (see [`Dataset::to_batch`]).
pub(crate) mod columns {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array};

    use crate::F64;

    pub fn strings<R>(rows: &[R], f: impl Fn(&R) -> &str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    }

    pub fn opt_strings<R>(rows: &[R], f: impl Fn(&R) -> Option<&str>) -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    }

    pub fn u32s<R>(rows: &[R], f: impl Fn(&R) -> u32) -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
    }

    pub fn opt_u32s<R>(rows: &[R], f: impl Fn(&R) -> Option<u32>) -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<UInt32Array>())
    }

    pub fn f64s<R>(rows: &[R], f: impl Fn(&R) -> F64) -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| f(r).0)))
    }

    pub fn opt_f64s<R>(rows: &[R], f: impl Fn(&R) -> Option<F64>) -> ArrayRef {
        Arc::new(rows.iter().map(|r| f(r).map(|x| x.0)).collect::<Float64Array>())
    }

    /// The item field of a list column (items are never null).
    fn item(data_type: arrow::datatypes::DataType) -> arrow::datatypes::FieldRef {
        Arc::new(arrow::datatypes::Field::new("item", data_type, false))
    }

    /// Arrow type of a list of strings (no nulls).
    pub fn string_list() -> arrow::datatypes::DataType {
        arrow::datatypes::DataType::List(item(arrow::datatypes::DataType::Utf8))
    }

    pub fn string_lists<R>(rows: &[R], f: impl Fn(&R) -> &[String]) -> ArrayRef {
        let mut builder = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new())
            .with_field(item(arrow::datatypes::DataType::Utf8));
        for r in rows {
            for s in f(r) {
                builder.values().append_value(s);
            }
            builder.append(true);
        }
        Arc::new(builder.finish())
    }

    /// Arrow type of a list of u32s (no nulls).
    pub fn u32_list() -> arrow::datatypes::DataType {
        arrow::datatypes::DataType::List(item(arrow::datatypes::DataType::UInt32))
    }

    pub fn u32_lists<R>(rows: &[R], f: impl Fn(&R) -> &[u32]) -> ArrayRef {
        let mut builder = arrow::array::ListBuilder::new(arrow::array::UInt32Builder::new())
            .with_field(item(arrow::datatypes::DataType::UInt32));
        for r in rows {
            builder.values().append_slice(f(r));
            builder.append(true);
        }
        Arc::new(builder.finish())
    }

    pub fn bools<R>(rows: &[R], f: impl Fn(&R) -> bool) -> ArrayRef {
        Arc::new(BooleanArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    }
}

/// A documented Arrow field.
pub(crate) fn field(name: &str, data_type: DataType, nullable: bool, doc: &str) -> FieldRef {
    let meta = HashMap::from([("doc".to_owned(), doc.to_owned())]);
    Arc::new(Field::new(name, data_type, nullable).with_metadata(meta))
}

/// Arrow type of every event time: microseconds since the Unix epoch, UTC.
pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::F64;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    /// rows → RecordBatch → Parquet → RecordBatch → rows, and the schema survives.
    fn round_trip<D: Dataset + PartialEq + std::fmt::Debug>(rows: Vec<D>) {
        let batch = D::to_batch(&rows).unwrap();
        assert_eq!(batch.schema(), D::schema());
        let mut buf = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buf, D::schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes_of(buf)).unwrap();
        assert_eq!(builder.schema().fields(), D::schema().fields(), "{}", D::NAME);
        let mut back = Vec::new();
        for batch in builder.build().unwrap() {
            back.extend(D::from_batch(&batch.unwrap()).unwrap());
        }
        assert_eq!(back, rows, "{}", D::NAME);
    }

    /// The columnar `to_batch` of a dataset builds the batch serde would.
    fn same_as_serde<D: Dataset>(rows: &[D]) {
        assert_eq!(D::to_batch(rows).unwrap(), serde_batch(rows).unwrap(), "{}", D::NAME);
        assert_eq!(D::to_batch(&rows[..0]).unwrap(), serde_batch(&rows[..0]).unwrap(), "{}", D::NAME);
    }

    #[test]
    fn columnar_batches_equal_serde_batches() {
        same_as_serde(&(0..7).map(generation).collect::<Vec<_>>());
        let tokens: Vec<TokenScore> = (0..9u32)
            .map(|i| TokenScore {
                cot_id: format!("c{}", i / 4).into(),
                step: i / 3,
                token_index: i,
                token: if i % 2 == 0 { " é".into() } else { "Lima".into() },
                char_start: i,
                char_end: i + 1,
                behavior_logprob: F64(-0.5 * f64::from(i)),
                kg_logprob: (i % 3 == 0).then_some(F64(-2.0)),
                target_logprob: (i % 2 == 1).then_some(F64(-1.0)),
                is_entity: i % 3 == 0,
                entity_id: (i % 3 == 0).then(|| format!("Q{i}")),
                log_lambda: F64(-0.1),
                log_weight: F64(0.2),
                weight: F64(1.2),
                contribution: F64(-0.6),
            })
            .collect();
        same_as_serde(&tokens);
        let mentions: Vec<Mention> = (0..5u32)
            .map(|i| Mention {
                cot_id: format!("c{}", i / 2),
                part: if i == 0 { "question".into() } else { "cot".into() },
                mention_index: i,
                entity_id: format!("Q{i}"),
                alias: "são paulo".into(),
                candidates: if i == 2 { vec!["Q2".into(), "Q7".into()] } else { Vec::new() },
                candidate_scores: if i == 2 { vec![2, 0] } else { Vec::new() },
                surface: "São Paulo".into(),
                char_start: i,
                char_end: i + 9,
                token_start: (i > 0).then_some(i),
                token_end: (i > 0).then_some(i + 2),
                step: (i > 0).then_some(i / 2),
                n_context: i,
                context_size: 3 * i,
                in_reach: i % 2 == 0,
                remention: i == 3,
                supported: i % 4 == 0,
                kg_logprob: (i > 0).then_some(F64(-1.5)),
            })
            .collect();
        same_as_serde(&mentions);
        let steps: Vec<Step> = (0..4u32)
            .map(|i| Step {
                cot_id: format!("c{}", i / 2),
                step: i,
                char_start: 4 * i,
                char_end: 4 * i + 4,
                token_start: i,
                token_end: i + 1,
                n_entity_tokens: i % 2,
                n_mentions: i,
                n_supported: i / 2,
                n_rementions: i % 2,
                n_pairs: i,
                n_connected: i / 2,
                n_unsearched: u32::from(i == 3),
                paths: (0..i / 2).map(|k| format!("Q{k} P17 Q{}", k + 1)).collect(),
                unconnected: if i == 2 { vec!["Q1 Q9".into()] } else { Vec::new() },
                value: F64(-0.25 * f64::from(i)),
                text: "Lima é".into(),
            })
            .collect();
        same_as_serde(&steps);
    }

    fn bytes_of(buf: Vec<u8>) -> bytes::Bytes {
        bytes::Bytes::from(buf)
    }

    fn generation(i: u32) -> Generation {
        Generation {
            cot_id: format!("chatcmpl-{i}"),
            source: "logs.jsonl".into(),
            line: u64::from(i) + 1,
            format: "openai".into(),
            model: "m".into(),
            model_version: "v1".into(),
            event_time: 1_700_000_000_000_000 + i64::from(i),
            question: i.is_multiple_of(2).then(|| "What is the capital of Peru?".into()),
            content: "Lima é".into(),
            tokens: vec![
                Token { text: "Lima".into(), byte_len: 4, logprob: F64(-0.25), target_logprob: None },
                Token { text: " é".into(), byte_len: 3, logprob: F64(-1.5), target_logprob: Some(F64(-2.0)) },
            ],
            metadata: Some("{\"k\":1}".into()),
            messages: i.is_multiple_of(3).then(|| r#"[{"role":"user","content":"Capital?"}]"#.into()),
        }
    }

    #[test]
    fn generations_round_trip() {
        round_trip((0..5).map(generation).collect::<Vec<_>>());
    }

    #[test]
    fn every_dataset_round_trips() {
        round_trip(vec![Mention {
            cot_id: "c".into(),
            part: "cot".into(),
            mention_index: 0,
            entity_id: "Q1".into(),
            alias: "lima".into(),
            candidates: vec!["Q1".into(), "Q9".into()],
            candidate_scores: vec![1, 1],
            surface: "Lima".into(),
            char_start: 0,
            char_end: 4,
            token_start: Some(0),
            token_end: Some(1),
            step: Some(0),
            n_context: 1,
            context_size: 7,
            in_reach: true,
            remention: false,
            supported: true,
            kg_logprob: Some(F64(-2.5)),
        }]);
        round_trip(vec![Step {
            cot_id: "c".into(),
            step: 0,
            char_start: 0,
            char_end: 6,
            token_start: 0,
            token_end: 2,
            n_entity_tokens: 1,
            n_mentions: 1,
            n_supported: 0,
            n_rementions: 1,
            n_pairs: 2,
            n_connected: 1,
            n_unsearched: 0,
            paths: vec!["Q1 ^P36 Q7 P17 Q2".into()],
            unconnected: vec!["Q2 Q3".into()],
            value: F64(-1.25),
            text: "Lima é".into(),
        }]);
        round_trip(vec![TokenScore {
            cot_id: "c".into(),
            step: 0,
            token_index: 1,
            token: " é".into(),
            char_start: 4,
            char_end: 6,
            behavior_logprob: F64(-1.5),
            kg_logprob: None,
            target_logprob: Some(F64(-2.0)),
            is_entity: false,
            entity_id: None,
            log_lambda: F64(-1.5),
            log_weight: F64(-0.5),
            weight: F64(0.6),
            contribution: F64(-0.9),
        }]);
        round_trip(vec![CotScore {
            cot_id: "c".into(),
            model: "m".into(),
            model_version: "v".into(),
            segment: Some("tenant-a".into()),
            event_time: -5,
            n_steps: 1,
            n_tokens: 2,
            n_entity_tokens: 1,
            n_mentions: 1,
            n_supported: 1,
            n_rementions: 0,
            value: F64(-3.0),
            weight_mass: F64(1.25),
            grounded_fraction: None,
            answer_entity: Some("Q2".into()),
            answer_reachable: Some(true),
            weight_sum: F64(2.5),
            weight_sq_sum: F64(4.25),
            entity_weight_sum: F64(1.5),
            entity_weight_sq_sum: F64(2.25),
            min_weight: F64(1.0),
            max_weight: F64(1.5),
            estimator: "kg-ips".into(),
            kg_policy: "p".into(),
        }]);
        round_trip(vec![Aggregate {
            model: "m".into(),
            model_version: "v".into(),
            segment: None,
            window_start: 0,
            window_end: 86_400_000_000,
            n: 3,
            estimate: F64(-1.0),
            variance: F64(0.03),
            std_error: F64(0.1),
            ci_low: Some(F64(-1.196)),
            ci_high: None,
            ci_method: "normal".into(),
            bernstein_low: Some(F64(-2.0)),
            bernstein_high: Some(F64(0.0)),
            subgaussian_low: None,
            subgaussian_high: None,
            anytime_low: Some(F64(-3.0)),
            anytime_high: Some(F64(0.0)),
            ess: F64(2.0),
            entity_ess: F64(1.0),
            min_weight: F64(0.5),
            max_weight: F64(3.0),
            n_tokens: 12,
            n_entity_tokens: 2,
            reliable: false,
            estimator: "kg-ips".into(),
            time: 0,
            diff: -1,
        }]);
        round_trip(vec![Reject::new("f", Some(3), "jsonl", RejectReason::InvalidJson, "bad", b"{oops")]);
        round_trip(Vec::<Reject>::new());
        round_trip(vec![
            Tombstone { cot_id: "c".into(), retracted: true, entity_tokens_only: false },
            Tombstone { cot_id: "d".into(), retracted: false, entity_tokens_only: true },
        ]);
    }

    #[test]
    fn rejects_truncate_raw_bytes() {
        let raw = vec![b'x'; RAW_LIMIT * 2];
        let r = Reject::new("f", None, "jsonl", RejectReason::Oversized, "big", &raw);
        assert_eq!(r.raw.len(), RAW_LIMIT);
        assert_eq!(r.raw_bytes, (RAW_LIMIT * 2) as u64);
    }

    #[test]
    fn fields_are_documented() {
        let readme = include_str!("../../README.md");
        for fields in [
            Generation::fields(),
            Mention::fields(),
            Step::fields(),
            TokenScore::fields(),
            CotScore::fields(),
            Aggregate::fields(),
            Reject::fields(),
            Tombstone::fields(),
        ] {
            for f in fields {
                assert!(f.metadata().contains_key("doc"), "{} has no doc", f.name());
                assert!(
                    readme.contains(&format!("`{}`", f.name())),
                    "schemas/README.md does not document `{}`",
                    f.name()
                );
            }
        }
    }
}
