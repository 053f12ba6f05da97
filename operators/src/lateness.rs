//! Event time: a bound on out-of-orderness and the rule for late records.
//!
//! Aggregates are windowed by each record's own event time. With a lateness bound L, the
//! **watermark** of input epoch t is the newest event time of every record of the epochs before
//! t, less L. A record of epoch t whose window ends at or before that watermark is **late**: its
//! window is closed — its aggregate will not change again — so the record becomes a reject with
//! reason `late` (counted like every reject, and kept in `rejects` with its source and line)
//! instead of reopening the window. Records of the same epoch never make each other late, so
//! the outcome depends on the records and the epoch cut only, not on worker count or timing.
//! Without a bound every record goes to its window, however late.

use std::collections::BTreeMap;

use ocean_schemas::{Reject, RejectReason};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast as _;
use timely::dataflow::StreamVec;

use crate::ips::window_start;
use crate::scoring::{hold, LogUpdate, Pending};
use crate::Time;

/// Whether a record with event time `event_us` is late under `watermark_us` for windows of
/// `window_us`: its window ends at or before the watermark.
pub fn is_late(event_us: i64, watermark_us: Option<i64>, window_us: i64) -> bool {
    watermark_us.is_some_and(|w| window_start(event_us, window_us).saturating_add(window_us.max(1)) <= w)
}

/// The late-record rule as an operator.
pub trait FilterLate<'scope> {
    /// Passes the updates on, turning late additions into `late` rejects (see the module docs);
    /// with no bound, passes everything.
    fn filter_late(self, lateness_us: Option<i64>, window_us: i64) -> StreamVec<'scope, Time, LogUpdate>;
}

impl<'scope> FilterLate<'scope> for StreamVec<'scope, Time, LogUpdate> {
    fn filter_late(self, lateness_us: Option<i64>, window_us: i64) -> StreamVec<'scope, Time, LogUpdate> {
        let Some(lateness) = lateness_us else {
            return self;
        };
        // Each worker's newest event time per epoch, sent to every worker.
        let newest = self
            .clone()
            .unary(Pipeline, "NewestEventTime", |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let newest = data
                            .iter()
                            .filter_map(|u| match u {
                                LogUpdate::Add(g) => Some(g.event_time),
                                _ => None,
                            })
                            .max();
                        if let Some(t) = newest {
                            output.session(&cap).give(t);
                        }
                    });
                }
            })
            .broadcast();
        self.binary_frontier(newest, Pipeline, Pipeline, "FilterLate", move |_cap, _info| {
            let mut pending: Pending<LogUpdate> = BTreeMap::new();
            let mut newest_by_epoch: BTreeMap<Time, i64> = BTreeMap::new();
            let mut newest_before: Option<i64> = None;
            move |(logs, _logs_frontier), (times, times_frontier), output| {
                logs.for_each(|cap, data| hold(&mut pending, &cap, data));
                times.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    let entry = newest_by_epoch.entry(t).or_insert(i64::MIN);
                    *entry = data.iter().copied().fold(*entry, i64::max);
                });
                // An epoch's updates go once every earlier epoch's newest time is in.
                while let Some(&t) = pending.keys().next() {
                    if times_frontier.less_than(&t) {
                        break;
                    }
                    let earlier: Vec<Time> = newest_by_epoch.range(..t).map(|(k, _)| *k).collect();
                    for k in earlier {
                        let v = newest_by_epoch.remove(&k).expect("listed");
                        newest_before = Some(newest_before.map_or(v, |n| n.max(v)));
                    }
                    let watermark = newest_before.map(|n| n.saturating_sub(lateness));
                    let (cap, updates) = pending.remove(&t).expect("listed");
                    let mut session = output.session(&cap);
                    for u in updates {
                        match u {
                            LogUpdate::Add(g) if is_late(g.event_time, watermark, window_us) => {
                                let detail = format!(
                                    "late: event time {} µs is in a window that ended at or before the watermark {} µs \
                                     (newest event time of the earlier epochs less the lateness bound); {}",
                                    g.event_time,
                                    watermark.unwrap_or_default(),
                                    g.cot_id
                                );
                                let reject =
                                    Reject::new(&g.source, Some(g.line), &g.format, RejectReason::Late, detail, &[]);
                                session.give(LogUpdate::Reject(reject));
                            }
                            other => session.give(other),
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_means_the_window_closed() {
        let minute = 60_000_000;
        // Window [0, 60 s); watermark 60 s closes it, 59.9 s does not.
        assert!(is_late(30_000_000, Some(minute), minute));
        assert!(!is_late(30_000_000, Some(minute - 100_000), minute));
        assert!(!is_late(30_000_000, None, minute));
        // Negative times (before 1970) use floor windows.
        assert!(is_late(-1, Some(0), minute));
        assert!(!is_late(-1, Some(-1), minute));
    }
}
