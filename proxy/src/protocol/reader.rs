//! A bounds-checked cursor over a message body, shared by every decoder.
//!
//! Every read checks the remaining length first and fails with a [`ProtocolError`] that
//! names the message, so decoders never index out of bounds and never trust a count or
//! a length from the wire before checking it against the bytes actually present.

use crate::protocol::ProtocolError;

/// Reads big-endian integers, NUL-terminated strings and length-prefixed values.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, the body of a message called `message` in errors.
    pub(crate) fn new(buf: &'a [u8], message: &'static str) -> Self {
        Reader { buf, message }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(ProtocolError::Truncated {
                message: self.message,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A NUL-terminated string, without its NUL (which is consumed).
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        // memchr: every Query and Parse text is scanned here, a word at a time.
        let Some(nul) = memchr::memchr(0, self.buf) else {
            return Err(ProtocolError::MissingNul {
                message: self.message,
            });
        };
        let s = self.take(nul)?;
        self.take(1)?;
        Ok(s)
    }

    /// A NUL-terminated string decoded lossily: names are only used for audit and logs,
    /// and may legitimately be in a non-UTF-8 `client_encoding`.
    pub(crate) fn string_lossy(&mut self) -> Result<String, ProtocolError> {
        Ok(String::from_utf8_lossy(self.cstr()?).into_owned())
    }

    /// A NUL-terminated string that must be UTF-8.
    pub(crate) fn string_utf8(&mut self) -> Result<String, ProtocolError> {
        let raw = self.cstr()?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(ProtocolError::InvalidUtf8 {
                message: self.message,
            }),
        }
    }

    /// A 16-bit item count (read unsigned, as Postgres does), checked against the bytes
    /// left: each item takes at least `min_item_size` bytes, so a count the body cannot
    /// hold is rejected before anything is allocated for it.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_item_size: usize,
    ) -> Result<usize, ProtocolError> {
        let raw = self.u16()?;
        let n = usize::from(raw);
        if n.saturating_mul(min_item_size) > self.buf.len() {
            return Err(ProtocolError::InvalidCount {
                message: self.message,
                what,
                count: i64::from(raw),
            });
        }
        Ok(n)
    }

    /// An i32-length-prefixed value; length -1 means NULL.
    pub(crate) fn nullable(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let Ok(n) = usize::try_from(len) else {
            return Err(ProtocolError::InvalidValueLength {
                message: self.message,
                len,
            });
        };
        self.take(n).map(Some)
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Succeeds only if the whole body was read: trailing bytes are a protocol violation.
    pub(crate) fn finish(self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                message: self.message,
                count: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_checks_bounds() {
        let mut r = Reader::new(b"\x01\x00\x02ab\0\xff\xff\xff\xff", "Test");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.cstr().unwrap(), b"ab");
        assert_eq!(r.nullable().unwrap(), None);
        assert_eq!(r.remaining(), 0);
        assert!(matches!(r.u8(), Err(ProtocolError::Truncated { .. })));
        r.finish().unwrap();
    }

    #[test]
    fn rejects_bad_lengths_and_counts() {
        let mut r = Reader::new(b"\xff\xff\xff\xfe", "Test");
        assert!(matches!(
            r.nullable(),
            Err(ProtocolError::InvalidValueLength { len: -2, .. })
        ));
        let mut r = Reader::new(b"\x00\x00\x00\x05abc", "Test");
        assert!(matches!(r.nullable(), Err(ProtocolError::Truncated { .. })));
        let mut r = Reader::new(b"\xff\xff\x00\x00", "Test");
        assert!(matches!(
            r.count("parameter", 4),
            Err(ProtocolError::InvalidCount { count: 65535, .. })
        ));
        let mut r = Reader::new(b"abc", "Test");
        assert!(matches!(r.cstr(), Err(ProtocolError::MissingNul { .. })));
        let r = Reader::new(b"x", "Test");
        assert!(matches!(
            r.finish(),
            Err(ProtocolError::TrailingBytes { count: 1, .. })
        ));
    }
}
