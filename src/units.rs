//! The one convention for units in every configuration tollgate reads.
//!
//! - **Durations are strings with a unit**: `"250ms"`, `"30s"`, `"15m"`, `"1h 30m"`, `"7d"`,
//!   `"1y"` (parsed by the maintained [`humantime`] crate). A bare number is refused: `30` could
//!   be seconds or milliseconds, and the wrong guess is a breaker that never opens or a grant that
//!   lives a thousand times too long. `M` (months in humantime) is refused because it is one
//!   letter away from `m` (minutes); write `"30d"` or `"1month"`.
//! - **Money is an exact decimal per currency**: `"1000.00"` or an integer (`1000`), never a
//!   binary float, so `0.1 + 0.2` questions never reach an approval threshold. Backed by
//!   [`rust_decimal`] (28 significant digits).
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Cfg {
//!     #[serde(with = "tollgate::units::duration")]
//!     wait: Duration,
//!     limit: tollgate::units::Money,
//! }
//! let cfg: Cfg = serde_json::from_str(r#"{"wait": "1m 30s", "limit": "1000.50"}"#)?;
//! assert_eq!(cfg.wait, Duration::from_secs(90));
//! assert_eq!(cfg.limit.to_string(), "1000.50");
//!
//! let err = serde_json::from_str::<Cfg>(r#"{"wait": 90, "limit": 1}"#).err().unwrap();
//! assert!(err.to_string().contains("a duration is a string with a unit"));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a duration text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// No unit (`"30"`), or empty.
    #[error("`{0}`: a duration is a string with a unit, e.g. \"250ms\", \"30s\", \"5m\", \"1h\"")]
    NoUnit(String),
    /// The ambiguous unit `M` (months).
    #[error(
        "`{0}`: `M` (months) is refused as too close to `m` (minutes); write \"30d\" or \"1month\""
    )]
    AmbiguousMonth(String),
    /// The text is not a duration.
    #[error("`{text}`: not a duration ({reason})")]
    Invalid {
        /// The text.
        text: String,
        /// The parser's explanation.
        reason: String,
    },
}

/// Parses a duration with a unit (see the [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tollgate::units::parse_duration("250ms")?, Duration::from_millis(250));
/// assert!(tollgate::units::parse_duration("250").is_err());
/// # Ok::<(), tollgate::units::DurationError>(())
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if !t.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(DurationError::NoUnit(text.to_owned()));
    }
    // humantime reads `M` as months: refuse it where it stands as a unit of its own.
    let b = t.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'M'
            && i > 0
            && (b[i - 1].is_ascii_digit() || b[i - 1] == b' ')
            && b.get(i + 1).is_none_or(|n| !n.is_ascii_alphabetic())
        {
            return Err(DurationError::AmbiguousMonth(text.to_owned()));
        }
    }
    humantime::parse_duration(t).map_err(|e| DurationError::Invalid {
        text: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Formats a duration the way documents write it (`"1m 30s"`, `"250ms"`, `"90d"`, `"6y"`), so
/// that [`parse_duration`] reads back exactly the same duration.
///
/// Written here rather than with `humantime::format_duration`, which breaks 90 days into
/// "2months 29days 2h 52m 48s" (its month is 30.44 days): a reviewer must read back what the
/// author wrote. Whole years (humantime's `y` = 365.25 days) are written as years, anything else
/// in days and smaller units.
pub fn format_duration(d: Duration) -> String {
    const YEAR: u64 = 31_557_600;
    if d.is_zero() {
        return "0s".into();
    }
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos == 0 && secs % YEAR == 0 {
        return format!("{}y", secs / YEAR);
    }
    let mut parts = Vec::new();
    let units: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut rest = secs;
    for (size, unit) in units {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (n, unit) in [(ms, "ms"), (us, "us"), (ns, "ns")] {
        if n > 0 {
            parts.push(format!("{n}{unit}"));
        }
    }
    parts.join(" ")
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string with a unit, e.g. \"30s\" or \"250ms\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(DurationError::NoUnit(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(DurationError::NoUnit(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(DurationError::NoUnit(v.to_string())))
    }
}

/// `#[serde(with = "tollgate::units::duration")]` for a `Duration` field.
pub mod duration {
    use super::*;

    /// Writes the duration as a string with units.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a string with a unit; refuses bare numbers.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// `#[serde(with = "tollgate::units::duration_opt")]` for an `Option<Duration>` field (use with
/// `#[serde(default)]`).
pub mod duration_opt {
    use super::*;

    /// Writes the duration as a string with units, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor).map(Some)
    }
}

/// An exact amount of money (or any decimal quantity a threshold needs): parsed from a string
/// (`"1000.50"`) or an integer, never from a binary float literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

/// Why a money text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not a plain decimal number.
    #[error("`{0}`: not an exact decimal amount (write it as a string, e.g. \"1000.00\")")]
    Invalid(String),
    /// A binary floating-point literal, which cannot hold most decimal amounts exactly.
    #[error("`{0}`: write amounts as strings (\"{0}\") or integers; a float literal is not exact")]
    Float(String),
}

impl Money {
    /// The amount as a decimal.
    pub fn decimal(self) -> Decimal {
        self.0
    }

    /// True if the amount is below zero.
    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// A whole amount.
    pub fn from_integer(n: i64) -> Self {
        Money(Decimal::from(n))
    }
}

impl From<Decimal> for Money {
    fn from(d: Decimal) -> Self {
        Money(d)
    }
}

/// Whole amounts from integers (`Condition::amount_over("amount", 1000)`). Every integer type
/// converts exactly; there is deliberately no `From<f64>`.
macro_rules! money_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Money {
            fn from(n: $t) -> Self {
                Money(Decimal::from(n))
            }
        }
    )*};
}
money_from_int!(i32, i64, u32, u64);

