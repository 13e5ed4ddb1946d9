//! The client connection: a framed reader over the stream (login), an output buffer
//! that is written in one go, and every write to the client behind its [`ClientGate`].

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio_util::either::Either;

use super::stream::ClientStream;
use crate::connection::{read_message, ReadFailure};
use crate::gate::ClientGate;
use crate::protocol::frame::{split_frame, Frame};
use crate::protocol::ProtocolError;
use crate::protocol::{backend, PgError};

/// Largest message accepted before the client is authenticated: Postgres's
/// `PG_MAX_AUTH_TOKEN_LENGTH` (65 535 bytes of body) plus the 5-byte header. An
/// unauthenticated client must not make the proxy reserve more than this.
pub const MAX_AUTH_MESSAGE_LEN: usize = 65_535 + 5;

/// Why reading from the client stopped.
#[derive(Debug)]
pub enum ReadError {
    Closed,
    Io(std::io::Error),
    Protocol(ProtocolError),
}

/// A client connection after the startup packet.
pub struct ClientConn {
    pub stream: ClientStream,
    /// Bytes read but not yet consumed.
    pub inbuf: BytesMut,
    /// Bytes to send with the next [`ClientConn::flush`].
    pub out: BytesMut,
    /// Shared with the backstop: whether it may write to this client (see `gate`).
    pub gate: Arc<ClientGate>,
    max_message_len: usize,
}

/// Writes all of `buf` and flushes (a TLS stream holds written bytes until flushed),
/// inside the gate: `at_boundary` says where the stream stands once `buf` is out
/// (`None`: `buf` is whole messages of ours, so where it stood before).
async fn gated_write(
    stream: &mut ClientStream,
    gate: &ClientGate,
    buf: &[u8],
    at_boundary: Option<bool>,
) -> std::io::Result<()> {
    let was = gate.begin()?;
    stream.write_all(buf).await?;
    stream.flush().await?;
    gate.end(at_boundary.unwrap_or(was));
    Ok(())
}

impl ClientConn {
    pub fn new(stream: ClientStream, inbuf: BytesMut, max_message_len: usize) -> Self {
        let plain = matches!(stream, Either::Left(_));
        ClientConn {
            stream,
            inbuf,
            out: BytesMut::with_capacity(512),
            gate: Arc::new(ClientGate::new(plain)),
            max_message_len,
        }
    }

    /// Raises the message size limit (after authentication).
    pub fn set_max_message_len(&mut self, max: usize) {
        self.max_message_len = max;
    }

    /// Reads one whole message.
    pub async fn read_frame(&mut self) -> Result<Frame, ReadError> {
        let max = self.max_message_len;
        let read = read_message(&mut self.stream, &mut self.inbuf, |buf| {
            split_frame(buf, max)
        });
        match read.await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(ReadError::Closed),
            Err(ReadFailure::Decode(e)) => Err(ReadError::Protocol(e)),
            Err(ReadFailure::Io(e)) => Err(ReadError::Io(e)),
        }
    }

    /// Writes and flushes everything queued in `out` (whole messages of ours).
    pub async fn flush(&mut self) -> std::io::Result<()> {
        gated_write(&mut self.stream, &self.gate, &self.out, None).await?;
        self.out.clear();
        Ok(())
    }

    /// Writes and flushes `buf`, whole messages of ours.
    pub async fn write_own(&mut self, buf: &[u8]) -> std::io::Result<()> {
        gated_write(&mut self.stream, &self.gate, buf, None).await
    }

    /// Writes and flushes `buf`, server bytes; `at_boundary`: the server's stream is
    /// between two messages at the end of `buf`. Cancelled, `buf` keeps exactly the bytes
    /// not yet written: each `write` is cancel-safe and `buf` advances past what it took.
    /// (Not `write_all_buf`: that uses `writev(2)`, whose path through the VFS costs more
    /// per call than `send(2)` for the one contiguous chunk a `BytesMut` is.)
    pub async fn write_relayed(
        &mut self,
        buf: &mut BytesMut,
        at_boundary: bool,
    ) -> std::io::Result<()> {
        self.gate.begin()?;
        while !buf.is_empty() {
            let n = self.stream.write(buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            buf.advance(n);
        }
        self.stream.flush().await?;
        self.gate.end(at_boundary);
        Ok(())
    }

    /// Sends a FATAL (or other) error and flushes; a failure to send is only logged,
    /// since the connection is being closed anyway. Nothing is written after it.
    /// Not written when the stream was left inside a message (a relayed chunk that ended
    /// mid-row, a write cut short): bytes of ours there would garble it.
    pub async fn send_error(&mut self, error: &PgError) {
        backend::error_response(&mut self.out, error);
        if self.gate.at_boundary() {
            if let Err(e) = self.flush().await {
                tracing::debug!(error = %e, "could not send the error to the client");
            }
        } else {
            tracing::debug!("client stream stopped inside a message: closing without the error");
        }
        self.gate.close();
        let _ = self.stream.shutdown().await;
    }
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options asked for.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported: &[&str]) {
    out.put_u8(b'v');
    let start = out.len();
    out.put_i32(0);
    out.put_i32(0);
    out.put_i32(i32::try_from(unsupported.len()).unwrap_or(i32::MAX));
    for name in unsupported {
        out.put_slice(name.replace('\0', "").as_bytes());
        out.put_u8(0);
    }
    let len = i32::try_from(out.len() - start).unwrap_or(i32::MAX);
    if let Some(field) = out.get_mut(start..start + 4) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}
