//! Record batches of generations as the sources hand them to the dataflow.

use arrow::record_batch::RecordBatch;

use crate::Diff;

/// A batch of generations in the `generations` schema, with the change it makes (+1 adds its
/// rows, −1 retracts them) and where it came from (for rejects).
#[derive(Debug, Clone)]
pub struct GenerationBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// +1 or −1.
    pub diff: Diff,
    /// The source, for reject rows.
    pub source: String,
}
