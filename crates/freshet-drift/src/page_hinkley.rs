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
}
