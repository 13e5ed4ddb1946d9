//! How SQLite keeps each kind of grant column ([`crate::store::columns`] says which
//! columns there are): instants as integer microseconds since the Unix epoch, ids as
//! hyphenated UUID text, JSON as text.

use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::error::PolicyError;
use crate::grant::Grant;
use crate::store::columns::{self, ReadColumn, Stored, WriteColumn, COLUMNS};

/// `?` for every column of [`COLUMNS`].
pub(super) fn placeholders() -> String {
    vec!["?"; COLUMNS.len()].join(", ")
}

/// The values to bind, in [`COLUMNS`] order, for inserting `grant`.
pub(super) fn encode(grant: &Grant) -> Result<Vec<Value>, PolicyError> {
    let mut values = Vec::with_capacity(COLUMNS.len());
    columns::write(grant, &mut values)?;
    Ok(values)
}

/// Reads one row selected with [`COLUMNS`].
pub(super) fn decode(row: &Row<'_>) -> Result<Grant, PolicyError> {
    columns::read(row)
}

impl WriteColumn for Vec<Value> {
    fn uuid(&mut self, _: &'static str, value: Option<Uuid>) {
        self.push(value.map_or(Value::Null, |id| Value::Text(id.hyphenated().to_string())));
    }

    fn text(&mut self, _: &'static str, value: Option<&str>) {
        self.push(value.map_or(Value::Null, |s| Value::Text(s.to_owned())));
    }

    fn integer(&mut self, _: &'static str, value: i64) {
        self.push(Value::Integer(value));
    }

    fn instant(
        &mut self,
        column: &'static str,
        value: Option<Timestamp>,
    ) -> Result<(), PolicyError> {
        self.push(match value {
            Some(t) => Value::Integer(columns::whole_micros(column, t)?.as_microsecond()),
            None => Value::Null,
        });
        Ok(())
    }

    fn json<T: Serialize>(&mut self, column: &'static str, value: &T) -> Result<(), PolicyError> {
        let text = serde_json::to_string(value)
            .map_err(|e| PolicyError::store(&format!("encode {column}"), e))?;
        self.push(Value::Text(text));
        Ok(())
    }
}

/// A driver failure reading a column.
fn err(e: rusqlite::Error) -> PolicyError {
    PolicyError::store("read grant row", e)
}

impl ReadColumn for Row<'_> {
    fn id(&self) -> Result<Uuid, PolicyError> {
        let text: String = self.get("id").map_err(err)?;
        Uuid::parse_str(&text).map_err(|e| PolicyError::store(&format!("grant row id {text:?}"), e))
    }

    fn text(&self, column: &str) -> Result<String, PolicyError> {
        self.get(column).map_err(err)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, PolicyError> {
        self.get(column).map_err(err)
    }

    fn integer(&self, column: &str) -> Result<i64, PolicyError> {
        self.get(column).map_err(err)
    }

    fn instant(&self, column: &str) -> Result<Stored<Timestamp>, PolicyError> {
        Ok(from_micros(self.get(column).map_err(err)?))
    }

    fn opt_instant(&self, column: &str) -> Result<Stored<Option<Timestamp>>, PolicyError> {
        let micros: Option<i64> = self.get(column).map_err(err)?;
        Ok(micros.map(from_micros).transpose())
    }

    fn opt_uuid(&self, column: &str) -> Result<Stored<Option<Uuid>>, PolicyError> {
        let text: Option<String> = self.get(column).map_err(err)?;
        Ok(text
            .map(|t| Uuid::parse_str(&t).map_err(|e| e.to_string()))
            .transpose())
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<Stored<T>, PolicyError> {
        let text: String = self.get(column).map_err(err)?;
        Ok(serde_json::from_str(&text).map_err(|e| e.to_string()))
    }
}

fn from_micros(micros: i64) -> Stored<Timestamp> {
    Timestamp::from_microsecond(micros).map_err(|e| e.to_string())
}

/// `t` rounded down to microseconds, for comparisons against stored values: since stored
/// values are whole microseconds, `stored <= t` and `t < stored` keep their truth value.
pub(super) fn query_micros(t: Timestamp) -> i64 {
    let micros = t.as_nanosecond().div_euclid(1_000);
    // A Timestamp spans ±10 000 years, about ±3.2e17 µs: always within i64.
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}
