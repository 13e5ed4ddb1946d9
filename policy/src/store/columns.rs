//! The grant table's columns, described once for both stores.
//!
//! [`COLUMNS`] names them in the order both stores select, insert and bind them; [`write`]
//! gives a [`Grant`]'s value for each, and [`read`] builds a grant back from a row, reading
//! every column by its name. A store supplies only how its driver reads ([`ReadColumn`]) and
//! binds ([`WriteColumn`]) each kind of value, so a new column is one change here (plus a
//! migration in each store's schema), not one per store and direction.

use std::sync::LazyLock;

use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::{is_whole_micros, Decision, Grant, GrantState};
use crate::store::details::Details;

/// Every column of the grants table, in the order [`write`] gives their values.
pub(super) const COLUMNS: [&str; 22] = [
    "id",
    "identity",
    "target",
    "role",
    // The window [not_before, expires_at), absolute instants.
    "not_before",
    "expires_at",
    "reason",
    // Who created the record (the administrator, or the requester), and when.
    "issued_by",
    "created_at",
    // The stored state, as `GrantState::as_str`.
    "state",
    // JSON array of `Decision`s.
    "approvals",
    "revoked_by",
    "revoked_at",
    "revoke_reason",
    // The policy rule of a request; none for an administrator's grant.
    "rule",
    "ticket",
    // The requested duration in microseconds (for an extension: the time added).
    "duration_us",
    // When a pending request lapses.
    "pending_until",
    // The grant an extension request extends.
    "extends",
    // Unique per `issued_by` when set.
    "idempotency_key",
    // JSON object: what no query filters on (`Details`).
    "details",
    // The compare-and-swap counter.
    "version",
];

/// Columns an update never writes: a record's id, who created it and when.
pub(super) const IMMUTABLE: [&str; 3] = ["id", "issued_by", "created_at"];

/// [`COLUMNS`] joined for a `SELECT` or `INSERT` list.
pub(super) fn list() -> &'static str {
    static LIST: LazyLock<String> = LazyLock::new(|| COLUMNS.join(", "));
    &LIST
}

/// A column's value as the grant keeps it, or why what the store holds is not one (the
/// row is corrupt).
pub(super) type Stored<T> = Result<T, String>;

/// Reads one column of a grant row by name. `Err` is the driver failing to read it;
/// `Ok(Err(why))` is a stored value that is not valid for the column, which [`read`]
/// reports as a bad value of that grant.
pub(super) trait ReadColumn {
    /// The `id` column, read first so that errors about the others name the grant.
    fn id(&self) -> Result<Uuid, PolicyError>;
    fn text(&self, column: &str) -> Result<String, PolicyError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, PolicyError>;
    fn integer(&self, column: &str) -> Result<i64, PolicyError>;
    fn instant(&self, column: &str) -> Result<Stored<Timestamp>, PolicyError>;
    fn opt_instant(&self, column: &str) -> Result<Stored<Option<Timestamp>>, PolicyError>;
    fn opt_uuid(&self, column: &str) -> Result<Stored<Option<Uuid>>, PolicyError>;
    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<Stored<T>, PolicyError>;
}

