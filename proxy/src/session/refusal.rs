//! One way out for a client jitgate will not serve: what the client is told (a FATAL
//! ErrorResponse with its SQLSTATE and a message a DBA can act on) and the audit event
//! that records it, built together and reported once, by [`Refusal::report`].
//!
//! Every refusal after the startup packet goes through here — bad startup parameters,
//! failed authentication, no grant, no credentials for the granted role, an upstream
//! that cannot be opened, shutdown, no file descriptors for the backstop, an audit log
//! that cannot take the session's start, a client without TLS when TLS is required — so none is told without being recorded (the
//! last one is recorded if the log recovers in time; otherwise the operator's log says
//! so). The end of an admitted session has its own single path, [`super::teardown`],
//! recorded as `session_end`.

use std::net::SocketAddr;

use jitgate_audit::{Event, EventBody};
use uuid::Uuid;

use super::client::ClientConn;
use super::ProxyContext;
use crate::protocol::{sqlstate, PgError};

/// A refused client: what it is told and what is recorded.
pub struct Refusal {
    /// Sent to the client, after the event is written.
    pub error: PgError,
    /// `access_denied` or `auth_failure`.
    pub event: EventBody,
    /// The identity the client named (empty when it named none), and the target.
    pub identity: String,
    pub target: String,
}

impl Refusal {
    /// The client was not let in: why, for the DBA (`reason`), and for the client
    /// (`error`).
    pub fn denied(
        peer: SocketAddr,
        identity: &str,
        target: &str,
        reason: impl Into<String>,
        error: PgError,
    ) -> Refusal {
        let event = EventBody::AccessDenied {
            client_addr: peer.to_string(),
            reason: reason.into(),
        };
        Refusal::of(event, identity, target, error)
    }

    /// The client did not authenticate: why, for the DBA (`reason`; the client's
    /// `error` never says whether the identity exists).
    pub fn auth_failed(
        peer: SocketAddr,
        identity: &str,
        target: &str,
        reason: impl Into<String>,
        error: PgError,
    ) -> Refusal {
        let event = EventBody::AuthFailure {
            client_addr: peer.to_string(),
            reason: reason.into(),
        };
        Refusal::of(event, identity, target, error)
    }

    /// `tls.required` is set and the client did not negotiate TLS. PostgreSQL refuses a
    /// connection that only a `hostssl` line would match with the same SQLSTATE (28000).
    pub fn tls_required(peer: SocketAddr, params: &[(String, String)]) -> Refusal {
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let error = PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "jitgate requires TLS: this connection is not encrypted",
        )
        .with_hint(
            "connect with sslmode=require, or better sslmode=verify-full with sslrootcert= \
             the CA of jitgate's certificate (PostgreSQL 17 clients may add \
             sslnegotiation=direct)",
        );
        let reason = "the client did not negotiate TLS and tls.required is set";
        Refusal::denied(peer, param("user"), param("database"), reason, error)
    }

    fn of(event: EventBody, identity: &str, target: &str, error: PgError) -> Refusal {
        Refusal {
            error,
            event,
            identity: identity.to_owned(),
            target: target.to_owned(),
        }
    }

    /// Records the refusal, then tells the client. A log that cannot take the event is
    /// reported in the operator's log; the client is told either way.
    pub async fn report(self, ctx: &ProxyContext, conn: &mut ClientConn, session_id: Uuid) {
        tracing::info!(sqlstate = %self.error.code, message = %self.error.message, "refused");
        let event = Event::new(self.event)
            .with_session(session_id)
            .with_identity(&self.identity)
            .with_target(&self.target);
        if let Err(e) = ctx.audit.write(event).await {
            tracing::error!(error = %e, "could not audit a refused connection");
        }
        conn.send_error(&self.error).await;
    }
}
