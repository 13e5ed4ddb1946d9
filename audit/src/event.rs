//! The audit event schema (version [`SCHEMA_VERSION`]): one [`Event`] per log line.
//!
//! Every event carries its context (session, identity, target, role, grant) so a session
//! can be replayed from its own events, and a `kind`-tagged [`EventBody`] flattened into
//! the same JSON object. `AUDIT.md` at the repository root documents every field; keep it
//! in step with this file.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chain::LineHash;
pub use crate::param::{Param, ParamFormat};
pub use crate::stopped::{StopMethod, Stopped, StoppedWork};

/// Version of the line format. Bumped when a field changes meaning, type or name or is
/// removed; adding kinds or optional fields does not bump it (see AUDIT.md).
pub const SCHEMA_VERSION: u32 = 1;

/// One audit record: context common to all kinds plus the kind-specific body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Schema version the line was written with ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// Position in the log, assigned by the writer: 1, 2, 3… strictly increasing, no gaps
    /// for acknowledged events. Callers leave it 0.
    pub seq: u64,
    /// SHA-256 of the previous line of the log set (hash chain, see [`crate::chain`]),
    /// set by the writer. Callers leave it `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<LineHash>,
    /// When the event happened (taken by the caller), µs RFC 3339 UTC.
    #[serde(with = "crate::time::micros")]
    pub ts: Timestamp,
    /// The proxy session this event belongs to (uuid v7, also in tracing spans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// The authenticated (or claimed, for failures) identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The named upstream database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The upstream database role the grant maps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The grant that admitted the session (or that a grant event is about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<Uuid>,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// A new event stamped now (µs precision) with no context; add context with the
    /// `with_*` helpers. `seq` is 0 until the writer assigns it.
    pub fn new(body: EventBody) -> Event {
        Event {
            v: SCHEMA_VERSION,
            seq: 0,
            prev: None,
            ts: crate::time::now_micros(),
            session_id: None,
            identity: None,
            target: None,
            role: None,
            grant_id: None,
            body,
        }
    }

    /// Sets the session id.
    pub fn with_session(mut self, session_id: Uuid) -> Event {
        self.session_id = Some(session_id);
        self
    }

    /// Sets the identity.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Event {
        self.identity = Some(identity.into());
        self
    }

    /// Sets the target.
    pub fn with_target(mut self, target: impl Into<String>) -> Event {
        self.target = Some(target.into());
        self
    }

    /// Sets the upstream role.
    pub fn with_role(mut self, role: impl Into<String>) -> Event {
        self.role = Some(role.into());
        self
    }

    /// Sets the grant id.
    pub fn with_grant(mut self, grant_id: Uuid) -> Event {
        self.grant_id = Some(grant_id);
        self
    }

    /// Overrides the timestamp (truncated to µs so it round-trips exactly); for events
    /// whose time was taken earlier, and for tests.
    pub fn with_ts(mut self, ts: Timestamp) -> Event {
        self.ts = crate::time::truncate_micros(ts);
        self
    }

    /// The `kind` string of the body, as written in the log.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

