//! The server's messages in the exchanges jitgate has with a server on its own behalf —
//! logging in upstream, resetting a parked connection, terminating a backend — decoded
//! whole by `postgres-protocol`, with the frame as it came (the greeting forwards some
//! of them to the client unchanged).

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Message;

use super::super::frame::{peek_header, HEADER_LEN};

/// One server message and its frame.
pub struct FullMessage {
    pub message: Message,
    /// The whole frame: type byte, length, body.
    pub frame: Bytes,
}

impl FullMessage {
    /// The body: the frame without its 5-byte header.
    pub fn body(&self) -> &[u8] {
        self.frame.get(HEADER_LEN..).unwrap_or_default()
    }
}

/// Takes one whole server message out of `buf`; `Ok(None)` until all of it is there.
/// Errs on a length no message can have, or a body `postgres-protocol` cannot decode.
pub fn server_message(buf: &mut BytesMut) -> std::io::Result<Option<FullMessage>> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let Some(header) = peek_header(buf, usize::MAX).map_err(|e| invalid(e.to_string()))? else {
        return Ok(None);
    };
    if buf.len() < header.len {
        buf.reserve(header.len - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(header.len).freeze();
    let message = Message::parse(&mut BytesMut::from(&frame[..]))?
        .ok_or_else(|| invalid("a whole message that does not decode".into()))?;
    Ok(Some(FullMessage { message, frame }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn takes_whole_messages_only_and_keeps_the_frame() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05I"[..]);
        buf.extend_from_slice(b"S\0\0\0\x08a\0b\0");
        let first = server_message(&mut buf).unwrap().unwrap();
        assert!(matches!(first.message, Message::ReadyForQuery(_)));
        assert_eq!(first.body(), b"I");
        let second = server_message(&mut buf).unwrap().unwrap();
        assert!(matches!(second.message, Message::ParameterStatus(_)));
        assert_eq!(&second.frame[..], b"S\0\0\0\x08a\0b\0");
        assert!(buf.is_empty());
        let mut partial = BytesMut::from(&b"Z\0\0\0\x05"[..]);
        assert!(server_message(&mut partial).unwrap().is_none());
        assert_eq!(
            partial.len(),
            5,
            "nothing taken before the message is whole"
        );
        let mut bad = BytesMut::from(&b"Z\0\0\0\x02"[..]);
        assert!(server_message(&mut bad).is_err());
    }
}