/// Takes one column's value for a statement; [`write`] gives them in [`COLUMNS`] order.
pub(super) trait WriteColumn {
    fn uuid(&mut self, column: &'static str, value: Option<Uuid>);
    fn text(&mut self, column: &'static str, value: Option<&str>);
    fn integer(&mut self, column: &'static str, value: i64);
    /// Refuses an instant the store cannot keep exactly (see [`whole_micros`]).
    fn instant(
        &mut self,
        column: &'static str,
        value: Option<Timestamp>,
    ) -> Result<(), PolicyError>;
    fn json<T: Serialize>(&mut self, column: &'static str, value: &T) -> Result<(), PolicyError>;
}

/// Gives `out` every column's value of `grant`, in [`COLUMNS`] order; refuses what the
/// stores cannot keep as given (a duration or version out of range, sub-microsecond
/// instants).
pub(super) fn write(grant: &Grant, out: &mut impl WriteColumn) -> Result<(), PolicyError> {
    let duration_us = i64::try_from(grant.duration.as_micros()).map_err(|_| {
        PolicyError::InvalidRequest(format!("duration {:#} is out of range", grant.duration))
    })?;
    let version = i64::try_from(grant.version)
        .map_err(|_| PolicyError::store("encode version", grant.version))?;
    out.uuid("id", Some(grant.id));
    out.text("identity", Some(&grant.identity));
    out.text("target", Some(&grant.target));
    out.text("role", Some(&grant.role));
    out.instant("not_before", Some(grant.not_before))?;
    out.instant("expires_at", Some(grant.expires_at))?;
    out.text("reason", Some(&grant.reason));
    out.text("issued_by", Some(&grant.issued_by));
    out.instant("created_at", Some(grant.created_at))?;
    out.text("state", Some(grant.state.as_str()));
    out.json("approvals", &grant.approvals)?;
    out.text("revoked_by", grant.revoked_by.as_deref());
    out.instant("revoked_at", grant.revoked_at)?;
    out.text("revoke_reason", grant.revoke_reason.as_deref());
    out.text("rule", grant.rule.as_deref());
    out.text("ticket", grant.ticket.as_deref());
    out.integer("duration_us", duration_us);
    out.instant("pending_until", grant.pending_until)?;
    out.uuid("extends", grant.extends);
    out.text("idempotency_key", grant.idempotency_key.as_deref());
    out.json("details", &Details::of(grant))?;
    out.integer("version", version);
    Ok(())
}

/// The grant in a row selected with [`COLUMNS`].
pub(super) fn read(row: &impl ReadColumn) -> Result<Grant, PolicyError> {
    let id = row.id()?;
    let state: GrantState = valid(id, "state", row.text("state")?.parse())?;
    let approvals: Vec<Decision> = valid(id, "approvals", row.json("approvals")?)?;
    let details: Details = valid(id, "details", row.json("details")?)?;
    let version = row.integer("version")?;
    let instant = |column| valid(id, column, row.instant(column)?);
    let opt_instant = |column| valid(id, column, row.opt_instant(column)?);
    Ok(Grant {
        id,
        identity: row.text("identity")?,
        target: row.text("target")?,
        role: row.text("role")?,
        not_before: instant("not_before")?,
        expires_at: instant("expires_at")?,
        reason: row.text("reason")?,
        issued_by: row.text("issued_by")?,
        created_at: instant("created_at")?,
        state,
        approvals,
        revoked_by: row.opt_text("revoked_by")?,
        revoked_at: opt_instant("revoked_at")?,
        revoke_reason: row.opt_text("revoke_reason")?,
        rule: row.opt_text("rule")?,
        ticket: row.opt_text("ticket")?,
        duration: SignedDuration::from_micros(row.integer("duration_us")?),
        pending_until: opt_instant("pending_until")?,
        denial: details.denial,
        cancellation: details.cancellation,
        break_glass: details.break_glass,
        review: details.review,
        extends: valid(id, "extends", row.opt_uuid("extends")?)?,
        notified: details.notified,
        idempotency_key: row.opt_text("idempotency_key")?,
        version: valid(
            id,
            "version",
            u64::try_from(version).map_err(|e| e.to_string()),
        )?,
    })
}

/// `value`, or the error for a bad `column` of grant `id`.
fn valid<T>(id: Uuid, column: &str, value: Stored<T>) -> Result<T, PolicyError> {
    value.map_err(|why| PolicyError::Store(format!("grant {id}: bad {column} in store: {why}")))
}

/// `t` as a stored `column` value: both stores keep microseconds, so a finer instant
/// would not read back equal and is refused.
pub(super) fn whole_micros(column: &str, t: Timestamp) -> Result<Timestamp, PolicyError> {
    if is_whole_micros(t) {
        Ok(t)
    } else {
        Err(PolicyError::InvalidRequest(format!(
            "{column} {t} has sub-microsecond precision, which the grant store does not keep; \
             round it with jitgate_policy::grant::floor_to_micros"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records which column each call names.
    #[derive(Default)]
    struct Names(RefCell<Vec<String>>);

    impl Names {
        fn note<T>(&self, column: &str, value: T) -> T {
            self.0.borrow_mut().push(column.to_owned());
            value
        }
    }

    impl WriteColumn for Names {
        fn uuid(&mut self, column: &'static str, _: Option<Uuid>) {
            self.note(column, ());
        }
        fn text(&mut self, column: &'static str, _: Option<&str>) {
            self.note(column, ());
        }
        fn integer(&mut self, column: &'static str, _: i64) {
            self.note(column, ());
        }
        fn instant(
            &mut self,
            column: &'static str,
            _: Option<Timestamp>,
        ) -> Result<(), PolicyError> {
            self.note(column, ());
            Ok(())
        }
        fn json<T: Serialize>(&mut self, column: &'static str, _: &T) -> Result<(), PolicyError> {
            self.note(column, ());
            Ok(())
        }
    }

    /// A row whose every column holds a neutral value.
    impl ReadColumn for Names {
        fn id(&self) -> Result<Uuid, PolicyError> {
            Ok(self.note("id", Uuid::nil()))
        }
        fn text(&self, column: &str) -> Result<String, PolicyError> {
            let value = if column == "state" { "pending" } else { "" };
            Ok(self.note(column, value.to_owned()))
        }
        fn opt_text(&self, column: &str) -> Result<Option<String>, PolicyError> {
            Ok(self.note(column, None))
        }
        fn integer(&self, column: &str) -> Result<i64, PolicyError> {
            Ok(self.note(column, 0))
        }
        fn instant(&self, column: &str) -> Result<Stored<Timestamp>, PolicyError> {
            Ok(self.note(column, Ok(Timestamp::UNIX_EPOCH)))
        }
        fn opt_instant(&self, column: &str) -> Result<Stored<Option<Timestamp>>, PolicyError> {
            Ok(self.note(column, Ok(None)))
        }
        fn opt_uuid(&self, column: &str) -> Result<Stored<Option<Uuid>>, PolicyError> {
            Ok(self.note(column, Ok(None)))
        }
        fn json<T: DeserializeOwned>(&self, column: &str) -> Result<Stored<T>, PolicyError> {
            let empty = if column == "approvals" { "[]" } else { "{}" };
            Ok(self.note(
                column,
                serde_json::from_str(empty).map_err(|e| e.to_string()),
            ))
        }
    }

    #[test]
    fn write_gives_every_column_once_in_order() {
        let row = Names::default();
        let grant = read(&row).unwrap();
        let mut written = Names::default();
        write(&grant, &mut written).unwrap();
        assert_eq!(written.0.into_inner(), COLUMNS);
    }

    #[test]
    fn read_reads_every_column_once() {
        let row = Names::default();
        read(&row).unwrap();
        let mut names = row.0.into_inner();
        names.sort();
        let mut columns = COLUMNS.to_vec();
        columns.sort();
        assert_eq!(names, columns);
    }

    #[test]
    fn the_list_is_the_columns_in_order() {
        assert!(list().starts_with("id, identity, target, role, not_before"));
        assert_eq!(list().split(", ").collect::<Vec<_>>(), COLUMNS);
    }
}