/// What happened; serialized as `"kind": "<snake_case variant>"` plus the fields.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A client was authenticated, admitted and connected upstream.
    SessionStart {
        /// Client socket address (`ip:port`).
        client_addr: String,
        /// Whether the client connection uses TLS.
        tls: bool,
        /// `application_name` from the startup packet, if sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        application_name: Option<String>,
        /// The grant's absolute expiry: when the session will be dropped.
        #[serde(with = "crate::time::micros")]
        deadline: Timestamp,
        /// Upstream backend process id (from BackendKeyData), to correlate with server logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream_pid: Option<i32>,
        /// The upstream connection was parked by an earlier session of the same grant
        /// (reset with `DISCARD ALL`) and reused, rather than opened for this session.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        upstream_reused: bool,
    },
    /// A statement, recorded before it is forwarded upstream.
    Query {
        /// Per-session counter linking `query`, `query_result` and `copy` events.
        query_id: u64,
        /// Which protocol flow carried it.
        protocol: Protocol,
        /// The SQL text as sent, losslessly escaped (invalid UTF-8 and NUL bytes as
        /// `\0hh`, see [`crate::escape_bytes`]); only its head when `truncated`. Empty for
        /// function calls.
        sql: String,
        /// The SQL was longer than the configured `audit.max_sql_bytes`: `sql` holds its
        /// head (cut at a character boundary), `sql_len` and `sql_sha256` describe the
        /// whole text. Written only when true.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        /// Length in bytes of the whole SQL text as the client sent it (only when
        /// `truncated`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sql_len: Option<u64>,
        /// SHA-256 of the whole SQL text as the client sent it, lowercase hex (only when
        /// `truncated`), so the full statement can be matched against another record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sql_sha256: Option<String>,
        /// The statement tries to change the session's role, authorization or search_path
        /// (`SET ROLE`, `SET SESSION AUTHORIZATION`, `SET search_path`, `set_config(…)`,
        /// `RESET …`, `DISCARD ALL`); see [`SettingChange`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        setting_change: Option<SettingChange>,
        /// Prepared statement name (extended protocol; `""` is the unnamed statement).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        statement: Option<String>,
        /// Portal name (extended protocol; `""` is the unnamed portal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        portal: Option<String>,
        /// Bind parameters / function arguments, in order. Empty when `params_from` is
        /// set: the parameters are those of that earlier event.
        #[serde(default)]
        params: Vec<Param>,
        /// OID of the function for `function_call`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function_oid: Option<u32>,
        /// Another execution of a portal whose parameters were already recorded: the
        /// `query_id` of the `query` event of the same session (the portal's first
        /// execution, always earlier in the log) whose `params` are this execution's
        /// too. A portal run in steps (Execute with a row limit, PortalSuspended, Execute
        /// again) records its parameters once per Bind, not once per step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params_from: Option<u64>,
    },
    /// How a recorded query ended, written after the server answered.
    QueryResult {
        /// The `query_id` of the matching `query` event.
        query_id: u64,
        /// CommandComplete tag, e.g. `SELECT 3`, `INSERT 0 1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// Rows affected/returned, parsed from the tag where it has a count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u64>,
        /// SQLSTATE of an ErrorResponse.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sqlstate: Option<String>,
        /// Primary message of an ErrorResponse.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// From forwarding the query to its completion, in microseconds.
        duration_us: u64,
        /// Bytes of result data the server returned for this query: the message lengths
        /// (body, without the 5-byte header) of its DataRow and CopyData (COPY TO)
        /// messages. Omitted when 0 (nothing returned, or a log older than this field).
        #[serde(default, skip_serializing_if = "is_zero")]
        bytes: u64,
        /// The server never ran the statement: it skipped the message (an earlier message
        /// of the same extended-protocol group failed, so everything up to the next Sync
        /// was ignored), consumed it as part of a COPY, or the session ended before the
        /// server reached it. `message` says which. Written only when true.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        skipped: bool,
    },
    /// Data moved by a COPY that belongs to `query_id`.
    Copy {
        /// The `query_id` of the COPY statement.
        query_id: u64,
        /// `in` = client → database (COPY FROM STDIN), `out` = database → client.
        direction: CopyDirection,
        /// CopyData payload bytes transferred.
        bytes: u64,
        /// Rows, when known (from the CommandComplete tag).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<u64>,
    },
    /// The session is over; written once per started session.
    SessionEnd {
        /// Why it ended.
        reason: EndReason,
        /// Extra human-readable detail (e.g. the protocol error, who revoked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// For `grant_expired`/`grant_revoked`: how late the drop was versus the deadline
        /// or revocation time, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        late_ms: Option<f64>,
        /// Number of `query` events of the session.
        queries: u64,
        /// Session length in milliseconds.
        duration_ms: u64,
        /// The upstream connection was reset (`DISCARD ALL`) and parked for a later
        /// session of the same grant instead of being closed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        upstream_parked: bool,
        /// The server was (or may have been) still working for the session when it
        /// ended, and this is how jitgate stopped it; absent when the backend was idle
        /// and left on Terminate, was parked, or had closed the connection itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stopped: Option<Stopped>,
    },
    /// A client failed to authenticate (wrong password, unknown identity, bad SCRAM).
    AuthFailure {
        /// Client socket address.
        client_addr: String,
        /// Why, for the DBA (the client only ever sees a generic failure).
        reason: String,
    },
    /// An authenticated identity was refused (no active grant, target unknown, …).
    AccessDenied {
        /// Client socket address.
        client_addr: String,
        /// Why, for the DBA.
        reason: String,
    },
    /// Pre-authentication refusals (`auth_failure`, `access_denied` before a client
    /// authenticated) that were counted instead of written one by one because they came
    /// faster than `client_limits.refusal_events_per_ip` / `refusal_events_total` allow.
    /// Written before the next refusal that is recorded, or by the once-a-minute summary,
    /// so a flood is always visible in the log.
    RefusalsSuppressed {
        /// Refusals not written since `since`.
        count: u64,
        /// When the first of them happened.
        #[serde(with = "crate::time::micros")]
        since: Timestamp,
        /// Client IP address → refusals not written, for the addresses with the most
        /// (at most 20).
        by_client: std::collections::BTreeMap<String, u64>,
        /// Refusals not written from addresses not listed in `by_client`.
        #[serde(default, skip_serializing_if = "is_zero")]
        other_clients: u64,
    },
    /// A grant became usable.
    GrantIssued {
        /// Start of validity.
        #[serde(with = "crate::time::micros")]
        not_before: Timestamp,
        /// Absolute end of validity.
        #[serde(with = "crate::time::micros")]
        expires_at: Timestamp,
        /// The justification given when requesting it.
        reason: String,
        /// Who issued/approved it.
        issued_by: String,
    },
    /// A grant was revoked before it expired.
    GrantRevoked {
        /// Who revoked it.
        revoked_by: String,
        /// Why, if given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Its state before (`approved`, `pending`); absent in logs from before v0.2.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// The policy rule it was granted under, if it came from a request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// A step of the request/approval workflow: requested, approval recorded, approved,
    /// denied, cancelled, activated, extension requested, extended, expiring soon,
    /// expired, break-glass, reviewed. The envelope's `grant_id` is the record the step
    /// is about (an extension request's own id for its decisions; the extended grant's id
    /// for `extended`).
    GrantTransition {
        /// What happened (snake_case, e.g. `approved`).
        action: String,
        /// Who did it: an identity, an administrator, `policy:<rule>`, or `jitgate`.
        actor: String,
        /// The policy rule involved.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// The actor's reason or comment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// State before (absent when the record was created by this step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// State after.
        to: String,
        /// The window after the step.
        #[serde(with = "crate::time::micros")]
        not_before: Timestamp,
        /// End of the window after the step.
        #[serde(with = "crate::time::micros")]
        expires_at: Timestamp,
        /// For `extended`: the end before.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::time::micros_opt"
        )]
        previous_expires_at: Option<Timestamp>,
        /// The ticket named by the requester.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<String>,
        /// For an extension request: the grant it extends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extends: Option<uuid::Uuid>,
        /// Break-glass access.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        break_glass: bool,
    },
    /// One attempt at delivering a lifecycle webhook. The envelope's `grant_id` (and
    /// identity, target, role) are those of the grant the notification is about.
    WebhookDelivery {
        /// The configured webhook's name (never its URL's credentials or its secret).
        webhook: String,
        /// The webhook event name, e.g. `grant.revoked`.
        event: String,
        /// The delivery id (uuid v7), the same across retries of one notification and
        /// sent to the receiver as `X-Jitgate-Delivery`.
        delivery_id: Uuid,
        /// 1 for the first attempt.
        attempt: u32,
        /// `delivered` (2xx), `retrying` (another attempt follows) or `failed` (given up).
        outcome: String,
        /// HTTP status the receiver answered, if it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// Why the attempt did not succeed (timeout, connection refused, redirect, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An operator acknowledged that the log was cut back while jitgate was stopped (it
    /// ended before its last signed checkpoint, or its checkpoints file was gone). The
    /// event's `seq` continues after the last checkpointed `seq`, so the lost events keep
    /// their numbers and the gap stays visible; `prev` chains to the last line that is
    /// really in the log. A signed checkpoint covering this event follows at once, which is
    /// what lets `jitgate audit verify` accept the gap (and report it).
    LogCutAcknowledged {
        /// The first `seq` that is missing (`None`: unknown, the checkpoints were gone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lost_from: Option<u64>,
        /// The last `seq` that is missing: the last checkpointed `seq`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lost_to: Option<u64>,
        /// When that last checkpoint was written.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::time::micros_opt"
        )]
        checkpoint_ts: Option<Timestamp>,
        /// Why the operator accepted it (`--reason`).
        reason: String,
        /// Who acknowledged (the OS user running the command).
        acknowledged_by: String,
    },
}

