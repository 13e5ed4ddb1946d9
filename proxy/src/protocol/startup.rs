//! The first message(s) of a connection: StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest. They have no type byte, only an i32 length (including itself) and an
//! i32 code. See <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use std::collections::HashSet;

use bytes::BytesMut;

use super::reader::Reader;
use crate::protocol::ProtocolError;

/// The largest startup packet accepted; Postgres uses the same limit
/// (`MAX_STARTUP_PACKET_LENGTH` in `src/include/libpq/pqcomm.h`). Checked as soon as the
/// length word arrives, so a client cannot make us buffer more.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Request code of a CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Request code of an SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Request code of a GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;

/// ALPN protocol name of PostgreSQL (17+): a direct TLS client (`sslnegotiation=direct`)
/// must offer it, and the server picks it when offered.
pub const POSTGRES_ALPN: &[u8] = b"postgresql";
/// First byte of a TLS handshake record: a direct TLS client's first byte. (A startup
/// packet starts with its length's high byte, 0 for any valid one.)
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The major "version" all special request codes share.
const SPECIAL_MAJOR: u16 = 1234;
/// Name of the one startup parameter every connection must give.
const USER_PARAM: &str = "user";

/// One startup-phase message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupMessage {
    /// The client asks to switch to TLS; we answer 'S' or 'N' with one byte.
    SslRequest,
    /// The client asks for GSSAPI encryption; we always answer 'N'.
    GssEncRequest,
    /// Cancel the query of the session identified by this key (sent on a new connection).
    Cancel {
        /// Process id from the BackendKeyData the client was given.
        pid: i32,
        /// Secret from the BackendKeyData the client was given.
        secret: i32,
    },
    /// A normal connection start.
    Startup {
        /// Protocol major version; always 3.
        major: u16,
        /// Protocol minor version; a client may ask for more than 0, which the session
        /// answers with NegotiateProtocolVersion.
        minor: u16,
        /// Parameters in the order the client sent them; contains a non-empty "user".
        params: Vec<(String, String)>,
    },
}

impl StartupMessage {
    /// The value of a startup parameter, if this is a Startup message that has it.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupMessage::Startup { params, .. } => params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// The `user` parameter: the identity that wants to connect.
    pub fn user(&self) -> Option<&str> {
        self.param(USER_PARAM)
    }
}

/// Parses one startup-phase message from the front of `buf`.
///
/// Returns `Ok(None)` until the whole message has arrived (the length word is checked
/// first, so an oversized packet fails right away), and consumes exactly the message's
/// bytes on success; anything after it stays in `buf`. After an error the connection must
/// be closed: what is left in `buf` is unspecified.
pub fn parse_startup(buf: &mut BytesMut) -> Result<Option<StartupMessage>, ProtocolError> {
    let Some(len_word) = buf.get(..4) else {
        return Ok(None);
    };
    let mut word = [0u8; 4];
    word.copy_from_slice(len_word);
    let len = i32::from_be_bytes(word);
    let len = match usize::try_from(len) {
        Ok(n) if (8..=MAX_STARTUP_LEN).contains(&n) => n,
        _ => {
            return Err(ProtocolError::StartupLength {
                len: i64::from(len),
                max: MAX_STARTUP_LEN,
            })
        }
    };
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    decode(packet.get(4..).unwrap_or_default()).map(Some)
}

/// Decodes a startup packet without its length word.
fn decode(body: &[u8]) -> Result<StartupMessage, ProtocolError> {
    let mut r = Reader::new(body, "startup packet");
    let code = r.u32()?;
    let msg = match code {
        CANCEL_REQUEST_CODE => {
            let mut r = Reader::new(r.rest(), "CancelRequest");
            let pid = r.i32()?;
            let secret = r.i32()?;
            r.finish()?;
            return Ok(StartupMessage::Cancel { pid, secret });
        }
        SSL_REQUEST_CODE => StartupMessage::SslRequest,
        GSSENC_REQUEST_CODE => StartupMessage::GssEncRequest,
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major == SPECIAL_MAJOR {
                return Err(ProtocolError::UnknownStartupCode(code));
            }
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            let params = parse_params(&mut r)?;
            StartupMessage::Startup {
                major,
                minor,
                params,
            }
        }
    };
    r.finish()?;
    Ok(msg)
}

