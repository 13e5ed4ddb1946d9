//! Conversions between [`Grant`] and SQLite rows and values.

use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::Row;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::{is_whole_micros, Approval, Grant, GrantState};

/// Column list in the order [`decode`] reads it.
pub(super) const COLUMNS: &str = "id, identity, target, role, not_before, expires_at, reason, \
     issued_by, created_at, state, approvals, revoked_by, revoked_at, revoke_reason";

/// The values to bind, in [`COLUMNS`] order, for inserting `grant`.
pub(super) fn encode(grant: &Grant) -> Result<Vec<Value>, PolicyError> {
    let approvals = serde_json::to_string(&grant.approvals)
        .map_err(|e| PolicyError::store("encode approvals", e))?;
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
    let approvals: Vec<Approval> =
        serde_json::from_str(&approvals_text).map_err(|e| corrupt("approvals", &e))?;
    let ts = |idx: usize, what: &str| -> Result<Timestamp, PolicyError> {
        let micros: i64 = row.get(idx).map_err(err)?;
        Timestamp::from_microsecond(micros).map_err(|e| corrupt(what, &e))
    };
    let revoked_at = match row.get::<_, Option<i64>>(12).map_err(err)? {
        Some(micros) => {
            Some(Timestamp::from_microsecond(micros).map_err(|e| corrupt("revoked_at", &e))?)
        }
        None => None,
    };
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
        revoked_at,
        revoke_reason: row.get(13).map_err(err)?,
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
