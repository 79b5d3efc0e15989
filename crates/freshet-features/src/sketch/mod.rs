//! Mergeable summaries used by the aggregates: a relative-error quantile sketch
//! ([`DdSketch`]) and a HyperLogLog estimator ([`hll_estimate`]).

mod ddsketch;
mod hll;

pub use ddsketch::{DdSketch, DDSKETCH_RELATIVE_ACCURACY};
pub use hll::{hll_estimate, HLL_PRECISION, HLL_SPARSE_LIMIT};
