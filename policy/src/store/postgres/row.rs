//! How PostgreSQL keeps each kind of grant column ([`crate::store::columns`] says which
//! columns there are), as query parameters and in rows read by column name.
//!
//! Timestamps travel as `timestamptz` in PostgreSQL's binary format (microseconds since
//! 2000-01-01 UTC) through [`PgTimestamp`], so the round trip is exact and no float or
//! text conversion is involved. `approvals` and `details` are `jsonb` with the same JSON
//! shapes as the SQLite store's columns.

use std::error::Error;

use bytes::BytesMut;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Json, ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use super::describe::describe;
use crate::error::PolicyError;
use crate::grant::Grant;
use crate::store::columns::{self, ReadColumn, Stored, WriteColumn, COLUMNS};

/// Unix epoch → PostgreSQL epoch (2000-01-01T00:00:00Z), in microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Earliest `timestamptz` PostgreSQL accepts (4714-11-24 BC), µs since its epoch:
/// `MIN_TIMESTAMP` in `src/include/datatype/timestamp.h`.
const PG_MIN_MICROS: i64 = -211_813_488_000_000_000;

/// First `timestamptz` past PostgreSQL's range (294277-01-01), µs since its epoch:
/// `END_TIMESTAMP` in `src/include/datatype/timestamp.h`. Never reached by a
/// [`Timestamp`] (year 9999 at most), kept for symmetry.
const PG_END_MICROS: i64 = 9_223_371_331_200_000_000;

/// A `timestamptz` value: microseconds since the PostgreSQL epoch, sent and read in the
/// binary format. `i64::MIN`/`i64::MAX` are `-infinity`/`infinity`, which query bounds
/// outside PostgreSQL's range use (they compare like the instant they stand for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PgTimestamp(i64);

impl PgTimestamp {
    /// A stored instant; refuses sub-microsecond parts (they would not read back) and
    /// instants PostgreSQL cannot store.
    pub(super) fn stored(field: &str, t: Timestamp) -> Result<Self, PolicyError> {
        let pg = columns::whole_micros(field, t)?.as_microsecond() - PG_EPOCH_UNIX_MICROS;
        if !(PG_MIN_MICROS..PG_END_MICROS).contains(&pg) {
            return Err(PolicyError::InvalidRequest(format!(
                "{field} {t} is before 4714 BC, which PostgreSQL cannot store"
            )));
        }
        Ok(PgTimestamp(pg))
    }

    /// A query instant rounded down to microseconds: since stored values are whole
    /// microseconds, `stored <= t` and `t < stored` keep their truth value. Instants
    /// outside PostgreSQL's range become ∓infinity, which compare the same way.
    pub(super) fn query(t: Timestamp) -> Self {
        let unix = t.as_nanosecond().div_euclid(1_000);
        let pg = unix - i128::from(PG_EPOCH_UNIX_MICROS);
        if pg < i128::from(PG_MIN_MICROS) {
            PgTimestamp(i64::MIN)
        } else {
            // A Timestamp ends in year 9999, far below END_TIMESTAMP: always in range.
            PgTimestamp(i64::try_from(pg).unwrap_or(i64::MAX))
        }
    }

    /// The instant, or a description of why it is not one (infinity, out of range).
    fn to_timestamp(self) -> Result<Timestamp, String> {
        if self.0 == i64::MIN || self.0 == i64::MAX {
            return Err("infinite timestamp".to_owned());
        }
        self.0
            .checked_add(PG_EPOCH_UNIX_MICROS)
            .ok_or_else(|| "timestamp out of range".to_owned())
            .and_then(|unix| Timestamp::from_microsecond(unix).map_err(|e| e.to_string()))
    }
}

