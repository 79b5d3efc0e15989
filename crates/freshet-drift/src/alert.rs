//! Drift alerts: one state machine per (monitor, feature, measure), with hysteresis, that emits
//! only transitions.
//!
//! Definitions:
//! - A window **breaches** when its value is at or above the threshold for
//!   [`Direction::Above`] (PSI, JS, Wasserstein) or strictly below it for [`Direction::Below`]
//!   (KS and chi-square p-values). A NaN value (e.g. an empty window) is not evidence either
//!   way and leaves the state and both streaks untouched.
//! - A clear alert **fires** after `fire_after` consecutive breaching windows; a firing alert
//!   **clears** after `clear_after` consecutive non-breaching windows. A window of the other
//!   kind resets the streak.
//! - De-duplication: [`AlertState::observe`] returns a [`Transition`] only when the state
//!   changes; a firing alert that keeps breaching emits nothing.
//!
//! Guarantees: [`AlertBook`] holds one small state per key it has seen; the keys come from the
//! pipeline file, so memory is bounded by configuration, not traffic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::measures::Measure;
use crate::DriftError;

/// Default consecutive breaching windows before firing (the pipeline example's `fire_after`).
pub const DEFAULT_FIRE_AFTER: u32 = 2;
/// Default consecutive calm windows before clearing (the pipeline example's `clear_after`).
pub const DEFAULT_CLEAR_AFTER: u32 = 3;

/// Which side of the threshold is drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// value ≥ threshold breaches (distances).
    Above,
    /// value < threshold breaches (p-values).
    Below,
}

impl Direction {
    /// The direction of a measure: above for distances, below for p-values.
    pub const fn for_measure(measure: Measure) -> Self {
        if measure.fires_above() {
            Direction::Above
        } else {
            Direction::Below
        }
    }
}

/// Threshold and hysteresis of one alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// The threshold compared with each window's value.
    pub threshold: f64,
    /// Which side of the threshold breaches.
    pub direction: Direction,
    /// Consecutive breaching windows before firing (≥ 1).
    pub fire_after: u32,
    /// Consecutive calm windows before clearing (≥ 1).
    pub clear_after: u32,
}

impl AlertRule {
    /// A rule for `measure` with its natural direction and the default hysteresis.
    pub fn for_measure(measure: Measure, threshold: f64) -> Self {
        Self {
            threshold,
            direction: Direction::for_measure(measure),
            fire_after: DEFAULT_FIRE_AFTER,
            clear_after: DEFAULT_CLEAR_AFTER,
        }
    }

    /// Checks the ranges; does no I/O.
    pub fn validate(&self) -> Result<(), DriftError> {
        if !self.threshold.is_finite() {
            return Err(DriftError::InvalidConfig(
                "alert threshold must be finite".into(),
            ));
        }
        if self.fire_after == 0 || self.clear_after == 0 {
            return Err(DriftError::InvalidConfig(
                "fire_after and clear_after must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether `value` breaches (false for NaN).
    pub fn breaches(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold,
            Direction::Below => value < self.threshold,
        }
    }
}

/// A change of an alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// The alert started firing.
    Fired,
    /// The alert stopped firing.
    Cleared,
}

/// The hysteresis state of one alert (module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    firing: bool,
    streak: u32,
}

impl AlertState {
    /// Whether the alert is firing.
    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Feeds one window's value; returns the transition it causes, if any.
    pub fn observe(&mut self, rule: &AlertRule, value: f64) -> Option<Transition> {
        if value.is_nan() {
            return None;
        }
        // While clear the streak counts breaches; while firing it counts calm windows.
        let towards_change = rule.breaches(value) != self.firing;
        if !towards_change {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.firing {
            rule.clear_after
        } else {
            rule.fire_after
        };
        if self.streak < needed.max(1) {
            return None;
        }
        self.streak = 0;
        self.firing = !self.firing;
        Some(if self.firing {
            Transition::Fired
        } else {
            Transition::Cleared
        })
    }
}

/// Identifies one alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    /// The drift monitor's name.
    pub monitor: String,
    /// The feature, e.g. `transactions.amount`.
    pub feature: String,
    /// The measure.
    pub measure: Measure,
}

/// A transition together with what caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Which alert.
    pub key: AlertKey,
    /// Fired or cleared.
    pub transition: Transition,
    /// The window value that completed the streak.
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
}

