//! Durations as Istio accepts them in YAML: `7s`, `0.5s`, `1.5s`, `100ms`, `5m`, `1h`,
//! `1h30m` (Go's `time.ParseDuration` syntax, which is what Istio's CRDs take).

use std::{fmt, str::FromStr};

#[cfg(feature = "serde")]
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration, parsed once when config is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

/// Why a string is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDuration {
    /// Empty input.
    #[error("empty duration")]
    Empty,
    /// A leading `-`.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// Anything else that is not `<number><unit>...`.
    #[error("invalid duration {0:?}: expected a number and a unit (ns, us, ms, s, m, h), e.g. \"1.5s\" or \"100ms\"")]
    Malformed(String),
    /// Beyond the largest duration Istio's API server accepts.
    #[error("duration {0:?} is too large: the largest Istio accepts is 2562047h47m16.854775807s (about 292 years)")]
    Overflow(String),
    /// Shorter than 1 ms, where Istio's field rule wants more ([`Duration::check_field`]).
    #[error("duration must be at least 1ms, got {0}")]
    TooShort(Duration),
    /// Finer than a millisecond ([`Duration::check_field`]).
    #[error("only durations to ms precision are supported, got {0}")]
    Precision(Duration),
}

/// The largest duration, in nanoseconds: Go's `time.Duration` and CEL's `duration()`, which
/// Istio's CRD validation uses, hold a signed 64-bit count of nanoseconds (protobuf's own
/// limit, 10,000 years, is wider). Anything longer is refused at load, as the API server does.
pub const MAX_NANOS: u128 = i64::MAX as u128;

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl Duration {
    /// From a std duration.
    pub const fn new(d: std::time::Duration) -> Self {
        Self(d)
    }

    /// The std duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Istio's rule for a duration field (`timeout`, `fixedDelay`, `perTryTimeout`, ...): at
    /// least 1 ms, to the millisecond.
    pub fn check_field(self) -> Result<Self, InvalidDuration> {
        if self.0 < std::time::Duration::from_millis(1) {
            Err(InvalidDuration::TooShort(self))
        } else if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            Err(InvalidDuration::Precision(self))
        } else {
            Ok(self)
        }
    }
}

impl FromStr for Duration {
    type Err = InvalidDuration;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = || InvalidDuration::Malformed(input.to_string());
        let s = input.trim();
        if s.is_empty() {
            return Err(InvalidDuration::Empty);
        }
        if s.starts_with('-') {
            return Err(InvalidDuration::Negative(input.to_string()));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(Self::default());
        }
        let mut rest = s;
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, after) = rest.split_at(int_len);
            let (frac_part, after) = match after.strip_prefix('.') {
                Some(a) => {
                    let n = a.bytes().take_while(u8::is_ascii_digit).count();
                    a.split_at(n)
                }
                None => ("", after),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(malformed());
            }
            let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let scale = UNITS.iter().find(|(u, _)| *u == unit).map(|(_, n)| *n).ok_or_else(malformed)?;
            let overflow = || InvalidDuration::Overflow(input.to_string());
            let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| overflow())? };
            let mut nanos = int.checked_mul(scale).ok_or_else(overflow)?;
            // Fractions: exact to the nanosecond, extra digits truncated (as Go does).
            let mut place = scale;
            for digit in frac_part.bytes().take(30) {
                place /= 10;
                if place == 0 {
                    break;
                }
                nanos += u128::from(digit - b'0') * place;
            }
            total = total.checked_add(nanos).ok_or_else(overflow)?;
            rest = after;
        }
        if total > MAX_NANOS {
            return Err(InvalidDuration::Overflow(input.to_string()));
        }
        let secs = (total / 1_000_000_000) as u64;
        Ok(Self(std::time::Duration::new(secs, (total % 1_000_000_000) as u32)))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: `7s`, `1.5s`, `100ms`, `250us`, `3ns`; it parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos.is_multiple_of(1_000_000_000) {
            return write!(f, "{}s", nanos / 1_000_000_000);
        }
        if nanos >= 1_000_000_000 {
            let frac = format!("{:09}", nanos % 1_000_000_000);
            return write!(f, "{}.{}s", nanos / 1_000_000_000, frac.trim_end_matches('0'));
        }
        if nanos.is_multiple_of(1_000_000) {
            return write!(f, "{}ms", nanos / 1_000_000);
        }
        if nanos.is_multiple_of(1_000) {
            return write!(f, "{}us", nanos / 1_000);
        }
        write!(f, "{nanos}ns")
    }
}

