//! freshet-drift: the statistical core of drift monitoring.
//!
//! - [`numeric`]: reference and live-window profiles of a numeric feature: counts in bins fixed
//!   from reference quantiles plus a bounded uniform sample (the quantile sketch, also used for
//!   KS and Wasserstein);
//! - [`categorical`]: reference and live-window frequency tables over the reference's top-K
//!   categories plus an "other" bucket;
//! - [`reservoir`]: the bounded, mergeable uniform sample both of the above rely on;
//! - [`measures`]: PSI, Kolmogorov–Smirnov, Jensen–Shannon distance, normed Wasserstein-1 and the
//!   chi-square goodness-of-fit test, each defined exactly in its doc;
//! - [`special`]: the special functions behind the p-values (Kolmogorov distribution,
//!   regularized incomplete gamma);
//! - [`adwin`] and [`page_hinkley`]: streaming change detectors on one numeric stream (model error
//!   or score), with River's defaults and semantics;
//! - [`alert`]: the per (monitor, feature, measure) alert state machine with hysteresis that emits
//!   only transitions.
//!
//! Guarantees: no I/O, no engine dependency; every profile's memory is fixed when it is created
//! and does not grow with the number of values it has seen; profiles merge by summing counts.

pub mod adwin;
pub mod alert;
pub mod categorical;
pub mod measures;
pub mod numeric;
pub mod page_hinkley;
pub mod reservoir;
pub mod special;

mod rng;

pub use adwin::{Adwin, AdwinConfig};
pub use alert::{AlertBook, AlertEvent, AlertKey, AlertRule, AlertState, Direction, Transition};
pub use categorical::{
    CategoricalConfig, CategoricalProfile, CategoricalReference, CategoricalReferenceBuilder,
};
pub use measures::{ChiSquareMethod, ChiSquareTest, KsTest, Measure};
pub use numeric::{
    NumericBins, NumericConfig, NumericDrift, NumericProfile, NumericReference,
    NumericReferenceBuilder,
};
pub use page_hinkley::{PageHinkley, PageHinkleyConfig, PageHinkleyMode};
pub use reservoir::Reservoir;

/// Why a profile, measure or detector could not be built or computed.
///
/// None of these is transient: retrying the same call with the same inputs fails the same way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A measure needs at least one value on each side and one side had none.
    #[error("empty {what}: a drift measure needs at least one value")]
    Empty {
        /// Which input was empty (e.g. "reference sample", "window counts").
        what: &'static str,
    },
    /// Two count vectors that must be aligned bucket by bucket have different lengths.
    #[error("bucket count mismatch: {left} vs {right}")]
    LengthMismatch {
        /// Buckets on the left-hand side.
        left: usize,
        /// Buckets on the right-hand side.
        right: usize,
    },
    /// Two profiles built on different bins or category tables were merged or compared.
    #[error("profiles have different bucket layouts and cannot be merged or compared")]
    LayoutMismatch,
    /// A sample handed to a measure that requires ascending, NaN-free input was not.
    #[error("sample is not sorted ascending or contains NaN")]
    NotSorted,
    /// A configuration value is out of range.
    #[error("invalid drift configuration: {0}")]
    InvalidConfig(String),
}
