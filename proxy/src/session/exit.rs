//! One typed end for every connection: an [`Exit`] carries what the client is told (a
//! FATAL ErrorResponse with its SQLSTATE and a message a DBA can act on — or nothing,
//! where the protocol no longer allows an answer) and the audit event that records it,
//! built together and reported once, by [`Exit::report`] (the way neon's proxy reports a
//! `ReportableError` and mini-redis's `Handler::run` returns one result).
//!
//! Every ending is one of:
//! - a failure before or during the startup packet ([`super::handshake`]): a malformed
//!   or oversized packet, an unsupported protocol version, a failed TLS handshake, a
//!   client that closed in the middle of its packet or sent none within `login_timeout`,
//!   shutdown — `access_denied`;
//! - a refusal after it ([`super::login`], [`super::run`]): bad startup parameters,
//!   failed authentication or a client that left during it (`auth_failure`); no grant, no
//!   credentials for the role, an upstream that cannot be opened, a connection limit,
//!   shutdown, no file descriptors for the backstop, an audit log that cannot take the
//!   session's start, a client without TLS when TLS is required (`access_denied`);
//! - the end of an admitted session ([`super::teardown`]): `session_end`. When the
//!   backstop has to cut a session whose thread stopped running ([`crate::backstop`]),
//!   it tells the client the same farewell (`farewell.rs`) without touching the audit log
//!   (it must not depend on the disk); the session's own exit records the end once its
//!   thread runs again.
//!
//! Only a connection that ends between two packets without having asked for anything
//! (closed or reset before its first byte, or right after jitgate's answer to SSLRequest)
//! is not recorded: health checks and port probes do that, and PostgreSQL does not log
//! them either.
//!
//! Refusals of clients that have not authenticated carry names the client chose and can
//! come at any rate: they are written through [`crate::limits::RefusalAudit`] (names cut,
//! rate-limited, with a count of what was not written).
//!
//! Order: a refusal is recorded, then the client is told (a log that cannot take the
//! event is reported in the operator's log; the client is told either way). A session's
//! end is the other way round: the teardown tells the client ([`Exit::tell`]) while the
//! backend is being stopped, and `session_end`, which says what had to be stopped, is
//! written after. Either way the error is sent at most once and the event written at most
//! once: `tell` takes the error, `report` consumes the exit.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use jiff::Timestamp;
use jitgate_audit::{EndReason, Event, EventBody, Stopped};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::client::ClientConn;
use super::meta::SessionMeta;
use super::ProxyContext;
use crate::protocol::{sqlstate, PgError};

/// How long a client gets to take its final error (or the close) before it is dropped.
const TELL_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection ends: what the client is told and what the audit records.
pub struct Exit {
    /// Sent to the client; `None` when it cannot (or need not) be told.
    error: Option<PgError>,
    record: Record,
}

/// The audit side of an [`Exit`].
enum Record {
    /// `access_denied` or `auth_failure`: a client that was not let in.
    Refusal {
        event: EventBody,
        /// The identity the client named (empty when it named none), and the target.
        identity: String,
        target: String,
        ip: IpAddr,
        /// The client has not authenticated: its names are its own choice.
        pre_auth: bool,
    },
    /// `session_end` of an admitted session; `late_from` is the deadline or revocation
    /// time its `late_ms` is measured from (see [`Exit::dropped`]).
    SessionEnd {
        event: Event,
        late_from: Option<Timestamp>,
    },
    /// Nothing worth recording (see the module doc).
    Unrecorded,
}

/// What only the end of an admitted session's teardown knows, for its `session_end`.
pub struct Tally {
    pub queries: u64,
    pub duration_ms: u64,
    pub upstream_parked: bool,
    pub stopped: Option<Stopped>,
}

impl Exit {
    /// The client was not let in: why, for the DBA (`reason`), and for the client
    /// (`error`).
    pub fn denied(
        peer: SocketAddr,
        identity: &str,
        target: &str,
        reason: impl Into<String>,
        error: PgError,
    ) -> Exit {
        let event = EventBody::AccessDenied {
            client_addr: peer.to_string(),
            reason: reason.into(),
        };
        Exit::refusal(peer, event, identity, target, Some(error))
    }

    /// Marks a refusal of a client that has not authenticated (yet).
    pub fn before_auth(mut self) -> Exit {
        if let Record::Refusal { pre_auth, .. } = &mut self.record {
            *pre_auth = true;
        }
        self
    }

    /// The client did not authenticate: why, for the DBA (`reason`; the client's
    /// `error` never says whether the identity exists). `None`: it left, nothing to tell.
    pub fn auth_failed(
        peer: SocketAddr,
        identity: &str,
        target: &str,
        reason: impl Into<String>,
        error: Option<PgError>,
    ) -> Exit {
        let event = EventBody::AuthFailure {
            client_addr: peer.to_string(),
            reason: reason.into(),
        };
        Exit::refusal(peer, event, identity, target, error).before_auth()
    }

    /// The connection failed before jitgate knew who the client is (the handshake):
    /// `access_denied` with no names, rate-limited; `error` when the client can be told.
    pub fn at_startup(peer: SocketAddr, reason: impl Into<String>, error: Option<PgError>) -> Exit {
        let event = EventBody::AccessDenied {
            client_addr: peer.to_string(),
            reason: reason.into(),
        };
        Exit::refusal(peer, event, "", "", error).before_auth()
    }

    /// A connection that ended without asking for anything: not recorded.
    pub fn unrecorded() -> Exit {
        Exit {
            error: None,
            record: Record::Unrecorded,
        }
    }