/// Alert states for many keys (module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertBook {
    states: BTreeMap<AlertKey, AlertState>,
}

impl AlertBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one window's value for `key`; returns an event only on a transition.
    pub fn observe(&mut self, key: &AlertKey, rule: &AlertRule, value: f64) -> Option<AlertEvent> {
        let state = match self.states.get_mut(key) {
            Some(s) => s,
            None => self.states.entry(key.clone()).or_default(),
        };
        state.observe(rule, value).map(|transition| AlertEvent {
            key: key.clone(),
            transition,
            value,
            threshold: rule.threshold,
        })
    }

    /// Every alert currently firing.
    pub fn firing(&self) -> impl Iterator<Item = &AlertKey> {
        self.states.iter().filter(|(_, s)| s.firing).map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psi_rule(fire_after: u32, clear_after: u32) -> AlertRule {
        AlertRule {
            threshold: 0.2,
            direction: Direction::Above,
            fire_after,
            clear_after,
        }
    }

    fn run(rule: &AlertRule, values: &[f64]) -> Vec<(usize, Transition)> {
        let mut s = AlertState::default();
        values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| s.observe(rule, v).map(|t| (i, t)))
            .collect()
    }

    #[test]
    fn fires_after_k_consecutive_and_clears_after_m() {
        let rule = psi_rule(2, 3);
        let v = [0.3, 0.1, 0.3, 0.3, 0.5, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1];
        assert_eq!(
            run(&rule, &v),
            vec![(3, Transition::Fired), (10, Transition::Cleared)]
        );
    }

    #[test]
    fn no_duplicate_events_while_firing() {
        let rule = psi_rule(1, 1);
        assert_eq!(run(&rule, &[0.5; 100]), vec![(0, Transition::Fired)]);
    }

    #[test]
    fn threshold_is_inclusive_above_and_strict_below() {
        assert!(psi_rule(1, 1).breaches(0.2));
        let p = AlertRule::for_measure(Measure::Ks, 0.001);
        assert_eq!(p.direction, Direction::Below);
        assert!(!p.breaches(0.001));
        assert!(p.breaches(0.000_999));
        assert_eq!(
            run(&p, &[0.5, 1e-9, 1e-9, 0.5, 0.5, 0.5]),
            vec![(2, Transition::Fired), (5, Transition::Cleared)]
        );
    }

    #[test]
    fn nan_leaves_streaks_alone() {
        let rule = psi_rule(2, 1);
        assert_eq!(
            run(&rule, &[0.5, f64::NAN, 0.5]),
            vec![(2, Transition::Fired)]
        );
    }

    #[test]
    fn book_keeps_keys_apart() {
        let mut book = AlertBook::new();
        let rule = psi_rule(1, 1);
        let key = |f: &str| AlertKey {
            monitor: "m".into(),
            feature: f.into(),
            measure: Measure::Psi,
        };
        assert!(book.observe(&key("a"), &rule, 0.5).is_some());
        assert!(book.observe(&key("a"), &rule, 0.5).is_none());
        assert!(book.observe(&key("b"), &rule, 0.1).is_none());
        assert_eq!(book.firing().cloned().collect::<Vec<_>>(), vec![key("a")]);
        let cleared = book.observe(&key("a"), &rule, 0.0).map(|e| e.transition);
        assert_eq!(cleared, Some(Transition::Cleared));
    }

    #[test]
    fn rule_validation() {
        assert!(psi_rule(0, 1).validate().is_err());
        assert!(AlertRule {
            threshold: f64::NAN,
            ..psi_rule(1, 1)
        }
        .validate()
        .is_err());
        assert!(psi_rule(1, 1).validate().is_ok());
    }
}
