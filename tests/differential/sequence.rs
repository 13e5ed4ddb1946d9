//! A generated message sequence and how its bytes are cut into TCP writes: in one write
//! (pipelined) or in several, at byte offsets that may fall inside a message.

use std::fmt;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::msg::Msg;

/// Messages sent as one unit, followed by the terminator (see `exchange`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub msgs: Vec<Msg>,
    /// Number of TCP writes the bytes go out in; 1 = pipelined in a single write.
    pub pieces: usize,
    /// Seeds the cut offsets, so a sequence is sent the same way every time.
    pub cut_seed: u64,
}

impl Sequence {
    /// Every message, encoded back to back.
    pub fn bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        for m in &self.msgs {
            m.encode(&mut out);
        }
        out
    }

    /// Where the bytes of [`Sequence::bytes`] are cut between writes: sorted, distinct,
    /// strictly inside `0..len`.
    pub fn cuts(&self, len: usize) -> Vec<usize> {
        if self.pieces <= 1 || len < 2 {
            return Vec::new();
        }
        let mut rng = StdRng::seed_from_u64(self.cut_seed);
        let mut cuts: Vec<usize> = (1..self.pieces).map(|_| rng.gen_range(1..len)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// The bytes as the writes that carry them, `tail` appended to the last one.
    pub fn writes(&self, tail: &[u8]) -> Vec<Vec<u8>> {
        let bytes = self.bytes();
        let mut writes = Vec::new();
        let mut start = 0;
        for cut in self.cuts(bytes.len()) {
            writes.push(bytes[start..cut].to_vec());
            start = cut;
        }
        let mut last = bytes[start..].to_vec();
        last.extend_from_slice(tail);
        writes.push(last);
        writes
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.bytes().len();
        let cuts = self.cuts(len);
        if cuts.is_empty() {
            writeln!(
                f,
                "  ({} messages, {len} bytes, one write)",
                self.msgs.len()
            )?;
        } else {
            writeln!(
                f,
                "  ({} messages, {len} bytes, {} writes cut at byte offsets {cuts:?})",
                self.msgs.len(),
                cuts.len() + 1
            )?;
        }
        for m in &self.msgs {
            writeln!(f, "  {m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reassemble_to_the_bytes() {
        let seq = Sequence {
            msgs: vec![Msg::Query("SELECT 1".into()), Msg::Sync, Msg::Flush],
            pieces: 4,
            cut_seed: 7,
        };
        let writes = seq.writes(b"T");
        assert!(writes.len() > 1);
        let mut joined = writes.concat();
        assert_eq!(joined.pop(), Some(b'T'));
        assert_eq!(joined, seq.bytes().to_vec());
    }
}
