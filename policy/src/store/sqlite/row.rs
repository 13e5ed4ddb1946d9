//! Conversions between [`Grant`] and SQLite rows and values.

use jiff::{SignedDuration, Timestamp};
use rusqlite::types::Value;
use rusqlite::Row;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::{is_whole_micros, Decision, Grant, GrantState};
use crate::store::details::Details;

/// Column list in the order [`decode`] reads it.
pub(super) const COLUMNS: &str = "id, identity, target, role, not_before, expires_at, reason, \
     issued_by, created_at, state, approvals, revoked_by, revoked_at, revoke_reason, rule, \
     ticket, duration_us, pending_until, extends, idempotency_key, details, version";

/// Placeholders for every column of [`COLUMNS`].
pub(super) const PLACEHOLDERS: &str =
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?";

/// The values to bind, in [`COLUMNS`] order, for inserting `grant`.
pub(super) fn encode(grant: &Grant) -> Result<Vec<Value>, PolicyError> {
    let approvals = serde_json::to_string(&grant.approvals)
        .map_err(|e| PolicyError::store("encode approvals", e))?;
    let details = serde_json::to_string(&Details::of(grant))
        .map_err(|e| PolicyError::store("encode details", e))?;
    let duration_us = i64::try_from(grant.duration.as_micros()).map_err(|_| {
        PolicyError::InvalidRequest(format!("duration {:#} is out of range", grant.duration))
    })?;
    let version = i64::try_from(grant.version)
        .map_err(|_| PolicyError::store("encode version", grant.version))?;
    Ok(vec![
        Value::Text(grant.id.hyphenated().to_string()),
        Value::Text(grant.identity.clone()),
        Value::Text(grant.target.clone()),
        Value::Text(grant.role.clone()),
        Value::Integer(stored_micros("not_before", grant.not_before)?),
        Value::Integer(stored_micros("expires_at", grant.expires_at)?),
        Value::Text(grant.reason.clone()),
        Value::Text(grant.issued_by.clone()),
        Value::Integer(stored_micros("created_at", grant.created_at)?),
        Value::Text(grant.state.as_str().to_owned()),
        Value::Text(approvals),
        opt_text(grant.revoked_by.as_deref()),
        match grant.revoked_at {
            Some(t) => Value::Integer(stored_micros("revoked_at", t)?),
            None => Value::Null,
        },
        opt_text(grant.revoke_reason.as_deref()),
        opt_text(grant.rule.as_deref()),
        opt_text(grant.ticket.as_deref()),
        Value::Integer(duration_us),
        match grant.pending_until {
            Some(t) => Value::Integer(stored_micros("pending_until", t)?),
            None => Value::Null,
        },
        grant
            .extends
            .map_or(Value::Null, |id| Value::Text(id.hyphenated().to_string())),
        opt_text(grant.idempotency_key.as_deref()),
        Value::Text(details),
        Value::Integer(version),
    ])
}

/// Reads one row selected with [`COLUMNS`].
pub(super) fn decode(row: &Row<'_>) -> Result<Grant, PolicyError> {
    let err = |e: rusqlite::Error| PolicyError::store("read grant row", e);
    let id_text: String = row.get(0).map_err(err)?;
    let id = Uuid::parse_str(&id_text)
        .map_err(|e| PolicyError::store(&format!("grant row id {id_text:?}"), e))?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        PolicyError::Store(format!("grant {id}: bad {what} in store: {e}"))
    };
    let state_text: String = row.get(9).map_err(err)?;
    let state: GrantState = state_text.parse().map_err(|e| corrupt("state", &e))?;
    let approvals_text: String = row.get(10).map_err(err)?;
    let approvals: Vec<Decision> =
        serde_json::from_str(&approvals_text).map_err(|e| corrupt("approvals", &e))?;
    let details_text: String = row.get(20).map_err(err)?;
    let details: Details =
        serde_json::from_str(&details_text).map_err(|e| corrupt("details", &e))?;
    let ts = |idx: usize, what: &str| -> Result<Timestamp, PolicyError> {
        let micros: i64 = row.get(idx).map_err(err)?;
        Timestamp::from_microsecond(micros).map_err(|e| corrupt(what, &e))
    };
    let opt_ts = |idx: usize, what: &str| -> Result<Option<Timestamp>, PolicyError> {
        match row.get::<_, Option<i64>>(idx).map_err(err)? {
            Some(micros) => Ok(Some(
                Timestamp::from_microsecond(micros).map_err(|e| corrupt(what, &e))?,
            )),
            None => Ok(None),
        }
    };
    let extends = match row.get::<_, Option<String>>(18).map_err(err)? {
        Some(text) => Some(Uuid::parse_str(&text).map_err(|e| corrupt("extends", &e))?),
        None => None,
    };
    let version: i64 = row.get(21).map_err(err)?;
    Ok(Grant {
        id,
        identity: row.get(1).map_err(err)?,
        target: row.get(2).map_err(err)?,
        role: row.get(3).map_err(err)?,
        not_before: ts(4, "not_before")?,
        expires_at: ts(5, "expires_at")?,
        reason: row.get(6).map_err(err)?,
        issued_by: row.get(7).map_err(err)?,
        created_at: ts(8, "created_at")?,
        state,
        approvals,
        revoked_by: row.get(11).map_err(err)?,
        revoked_at: opt_ts(12, "revoked_at")?,
        revoke_reason: row.get(13).map_err(err)?,
        rule: row.get(14).map_err(err)?,
        ticket: row.get(15).map_err(err)?,
        duration: SignedDuration::from_micros(row.get(16).map_err(err)?),
        pending_until: opt_ts(17, "pending_until")?,
        denial: details.denial,
        cancellation: details.cancellation,
        break_glass: details.break_glass,
        review: details.review,
        extends,
        notified: details.notified,
        idempotency_key: row.get(19).map_err(err)?,
        version: u64::try_from(version).map_err(|e| corrupt("version", &e))?,
    })
}

/// `t` as stored microseconds; refuses sub-microsecond parts, which would not read back.
pub(super) fn stored_micros(field: &str, t: Timestamp) -> Result<i64, PolicyError> {
    if is_whole_micros(t) {
        Ok(t.as_microsecond())
    } else {
        Err(PolicyError::InvalidRequest(format!(
            "{field} {t} has sub-microsecond precision, which the grant store does not keep; \
             round it with jitgate_policy::grant::floor_to_micros"
        )))
    }
}

/// `t` rounded down to microseconds, for comparisons against stored values: since stored
/// values are whole microseconds, `stored <= t` and `t < stored` keep their truth value.
pub(super) fn query_micros(t: Timestamp) -> i64 {
    let micros = t.as_nanosecond().div_euclid(1_000);
    // A Timestamp spans ±10 000 years, about ±3.2e17 µs: always within i64.
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}