impl FromStr for Money {
    type Err = MoneyError;

    /// Plain decimal notation only: an optional `-`, digits, an optional `.` and digits. No
    /// exponent, no `+`, no spaces, no thousands separators.
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        let body = s.strip_prefix('-').unwrap_or(s);
        let mut parts = body.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err(MoneyError::Invalid(s.to_owned()));
        }
        Decimal::from_str_exact(s)
            .map(Money)
            .map_err(|_| MoneyError::Invalid(s.to_owned()))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an exact decimal amount as a string (\"1000.00\") or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                Ok(Money(Decimal::from(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Ok(Money(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                Err(E::custom(MoneyError::Float(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in ["30", "", " ", "0", "-5s", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            parse_duration("1M"),
            Err(DurationError::AmbiguousMonth(_))
        ));
        assert!(matches!(
            parse_duration("2 M"),
            Err(DurationError::AmbiguousMonth(_))
        ));
        assert!(parse_duration("1month").is_ok());
        assert!(parse_duration("5m").is_ok());
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn durations_round_trip_through_their_text() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(90),
            Duration::from_secs(86_400 * 3 + 7),
            Duration::from_secs(90 * 86_400),
            Duration::from_secs(6 * 31_557_600),
            Duration::new(3_661, 1_002_003),
            Duration::from_nanos(7),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(6 * 31_557_600)), "6y");
        assert_eq!(
            format_duration(Duration::new(90, 250_000_000)),
            "1m 30s 250ms"
        );
    }

    #[test]
    fn money_is_exact_and_refuses_floats_and_odd_notation() {
        let m: Money = "1000.10".parse().unwrap();
        assert_eq!(m.to_string(), "1000.10");
        assert!("0.30".parse::<Money>().unwrap() == "0.3".parse::<Money>().unwrap());
        for bad in [
            "1e3", "+5", " 5", "5.", ".5", "1,000", "", "-", "NaN", "0x10",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?} accepted");
        }
        assert!("-2.5".parse::<Money>().unwrap().is_negative());
        let err = serde_json::from_str::<Money>("0.1").unwrap_err();
        assert!(
            err.to_string().contains("float literal is not exact"),
            "{err}"
        );
        assert_eq!(
            serde_json::from_str::<Money>("12").unwrap().to_string(),
            "12"
        );
    }

    #[test]
    fn money_from_integers_is_exact() {
        assert_eq!(Money::from(1000).to_string(), "1000");
        assert_eq!(Money::from(-3i64), Money::from_integer(-3));
        assert_eq!(Money::from(u64::MAX).to_string(), u64::MAX.to_string());
        assert_eq!(Money::from(7u32), "7".parse::<Money>().unwrap());
    }
}
