//! Human durations: `250ms`, `30s`, `5m`, `24h`, `7d` (one number, one unit).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number and a unit, as every duration key of the config is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {input:?}: expected a whole number followed by ms, s, m, h or d (e.g. 30s, 5m, 24h)"
)]
pub struct ParseDurationError {
    pub input: String,
}

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub fn parse(input: &str) -> Result<Self, ParseDurationError> {
        let err = || ParseDurationError {
            input: input.to_owned(),
        };
        let s = input.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| err())?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(err)?),
            _ => return Err(err()),
        };
        Ok(Self(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.as_secs() == 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s.is_multiple_of(size) {
                return write!(f, "{}{unit}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = ParseDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HumanDuration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            // At most nine digits, so every value the schema admits also parses (u64, no
            // overflow even in days): a value the API server stores but the operator could
            // not read would break the watch for every cluster.
            "pattern": "^[0-9]{1,9}(ms|s|m|h|d)$",
            "maxLength": 11,
            "description": "A duration: a whole number (at most 9 digits) followed by ms, s, m, h or d (e.g. 30s, 5m, 24h)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_prints_it_back() {
        // Printing uses the largest whole unit, so 24h prints as 1d.
        for (s, secs, printed) in [
            ("30s", 30, "30s"),
            ("5m", 300, "5m"),
            ("90m", 5400, "90m"),
            ("24h", 86_400, "1d"),
            ("7d", 604_800, "7d"),
        ] {
            let d = HumanDuration::parse(s).expect(s);
            assert_eq!(d.0, Duration::from_secs(secs));
            assert_eq!(d.to_string(), printed);
            assert_eq!(HumanDuration::parse(printed).unwrap(), d);
        }
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
    }

    /// The largest value the CRD pattern admits parses: the schema refuses everything
    /// the Rust type refuses.
    #[test]
    fn the_largest_value_the_schema_admits_parses() {
        for unit in ["ms", "s", "m", "h", "d"] {
            let s = format!("999999999{unit}");
            assert!(s.len() <= 11);
            assert!(HumanDuration::parse(&s).is_ok(), "{s}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "",
            "s",
            "5",
            "5 m",
            "-5s",
            "1.5h",
            "5w",
            "99999999999999999999d",
        ] {
            assert!(HumanDuration::parse(s).is_err(), "{s:?} should be refused");
        }
    }
}
