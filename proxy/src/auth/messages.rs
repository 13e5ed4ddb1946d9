//! Parsing of the client's SCRAM messages (RFC 5802 §7), the way Postgres reads them
//! (`src/backend/libpq/auth-scram.c`).
//!
//! ```text
//! client-first-message = gs2-cbind-flag "," [authzid] "," client-first-message-bare
//! client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
//! client-final-message = channel-binding "," nonce ["," extensions] "," proof
//! ```
//! Work is on raw bytes: the username is ignored (the identity comes from the startup
//! packet) and may be in any encoding.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::keys::Key;
use crate::error::AuthError;

/// The parts of a client-first-message the exchange needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst<'a> {
    /// The GS2 header including its trailing comma (`n,,` or `y,,`); the client must
    /// repeat it, base64-encoded, in client-final-message.
    pub(crate) gs2_header: &'a [u8],
    /// client-first-message-bare: part of the AuthMessage both sides sign.
    pub(crate) bare: &'a [u8],
    /// The client's nonce (printable ASCII, no comma).
    pub(crate) nonce: &'a str,
}

/// The parts of a client-final-message the exchange needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFinal<'a> {
    /// Decoded `c=` attribute: GS2 header plus channel-binding data (none for us).
    pub(crate) channel_binding: Vec<u8>,
    /// The combined client+server nonce.
    pub(crate) nonce: &'a [u8],
    /// client-final-message-without-proof: the last part of the AuthMessage.
    pub(crate) without_proof: &'a [u8],
    /// The decoded ClientProof.
    pub(crate) proof: Key,
}

const MALFORMED_FIRST: AuthError = AuthError::MalformedScram("invalid client-first-message");
const MALFORMED_FINAL: AuthError = AuthError::MalformedScram("invalid client-final-message");

/// RFC 5802 `printable`: %x21-2B / %x2D-7E (visible ASCII except ',').
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x2b | 0x2d..=0x7e)
}

/// Splits `attr=value` and checks the attribute letter.
fn attr_value(attr: &[u8], name: u8) -> Option<&[u8]> {
    match attr {
        [a, b'=', value @ ..] if *a == name => Some(value),
        _ => None,
    }
}

/// An extension attribute must at least look like `x=...` with an ASCII letter.
fn is_attr(attr: &[u8]) -> bool {
    matches!(attr, [a, b'=', ..] if a.is_ascii_alphabetic())
}

/// Parses a client-first-message (the data of SASLInitialResponse).
pub(crate) fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    if data.contains(&0) {
        return Err(MALFORMED_FIRST);
    }
    // gs2-cbind-flag
    let after_flag = match data {
        [b'n' | b'y', b',', rest @ ..] => rest,
        [b'p', ..] => return Err(AuthError::ChannelBindingNotOffered),
        _ => return Err(AuthError::MalformedScram("unexpected channel-binding flag")),
    };
    // authzid: Postgres does not support one, so it must be empty
    let bare = match after_flag {
        [b',', rest @ ..] => rest,
        [b'a', b'=', ..] => return Err(AuthError::AuthzidNotSupported),
        _ => return Err(MALFORMED_FIRST),
    };
    let gs2_header = data.get(..data.len() - bare.len()).ok_or(MALFORMED_FIRST)?;

    let mut attrs = bare.split(|&b| b == b',');
    let first = attrs.next().ok_or(MALFORMED_FIRST)?;
    if attr_value(first, b'm').is_some() {
        return Err(AuthError::UnsupportedExtension);
    }
    attr_value(first, b'n').ok_or(MALFORMED_FIRST)?;
    let nonce = attrs
        .next()
        .and_then(|a| attr_value(a, b'r'))
        .ok_or(MALFORMED_FIRST)?;
    if nonce.is_empty() || !nonce.iter().copied().all(is_printable) {
        return Err(AuthError::MalformedScram(
            "invalid characters in SCRAM nonce",
        ));
    }
    // Optional extensions: ignored, as Postgres does, but they must be attributes.
    if !attrs.all(is_attr) {
        return Err(MALFORMED_FIRST);
    }
    let nonce = std::str::from_utf8(nonce).map_err(|_| MALFORMED_FIRST)?;
    Ok(ClientFirst {
        gs2_header,
        bare,
        nonce,
    })
}

