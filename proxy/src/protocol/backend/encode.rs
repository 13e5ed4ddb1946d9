//! Encoders for the backend messages the proxy sends on its own behalf.
//!
//! Each function appends one whole frame to the caller's `BytesMut`; the length is
//! patched in afterwards. Strings are written NUL-terminated, with any embedded NUL
//! replaced by U+FFFD, so no input can break the framing.
//! Formats: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use super::super::error::PgError;
use super::super::tags;

/// Longest text written for one ErrorResponse/NoticeResponse field; longer text is cut
/// (at a character boundary) so an error can never become an unbounded message.
pub const MAX_ERROR_FIELD_LEN: usize = 16 * 1024;

/// Authentication request codes (first i32 of an 'R' body).
const AUTH_OK: i32 = 0;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// Writes a frame: tag, then a length placeholder, then the body, then the real length.
fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    // Bodies here are bounded (strings are capped or tiny), far below i32::MAX.
    let len = i32::try_from(buf.len() - at).unwrap_or(i32::MAX);
    if let Some(slot) = buf.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes `s` NUL-terminated, replacing embedded NULs.
fn cstr(buf: &mut BytesMut, s: &str) {
    if s.as_bytes().contains(&0) {
        buf.put_slice(s.replace('\0', "\u{fffd}").as_bytes());
    } else {
        buf.put_slice(s.as_bytes());
    }
    buf.put_u8(0);
}

/// Like [`cstr`] but cut to [`MAX_ERROR_FIELD_LEN`] bytes at a character boundary.
fn capped_cstr(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(MAX_ERROR_FIELD_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    cstr(buf, s.get(..end).unwrap_or_default());
}

/// AuthenticationOk: the client is authenticated.
pub fn authentication_ok(buf: &mut BytesMut) {
    frame(buf, tags::AUTHENTICATION, |b| b.put_i32(AUTH_OK));
}

/// AuthenticationSASL: the mechanisms the client may choose from (empty names skipped,
/// since an empty name would end the list early).
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    frame(buf, tags::AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL);
        for m in mechanisms.iter().filter(|m| !m.is_empty()) {
            cstr(b, m);
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue: carries the server-first-message.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    frame(buf, tags::AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL_CONTINUE);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal: carries the server-final-message (`v=…`).
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    frame(buf, tags::AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL_FINAL);
        b.put_slice(data);
    });
}

/// ParameterStatus: tells the client a run-time parameter's value.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    frame(buf, tags::PARAMETER_STATUS, |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData: the key the client must quote in a CancelRequest.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    frame(buf, tags::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery with a transaction status (`tags::TX_IDLE`, `TX_IN_TRANSACTION`,
/// `TX_FAILED`).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    frame(buf, tags::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version we support and the `_pq_.` options
/// we did not recognise, for clients that ask for protocol 3.x with x > 0 or options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: i32, unrecognized: &[&str]) {
    frame(buf, tags::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(newest_minor);
        b.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
        for opt in unrecognized {
            cstr(b, opt);
        }
    });
}

/// Writes the typed fields shared by ErrorResponse and NoticeResponse.
fn error_fields(b: &mut BytesMut, e: &PgError) {
    let severity = e.severity.as_str();
    let fields = [
        (b'S', Some(severity)),
        (b'V', Some(severity)),
        (b'C', Some(e.code.as_ref())),
        (b'M', Some(e.message.as_str())),
        (b'D', e.detail.as_deref()),
        (b'H', e.hint.as_deref()),
    ];
    for (kind, value) in fields {
        if let Some(value) = value {
            b.put_u8(kind);
            capped_cstr(b, value);
        }
    }
    b.put_u8(0);
}

/// ErrorResponse. With `Severity::Fatal` the proxy must close the connection afterwards.
pub fn error_response(buf: &mut BytesMut, error: &PgError) {
    frame(buf, tags::ERROR_RESPONSE, |b| error_fields(b, error));
}

