//! Conversions between [`Grant`] and PostgreSQL rows and parameters.
//!
//! Timestamps travel as `timestamptz` in PostgreSQL's binary format (microseconds since
//! 2000-01-01 UTC) through [`PgTimestamp`], so the round trip is exact and no float or
//! text conversion is involved. `approvals` and `details` are `jsonb` with the same JSON
//! shapes as the SQLite store's columns.

use std::error::Error;

use bytes::BytesMut;
use jiff::{SignedDuration, Timestamp};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Json, ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::{is_whole_micros, Decision, Grant, GrantState};
use crate::store::details::Details;

/// Column list in the order [`decode`] reads it and [`Encoded::params`] binds it.
pub(super) const COLUMNS: [&str; 22] = [
    "id",
    "identity",
    "target",
    "role",
    "not_before",
    "expires_at",
    "reason",
    "issued_by",
    "created_at",
    "state",
    "approvals",
    "revoked_by",
    "revoked_at",
    "revoke_reason",
    "rule",
    "ticket",
    "duration_us",
    "pending_until",
    "extends",
    "idempotency_key",
    "details",
    "version",
];

/// Columns an update never writes: the contract says they never change.
pub(super) const IMMUTABLE: [&str; 3] = ["id", "issued_by", "created_at"];

/// `COLUMNS` joined for a `SELECT` list.
pub(super) fn column_list() -> String {
    COLUMNS.join(", ")
}

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
        if !is_whole_micros(t) {
            return Err(PolicyError::InvalidRequest(format!(
                "{field} {t} has sub-microsecond precision, which the grant store does not \
                 keep; round it with jitgate_policy::grant::floor_to_micros"
            )));
        }
        let pg = t.as_microsecond() - PG_EPOCH_UNIX_MICROS;
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
pub(super) struct Encoded {
    id: Uuid,
    identity: String,
    target: String,
    role: String,
    not_before: PgTimestamp,
    expires_at: PgTimestamp,
    reason: String,
    issued_by: String,
    created_at: PgTimestamp,
    state: &'static str,
    approvals: Json<serde_json::Value>,
    revoked_by: Option<String>,
    revoked_at: Option<PgTimestamp>,
    revoke_reason: Option<String>,
    rule: Option<String>,
    ticket: Option<String>,
    duration_us: i64,
    pending_until: Option<PgTimestamp>,
    extends: Option<Uuid>,
    idempotency_key: Option<String>,
    details: Json<serde_json::Value>,
    version: i64,
}

impl Encoded {
    /// Every column's value, in [`COLUMNS`] order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 22] {
        [
            &self.id,
            &self.identity,
            &self.target,
            &self.role,
            &self.not_before,
            &self.expires_at,
            &self.reason,
            &self.issued_by,
            &self.created_at,
            &self.state,
            &self.approvals,
            &self.revoked_by,
            &self.revoked_at,
            &self.revoke_reason,
            &self.rule,
            &self.ticket,
            &self.duration_us,
            &self.pending_until,
            &self.extends,
            &self.idempotency_key,
            &self.details,
            &self.version,
        ]
    }
}

