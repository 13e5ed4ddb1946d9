//! The webhook signature: `X-Jitgate-Signature: sha256=<hex>` where `<hex>` is the
//! lowercase hex HMAC-SHA256, keyed with the webhook's secret, of
//! `"<X-Jitgate-Timestamp>.<body>"`.
//!
//! Signing the timestamp with the body lets a receiver reject replays of an old delivery
//! (see the module documentation of [`crate::notify`] for the receiver's steps).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix naming the algorithm in the signature header.
const SCHEME: &str = "sha256=";

/// The MAC over `"<timestamp>.<body>"`, ready for a final `finalize` or `verify`.
/// `None` cannot happen for HMAC (it takes keys of any length); the hmac API is
/// fallible only because other MACs have fixed key sizes.
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `X-Jitgate-Signature` value for one attempt: `sha256=<lowercase hex>`.
pub(crate) fn signature_header(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<String> {
    let tag = mac(secret, timestamp, body)?.finalize().into_bytes();
    Some(format!("{SCHEME}{}", const_hex::encode(tag)))
}

/// Whether `header` (the `X-Jitgate-Signature` value) is the signature of `body` sent at
/// `timestamp` (the `X-Jitgate-Timestamp` value, exactly as received) under `secret`.
///
/// The comparison runs in constant time (`hmac`'s `verify_slice`). This checks only the
/// signature: a receiver must also reject timestamps too far from its own clock (five
/// minutes is the recommended window) so that a captured delivery cannot be replayed.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix(SCHEME) else {
        return false;
    };
    // Digits only (either case): `const_hex` would also strip a `0x`.
    if hex.starts_with("0x") {
        return false;
    }
    let Ok(tag) = const_hex::decode(hex) else {
        return false;
    };
    mac(secret, timestamp, body).is_some_and(|mac| mac.verify_slice(&tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected value was computed independently (Python's `hmac` module) over the
    /// message `1700000000.{"a":1}`.
    #[test]
    fn known_answer() {
        let header =
            signature_header(b"s3cret", "1700000000", b"{\"a\":1}").expect("hmac takes any key");
        assert_eq!(
            header,
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn round_trip_and_tampering() {
        const TS: &str = "1700000000";
        const BODY: &[u8] = b"{\"a\":1}";
        let header = signature_header(b"s3cret", TS, BODY).expect("hmac takes any key");
        let check = |secret: &[u8], ts: &str, body: &[u8], header: &str| {
            verify_signature(secret, ts, body, header)
        };
        assert!(check(b"s3cret", TS, BODY, &header));
        let upper_hex = format!("sha256={}", header[7..].to_uppercase());
        assert!(check(b"s3cret", TS, BODY, &upper_hex));
        assert!(!check(b"s3cret", TS, b"{\"a\":2}", &header));
        assert!(!check(b"s3cret", "1700000001", BODY, &header));
        assert!(!check(b"other", TS, BODY, &header));
        assert!(!check(b"s3cret", TS, BODY, &header[7..]));
        for bad in ["sha256=zz", "sha256=abc", "sha256=", "", "sha1=00"] {
            assert!(!check(b"s3cret", TS, BODY, bad), "{bad:?}");
        }
    }
}