/// NoticeResponse: an advisory message; the session goes on.
pub fn notice_response(buf: &mut BytesMut, notice: &PgError) {
    frame(buf, tags::NOTICE, |b| error_fields(b, notice));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::protocol::error::{sqlstate, Severity};
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::backend::Message;

    /// Parses exactly one message with the real client-side parser.
    fn one(mut buf: BytesMut) -> Message {
        let msg = Message::parse(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "exactly one frame");
        msg
    }

    fn fields(msg: Message) -> Vec<(u8, String)> {
        let mut it = match &msg {
            Message::ErrorResponse(b) => b.fields(),
            Message::NoticeResponse(b) => b.fields(),
            _ => panic!("not an error or notice"),
        };
        let mut out = vec![];
        while let Some(f) = it.next().unwrap() {
            out.push((
                f.type_(),
                String::from_utf8(f.value_bytes().to_vec()).unwrap(),
            ));
        }
        out
    }

    #[test]
    fn authentication_messages_round_trip() {
        let mut b = BytesMut::new();
        authentication_ok(&mut b);
        assert_eq!(&b[..], b"R\0\0\0\x08\0\0\0\0");
        assert!(matches!(one(b), Message::AuthenticationOk));

        let mut b = BytesMut::new();
        authentication_sasl(&mut b, &["SCRAM-SHA-256", "", "X"]);
        let Message::AuthenticationSasl(body) = one(b) else {
            panic!("expected AuthenticationSASL")
        };
        let mechs: Vec<String> = body
            .mechanisms()
            .map(|m| Ok(m.to_owned()))
            .collect()
            .unwrap();
        assert_eq!(mechs, vec!["SCRAM-SHA-256", "X"]);

        let mut b = BytesMut::new();
        authentication_sasl_continue(&mut b, b"r=abc,s=xyz,i=4096");
        let Message::AuthenticationSaslContinue(body) = one(b) else {
            panic!("expected SASLContinue")
        };
        assert_eq!(body.data(), b"r=abc,s=xyz,i=4096");

        let mut b = BytesMut::new();
        authentication_sasl_final(&mut b, b"v=sig");
        let Message::AuthenticationSaslFinal(body) = one(b) else {
            panic!("expected SASLFinal")
        };
        assert_eq!(body.data(), b"v=sig");
    }

    #[test]
    fn status_key_ready_round_trip() {
        let mut b = BytesMut::new();
        parameter_status(&mut b, "server_version", "15.4 (jitgate)");
        let Message::ParameterStatus(body) = one(b) else {
            panic!("expected ParameterStatus")
        };
        assert_eq!(body.name().unwrap(), "server_version");
        assert_eq!(body.value().unwrap(), "15.4 (jitgate)");

        let mut b = BytesMut::new();
        backend_key_data(&mut b, 4242, -17);
        let Message::BackendKeyData(body) = one(b) else {
            panic!("expected BackendKeyData")
        };
        assert_eq!((body.process_id(), body.secret_key()), (4242, -17));

        let mut b = BytesMut::new();
        ready_for_query(&mut b, tags::TX_IN_TRANSACTION);
        let Message::ReadyForQuery(body) = one(b) else {
            panic!("expected ReadyForQuery")
        };
        assert_eq!(body.status(), b'T');
    }

    #[test]
    fn error_response_round_trips_all_fields() {
        let e = PgError::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, "no active grant for db1")
            .with_detail("identity alice")
            .with_hint("request access with: jitgate grant request");
        let mut b = BytesMut::new();
        error_response(&mut b, &e);
        assert_eq!(
            fields(one(b)),
            vec![
                (b'S', "FATAL".into()),
                (b'V', "FATAL".into()),
                (b'C', "42501".into()),
                (b'M', "no active grant for db1".into()),
                (b'D', "identity alice".into()),
                (b'H', "request access with: jitgate grant request".into()),
            ]
        );
        let mut b = BytesMut::new();
        notice_response(
            &mut b,
            &PgError::notice(sqlstate::WARNING, "grant ends in 5m"),
        );
        assert_eq!(b[0], b'N');
        assert_eq!(
            fields(one(b)),
            vec![
                (b'S', "NOTICE".into()),
                (b'V', "NOTICE".into()),
                (b'C', "01000".into()),
                (b'M', "grant ends in 5m".into()),
            ]
        );
    }

    #[test]
    fn nul_and_huge_strings_cannot_break_framing() {
        let e = PgError::new(Severity::Error, "XX\u{0}00", "a\0b")
            .with_detail("é".repeat(MAX_ERROR_FIELD_LEN));
        let mut b = BytesMut::new();
        error_response(&mut b, &e);
        let f = fields(one(b));
        assert_eq!(f[2], (b'C', "XX\u{fffd}00".into()));
        assert_eq!(f[3], (b'M', "a\u{fffd}b".into()));
        assert!(f[4].1.len() <= MAX_ERROR_FIELD_LEN);
        assert!(f[4].1.chars().all(|c| c == 'é'));

        let mut b = BytesMut::new();
        parameter_status(&mut b, "a\0", "b");
        let Message::ParameterStatus(body) = one(b) else {
            panic!("expected ParameterStatus")
        };
        assert_eq!(body.name().unwrap(), "a\u{fffd}");
    }

    #[test]
    fn negotiate_protocol_version_bytes() {
        let mut b = BytesMut::new();
        negotiate_protocol_version(&mut b, 0, &["_pq_.x"]);
        assert_eq!(&b[..], b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.x\0");
    }

    #[test]
    fn encoders_append_after_existing_bytes() {
        let mut b = BytesMut::from(&b"xyz"[..]);
        ready_for_query(&mut b, tags::TX_IDLE);
        assert_eq!(&b[..], b"xyzZ\0\0\0\x05I");
    }
}
