//! The crate's one error type, with messages written for the person who hit them.
//!
//! Each message says what happened and what to do next, because denials travel all the way
//! to a DBA's psql prompt. [`PolicyError::sqlstate`] gives the code the proxy puts in the
//! FATAL `ErrorResponse`.

use uuid::Uuid;

use crate::grant::GrantState;

/// Why a policy operation did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The identity is not in the configuration.
    #[error(
        "unknown identity {0:?}: it is not in the jitgate configuration; \
         check the name or ask an administrator to add it"
    )]
    UnknownIdentity(String),

    /// The target (upstream database name) is not in the configuration.
    #[error(
        "unknown target {0:?}: it is not in the jitgate configuration; \
         connect with the name of a configured target (the database name), \
         or ask an administrator to add it"
    )]
    UnknownTarget(String),

    /// The role is not configured for this target.
    #[error(
        "unknown role {role:?} for target {target:?}: the target's configuration does not \
         define it; use one of the target's configured roles"
    )]
    UnknownRole {
        /// The target that was asked for.
        target: String,
        /// The role that is not configured for it.
        role: String,
    },

    /// A request was malformed (bad duration, empty reason, …); the text says which field.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The identity holds no grant for the target that is active now.
    #[error(
        "no active grant for identity {identity:?} on target {target:?}; \
         ask an administrator: jitgate grant --identity {identity} --target {target} \
         --role <role> --for 30m --reason \"<why>\""
    )]
    NoActiveGrant {
        /// Who tried to connect.
        identity: String,
        /// Where they tried to connect.
        target: String,
    },

    /// The identity has active grants on the target, but not for the role it asked for.
    #[error(
        "identity {identity:?} has no active grant for role {role:?} on target {target:?} \
         (its active grants there are for: {granted_list}); connect with one of those roles \
         (-c jitgate.role=<role>) or ask an administrator: jitgate grant --identity {identity} \
         --target {target} --role {role} --for 30m --reason \"<why>\"",
        granted_list = granted.join(", ")
    )]
    RoleNotGranted {
        /// Who tried to connect.
        identity: String,
        /// Where they tried to connect.
        target: String,
        /// The role they asked for.
        role: String,
        /// Roles they do hold active grants for, sorted.
        granted: Vec<String>,
    },

    /// Active grants for several roles exist and the client did not say which one to use.
    #[error(
        "identity {identity:?} has active grants for several roles on target {target:?} \
         ({roles_list}); pick one with the startup option -c jitgate.role=<role>, e.g. \
         PGOPTIONS='-c jitgate.role={first}' psql ..., or in a connection string: \
         psql \"options='-c jitgate.role={first}' ...\"",
        roles_list = roles.join(", "),
        first = roles.first().map(String::as_str).unwrap_or("<role>")
    )]
    AmbiguousRole {
        /// Who tried to connect.
        identity: String,
        /// Where they tried to connect.
        target: String,
        /// Roles with active grants, sorted.
        roles: Vec<String>,
    },

    /// No grant has this id.
    #[error("no grant with id {0}; check the id against the list of grants")]
    NotFound(Uuid),

    /// The grant exists but its state does not allow revocation.
    #[error(
        "grant {id} is {state} and cannot be revoked; only pending or approved grants \
         that have not expired can be revoked"
    )]
    NotRevocable {
        /// The grant.
        id: Uuid,
        /// Its state at the time of the attempt (`expired` for approved grants past expiry).
        state: GrantState,
    },

    /// The policy rules do not allow this actor to do this (request this target/role, approve
    /// this request, approve their own request, …); the text says which rule and why.
    #[error("not allowed: {0}")]
    Forbidden(String),

    /// The request or grant is in a state that does not allow this step (approving
    /// something denied, cancelled or expired; extending a revoked grant, …).
    #[error("{0}")]
    Conflict(String),

    /// A compare-and-swap update lost against a concurrent change of the same grant (its
    /// `version` moved on). The engine re-reads and retries; callers rarely see it.
    #[error("grant {0} was changed by someone else at the same moment; read it again and retry")]
    StaleUpdate(Uuid),

    /// The `policy:` section of the config (groups and approval rules) is invalid; `field`
    /// is the path below `policy.` (e.g. `rules[2].ticket`) and `message` says what to fix.
    #[error("policy.{field}: {message}")]
    InvalidPolicy {
        /// Where in the `policy:` section, e.g. `rules[0].approvals.from[1]`.
        field: String,
        /// What is wrong and what to do about it.
        message: String,
    },

    /// The grant store failed, so no decision can be made; access is denied (fail closed).
    #[error(
        "grant store error: {0}; jitgate cannot check grants, so access is denied until the \
         store works again; see the jitgate server log"
    )]
    Store(String),
}

impl PolicyError {
    /// The PostgreSQL SQLSTATE to report for this error.
    ///
    /// - Denials (unknown names, no/other/ambiguous grant) → `42501` insufficient_privilege,
    ///   the code Postgres itself uses for "permission denied".
    /// - [`PolicyError::Store`] → `58000` system_error: the failure is outside the
    ///   database and jitgate cannot decide, so it fails closed. Not `08006`
    ///   (connection_failure), which drivers treat as a network fault and retry blindly.
    /// - Admin-side errors: `InvalidRequest` → `22023` invalid_parameter_value,
    ///   `NotFound` → `42704` undefined_object, `NotRevocable` → `55000`
    ///   object_not_in_prerequisite_state.
    ///
    /// Codes: <https://www.postgresql.org/docs/current/errcodes-appendix.html>
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PolicyError::UnknownIdentity(_)
            | PolicyError::UnknownTarget(_)
            | PolicyError::UnknownRole { .. }
            | PolicyError::NoActiveGrant { .. }
            | PolicyError::RoleNotGranted { .. }
            | PolicyError::AmbiguousRole { .. } => "42501",
            PolicyError::InvalidRequest(_) => "22023",
            PolicyError::NotFound(_) => "42704",
            PolicyError::NotRevocable { .. } | PolicyError::Conflict(_) => "55000",
            PolicyError::Forbidden(_) => "42501",
            PolicyError::StaleUpdate(_) => "40001",
            PolicyError::InvalidPolicy { .. } => "F0000",
            PolicyError::Store(_) => "58000",
        }
    }

    /// Whether this is a decision against the request (as opposed to a failure to decide).
    pub fn is_denial(&self) -> bool {
        self.sqlstate() == "42501"
    }

    /// Text safe to send to a client: the full message for denials and request errors
    /// (they only name what the client sent or the configuration), a generic one for
    /// store failures, whose detail (file paths, database errors) belongs in the server log.
    pub fn client_message(&self) -> String {
        match self {
            PolicyError::Store(_) => "jitgate cannot check grants right now (grant store \
                 error), so access is denied; try again later or contact an administrator"
                .to_owned(),
            other => other.to_string(),
        }
    }

    /// Wraps a backend failure with what was being done, e.g. `store("insert grant", e)`.
    pub(crate) fn store(op: &str, err: impl std::fmt::Display) -> Self {
        PolicyError::Store(format!("{op}: {err}"))
    }
}
