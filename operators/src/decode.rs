//! The dataflow's source operator: Arrow record batches of generations → a collection of rows.

use arrow::record_batch::RecordBatch;
use ocean_schemas::{Dataset, Generation, Reject, RejectReason};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::OkErr;
use timely::dataflow::StreamVec;

use differential_dataflow::AsCollection;

use crate::{Coll, Diff, Time};

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

/// Decodes record batches into generation rows.
pub trait DecodeGenerations<'scope> {
    /// The rows, and a reject for every batch that does not fit the generations schema.
    fn decode_generations(self) -> (Coll<'scope, Generation>, Coll<'scope, Reject>);
}

impl<'scope> DecodeGenerations<'scope> for StreamVec<'scope, Time, GenerationBatch> {
    fn decode_generations(self) -> (Coll<'scope, Generation>, Coll<'scope, Reject>) {
        let decoded: StreamVec<'scope, Time, (Result<Generation, Reject>, Time, Diff)> =
            self.unary(Pipeline, "DecodeGenerations", |_cap, _info| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let time = *cap.least().expect("messages from an input should carry a time");
                        let mut session = output.session(&cap);
                        for item in data.flat_map(|d| d.drain(..)) {
                            match Generation::from_batch(&item.batch) {
                                Ok(rows) => {
                                    for row in rows {
                                        session.give((Ok(row), time, item.diff));
                                    }
                                }
                                Err(e) => {
                                    let reject = Reject::new(
                                        &item.source,
                                        None,
                                        "arrow",
                                        RejectReason::BadRecord,
                                        format!(
                                            "a batch of {} rows does not fit the generations schema: {e}",
                                            item.batch.num_rows()
                                        ),
                                        &[],
                                    );
                                    session.give((Err(reject), time, item.diff));
                                }
                            }
                        }
                    });
                }
            });
        let (ok, err) = decoded.ok_err(|(r, t, d)| match r {
            Ok(g) => Ok((g, t, d)),
            Err(e) => Err((e, t, d)),
        });
        (ok.as_collection(), err.as_collection())
    }
}