impl EventBody {
    /// The `kind` string written in the log for this body.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::SessionStart { .. } => "session_start",
            EventBody::Query { .. } => "query",
            EventBody::QueryResult { .. } => "query_result",
            EventBody::Copy { .. } => "copy",
            EventBody::SessionEnd { .. } => "session_end",
            EventBody::AuthFailure { .. } => "auth_failure",
            EventBody::AccessDenied { .. } => "access_denied",
            EventBody::RefusalsSuppressed { .. } => "refusals_suppressed",
            EventBody::GrantIssued { .. } => "grant_issued",
            EventBody::GrantRevoked { .. } => "grant_revoked",
            EventBody::GrantTransition { .. } => "grant_transition",
            EventBody::WebhookDelivery { .. } => "webhook_delivery",
            EventBody::LogCutAcknowledged { .. } => "log_cut_acknowledged",
        }
    }
}

/// Which Postgres protocol flow carried a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Query message ('Q').
    Simple,
    /// Parse/Bind/Execute.
    Extended,
    /// FunctionCall message ('F').
    FunctionCall,
}

impl Protocol {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::FunctionCall => "function_call",
        }
    }
}

/// `skip_serializing_if` helper: counters that are 0 are left out of the line.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which session setting a statement tries to change (the `setting_change` of a `query`).
///
/// Detection is lexical and cheap: keywords at the start of each statement of the SQL
/// (after whitespace and comments) and `set_config(` calls anywhere outside quotes. A
/// change made inside a function body or dynamic SQL is not seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingChange {
    /// `SET [SESSION | LOCAL] ROLE …`, `RESET ROLE`, `set_config('role', …)`.
    Role,
    /// `SET [SESSION | LOCAL] SESSION AUTHORIZATION …`, `RESET SESSION AUTHORIZATION`,
    /// `set_config('session_authorization', …)`.
    SessionAuthorization,
    /// `SET [SESSION | LOCAL] search_path …`, `RESET search_path`,
    /// `set_config('search_path', …)`.
    SearchPath,
    /// `RESET ALL`, `DISCARD ALL`: every setting back to its default (search_path
    /// included; DISCARD ALL also resets the session authorization).
    All,
    /// `set_config(…)` whose setting name is not a literal (a parameter or expression):
    /// it may change any of the above.
    Unknown,
}

