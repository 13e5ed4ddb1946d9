//! The hash chain that makes the log tamper-evident.
//!
//! Every line carries, in its `prev` field, the SHA-256 of the line before it: of the
//! exact bytes of that line as stored, without its terminating `\n`, written as 64
//! lowercase hex digits. The first line of a log set carries [`LineHash::GENESIS`] (64
//! zeros). Because the input is the stored bytes themselves, there is no canonical
//! re-encoding to get wrong: any tool that can read a file and compute SHA-256 can check
//! the chain, and any change to a line (one byte, a line removed, inserted or moved)
//! breaks the link to the next one.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// SHA-256 of one stored line (or of a checkpoint line), shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineHash(pub [u8; 32]);

impl LineHash {
    /// What the first line of a log set (and the first checkpoint) chains to: no
    /// predecessor.
    pub const GENESIS: LineHash = LineHash([0; 32]);

    /// The hash of `line`: its bytes exactly as stored, without the trailing `\n`.
    pub fn of_line(line: &[u8]) -> LineHash {
        LineHash(Sha256::digest(line).into())
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(12);
        s
    }
}

impl fmt::Display for LineHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(const_hex::Buffer::<32>::new().format(&self.0))
    }
}

impl fmt::Debug for LineHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LineHash({self})")
    }
}

impl FromStr for LineHash {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::hex::decode::<32>(s)
            .map(LineHash)
            .ok_or("expected 64 lowercase hex digits (a SHA-256)")
    }
}

impl Serialize for LineHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LineHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = LineHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SHA-256 as 64 lowercase hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LineHash, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_round_trip() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let h = LineHash::of_line(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(h.to_string(), hex);
        assert_eq!(hex.parse::<LineHash>().unwrap(), h);
        assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{hex}\""));
        assert_eq!(
            serde_json::from_str::<LineHash>(&format!("\"{hex}\"")).unwrap(),
            h
        );
        assert_eq!(h.short(), "ba7816bf8f01");
    }

    #[test]
    fn refuses_non_canonical_hex() {
        assert!(
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
                .parse::<LineHash>()
                .is_err()
        );
        assert!("abc".parse::<LineHash>().is_err());
        assert_eq!(LineHash::GENESIS.to_string(), "0".repeat(64));
    }
}
