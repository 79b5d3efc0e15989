//! ADWIN, the adaptive-window change detector (Bifet & Gavaldà 2007), as River implements it.
//!
//! Definition: the window W of recent values is kept as an exponential histogram — row r holds
//! up to `max_buckets` buckets of 2^r values each (sum and variance of the bucket), row 0 the
//! newest; when a row reaches `max_buckets + 1` buckets its two oldest merge into one bucket of
//! the next row. Every `clock` values, once W holds more than `grace_period` values, each
//! bucket boundary from the oldest is tried as a split W = W0 · W1 (both parts at least
//! `min_window_length` values; the split just before the newest bucket is not tried). A split
//! is a change when |μ̂0 − μ̂1| ≥ ε with
//!
//! ```text
//! δ'  = ln(2 · ln|W| / δ)
//! m⁻¹ = 1/(n0 − min_window_length + 1) + 1/(n1 − min_window_length + 1)
//! ε   = sqrt(2 · m⁻¹ · σ²_W · δ') + (2/3) · δ' · m⁻¹
//! ```
//!
//! σ²_W the variance of the whole window. On a change the oldest bucket is dropped and the scan
//! restarts, until no split is a change. [`Adwin::update`] returns true when at least one
//! change was found for that value, and — as River does since its detectors share the
//! `drift_detected` protocol — the next value starts a fresh, empty window (the original
//! ADWIN keeps the shrunk window instead). This follows River's `ADWIN` (`river/drift/adwin_c.pyx`)
//! with its defaults δ = 0.002, clock 32, max_buckets 5, min_window_length 5, grace_period 10;
//! `tests/detectors.rs` checks that the detection indices equal River 0.26.1's on seeded
//! streams (`tests/river_detectors.py`).
//!
//! Guarantees: memory is O(max_buckets · log2 |W|) buckets; the window itself is unbounded on a
//! stationary stream (it only shrinks on change), which is ADWIN's design.

use serde::{Deserialize, Serialize};

/// River's default confidence δ.
pub const DEFAULT_DELTA: f64 = 0.002;
/// River's default check period.
pub const DEFAULT_CLOCK: u64 = 32;
/// River's default buckets per row.
pub const DEFAULT_MAX_BUCKETS: usize = 5;
/// River's default minimum size of each side of a split.
pub const DEFAULT_MIN_WINDOW_LENGTH: u64 = 5;
/// River's default number of values before the first check.
pub const DEFAULT_GRACE_PERIOD: u64 = 10;

const fn default_delta() -> f64 {
    DEFAULT_DELTA
}
const fn default_clock() -> u64 {
    DEFAULT_CLOCK
}
const fn default_max_buckets() -> usize {
    DEFAULT_MAX_BUCKETS
}
const fn default_min_window_length() -> u64 {
    DEFAULT_MIN_WINDOW_LENGTH
}
const fn default_grace_period() -> u64 {
    DEFAULT_GRACE_PERIOD
}

