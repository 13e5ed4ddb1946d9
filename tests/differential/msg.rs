//! Frontend messages as the differential test builds them: any bytes as names (so
//! non-UTF-8 statement and portal names can be sent), their wire encoding, and a
//! one-line readable form for failure reports (`Parse name="s1" sql="SELECT 1 /*q3*/"`).

use std::fmt;

use bytes::{BufMut, BytesMut};

/// `Describe`/`Close` target: a prepared statement or a portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// One frontend message after login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Query(String),
    Parse {
        name: Vec<u8>,
        sql: String,
        types: Vec<u32>,
    },
    Bind {
        portal: Vec<u8>,
        statement: Vec<u8>,
        formats: Vec<i16>,
        params: Vec<Option<Vec<u8>>>,
        result_formats: Vec<i16>,
    },
    Describe(Target, Vec<u8>),
    Execute {
        portal: Vec<u8>,
        max_rows: i32,
    },
    Close(Target, Vec<u8>),
    Sync,
    Flush,
    FunctionCall {
        oid: u32,
        formats: Vec<i16>,
        args: Vec<Option<Vec<u8>>>,
    },
    CopyData(Vec<u8>),
    CopyDone,
    CopyFail(String),
}

fn cstr(out: &mut BytesMut, bytes: &[u8]) {
    out.put_slice(bytes);
    out.put_u8(0);
}

fn values(out: &mut BytesMut, values: &[Option<Vec<u8>>]) {
    out.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => out.put_i32(-1),
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
        }
    }
}

fn codes(out: &mut BytesMut, codes: &[i16]) {
    out.put_i16(codes.len() as i16);
    for c in codes {
        out.put_i16(*c);
    }
}

impl Msg {
    /// Appends the message (tag, length, body) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        let tag = match self {
            Msg::Query(sql) => {
                cstr(&mut body, sql.as_bytes());
                b'Q'
            }
            Msg::Parse { name, sql, types } => {
                cstr(&mut body, name);
                cstr(&mut body, sql.as_bytes());
                body.put_i16(types.len() as i16);
                for t in types {
                    body.put_u32(*t);
                }
                b'P'
            }
            Msg::Bind {
                portal,
                statement,
                formats,
                params,
                result_formats,
            } => {
                cstr(&mut body, portal);
                cstr(&mut body, statement);
                codes(&mut body, formats);
                values(&mut body, params);
                codes(&mut body, result_formats);
                b'B'
            }
            Msg::Describe(target, name) => {
                body.put_u8(target.byte());
                cstr(&mut body, name);
                b'D'
            }
            Msg::Execute { portal, max_rows } => {
                cstr(&mut body, portal);
                body.put_i32(*max_rows);
                b'E'
            }
            Msg::Close(target, name) => {
                body.put_u8(target.byte());
                cstr(&mut body, name);
                b'C'
            }
            Msg::Sync => b'S',
            Msg::Flush => b'H',
            Msg::FunctionCall { oid, formats, args } => {
                body.put_u32(*oid);
                codes(&mut body, formats);
                values(&mut body, args);
                body.put_i16(0); // result format: text
                b'F'
            }
            Msg::CopyData(data) => {
                body.put_slice(data);
                b'd'
            }
            Msg::CopyDone => b'c',
            Msg::CopyFail(message) => {
                cstr(&mut body, message.as_bytes());
                b'f'
            }
        };
        out.put_u8(tag);
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
    }
}