    /// `tls.required` is set and the client did not negotiate TLS. PostgreSQL refuses a
    /// connection that only a `hostssl` line would match with the same SQLSTATE (28000).
    pub fn tls_required(peer: SocketAddr, params: &[(String, String)]) -> Exit {
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
        Exit::denied(
            peer,
            param(params, "user"),
            param(params, "database"),
            reason,
            error,
        )
        .before_auth()
    }

    /// Shutdown began before the client was logged in (57P03, as PostgreSQL says it).
    pub fn shutting_down(peer: SocketAddr, params: &[(String, String)]) -> Exit {
        let error = PgError::fatal(
            sqlstate::CANNOT_CONNECT_NOW,
            "jitgate is shutting down and does not accept new sessions",
        )
        .with_hint("connect again in a moment");
        let user = param(params, "user");
        Exit::denied(peer, user, "", "jitgate is shutting down", error).before_auth()
    }

    /// The end of an admitted session, for `session_end`: why (`reason`, `detail`), what
    /// the client is told (`error`; `None`: the connection is only closed), and the time
    /// the end is late against (`late_from`: the deadline or the revocation).
    pub fn ended(
        meta: &SessionMeta,
        reason: EndReason,
        detail: Option<String>,
        late_from: Option<Timestamp>,
        error: Option<PgError>,
    ) -> Exit {
        let event = meta.event(EventBody::SessionEnd {
            reason,
            detail,
            late_ms: None,
            queries: 0,
            duration_ms: 0,
            upstream_parked: false,
            stopped: None,
        });
        Exit {
            error,
            record: Record::SessionEnd { event, late_from },
        }
    }

    fn refusal(
        peer: SocketAddr,
        event: EventBody,
        identity: &str,
        target: &str,
        error: Option<PgError>,
    ) -> Exit {
        Exit {
            error,
            record: Record::Refusal {
                event,
                identity: identity.to_owned(),
                target: target.to_owned(),
                ip: peer.ip(),
                pre_auth: false,
            },
        }
    }

    /// Why the session ended, if this is the end of an admitted session.
    pub fn end_reason(&self) -> Option<EndReason> {
        match &self.record {
            Record::SessionEnd {
                event:
                    Event {
                        body: EventBody::SessionEnd { reason, .. },
                        ..
                    },
                ..
            } => Some(*reason),
            _ => None,
        }
    }

    /// Tells the client (the error, or only the close when there is none) within a
    /// bound: a client that does not read must not hold its connection open. Takes the
    /// error: it is sent once.
    pub async fn tell(&mut self, client: &mut ClientConn) {
        let told = match self.error.take() {
            Some(error) => {
                tracing::info!(sqlstate = %error.code, message = %error.message, "telling the client");
                tokio::time::timeout(TELL_TIMEOUT, client.send_error(&error)).await
            }
            None => {
                tokio::time::timeout(TELL_TIMEOUT, async {
                    let _ = client.stream.shutdown().await;
                })
                .await
            }
        };
        if told.is_err() {
            tracing::debug!("client did not take the final error in time");
        }
    }

    /// The session's end took effect now: its `late_ms` is measured to here.
    pub fn dropped(&mut self) {
        if let Record::SessionEnd {
            event:
                Event {
                    body: EventBody::SessionEnd { late_ms, .. },
                    ..
                },
            late_from: Some(from),
        } = &mut self.record
        {
            let d = Timestamp::now().duration_since(*from);
            *late_ms = Some(d.as_secs_f64() * 1000.0);
        }
    }

    /// Adds what the end of the teardown knows to a `session_end`.
    pub fn tally(&mut self, tally: Tally) {
        if let Record::SessionEnd {
            event:
                Event {
                    body:
                        EventBody::SessionEnd {
                            queries,
                            duration_ms,
                            upstream_parked,
                            stopped,
                            ..
                        },
                    ..
                },
            ..
        } = &mut self.record
        {
            *queries = tally.queries;
            *duration_ms = tally.duration_ms;
            *upstream_parked = tally.upstream_parked;
            *stopped = tally.stopped;
        }
    }

    /// Records the end, then tells the client what [`Exit::tell`] has not told it yet
    /// (`client`: `None` when there is no connection to tell). A `session_end` of a
    /// session ended because the audit log failed is not attempted.
    pub async fn report(
        mut self,
        ctx: &ProxyContext,
        client: Option<&mut ClientConn>,
        session_id: Uuid,
    ) {
        let written = match std::mem::replace(&mut self.record, Record::Unrecorded) {
            Record::Refusal {
                event,
                identity,
                target,
                ip,
                pre_auth,
            } => {
                tracing::info!(event = event.kind(), reason = %reason_of(&event), "refused");
                let event = Event::new(event)
                    .with_session(session_id)
                    .with_identity(identity)
                    .with_target(target);
                if pre_auth {
                    ctx.refusal_audit.write(&ctx.audit, ip, event).await
                } else {
                    ctx.audit.write(event).await.map(drop)
                }
            }
            Record::SessionEnd { event, .. } => {
                if let EventBody::SessionEnd {
                    reason: EndReason::AuditUnavailable,
                    ..
                } = event.body
                {
                    Ok(())
                } else {
                    ctx.audit.write(event).await.map(drop)
                }
            }
            Record::Unrecorded => Ok(()),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "could not audit the end of a connection");
        }
        if let Some(client) = client {
            if self.error.is_some() {
                self.tell(client).await;
            }
        }
    }
}

/// The value of a startup parameter, or "".
fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn reason_of(event: &EventBody) -> &str {
    match event {
        EventBody::AccessDenied { reason, .. } | EventBody::AuthFailure { reason, .. } => reason,
        _ => "",
    }
}
