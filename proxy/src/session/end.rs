//! Why a session's relay stopped ([`End`]): what the enforcer decides (expiry, revoke,
//! shutdown) and what the relay meets (a quit, an error, a limit). Teardown turns it
//! into the session's one [`Exit`](super::exit::Exit).

use jitgate_audit::AuditError;

use super::limits::LimitExceeded;
use crate::protocol::ProtocolError;
use crate::registry::Revocation;

/// Why the relay stopped.
#[derive(Debug)]
pub enum End {
    /// The client sent Terminate (`clean`) or closed its socket.
    ClientQuit {
        clean: bool,
    },
    Expired,
    Revoked(Revocation),
    UpstreamClosed,
    Shutdown,
    /// The client broke the protocol.
    ClientProtocol(ProtocolError),
    /// The upstream sent something that is not the protocol.
    UpstreamProtocol(String),
    /// The audit log could not take a `query` event: nothing was forwarded.
    Audit(AuditError),
    /// The client tried to hold more than a per-session limit allows.
    Limit(LimitExceeded),
    /// jitgate lost track of the names the session defined with SQL, so it could no
    /// longer audit what they run (fail closed; see [`UNFOLLOWED`]).
    Unfollowed,
    ClientIo(std::io::Error),
    UpstreamIo(std::io::Error),
}

/// What the client and `session_end` are told when the session ends on [`End::Unfollowed`].
pub const UNFOLLOWED: &str = "jitgate lost track of the prepared statements and cursors this session defined with SQL, so it could not audit what they run; the session was ended (reconnect; if this repeats, report the statements to the jitgate operator)";
