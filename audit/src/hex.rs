//! Lowercase hex, the one form the audit stores hashes, keys and escaped bytes in:
//! encoded by `const_hex`; decoded strictly (a stored hex string is canonical, so an
//! uppercase digit is a changed line, not the same value).

/// Lowercase hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// Exactly `N` bytes from `2 * N` lowercase hex digits; `None` for anything else
/// (another length, uppercase, a non-hex character).
pub(crate) fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    // const_hex also takes uppercase and a `0x` prefix: neither is the stored form.
    if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    const_hex::decode_to_array::<_, N>(text).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_lowercase_and_refuses_the_rest() {
        assert_eq!(encode(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode::<3>("00abff"), Some([0, 0xab, 0xff]));
        assert_eq!(
            decode::<2>("00FF"),
            None,
            "uppercase is not the stored form"
        );
        assert_eq!(decode::<2>("zz00"), None);
        assert_eq!(decode::<2>("00ff00"), None, "too long");
        assert_eq!(decode::<2>("00f"), None, "too short");
        assert_eq!(decode::<1>("0x"), None);
        assert_eq!(decode::<1>("0x00"), None, "no prefix");
    }
}