/// ADWIN's parameters, as a pipeline file writes them (`adwin = { delta = 0.002 }`); every
/// field defaults to River's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdwinConfig {
    /// Confidence δ in (0, 1): smaller means fewer false alarms and later detections.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Values between two checks for a change (≥ 1).
    #[serde(default = "default_clock")]
    pub clock: u64,
    /// Buckets per row of the exponential histogram (≥ 1).
    #[serde(default = "default_max_buckets")]
    pub max_buckets: usize,
    /// Smallest size of each side of a split (≥ 1).
    #[serde(default = "default_min_window_length")]
    pub min_window_length: u64,
    /// Values before the first check.
    #[serde(default = "default_grace_period")]
    pub grace_period: u64,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        Self {
            delta: DEFAULT_DELTA,
            clock: DEFAULT_CLOCK,
            max_buckets: DEFAULT_MAX_BUCKETS,
            min_window_length: DEFAULT_MIN_WINDOW_LENGTH,
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

impl AdwinConfig {
    /// Checks the ranges; does no I/O.
    pub fn validate(&self) -> Result<(), crate::DriftError> {
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(crate::DriftError::InvalidConfig(format!(
                "adwin delta must be in (0, 1), got {}",
                self.delta
            )));
        }
        if self.clock == 0 || self.max_buckets == 0 || self.min_window_length == 0 {
            return Err(crate::DriftError::InvalidConfig(
                "adwin needs clock, max_buckets and min_window_length of at least 1".into(),
            ));
        }
        Ok(())
    }

    /// A detector with these parameters.
    pub fn build(&self) -> Adwin {
        Adwin::new(
            self.delta,
            self.clock,
            self.max_buckets,
            self.min_window_length,
            self.grace_period,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Bucket {
    total: f64,
    variance: f64,
}

/// The ADWIN detector (module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    delta: f64,
    clock: u64,
    max_buckets: usize,
    min_window_length: u64,
    grace_period: u64,
    /// rows[r]: buckets of 2^r values, oldest first; rows[0] is the newest row.
    rows: Vec<Vec<Bucket>>,
    width: f64,
    total: f64,
    variance: f64,
    tick: u64,
    detections: u64,
    drift_detected: bool,
    /// Newer minus older sub-window mean at the first cut of the latest detection.
    change: f64,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(
            DEFAULT_DELTA,
            DEFAULT_CLOCK,
            DEFAULT_MAX_BUCKETS,
            DEFAULT_MIN_WINDOW_LENGTH,
            DEFAULT_GRACE_PERIOD,
        )
    }
}

impl Adwin {
    /// A detector with explicit parameters (see [`Adwin::default`] for River's).
    pub fn new(
        delta: f64,
        clock: u64,
        max_buckets: usize,
        min_window_length: u64,
        grace_period: u64,
    ) -> Self {
        Self {
            delta,
            clock: clock.max(1),
            max_buckets: max_buckets.max(1),
            min_window_length,
            grace_period,
            rows: vec![Vec::new()],
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            detections: 0,
            drift_detected: false,
            change: 0.0,
        }
    }

    /// Adds one value; true when a change was detected at this value.
    pub fn update(&mut self, value: f64) -> bool {
        if self.drift_detected {
            self.restart();
        }
        self.tick += 1;
        self.insert(value);
        self.drift_detected = self.detect_change();
        if self.drift_detected {
            self.detections += 1;
        }
        self.drift_detected
    }

    /// Whether the last value triggered a detection.
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// The estimated change of the mean at the latest detection: mean of the newer part W1
    /// minus mean of the older part W0, at the first split found to be a change (0 before any
    /// detection).
    pub fn mean_change(&self) -> f64 {
        self.change
    }

    /// The confidence δ.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Empties the window and the clock, keeping the parameters and the detection count.
    fn restart(&mut self) {
        let (detections, change) = (self.detections, self.change);
        *self = Self::new(
            self.delta,
            self.clock,
            self.max_buckets,
            self.min_window_length,
            self.grace_period,
        );
        self.detections = detections;
        self.change = change;
    }

    /// Number of values currently in the window.
    pub fn width(&self) -> u64 {
        self.width as u64
    }

    /// Mean of the window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width > 0.0 {
            self.total / self.width
        } else {
            0.0
        }
    }

    /// Variance of the window (population).
    pub fn variance(&self) -> f64 {
        if self.width > 0.0 {
            self.variance / self.width
        } else {
            0.0
        }
    }

    /// Changes detected so far.
    pub fn detections(&self) -> u64 {
        self.detections
    }

    /// Buckets held (memory is proportional to this).
    pub fn bucket_count(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].push(Bucket {
            total: value,
            variance: 0.0,
        });
        self.width += 1.0;
        if self.width > 1.0 {
            let d = value - self.total / (self.width - 1.0);
            self.variance += (self.width - 1.0) * d * d / self.width;
        }
        self.total += value;
        self.compress();
    }

    fn compress(&mut self) {
        let mut r = 0;
        while self.rows[r].len() > self.max_buckets {
            if r + 1 == self.rows.len() {
                self.rows.push(Vec::new());
            }
            let n = (1u64 << r) as f64;
            let (a, b) = (self.rows[r][0], self.rows[r][1]);
            let (mu_a, mu_b) = (a.total / n, b.total / n);
            let merged = Bucket {
                total: a.total + b.total,
                variance: a.variance
                    + b.variance
                    + n * n * (mu_a - mu_b) * (mu_a - mu_b) / (2.0 * n),
            };
            self.rows[r].drain(..2);
            self.rows[r + 1].push(merged);
            r += 1;
        }
    }

    fn delete_oldest(&mut self) {
        // Rows below the last are never emptied by compression when max_buckets ≥ 2, but with
        // max_buckets = 1 they can be, so look for the oldest non-empty row.
        let Some(last) = self.rows.iter().rposition(|row| !row.is_empty()) else {
            return;
        };
        let n = (1u64 << last) as f64;
        let b = self.rows[last].remove(0);
        self.width -= n;
        self.total -= b.total;
        if self.width > 0.0 {
            let mu = b.total / n;
            let mu_w = self.total / self.width;
            self.variance -=
                b.variance + n * self.width * (mu - mu_w) * (mu - mu_w) / (n + self.width);
        } else {
            self.variance = 0.0;
        }
        while self.rows.len() > 1 && self.rows.last().is_some_and(Vec::is_empty) {
            self.rows.pop();
        }
    }

    fn cut(&self, n0: f64, n1: f64, mean_diff: f64) -> bool {
        let delta_prime = (2.0 * self.width.ln() / self.delta).ln();
        let min = self.min_window_length as f64;
        let m_recip = 1.0 / (n0 - min + 1.0) + 1.0 / (n1 - min + 1.0);
        let var = self.variance / self.width;
        let epsilon =
            (2.0 * m_recip * var * delta_prime).sqrt() + 2.0 / 3.0 * delta_prime * m_recip;
        mean_diff.abs() >= epsilon
    }

    fn detect_change(&mut self) -> bool {
        if !self.tick.is_multiple_of(self.clock) || self.width <= self.grace_period as f64 {
            return false;
        }
        let min = self.min_window_length as f64;
        let mut detected = false;
        'rescan: loop {
            let (mut n0, mut n1, mut u0, mut u1) = (0.0, self.width, 0.0, self.total);
            for r in (0..self.rows.len()).rev() {
                let size = (1u64 << r) as f64;
                let len = self.rows[r].len();
                for k in 0..len {
                    let u2 = self.rows[r][k].total;
                    n0 += size;
                    n1 -= size;
                    u0 += u2;
                    u1 -= u2;
                    if r == 0 && k + 1 == len {
                        break 'rescan;
                    }
                    if n0 >= min && n1 >= min && self.cut(n0, n1, u0 / n0 - u1 / n1) {
                        if !detected {
                            self.change = u1 / n1 - u0 / n0;
                        }
                        detected = true;
                        if self.width > 0.0 {
                            self.delete_oldest();
                            continue 'rescan;
                        }
                        break 'rescan;
                    }
                }
            }
            break;
        }
        detected
    }
}