impl ToSql for PgTimestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("timestamptz of {} bytes, expected 8", raw.len()))?;
        Ok(PgTimestamp(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// A grant as query parameters, in [`COLUMNS`] order.
pub(super) struct Encoded(Vec<Box<dyn ToSql + Sync + Send>>);

impl Encoded {
    /// Every column's value, in [`COLUMNS`] order.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// `grant` as parameters; refuses what PostgreSQL would not store as given (sub-µs or
/// out-of-range instants, NUL characters).
pub(super) fn encode(grant: &Grant) -> Result<Encoded, PolicyError> {
    let mut encoded = Encoded(Vec::with_capacity(COLUMNS.len()));
    columns::write(grant, &mut encoded)?;
    refuse_nul(grant)?;
    Ok(encoded)
}

impl WriteColumn for Encoded {
    fn uuid(&mut self, _: &'static str, value: Option<Uuid>) {
        self.0.push(Box::new(value));
    }

    fn text(&mut self, _: &'static str, value: Option<&str>) {
        self.0.push(Box::new(value.map(str::to_owned)));
    }

    fn integer(&mut self, _: &'static str, value: i64) {
        self.0.push(Box::new(value));
    }

    fn instant(
        &mut self,
        column: &'static str,
        value: Option<Timestamp>,
    ) -> Result<(), PolicyError> {
        let stored = value.map(|t| PgTimestamp::stored(column, t)).transpose()?;
        self.0.push(Box::new(stored));
        Ok(())
    }

    fn json<T: Serialize>(&mut self, column: &'static str, value: &T) -> Result<(), PolicyError> {
        let value = serde_json::to_value(value)
            .map_err(|e| PolicyError::store(&format!("encode {column}"), e))?;
        self.0.push(Box::new(Json(value)));
        Ok(())
    }
}

/// PostgreSQL text and `jsonb` cannot hold NUL (U+0000); say so instead of failing with
/// an encoding error from the server.
fn refuse_nul(grant: &Grant) -> Result<(), PolicyError> {
    let decisions = grant
        .approvals
        .iter()
        .chain(&grant.denial)
        .chain(&grant.cancellation)
        .chain(&grant.review);
    let mut texts: Vec<(&str, &str)> = vec![
        ("identity", &grant.identity),
        ("target", &grant.target),
        ("role", &grant.role),
        ("reason", &grant.reason),
        ("issued_by", &grant.issued_by),
    ];
    let optional = [
        ("revoked_by", &grant.revoked_by),
        ("revoke_reason", &grant.revoke_reason),
        ("rule", &grant.rule),
        ("ticket", &grant.ticket),
        ("idempotency_key", &grant.idempotency_key),
    ];
    texts.extend(
        optional
            .into_iter()
            .filter_map(|(name, v)| v.as_deref().map(|v| (name, v))),
    );
    for d in decisions {
        texts.push(("decision by", &d.by));
        if let Some(comment) = &d.comment {
            texts.push(("decision comment", comment));
        }
    }
    texts.extend(grant.notified.iter().map(|n| ("notified", n.as_str())));
    match texts.into_iter().find(|(_, v)| v.contains('\0')) {
        Some((field, _)) => Err(PolicyError::InvalidRequest(format!(
            "{field} contains a NUL character, which the grant store cannot keep"
        ))),
        None => Ok(()),
    }
}

/// Reads one row selected with [`COLUMNS`].
pub(super) fn decode(row: &Row) -> Result<Grant, PolicyError> {
    columns::read(row)
}

/// A driver failure reading a column.
fn err(e: tokio_postgres::Error) -> PolicyError {
    PolicyError::store("read grant row", describe(&e))
}

impl ReadColumn for Row {
    fn id(&self) -> Result<Uuid, PolicyError> {
        self.try_get("id").map_err(err)
    }

    fn text(&self, column: &str) -> Result<String, PolicyError> {
        self.try_get(column).map_err(err)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, PolicyError> {
        self.try_get(column).map_err(err)
    }

    fn integer(&self, column: &str) -> Result<i64, PolicyError> {
        self.try_get(column).map_err(err)
    }

    fn instant(&self, column: &str) -> Result<Stored<Timestamp>, PolicyError> {
        let raw: PgTimestamp = self.try_get(column).map_err(err)?;
        Ok(raw.to_timestamp())
    }

    fn opt_instant(&self, column: &str) -> Result<Stored<Option<Timestamp>>, PolicyError> {
        let raw: Option<PgTimestamp> = self.try_get(column).map_err(err)?;
        Ok(raw.map(PgTimestamp::to_timestamp).transpose())
    }

    fn opt_uuid(&self, column: &str) -> Result<Stored<Option<Uuid>>, PolicyError> {
        Ok(Ok(self.try_get(column).map_err(err)?))
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<Stored<T>, PolicyError> {
        let Json(value): Json<serde_json::Value> = self.try_get(column).map_err(err)?;
        Ok(serde_json::from_value(value).map_err(|e| e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn stored_instants_are_microseconds_since_2000() {
        let pg = |t| PgTimestamp::stored("t", ts(t)).unwrap().0;
        assert_eq!(pg("2000-01-01T00:00:00Z"), 0);
        assert_eq!(pg("1999-12-31T23:59:59.999999Z"), -1);
        assert_eq!(pg("1970-01-01T00:00:00Z"), -PG_EPOCH_UNIX_MICROS);
        for t in [
            "1969-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-30T00:00:00.000001Z",
        ] {
            let stored = PgTimestamp::stored("t", ts(t)).unwrap();
            assert_eq!(stored.to_timestamp().unwrap(), ts(t));
        }
    }

    #[test]
    fn stored_instants_refuse_nanoseconds_and_what_postgres_cannot_hold() {
        let err =
            PgTimestamp::stored("expires_at", ts("2030-01-01T00:00:00.000000001Z")).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidRequest(ref m) if m.contains("expires_at")));
        let err = PgTimestamp::stored("not_before", ts("-005000-01-01T00:00:00Z")).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidRequest(ref m) if m.contains("4714 BC")));
    }

    #[test]
    fn query_instants_round_down_and_saturate_to_infinity() {
        let q = |t| PgTimestamp::query(ts(t)).0;
        assert_eq!(q("2000-01-01T00:00:00.000000999Z"), 0);
        assert_eq!(q("1999-12-31T23:59:59.999999999Z"), -1);
        assert_eq!(PgTimestamp::query(Timestamp::MIN).0, i64::MIN);
        assert!(PgTimestamp(i64::MIN).to_timestamp().is_err());
        assert!(PgTimestamp(i64::MAX).to_timestamp().is_err());
    }
}
