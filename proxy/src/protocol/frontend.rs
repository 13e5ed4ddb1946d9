//! Decoders for the client messages that audit and authentication need to understand.
//!
//! Each `parse_*` takes the body of one frame (see [`super::frame`]), checks every length
//! and count against the bytes present, rejects trailing bytes, and never panics. SQL text
//! and parameter values stay views into the frame's `Bytes` (no copy). Statement and portal
//! names stay raw bytes too: the server compares them byte for byte in the session's
//! encoding, so two names that decode to the same lossy string are still two names.
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use std::borrow::Cow;

use bytes::Bytes;

use super::reader::Reader;
use super::tags::{KIND_PORTAL, KIND_STATEMENT};
use crate::protocol::ProtocolError;

/// Simple query ('Q').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The query string, without its terminating NUL, in the client's encoding.
    pub sql: Bytes,
}

impl Query {
    /// The SQL text for logs and audit; invalid UTF-8 is replaced, not rejected.
    pub fn sql_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.sql)
    }
}

/// Parse ('P'): prepare a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    /// Statement name; empty for the unnamed statement.
    pub statement: Bytes,
    /// The query string, without its terminating NUL.
    pub sql: Bytes,
    /// Parameter type OIDs the client specified (0 = let the server infer).
    pub param_types: Vec<u32>,
}

impl Parse {
    /// The SQL text for logs and audit; invalid UTF-8 is replaced, not rejected.
    pub fn sql_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.sql)
    }
}

/// Bind ('B'): bind parameter values to a prepared statement, creating a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Portal name; empty for the unnamed portal.
    pub portal: Bytes,
    /// Statement name; empty for the unnamed statement.
    pub statement: Bytes,
    /// Parameter format codes as sent (0 = text, 1 = binary); see [`Bind::param_format`].
    pub param_formats: Vec<i16>,
    /// Parameter values; `None` is SQL NULL.
    pub params: Vec<Option<Bytes>>,
    /// How many result column format codes it sends (the codes are the server's
    /// business, and not kept: no allocation per Bind).
    pub result_formats: usize,
}

impl Bind {
    /// The format of parameter `i` by Postgres's rules: no codes means all text, one code
    /// applies to every parameter, otherwise one code per parameter. A mismatched count
    /// (which the server rejects) or an index out of range reads as text.
    pub fn param_format(&self, i: usize) -> i16 {
        match self.param_formats.as_slice() {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        }
    }
}

/// Execute ('E'): run a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    /// Portal name; empty for the unnamed portal.
    pub portal: Bytes,
    /// Row limit; 0 means no limit.
    pub max_rows: i32,
}

/// Close ('C'): close a statement or portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// `b'S'` for a statement, `b'P'` for a portal.
    pub kind: u8,
    /// Its name; empty for the unnamed one.
    pub name: Bytes,
}

/// Describe ('D'): describe a statement or portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Describe {
    /// `b'S'` for a statement, `b'P'` for a portal.
    pub kind: u8,
    /// Its name; empty for the unnamed one.
    pub name: Bytes,
}

/// FunctionCall ('F'): the legacy fast-path interface; audited like a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// OID of the function to call.
    pub oid: u32,
    /// Argument format codes, same rules as [`Bind::param_formats`].
    pub arg_formats: Vec<i16>,
    /// Argument values; `None` is SQL NULL.
    pub args: Vec<Option<Bytes>>,
    /// Result format code.
    pub result_format: i16,
}

/// CopyFail ('f'): the client aborts COPY FROM STDIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFail {
    /// The client's reason.
    pub message: String,
}

/// SASLInitialResponse ('p' at the start of SASL authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    /// The mechanism the client chose, e.g. `SCRAM-SHA-256`.
    pub mechanism: String,
    /// The client-first-message; empty if the client sent none (length -1).
    pub data: Bytes,
}

/// Upper bound on any count in a client message (the wire field is 16 bits).
pub const MAX_COUNT: usize = u16::MAX as usize;

/// Decodes Query: one NUL-terminated string and nothing after it.
pub fn parse_query(body: Bytes) -> Result<Query, ProtocolError> {
    let mut r = Reader::new(&body, "Query");
    let sql = r.cstr()?;
    r.finish()?;
    Ok(Query {
        sql: body.slice_ref(sql),
    })
}

