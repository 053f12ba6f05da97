//! `tombstones`: which chains of thought's earlier rows are replaced (re-scored after a KG
//! change) or gone (retracted), as of an epoch.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{field, Dataset};

/// Rows of `cot_id` written at epochs before this tombstone's epoch (the hive partition
/// `epoch=` of its file) no longer hold. The current state of a dataset is its rows that no
/// later tombstone of their chain of thought hides: for `mentions`, `steps` and `cot_scores` any
/// tombstone; for `token_scores` any tombstone except that one with `entity_tokens_only` leaves
/// the rows with `is_entity = false` standing; for `generations` only `retracted` ones (a
/// re-scored chain's generation does not change).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tombstone {
    /// The chain of thought.
    pub cot_id: String,
    /// True when the chain was retracted; false when it was re-scored (its new rows are in the
    /// same epoch).
    pub retracted: bool,
    /// A re-scoring after a change of triples only: no mention moved (spans follow the aliases
    /// alone), so which tokens are entity tokens and every non-entity token's row are as before;
    /// the new `token_scores` rows are the entity tokens' only. (Null in files written before
    /// this column existed: false.)
    pub entity_tokens_only: bool,
}

impl Dataset for Tombstone {
    const NAME: &'static str = "tombstones";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("cot_id", DataType::Utf8, false, "chain of thought id"),
            field("retracted", DataType::Boolean, false, "retracted (true) or re-scored (false)"),
            field(
                "entity_tokens_only",
                DataType::Boolean,
                true,
                "re-scored after a change of triples only: its non-entity token_scores rows still hold",
            ),
        ]
    }
}
