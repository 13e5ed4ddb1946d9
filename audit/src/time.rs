//! Timestamps in the audit log: RFC 3339, UTC, exactly six fractional digits.
//!
//! A fixed width keeps lines sortable and diffable as text, and microseconds are what
//! PostgreSQL itself records (`timestamptz` resolution), so nothing finer is pretended.
//! Serialization writes straight into the output through `collect_str` (no temporary
//! `String`); deserialization accepts any RFC 3339 timestamp jiff can parse.

use std::fmt;

use jiff::Timestamp;

/// The current time truncated to whole microseconds, so an event survives a round trip
/// through the log unchanged (`PartialEq` holds after reading it back).
pub fn now_micros() -> Timestamp {
    truncate_micros(Timestamp::now())
}

/// Drops sub-microsecond precision, matching what the log stores.
pub fn truncate_micros(ts: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(ts.as_microsecond()).unwrap_or(ts)
}

/// Display adapter rendering `ts` as in the log, e.g. `2026-11-27T23:38:17.123456Z`.
pub fn display_micros(ts: &Timestamp) -> impl fmt::Display + '_ {
    Micros(ts)
}

struct Micros<'a>(&'a Timestamp);

impl fmt::Display for Micros<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff's Display prints UTC with `Z`; the precision truncates/pads to 6 digits.
        write!(f, "{:.6}", self.0)
    }
}

/// `#[serde(with = "crate::time::micros")]` for `jiff::Timestamp` fields.
pub mod micros {
    use std::fmt;

    use jiff::Timestamp;
    use serde::{de, Deserializer, Serializer};

    /// Writes the timestamp as a µs RFC 3339 string without allocating.
    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::display_micros(ts))
    }

    /// Parses any RFC 3339 timestamp (with or without fractional seconds).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_str(Visitor)
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Timestamp;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 timestamp such as 2026-11-27T23:38:17.123456Z")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
            v.parse::<Timestamp>().map_err(E::custom)
        }
    }
}

/// `#[serde(with = "crate::time::micros_opt")]` for `Option<jiff::Timestamp>` fields
/// (pair it with `default` and `skip_serializing_if = "Option::is_none"`).
pub mod micros_opt {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as a µs RFC 3339 string (and `None` as null).
    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.collect_str(&super::display_micros(ts)),
            None => s.serialize_none(),
        }
    }

    /// Parses an RFC 3339 string or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse::<Timestamp>().map_err(serde::de::Error::custom))
            .transpose()
    }
}