/// Decodes Parse.
pub fn parse_parse(body: Bytes) -> Result<Parse, ProtocolError> {
    let mut r = Reader::new(&body, "Parse");
    let statement = body.slice_ref(r.cstr()?);
    let sql = r.cstr()?;
    let n = r.count("parameter type", 4)?;
    let mut param_types = Vec::with_capacity(n);
    for _ in 0..n {
        param_types.push(r.u32()?);
    }
    r.finish()?;
    Ok(Parse {
        statement,
        sql: body.slice_ref(sql),
        param_types,
    })
}

/// Reads a count followed by that many i16 format codes.
fn format_codes(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<i16>, ProtocolError> {
    let n = r.count(what, 2)?;
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(r.i16()?);
    }
    Ok(codes)
}

/// Reads a count followed by that many nullable values, as views into `body`.
fn values(
    r: &mut Reader<'_>,
    body: &Bytes,
    what: &'static str,
) -> Result<Vec<Option<Bytes>>, ProtocolError> {
    // Each value has at least its 4-byte length.
    let n = r.count(what, 4)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.nullable()?.map(|v| body.slice_ref(v)));
    }
    Ok(out)
}

/// Decodes Bind.
pub fn parse_bind(body: Bytes) -> Result<Bind, ProtocolError> {
    let mut r = Reader::new(&body, "Bind");
    let portal = body.slice_ref(r.cstr()?);
    let statement = body.slice_ref(r.cstr()?);
    let param_formats = format_codes(&mut r, "parameter format")?;
    let params = values(&mut r, &body, "parameter")?;
    let result_formats = r.count("result format", 2)?;
    r.take(2 * result_formats)?;
    r.finish()?;
    Ok(Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

/// Decodes Execute.
pub fn parse_execute(body: Bytes) -> Result<Execute, ProtocolError> {
    let mut r = Reader::new(&body, "Execute");
    let portal = body.slice_ref(r.cstr()?);
    let max_rows = r.i32()?;
    r.finish()?;
    Ok(Execute { portal, max_rows })
}

/// Reads the `kind` byte and name shared by Close and Describe.
fn kind_and_name(body: &Bytes, message: &'static str) -> Result<(u8, Bytes), ProtocolError> {
    let mut r = Reader::new(body, message);
    let kind = r.u8()?;
    if kind != KIND_STATEMENT && kind != KIND_PORTAL {
        return Err(ProtocolError::InvalidKind {
            message,
            kind: char::from(kind),
        });
    }
    let name = body.slice_ref(r.cstr()?);
    r.finish()?;
    Ok((kind, name))
}

/// Decodes Close.
pub fn parse_close(body: Bytes) -> Result<Close, ProtocolError> {
    let (kind, name) = kind_and_name(&body, "Close")?;
    Ok(Close { kind, name })
}

/// Decodes Describe.
pub fn parse_describe(body: Bytes) -> Result<Describe, ProtocolError> {
    let (kind, name) = kind_and_name(&body, "Describe")?;
    Ok(Describe { kind, name })
}

/// Decodes FunctionCall.
pub fn parse_function_call(body: Bytes) -> Result<FunctionCall, ProtocolError> {
    let mut r = Reader::new(&body, "FunctionCall");
    let oid = r.u32()?;
    let arg_formats = format_codes(&mut r, "argument format")?;
    let args = values(&mut r, &body, "argument")?;
    let result_format = r.i16()?;
    r.finish()?;
    Ok(FunctionCall {
        oid,
        arg_formats,
        args,
        result_format,
    })
}

/// Decodes CopyFail.
pub fn parse_copy_fail(body: Bytes) -> Result<CopyFail, ProtocolError> {
    let mut r = Reader::new(&body, "CopyFail");
    let message = r.string_lossy()?;
    r.finish()?;
    Ok(CopyFail { message })
}

/// Decodes SASLInitialResponse: mechanism name, then i32 length (-1 = none) and data.
pub fn parse_sasl_initial_response(body: Bytes) -> Result<SaslInitialResponse, ProtocolError> {
    let mut r = Reader::new(&body, "SASLInitialResponse");
    let mechanism = r.string_lossy()?;
    let data = r.nullable()?.map(|d| body.slice_ref(d)).unwrap_or_default();
    r.finish()?;
    Ok(SaslInitialResponse { mechanism, data })
}

/// The data of a SASLResponse: the whole 'p' body, uninterpreted (it is SCRAM's job).
pub fn sasl_response(body: Bytes) -> Bytes {
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use postgres_protocol::message::frontend as fe;
    use postgres_protocol::IsNull;

    /// Encodes with the real client encoder and returns the body of the single frame.
    fn body_of(encode: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut b = BytesMut::new();
        encode(&mut b);
        let f = crate::protocol::frame::split_frame(&mut b, usize::MAX)
            .unwrap()
            .unwrap();
        assert!(b.is_empty());
        f.body
    }

    #[test]
    fn query() {
        let body = body_of(|b| fe::query("select 1", b).unwrap());
        let q = parse_query(body).unwrap();
        assert_eq!(&q.sql[..], b"select 1");
        assert_eq!(q.sql_lossy(), "select 1");
        let q = parse_query(Bytes::from_static(b"caf\xe9\0")).unwrap();
        assert_eq!(q.sql_lossy(), "caf\u{fffd}");
    }

    #[test]
    fn query_is_zero_copy() {
        let body = Bytes::from_static(b"select 2\0");
        let q = parse_query(body.clone()).unwrap();
        assert_eq!(q.sql.as_ptr(), body.as_ptr());
    }

    #[test]
    fn parse() {
        let body = body_of(|b| fe::parse("s1", "select $1, $2", [23, 0], b).unwrap());
        let p = parse_parse(body).unwrap();
        assert_eq!(p.statement, "s1".as_bytes());
        assert_eq!(p.sql_lossy(), "select $1, $2");
        assert_eq!(p.param_types, vec![23, 0]);
    }

    #[test]
    fn bind_and_param_format_rules() {
        let values: [Option<&[u8]>; 3] = [Some(b"42"), None, Some(b"")];
        let body = body_of(|b| {
            fe::bind(
                "p1",
                "s1",
                [1i16],
                values,
                |v, buf| match v {
                    Some(v) => {
                        buf.put_slice(v);
                        Ok(IsNull::No)
                    }
                    None => Ok(IsNull::Yes),
                },
                [0i16, 1],
                b,
            )
            .map_err(|_| ())
            .unwrap()
        });
        let bind = parse_bind(body).unwrap();
        assert_eq!(bind.portal, "p1".as_bytes());
        assert_eq!(bind.statement, "s1".as_bytes());
        assert_eq!(bind.param_formats, vec![1]);
        assert_eq!(
            bind.params,
            vec![Some(Bytes::from_static(b"42")), None, Some(Bytes::new())]
        );
        assert_eq!(bind.result_formats, 2);
        assert_eq!((bind.param_format(0), bind.param_format(2)), (1, 1));

        let mut b = bind.clone();
        b.param_formats = vec![];
        assert_eq!(b.param_format(1), 0);
        b.param_formats = vec![0, 1, 0];
        assert_eq!(
            (b.param_format(0), b.param_format(1), b.param_format(9)),
            (0, 1, 0)
        );
    }

    #[test]
    fn execute_close_describe() {
        let e = parse_execute(body_of(|b| fe::execute("p", 10, b).unwrap())).unwrap();
        assert_eq!(
            e,
            Execute {
                portal: Bytes::from_static(b"p"),
                max_rows: 10
            }
        );
        let c = parse_close(body_of(|b| fe::close(b'S', "s1", b).unwrap())).unwrap();
        assert_eq!((c.kind, &c.name[..]), (b'S', &b"s1"[..]));
        let d = parse_describe(body_of(|b| fe::describe(b'P', "", b).unwrap())).unwrap();
        assert_eq!((d.kind, &d.name[..]), (b'P', &b""[..]));
    }

    #[test]
    fn function_call() {
        let mut b = BytesMut::new();
        b.put_u32(1598); // oid
        b.put_u16(1);
        b.put_i16(1);
        b.put_u16(2);
        b.put_i32(4);
        b.put_slice(b"abcd");
        b.put_i32(-1);
        b.put_i16(1);
        let f = parse_function_call(b.freeze()).unwrap();
        assert_eq!(f.oid, 1598);
        assert_eq!(f.arg_formats, vec![1]);
        assert_eq!(f.args, vec![Some(Bytes::from_static(b"abcd")), None]);
        assert_eq!(f.result_format, 1);
    }

    #[test]
    fn copy_fail_and_sasl() {
        let c = parse_copy_fail(body_of(|b| fe::copy_fail("nope", b).unwrap())).unwrap();
        assert_eq!(c.message, "nope");
        let body =
            body_of(|b| fe::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x", b).unwrap());
        let s = parse_sasl_initial_response(body).unwrap();
        assert_eq!(s.mechanism, "SCRAM-SHA-256");
        assert_eq!(&s.data[..], b"n,,n=,r=x");
        let s = parse_sasl_initial_response(Bytes::from_static(b"M\0\xff\xff\xff\xff")).unwrap();
        assert!(s.data.is_empty());
        let body = body_of(|b| fe::sasl_response(b"c=biws", b).unwrap());
        assert_eq!(&sasl_response(body)[..], b"c=biws");
    }

    /// Asserts that decoding `$body` with `$decode` fails with an error matching `$pat`.
    macro_rules! rejects {
        ($decode:ident, $body:expr, $pat:pat) => {{
            let err = $decode(Bytes::from_static($body)).expect_err(stringify!($body));
            assert!(matches!(err, $pat), "{}: {err:?}", stringify!($body));
        }};
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        use ProtocolError as E;
        rejects!(parse_query, b"select 1", E::MissingNul { message: "Query" });
        rejects!(parse_query, b"", E::MissingNul { .. });
        rejects!(
            parse_query,
            b"select 1\0x",
            E::TrailingBytes { count: 1, .. }
        );
        rejects!(parse_query, b"a\0b\0", E::TrailingBytes { count: 2, .. });

        rejects!(
            parse_parse,
            b"s\0q\0\0\x01",
            E::InvalidCount { count: 1, .. }
        );
        rejects!(
            parse_parse,
            b"s\0q\0\xff\xff",
            E::InvalidCount { count: 65535, .. }
        );
        rejects!(parse_parse, b"s\0q\0", E::Truncated { message: "Parse" });
        rejects!(parse_parse, b"s\0q\0\0\0\0", E::TrailingBytes { .. });
        rejects!(parse_parse, b"s\0q", E::MissingNul { .. });

        // value length 16 but only 4 bytes left
        rejects!(
            parse_bind,
            b"\0\0\0\0\0\x01\0\0\0\x10ab\0\0",
            E::Truncated { .. }
        );
        rejects!(
            parse_bind,
            b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0",
            E::InvalidValueLength { len: -2, .. }
        );
        rejects!(
            parse_bind,
            b"\0\0\0\0\xff\xff\0\0\0\0",
            E::InvalidCount {
                what: "parameter",
                count: 65535,
                ..
            }
        );
        rejects!(parse_bind, b"\0\0\0\0\0\0", E::Truncated { .. });
        rejects!(
            parse_bind,
            b"\0\0\0\0\0\0\0\0\0",
            E::TrailingBytes { count: 1, .. }
        );
        rejects!(parse_bind, b"\0\0\xff\xff", E::InvalidCount { .. });

        rejects!(parse_execute, b"p\0\0\0\0", E::Truncated { .. });
        rejects!(parse_execute, b"p\0\0\0\0\0\0", E::TrailingBytes { .. });

        rejects!(parse_close, b"X\0", E::InvalidKind { kind: 'X', .. });
        rejects!(parse_close, b"", E::Truncated { .. });
        rejects!(parse_close, b"S", E::MissingNul { .. });
        rejects!(parse_describe, b"P\0\0", E::TrailingBytes { .. });

        rejects!(
            parse_function_call,
            b"\0\0\0\x01\0\0\0\0",
            E::Truncated { .. }
        );
        rejects!(
            parse_function_call,
            b"\0\0\0\x01\0\0\0\0\0\x01\0",
            E::TrailingBytes { .. }
        );
        rejects!(
            parse_function_call,
            b"\0\0\0\x01\0\0\x10\0",
            E::InvalidCount { .. }
        );

        rejects!(parse_copy_fail, b"x", E::MissingNul { .. });

        rejects!(
            parse_sasl_initial_response,
            b"M\0\0\0\0\x05ab",
            E::Truncated { .. }
        );
        rejects!(
            parse_sasl_initial_response,
            b"M\0\0\0\0\x01ab",
            E::TrailingBytes { count: 1, .. }
        );
        rejects!(
            parse_sasl_initial_response,
            b"M\0\xff\xff\xff\x00",
            E::InvalidValueLength { .. }
        );
        rejects!(parse_sasl_initial_response, b"M", E::MissingNul { .. });
    }
}
