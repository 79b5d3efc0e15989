//! Durations as pipeline files write them: an integer and a unit, `500ms`, `90s`, `10m`, `1h`, `2d`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written in a pipeline file; always a whole number of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration `{input}`: expected an integer followed by one of ms, s, m, h, d (e.g. `500ms`, `90s`, `10m`, `1h`, `2d`)")]
pub struct DurationError {
    input: String,
}

impl HumanDuration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The duration in whole milliseconds.
    pub fn as_ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// The duration as a standard [`Duration`].
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Parses `500ms`, `90s`, `10m`, `1h`, `2d`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = || DurationError {
            input: input.to_owned(),
        };
        let s = input.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| err())?;
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        n.checked_mul(unit_ms)
            .map(Self::from_millis)
            .ok_or_else(err)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_ms();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(
            HumanDuration::parse("500ms").map(HumanDuration::as_ms),
            Ok(500)
        );
        assert_eq!(
            HumanDuration::parse("90s").map(HumanDuration::as_ms),
            Ok(90_000)
        );
        assert_eq!(
            HumanDuration::parse("10m").map(HumanDuration::as_ms),
            Ok(600_000)
        );
        assert_eq!(
            HumanDuration::parse("1h").map(HumanDuration::as_ms),
            Ok(3_600_000)
        );
        assert_eq!(
            HumanDuration::parse("2d").map(HumanDuration::as_ms),
            Ok(172_800_000)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "10",
            "m",
            "1.5h",
            "-1s",
            "10 minutes",
            "5w",
            "99999999999999999999d",
        ] {
            assert!(
                HumanDuration::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn displays_in_largest_whole_unit() {
        assert_eq!(HumanDuration::from_millis(600_000).to_string(), "10m");
        assert_eq!(HumanDuration::from_millis(1_500).to_string(), "1500ms");
    }
}