#[cfg(feature = "serde")]
impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration as Std;

    fn p(s: &str) -> Result<Std, InvalidDuration> {
        s.parse::<Duration>().map(Duration::get)
    }

    #[test]
    fn istio_forms() {
        assert_eq!(p("7s"), Ok(Std::from_secs(7)));
        assert_eq!(p("0.5s"), Ok(Std::from_millis(500)));
        assert_eq!(p("1.5s"), Ok(Std::from_millis(1500)));
        assert_eq!(p("100ms"), Ok(Std::from_millis(100)));
        assert_eq!(p("5m"), Ok(Std::from_secs(300)));
        assert_eq!(p("1h"), Ok(Std::from_secs(3600)));
        assert_eq!(p("1h30m"), Ok(Std::from_secs(5400)));
        assert_eq!(p(".5s"), Ok(Std::from_millis(500)));
        assert_eq!(p("250us"), Ok(Std::from_micros(250)));
        assert_eq!(p("0"), Ok(Std::ZERO));
        assert_eq!(p("0s"), Ok(Std::ZERO));
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(p(""), Err(InvalidDuration::Empty));
        assert_eq!(p("-1s"), Err(InvalidDuration::Negative("-1s".into())));
        for bad in ["7", "s", "1.s.", "7 s", "1d", "abc", "1..5s", "ms", "5sec", "."] {
            assert!(matches!(p(bad), Err(InvalidDuration::Malformed(_))), "{bad} -> {:?}", p(bad));
        }
        assert!(matches!(p("99999999999999999999999h"), Err(InvalidDuration::Overflow(_))));
        // Beyond Go's/CEL's int64 nanoseconds: the API server refuses these.
        for big in ["18446744073709551615ms", "2562048h", "9223372036854775808ns", "300y"] {
            assert!(p(big).is_err(), "{big} -> {:?}", p(big));
        }
        assert!(matches!(p("18446744073709551615ms"), Err(InvalidDuration::Overflow(_))));
        assert_eq!(p("2562047h47m16.854775807s"), Ok(Std::from_nanos(i64::MAX as u64)));
        assert_eq!(p("9223372036854775807ns"), Ok(Std::from_nanos(i64::MAX as u64)));
    }

    #[test]
    fn display_is_canonical() {
        let cases =
            [("7s", "7s"), ("0.5s", "500ms"), ("1.5s", "1.5s"), ("5m", "300s"), ("100ms", "100ms"), ("0s", "0s")];
        for (input, shown) in cases {
            assert_eq!(input.parse::<Duration>().unwrap().to_string(), shown);
        }
    }

    /// The reference model: a list of (amount, unit index) parts summed in nanoseconds.
    fn parts() -> impl Strategy<Value = Vec<(u64, usize, Option<u32>)>> {
        prop::collection::vec((0u64..100_000, 0usize..UNITS.len(), prop::option::of(0u32..1000)), 1..4)
    }

    proptest! {
        #[test]
        fn parses_like_the_model(parts in parts()) {
            let mut text = String::new();
            let mut want: u128 = 0;
            for (n, unit, frac) in &parts {
                let (name, scale) = UNITS[*unit];
                text.push_str(&n.to_string());
                want += u128::from(*n) * scale;
                if let Some(f) = frac {
                    let digits = format!("{f:03}");
                    text.push('.');
                    text.push_str(&digits);
                    want += u128::from(*f) * scale / 1000;
                }
                text.push_str(name);
            }
            prop_assert_eq!(p(&text).unwrap().as_nanos(), want);
        }

        #[test]
        fn display_round_trips(nanos in 0u64..u64::MAX / 4) {
            let d = Duration(Std::from_nanos(nanos));
            prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }

        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Duration>();
        }
    }
}
