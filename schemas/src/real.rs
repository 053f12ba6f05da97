//! `F64`: a totally ordered `f64`, so that rows holding floats can be differential data.

use serde::{Deserialize, Serialize};

/// An `f64` with `Eq` and `Ord` by IEEE 754 `totalOrder` (`f64::total_cmp`).
///
/// Rows are data in differential collections, which must be `Ord`; this wrapper gives them a
/// total order without changing the value. It serializes as a plain `f64` (Arrow `Float64`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}
impl From<f64> for F64 {
    fn from(x: f64) -> Self {
        F64(x)
    }
}
