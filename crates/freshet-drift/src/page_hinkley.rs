//! The Page-Hinkley test for a change in the mean of a numeric stream, as River implements it.
//!
//! Definition: with x̄_t the running mean of all values since the last reset (including x_t),
//!
//! ```text
//! S⁺_t = α·S⁺_{t−1} + (x_t − x̄_t − δ)     m⁺_t = min(m⁺_{t−1}, S⁺_t)     increase if S⁺_t − m⁺_t > λ
//! S⁻_t = α·S⁻_{t−1} + (x_t − x̄_t + δ)     M⁻_t = max(M⁻_{t−1}, S⁻_t)     decrease if M⁻_t − S⁻_t > λ
//! ```
//!
//! tested only once at least `min_instances` values were seen; `mode` selects which side is
//! tested. After a detection the state resets on the next value (River's `drift_detected`
//! semantics). Defaults are River's: min_instances 30, δ = 0.005, λ (threshold) = 50,
//! α = 1 − 0.0001, mode both. `tests/detectors.rs` checks that the detection indices equal
//! River 0.26.1's on seeded streams (`tests/river_detectors.py`).
//!
//! Guarantees: constant memory and time per value.

use serde::{Deserialize, Serialize};

/// River's default warm-up length.
pub const DEFAULT_MIN_INSTANCES: u64 = 30;
/// River's default tolerated change δ.
pub const DEFAULT_DELTA: f64 = 0.005;
/// River's default detection threshold λ.
pub const DEFAULT_THRESHOLD: f64 = 50.0;
/// River's default forgetting factor α.
pub const DEFAULT_ALPHA: f64 = 1.0 - 0.0001;

const fn default_min_instances() -> u64 {
    DEFAULT_MIN_INSTANCES
}
const fn default_delta() -> f64 {
    DEFAULT_DELTA
}
const fn default_threshold() -> f64 {
    DEFAULT_THRESHOLD
}
const fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}
const fn default_mode() -> PageHinkleyMode {
    PageHinkleyMode::Both
}

/// Page-Hinkley's parameters, as a pipeline file writes them
/// (`page_hinkley = { threshold = 50.0 }`); every field defaults to River's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageHinkleyConfig {
    /// Values before the first test.
    #[serde(default = "default_min_instances")]
    pub min_instances: u64,
    /// Tolerated change δ (≥ 0).
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Detection threshold λ (> 0).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Forgetting factor α in (0, 1].
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// `up`, `down` or `both` (default).
    #[serde(default = "default_mode")]
    pub mode: PageHinkleyMode,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        Self {
            min_instances: DEFAULT_MIN_INSTANCES,
            delta: DEFAULT_DELTA,
            threshold: DEFAULT_THRESHOLD,
            alpha: DEFAULT_ALPHA,
            mode: PageHinkleyMode::Both,
        }
    }
}

impl PageHinkleyConfig {
    /// Checks the ranges; does no I/O.
    pub fn validate(&self) -> Result<(), crate::DriftError> {
        let ok = self.delta >= 0.0
            && self.delta.is_finite()
            && self.threshold > 0.0
            && self.threshold.is_finite()
            && self.alpha > 0.0
            && self.alpha <= 1.0;
        if !ok {
            return Err(crate::DriftError::InvalidConfig(
                "page_hinkley needs delta >= 0, threshold > 0 and 0 < alpha <= 1".into(),
            ));
        }
        Ok(())
    }

    /// A detector with these parameters.
    pub fn build(&self) -> PageHinkley {
        PageHinkley::new(
            self.min_instances,
            self.delta,
            self.threshold,
            self.alpha,
            self.mode,
        )
    }
}

/// Which direction of change Page-Hinkley reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageHinkleyMode {
    /// Increases of the mean only.
    Up,
    /// Decreases of the mean only.
    Down,
    /// Both directions (River's default).
    Both,
}

/// The Page-Hinkley detector (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    min_instances: u64,
    delta: f64,
    threshold: f64,
    alpha: f64,
    mode: PageHinkleyMode,
    n: u64,
    mean: f64,
    sum_increase: f64,
    min_increase: f64,
    sum_decrease: f64,
    max_decrease: f64,
    drift_detected: bool,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(
            DEFAULT_MIN_INSTANCES,
            DEFAULT_DELTA,
            DEFAULT_THRESHOLD,
            DEFAULT_ALPHA,
            PageHinkleyMode::Both,
        )
    }
}

impl PageHinkley {
    /// A detector with explicit parameters (see [`PageHinkley::default`] for River's).
    pub fn new(
        min_instances: u64,
        delta: f64,
        threshold: f64,
        alpha: f64,
        mode: PageHinkleyMode,
    ) -> Self {
        Self {
            min_instances,
            delta,
            threshold,
            alpha,
            mode,
            n: 0,
            mean: 0.0,
            sum_increase: 0.0,
            min_increase: f64::INFINITY,
            sum_decrease: 0.0,
            max_decrease: f64::NEG_INFINITY,
            drift_detected: false,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(
            self.min_instances,
            self.delta,
            self.threshold,
            self.alpha,
            self.mode,
        );
    }

    /// Adds one value; true when a change is detected at this value.
    pub fn update(&mut self, value: f64) -> bool {
        if self.drift_detected {
            self.reset();
        }
        self.n += 1;
        self.mean += (value - self.mean) / self.n as f64;
        let dev = value - self.mean;
        self.sum_increase = self.alpha * self.sum_increase + dev - self.delta;
        self.min_increase = self.min_increase.min(self.sum_increase);
        self.sum_decrease = self.alpha * self.sum_decrease + dev + self.delta;
        self.max_decrease = self.max_decrease.max(self.sum_decrease);
        if self.n < self.min_instances {
            return false;
        }
        let up = self.sum_increase - self.min_increase > self.threshold;
        let down = self.max_decrease - self.sum_decrease > self.threshold;
        self.drift_detected = match self.mode {
            PageHinkleyMode::Up => up,
            PageHinkleyMode::Down => down,
            PageHinkleyMode::Both => up || down,
        };
        self.drift_detected
    }

    /// Whether the last value triggered a detection.
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// Values since the last reset.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// The detection threshold λ.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The statistic of the side that crossed λ at the latest value: S⁺ − m⁺ for an increase
    /// (positive), −(M⁻ − S⁻) for a decrease (negative); when both or neither crossed, the
    /// larger of the two in magnitude with its sign.
    pub fn statistic(&self) -> f64 {
        let up = self.sum_increase - self.min_increase;
        let down = self.max_decrease - self.sum_decrease;
        let (up, down) = match self.mode {
            PageHinkleyMode::Up => (up, f64::NEG_INFINITY),
            PageHinkleyMode::Down => (f64::NEG_INFINITY, down),
            PageHinkleyMode::Both => (up, down),
        };
        if up >= down {
            up
        } else {
            -down
        }
    }
}
