//! Reading whole messages from a connection: the one loop that reads until the
//! protocol's decoder for that stream (startup packets, client frames, server messages;
//! see [`crate::protocol`]) makes a message of the buffered bytes.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no message was read.
#[derive(Debug)]
pub enum ReadFailure<E> {
    /// The decoder refused the bytes.
    Decode(E),
    /// Reading failed.
    Io(std::io::Error),
}

/// Reads from `stream` into `buf` until `decode` makes a message of what is buffered
/// (it takes the message's bytes out of `buf`). `Ok(None)`: the stream ended first;
/// what is left in `buf` is part of a message, or nothing.
pub async fn read_message<S, T, E>(
    stream: &mut S,
    buf: &mut BytesMut,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> Result<Option<T>, ReadFailure<E>>
where
    S: AsyncRead + Unpin,
{
    loop {
        if let Some(message) = decode(buf).map_err(ReadFailure::Decode)? {
            return Ok(Some(message));
        }
        if stream.read_buf(buf).await.map_err(ReadFailure::Io)? == 0 {
            return Ok(None);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(buf: &mut BytesMut) -> Result<Option<String>, String> {
        match buf.iter().position(|b| *b == b'\n') {
            Some(0) => Err("empty line".into()),
            Some(i) => {
                let l = buf.split_to(i + 1);
                Ok(Some(String::from_utf8_lossy(&l[..i]).into_owned()))
            }
            None => Ok(None),
        }
    }

    #[tokio::test]
    async fn reads_across_writes_and_reports_the_end_and_refusals() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in [&b"he"[..], b"llo\nwor", b"ld\npart"] {
                tokio::io::AsyncWriteExt::write_all(&mut a, part)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut buf = BytesMut::new();
        let got = read_message(&mut b, &mut buf, line).await.unwrap();
        assert_eq!(got.as_deref(), Some("hello"));
        let got = read_message(&mut b, &mut buf, line).await.unwrap();
        assert_eq!(got.as_deref(), Some("world"));
        writer.await.unwrap();
        // The writer is gone: the stream ends inside a message.
        assert_eq!(read_message(&mut b, &mut buf, line).await.unwrap(), None);
        assert_eq!(&buf[..], b"part");
        // A refusal is the decoder's.
        let mut bad = BytesMut::from(&b"\n"[..]);
        assert!(matches!(
            read_message(&mut b, &mut bad, line).await,
            Err(ReadFailure::Decode(_))
        ));
    }
}