/// Reads `name\0value\0` pairs up to the empty name that terminates the list.
fn parse_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut params = Vec::new();
    loop {
        if r.remaining() == 0 {
            // The list must end with an empty name (a lone NUL).
            return Err(ProtocolError::MissingNul {
                message: "startup packet",
            });
        }
        let name = r.string_utf8()?;
        if name.is_empty() {
            break;
        }
        let value = r.string_utf8()?;
        if !seen.insert(name.clone()) {
            return Err(ProtocolError::DuplicateParameter(name));
        }
        params.push((name, value));
    }
    let has_user = params.iter().any(|(n, v)| n == USER_PARAM && !v.is_empty());
    if !has_user {
        return Err(ProtocolError::MissingUser);
    }
    Ok(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use bytes::BufMut;

    fn packet(code: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(8 + body.len() as i32);
        b.put_u32(code);
        b.put_slice(body);
        b
    }

    fn parse_all(mut b: BytesMut) -> Result<Option<StartupMessage>, ProtocolError> {
        parse_startup(&mut b)
    }

    #[test]
    fn startup_from_real_client_encoder() {
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [
                ("user", "alice"),
                ("database", "db1"),
                ("application_name", "psql"),
            ],
            &mut b,
        )
        .unwrap();
        b.put_slice(b"next");
        let msg = parse_startup(&mut b).unwrap().unwrap();
        assert_eq!(
            msg,
            StartupMessage::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db1".into()),
                    ("application_name".into(), "psql".into()),
                ],
            }
        );
        assert_eq!(msg.user(), Some("alice"));
        assert_eq!(msg.param("database"), Some("db1"));
        assert_eq!(msg.param("options"), None);
        assert_eq!(&b[..], b"next", "exactly the message is consumed");
    }

    #[test]
    fn ssl_gss_cancel() {
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut b);
        assert_eq!(
            parse_startup(&mut b).unwrap(),
            Some(StartupMessage::SslRequest)
        );
        assert!(b.is_empty());
        assert_eq!(
            parse_all(packet(GSSENC_REQUEST_CODE, b"")).unwrap(),
            Some(StartupMessage::GssEncRequest)
        );
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(42, -7, &mut b);
        assert_eq!(
            parse_startup(&mut b).unwrap(),
            Some(StartupMessage::Cancel {
                pid: 42,
                secret: -7
            })
        );
    }

    #[test]
    fn incomplete_is_none_and_consumes_nothing() {
        let mut full = BytesMut::new();
        postgres_protocol::message::frontend::startup_message([("user", "u")], &mut full).unwrap();
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(parse_startup(&mut b).unwrap(), None, "cut at {cut}");
            assert_eq!(b.len(), cut);
        }
    }

    #[test]
    fn protocol_minor_versions_are_passed_on() {
        let b = packet(0x0003_0002, b"user\0u\0\0");
        match parse_all(b).unwrap().unwrap() {
            StartupMessage::Startup { major, minor, .. } => assert_eq!((major, minor), (3, 2)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Asserts that parsing `$packet` fails with an error matching `$pat`.
    macro_rules! rejects {
        ($packet:expr, $pat:pat) => {{
            let err = parse_all($packet).expect_err(stringify!($packet));
            assert!(matches!(err, $pat), "{}: {err:?}", stringify!($packet));
            assert!(!err.to_string().is_empty());
        }};
    }

    #[test]
    fn malformed_packets_are_rejected() {
        use ProtocolError as E;
        const V3: u32 = 0x0003_0000;
        // length word below 8, negative, and above the limit (checked before the body)
        rejects!(
            BytesMut::from(&[0, 0, 0, 7, 0, 0, 0, 0][..]),
            E::StartupLength { len: 7, .. }
        );
        rejects!(
            BytesMut::from(&[0xff; 4][..]),
            E::StartupLength { len: -1, .. }
        );
        rejects!(
            BytesMut::from(&[0, 0, 0x27, 0x11][..]),
            E::StartupLength { len: 10_001, .. }
        );

        rejects!(packet(80_877_105, b""), E::UnknownStartupCode(80_877_105));
        rejects!(
            packet(0x0002_0000, b"user\0u\0\0"),
            E::UnsupportedVersion { major: 2, minor: 0 }
        );
        rejects!(
            packet(0x0004_0000, b"user\0u\0\0"),
            E::UnsupportedVersion { major: 4, .. }
        );

        rejects!(
            packet(CANCEL_REQUEST_CODE, b"\0\0\0\x01"),
            E::Truncated { .. }
        );
        rejects!(
            packet(CANCEL_REQUEST_CODE, &[0; 12]),
            E::TrailingBytes { count: 4, .. }
        );
        rejects!(
            packet(SSL_REQUEST_CODE, b"x"),
            E::TrailingBytes { count: 1, .. }
        );

        rejects!(packet(V3, b""), E::MissingNul { .. });
        rejects!(packet(V3, b"user"), E::MissingNul { .. });
        rejects!(packet(V3, b"user\0u"), E::MissingNul { .. });
        rejects!(packet(V3, b"user\0u\0"), E::MissingNul { .. });
        rejects!(
            packet(V3, b"user\0u\0\0x"),
            E::TrailingBytes { count: 1, .. }
        );
        rejects!(packet(V3, b"user\0\xff\0\0"), E::InvalidUtf8 { .. });
        rejects!(
            packet(V3, b"user\0a\0user\0b\0\0"),
            E::DuplicateParameter(_)
        );
        rejects!(packet(V3, b"database\0d\0\0"), E::MissingUser);
        rejects!(packet(V3, b"user\0\0\0"), E::MissingUser);
    }

    #[test]
    fn packet_at_the_limit_is_accepted() {
        let filler = "x".repeat(MAX_STARTUP_LEN - 8 - "user\0u\0application_name\0\0\0".len());
        let body = format!("user\0u\0application_name\0{filler}\0\0");
        let b = packet(0x0003_0000, body.as_bytes());
        assert_eq!(b.len(), MAX_STARTUP_LEN);
        assert!(parse_all(b).unwrap().is_some());
    }
}
