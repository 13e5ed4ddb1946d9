//! The bodies of the two events every statement writes, `query` and `query_result`,
//! written directly; every other kind (and a `query` with a `setting_change`) goes
//! through serde. Each variant and [`Param`] is taken apart without `..`, so a field
//! added to the schema does not compile here until it is written here too, and the
//! tests compare the output with the serde derive's.

use crate::event::{EventBody, Param, ParamFormat};

use super::{string, Digits};

/// Appends the fields of `body`, starting with `,"kind":…`, when it is a kind written
/// here; `Ok(false)` (nothing appended) otherwise.
pub(super) fn write(
    body: &EventBody,
    out: &mut Vec<u8>,
    digits: &mut Digits,
) -> Result<bool, serde_json::Error> {
    match body {
        EventBody::Query {
            query_id,
            protocol,
            sql,
            truncated,
            sql_len,
            sql_sha256,
            setting_change: None,
            statement,
            portal,
            params,
            function_oid,
            params_from,
        } => {
            out.extend_from_slice(b",\"kind\":\"query\",\"query_id\":");
            out.extend_from_slice(digits.format(*query_id).as_bytes());
            out.extend_from_slice(b",\"protocol\":\"");
            out.extend_from_slice(protocol.as_str().as_bytes());
            out.extend_from_slice(b"\",\"sql\":");
            string(sql, out)?;
            if *truncated {
                out.extend_from_slice(b",\"truncated\":true");
            }
            if let Some(len) = sql_len {
                out.extend_from_slice(b",\"sql_len\":");
                out.extend_from_slice(digits.format(*len).as_bytes());
            }
            optional_string(out, b",\"sql_sha256\":", sql_sha256.as_deref())?;
            optional_string(out, b",\"statement\":", statement.as_deref())?;
            optional_string(out, b",\"portal\":", portal.as_deref())?;
            out.extend_from_slice(b",\"params\":[");
            for (i, p) in params.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                param(p, out, digits)?;
            }
            out.push(b']');
            if let Some(oid) = function_oid {
                out.extend_from_slice(b",\"function_oid\":");
                out.extend_from_slice(digits.format(*oid).as_bytes());
            }
            if let Some(from) = params_from {
                out.extend_from_slice(b",\"params_from\":");
                out.extend_from_slice(digits.format(*from).as_bytes());
            }
            out.push(b'}');
            Ok(true)
        }
        EventBody::QueryResult {
            query_id,
            tag,
            rows,
            sqlstate,
            message,
            duration_us,
            bytes,
            skipped,
        } => {
            out.extend_from_slice(b",\"kind\":\"query_result\",\"query_id\":");
            out.extend_from_slice(digits.format(*query_id).as_bytes());
            optional_string(out, b",\"tag\":", tag.as_deref())?;
            if let Some(rows) = rows {
                out.extend_from_slice(b",\"rows\":");
                out.extend_from_slice(digits.format(*rows).as_bytes());
            }
            optional_string(out, b",\"sqlstate\":", sqlstate.as_deref())?;
            optional_string(out, b",\"message\":", message.as_deref())?;
            out.extend_from_slice(b",\"duration_us\":");
            out.extend_from_slice(digits.format(*duration_us).as_bytes());
            if *bytes != 0 {
                out.extend_from_slice(b",\"bytes\":");
                out.extend_from_slice(digits.format(*bytes).as_bytes());
            }
            if *skipped {
                out.extend_from_slice(b",\"skipped\":true");
            }
            out.push(b'}');
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `key` and the JSON string of `value`, when there is one.
fn optional_string(
    out: &mut Vec<u8>,
    key: &[u8],
    value: Option<&str>,
) -> Result<(), serde_json::Error> {
    if let Some(value) = value {
        out.extend_from_slice(key);
        string(value, out)?;
    }
    Ok(())
}

/// One parameter as a JSON object.
fn param(p: &Param, out: &mut Vec<u8>, digits: &mut Digits) -> Result<(), serde_json::Error> {
    let Param {
        format,
        type_oid,
        value,
        redacted,
        truncated,
        value_len,
        value_sha256,
    } = p;
    out.extend_from_slice(match format {
        ParamFormat::Text => b"{\"format\":\"text\"",
        ParamFormat::Binary => b"{\"format\":\"binary\"",
    });
    if let Some(oid) = type_oid {
        out.extend_from_slice(b",\"type_oid\":");
        out.extend_from_slice(digits.format(*oid).as_bytes());
    }
    out.extend_from_slice(b",\"value\":");
    match value {
        Some(v) => string(v, out)?,
        None => out.extend_from_slice(b"null"),
    }
    if *redacted {
        out.extend_from_slice(b",\"redacted\":true");
    }
    if *truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    if let Some(len) = value_len {
        out.extend_from_slice(b",\"value_len\":");
        out.extend_from_slice(digits.format(*len).as_bytes());
    }
    optional_string(out, b",\"value_sha256\":", value_sha256.as_deref())?;
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::event::{Event, EventBody, Param, ParamFormat, Protocol, SettingChange};

    fn same_as_serde(body: EventBody) {
        let event = Event::new(body);
        let mut fast = Vec::new();
        super::super::encode(&event, &mut fast).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
    }

    fn query(params: Vec<Param>, setting_change: Option<SettingChange>) -> EventBody {
        EventBody::Query {
            query_id: 42,
            protocol: Protocol::Extended,
            sql: "SELECT $1, '\"\\\n\t\u{1}é' -- x".into(),
            truncated: true,
            sql_len: Some(123_456),
            sql_sha256: Some("ab".repeat(32)),
            setting_change,
            statement: Some("S_1".into()),
            portal: Some(String::new()),
            params,
            function_oid: Some(1234),
            params_from: Some(7),
        }
    }

    #[test]
    fn query_bodies_equal_serde() {
        let params = vec![
            Param {
                format: ParamFormat::Text,
                type_oid: Some(23),
                value: Some("12\"3".into()),
                redacted: false,
                truncated: false,
                value_len: None,
                value_sha256: None,
            },
            Param {
                format: ParamFormat::Binary,
                type_oid: None,
                value: None,
                redacted: true,
                truncated: false,
                value_len: None,
                value_sha256: None,
            },
            Param::from_wire(ParamFormat::Text, None, Some(b"\xff\x00ok")),
            Param::from_wire_capped(ParamFormat::Binary, Some(17), Some(b"0123456789"), 4),
        ];
        same_as_serde(query(params.clone(), None));
        same_as_serde(query(Vec::new(), None));
        same_as_serde(query(params, Some(SettingChange::Role)));
        same_as_serde(EventBody::Query {
            query_id: 1,
            protocol: Protocol::Simple,
            sql: String::new(),
            truncated: false,
            sql_len: None,
            sql_sha256: None,
            setting_change: None,
            statement: None,
            portal: None,
            params: Vec::new(),
            function_oid: None,
            params_from: None,
        });
    }

    #[test]
    fn result_bodies_equal_serde() {
        same_as_serde(EventBody::QueryResult {
            query_id: 7,
            tag: Some("SELECT 1".into()),
            rows: Some(1),
            sqlstate: None,
            message: None,
            duration_us: 57,
            bytes: 11,
            skipped: false,
        });
        same_as_serde(EventBody::QueryResult {
            query_id: 8,
            tag: None,
            rows: None,
            sqlstate: Some("42P01".into()),
            message: Some("relation \"x\" does not exist\n".into()),
            duration_us: 0,
            bytes: 0,
            skipped: false,
        });
        same_as_serde(EventBody::QueryResult {
            query_id: 9,
            tag: None,
            rows: None,
            sqlstate: None,
            message: Some("not executed".into()),
            duration_us: 3,
            bytes: 0,
            skipped: true,
        });
    }
}
