//! A connection of jitgate's own to a session's target, under the session's brokered
//! role, on which it ends the session's backend: one `pg_terminate_backend`, then a
//! look at `pg_stat_activity` until the backend has left it.
//!
//! A role may signal its own backends (`pg_signal_backend` is not needed for them), so no
//! extra privilege is brokered. The grantee controls that role, so nothing it may have
//! set can steer these statements: the connection asks for `search_path=pg_catalog` in
//! its startup packet (a client setting outranks `ALTER ROLE … SET`), and every function
//! and relation is written with its schema.
//!
//! The backend is named by its pid *and* the client port of the session's upstream
//! connection, so a pid the server has reused since for another connection (perhaps
//! another person's, under the same role) is never signalled. When the server does not
//! see jitgate's real ports (network address/port translation between them: this
//! connection's own `inet_client_port()` is not its local port), the pid alone is used.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::AsyncWriteExt;

use super::StopTarget;
use crate::connection::{read_message, ReadFailure};
use crate::protocol::backend::{parse_error_fields, server_message};
use crate::protocol::tags;
use crate::session::error::UpstreamError;
use crate::session::stream::UpstreamStream;
use crate::session::upstream;

/// How long opening the connection may take (TCP, TLS, authentication, a fork).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one statement may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Startup parameters of the connection (see the module doc).
const PARAMS: [(&str, &str); 3] = [
    ("application_name", "jitgate: ending a session"),
    ("search_path", "pg_catalog"),
    ("statement_timeout", "2s"),
];

/// An open side connection, for one session's backend.
pub struct SideConn {
    stream: UpstreamStream,
    /// The `WHERE` condition that names the session's backend in `pg_stat_activity a`.
    backend: String,
    inbuf: BytesMut,
}

/// The local port under `stream`.
pub fn local_port(stream: &UpstreamStream) -> Option<u16> {
    let tcp = match stream {
        tokio_util::either::Either::Left(tcp) => tcp,
        tokio_util::either::Either::Right(tls) => tls.get_ref().0,
    };
    tcp.local_addr().ok().map(|a| a.port())
}

/// Which `pg_stat_activity a` row is the session's backend: its pid, and the client port
/// of its connection to jitgate when the server sees jitgate's real ports (`own`: the
/// side connection's local port; see the module doc). Only integers go into the SQL.
fn backend_row(pid: i32, upstream_port: Option<u16>, own: Option<u16>) -> String {
    match (upstream_port, own) {
        (Some(port), Some(own)) => format!(
            "a.pid = {pid} AND (a.client_port = {port} OR pg_catalog.inet_client_port() <> {own})"
        ),
        _ => format!("a.pid = {pid}"),
    }
}

impl SideConn {
    /// Opens the connection as the session's role, for the backend of `t` whose
    /// connection to jitgate has the local port `upstream_port`.
    pub async fn open(
        t: &StopTarget,
        upstream_port: Option<u16>,
    ) -> Result<SideConn, UpstreamError> {
        let no_credentials = || UpstreamError::NoCredentials {
            target: t.target.clone(),
            role: t.role.clone(),
        };
        let target = t
            .settings
            .targets
            .get(&t.target)
            .ok_or_else(no_credentials)?;
        let creds = match &t.creds {
            Some(creds) => creds,
            None => target.roles.get(&t.role).ok_or_else(no_credentials)?,
        };
        let params: Vec<(String, String)> = PARAMS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            upstream::connect(target, creds, &params, &t.keys),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(OPEN_TIMEOUT))??;
        let own = local_port(&opened.stream);
        Ok(SideConn {
            stream: opened.stream,
            backend: backend_row(t.cancel.upstream_pid, upstream_port, own),
            inbuf: BytesMut::with_capacity(512),
        })
    }

    /// Sends SIGTERM to the session's backend. `Ok(false)`: no such backend (any more).
    pub async fn terminate(&mut self) -> Result<bool, UpstreamError> {
        let sql = format!(
            "SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a WHERE {}",
            self.backend
        );
        let rows = self.query(&sql).await?;
        Ok(rows.iter().any(|v| v.as_deref() == Some("t")))
    }

    /// Whether the session's backend is still in `pg_stat_activity`.
    pub async fn backend_present(&mut self) -> Result<bool, UpstreamError> {
        let sql = format!(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a WHERE {}",
            self.backend
        );
        let rows = self.query(&sql).await?;
        Ok(rows.first().and_then(|v| v.as_deref()) != Some("0"))
    }

    /// Says goodbye (best effort and bounded: the server cleans up either way).
    pub async fn close(mut self) {
        let bye = async {
            let _ = self.stream.write_all(&tags::TERMINATE_MESSAGE).await;
            let _ = self.stream.shutdown().await;
        };
        let _ = tokio::time::timeout(STATEMENT_TIMEOUT, bye).await;
    }

    /// Runs one simple-protocol statement; the first column of each row, as text.
    async fn query(&mut self, sql: &str) -> Result<Vec<Option<String>>, UpstreamError> {
        tokio::time::timeout(STATEMENT_TIMEOUT, self.query_inner(sql))
            .await
            .map_err(|_| UpstreamError::Timeout(STATEMENT_TIMEOUT))?
    }

    async fn query_inner(&mut self, sql: &str) -> Result<Vec<Option<String>>, UpstreamError> {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        frontend::query(sql, &mut out).map_err(UpstreamError::Encode)?;
        self.stream
            .write_all(&out)
            .await
            .map_err(UpstreamError::Io)?;
        self.stream.flush().await.map_err(UpstreamError::Io)?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            let read = read_message(&mut self.stream, &mut self.inbuf, server_message).await;
            let frame = match read {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Err(UpstreamError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                }
                Err(ReadFailure::Decode(e)) => return Err(UpstreamError::Protocol(e)),
                Err(ReadFailure::Io(e)) => return Err(UpstreamError::Io(e)),
            };
            match &frame.message {
                backend::Message::DataRow(body) => {
                    let mut ranges = body.ranges();
                    let first = ranges.next().map_err(UpstreamError::Protocol)?.flatten();
                    rows.push(
                        first.map(|r| String::from_utf8_lossy(&body.buffer()[r]).into_owned()),
                    );
                }
                backend::Message::ErrorResponse(_) => {
                    let fields = parse_error_fields(frame.body());
                    failed = Some(UpstreamError::Statement {
                        code: fields.code.unwrap_or_default(),
                        message: fields.message.unwrap_or_default(),
                    });
                }
                backend::Message::ReadyForQuery(_) => {
                    return match failed {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                // RowDescription, CommandComplete, notices (a WARNING for a pid that is
                // not a backend), ParameterStatus: nothing to keep.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backend_row;

    #[test]
    fn the_backend_is_named_by_pid_and_port_unless_ports_are_translated() {
        assert_eq!(
            backend_row(42, Some(5000), Some(6000)),
            "a.pid = 42 AND (a.client_port = 5000 OR pg_catalog.inet_client_port() <> 6000)"
        );
        assert_eq!(backend_row(42, None, Some(6000)), "a.pid = 42");
        assert_eq!(backend_row(-1, Some(1), None), "a.pid = -1");
    }
}
