//! The target's upstream authentication rules for the admin connection.
//!
//! Sessions log in upstream with jitgate's own code (`session/upstream.rs`), which answers
//! only the methods `targets.<t>.auth_methods` allows and refuses SCRAM iteration counts
//! above `max_scram_iterations`. The admin connection is driven by `tokio-postgres`, which
//! answers whatever the server asks for. [`AuthChecked`] sits under it and reads the
//! server's authentication requests as they arrive: a request the target does not allow
//! ends the connection before `tokio-postgres` sees it, so nothing derived from the admin
//! password is sent. After AuthenticationOk (or an ErrorResponse) it only passes bytes on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::settings::TargetSettings;

/// Authentication request codes (the Int32 after an 'R' message's length).
const AUTH_OK: u32 = 0;
const AUTH_CLEARTEXT: u32 = 3;
const AUTH_MD5: u32 = 5;
const AUTH_SASL_CONTINUE: u32 = 11;
/// Authentication messages are small; a longer one is not one we need to read.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// A stream whose first server messages are checked against the target's rules.
pub struct AuthChecked<S> {
    inner: S,
    target: String,
    md5: bool,
    password: bool,
    max_iterations: u32,
    /// Bytes of the server's messages not yet complete; `None` once authentication ended.
    pending: Option<Vec<u8>>,
}

impl<S> AuthChecked<S> {
    pub fn new(inner: S, target: &TargetSettings) -> Self {
        AuthChecked {
            inner,
            target: target.name.clone(),
            md5: target.auth_methods.md5,
            password: target.auth_methods.password,
            max_iterations: target.max_scram_iterations,
            pending: Some(Vec::new()),
        }
    }

    /// Reads the complete messages in `pending`; an error when one is not allowed.
    fn check(&mut self) -> io::Result<()> {
        let Some(buf) = self.pending.as_mut() else {
            return Ok(());
        };
        let mut at = 0;
        let mut done = false;
        while buf.len() >= at + 5 {
            let tag = buf[at];
            let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]);
            let len = len as usize;
            if tag != b'R' || !(8..=MAX_AUTH_MESSAGE).contains(&len) {
                done = true; // an ErrorResponse, or not authentication any more
                break;
            }
            if buf.len() < at + 1 + len {
                break;
            }
            let body = &buf[at + 5..at + 1 + len];
            let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let refusal = match code {
                AUTH_OK => {
                    done = true;
                    break;
                }
                AUTH_CLEARTEXT if !self.password => Some("password (cleartext)".to_owned()),
                AUTH_MD5 if !self.md5 => Some("md5".to_owned()),
                AUTH_SASL_CONTINUE => iterations(&body[4..])
                    .filter(|i| *i > self.max_iterations)
                    .map(|i| format!("a SCRAM iteration count of {i}")),
                _ => None,
            };
            if let Some(asked) = refusal {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "target \"{}\" asked jitgate's admin role for {asked}, which \
                         targets.{}.auth_methods / max_scram_iterations do not allow",
                        self.target, self.target
                    ),
                ));
            }
            at += 1 + len;
        }
        if done {
            self.pending = None;
        } else {
            buf.drain(..at);
        }
        Ok(())
    }
}

/// The `i=` attribute of a SCRAM server-first-message; `u32::MAX` (refused) when it
/// cannot be read.
fn iterations(message: &[u8]) -> Option<u32> {
    let count = std::str::from_utf8(message)
        .ok()
        .and_then(|m| m.split(',').find_map(|a| a.strip_prefix("i=")))
        .and_then(|i| i.parse().ok());
    Some(count.unwrap_or(u32::MAX))
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthChecked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = out.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, out) {
            Poll::Ready(Ok(())) => {
                if let Some(pending) = this.pending.as_mut() {
                    pending.extend_from_slice(&out.filled()[before..]);
                    if let Err(e) = this.check() {
                        out.set_filled(before);
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthChecked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    fn checker(md5: bool, max: u32) -> AuthChecked<()> {
        AuthChecked {
            inner: (),
            target: "t".into(),
            md5,
            password: false,
            max_iterations: max,
            pending: Some(Vec::new()),
        }
    }

    fn feed(c: &mut AuthChecked<()>, bytes: &[u8]) -> io::Result<()> {
        if let Some(p) = c.pending.as_mut() {
            p.extend_from_slice(bytes);
        }
        c.check()
    }

    #[test]
    fn md5_and_cleartext_are_refused_unless_allowed() {
        assert!(feed(&mut checker(false, 4096), &auth(AUTH_MD5, b"salt")).is_err());
        assert!(feed(&mut checker(true, 4096), &auth(AUTH_MD5, b"salt")).is_ok());
        assert!(feed(&mut checker(true, 4096), &auth(AUTH_CLEARTEXT, b"")).is_err());
    }

    #[test]
    fn a_request_split_across_reads_is_still_seen() {
        let m = auth(AUTH_MD5, b"salt");
        let mut c = checker(false, 4096);
        assert!(feed(&mut c, &m[..3]).is_ok());
        assert!(feed(&mut c, &m[3..]).is_err());
    }

    #[test]
    fn iteration_counts_above_the_cap_are_refused() {
        let first = b"r=abc,s=c2FsdA==,i=1000000";
        assert!(feed(
            &mut checker(false, 100_000),
            &auth(AUTH_SASL_CONTINUE, first)
        )
        .is_err());
        let ok = b"r=abc,s=c2FsdA==,i=4096";
        assert!(feed(&mut checker(false, 100_000), &auth(AUTH_SASL_CONTINUE, ok)).is_ok());
    }

    #[test]
    fn after_authentication_ok_nothing_is_checked() {
        let mut c = checker(false, 4096);
        assert!(feed(&mut c, &auth(AUTH_OK, b"")).is_ok());
        assert!(c.pending.is_none());
    }
}