/// `grant` as parameters; refuses what PostgreSQL would not store as given (sub-µs or
/// out-of-range instants, NUL characters).
pub(super) fn encode(grant: &Grant) -> Result<Encoded, PolicyError> {
    let approvals = serde_json::to_value(&grant.approvals)
        .map_err(|e| PolicyError::store("encode approvals", e))?;
    let details = serde_json::to_value(Details::of(grant))
        .map_err(|e| PolicyError::store("encode details", e))?;
    let duration_us = i64::try_from(grant.duration.as_micros()).map_err(|_| {
        PolicyError::InvalidRequest(format!("duration {:#} is out of range", grant.duration))
    })?;
    let version = i64::try_from(grant.version)
        .map_err(|_| PolicyError::store("encode version", grant.version))?;
    let opt_ts =
        |field: &str, t: Option<Timestamp>| t.map(|t| PgTimestamp::stored(field, t)).transpose();
    let encoded = Encoded {
        id: grant.id,
        identity: grant.identity.clone(),
        target: grant.target.clone(),
        role: grant.role.clone(),
        not_before: PgTimestamp::stored("not_before", grant.not_before)?,
        expires_at: PgTimestamp::stored("expires_at", grant.expires_at)?,
        reason: grant.reason.clone(),
        issued_by: grant.issued_by.clone(),
        created_at: PgTimestamp::stored("created_at", grant.created_at)?,
        state: grant.state.as_str(),
        approvals: Json(approvals),
        revoked_by: grant.revoked_by.clone(),
        revoked_at: opt_ts("revoked_at", grant.revoked_at)?,
        revoke_reason: grant.revoke_reason.clone(),
        rule: grant.rule.clone(),
        ticket: grant.ticket.clone(),
        duration_us,
        pending_until: opt_ts("pending_until", grant.pending_until)?,
        extends: grant.extends,
        idempotency_key: grant.idempotency_key.clone(),
        details: Json(details),
        version,
    };
    refuse_nul(grant)?;
    Ok(encoded)
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
    let err = |e: tokio_postgres::Error| {
        PolicyError::store("read grant row", super::describe::describe(&e))
    };
    let id: Uuid = row.try_get(0).map_err(err)?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        PolicyError::Store(format!("grant {id}: bad {what} in store: {e}"))
    };
    let ts = |idx: usize, what: &str| -> Result<Timestamp, PolicyError> {
        let raw: PgTimestamp = row.try_get(idx).map_err(err)?;
        raw.to_timestamp().map_err(|e| corrupt(what, &e))
    };
    let opt_ts = |idx: usize, what: &str| -> Result<Option<Timestamp>, PolicyError> {
        match row.try_get::<_, Option<PgTimestamp>>(idx).map_err(err)? {
            Some(raw) => raw.to_timestamp().map(Some).map_err(|e| corrupt(what, &e)),
            None => Ok(None),
        }
    };
    let state_text: &str = row.try_get(9).map_err(err)?;
    let state: GrantState = state_text.parse().map_err(|e| corrupt("state", &e))?;
    let Json(approvals_value): Json<serde_json::Value> = row.try_get(10).map_err(err)?;
    let approvals: Vec<Decision> =
        serde_json::from_value(approvals_value).map_err(|e| corrupt("approvals", &e))?;
    let Json(details_value): Json<serde_json::Value> = row.try_get(20).map_err(err)?;
    let details: Details =
        serde_json::from_value(details_value).map_err(|e| corrupt("details", &e))?;
    let version: i64 = row.try_get(21).map_err(err)?;
    Ok(Grant {
        id,
        identity: row.try_get(1).map_err(err)?,
        target: row.try_get(2).map_err(err)?,
        role: row.try_get(3).map_err(err)?,
        not_before: ts(4, "not_before")?,
        expires_at: ts(5, "expires_at")?,
        reason: row.try_get(6).map_err(err)?,
        issued_by: row.try_get(7).map_err(err)?,
        created_at: ts(8, "created_at")?,
        state,
        approvals,
        revoked_by: row.try_get(11).map_err(err)?,
        revoked_at: opt_ts(12, "revoked_at")?,
        revoke_reason: row.try_get(13).map_err(err)?,
        rule: row.try_get(14).map_err(err)?,
        ticket: row.try_get(15).map_err(err)?,
        duration: SignedDuration::from_micros(row.try_get(16).map_err(err)?),
        pending_until: opt_ts(17, "pending_until")?,
        denial: details.denial,
        cancellation: details.cancellation,
        break_glass: details.break_glass,
        review: details.review,
        extends: row.try_get(18).map_err(err)?,
        notified: details.notified,
        idempotency_key: row.try_get(19).map_err(err)?,
        version: u64::try_from(version).map_err(|e| corrupt("version", &e))?,
    })
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
