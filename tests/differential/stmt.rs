//! One executed statement in the form both sides are reduced to before comparing: what
//! the server log says it ran, and what an audit `query` event says was run.

use std::fmt;

use base64::Engine as _;
use jitgate_audit::{Param, ParamFormat};

use super::msg::Shown;

/// A statement as executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// A simple Query's whole text.
    Simple(String),
    /// An extended-protocol Execute (first or continued): the portal's statement (`""`
    /// for the unnamed one), the portal, the SQL and the parameters as the server prints
    /// them (`None` = NULL).
    Extended {
        statement: String,
        portal: String,
        sql: String,
        params: Vec<Option<String>>,
    },
    /// A FunctionCall, by OID (the server log has no arguments).
    Function(u32),
}

/// Parses `$1 = 'a''b', $2 = NULL` (values quoted with `'` doubled); `None` if the text
/// has another shape.
pub fn parse_params(text: &str) -> Option<Vec<Option<String>>> {
    let mut params = Vec::new();
    let mut rest = text;
    loop {
        let head = format!("${} = ", params.len() + 1);
        rest = rest.strip_prefix(head.as_str())?;
        if let Some(after) = rest.strip_prefix("NULL") {
            params.push(None);
            rest = after;
        } else {
            let mut chars = rest.strip_prefix('\'')?.char_indices().peekable();
            let body = &rest[1..];
            let mut value = String::new();
            let end = loop {
                let (i, c) = chars.next()?;
                if c == '\'' {
                    if matches!(chars.peek(), Some((_, '\''))) {
                        chars.next();
                        value.push('\'');
                        continue;
                    }
                    break i + 1;
                }
                value.push(c);
            };
            params.push(Some(value));
            rest = &body[end..];
        }
        if rest.is_empty() {
            return Some(params);
        }
        rest = rest.strip_prefix(", ")?;
    }
}

impl Stmt {
    /// The statement a server `LOG:` message reports, with the `parameters:` DETAIL that
    /// followed it; `None` for messages that are not statements. Statement and portal
    /// names are split at the first `/` and the SQL at the first `: ` — unambiguous for
    /// the names the generator uses, none of which holds `/` or `:`.
    pub fn from_log(message: &str, detail: Option<&str>) -> Option<Stmt> {
        if let Some(sql) = message.strip_prefix("statement: ") {
            return Some(Stmt::Simple(sql.to_string()));
        }
        if let Some(rest) = message.strip_prefix("fastpath function call: ") {
            let oid = rest.rsplit_once("(OID ")?.1.strip_suffix(')')?;
            return Some(Stmt::Function(oid.parse().ok()?));
        }
        let rest = message
            .strip_prefix("execute fetch from ")
            .or_else(|| message.strip_prefix("execute "))?;
        let (names, sql) = rest.split_once(": ")?;
        let (statement, portal) = names.split_once('/').unwrap_or((names, ""));
        let statement = if statement == "<unnamed>" {
            ""
        } else {
            statement
        };
        let params = match detail {
            None => Vec::new(),
            Some(text) => {
                parse_params(text).unwrap_or_else(|| vec![Some(format!("<unparsed: {text}>"))])
            }
        };
        Some(Stmt::Extended {
            statement: statement.to_string(),
            portal: portal.to_string(),
            sql: sql.to_string(),
            params,
        })
    }
}

/// A recorded parameter as the server would print it: text values as sent, binary
/// values decoded for the one binary type the generator sends (int4, 4 bytes).
pub fn param_as_logged(p: &Param) -> Option<String> {
    if p.redacted {
        return Some("<redacted>".into());
    }
    let value = p.value.as_ref()?;
    Some(match p.format {
        ParamFormat::Text => match jitgate_audit::unescape_bytes(value) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => format!("<bad escape: {value}>"),
        },
        ParamFormat::Binary => match base64::engine::general_purpose::STANDARD.decode(value) {
            Ok(b) if b.len() == 4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string(),
            _ => format!("<binary {value}>"),
        },
    })
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Simple(sql) => write!(f, "simple   {}", Shown(sql.as_bytes())),
            Stmt::Extended {
                statement,
                portal,
                sql,
                params,
            } => {
                write!(
                    f,
                    "execute  statement={} portal={} sql={}",
                    Shown(statement.as_bytes()),
                    Shown(portal.as_bytes()),
                    Shown(sql.as_bytes())
                )?;
                if !params.is_empty() {
                    f.write_str(" params=[")?;
                    for (i, p) in params.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        match p {
                            None => f.write_str("NULL")?,
                            Some(v) => write!(f, "{}", Shown(v.as_bytes()))?,
                        }
                    }
                    f.write_str("]")?;
                }
                Ok(())
            }
            Stmt::Function(oid) => write!(f, "function oid={oid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_with_doubled_quotes_and_nulls() {
        assert_eq!(
            parse_params("$1 = 'it''s', $2 = NULL, $3 = '', $4 = ', $5 = ''x'''"),
            Some(vec![
                Some("it's".into()),
                None,
                Some(String::new()),
                Some(", $5 = 'x'".into())
            ])
        );
        assert_eq!(parse_params("$2 = 'a'"), None);
        assert_eq!(parse_params("$1 = 'a"), None);
    }

    #[test]
    fn log_messages() {
        assert_eq!(
            Stmt::from_log("execute s2/p\u{e9}: SELECT $1::text", Some("$1 = 'a'")),
            Some(Stmt::Extended {
                statement: "s2".into(),
                portal: "p\u{e9}".into(),
                sql: "SELECT $1::text".into(),
                params: vec![Some("a".into())],
            })
        );
        assert_eq!(
            Stmt::from_log("fastpath function call: \"abs\" (OID 1397)", None),
            Some(Stmt::Function(1397))
        );
        assert_eq!(Stmt::from_log("disconnection: session time", None), None);
    }

    #[test]
    fn binary_int4_decodes() {
        let p = Param::from_wire(ParamFormat::Binary, None, Some(&(-7i32).to_be_bytes()));
        assert_eq!(param_as_logged(&p), Some("-7".into()));
        let p = Param::from_wire(ParamFormat::Text, None, Some(b"a'b"));
        assert_eq!(param_as_logged(&p), Some("a'b".into()));
        let p = Param::from_wire(ParamFormat::Text, None, None);
        assert_eq!(param_as_logged(&p), None);
    }
}