/// Parses a client-final-message (the data of SASLResponse).
pub(crate) fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    if data.contains(&0) {
        return Err(MALFORMED_FINAL);
    }
    let attrs: Vec<&[u8]> = data.split(|&b| b == b',').collect();
    let [cbind, nonce, middle @ .., proof_attr] = attrs.as_slice() else {
        return Err(MALFORMED_FINAL);
    };
    let cbind = attr_value(cbind, b'c').ok_or(MALFORMED_FINAL)?;
    let nonce = attr_value(nonce, b'r').ok_or(MALFORMED_FINAL)?;
    if !middle.iter().all(|a| is_attr(a)) {
        return Err(MALFORMED_FINAL);
    }
    let proof_b64 = attr_value(proof_attr, b'p').ok_or(MALFORMED_FINAL)?;
    let channel_binding = STANDARD
        .decode(cbind)
        .map_err(|_| AuthError::MalformedScram("invalid channel binding data"))?;
    let proof: Key = STANDARD
        .decode(proof_b64)
        .ok()
        .and_then(|p| p.try_into().ok())
        .ok_or(AuthError::MalformedScram("invalid ClientProof"))?;
    // Everything before ",p=…".
    let without_proof = data
        .len()
        .checked_sub(proof_attr.len() + 1)
        .and_then(|end| data.get(..end))
        .ok_or(MALFORMED_FINAL)?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn client_first_variants() {
        let m = parse_client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            m,
            ClientFirst {
                gs2_header: b"n,,",
                bare: b"n=,r=abc",
                nonce: "abc"
            }
        );
        let m = parse_client_first(b"y,,n=*,r=x~y,x=1").unwrap();
        assert_eq!((m.gs2_header, m.nonce), (&b"y,,"[..], "x~y"));
        assert_eq!(m.bare, b"n=*,r=x~y,x=1");
        // usernames are ignored, whatever their bytes
        assert!(parse_client_first(b"n,,n=\xff\xfe,r=abc").is_ok());
    }

    #[test]
    fn client_first_rejections() {
        use AuthError as A;
        let cases: [(&[u8], A); 14] = [
            (
                b"p=tls-server-end-point,,n=,r=abc",
                A::ChannelBindingNotOffered,
            ),
            (b"n,a=bob,n=,r=abc", A::AuthzidNotSupported),
            (b"n,,m=x,n=,r=abc", A::UnsupportedExtension),
            (
                b"x,,n=,r=abc",
                A::MalformedScram("unexpected channel-binding flag"),
            ),
            (b"", A::MalformedScram("unexpected channel-binding flag")),
            (b"n", A::MalformedScram("unexpected channel-binding flag")),
            (b"n,", MALFORMED_FIRST),
            (b"n,,", MALFORMED_FIRST),
            (b"n,,r=abc", MALFORMED_FIRST),
            (b"n,,n=,", MALFORMED_FIRST),
            (
                b"n,,n=,r=",
                A::MalformedScram("invalid characters in SCRAM nonce"),
            ),
            (
                b"n,,n=,r=a b",
                A::MalformedScram("invalid characters in SCRAM nonce"),
            ),
            (b"n,,n=,r=abc,junk", MALFORMED_FIRST),
            (b"n,,n=,r=abc\0", MALFORMED_FIRST),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_client_first(input),
                Err(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn client_final_parts() {
        let proof = STANDARD.encode([5u8; 32]);
        let msg = format!("c=biws,r=abcdef,x=ext,p={proof}");
        let m = parse_client_final(msg.as_bytes()).unwrap();
        assert_eq!(m.channel_binding, b"n,,");
        assert_eq!(m.nonce, b"abcdef");
        assert_eq!(m.without_proof, b"c=biws,r=abcdef,x=ext");
        assert_eq!(m.proof, [5u8; 32]);
    }

    #[test]
    fn client_final_rejections() {
        let proof = STANDARD.encode([5u8; 32]);
        let short = STANDARD.encode([5u8; 31]);
        let cases = [
            String::new(),
            "c=biws".to_string(),
            format!("c=biws,p={proof}"),
            format!("r=abc,c=biws,p={proof}"),
            format!("c=biws,r=abc,p={short}"),
            "c=biws,r=abc,p=!!!".to_string(),
            format!("c=!!!,r=abc,p={proof}"),
            format!("c=biws,r=abc,p={proof},x=1"),
            format!("c=biws,r=abc,junk,p={proof}"),
            format!("c=biws,r=abc\0,p={proof}"),
        ];
        for input in cases {
            assert!(
                matches!(
                    parse_client_final(input.as_bytes()),
                    Err(AuthError::MalformedScram(_))
                ),
                "{input}"
            );
        }
    }
}
