//! Typed frames after startup: a tag byte, an i32 length that counts itself, the body.
//!
//! The relay mostly looks at headers only: [`peek_header`] checks a frame cheaply before
//! anything is allocated, and [`split_frame`] cuts one whole frame off a read buffer
//! without copying. Server output is walked by [`super::scan`], across reads.

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::ProtocolError;

/// Size of a frame header: tag byte plus i32 length.
pub const HEADER_LEN: usize = 5;

/// The header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type byte (see [`super::tags`]).
    pub tag: u8,
    /// Length of the whole frame in bytes, tag byte included (1 + the length field).
    pub len: usize,
}

impl FrameHeader {
    /// Length of the body alone.
    pub fn body_len(&self) -> usize {
        self.len.saturating_sub(HEADER_LEN)
    }
}

/// Reads the header at the start of `buf`.
///
/// `Ok(None)` if fewer than 5 bytes are there. Fails if the length field is below 4 (it
/// counts itself) or the whole frame would exceed `max_len` bytes — checked before the
/// body arrives, so a peer cannot make us buffer more than `max_len`.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<FrameHeader>, ProtocolError> {
    let Some(&[tag, a, b, c, d]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    let body_and_len = match usize::try_from(len) {
        Ok(n) if n >= 4 => n,
        _ => {
            return Err(ProtocolError::FrameLength {
                tag: char::from(tag),
                len: i64::from(len),
            })
        }
    };
    let total = body_and_len.saturating_add(1);
    if total > max_len {
        return Err(ProtocolError::FrameTooLong {
            tag: char::from(tag),
            len: total,
            max: max_len,
        });
    }
    Ok(Some(FrameHeader { tag, len: total }))
}

/// One whole frame; the body is a view into the read buffer, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type byte.
    pub tag: u8,
    /// Message body, without tag and length.
    pub body: Bytes,
}

/// Splits one complete frame off the front of `buf`.
///
/// `Ok(None)` if the frame is not complete yet; in that case room for the rest of it is
/// reserved in `buf`, so the next read can fill it.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some(header) = peek_header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < header.len {
        buf.reserve(header.len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(header.len);
    frame.advance(HEADER_LEN);
    Ok(Some(Frame {
        tag: header.tag,
        body: frame.freeze(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn peek_header_checks_lengths() {
        assert_eq!(peek_header(b"Q\0\0\0", 100).unwrap(), None);
        assert_eq!(
            peek_header(b"Q\0\0\0\x04", 100).unwrap(),
            Some(FrameHeader { tag: b'Q', len: 5 })
        );
        assert_eq!(
            peek_header(b"Q\0\0\0\x09abc", 100)
                .unwrap()
                .unwrap()
                .body_len(),
            5
        );
        assert!(matches!(
            peek_header(b"Q\0\0\0\x03", 100),
            Err(ProtocolError::FrameLength { tag: 'Q', len: 3 })
        ));
        assert!(matches!(
            peek_header(b"Q\xff\xff\xff\xff", 100),
            Err(ProtocolError::FrameLength { len: -1, .. })
        ));
        // exactly at the limit passes, one more byte fails
        assert!(peek_header(b"Q\0\0\0\x63", 100).unwrap().is_some());
        assert!(matches!(
            peek_header(b"Q\0\0\0\x64", 100),
            Err(ProtocolError::FrameTooLong {
                len: 101,
                max: 100,
                ..
            })
        ));
        assert!(peek_header(b"Q\x7f\xff\xff\xff", usize::MAX)
            .unwrap()
            .is_some());
    }

    #[test]
    fn split_frame_takes_whole_frames_only() {
        let mut wire = frame(b'Q', b"select 1\0");
        wire.extend(frame(b'S', b""));
        for cut in 0..10 {
            let mut b = BytesMut::from(&wire[..cut]);
            assert_eq!(split_frame(&mut b, 1024).unwrap(), None, "cut {cut}");
            assert_eq!(b.len(), cut);
        }
        let mut b = BytesMut::from(&wire[..]);
        let f = split_frame(&mut b, 1024).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'Q', &b"select 1\0"[..]));
        let f = split_frame(&mut b, 1024).unwrap().unwrap();
        assert_eq!((f.tag, f.body.len()), (b'S', 0));
        assert!(b.is_empty());
        assert_eq!(split_frame(&mut b, 1024).unwrap(), None);
    }

    #[test]
    fn split_frame_reserves_room_for_the_rest() {
        let mut b = BytesMut::new();
        b.put_u8(b'd');
        b.put_i32(4 + 4000);
        assert_eq!(split_frame(&mut b, 8192).unwrap(), None);
        assert!(b.capacity() >= 4005);
        let mut b = BytesMut::from(&b"d\0\x01\0\0"[..]);
        assert!(split_frame(&mut b, 8192).is_err(), "over the limit");
    }
}