/// Bytes as a quoted string: valid UTF-8 as Rust's `escape_debug`, other bytes `\xNN`.
pub struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '"' {
                    f.write_str("\\\"")?;
                } else if c == '\'' {
                    f.write_str("'")?;
                } else {
                    write!(f, "{}", c.escape_debug())?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

fn show_values(f: &mut fmt::Formatter<'_>, values: &[Option<Vec<u8>>]) -> fmt::Result {
    f.write_str("[")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        match v {
            None => f.write_str("NULL")?,
            Some(v) => write!(f, "{}", Shown(v))?,
        }
    }
    f.write_str("]")
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Statement => "statement",
            Target::Portal => "portal",
        })
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Query(sql) => write!(f, "Query sql={}", Shown(sql.as_bytes())),
            Msg::Parse { name, sql, types } => {
                write!(
                    f,
                    "Parse name={} sql={}",
                    Shown(name),
                    Shown(sql.as_bytes())
                )?;
                if !types.is_empty() {
                    write!(f, " types={types:?}")?;
                }
                Ok(())
            }
            Msg::Bind {
                portal,
                statement,
                formats,
                params,
                result_formats,
            } => {
                write!(
                    f,
                    "Bind portal={} statement={}",
                    Shown(portal),
                    Shown(statement)
                )?;
                if !formats.is_empty() {
                    write!(f, " formats={formats:?}")?;
                }
                f.write_str(" params=")?;
                show_values(f, params)?;
                if !result_formats.is_empty() {
                    write!(f, " result_formats={result_formats:?}")?;
                }
                Ok(())
            }
            Msg::Describe(target, name) => write!(f, "Describe {target} {}", Shown(name)),
            Msg::Execute { portal, max_rows } => {
                write!(f, "Execute portal={}", Shown(portal))?;
                if *max_rows != 0 {
                    write!(f, " max_rows={max_rows}")?;
                }
                Ok(())
            }
            Msg::Close(target, name) => write!(f, "Close {target} {}", Shown(name)),
            Msg::Sync => f.write_str("Sync"),
            Msg::Flush => f.write_str("Flush"),
            Msg::FunctionCall { oid, formats, args } => {
                write!(f, "FunctionCall oid={oid}")?;
                if !formats.is_empty() {
                    write!(f, " formats={formats:?}")?;
                }
                f.write_str(" args=")?;
                show_values(f, args)
            }
            Msg::CopyData(data) => write!(f, "CopyData {}", Shown(data)),
            Msg::CopyDone => f.write_str("CopyDone"),
            Msg::CopyFail(message) => write!(f, "CopyFail {}", Shown(message.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::frontend;
    use postgres_protocol::IsNull;

    fn encoded(msg: &Msg) -> BytesMut {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        out
    }

    /// Our encoder agrees with postgres-protocol's wherever names are UTF-8.
    #[test]
    fn encoding_matches_postgres_protocol() {
        let mut want = BytesMut::new();
        frontend::parse("s1", "SELECT $1", [25], &mut want).unwrap();
        frontend::bind(
            "p1",
            "s1",
            [1],
            [Some(&b"ab"[..]), None],
            |v, buf| match v {
                Some(v) => {
                    buf.put_slice(v);
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [0],
            &mut want,
        )
        .map_err(|_| "bind")
        .unwrap();
        frontend::describe(b'P', "p1", &mut want).unwrap();
        frontend::execute("p1", 3, &mut want).unwrap();
        frontend::close(b'S', "s1", &mut want).unwrap();
        frontend::sync(&mut want);
        frontend::flush(&mut want);
        frontend::query("SELECT 1", &mut want).unwrap();
        frontend::copy_done(&mut want);
        frontend::copy_fail("no", &mut want).unwrap();
        let msgs = [
            Msg::Parse {
                name: b"s1".to_vec(),
                sql: "SELECT $1".into(),
                types: vec![25],
            },
            Msg::Bind {
                portal: b"p1".to_vec(),
                statement: b"s1".to_vec(),
                formats: vec![1],
                params: vec![Some(b"ab".to_vec()), None],
                result_formats: vec![0],
            },
            Msg::Describe(Target::Portal, b"p1".to_vec()),
            Msg::Execute {
                portal: b"p1".to_vec(),
                max_rows: 3,
            },
            Msg::Close(Target::Statement, b"s1".to_vec()),
            Msg::Sync,
            Msg::Flush,
            Msg::Query("SELECT 1".into()),
            Msg::CopyDone,
            Msg::CopyFail("no".into()),
        ];
        let mut got = BytesMut::new();
        for m in &msgs {
            m.encode(&mut got);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn function_call_layout() {
        let got = encoded(&Msg::FunctionCall {
            oid: 1397,
            formats: vec![1],
            args: vec![Some(vec![0, 0, 0, 5])],
        });
        let body: &[u8] = &[
            0, 0, 5, 0x75, 0, 1, 0, 1, 0, 1, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0,
        ];
        assert_eq!(got[0], b'F');
        assert_eq!(&got[1..5], &(body.len() as i32 + 4).to_be_bytes());
        assert_eq!(&got[5..], body);
    }

    #[test]
    fn readable_form_escapes_bytes() {
        let m = Msg::Parse {
            name: b"s\xff\xc3\xa9".to_vec(),
            sql: "SELECT '\"'\n".into(),
            types: vec![],
        };
        assert_eq!(m.to_string(), r#"Parse name="s\xffé" sql="SELECT '\"'\n""#);
    }
}