impl SettingChange {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingChange::Role => "role",
            SettingChange::SessionAuthorization => "session_authorization",
            SettingChange::SearchPath => "search_path",
            SettingChange::All => "all",
            SettingChange::Unknown => "unknown",
        }
    }
}

/// Direction of a COPY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyDirection {
    /// COPY … FROM STDIN: client → database.
    In,
    /// COPY … TO STDOUT: database → client.
    Out,
}

impl CopyDirection {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyDirection::In => "in",
            CopyDirection::Out => "out",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The client sent Terminate or closed its connection.
    ClientQuit,
    /// The grant's `expires_at` passed; the proxy dropped the session.
    GrantExpired,
    /// The grant was revoked; the proxy dropped the session.
    GrantRevoked,
    /// The upstream database closed the connection.
    UpstreamClosed,
    /// jitgate was shutting down.
    Shutdown,
    /// The client or server violated the protocol.
    ProtocolError,
    /// The audit log could not take an event, so the session was closed (fail closed).
    AuditUnavailable,
    /// The session tried to hold more than a per-session limit allows (prepared
    /// statements, portals); `detail` names the limit and the setting that raises it.
    LimitExceeded,
}

impl EndReason {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientQuit => "client_quit",
            EndReason::GrantExpired => "grant_expired",
            EndReason::GrantRevoked => "grant_revoked",
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::Shutdown => "shutdown",
            EndReason::ProtocolError => "protocol_error",
            EndReason::AuditUnavailable => "audit_unavailable",
            EndReason::LimitExceeded => "limit_exceeded",
        }
    }
}
